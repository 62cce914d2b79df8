"""Pairwise distances, similarities and label masks for pair-based losses.

Everything here is a pure ``keras.ops`` function that returns float32 (or
bool) ``(n, m)`` matrices and builds nothing bigger than ``n x m`` (no
``(n, m, dim)`` difference tensor): squared Euclidean distances come from the
expansion ``||x||^2 + ||y||^2 - 2 x.y`` after both sides are shifted by the
mean of ``x`` (distances do not change under a common shift, and the
cancellation error of the expansion shrinks with the norms).

Euclidean distances have a finite gradient at distance 0. TensorFlow
Addons' ``pairwise_distance`` (``tensorflow_addons/losses/metric_learning.py``)
takes the square root of ``d^2 + 1e-16`` where ``d^2 <= 0`` and masks those
entries to 0; here the square root is taken only where ``d^2 > 1e-12`` and the
distance is exactly 0 (gradient 0) elsewhere, which also absorbs the rounding
of the expansion. The diagonal of ``x`` against itself is exactly 0.

Beside the three named metrics of ``pairwise_distances`` (the
``distance="..."`` strings of the losses) the module has the formulas of the
distance objects of :mod:`lossweave.distances`: Lp distances of any order
(``lp_distances``), inner products (``dot_products``) and the
signal-to-noise-ratio distance (``snr_distances``), each with its paired
form. A loss of :mod:`lossweave.ops.pairs` takes either a metric name or an
object with ``pairwise(x, y)``, ``paired(x, y)`` and ``is_inverted`` (larger
means closer), read by :func:`matrix` and :func:`ordered`.

Labels of pair losses are class ids, not class indices of a classifier: any
non-negative integer (int or integer-valued float), sparse ``(batch,)`` or
``(batch, 1)``; there is no ``num_classes``.
"""

from keras import ops

METRICS = ("euclidean", "squared_euclidean", "cosine")

# Below this squared distance a Euclidean distance is exactly 0 (gradient 0 there).
_EPSILON = 1e-12


def _check_metric(metric):
    if metric not in METRICS:
        raise ValueError(f"pairwise distance: received metric={metric!r}; expected one of {METRICS}.")
    return metric


def _rows(x, what):
    x = ops.cast(ops.convert_to_tensor(x), "float32")
    if len(x.shape) != 2:
        raise ValueError(
            f"{what}: received a tensor of shape {tuple(x.shape)}; expected a 2-D tensor (rows, dim)."
        )
    return x


def l2_normalize(x, epsilon=1e-12):
    """Rows of ``x`` divided by their L2 norm; a zero row stays zero (finite gradient)."""
    x = ops.cast(x, "float32")
    return x * ops.rsqrt(ops.maximum(ops.sum(ops.square(x), axis=-1, keepdims=True), epsilon))


def float_mask(mask, dtype="float32"):
    """A bool mask as 0/1 floats, converted through ``uint8``: the same values on every backend.

    PyTorch's CPU kernels for bool tensors are slow: a bool to float32 cast,
    and a ``where`` on a bool condition, cost several times a cast through
    ``uint8`` and a product with the 0/1 factor (the pair losses' loss +
    gradient is timed against PML's in ``benchmarks/pairs.py``). So masks
    enter the pair losses as products with this 0/1 factor; XLA fuses the
    two casts.
    """
    return ops.cast(ops.cast(mask, "uint8"), dtype)


def safe_sqrt(squared, epsilon=_EPSILON):
    """``sqrt(squared)`` where ``squared > epsilon``, exactly 0 elsewhere, with a finite gradient."""
    # A product with the 0/1 mask, not a select (PyTorch's CPU `where` is the slower: see float_mask).
    return ops.sqrt(ops.maximum(squared, epsilon)) * float_mask(squared > epsilon, squared.dtype)


def off_diagonal(n):
    """float32 ``(n, n)``: 1 off the diagonal, 0 on it (a factor that zeroes the diagonal exactly)."""
    rows = ops.arange(n)
    return float_mask(ops.not_equal(rows[:, None], rows[None, :]))


