"""The margin-softmax family as pure functions: cosines, target margins, logits.

Each loss of the family is softmax cross-entropy on logits ``s * cos(theta_j)``
(the cosine between an embedding and class ``j``'s weight vector) in which the
target class's cosine is replaced by a harder value ``f(cos theta_y)``:

=================  ===========================================  ==================
loss               target logit ``f`` (before the scale)        paper
=================  ===========================================  ==================
NormFace           ``cos theta``                                Wang et al. 2017
SphereFace         ``psi(theta) = (-1)^k cos(m theta) - 2k``    Liu et al. 2017
CosFace            ``cos theta - m``                            Wang et al. 2018
ArcFace            ``cos(theta + m)``                           Deng et al. 2019
combined           ``cos(m1 theta + m2) - m3``                  Deng et al. 2019
=================  ===========================================  ==================

The keywords name each margin by kind, as the terms do (``lossweave.terms``):
``angular_margin`` is added to the angle (ArcFace's ``m``, the combined
margin's ``m2``; **radians**), ``cosine_margin`` is subtracted from the cosine
(CosFace's ``m``, ``m3``; unitless) and ``multiplicative_margin`` multiplies
the angle (SphereFace's integer ``m``, ``m1``). Every
cosine is computed in float32, whatever the inputs' dtype. Sample weights
follow the library's one rule (``docs/sample_weight.md``): the loss
(:func:`margin_cross_entropy`) is Keras's ``sum_i w_i l_i / batch``; none of
the papers defines sample weights.
"""

import math

from keras import ops

from lossweave.ops.labels import class_indices


def _l2_normalize(x, axis=-1, epsilon=1e-12):
    x = ops.cast(x, "float32")
    # One multiply by rsqrt: cheaper than sqrt then divide over a (classes, dim) table.
    return x * ops.rsqrt(ops.maximum(ops.sum(ops.square(x), axis=axis, keepdims=True), epsilon))


def safe_sqrt(x):
    """``sqrt(max(x, 0))`` with a zero (not infinite) gradient at 0 (e.g. ``sin theta`` from ``cos theta``).

    Example:
        >>> import numpy as np
        >>> [float(v) for v in safe_sqrt(np.array([4.0, 0.0, -1.0], "float32"))]
        [2.0, 0.0, 0.0]
    """
    positive = x > 0
    return ops.where(positive, ops.sqrt(ops.where(positive, x, ops.ones_like(x))), ops.zeros_like(x))


def cosine_similarity(embeddings, class_weights):
    """Cosines between embeddings ``(batch, dim)`` and class weights ``(classes, dim)``.

    Both sides are L2-normalised (NormFace, Eq. 1); the result is clipped to
    ``[-1, 1]`` and is float32.

    Example:
        >>> import numpy as np
        >>> w = np.array([[1., 0.], [0., 2.]], "float32")
        >>> [round(float(v), 4) for v in cosine_similarity(np.array([[3., 3.]], "float32"), w)[0]]
        [0.7071, 0.7071]
    """
    cos = ops.matmul(_l2_normalize(embeddings), ops.transpose(_l2_normalize(class_weights)))
    return ops.clip(cos, -1.0, 1.0)


def subcenter_cosine_similarity(embeddings, class_weights, sub_centers):
    """Sub-center cosines: the max over each class's ``K`` sub-centers (Deng et al. 2020, Sec. 3.1).

    Args:
        embeddings: ``(batch, dim)``.
        class_weights: ``(classes * K, dim)``, the sub-centers of class ``j``
            in rows ``j*K .. j*K + K - 1``.
        sub_centers: ``K``.

    Returns:
        ``(batch, classes)`` float32 ``max_k cos(x, W_jk)``.
    """
    cos = cosine_similarity(embeddings, class_weights)
    if sub_centers == 1:
        return cos
    return ops.max(ops.reshape(cos, (ops.shape(cos)[0], -1, sub_centers)), axis=-1)


