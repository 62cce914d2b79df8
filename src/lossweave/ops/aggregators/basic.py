"""The equal-weight aggregators: the mean and the sum of the term gradients."""

from keras import ops

from lossweave.ops.aggregators._common import apply_weights, as_gramian


def mean_weights(gramian):
    """Equal weights ``1 / K``: the update is the mean of the term gradients.

    Args:
        gramian: ``(K, K)`` Gramian of the term gradients (only K is read).

    Returns:
        ``(K,)`` float32 weights.

    Example:
        >>> [float(w) for w in mean_weights([[1., 0.], [0., 4.]])]
        [0.5, 0.5]
    """
    k = as_gramian(gramian, "mean_weights").shape[0]
    return ops.full((k,), 1.0 / k, dtype="float32")


def mean(jacobian):
    """The mean of the K term gradients, ``mean_weights(J J^T) @ J``.

    Args:
        jacobian: ``(K, params)``, row k term k's gradient.

    Returns:
        ``(params,)`` float32 update.

    Example:
        >>> [float(v) for v in mean([[1., 0.], [0., 4.]])]
        [0.5, 2.0]
    """
    return apply_weights(mean_weights, jacobian, "mean")


def total_weights(gramian):
    """Weights of one: the update is the sum of the term gradients.

    This is the gradient of the unweighted sum of the losses. Named ``total``
    rather than ``sum`` so that it does not shadow the builtin.

    Args:
        gramian: ``(K, K)`` Gramian of the term gradients (only K is read).

    Returns:
        ``(K,)`` float32 ones.

    Example:
        >>> [float(w) for w in total_weights([[1., 0.], [0., 4.]])]
        [1.0, 1.0]
    """
    k = as_gramian(gramian, "total_weights").shape[0]
    return ops.ones((k,), dtype="float32")


def total(jacobian):
    """The sum of the K term gradients, ``total_weights(J J^T) @ J``.

    Example:
        >>> [float(v) for v in total([[1., 0.], [0., 4.]])]
        [1.0, 4.0]
    """
    return apply_weights(total_weights, jacobian, "total")
