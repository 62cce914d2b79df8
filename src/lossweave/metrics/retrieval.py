"""Retrieval figures of an embedding: Recall@k, nearest-neighbour accuracy, MAP@R, R-precision.

Two protocols, chosen by whether a reference (gallery) set is given:

* **leave-one-out** (no reference): every sample is a query and the other
  samples are its gallery. A query whose class has no other sample is
  skipped.
* **query / reference**: the rows of ``embeddings`` are the queries and
  ``reference_embeddings`` the gallery they search; the queries are not part
  of the gallery. A query whose class is absent from the gallery is skipped
  (pytorch-metric-learning's "lone query labels");
  :func:`queries_without_reference` counts them.

Skipped queries are left out of the mean, and an error is raised if no query
is left.

Neighbours come from :class:`lossweave.retrieval.Index`'s exact chunked
search (``keras.ops`` on the current backend's device, float32, gallery blocks
against query chunks), re-ranked exactly in float64 on the host: no queries x
gallery array is built, so the figures scale to 10k queries x 1M references,
and the neighbours are those of a float64 brute force (scikit-learn's
``NearestNeighbors``, which these figures used before), also where they differ
below float32's resolution. Ties between equally distant neighbours are broken
by the lower gallery position. ``R``, the number of gallery samples of a query's class, is its
class size minus one (leave-one-out) or its class's count in the gallery.
"""

import numpy as np

from lossweave.metrics import _checks


def _prepare(embeddings, labels, metric, reference_embeddings, reference_labels):
    """Validated queries and gallery (``None`` for leave-one-out)."""
    min_classes = 2 if reference_embeddings is None and reference_labels is None else 1
    embeddings, labels = _checks.check_set(embeddings, labels, metric, min_classes=min_classes)
    reference, reference_labels = _checks.check_reference(
        embeddings, reference_embeddings, reference_labels, metric
    )
    if reference is not None and np.unique(reference_labels).size < 2:
        raise ValueError(
            "expected a reference set of at least 2 classes (with one class every neighbour is "
            f"correct); received 1 class in {reference_labels.shape[0]} reference samples."
        )
    return embeddings, labels, reference, reference_labels


def _relevant(labels, reference_labels):
    """``R`` of each query: the gallery samples of its class."""
    if reference_labels is None:
        return _checks.class_sizes(labels) - 1
    classes, counts = np.unique(reference_labels, return_counts=True)
    where = np.searchsorted(classes, labels)
    found = (where < classes.size) & (classes[np.minimum(where, classes.size - 1)] == labels)
    return np.where(found, counts[np.minimum(where, classes.size - 1)], 0)


def _answerable(labels, reference_labels, what):
    """Mask of the queries with at least one gallery sample of their class."""
    mask = _relevant(labels, reference_labels) >= 1
    if not mask.any():
        if reference_labels is None:
            raise ValueError(
                f"{what} needs at least one class with two or more samples; every class here has "
                "a single sample, so no query has a correct answer."
            )
        raise ValueError(
            f"{what} needs a query whose class is in the reference set; none of the "
            f"{labels.shape[0]} queries' classes is among the reference labels."
        )
    return mask


def _neighbors(embeddings, reference, metric, n_neighbors, what):
    """Positions of the ``n_neighbors`` nearest gallery samples of each query, nearest first.

    Through :class:`lossweave.retrieval.Index`'s chunked search (float32 on
    the Keras device, the rows kept in float64 on the host and the candidates
    re-ranked from them in float64): an ``(n, n_neighbors)`` table, never
    queries x gallery. Ties are broken by the lower gallery position.
    ``embeddings`` are already normalized for cosine; for Euclidean both
    sides are first centred on the gallery's mean (in float64: distances do
    not change, and the float32 search on the device finds the candidates
    with less cancellation, so fewer searches are widened). Leave-one-out when
    ``reference`` is None: each query's own row is excluded by position, so a
    duplicate of the query still counts as a neighbour.
    """
    from lossweave.retrieval.index import Index

    n = embeddings.shape[0]
    if reference is None:
        if n_neighbors > n - 1:
            raise ValueError(
                f"{what} needs {n_neighbors} neighbours per query, but there are only {n} samples "
                f"({n - 1} others per query). Use a smaller k or more samples."
            )
    elif n_neighbors > reference.shape[0]:
        raise ValueError(
            f"{what} needs {n_neighbors} neighbours per query, but the reference set has only "
            f"{reference.shape[0]} samples. Use a smaller k or a larger reference set."
        )
    gallery = embeddings if reference is None else reference
    if metric == "euclidean":
        center = gallery.mean(axis=0)
        embeddings, gallery = embeddings - center, gallery - center
    index = Index(metric=metric, dtype="float64")
    index.add(gallery)
    exclude = np.arange(n) if reference is None else None
    return index.search(embeddings, n_neighbors, exclude=exclude).indices


