"""Open-set identification: the nearest reference's label, or "unknown" beyond a distance threshold.

A query is answered by its nearest reference in the index (the index's
``search(queries, 1)``; ties in distance are broken as the index breaks
them, the lower reference row first). The answer is that reference's label
when its distance is at most the threshold (``d <= t``, compared in float64:
a calibrated threshold is one of the index's float32 distances, exactly;
accepted), else the
``unknown`` value (rejected): a face that is not enrolled should be rejected
rather than given the label of whoever is closest.

**What is counted** (TensorFlow Similarity's ``match_nearest``
classification, whose definitions these are). For a query with true label
``y``, nearest reference label ``l`` at distance ``d`` and threshold ``t``:

============  =====================  ======================================
              ``l == y`` (correct)   ``l != y`` (a wrong class, or a query
                                     whose class is not enrolled: unknown)
============  =====================  ======================================
``d <= t``    TP (true positive)     FP (false positive: a false accept)
``d > t``     FN (false negative)    TN (true negative: a right reject)
============  =====================  ======================================

(a query that an approximate search found no reference for, distance
``+inf``, is never accepted: a TN), so the figures are those of the binary
decision "accept the nearest label"
against the truth "the nearest label is the query's":

* precision = TP / (TP + FP): of the accepted answers, the right ones;
* recall = TP / (TP + FN): of the queries whose nearest label is right, the
  accepted ones;
* F1 = 2 precision recall / (precision + recall);
* FAR, the false accept rate (false-positive rate) = FP / (FP + TN): of the
  queries whose nearest label is wrong (unknowns included), the accepted ones;
* accuracy = (TP + TN) / n: the share of right accept/reject decisions.

A ratio whose denominator is 0 is 0 (scikit-learn's ``zero_division=0``,
TF Similarity's ``divide_no_nan``), so each figure equals
``sklearn.metrics.precision_score`` (``recall_score``, ``f1_score``,
``accuracy_score``) on ``y_true = (l == y)``, ``y_pred = (d <= t)``.

Departure from TF Similarity: its ``binary_accuracy`` is TP / n (the
accepted right answers only); ``accuracy`` here is scikit-learn's
(TP + TN) / n on the same decisions, so a right reject counts as right.

Queries of a class the index does not hold ("unknowns") need no marker:
their nearest label is never theirs, so they are FP when accepted and TN
when rejected. Any label works for them (``-1``, or their own class id).

Everything here is NumPy over the index's answers: it does not depend on
the index's backend.
"""

import numpy as np

OWNER = "lossweave.retrieval"
FIGURES = ("precision", "recall", "f1", "far", "accuracy")
COUNTS = ("tp", "fp", "fn", "tn")


def as_labels(labels, n, what="labels"):
    """``labels`` as a 1-D array of ``n`` integers or strings (``(n, 1)`` accepted), else a ``ValueError``.

    Integer-valued floats become ``int64``.

    Example:
        >>> as_labels([[1.0], [2.0]], 2).tolist()
        [1, 2]
    """
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise ValueError(f"{OWNER}: expected {what} of shape (n,), one per query; received shape "
                         f"{labels.shape}. Pass one class per query (sparse labels, not one-hot).")
    if labels.shape[0] != n:
        raise ValueError(f"{OWNER}: expected one of the {what} per query ({n} queries); received "
                         f"{labels.shape[0]} {what}.")
    if labels.dtype.kind == "f":
        if not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels)):
            raise ValueError(f"{OWNER}: expected integer (or string) {what}; received non-integer values.")
        labels = labels.astype("int64")
    if labels.size and labels.dtype.kind not in "iuUS":
        raise ValueError(f"{OWNER}: expected integer or string {what}; received dtype {labels.dtype}.")
    return labels


def _same_kind(labels, nearest_labels):
    """Query labels and reference labels that can be compared (both integers, or both strings)."""
    if labels.size and nearest_labels.size and (labels.dtype.kind in "US") != (nearest_labels.dtype.kind in "US"):
        raise ValueError(f"{OWNER}: the query labels ({labels.dtype}) and the index's labels "
                         f"({nearest_labels.dtype}) are of different kinds, so no label could ever match; "
                         "give both as integers or both as strings.")


def check_nearest(distances, nearest_labels):
    """The nearest distance and label of each query as 1-D arrays (float64, labels), else a ``ValueError``.

    A distance of ``+inf`` is a query that an approximate search found no
    reference for (its label is a filler): it is never accepted.
    """
    distances = np.asarray(distances)
    if distances.ndim == 2 and distances.shape[1] >= 1:  # a search result's (n, k): the first column
        distances = distances[:, 0]
    if distances.ndim != 1 or not np.issubdtype(distances.dtype, np.number):
        raise ValueError(f"{OWNER}: expected the nearest distances as a numeric array of shape (n,); "
                         f"received shape {distances.shape} and dtype {distances.dtype}.")
    distances = distances.astype("float64")
    bad = np.isnan(distances) | (distances == -np.inf)
    if np.any(bad):
        raise ValueError(f"{OWNER}: the nearest distances hold {int(np.sum(bad))} NaN or -inf values; check the "
                         "queries and the index for NaN/Inf rows.")
    nearest_labels = np.asarray(nearest_labels)
    if nearest_labels.ndim == 2 and nearest_labels.shape[1] >= 1:
        nearest_labels = nearest_labels[:, 0]
    nearest_labels = as_labels(nearest_labels, distances.shape[0], "nearest labels")
    return distances, nearest_labels