def scaled_cosines(embeddings, class_weights, scale, sub_centers=1):
    """``scale * max_k cos(x, W_jk)``, ``(batch, classes)`` float32, *not* clipped.

    The fast form of ``scale * subcenter_cosine_similarity(...)`` for large
    class counts: the scale multiplies the normalised embeddings ``(batch,
    dim)`` before the matmul instead of the ``(batch, classes)`` result, and
    the result is not clipped (a cosine of unit vectors exceeds 1 by rounding
    only; clip the target cosine, ``(batch,)``, where a margin needs it). Each
    pass over a ``(batch, classes)`` array, forward and backward, costs about
    as much as the softmax itself at 10k classes on a CPU.

    Args:
        embeddings: ``(batch, dim)``.
        class_weights: ``(classes * K, dim)`` (see :func:`subcenter_cosine_similarity`).
        scale: a positive number, a scalar tensor or a ``(batch, 1)`` tensor.
        sub_centers: ``K``.

    Example:
        >>> import numpy as np
        >>> w = np.array([[1., 0.], [0., 2.]], "float32")
        >>> [round(float(v), 4) for v in scaled_cosines(np.array([[3., 3.]], "float32"), w, 2.0)[0]]
        [1.4142, 1.4142]
    """
    x = _l2_normalize(embeddings)
    if not isinstance(scale, (int, float)) or scale != 1.0:
        x = x * ops.cast(scale, "float32")
    logits = ops.matmul(x, ops.transpose(_l2_normalize(class_weights)))
    if sub_centers == 1:
        return logits
    return ops.max(ops.reshape(logits, (ops.shape(logits)[0], -1, sub_centers)), axis=-1)


def row_scale(scale):
    """A logit scale as a Python float or a float32 ``()``/``(batch,)`` tensor (``(batch, 1)`` flattened)."""
    if isinstance(scale, (int, float)):
        return float(scale)
    scale = ops.cast(scale, "float32")
    return ops.reshape(scale, (-1,)) if len(scale.shape) == 2 else scale


def target_mask(labels, num_classes):
    """``(hit, valid)``: ``(batch, classes)`` bool, true at each row's target, and ``(batch,)`` valid rows.

    A row with an invalid label has no target (see :func:`lossweave.ops.class_indices`).
    """
    indices, valid = class_indices(labels, num_classes)
    indices = ops.where(valid, indices, -ops.ones_like(indices))  # -1 matches no column
    hit = ops.expand_dims(ops.arange(num_classes, dtype=indices.dtype), 0) == ops.expand_dims(indices, -1)
    return hit, valid


def masked_target(logits, hit):
    """Each row's target entry, ``(batch,)`` (0 where a row has none): one fused masked sum."""
    # A scalar 0 in the select: no (batch, classes) array of zeros to fill first.
    return ops.sum(ops.where(hit, ops.cast(logits, "float32"), 0.0), axis=-1)


def replace_target(logits, hit, value):
    """``logits`` with each row's target entry (``hit``, see :func:`target_mask`) set to ``value`` ``(batch,)``.

    One select over ``(batch, classes)``: no one-hot array and no arithmetic on
    the other entries, which pass through unchanged.
    """
    return ops.where(hit, ops.expand_dims(ops.cast(value, "float32"), -1), ops.cast(logits, "float32"))


