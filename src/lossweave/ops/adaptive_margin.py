"""The adaptive margin-softmax losses as pure functions: AdaFace, MagFace, CurricularFace, AdaCos.

Each of these losses adapts the margin or the scale of the margin family
(:mod:`lossweave.ops.margin`) to the batch: to a sample's feature norm
(AdaFace, MagFace), to the batch's mean target cosine (CurricularFace) or to
the batch's cosines (AdaCos). The functions below are the formulas, on
float32; the running statistics they read and return are the caller's (the
terms of :mod:`lossweave.terms.adaptive_margin` keep them as non-trainable
variables and compute them over the global batch). Statistics take a
``rows`` mask: the rows that count (a valid label, finite features, a
non-zero sample weight); batch statistics carry no gradient.

Example (AdaFace's target logit in a custom loop):
    >>> import numpy as np
    >>> norms = np.array([10.0, 30.0], "float32")
    >>> mean, std, count = masked_moments(norms, np.array([True, True]))
    >>> scaler = adaface_norm_scaler(norms, mean, std, h=0.333)
    >>> target = adaface_target(np.array([0.5, 0.5], "float32"), scaler, margin=0.4)
    >>> [round(float(v), 4) for v in target]   # low norm: smaller margin; high norm: larger
    [0.1105, 0.085]
"""

import math

from keras import ops

from lossweave.ops.margin import arcface_target

ADAFACE_EPS = 1e-3  # the authors' eps: cosine clamp, angle clamp, std denominator
ADAFACE_NORM_RANGE = (0.001, 100.0)  # the authors' "safe_norms" clip


def feature_norms(embeddings):
    """``(batch,)`` float32 L2 norms of the raw embeddings, with a finite gradient at 0."""
    x = ops.cast(embeddings, "float32")
    return ops.sqrt(ops.maximum(ops.sum(ops.square(x), axis=-1), 1e-24))


def masked_moments(values, rows):
    """``(mean, std, count)`` of ``values`` over ``rows``: the std is unbiased (``n - 1``, as ``torch.std``).

    ``count`` is a float32 scalar; with fewer than 2 rows the std is 0 (and
    with none, the mean is 0): callers keep their running values then.
    """
    values = ops.cast(values, "float32")
    weight = ops.cast(rows, "float32")
    count = ops.sum(weight)
    mean = ops.sum(values * weight) / ops.maximum(count, 1.0)
    variance = ops.sum(ops.square(values - mean) * weight) / ops.maximum(count - 1.0, 1.0)
    return mean, ops.sqrt(variance), count


def masked_mean(values, rows):
    """``(mean, count)`` of ``values`` over ``rows`` (mean 0 over no rows)."""
    weight = ops.cast(rows, "float32")
    count = ops.sum(weight)
    return ops.sum(ops.cast(values, "float32") * weight) / ops.maximum(count, 1.0), count


def moving_average(running, batch_value, update_rate):
    """``update_rate * batch_value + (1 - update_rate) * running``.

    ``update_rate`` is the weight of the new batch: the authors' code of AdaFace
    (``t_alpha``) and of CurricularFace use 0.01; both papers write the same
    average with ``alpha = 0.99`` on the batch (AdaFace Sec. 3.3: ``mu = alpha mu^(k) + (1 - alpha)
    mu^(k-1)``; CurricularFace Eq. 10: ``t^(k) = alpha r^(k) + (1 - alpha) t^(k-1)``).
    """
    return update_rate * ops.cast(batch_value, "float32") + (1.0 - update_rate) * ops.cast(running, "float32")


# ------------------------------------------------------------------ AdaFace
def adaface_safe_norms(norms):
    """The authors' ``safe_norms``: the norms clipped to ``[0.001, 100]``, without gradient."""
    return ops.clip(ops.stop_gradient(ops.cast(norms, "float32")), *ADAFACE_NORM_RANGE)


def adaface_norm_scaler(norms, mean, std, h=0.333, eps=ADAFACE_EPS):
    """AdaFace's quality indicator ``||z_i||^ = clip((||z_i|| - mu) / (sigma / h), -1, 1)`` (Kim et al. 2022, Sec. 3.3).

    ``norms`` are clipped to ``[0.001, 100]`` and carry no gradient; ``sigma``
    gets the authors' ``+ eps`` (1e-3) in the denominator.
    """
    scaled = (adaface_safe_norms(norms) - mean) / (ops.cast(std, "float32") + eps) * h
    return ops.clip(scaled, -1.0, 1.0)