@ops.custom_gradient
def gram(x):
    """``x @ x^T`` of ``(n, dim)`` rows, with the gradient ``(g + g^T) x``: one backward matmul.

    Autodiff of ``matmul(x, transpose(x))`` differentiates each operand: two
    ``(n, n) x (n, dim)`` matmuls where one suffices, the heaviest part of a
    pair loss's backward pass (``benchmarks/PAIRS.md``).

    Example:
        >>> import numpy as np
        >>> [[float(v) for v in row] for row in gram(np.array([[1., 2.], [0., 3.]], "float32"))]
        [[5.0, 6.0], [6.0, 9.0]]
    """
    x = ops.convert_to_tensor(x)

    def grad(*args, upstream=None):  # JAX and TensorFlow pass the upstream gradient alone, PyTorch by name
        if upstream is None:
            (upstream,) = args
        return ops.matmul(upstream + ops.transpose(upstream), x)

    return ops.matmul(x, ops.transpose(x)), grad


def _squared_euclidean(x, y, same):
    shift = ops.mean(x, axis=0, keepdims=True)
    x = x - shift
    y = x if same else y - shift
    x_sq = ops.sum(ops.square(x), axis=-1)
    y_sq = x_sq if same else ops.sum(ops.square(y), axis=-1)
    inner = gram(x) if same else ops.matmul(x, ops.transpose(y))
    squared = x_sq[:, None] + y_sq[None, :] - 2.0 * inner
    squared = ops.maximum(squared, 0.0)
    if same:  # exactly 0 on the diagonal, whatever the rounding of the expansion
        squared = squared * off_diagonal(ops.shape(x)[0])
    return squared


def pairwise_similarity(x, y=None):
    """Cosine similarities ``(n, m)`` of the L2-normalised rows of ``x`` and ``y``.

    Args:
        x: ``(n, dim)`` tensor.
        y: ``(m, dim)`` tensor; ``None`` means ``x`` against itself.

    Returns:
        float32 ``(n, m)`` matrix in ``[-1, 1]``; a zero row has similarity 0
        to everything (and a finite gradient).

    Example:
        >>> import numpy as np
        >>> s = pairwise_similarity(np.array([[1., 0.], [3., 3.], [0., 0.]], "float32"))
        >>> [[round(float(v), 4) for v in row] for row in s]
        [[1.0, 0.7071, 0.0], [0.7071, 1.0, 0.0], [0.0, 0.0, 0.0]]
    """
    x = l2_normalize(_rows(x, "pairwise similarity x"))
    if y is None:
        return ops.clip(gram(x), -1.0, 1.0)
    return ops.clip(ops.matmul(x, ops.transpose(l2_normalize(_rows(y, "pairwise similarity y")))), -1.0, 1.0)


def paired_similarity(x, y):
    """Cosine similarities ``(n,)`` of row ``i`` of ``x`` and row ``i`` of ``y`` (L2-normalised, in ``[-1, 1]``)."""
    x, y = _rows(x, "paired similarity x"), _rows(y, "paired similarity y")
    return ops.clip(ops.sum(l2_normalize(x) * l2_normalize(y), axis=-1), -1.0, 1.0)


class _Metric:
    """Two functions as a metric: ``pairwise(x, y=None)``, ``paired(x, y)``, and whether larger is closer."""

    def __init__(self, pairwise, paired, is_inverted):
        self.pairwise, self.paired, self.is_inverted = pairwise, paired, is_inverted


# The cosine similarity as a metric (larger is closer): the similarity losses' default metric.
COSINE_SIMILARITY = _Metric(pairwise_similarity, paired_similarity, is_inverted=True)


def pairwise_distances(x, y=None, metric="euclidean"):
    """Distances ``(n, m)`` between the rows of ``x`` and of ``y``.

    Args:
        x: ``(n, dim)`` tensor (any float dtype; computed in float32).
        y: ``(m, dim)`` tensor; ``None`` means ``x`` against itself (then the
            diagonal is exactly 0).
        metric: ``"euclidean"`` (``||x_i - y_j||``, finite gradient at 0),
            ``"squared_euclidean"`` (``||x_i - y_j||^2``) or ``"cosine"``
            (``1 - cos(x_i, y_j)``, in ``[0, 2]``).

    Returns:
        float32 ``(n, m)`` matrix.

    Raises:
        ValueError: for an unknown metric or inputs that are not 2-D.

    Example:
        >>> import numpy as np
        >>> x = np.array([[0., 0.], [3., 4.]], "float32")
        >>> [[float(v) for v in row] for row in pairwise_distances(x)]
        [[0.0, 5.0], [5.0, 0.0]]
        >>> [[float(v) for v in row] for row in pairwise_distances(x, metric="squared_euclidean")]
        [[0.0, 25.0], [25.0, 0.0]]
    """
    _check_metric(metric)
    same = y is None
    x = _rows(x, "pairwise distance x")
    y = x if same else _rows(y, "pairwise distance y")
    if metric == "cosine":
        distances = 1.0 - pairwise_similarity(x, None if same else y)
        return distances * off_diagonal(ops.shape(x)[0]) if same else distances
    squared = _squared_euclidean(x, y, same)
    if metric == "squared_euclidean":
        return squared
    return safe_sqrt(squared)