def _hits(embeddings, labels, reference, reference_labels, mask, metric, n_neighbors, what):
    """``(answerable queries, n_neighbors)``: whether each neighbour has the query's class."""
    if reference is None:
        neighbors = _neighbors(embeddings, None, metric, n_neighbors, what)
        return (labels[neighbors] == labels[:, None])[mask]
    neighbors = _neighbors(embeddings[mask], reference, metric, n_neighbors, what)
    return reference_labels[neighbors] == labels[mask][:, None]


def _query_hits(embeddings, labels, metric, reference_embeddings, reference_labels, n_neighbors,
                what):
    """Hits of the ``n_neighbors`` nearest of each answerable query (validated inputs)."""
    embeddings, labels, reference, reference_labels = _prepare(
        embeddings, labels, metric, reference_embeddings, reference_labels
    )
    mask = _answerable(labels, reference_labels, what)
    return _hits(embeddings, labels, reference, reference_labels, mask, metric, n_neighbors, what)


def _within_r(hits, r):
    """Hits among the first ``R`` neighbours of each query (a search with ``k`` >= the largest ``R``)."""
    rank = np.arange(1, r.max() + 1)
    return hits[:, :r.max()] & (rank[None, :] <= r[:, None])


def _ranked_within_r(embeddings, labels, metric, reference_embeddings, reference_labels, what):
    """``(rel, r)``: hits among the first ``R`` neighbours of each answerable query, and ``R``."""
    embeddings, labels, reference, reference_labels = _prepare(
        embeddings, labels, metric, reference_embeddings, reference_labels
    )
    mask = _answerable(labels, reference_labels, what)
    r = _relevant(labels, reference_labels)[mask]
    rel = _hits(embeddings, labels, reference, reference_labels, mask, metric, int(r.max()), what)
    return _within_r(rel, r), r


def _recalls(hits, ks):
    """``{k: Recall@k}`` from the hits of the ``max(ks)`` (or more) nearest."""
    first = np.cumsum(hits, axis=1) > 0
    return {k: float(first[:, k - 1].mean()) for k in ks}


def _map_at_r(rel, r):
    """MAP@R from the hits within ``R`` (see :func:`map_at_r`)."""
    rank = np.arange(1, rel.shape[1] + 1)
    precision = np.cumsum(rel, axis=1) / rank[None, :]
    return float((np.sum(precision * rel, axis=1) / r).mean())


def _r_precision(rel, r):
    """R-precision from the hits within ``R`` (see :func:`r_precision`)."""
    return float(np.mean(rel.sum(axis=1) / r))


def ranked_figures(embeddings, labels, ks, metric, reference_embeddings=None, reference_labels=None):
    """Recall@k for each ``k``, MAP@R and R-precision from ONE search (``k`` = the larger of ``max(ks)`` and ``R``).

    What :func:`lossweave.metrics.evaluate_embeddings` uses: the same numbers
    as :func:`recall_at_k`, :func:`map_at_r` and :func:`r_precision` called
    one by one (the search's order does not depend on ``k``), for a third of
    their searches.

    Returns:
        ``(recalls, map_at_r, r_precision)``: a dict ``{k: recall}`` and two floats.

    Example:
        >>> x = np.array([[0.], [0.3], [1.], [1.1], [0.55]])
        >>> ranked_figures(x, [0, 0, 1, 1, 1], ks=(1, 2), metric="euclidean")
        ({1: 0.6, 2: 1.0}, 0.65, 0.7)
    """
    embeddings, labels, reference, reference_labels = _prepare(
        embeddings, labels, metric, reference_embeddings, reference_labels
    )
    mask = _answerable(labels, reference_labels, "evaluate_embeddings")
    r = _relevant(labels, reference_labels)[mask]
    hits = _hits(embeddings, labels, reference, reference_labels, mask, metric, max(max(ks), int(r.max())),
                 "evaluate_embeddings (recall@k)")
    rel = _within_r(hits, r)
    return _recalls(hits, ks), _map_at_r(rel, r), _r_precision(rel, r)