def adaface_target(cos, norm_scaler, margin=0.4, eps=ADAFACE_EPS):
    """AdaFace's target ``cos(theta + g_angle) - g_add`` (Kim et al. 2022, Sec. 3.3: the margin function).

    ``g_angle = -m ||z||^`` and ``g_add = m ||z||^ + m`` (its two parts): a high-norm
    (high-quality) sample gets an ArcFace-like angular margin, a low-norm one
    a smaller, CosFace-like one. As the authors' code: the cosine is clamped
    to ``[-1 + eps, 1 - eps]`` before ``arccos`` and the shifted angle to
    ``[eps, pi - eps]``.
    """
    cos = ops.clip(ops.cast(cos, "float32"), -1.0 + eps, 1.0 - eps)
    scaler = ops.cast(norm_scaler, "float32")
    theta = ops.clip(ops.arccos(cos) - margin * scaler, eps, math.pi - eps)
    return ops.cos(theta) - (margin + margin * scaler)


# ------------------------------------------------------------------ MagFace
def magface_margin(norms, lower_norm=10.0, upper_norm=110.0, lower_margin=0.45, upper_margin=0.8):
    """MagFace's ``m(a) = (u_m - l_m) / (u_a - l_a) (a - l_a) + l_m`` on ``a`` clipped to ``[l_a, u_a]`` (Meng et al. 2021).

    As the authors' code, the norm is clipped before the margin (and the
    regulariser) see it: outside ``[l_a, u_a]`` neither has a gradient.
    """
    a = ops.clip(ops.cast(norms, "float32"), lower_norm, upper_norm)
    return (upper_margin - lower_margin) / (upper_norm - lower_norm) * (a - lower_norm) + lower_margin


def magface_regularizer(norms, lower_norm=10.0, upper_norm=110.0):
    """MagFace's ``g(a) = 1 / a + a / u_a^2`` on ``a`` clipped to ``[l_a, u_a]`` (Meng et al. 2021)."""
    a = ops.clip(ops.cast(norms, "float32"), lower_norm, upper_norm)
    return 1.0 / a + a / (upper_norm * upper_norm)


def magface_target(cos, norms, lower_norm=10.0, upper_norm=110.0, lower_margin=0.45, upper_margin=0.8,
                   easy_margin=True):
    """MagFace's target ``cos(theta + m(a))``: ArcFace's margin with one ``m(a_i)`` per row.

    ``easy_margin=True`` (the authors' ``MagLinear`` default) applies it only
    where ``cos theta > 0``; ``False`` uses ArcFace's ``cos theta - m sin m``
    past ``theta + m > pi`` (see :func:`lossweave.ops.margin.arcface_target`).
    """
    margin = magface_margin(norms, lower_norm, upper_norm, lower_margin, upper_margin)
    return arcface_target(cos, margin, easy_margin)


# ----------------------------------------------------------- CurricularFace
def curricular_boundary(cos_target, angular_margin=0.5):
    """``T(cos theta_y) = cos(theta_y + m)`` (Huang et al. 2020, Eq. 8): a negative above it is hard.

    The plain ``cos(theta + m)``, as the authors' mask uses it (not the
    ``cos theta - m sin m`` that replaces the target past ``theta + m > pi``).
    """
    cos = ops.clip(ops.cast(cos_target, "float32"), -1.0, 1.0)
    sin = ops.sqrt(ops.maximum(1.0 - ops.square(cos), 0.0))
    return ops.stop_gradient(cos * math.cos(angular_margin) - sin * math.sin(angular_margin))


def curricular_negatives(logits, boundary, t, scale=1.0):
    """CurricularFace's ``N(t, cos theta_j)`` (Huang et al. 2020, Eq. 9) on ``logits = scale * cos theta_j``.

    A negative with ``cos theta_j > T(cos theta_y)`` (``boundary``, ``(batch,)``)
    becomes ``cos theta_j (t + cos theta_j)``; the others stay. Target entries
    are modulated too: replace them afterwards. The gradient flows to
    ``logits`` only (``t + 2 cos theta_j`` on the hard entries, as autodiff of
    the formula gives, in one multiply instead of autodiff's five passes over
    ``(batch, classes)``); ``boundary``, ``t`` and ``scale`` get none (the
    authors' ``t`` and mask carry none either).

    Example:
        >>> import numpy as np
        >>> cos = np.array([[0.9, 0.5, 0.1]], "float32")
        >>> [round(float(v), 4) for v in curricular_negatives(cos, np.array([0.3], "float32"), 0.2)[0]]
        [0.99, 0.35, 0.1]
    """
    logits = ops.cast(logits, "float32")
    t = ops.stop_gradient(ops.cast(t, "float32"))
    if isinstance(scale, (int, float)):
        inverse = ops.convert_to_tensor(1.0 / scale, "float32")  # a multiply per entry, not a divide
    else:
        scale = ops.stop_gradient(ops.cast(scale, "float32"))
        scale = ops.reshape(scale, (-1, 1)) if len(scale.shape) else scale
        inverse = 1.0 / scale
    threshold = ops.stop_gradient(ops.expand_dims(ops.cast(boundary, "float32"), -1) * scale)  # (batch, 1)
    return _hard_negatives(logits, threshold, t, inverse)


