"""Softmax cross-entropy and accuracy computed on logits (the softmax layer removed)."""

from keras import ops

from lossweave.ops.reducers import batch_mean
from lossweave.ops.labels import class_indices, finite_rows


def _rows(logits, labels, what):
    num_classes = logits.shape[-1]
    if len(logits.shape) != 2:
        raise ValueError(
            f"{what}: received logits of shape {tuple(logits.shape)}; expected a "
            f"2-D tensor (batch, num_classes)."
        )
    indices, valid = class_indices(labels, num_classes, what=f"{what} labels")
    logits = ops.cast(logits, "float32")
    return _masked(logits, indices, ops.logical_and(valid, finite_rows(logits)))


def _masked(logits, indices, valid):
    """Float32 ``logits`` with the rows that are not ``valid`` zeroed (no NaN/Inf reaches a gradient)."""
    return ops.where(valid[:, None], logits, ops.zeros_like(logits)), indices, valid


def _mean_nll(logits, indices, valid, sample_weight):
    """``sum_i w_i (-log softmax(z_i)_{y_i}) / batch`` over masked rows (``_rows``); invalid rows give 0."""
    # -log softmax(z)_y: one fused op on TensorFlow and PyTorch, a one-hot product on
    # JAX (a gather of log_softmax has a scatter-add as its gradient: slow on XLA CPU).
    nll = ops.sparse_categorical_crossentropy(indices, logits, from_logits=True)
    if sample_weight is not None:  # (a valid row's weight; the select zeroes the others)
        nll = nll * ops.reshape(ops.cast(sample_weight, "float32"), (-1,))
    return batch_mean(ops.where(valid, nll, ops.zeros_like(nll)))


def softmax_cross_entropy_checked(logits, indices, valid, sample_weight=None):
    """``softmax_cross_entropy`` of rows a term's input check has already read.

    ``logits`` float32 ``(batch, num_classes)``, ``indices`` int32 ``(batch,)``
    (in range on every row) and ``valid`` (label valid and logits finite), as
    ``lossweave.terms.check.check_class_rows`` computed them: the step does not
    compute them twice. Same value as ``softmax_cross_entropy``.
    """
    return _mean_nll(*_masked(logits, indices, valid), sample_weight)


def softmax_cross_entropy(logits, labels, sample_weight=None):
    """Mean softmax cross-entropy ``-log softmax(z)_y`` over the batch.

    Args:
        logits: ``(batch, num_classes)`` pre-softmax scores.
        labels: sparse ``(batch,)``/``(batch, 1)`` or one-hot labels.
        sample_weight: optional ``(batch,)`` weights (``docs/sample_weight.md``).

    Returns:
        Scalar float32 ``sum_i w_i l_i / batch`` (Keras's
        ``sum_over_batch_size``; the batch counts every row); invalid rows
        contribute zero.

    Example:
        >>> import numpy as np
        >>> round(float(softmax_cross_entropy(np.zeros((1, 4), "float32"), np.array([2]))), 4)
        1.3863
    """
    return _mean_nll(*_rows(logits, labels, "softmax cross-entropy"), sample_weight)


def logits_accuracy(logits, labels):
    """Per-sample 1.0 where ``argmax(softmax(logits)) == label``, else 0.0.

    Softmax is monotonic, so the argmax of the logits is used directly.

    Example:
        >>> import numpy as np
        >>> [float(v) for v in logits_accuracy(np.array([[0., 1.], [3., 1.]]), np.array([1, 1]))]
        [1.0, 0.0]
    """
    logits, indices, valid = _rows(logits, labels, "logits accuracy")
    predicted = ops.cast(ops.argmax(logits, axis=-1), "int32")
    return ops.cast(ops.logical_and(valid, ops.equal(predicted, indices)), "float32")