def paired_distances(x, y, metric="euclidean"):
    """Distances ``(n,)`` between row ``i`` of ``x`` and row ``i`` of ``y`` (siamese pairs).

    Same metrics (and the same finite gradient at distance 0) as
    ``pairwise_distances``; computed from the differences directly, O(n x dim).

    Example:
        >>> import numpy as np
        >>> x = np.array([[0., 0.], [1., 1.]], "float32")
        >>> [float(v) for v in paired_distances(x, np.array([[3., 4.], [1., 1.]], "float32"))]
        [5.0, 0.0]
    """
    _check_metric(metric)
    x = _rows(x, "paired distance x")
    y = _rows(y, "paired distance y")
    if metric == "cosine":
        return 1.0 - paired_similarity(x, y)
    squared = ops.sum(ops.square(x - y), axis=-1)
    if metric == "squared_euclidean":
        return squared
    return safe_sqrt(squared)


def _root(value, exponent):
    """``value ** exponent`` for ``value >= 0``; exactly 0 (gradient 0) where ``value <= 1e-12``."""
    if exponent == 1.0:
        return value
    if exponent == 0.5:
        return safe_sqrt(value)
    positive = value > _EPSILON
    return ops.power(ops.maximum(value, _EPSILON), exponent) * float_mask(positive, value.dtype)


def lp_normalize(x, p=2.0, epsilon=1e-12):
    """Rows of ``x`` divided by their Lp norm (L2: :func:`l2_normalize`); a zero row stays zero."""
    if p == 2.0:
        return l2_normalize(x, epsilon)
    x = ops.cast(x, "float32")
    norms = _root(ops.sum(ops.power(ops.abs(x), p), axis=-1, keepdims=True), 1.0 / p)
    return x / ops.maximum(norms, epsilon)


# The Lp sum of a p != 2 order is accumulated over slices of this many features: an (n, m, slice)
# intermediate at most, never (n, m, dim).
_LP_SLICE = 16


def lp_distances(x, y=None, p=2.0, power=1.0, normalized=False):
    """``||x_i - y_j||_p ** power`` ``(n, m)``; pytorch-metric-learning's ``LpDistance``.

    ``p = 2`` is a matmul (``pairwise_distances``; for rows already
    L2-normalised, ``normalized=True``, ``||x - y||^2 = 2 - 2 x.y``); any
    other ``p`` sums ``|x_ik - y_jk|^p`` over slices of 16 features (memory
    O(n m 16), not O(n m dim)). Finite gradients at distance 0 (the root is
    exactly 0 there); ``y=None``: ``x`` against itself, diagonal exactly 0.

    Example:
        >>> import numpy as np
        >>> x = np.array([[0., 0.], [3., 4.]], "float32")
        >>> [float(v) for v in lp_distances(x, p=1.0)[0]], [float(v) for v in lp_distances(x, power=2.0)[0]]
        ([0.0, 7.0], [0.0, 25.0])
    """
    same = y is None
    x = _rows(x, "Lp distance x")
    y = x if same else _rows(y, "Lp distance y")
    if p == 2.0:
        if normalized:
            inner = gram(x) if same else ops.matmul(x, ops.transpose(y))
            squared = 2.0 - 2.0 * inner
            if power == 1.0:  # the root's 0/1 factor does the clamp at 0 and the diagonal's zeros too
                keep = float_mask(squared > _EPSILON)
                if same:
                    keep = keep * off_diagonal(ops.shape(x)[0])
                return ops.sqrt(ops.maximum(squared, _EPSILON)) * keep
            squared = ops.maximum(squared, 0.0)
            if same:
                squared = squared * off_diagonal(ops.shape(x)[0])
        else:
            squared = _squared_euclidean(x, y, same)
        return _root(squared, power / 2.0)
    dim = x.shape[-1]
    total = None
    for start in range(0, dim, _LP_SLICE):
        part = ops.abs(x[:, None, start:start + _LP_SLICE] - y[None, :, start:start + _LP_SLICE])
        part = ops.sum(ops.power(part, p), axis=-1)
        total = part if total is None else total + part
    if same:
        total = total * off_diagonal(ops.shape(x)[0])
    return _root(total, power / p)