def check_thresholds(thresholds):
    """``(thresholds as a 1-D float64 array, whether one scalar was given)``; NaN refused, +-inf allowed."""
    scalar = np.ndim(thresholds) == 0
    values = np.atleast_1d(np.asarray(thresholds))
    if values.ndim != 1 or values.size == 0 or values.dtype.kind not in "iuf":
        raise ValueError(f"{OWNER}: expected a distance threshold (a number) or a 1-D array of them; "
                         f"received {thresholds!r}.")
    values = values.astype("float64")
    if np.any(np.isnan(values)):
        raise ValueError(f"{OWNER}: expected distance thresholds that are numbers; received NaN in "
                         f"{thresholds!r}.")
    return values, scalar


def one_threshold(threshold):
    """One distance threshold as a float (NaN refused, +-inf allowed), else a ``ValueError``."""
    if np.ndim(threshold) != 0:
        raise ValueError(f"{OWNER}: expected one distance threshold (a number); received {threshold!r}.")
    return float(check_thresholds(threshold)[0][0])


def nearest(index, queries):
    """``(distances, labels)`` of each query's nearest reference in ``index``: two 1-D arrays.

    Raises:
        ValueError: an index without labels (``add(embeddings, labels=...)``)
            or an empty one; the index's own errors for bad queries.
    """
    if len(index) == 0:
        raise ValueError(f"{OWNER}: the index is empty; add the references first (index.add(embeddings, "
                         "labels=labels)).")
    if getattr(index, "labels", None) is None:
        raise ValueError(f"{OWNER}: the index has no labels, so there is no class to answer with; build it "
                         "with index.add(embeddings, labels=labels).")
    result = index.search(queries, 1)
    if result.labels is None:
        raise ValueError(f"{OWNER}: the index's search returned no labels; build it with "
                         "index.add(embeddings, labels=labels).")
    return check_nearest(result.distances, result.labels)


def answer(distances, nearest_labels, threshold, *, unknown=-1):
    """The array form of :func:`match`: ``nearest_labels`` where ``distances <= threshold``, else ``unknown``.

    Args:
        distances: ``(n,)`` distance of each query's nearest reference (or a
            search result's ``(n, k)``: its first column is used).
        nearest_labels: ``(n,)`` (or ``(n, k)``) labels of those references.
        threshold: the largest distance accepted (``d <= threshold``).
        unknown: the answer for a rejected query; of the labels' kind (an
            integer for integer labels, a string for strings), and not a
            label of the references.

    Returns:
        A ``(n,)`` array of the labels' dtype (widened to hold ``unknown``).

    Example:
        >>> answer([0.1, 0.5, 0.2], [3, 4, 5], 0.25).tolist()
        [3, -1, 5]
    """
    distances, nearest_labels = check_nearest(distances, nearest_labels)
    threshold = one_threshold(threshold)
    unknown_array = np.asarray(unknown)
    if unknown_array.ndim != 0 or unknown_array.dtype.kind not in "iuUS":
        raise ValueError(f"{OWNER}: `unknown` must be an integer or a string; received {unknown!r}.")
    if nearest_labels.size and (unknown_array.dtype.kind in "US") != (nearest_labels.dtype.kind in "US"):
        raise ValueError(f"{OWNER}: `unknown`={unknown!r} is not of the kind of the index's labels "
                         f"({nearest_labels.dtype}); give an {'string' if nearest_labels.dtype.kind in 'US' else 'integer'} "
                         "that is no reference's label.")
    found = np.isfinite(distances)
    if np.any(nearest_labels[found] == unknown_array):
        raise ValueError(f"{OWNER}: `unknown`={unknown!r} is also the label of a reference, so an answer "
                         "could not tell them apart; pass another value as unknown=.")
    dtype = np.result_type(nearest_labels.dtype, unknown_array.dtype)
    return np.where(found & (distances <= threshold), nearest_labels, unknown_array).astype(dtype)


def match(index, queries, threshold, *, unknown=-1):
    """Open-set identification: each query's nearest reference label, or ``unknown`` beyond ``threshold``.

    Args:
        index: a :class:`lossweave.retrieval.Index` with labels.
        queries: ``(n, dim)`` query embeddings.
        threshold: the largest distance accepted, in the index's distance
            (smaller is closer; e.g. :func:`lossweave.retrieval.calibrate`'s
            ``precision_threshold``).
        unknown: the answer for a query beyond the threshold (default ``-1``).

    Returns:
        A ``(n,)`` array of labels, ``unknown`` where rejected.

    Raises:
        ValueError: an index without labels, ``unknown`` equal to a
            reference's label or of another kind, a NaN threshold.

    Example:
        >>> import numpy as np
        >>> from lossweave.retrieval import Index, match
        >>> index = Index(metric="euclidean")
        >>> index.add(np.array([[0.0, 0.0], [10.0, 0.0]]), labels=np.array([7, 8]))
        >>> match(index, np.array([[1.0, 0.0], [9.5, 0.0], [5.0, 5.0]]), threshold=2.0).tolist()
        [7, 8, -1]
    """
    distances, labels = nearest(index, queries)
    return answer(distances, labels, threshold, unknown=unknown)