def margin_cross_entropy(logits, target_logit, valid, sample_weight=None, penalty=None):
    """Mean softmax cross-entropy when each row's target logit is known: ``logsumexp(z) - z_y``.

    Equal to :func:`lossweave.ops.softmax_cross_entropy` on ``logits`` whose
    target entries are ``target_logit`` (as :func:`replace_target` makes them),
    without a log-softmax array or a gather over ``(batch, classes)``.

    Args:
        logits: ``(batch, classes)`` with the target entries set.
        target_logit: ``(batch,)`` the target entries.
        valid: ``(batch,)`` bool; other rows contribute zero (the mean is over the batch).
        sample_weight: optional ``(batch,)`` weights: Keras's
            ``sum_i w_i l_i / batch``, the batch counting every row
            (``docs/sample_weight.md``).
        penalty: optional ``(batch,)`` term added to each row's loss before
            the weights (MagFace's ``lambda_g g(a_i)``).
    """
    per_sample = ops.logsumexp(ops.cast(logits, "float32"), axis=-1) - ops.cast(target_logit, "float32")
    if penalty is not None:
        per_sample = per_sample + ops.cast(penalty, "float32")
    valid = ops.logical_and(valid, ops.isfinite(per_sample))
    weight = ops.cast(valid, "float32")
    if sample_weight is not None:
        weight = weight * ops.reshape(ops.cast(sample_weight, "float32"), (-1,))
    per_sample = ops.where(valid, per_sample * weight, ops.zeros_like(per_sample))
    batch = ops.maximum(ops.cast(ops.shape(per_sample)[0], "float32"), 1.0)
    return ops.sum(per_sample) / batch


def cosface_target(cos, cosine_margin=0.35):
    """CosFace / AM-Softmax (Wang et al. 2018, Eq. 4): ``cos theta - m``.

    ``cosine_margin`` is the paper's ``m``, subtracted from the cosine (unitless).
    """
    return ops.cast(cos, "float32") - cosine_margin


def arcface_target(cos, angular_margin=0.5, easy_margin=False):
    """ArcFace (Deng et al. 2019, Eq. 3): ``cos(theta + m)`` for ``theta`` in ``[0, pi]``.

    ``cos(theta + m) = cos theta cos m - sin theta sin m``. Past ``theta + m >
    pi`` that curve turns back up and would *reward* a wrong angle, so there
    the target becomes ``cos theta - m sin m`` (the ArcFace authors' reference
    implementation: a CosFace-like margin that keeps the logit decreasing in
    ``theta``). ``easy_margin=True`` instead applies the margin only where
    ``cos theta > 0`` (their other option). ``angular_margin`` is the paper's
    ``m``, added to the angle (radians): a number, or a ``(batch,)`` tensor
    of one margin per row.

    Example:
        >>> import numpy as np
        >>> round(float(arcface_target(np.float32(np.cos(1.0)), 0.5)), 5) == round(float(np.cos(1.5)), 5)
        True
    """
    cos = ops.cast(cos, "float32")
    sin = safe_sqrt(1.0 - ops.square(cos))
    m = angular_margin
    if isinstance(m, (int, float)):
        cos_m, sin_m, past_pi = math.cos(m), math.sin(m), math.cos(math.pi - m)
    else:  # a margin per row (MagFace's m(a_i)), (batch,)
        m = ops.cast(m, "float32")
        cos_m, sin_m = ops.cos(m), ops.sin(m)
        past_pi = -cos_m  # cos(pi - m)
    shifted = cos * cos_m - sin * sin_m
    if easy_margin:
        return ops.where(cos > 0.0, shifted, cos)
    return ops.where(cos > past_pi, shifted, cos - m * sin_m)


def combined_margin_target(cos, multiplicative_margin=1.0, angular_margin=0.3, cosine_margin=0.2):
    """The combined margin of ArcFace (Deng et al. 2019, Eq. 4): ``cos(m1 theta + m2) - m3``.

    ``multiplicative_margin`` is the paper's ``m1`` (SphereFace's multiplier of
    the angle), ``angular_margin`` its ``m2`` (ArcFace's, added to the angle;
    radians) and ``cosine_margin`` its ``m3`` (CosFace's, subtracted from the
    cosine). Where ``m1 theta + m2 > pi``
    the target becomes ``cos theta - m2 sin m2 - m3``, which is ArcFace's rule
    for ``m1 = 1`` (see :func:`arcface_target`). ``theta`` is
    ``atan2(sqrt(1 - cos^2), cos)``: exact at ``cos = 1``, where ``arccos`` has
    an infinite gradient.

    Example:
        >>> import numpy as np
        >>> c = np.float32(np.cos(0.8))
        >>> round(float(combined_margin_target(c, 1.0, 0.5, 0.0)), 5) == round(float(arcface_target(c, 0.5)), 5)
        True
    """
    cos = ops.cast(cos, "float32")
    theta = ops.arctan2(safe_sqrt(1.0 - ops.square(cos)), cos)
    m1, m2, m3 = multiplicative_margin, angular_margin, cosine_margin
    angle = m1 * theta + m2
    inside = angle <= math.pi
    return ops.where(inside, ops.cos(angle), cos - m2 * math.sin(m2)) - m3