@ops.custom_gradient
def _hard_negatives(logits, threshold, t, inverse):
    """``where(z > threshold, z (z inverse + t), z)`` and its gradient ``t + 2 z inverse`` there (1 elsewhere)."""
    hard = logits > threshold
    cos = logits * inverse
    factor = cos + t
    out = ops.where(hard, logits * factor, logits)

    def grad(*args, upstream=None):
        if upstream is None:  # JAX and TensorFlow pass the upstream gradient alone; PyTorch as a keyword
            (upstream,) = args
        slope = ops.where(hard, factor + cos, 1.0)
        return (upstream * slope, ops.zeros_like(threshold), ops.zeros_like(t), ops.zeros_like(inverse))

    return out, grad


# ------------------------------------------------------------------- AdaCos
def adacos_fixed_scale(num_classes):
    """AdaCos's fixed scale ``s_f = sqrt(2) log(C - 1)`` (Zhang et al. 2019, Eq. 12); ``C >= 3``.

    Example:
        >>> round(adacos_fixed_scale(10_000), 3)
        13.025
    """
    if num_classes < 3:
        raise ValueError(f"adacos_fixed_scale: received num_classes={num_classes}; expected >= 3 "
                         f"(sqrt(2) log(C - 1) is 0 at C = 2).")
    return math.sqrt(2.0) * math.log(num_classes - 1)


def lower_median(values, rows):
    """The median of ``values`` over ``rows``; of an even count the lower middle value (``torch.median``'s)."""
    values = ops.cast(values, "float32")
    rows = ops.convert_to_tensor(rows)
    # One +inf past the end: the index stays in range for an empty batch (TensorFlow's gather refuses it).
    kept = ops.where(rows, values, ops.full_like(values, float("inf")))
    ordered = ops.sort(ops.concatenate([kept, ops.full((1,), float("inf"), "float32")], axis=0))
    count = ops.sum(ops.cast(rows, "int32"))
    index = ops.maximum((count - 1) // 2, 0)
    return ops.take(ordered, index)


def adacos_log_b_avg(logits, hit, rows, scale, columns=None, reduce=None):
    """``log B_avg``: ``B_avg = 1/N sum_i sum_{k != y_i} exp(s cos theta_ik)`` (Zhang et al. 2019, Eq. 15).

    The exponentials are shifted by ``s`` (``s cos <= s``: none overflows, at
    any scale; one pass over the logits, no max to find first), without
    gradient.

    Args:
        logits: ``(batch, classes)`` ``s^(t-1) cos theta``: the previous step's scale.
        hit: ``(batch, classes)`` bool, the targets.
        rows: ``(batch,)`` bool, the rows ``N`` counts.
        scale: ``s^(t-1)``, a positive scalar (a number or a tensor).
        columns: optional ``(classes,)`` bool: the columns in use (sampled slots).
        reduce: optional ``reduce(value, "sum")`` over the replicas (the
            library's ``all_reduce``), for the global batch.

    Returns:
        ``(log B_avg, N)``: float32 scalars (``log B_avg`` is ``-inf`` where nothing counts).
    """
    reduce = reduce or (lambda value, op: value)
    logits = ops.stop_gradient(ops.cast(logits, "float32"))
    shift = ops.stop_gradient(ops.cast(scale, "float32"))
    terms = ops.where(hit, 0.0, ops.exp(logits - shift))  # scalar zeros: no (batch, classes) fill
    if columns is not None:
        terms = ops.where(ops.expand_dims(ops.convert_to_tensor(columns), 0), terms, 0.0)
    per_row = ops.where(ops.convert_to_tensor(rows), ops.sum(terms, axis=-1), 0.0)
    total = reduce(ops.sum(per_row), "sum")
    count = reduce(ops.sum(ops.cast(rows, "float32")), "sum")
    return shift + ops.log(total) - ops.log(ops.maximum(count, 1.0)), count


def adacos_dynamic_scale(log_b_avg, median_angle):
    """AdaCos's dynamic scale ``s_d = log B_avg / cos(min(pi/4, theta_med))`` (Zhang et al. 2019, Eq. 16)."""
    angle = ops.minimum(ops.cast(median_angle, "float32"), math.pi / 4.0)
    return ops.cast(log_b_avg, "float32") / ops.cos(angle)


def adacos_target_angles(cos_target):
    """``theta_y = arccos(cos theta_y)`` with the common implementation's clamp to ``[-1 + 1e-7, 1 - 1e-7]``."""
    cos = ops.clip(ops.stop_gradient(ops.cast(cos_target, "float32")), -1.0 + 1e-7, 1.0 - 1e-7)
    return ops.arccos(cos)
