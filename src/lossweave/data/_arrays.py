"""Inputs and targets as ``fit`` takes them: an array or a dict of arrays, one row per sample.

Shared by :mod:`lossweave.data.balanced` and :mod:`lossweave.data.splits`:
checks that every array has the same number of rows, picks the class labels
out of a dict of targets, and takes rows of the whole structure at once.
"""

import numpy as np


def as_rows(value, name, who):
    """``value`` as an array, or a dict of arrays (keys kept, in order), each with a batch axis.

    Returns:
        ``(value, n)``: the converted structure and its number of rows.
    """
    if isinstance(value, dict):
        if not value:
            raise ValueError(f"{who}: {name} is an empty dict; expected at least one array.")
        converted = {key: np.asarray(array) for key, array in value.items()}
        lengths = {key: _length(array, f"{name}[{key!r}]", who) for key, array in converted.items()}
        if len(set(lengths.values())) > 1:
            listed = ", ".join(f"{key!r}: {n}" for key, n in lengths.items())
            raise ValueError(f"{who}: the arrays of {name} have different numbers of rows "
                             f"({listed}); expected one row per sample in each.")
        return converted, next(iter(lengths.values()))
    if isinstance(value, (list, tuple)):
        raise ValueError(f"{who}: expected {name} to be an array or a dict of arrays; received a "
                         f"{type(value).__name__}. Pass np.asarray(...) or name the arrays in a dict.")
    value = np.asarray(value)
    return value, _length(value, name, who)


def _length(array, name, who):
    if array.ndim == 0:
        raise ValueError(f"{who}: expected {name} with one row per sample; received a scalar.")
    return int(array.shape[0])


def take(value, rows):
    """Rows ``rows`` of an array or of every array of a dict."""
    if isinstance(value, dict):
        return {key: array[rows] for key, array in value.items()}
    return value[rows]


def class_labels(y, labels_key, who):
    """The class labels in ``y`` (an array, or the ``labels_key`` entry of a dict) as int64 ``(n,)``.

    Integer arrays, and float arrays of integer values, of shape ``(n,)`` or
    ``(n, 1)``.
    """
    if isinstance(y, dict):
        if labels_key not in y:
            raise ValueError(f"{who}: y is a dict without the labels key {labels_key!r} (it has "
                             f"{sorted(y)}); set labels_key= to the name of the class labels.")
        y, name = y[labels_key], f"y[{labels_key!r}]"
    else:
        name = "y"
    labels = np.asarray(y)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise ValueError(f"{who}: expected {name} of shape (n,) or (n, 1), one integer class per "
                         f"sample; received shape {labels.shape} (one-hot labels: pass "
                         f"argmax(axis=-1)).")
    if np.issubdtype(labels.dtype, np.integer):
        return labels.astype("int64")
    if labels.dtype == bool or not np.issubdtype(labels.dtype, np.floating):
        raise ValueError(f"{who}: expected integer class labels in {name}; received dtype "
                         f"{labels.dtype}.")
    bad = ~np.isfinite(labels) | (labels != np.round(labels))
    if bad.any():
        first = int(np.argmax(bad))
        raise ValueError(f"{who}: expected integer class labels in {name}; received "
                         f"{labels[first].item()!r} at index {first}.")
    return labels.astype("int64")