def paired_lp_distances(x, y, p=2.0, power=1.0):
    """``||x_i - y_i||_p ** power`` ``(n,)`` (the paired form of :func:`lp_distances`)."""
    x, y = _rows(x, "Lp distance x"), _rows(y, "Lp distance y")
    return _root(ops.sum(ops.power(ops.abs(x - y), p), axis=-1), power / p)


def dot_products(x, y=None):
    """Inner products ``x_i . y_j`` ``(n, m)`` (``gram`` of ``x`` when ``y`` is ``None``)."""
    x = _rows(x, "dot product x")
    return gram(x) if y is None else ops.matmul(x, ops.transpose(_rows(y, "dot product y")))


def _centered(x):
    return x - ops.mean(x, axis=-1, keepdims=True)


def snr_distances(x, y=None):
    """Signal-to-noise-ratio distances ``var(y_j - x_i) / var(x_i)`` ``(n, m)`` (Yuan et al., CVPR 2019).

    Yuan, Chen, Chen & Ma, "Signal-To-Noise Ratio: A Robust Distance Metric
    for Deep Metric Learning": the anchor ``x_i`` is the signal and ``y_j -
    x_i`` the noise, ``d_S = var(noise) / var(signal)`` with variances over the
    features (pytorch-metric-learning's ``SNRDistance``). Computed without an
    ``(n, m, dim)`` tensor: with ``c(v) = v - mean(v)``, ``var(y - x) / var(x) =
    ||c(x) - c(y)||^2 / ||c(x)||^2`` (the variances' normaliser cancels). An
    anchor of zero variance divides by ``1e-12`` (finite, not ``inf``).

    Example:
        >>> import numpy as np
        >>> x = np.array([[1., -1.], [2., -2.]], "float32")
        >>> [[float(v) for v in row] for row in snr_distances(x)]
        [[0.0, 1.0], [0.25, 0.0]]
    """
    same = y is None
    x = _centered(_rows(x, "SNR distance x"))
    y = x if same else _centered(_rows(y, "SNR distance y"))
    signal = ops.maximum(ops.sum(ops.square(x), axis=-1), _EPSILON)
    return _squared_euclidean(x, y, same) / signal[:, None]


def paired_snr_distances(x, y):
    """``var(y_i - x_i) / var(x_i)`` ``(n,)`` (the paired form of :func:`snr_distances`)."""
    x = _centered(_rows(x, "SNR distance x"))
    y = _centered(_rows(y, "SNR distance y"))
    return ops.sum(ops.square(x - y), axis=-1) / ops.maximum(ops.sum(ops.square(x), axis=-1), _EPSILON)


# The signal-to-noise-ratio distance as a metric (larger is farther): ``ops.tuple_losses.snr_contrastive_loss``'s.
SNR = _Metric(snr_distances, paired_snr_distances, is_inverted=False)


def is_inverted(metric):
    """Whether larger values of ``metric`` (a name or a distance object) mean closer: a similarity."""
    return bool(getattr(metric, "is_inverted", False))


def matrix(metric, x, y=None):
    """The ``(n, m)`` values of ``metric`` (a ``METRICS`` name or a distance object) between rows."""
    if isinstance(metric, str):
        return pairwise_distances(x, y, metric)
    return metric.pairwise(x, y)


def paired(metric, x, y):
    """The ``(n,)`` values of ``metric`` between row ``i`` of ``x`` and of ``y``."""
    if isinstance(metric, str):
        return paired_distances(x, y, metric)
    return metric.paired(x, y)


def ordered(metric, values):
    """``values`` of ``metric`` as larger-is-farther: a distance as it is, a similarity negated."""
    return -values if is_inverted(metric) else values


def closeness(metric, values):
    """``values`` of ``metric`` as larger-is-closer: a similarity as it is, a distance negated (no double negation)."""
    return values if is_inverted(metric) else -values