def queries_without_reference(labels, reference_labels):
    """How many queries have no sample of their class in the reference set.

    They are skipped by the retrieval figures of the query / reference
    protocol (their recall is 0 whatever the embedding).

    Args:
        labels: ``(n,)`` integer classes of the queries.
        reference_labels: ``(m,)`` integer classes of the reference set.

    Returns:
        The count, an int.

    Example:
        >>> queries_without_reference([0, 0, 1, 2], [1, 1, 1, 3])
        3
    """
    labels = _checks.as_labels(labels)
    reference_labels = _checks.as_labels(reference_labels, what="reference_labels")
    return int(np.sum(~np.isin(labels, reference_labels)))


def recall_at_k(embeddings, labels, ks=(1, 2, 4, 8), metric="cosine", *,
                reference_embeddings=None, reference_labels=None):
    """Recall@k: fraction of queries with a same-class sample among their k nearest.

    Recall@k is the metric-learning "recall" of Oh Song et al., "Deep Metric
    Learning via Lifted Structured Feature Embedding", CVPR 2016 (Sec. 5),
    also reported by Musgrave et al., "A Metric Learning Reality Check", ECCV
    2020: a query scores 1 if at least one of its ``k`` nearest neighbours has
    its class. Recall@1 is the 1-NN accuracy. Leave-one-out over the set, or
    the queries against a reference set (see the module docstring); skipped
    queries are left out. Ties between equally distant neighbours are broken
    by the lower gallery position (the order of the rows).

    Args:
        embeddings: ``(n, dim)`` array (the queries).
        labels: ``(n,)`` integer classes; at least two distinct without a
            reference set.
        ks: positive integers, each at most ``n - 1`` (leave-one-out) or the
            reference set's size.
        metric: ``"cosine"`` or ``"euclidean"``.
        reference_embeddings: optional ``(m, dim)`` gallery.
        reference_labels: ``(m,)`` integer classes of the gallery (at least
            two distinct); with ``reference_embeddings`` only.

    Returns:
        dict ``{k: recall}`` of floats in ``[0, 1]``.

    Raises:
        ValueError: bad shapes or values, a ``k`` out of range, too few
            classes, or no query with a correct answer.

    Example:
        >>> x = np.array([[0.], [0.3], [1.], [1.1], [0.55]])
        >>> recall_at_k(x, [0, 0, 1, 1, 1], ks=(1, 2), metric="euclidean")
        {1: 0.6, 2: 1.0}
        >>> recall_at_k([[0.2], [0.9]], [0, 1], ks=(1,), metric="euclidean",
        ...             reference_embeddings=x, reference_labels=[0, 0, 1, 1, 1])
        {1: 1.0}
    """
    ks = _checks.check_ks(ks, "recall_at_k")
    hits = _query_hits(embeddings, labels, metric, reference_embeddings, reference_labels, max(ks),
                       "recall_at_k")
    return _recalls(hits, ks)


