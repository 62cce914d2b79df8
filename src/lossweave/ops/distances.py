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


def safe_sqrt(squared, epsilon=_EPSILON):
    """``sqrt(squared)`` where ``squared > epsilon``, exactly 0 elsewhere, with a finite gradient."""
    # A product with the 0/1 mask, not a select: PyTorch's CPU `where` is ~15x slower than a product.
    return ops.sqrt(ops.maximum(squared, epsilon)) * ops.cast(squared > epsilon, squared.dtype)


def off_diagonal(n):
    """float32 ``(n, n)``: 1 off the diagonal, 0 on it (a factor that zeroes the diagonal exactly)."""
    rows = ops.arange(n)
    return ops.cast(ops.not_equal(rows[:, None], rows[None, :]), "float32")


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
        return 1.0 - ops.clip(ops.sum(l2_normalize(x) * l2_normalize(y), axis=-1), -1.0, 1.0)
    squared = ops.sum(ops.square(x - y), axis=-1)
    if metric == "squared_euclidean":
        return squared
    return safe_sqrt(squared)


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
        other_ids, other_valid = ids, valid
    else:
        other_ids, other_valid = pair_labels(other_labels)
    both = ops.logical_and(valid[:, None], other_valid[None, :])
    same = ops.equal(ids[:, None], other_ids[None, :])
    positives = ops.logical_and(same, both)
    negatives = ops.logical_and(ops.logical_not(same), both)
    if other_labels is None:
        rows = ops.arange(ops.shape(ids)[0])
        positives = ops.logical_and(positives, ops.not_equal(rows[:, None], rows[None, :]))
    return positives, negatives
