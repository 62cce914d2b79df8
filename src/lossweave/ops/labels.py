"""Label handling shared by every term: sparse or one-hot in, class indices out.

Labels arrive as whatever the data pipeline produced: int or float sparse
indices of shape ``(batch,)`` or ``(batch, 1)``, or one-hot rows of shape
``(batch, num_classes)``. Shapes are checked at trace time (a ``ValueError``
that names what was received); values are checked row by row and returned as a
``valid`` mask, because a compiled step cannot raise on a value. Callers mask
invalid rows out of every state update and report them (see
``lossweave._backend.check``).
"""

from keras import ops


def _is_float(x):
    return "float" in str(x.dtype)


def batch_shape(shape):
    """A label shape as the user's array has it: ``(8, 2, 1)`` -> ``"(batch, 2, 1)"``.

    A step sees one batch; its first axis is the batch size, not the length
    of the array the user passed, so messages name it ``batch``.
    """
    shape = tuple(shape)
    return "(" + ", ".join(["batch", *map(str, shape[1:])]) + ("," if len(shape) == 1 else "") + ")"


def label_layout(labels_shape, num_classes, what="labels"):
    """Return ``"sparse"`` or ``"one_hot"`` for a labels shape, or raise.

    Args:
        labels_shape: static shape of the labels tensor (tuple, ``None`` for
            unknown batch size).
        num_classes: number of classes the term was built for.
        what: name used in the error message.
    """
    if getattr(labels_shape, "rank", 0) is None:  # a TensorShape of unknown rank
        raise ValueError(
            f"{what}: received labels of unknown rank when the step was traced (TensorFlow "
            f"generalizes a step's input shapes once it has seen labels of several shapes); "
            f"expected sparse class indices of shape (batch,) or (batch, 1), or one-hot "
            f"labels of shape (batch, {num_classes}). Give every batch's labels the same shape."
        )
    shape = tuple(labels_shape)
    if len(shape) == 1:
        return "sparse"
    if len(shape) == 2:
        width = shape[-1]
        if width == 1:
            return "sparse"
        if width == num_classes:
            return "one_hot"
        raise ValueError(
            f"{what}: received one-hot labels of width {width} (shape {batch_shape(shape)}); "
            f"expected width num_classes={num_classes}, or sparse class indices "
            f"of shape (batch,) or (batch, 1). Fix the label encoding or the "
            f"term's num_classes."
        )
    raise ValueError(
        f"{what}: received labels of rank {len(shape)} (shape {batch_shape(shape)}); expected "
        f"sparse class indices of shape (batch,) or (batch, 1), or one-hot labels "
        f"of shape (batch, {num_classes})."
    )


def class_indices(labels, num_classes, what="labels"):
    """Turn sparse or one-hot labels into class indices and a validity mask.

    A sparse label is valid when it is finite, integer-valued and in
    ``[0, num_classes)``. A one-hot row is valid when it is finite, non-negative
    and not all zero; its class is the argmax (as the TF1 center-loss code did).

    Args:
        labels: sparse ``(batch,)``/``(batch, 1)`` or one-hot
            ``(batch, num_classes)`` tensor, integer or float.
        num_classes: number of classes.
        what: name used in error messages.

    Returns:
        ``(indices, valid)``: int32 indices of shape ``(batch,)`` (invalid rows
        point at class 0, so a gather is always in range) and a bool mask.

    Example:
        >>> import numpy as np
        >>> idx, ok = class_indices(np.array([0., 2., 7.]), num_classes=3)
        >>> [int(i) for i in idx], [bool(v) for v in ok]
        ([0, 2, 0], [True, True, False])
    """
    labels = ops.convert_to_tensor(labels)
    layout = label_layout(labels.shape, num_classes, what)
    if layout == "one_hot":
        values = ops.cast(labels, "float32")
        finite = ops.all(ops.isfinite(values), axis=-1)
        safe = ops.where(ops.isfinite(values), values, ops.zeros_like(values))
        valid = ops.logical_and(finite, ops.all(safe >= 0, axis=-1))
        valid = ops.logical_and(valid, ops.sum(safe, axis=-1) > 0)
        indices = ops.cast(ops.argmax(safe, axis=-1), "int32")
    else:
        if len(labels.shape) == 2:
            labels = ops.squeeze(labels, axis=-1)
        if _is_float(labels):
            values = ops.cast(labels, "float32")
            finite = ops.isfinite(values)
            safe = ops.where(finite, values, ops.zeros_like(values))
            integral = ops.equal(safe, ops.floor(safe))
            in_range = ops.logical_and(safe >= 0, safe < num_classes)
            valid = ops.logical_and(finite, ops.logical_and(integral, in_range))
            indices = ops.cast(safe, "int32")
        else:
            indices = ops.cast(labels, "int32")
            valid = ops.logical_and(indices >= 0, indices < num_classes)
    indices = ops.where(valid, indices, ops.zeros_like(indices))
    return indices, valid


def finite_rows(features):
    """Bool mask of rows of a ``(batch, ...)`` tensor whose entries are all finite."""
    finite = ops.isfinite(features)
    if len(features.shape) > 1:
        finite = ops.all(ops.reshape(finite, (ops.shape(finite)[0], -1)), axis=-1)
    return finite


def multi_hot_rows(labels):
    """``(present, valid)`` of multi-hot label rows ``(batch, classes)``: the classes of each row, and its validity.

    A row is valid when every entry is finite and 0 or 1 (``bool`` rows too)
    and at least one is 1. An all-zero row has no class: it is not valid
    (as an all-zero one-hot row in :func:`class_indices`), so a pair loss
    leaves it out of every pair (see :mod:`lossweave.ops.pair_structure`).
    A soft or smoothed row (entries other than 0 and 1) is not valid either:
    round it first.

    Args:
        labels: ``(batch, classes)`` multi-hot rows, int, float or bool.

    Returns:
        ``(present, valid)``: bool ``(batch, classes)`` (all false on an
        invalid row) and bool ``(batch,)``.

    Example:
        >>> import numpy as np
        >>> present, valid = multi_hot_rows(np.array([[1, 0, 1], [0, 0, 0], [1, 0.5, 0]]))
        >>> [[bool(v) for v in row] for row in present], [bool(v) for v in valid]
        ([[True, False, True], [False, False, False], [False, False, False]], [True, False, False])
    """
    values = ops.cast(ops.convert_to_tensor(labels), "float32")
    finite = ops.isfinite(values)
    safe = ops.where(finite, values, ops.zeros_like(values))
    present = ops.equal(safe, 1.0)
    binary = ops.logical_and(finite, ops.logical_or(present, ops.equal(safe, 0.0)))
    valid = ops.logical_and(ops.all(binary, axis=-1), ops.any(present, axis=-1))
    return ops.logical_and(present, valid[:, None]), valid