def nearest_neighbor_accuracy(embeddings, labels, metric="cosine", *,
                              reference_embeddings=None, reference_labels=None):
    """Top-1 nearest-neighbour accuracy (leave-one-out, or against a reference set).

    Each query is classified by the class of its nearest gallery sample
    (Precision@1 in Musgrave et al., "A Metric Learning Reality Check", ECCV
    2020; equal to :func:`recall_at_k` at ``k=1``). Skipped queries as in
    :func:`recall_at_k`.

    Args:
        embeddings: ``(n, dim)`` array.
        labels: ``(n,)`` integer classes; at least two distinct without a
            reference set.
        metric: ``"cosine"`` or ``"euclidean"``.
        reference_embeddings, reference_labels: optional gallery, as in
            :func:`recall_at_k`.

    Returns:
        The accuracy, a float in ``[0, 1]``.

    Raises:
        ValueError: as :func:`recall_at_k`.

    Example:
        >>> x = np.array([[0.], [0.3], [1.], [1.1], [0.55]])
        >>> nearest_neighbor_accuracy(x, [0, 0, 1, 1, 1], metric="euclidean")
        0.6
    """
    return recall_at_k(embeddings, labels, ks=(1,), metric=metric,
                       reference_embeddings=reference_embeddings,
                       reference_labels=reference_labels)[1]


def map_at_r(embeddings, labels, metric="cosine", *, reference_embeddings=None,
             reference_labels=None):
    """MAP@R of Musgrave et al., "A Metric Learning Reality Check", ECCV 2020 (Sec. 3.2).

    For a query with ``R`` gallery samples of its class, look at its ``R``
    nearest neighbours and average the precision at each correct one:

    .. math::

        \\mathrm{AP@R} = \\frac{1}{R} \\sum_{i=1}^{R} P(i)\\,\\mathrm{rel}(i),
        \\qquad P(i) = \\frac{1}{i} \\sum_{j \\le i} \\mathrm{rel}(j)

    where ``rel(i)`` is 1 if the i-th neighbour has the query's class; MAP@R
    is the mean over queries. Unlike Recall@k it rewards ranking *all* of the
    class first. Queries with ``R = 0`` are skipped. Memory: the chunked
    search runs with ``k`` = the largest ``R`` and keeps an ``(n, largest
    R)`` table of neighbour positions (plus one query chunk x gallery block
    of scores): a class of 10k references costs 40 kB per query.

    Args:
        embeddings: ``(n, dim)`` array.
        labels: ``(n,)`` integer classes; at least two distinct without a
            reference set.
        metric: ``"cosine"`` or ``"euclidean"``.
        reference_embeddings, reference_labels: optional gallery, as in
            :func:`recall_at_k`.

    Returns:
        MAP@R, a float in ``[0, 1]``.

    Raises:
        ValueError: bad shapes or values, too few classes, or no query with a
            correct answer.

    Example:
        >>> x = np.array([[0.], [0.3], [1.], [1.1], [0.55]])
        >>> map_at_r(x, [0, 0, 1, 1, 1], metric="euclidean")  # (1 + 0 + 1 + 1 + 1/2 * 1/2) / 5
        0.65
    """
    rel, r = _ranked_within_r(embeddings, labels, metric, reference_embeddings, reference_labels,
                              "map_at_r")
    return _map_at_r(rel, r)


def r_precision(embeddings, labels, metric="cosine", *, reference_embeddings=None,
                reference_labels=None):
    """R-precision of Musgrave et al., "A Metric Learning Reality Check", ECCV 2020 (Sec. 3.2).

    For a query with ``R`` gallery samples of its class, the share of its
    ``R`` nearest neighbours that have its class:

    .. math::

        \\text{R-precision} = \\frac{r}{R},
        \\qquad r = \\sum_{i=1}^{R} \\mathrm{rel}(i)

    averaged over the queries (Manning, Raghavan & Schütze, "Introduction to
    Information Retrieval", 2008, Ch. 8.4). It is the precision at the point
    where a perfect ranking would have found the whole class; unlike MAP@R it
    ignores the order within the first ``R``. Queries with ``R = 0`` are
    skipped.

    Args:
        embeddings: ``(n, dim)`` array.
        labels: ``(n,)`` integer classes; at least two distinct without a
            reference set.
        metric: ``"cosine"`` or ``"euclidean"``.
        reference_embeddings, reference_labels: optional gallery, as in
            :func:`recall_at_k`.

    Returns:
        R-precision, a float in ``[0, 1]``.

    Raises:
        ValueError: as :func:`map_at_r`.

    Example:
        >>> x = np.array([[0.], [0.3], [1.], [1.1], [0.55]])
        >>> r_precision(x, [0, 0, 1, 1, 1], metric="euclidean")  # (1 + 0 + 1 + 1 + 1/2) / 5
        0.7
    """
    rel, r = _ranked_within_r(embeddings, labels, metric, reference_embeddings, reference_labels,
                              "r_precision")
    return _r_precision(rel, r)


