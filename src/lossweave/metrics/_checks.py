"""Validation shared by the embedding metrics: metric names, labels, embeddings, ``ks``.

Every check raises a ``ValueError`` that says what was received and what is
expected; nothing here computes a figure.
"""

import numpy as np

from lossweave import arguments

METRICS = ("cosine", "euclidean")


def check_metric(metric, owner="lossweave.metrics"):
    return arguments.choice(metric, METRICS, "metric", owner)


def as_labels(labels, n=None, what="labels"):
    """``labels`` as a 1-D integer array (``(n, 1)`` and integer-valued floats accepted)."""
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise ValueError(
            f"expected {what} of shape (n,); received shape {labels.shape}. Pass one integer "
            "class per sample (sparse labels, not one-hot)."
        )
    if n is not None and labels.shape[0] != n:
        raise ValueError(
            f"expected one label per embedding row ({n}); received {labels.shape[0]} {what}."
        )
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        if labels.dtype == bool or not np.issubdtype(labels.dtype, np.number):
            raise ValueError(f"expected integer class {what}; received dtype {labels.dtype}.")
        if not np.all(np.isfinite(labels)) or not np.all(np.equal(np.mod(labels, 1), 0)):
            raise ValueError(f"expected integer class {what}; received non-integer values.")
        labels = labels.astype("int64")
    return labels


def as_embeddings(embeddings, name="embeddings"):
    """``embeddings`` as a finite float64 ``(n, dim)`` array."""
    embeddings = np.asarray(embeddings)
    if embeddings.dtype == object or not np.issubdtype(embeddings.dtype, np.number):
        raise ValueError(f"expected numeric {name}; received dtype {embeddings.dtype}.")
    embeddings = embeddings.astype("float64")
    if embeddings.ndim != 2:
        raise ValueError(
            f"expected {name} of shape (n, dim); received shape {embeddings.shape}. "
            "Flatten the embedding (or add a batch axis) first."
        )
    if not np.all(np.isfinite(embeddings)):
        bad = int(np.sum(~np.all(np.isfinite(embeddings), axis=1)))
        raise ValueError(
            f"{name} contain NaN or infinite values ({bad} of {embeddings.shape[0]} rows); "
            "the model diverged or the inputs are broken."
        )
    return embeddings


def normalize(embeddings, name="embeddings"):
    """Rows scaled to unit L2 norm; a zero row (no direction) is an error."""
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError(
            f"metric='cosine' needs non-zero {name}, but {int(np.sum(norms == 0))} rows are all "
            "zeros (their direction is undefined). Use metric='euclidean' or fix the model "
            "(e.g. avoid a ReLU on the embedding layer)."
        )
    return embeddings / norms


def check_set(embeddings, labels, metric, min_classes=2, name="embeddings", what="labels"):
    """Validated float64 embeddings (normalized for cosine) and integer labels of one set."""
    check_metric(metric)
    embeddings = as_embeddings(embeddings, name)
    labels = as_labels(labels, embeddings.shape[0], what)
    classes = np.unique(labels)
    if classes.size < min_classes:
        raise ValueError(
            f"expected samples of at least {min_classes} classes; received {classes.size} "
            f"class(es) in {labels.shape[0]} samples."
        )
    if metric == "cosine":
        embeddings = normalize(embeddings, name)
    return embeddings, labels


def check_reference(embeddings, reference_embeddings, reference_labels, metric):
    """The validated reference (gallery) set, or ``(None, None)`` when there is none.

    Both arrays or neither; the reference rows must have the queries' width.
    """
    if reference_embeddings is None and reference_labels is None:
        return None, None
    if reference_embeddings is None or reference_labels is None:
        given = "reference_embeddings" if reference_labels is None else "reference_labels"
        raise ValueError(
            f"received {given} alone; pass both reference_embeddings and reference_labels "
            "(the gallery and its classes), or neither for leave-one-out retrieval on one set."
        )
    reference, reference_labels = check_set(
        reference_embeddings, reference_labels, metric, min_classes=1,
        name="reference_embeddings", what="reference_labels",
    )
    if reference.shape[1] != embeddings.shape[1]:
        raise ValueError(
            f"expected reference_embeddings of width {embeddings.shape[1]} like the queries; "
            f"received shape {reference.shape}."
        )
    return reference, reference_labels


def class_sizes(labels):
    """The size of each sample's class, per sample."""
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    return counts[inverse.reshape(-1)]


def check_ks(ks, owner="lossweave.metrics"):
    """``ks`` (an int or a sequence of them) as a tuple of Python ints >= 1."""
    ks = (ks,) if np.isscalar(ks) else tuple(ks)
    if not ks:
        raise ValueError(f"{owner}: expected at least one k in `ks`; received an empty sequence.")
    return tuple(arguments.positive_int(k, f"ks[{i}]", owner) for i, k in enumerate(ks))