def counts(distances, nearest_labels, labels, thresholds):
    """TP, FP, FN and TN (see the module's table) at each threshold: ``{name: (t,) int64}``.

    O((n + t) log n): the correct and the wrong nearest distances are sorted
    once and each threshold is a binary search, so a sweep over every
    distinct distance of 10k queries costs milliseconds.

    Example:
        >>> c = counts([0.1, 0.2, 0.3], [1, 2, 9], [1, 5, 9], [0.15, 0.3])
        >>> {k: v.tolist() for k, v in c.items()}
        {'tp': [1, 2], 'fp': [0, 1], 'fn': [1, 0], 'tn': [1, 0]}
    """
    distances, nearest_labels = check_nearest(distances, nearest_labels)
    labels = as_labels(labels, distances.shape[0])
    _same_kind(labels, nearest_labels)
    thresholds, _ = check_thresholds(thresholds)
    found = np.isfinite(distances)  # +inf: no reference found, never accepted (its label is a filler)
    correct = (nearest_labels == labels) & found
    right = np.sort(distances[correct])
    wrong = np.sort(distances[~correct & found])
    tp = np.searchsorted(right, thresholds, side="right").astype("int64")
    fp = np.searchsorted(wrong, thresholds, side="right").astype("int64")
    return {"tp": tp, "fp": fp, "fn": right.size - tp, "tn": int(np.sum(~correct)) - fp}


def _ratio(numerator, denominator):
    numerator, denominator = np.asarray(numerator, "float64"), np.asarray(denominator, "float64")
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)


def figures(tp, fp, fn, tn):
    """Precision, recall, F1, FAR and accuracy from the counts (0 where a denominator is 0).

    Example:
        >>> {k: round(float(v), 4) for k, v in figures(2, 1, 0, 0).items()}
        {'precision': 0.6667, 'recall': 1.0, 'f1': 0.8, 'far': 1.0, 'accuracy': 0.6667}
    """
    tp, fp, fn, tn = (np.asarray(c, "float64") for c in (tp, fp, fn, tn))
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    return {
        "precision": precision,
        "recall": recall,
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),  # = 2PR / (P + R), 0 when both are 0
        "far": _ratio(fp, fp + tn),
        "accuracy": _ratio(tp + tn, tp + fp + fn + tn),
    }


def classification(distances, nearest_labels, labels, thresholds):
    """The array form of :func:`evaluate_classification` (see there), from each query's nearest answer."""
    thresholds_array, scalar = check_thresholds(thresholds)
    found = counts(distances, nearest_labels, labels, thresholds_array)
    result = {"threshold": thresholds_array, **figures(**found), **found}
    if scalar:
        return {key: (int(value[0]) if key in COUNTS else float(value[0])) for key, value in result.items()}
    return result


def evaluate_classification(index, queries, labels, thresholds):
    """Precision, recall, F1, FAR and accuracy of :func:`match` at each threshold, on labelled queries.

    The queries may include classes the index does not hold (unknowns); the
    counts are those of the module's table (TF Similarity's definitions).

    Args:
        index: a :class:`lossweave.retrieval.Index` with labels.
        queries: ``(n, dim)`` query embeddings.
        labels: ``(n,)`` their true labels; a label that no reference has
            marks an unknown (e.g. ``-1``).
        thresholds: one distance threshold, or a 1-D array of them.

    Returns:
        ``{"threshold", "precision", "recall", "f1", "far", "accuracy", "tp",
        "fp", "fn", "tn"}``: floats (counts: ints) for one threshold, else
        arrays with one entry per threshold.

    Raises:
        ValueError: labels of the wrong length or kind, a NaN threshold, an
            index without labels.

    Example:
        >>> import numpy as np
        >>> from lossweave.retrieval import Index, evaluate_classification
        >>> index = Index(metric="euclidean")
        >>> index.add(np.array([[0.0, 0.0], [10.0, 0.0]]), labels=np.array([7, 8]))
        >>> queries = np.array([[1.0, 0.0], [9.5, 0.0], [5.0, 5.0], [3.0, 0.0]])
        >>> result = evaluate_classification(index, queries, [7, 8, -1, 8], thresholds=2.0)
        >>> result["tp"], result["fp"], result["fn"], result["tn"], result["precision"], result["far"]
        (2, 0, 0, 2, 1.0, 0.0)
    """
    distances, nearest_labels = nearest(index, queries)
    return classification(distances, nearest_labels, labels, thresholds)


__all__ = ["answer", "classification", "counts", "evaluate_classification", "figures", "match", "nearest"]