def precision_at_k(embeddings, labels, ks=(1, 5), metric="cosine", *, reference_embeddings=None,
                   reference_labels=None):
    """Precision@k: the share of a query's ``k`` nearest that have its class, averaged over queries.

    Manning, Raghavan & Schütze, "Introduction to Information Retrieval",
    2008, Ch. 8.4 (``P@k``); Precision@1 is Musgrave et al.'s (ECCV 2020) and
    equals :func:`nearest_neighbor_accuracy`. Unlike :func:`recall_at_k` every
    correct neighbour counts, so a query with ``R < k`` gallery samples of its
    class scores at most ``R / k``. Skipped queries as in :func:`recall_at_k`;
    ties by the lower gallery position.

    Args:
        embeddings: ``(n, dim)`` array (the queries).
        labels: ``(n,)`` integer classes; at least two distinct without a
            reference set.
        ks: positive integers, each at most ``n - 1`` (leave-one-out) or the
            reference set's size.
        metric: ``"cosine"`` or ``"euclidean"``.
        reference_embeddings, reference_labels: optional gallery, as in
            :func:`recall_at_k`.

    Returns:
        dict ``{k: precision}`` of floats in ``[0, 1]``.

    Raises:
        ValueError: as :func:`recall_at_k`.

    Example:
        >>> x = np.array([[0.], [0.3], [1.], [1.1], [0.55]])
        >>> precision_at_k(x, [0, 0, 1, 1, 1], ks=(1, 2), metric="euclidean")  # P@2: 3.5 / 5
        {1: 0.6, 2: 0.7}
    """
    ks = _checks.check_ks(ks, "precision_at_k")
    hits = _query_hits(embeddings, labels, metric, reference_embeddings, reference_labels, max(ks),
                       "precision_at_k")
    correct = np.cumsum(hits, axis=1)
    return {k: float(np.mean(correct[:, k - 1] / k)) for k in ks}


def mean_reciprocal_rank(embeddings, labels, k=10, metric="cosine", *, reference_embeddings=None,
                         reference_labels=None):
    """Mean reciprocal rank (MRR@k) of the first neighbour of the query's class.

    Voorhees, "The TREC-8 Question Answering Track Report", TREC 1999: a
    query scores ``1 / rank`` of its first correct neighbour, and 0 when none
    is among its ``k`` nearest (the cut-off of MS MARCO's MRR@10); the mean
    over queries. With ``k`` = the gallery size it is the uncut MRR; the
    chunked search keeps an ``(n, k)`` table, so ``k`` bounds the memory.
    Skipped queries as in :func:`recall_at_k`; ties by the lower gallery
    position.

    Args:
        embeddings: ``(n, dim)`` array (the queries).
        labels: ``(n,)`` integer classes; at least two distinct without a
            reference set.
        k: the cut-off, at most ``n - 1`` (leave-one-out) or the reference
            set's size.
        metric: ``"cosine"`` or ``"euclidean"``.
        reference_embeddings, reference_labels: optional gallery, as in
            :func:`recall_at_k`.

    Returns:
        MRR@k, a float in ``[0, 1]``.

    Raises:
        ValueError: as :func:`recall_at_k`.

    Example:
        >>> x = np.array([[0.], [0.3], [1.], [1.1], [0.55]])
        >>> mean_reciprocal_rank(x, [0, 0, 1, 1, 1], k=3, metric="euclidean")  # (1+1/2+1+1+1/2)/5
        0.8
    """
    k = _checks.check_ks(k, "mean_reciprocal_rank")[0]
    hits = _query_hits(embeddings, labels, metric, reference_embeddings, reference_labels, k,
                       "mean_reciprocal_rank")
    first = np.argmax(hits, axis=1)
    return float(np.mean(np.where(hits.any(axis=1), 1.0 / (first + 1), 0.0)))