def chebyshev_cos(cos, m):
    """``cos(m theta)`` from ``cos theta`` by the Chebyshev polynomial ``T_m`` (integer ``m``).

    Exact and with finite gradients everywhere, unlike ``cos(m arccos(c))``.
    """
    cos = ops.cast(cos, "float32")
    previous, current = ops.ones_like(cos), cos
    if m == 0:
        return previous
    for _ in range(m - 1):
        previous, current = current, 2.0 * cos * current - previous
    return current


def sphereface_psi(cos, multiplicative_margin=4):
    """SphereFace's monotonic ``psi(theta) = (-1)^k cos(m theta) - 2k`` (Liu et al. 2017, Eq. 6).

    ``theta`` in ``[k pi / m, (k + 1) pi / m]``, ``k`` in ``[0, m - 1]``: the
    piecewise extension that keeps ``psi`` decreasing on ``[0, pi]``. ``k`` is
    counted from the cosine (``theta >= j pi / m  <=>  cos theta <= cos(j pi /
    m)``), so no ``arccos`` is needed. ``multiplicative_margin`` is the
    paper's integer ``m``, the multiplier of the angle.

    Example:
        >>> import numpy as np
        >>> theta = np.float32(2.0)      # in [pi/2, 3 pi/4): k = 2 for m = 4
        >>> round(float(sphereface_psi(np.cos(theta), 4)), 4) == round(float(np.cos(4 * theta) - 4), 4)
        True
    """
    m = multiplicative_margin
    cos = ops.cast(cos, "float32")
    k = ops.zeros_like(cos)
    for j in range(1, m):
        k = k + ops.cast(cos <= math.cos(j * math.pi / m), "float32")
    sign = 1.0 - 2.0 * ops.mod(k, 2.0)
    return sign * chebyshev_cos(cos, m) - 2.0 * k


def sphereface_lambda(step, base=1000.0, gamma=0.12, power=1.0, lambda_min=5.0):
    """SphereFace's annealing weight ``max(lambda_min, base (1 + gamma t)^-power)``.

    From the authors' Caffe ``MarginInnerProduct`` layer (the defaults are those
    of their released training prototxt): the target logit is
    ``(lambda ||x|| cos theta + ||x|| psi(theta)) / (1 + lambda)``, so training
    starts as plain softmax and the margin takes over as ``lambda`` decays.
    """
    t = ops.cast(step, "float32")
    return ops.maximum(lambda_min, base * ops.power(1.0 + gamma * t, -power))


def margin_logits(cos, labels, target, scale):
    """``scale * cos`` with the target class's entry replaced by ``target``.

    Args:
        cos: ``(batch, classes)`` cosines.
        labels: sparse or one-hot labels.
        target: ``(batch,)`` value of the target entry (before the scale),
            e.g. ``arcface_target(cos_y)``.
        scale: scalar or ``(batch, 1)`` scale (``s``, or ``||x||`` for SphereFace).

    Returns:
        ``(batch, classes)`` float32 logits. Invalid labels leave the row
        margin-free (see :func:`lossweave.ops.class_indices`).
    """
    hit, _ = target_mask(labels, cos.shape[-1])
    return replace_target(cos, hit, target) * scale


def target_cosine(cos, labels):
    """The cosine of each sample's own class, ``(batch,)`` (class 0 for invalid labels)."""
    indices, _ = class_indices(labels, cos.shape[-1])
    return ops.take_along_axis(ops.cast(cos, "float32"), indices[:, None], axis=-1)[:, 0]