def pair_labels(labels):
    """Class ids of a pair loss and their validity: ``(ids, valid)``, both ``(batch,)``.

    A label is valid when it is finite, integer-valued and ``>= 0``; invalid
    ones get id ``-1`` (so they never equal a valid id). Shapes are not
    checked here (see ``lossweave.terms.check.check_pair_rows``): a
    ``(batch, 1)`` label is flattened.

    Example:
        >>> import numpy as np
        >>> ids, valid = pair_labels(np.array([[3.], [1.5], [-2.]], "float32"))
        >>> [int(i) for i in ids], [bool(v) for v in valid]
        ([3, -1, -1], [True, False, False])
    """
    labels = ops.convert_to_tensor(labels)
    if len(labels.shape) == 2:
        labels = ops.reshape(labels, (-1,))
    if "float" in str(labels.dtype):
        values = ops.cast(labels, "float32")
        finite = ops.isfinite(values)
        safe = ops.where(finite, values, ops.zeros_like(values))
        valid = ops.logical_and(finite, ops.logical_and(ops.equal(safe, ops.floor(safe)), safe >= 0))
        ids = ops.cast(safe, "int32")
    elif "bool" in str(labels.dtype):
        ids = ops.cast(labels, "int32")
        valid = ops.ones_like(ids, dtype="bool")
    else:
        ids = ops.cast(labels, "int32")
        valid = ids >= 0
    ids = ops.where(valid, ids, -ops.ones_like(ids))
    return ids, valid


def label_masks(labels, other_labels=None):
    """Positive and negative pair masks ``(n, m)`` from class ids.

    Args:
        labels: ``(n,)`` or ``(n, 1)`` class ids.
        other_labels: ``(m,)`` or ``(m, 1)`` class ids of the other side;
            ``None`` means ``labels`` against itself, and then the diagonal is
            not a positive (a sample is not its own positive).

    Returns:
        ``(positives, negatives)``: bool ``(n, m)`` masks, ``positives[i, j]``
        where the ids are equal and ``negatives[i, j]`` where they differ. A row
        whose id is invalid (negative, non-integer, NaN) is in neither.

    Example:
        >>> import numpy as np
        >>> pos, neg = label_masks(np.array([0, 0, 1]))
        >>> [[bool(v) for v in row] for row in pos]
        [[False, True, False], [True, False, False], [False, False, False]]
        >>> [[bool(v) for v in row] for row in neg]
        [[False, False, True], [False, False, True], [True, True, False]]
    """
    ids, valid = pair_labels(labels)
    if other_labels is None:
        return id_pair_masks(ids, valid)
    other_ids, other_valid = pair_labels(other_labels)
    return id_pair_masks(ids, valid, other_ids, other_valid)


def id_pair_masks(ids, valid, other_ids=None, other_valid=None, exclude_diagonal=None):
    """Positive and negative masks ``(n, m)`` of class ids whose rows ``valid`` / ``other_valid`` take part.

    The masks of :func:`label_masks` in five ``(n, m)`` ops: an invalid row
    gets the key -1 on the anchors' side and -2 on the partners' (valid ids
    are ``>= 0``), so one equality gives the positives of valid rows; the
    negatives are the valid pairs that are not positive (``xor``, as the
    positives lie inside them). Built once, not as separate masks joined by
    ``logical_and``: on PyTorch's eager CPU every ``(n, m)`` op is a kernel.

    Args:
        ids, valid: int ``(n,)`` class ids and bool ``(n,)`` rows that take part.
        other_ids, other_valid: the partners' (``None``: ``ids`` against itself).
        exclude_diagonal: leave the pairs ``(i, i)`` out of both masks (default:
            when ``other_ids`` is ``None``; there it changes the positives only).

    Returns:
        ``(positives, negatives)``: bool ``(n, m)``.
    """
    same_rows = other_ids is None
    if same_rows:
        other_ids, other_valid = ids, valid
    if exclude_diagonal is None:
        exclude_diagonal = same_rows
    keys = ops.where(valid, ids, -1)
    other_keys = ops.where(other_valid, other_ids, -2)
    positives = ops.equal(keys[:, None], other_keys[None, :])
    negatives = ops.logical_xor(ops.logical_and(valid[:, None], other_valid[None, :]), positives)
    if exclude_diagonal:
        rows, columns = ops.arange(ops.shape(ids)[0]), ops.arange(ops.shape(other_ids)[0])
        not_self = ops.not_equal(rows[:, None], columns[None, :])
        positives = ops.logical_and(positives, not_self)
        if not same_rows:  # against itself a diagonal pair is never a negative
            negatives = ops.logical_and(negatives, not_self)
    return positives, negatives
