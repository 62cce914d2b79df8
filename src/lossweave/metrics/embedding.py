"""Evaluation of an embedding: class tightness, retrieval and pair verification.

Plain NumPy / scikit-learn functions on NumPy arrays, meant for a validation
set at the end of an epoch (see :class:`lossweave.metrics.EmbeddingEvaluation`)
or for a trained model's features. Nothing here is differentiable or touches a
Keras backend.

Conventions shared by every function:

* ``embeddings`` is a float array of shape ``(n, dim)`` and ``labels`` an
  integer array of shape ``(n,)`` (``(n, 1)`` is accepted).
* ``metric="cosine"`` compares directions (distance ``1 - cos``; rows are
  L2-normalized first, so every figure is invariant to a per-row scaling and a
  zero row is an error); ``metric="euclidean"`` compares the raw vectors.
* Retrieval figures (:func:`nearest_neighbor_accuracy`, :func:`recall_at_k`,
  :func:`map_at_r`) are leave-one-out over the set: every sample is a query,
  the others are the gallery. A query whose class has no other sample can never
  be answered correctly; it is **skipped** (left out of the mean, as
  pytorch-metric-learning's ``AccuracyCalculator`` does with "lone" queries),
  and an error is raised if no query is left.
"""

from typing import NamedTuple

import numpy as np

METRICS = ("cosine", "euclidean")


# ------------------------------------------------------------------- checks
def _check_metric(metric):
    if metric not in METRICS:
        raise ValueError(f"expected metric='cosine' or 'euclidean'; received metric={metric!r}.")
    return metric


def _as_labels(labels, n=None, what="labels"):
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


def _as_embeddings(embeddings, name="embeddings"):
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


def _normalize(embeddings, name="embeddings"):
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError(
            f"metric='cosine' needs non-zero {name}, but {int(np.sum(norms == 0))} rows are all "
            "zeros (their direction is undefined). Use metric='euclidean' or fix the model "
            "(e.g. avoid a ReLU on the embedding layer)."
        )
    return embeddings / norms


def _check(embeddings, labels, metric, min_classes=2):
    """Validated float64 embeddings (normalized for cosine) and int labels."""
    _check_metric(metric)
    embeddings = _as_embeddings(embeddings)
    labels = _as_labels(labels, embeddings.shape[0])
    classes = np.unique(labels)
    if classes.size < min_classes:
        raise ValueError(
            f"expected samples of at least {min_classes} classes; received {classes.size} "
            f"class(es) in {labels.shape[0]} samples."
        )
    if metric == "cosine":
        embeddings = _normalize(embeddings)
    return embeddings, labels


def _class_sizes(labels):
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    return counts[inverse.reshape(-1)]


def _neighbors(embeddings, labels, n_neighbors, what):
    """Indices of the ``n_neighbors`` nearest other samples, nearest first.

    ``embeddings`` are already normalized for cosine: on unit vectors
    ``||a - b||^2 = 2 (1 - cos(a, b))``, so Euclidean neighbours are cosine
    neighbours and scikit-learn may use a tree.
    """
    from sklearn.neighbors import NearestNeighbors

    n = embeddings.shape[0]
    if n_neighbors > n - 1:
        raise ValueError(
            f"{what} needs {n_neighbors} neighbours per query, but there are only {n} samples "
            f"({n - 1} others per query). Use a smaller k or more samples."
        )
    # kneighbors() without X leaves each query out of its own neighbours (by index,
    # so a duplicate of the query still counts as a neighbour).
    index = NearestNeighbors(n_neighbors=n_neighbors).fit(embeddings)
    return index.kneighbors(return_distance=False)


def _queries(labels, what):
    """Mask of queries that have at least one other sample of their class."""
    mask = _class_sizes(labels) >= 2
    if not mask.any():
        raise ValueError(
            f"{what} needs at least one class with two or more samples; every class here has a "
            "single sample, so no query has a correct answer."
        )
    return mask


# ------------------------------------------------------------- tightness
def distance_ratio(embeddings, labels, metric="cosine"):
    """Intra-class over inter-class distance of an embedding (lower is tighter).

    .. math::

        r = \\frac{\\frac{1}{n} \\sum_i d(x_i, c_{y_i})}
                  {\\frac{2}{K(K-1)} \\sum_{j < k} d(c_j, c_k)}

    the mean distance of a sample to its class center divided by the mean
    distance between two of the ``K`` class centers. ``metric="euclidean"``:
    ``d`` is the Euclidean distance and ``c_j`` the mean of class ``j``; this
    equals :func:`lossweave.report.features.class_distance_ratio` (no
    centers). ``metric="cosine"``: ``d(a, b) = 1 - cos(a, b)`` and ``c_j`` the
    mean direction of class ``j`` (the normalized mean of the normalized rows).
    The ratio is invariant to scaling the whole embedding (and, for cosine, to
    scaling each row). It is the tightness measure behind center loss (Wen et
    al., "A Discriminative Feature Learning Approach for Deep Face
    Recognition", ECCV 2016): compact classes, separated centers.

    Args:
        embeddings: ``(n, dim)`` array.
        labels: ``(n,)`` integer classes; at least two distinct.
        metric: ``"cosine"`` or ``"euclidean"``.

    Returns:
        The ratio as a float: ``inf`` if all centers coincide while samples
        spread, ``nan`` if everything coincides or (cosine) a class's rows
        cancel out so it has no mean direction.

    Raises:
        ValueError: bad shapes, NaN values, fewer than two classes, or (cosine)
            a zero row.

    Example:
        >>> x = np.array([[0., 1.], [0., -1.], [10., 1.], [10., -1.]])
        >>> distance_ratio(x, [0, 0, 1, 1], metric="euclidean")
        0.1
        >>> x = np.array([[1., 0.1], [1., -0.1], [-1., 0.1], [-1., -0.1]])
        >>> r = distance_ratio(x, [0, 0, 1, 1], metric="cosine")  # (1 - cos 5.7 deg) / (1 - cos 180 deg)
        >>> bool(np.isclose(r, (1 - 1 / np.sqrt(1.01)) / 2))
        True
    """
    embeddings, labels = _check(embeddings, labels, metric)
    classes, inverse = np.unique(labels, return_inverse=True)
    inverse = inverse.reshape(-1)
    counts = np.bincount(inverse)
    sums = np.zeros((classes.size, embeddings.shape[1]))
    np.add.at(sums, inverse, embeddings)
    centers = sums / counts[:, None]
    if metric == "euclidean":
        intra = float(np.linalg.norm(embeddings - centers[inverse], axis=1).mean())
        pairwise = np.linalg.norm(centers[:, None, :] - centers[None, :, :], axis=-1)
    else:
        norms = np.linalg.norm(centers, axis=1, keepdims=True)
        if np.any(norms == 0):
            return float("nan")
        centers = centers / norms
        intra = float(np.mean(1.0 - np.sum(embeddings * centers[inverse], axis=1)))
        pairwise = 1.0 - centers @ centers.T
    inter = float(pairwise[np.triu_indices(classes.size, k=1)].mean())
    if inter <= 0.0:
        return float("nan") if intra <= 0.0 else float("inf")
    return max(intra, 0.0) / inter


# -------------------------------------------------------------- retrieval
def recall_at_k(embeddings, labels, ks=(1, 2, 4, 8), metric="cosine"):
    """Recall@k: fraction of queries with a same-class sample among their k nearest.

    Every sample queries all the others (leave-one-out). Recall@k is the
    metric-learning "recall" of Oh Song et al., "Deep Metric Learning via
    Lifted Structured Feature Embedding", CVPR 2016 (Sec. 5), also reported by
    Musgrave et al., "A Metric Learning Reality Check", ECCV 2020: a query
    scores 1 if at least one of its ``k`` nearest neighbours has its class.
    Recall@1 is the leave-one-out 1-NN accuracy. Queries whose class has a
    single sample are skipped. Ties between equally distant neighbours are
    broken by scikit-learn's neighbour search.

    Args:
        embeddings: ``(n, dim)`` array.
        labels: ``(n,)`` integer classes; at least two distinct.
        ks: positive integers, each at most ``n - 1``.
        metric: ``"cosine"`` or ``"euclidean"``.

    Returns:
        dict ``{k: recall}`` of floats in ``[0, 1]``.

    Raises:
        ValueError: bad shapes or values, a ``k`` out of range, fewer than two
            classes, or no class with two samples.

    Example:
        >>> x = np.array([[0.], [0.3], [1.], [1.1], [0.55]])
        >>> recall_at_k(x, [0, 0, 1, 1, 1], ks=(1, 2), metric="euclidean")
        {1: 0.6, 2: 1.0}
    """
    embeddings, labels = _check(embeddings, labels, metric)
    ks = _check_ks(ks)
    mask = _queries(labels, "recall_at_k")
    neighbors = _neighbors(embeddings, labels, max(ks), "recall_at_k")
    hits = (labels[neighbors] == labels[:, None])[mask]
    first = np.cumsum(hits, axis=1) > 0
    return {k: float(first[:, k - 1].mean()) for k in ks}


def _check_ks(ks):
    ks = (ks,) if np.isscalar(ks) else tuple(ks)
    if not ks:
        raise ValueError("expected at least one k in `ks`; received an empty sequence.")
    for k in ks:
        if isinstance(k, bool) or not float(k).is_integer() or k < 1:
            raise ValueError(f"expected positive integers in `ks`; received {ks!r}.")
    return tuple(int(k) for k in ks)


def nearest_neighbor_accuracy(embeddings, labels, metric="cosine"):
    """Leave-one-out top-1 nearest-neighbour accuracy.

    Each sample is classified by the class of its nearest other sample
    (Precision@1 in Musgrave et al., "A Metric Learning Reality Check", ECCV
    2020; equal to :func:`recall_at_k` at ``k=1``). Queries whose class has a
    single sample are skipped.

    Args:
        embeddings: ``(n, dim)`` array.
        labels: ``(n,)`` integer classes; at least two distinct.
        metric: ``"cosine"`` or ``"euclidean"``.

    Returns:
        The accuracy, a float in ``[0, 1]``.

    Raises:
        ValueError: as :func:`recall_at_k`.

    Example:
        >>> x = np.array([[0.], [0.3], [1.], [1.1], [0.55]])
        >>> nearest_neighbor_accuracy(x, [0, 0, 1, 1, 1], metric="euclidean")
        0.6
    """
    return recall_at_k(embeddings, labels, ks=(1,), metric=metric)[1]


def map_at_r(embeddings, labels, metric="cosine"):
    """MAP@R of Musgrave et al., "A Metric Learning Reality Check", ECCV 2020 (Sec. 3.2).

    For a query with ``R`` other samples of its class, look at its ``R``
    nearest neighbours and average the precision at each correct one:

    .. math::

        \\mathrm{AP@R} = \\frac{1}{R} \\sum_{i=1}^{R} P(i)\\,\\mathrm{rel}(i),
        \\qquad P(i) = \\frac{1}{i} \\sum_{j \\le i} \\mathrm{rel}(j)

    where ``rel(i)`` is 1 if the i-th neighbour has the query's class; MAP@R
    is the mean over queries. Unlike Recall@k it rewards ranking *all* of the
    class first. Queries with ``R = 0`` (a class of one sample) are skipped.
    Memory: an ``(n, largest class size)`` table of neighbour indices.

    Args:
        embeddings: ``(n, dim)`` array.
        labels: ``(n,)`` integer classes; at least two distinct.
        metric: ``"cosine"`` or ``"euclidean"``.

    Returns:
        MAP@R, a float in ``[0, 1]``.

    Raises:
        ValueError: bad shapes or values, fewer than two classes, or no class
            with two samples.

    Example:
        >>> x = np.array([[0.], [0.3], [1.], [1.1], [0.55]])
        >>> map_at_r(x, [0, 0, 1, 1, 1], metric="euclidean")  # (1 + 0 + 1 + 1 + 1/2 * 1/2) / 5
        0.65
    """
    embeddings, labels = _check(embeddings, labels, metric)
    mask = _queries(labels, "map_at_r")
    r = _class_sizes(labels) - 1
    neighbors = _neighbors(embeddings, labels, int(r.max()), "map_at_r")
    rel = (labels[neighbors] == labels[:, None])[mask]
    r = r[mask]
    rank = np.arange(1, rel.shape[1] + 1)
    within = rank[None, :] <= r[:, None]  # only the first R neighbours count
    rel = rel & within
    precision = np.cumsum(rel, axis=1) / rank[None, :]
    ap = np.sum(precision * rel, axis=1) / r
    return float(ap.mean())


# ----------------------------------------------------------- verification
class VerificationResult(NamedTuple):
    """Result of :func:`verification_accuracy`.

    Attributes:
        accuracy: mean accuracy over the folds (LFW's ``mu``).
        std: standard deviation of the fold accuracies, with ``folds - 1`` in
            the denominator (LFW's ``sigma``).
        std_error: ``std / sqrt(folds)``, the standard error LFW reports.
        fold_accuracies: ``(folds,)`` accuracy on each held-out fold.
        thresholds: ``(folds,)`` threshold chosen for each fold (a pair is
            "same" if its score is ``>=`` the threshold; ``-inf``/``inf`` mean
            accept/reject all).
    """

    accuracy: float
    std: float
    std_error: float
    fold_accuracies: np.ndarray
    thresholds: np.ndarray


def _as_pairs(scores, issame):
    scores = np.asarray(scores)
    issame = np.asarray(issame)
    if scores.ndim != 1 or issame.ndim != 1:
        raise ValueError(
            f"expected 1-D scores and issame; received shapes {scores.shape} and {issame.shape}."
        )
    if scores.shape != issame.shape:
        raise ValueError(
            f"expected one issame flag per score; received {scores.shape[0]} scores and "
            f"{issame.shape[0]} flags."
        )
    if not np.issubdtype(scores.dtype, np.number) or np.issubdtype(scores.dtype, np.bool_):
        raise ValueError(f"expected numeric scores; received dtype {scores.dtype}.")
    scores = scores.astype("float64")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores contain NaN or infinite values.")
    if issame.dtype != bool:
        if not np.all(np.isin(issame, (0, 1))):
            raise ValueError("expected issame to be booleans (or 0/1); received other values.")
        issame = issame.astype(bool)
    if issame.all() or not issame.any():
        raise ValueError(
            "expected both genuine (issame=True) and impostor (issame=False) pairs; received "
            f"{int(issame.sum())} genuine and {int((~issame).sum())} impostor pairs."
        )
    return scores, issame


def verification_pairs(labels, num_pairs=6000, seed=0):
    """Draw balanced genuine / impostor pairs from a labelled set.

    For when no pair list comes with the data (LFW ships its own: Huang et
    al., "Labeled Faces in the Wild", UMass Tech. Rep. 07-49, 2007).
    ``num_pairs // 2`` genuine pairs (two different samples of one class,
    the class of a uniformly drawn sample that has a same-class partner) and
    the rest impostor pairs (a uniformly drawn sample and a uniformly drawn
    sample of another class). Pairs are drawn with replacement and alternate
    genuine, impostor, genuine, ... so that consecutive folds of
    :func:`verification_accuracy` are balanced, as LFW's are.

    Args:
        labels: ``(n,)`` integer classes; at least two distinct and one class
            with two samples.
        num_pairs: number of pairs (default 6000, LFW's count); at least 2.
        seed: seed of the draw.

    Returns:
        ``(index_a, index_b, issame)``: two int arrays and a bool array, each
        of shape ``(num_pairs,)``.

    Raises:
        ValueError: bad labels or ``num_pairs``.

    Example:
        >>> a, b, same = verification_pairs([0, 0, 1, 1, 2], num_pairs=6, seed=0)
        >>> same.tolist()
        [True, False, True, False, True, False]
        >>> bool(np.all((np.array([0, 0, 1, 1, 2])[a] == np.array([0, 0, 1, 1, 2])[b]) == same))
        True
    """
    labels = _as_labels(labels)
    if isinstance(num_pairs, bool) or not float(num_pairs).is_integer() or num_pairs < 2:
        raise ValueError(f"expected an integer num_pairs >= 2; received {num_pairs!r}.")
    num_pairs = int(num_pairs)
    if np.unique(labels).size < 2:
        raise ValueError(
            "verification_pairs needs at least two classes to draw impostor pairs; received "
            f"{np.unique(labels).size}."
        )
    _queries(labels, "verification_pairs")
    rng = np.random.default_rng(seed)
    n_same = num_pairs // 2
    n_diff = num_pairs - n_same
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    starts = np.searchsorted(sorted_labels, labels, side="left")
    sizes = _class_sizes(labels)

    # Genuine: an anchor with a partner, then another member of its class.
    anchors = rng.choice(np.flatnonzero(sizes >= 2), size=n_same)
    offset = rng.integers(0, sizes[anchors] - 1)  # among the size-1 others
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size) - starts[order]  # position of each sample in its class
    offset = offset + (offset >= rank[anchors])  # skip the anchor itself
    partners = order[starts[anchors] + offset]

    # Impostor: any anchor, then a uniform sample outside its class.
    diff_a = rng.integers(0, labels.size, size=n_diff)
    pick = rng.integers(0, labels.size - sizes[diff_a])
    pick = pick + (pick >= starts[diff_a]) * sizes[diff_a]  # jump over the anchor's class block
    diff_b = order[pick]

    index_a = np.empty(num_pairs, dtype="int64")
    index_b = np.empty(num_pairs, dtype="int64")
    issame = np.zeros(num_pairs, dtype=bool)
    index_a[0::2], index_b[0::2], issame[0::2] = anchors, partners, True
    index_a[1::2], index_b[1::2] = diff_a, diff_b
    return index_a, index_b, issame


def pair_scores(emb_a, emb_b, metric="cosine"):
    """Similarity score of each pair of rows: higher means "more likely the same".

    ``metric="cosine"``: the cosine similarity; ``metric="euclidean"``: the
    negative Euclidean distance (so a threshold works the same way for both).

    Args:
        emb_a: ``(m, dim)`` first embedding of each pair.
        emb_b: ``(m, dim)`` second embedding of each pair.
        metric: ``"cosine"`` or ``"euclidean"``.

    Returns:
        ``(m,)`` float64 scores.

    Raises:
        ValueError: shapes differ, NaN values, or (cosine) a zero row.

    Example:
        >>> pair_scores([[1., 0.], [3., 4.]], [[2., 0.], [0., 1.]]).tolist()
        [1.0, 0.8]
        >>> pair_scores([[1., 0.], [3., 4.]], [[2., 0.], [0., 0.]], metric="euclidean").tolist()
        [-1.0, -5.0]
    """
    _check_metric(metric)
    emb_a = _as_embeddings(emb_a, "emb_a")
    emb_b = _as_embeddings(emb_b, "emb_b")
    if emb_a.shape != emb_b.shape:
        raise ValueError(
            f"expected emb_a and emb_b of the same shape (pairs, dim); received {emb_a.shape} "
            f"and {emb_b.shape}."
        )
    if metric == "cosine":
        return np.sum(_normalize(emb_a, "emb_a") * _normalize(emb_b, "emb_b"), axis=1)
    return -np.linalg.norm(emb_a - emb_b, axis=1)


def _best_threshold(scores, issame):
    """Threshold maximizing the accuracy of ``score >= t`` on these pairs (lowest if tied).

    Candidates: ``-inf`` (all same), the midpoints between consecutive distinct
    scores, and ``inf`` (all different): every distinct decision on the set.
    """
    unique = np.unique(scores)
    candidates = np.concatenate([[-np.inf], (unique[:-1] + unique[1:]) / 2, [np.inf]])
    genuine = np.sort(scores[issame])
    impostor = np.sort(scores[~issame])
    accepted = genuine.size - np.searchsorted(genuine, candidates, side="left")
    rejected = np.searchsorted(impostor, candidates, side="left")
    correct = accepted + rejected
    return float(candidates[int(np.argmax(correct))])


def verification_accuracy(scores, issame, folds=10):
    """Pair-verification accuracy by the LFW protocol (10-fold cross-validation).

    The "unrestricted" protocol of Huang et al., "Labeled Faces in the Wild: A
    Database for Studying Face Recognition in Unconstrained Environments",
    UMass Tech. Rep. 07-49, 2007 (Sec. "Reporting"): the pairs are split into
    ``folds`` consecutive folds (``sklearn.model_selection.KFold`` without
    shuffling, like LFW's fixed folds); for each fold a threshold is chosen on
    the other folds to maximize their accuracy, and the accuracy of that
    threshold is measured on the held-out fold. A pair is declared "same" if
    ``score >= threshold``. Candidate thresholds are every distinct decision on
    the training folds: ``-inf``, the midpoints between consecutive distinct
    scores, and ``inf``; on a tie the lowest threshold wins.

    Args:
        scores: ``(m,)`` similarities (higher = more alike), e.g. from
            :func:`pair_scores`.
        issame: ``(m,)`` booleans, True for a genuine pair.
        folds: number of folds, at least 2 and at most ``m``.

    Returns:
        A :class:`VerificationResult` ``(accuracy, std, std_error,
        fold_accuracies, thresholds)``; ``std`` uses ``folds - 1`` degrees of
        freedom and ``std_error = std / sqrt(folds)``, as in the LFW report.

    Raises:
        ValueError: shapes differ, NaN scores, only one kind of pair, or a bad
            ``folds``.

    Example:
        >>> s = [0.9, 0.1, 0.8, 0.3, 0.7, 0.6]
        >>> same = [True, False, True, False, True, False]
        >>> result = verification_accuracy(s, same, folds=3)  # fold 3 learns 0.55, accepts 0.6
        >>> result.fold_accuracies.tolist(), result.thresholds.round(2).tolist()
        ([1.0, 1.0, 0.5], [0.65, 0.65, 0.55])
        >>> round(result.accuracy, 4)
        0.8333
    """
    from sklearn.model_selection import KFold

    scores, issame = _as_pairs(scores, issame)
    if isinstance(folds, bool) or not float(folds).is_integer() or not 2 <= folds <= scores.size:
        raise ValueError(
            f"expected an integer folds in [2, {scores.size}] (the number of pairs); received "
            f"{folds!r}."
        )
    folds = int(folds)
    accuracies = np.empty(folds)
    thresholds = np.empty(folds)
    for i, (train, test) in enumerate(KFold(n_splits=folds, shuffle=False).split(scores)):
        thresholds[i] = _best_threshold(scores[train], issame[train])
        accuracies[i] = np.mean((scores[test] >= thresholds[i]) == issame[test])
    std = float(np.std(accuracies, ddof=1))
    return VerificationResult(
        float(accuracies.mean()), std, std / np.sqrt(folds), accuracies, thresholds
    )


def roc_auc(scores, issame):
    """Area under the ROC curve of pair scores (``sklearn.metrics.roc_auc_score``).

    The probability that a random genuine pair scores above a random impostor
    pair (ties count one half); threshold-free, unlike
    :func:`verification_accuracy`. See Huang et al., LFW Tech. Rep. 07-49, 2007,
    on reporting ROC curves for pair verification.

    Args:
        scores: ``(m,)`` similarities (higher = more alike).
        issame: ``(m,)`` booleans, True for a genuine pair.

    Returns:
        The AUC, a float in ``[0, 1]``.

    Raises:
        ValueError: shapes differ, NaN scores or only one kind of pair.

    Example:
        >>> roc_auc([0.9, 0.4, 0.5, 0.1], [True, True, False, False])
        0.75
    """
    from sklearn.metrics import roc_auc_score

    scores, issame = _as_pairs(scores, issame)
    return float(roc_auc_score(issame, scores))


def tar_at_far(scores, issame, far=1e-3):
    """True accept rate at a false accept rate of at most ``far``.

    The highest fraction of genuine pairs accepted by a threshold that accepts
    at most a fraction ``far`` of the impostor pairs, read off the empirical
    ROC curve of ``sklearn.metrics.roc_curve`` **without interpolation**: the
    operating point is the lowest threshold whose empirical FAR is ``<= far``
    (a conservative step function; with fewer than ``1 / far`` impostor pairs
    that is the TAR at zero false accepts). This is the "VR@FAR" figure of
    face verification benchmarks (e.g. IJB-B/C; LFW BLUFR uses FAR=1e-3).

    Args:
        scores: ``(m,)`` similarities (higher = more alike).
        issame: ``(m,)`` booleans, True for a genuine pair.
        far: the allowed false accept rate, in ``[0, 1]``.

    Returns:
        The TAR, a float in ``[0, 1]``.

    Raises:
        ValueError: shapes differ, NaN scores, only one kind of pair, or
            ``far`` out of range.

    Example:
        >>> s = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]
        >>> same = [True, False, True, True, False, False]
        >>> tar_at_far(s, same, far=0.0), tar_at_far(s, same, far=0.5)
        (0.3333333333333333, 1.0)
    """
    from sklearn.metrics import roc_curve

    scores, issame = _as_pairs(scores, issame)
    if isinstance(far, bool) or not np.isscalar(far) or not 0.0 <= far <= 1.0:
        raise ValueError(f"expected far in [0, 1]; received {far!r}.")
    fpr, tpr, _ = roc_curve(issame, scores, drop_intermediate=False)
    return float(np.max(tpr[fpr <= far]))


def _far_key(far):
    mantissa, exponent = f"{far:e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"tar@far={mantissa}e{int(exponent)}"


# --------------------------------------------------------------- all of it
def evaluate_embeddings(
    embeddings,
    labels,
    metric="cosine",
    ks=(1,),
    pairs=None,
    num_pairs=6000,
    far=1e-3,
    folds=10,
    seed=0,
):
    """Every figure of this module on one labelled embedding, as a flat dict of floats.

    Keys (ready for Keras logs or a ``metrics.json``): ``"distance_ratio"``,
    ``"nn_top1"``, ``"recall@<k>"`` for each ``k``, ``"map@r"`` (Musgrave et
    al., ECCV 2020), and for pair verification (Huang et al., LFW Tech. Rep.
    07-49, 2007) ``"verification_accuracy"``, ``"verification_std"``,
    ``"roc_auc"`` and ``"tar@far=<far>"`` (e.g. ``"tar@far=1e-3"``).

    Args:
        embeddings: ``(n, dim)`` array.
        labels: ``(n,)`` integer classes; at least two distinct and one class
            with two samples.
        metric: ``"cosine"`` or ``"euclidean"``, for every figure.
        ks: the ``k`` of the Recall@k figures.
        pairs: the verification pairs: ``None`` to draw ``num_pairs`` with
            :func:`verification_pairs` (seeded by ``seed``), a tuple
            ``(index_a, index_b, issame)`` of row indices into
            ``embeddings``, or ``False`` to leave verification out.
        num_pairs: number of pairs drawn when ``pairs`` is None.
        far: the FAR of the TAR figure.
        folds: folds of the verification accuracy.
        seed: seed of the drawn pairs.

    Returns:
        dict of str -> float.

    Raises:
        ValueError: as the individual functions.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> labels = np.repeat(np.arange(4), 10)
        >>> x = np.eye(4)[labels] + 0.05 * rng.normal(size=(40, 4))
        >>> figures = evaluate_embeddings(x, labels, ks=(1, 2), num_pairs=200)
        >>> sorted(figures)  # doctest: +NORMALIZE_WHITESPACE
        ['distance_ratio', 'map@r', 'nn_top1', 'recall@1', 'recall@2', 'roc_auc',
         'tar@far=1e-3', 'verification_accuracy', 'verification_std']
        >>> figures["map@r"], figures["verification_accuracy"]
        (1.0, 1.0)
    """
    embeddings, labels = _check(embeddings, labels, _check_metric(metric))
    ks = _check_ks(ks)
    recalls = recall_at_k(embeddings, labels, ks=tuple(sorted(set(ks) | {1})), metric=metric)
    figures = {
        "distance_ratio": distance_ratio(embeddings, labels, metric=metric),
        "nn_top1": recalls[1],
    }
    figures.update({f"recall@{k}": recalls[k] for k in ks})
    figures["map@r"] = map_at_r(embeddings, labels, metric=metric)
    if pairs is False:
        return figures
    if pairs is None:
        index_a, index_b, issame = verification_pairs(labels, num_pairs=num_pairs, seed=seed)
    else:
        if not isinstance(pairs, (tuple, list)) or len(pairs) != 3:
            raise ValueError(
                "expected pairs=(index_a, index_b, issame), None (draw pairs) or False (no "
                f"verification); received {type(pairs).__name__}."
            )
        index_a, index_b, issame = pairs
        index_a, index_b = (_as_labels(i, what="pair indices") for i in (index_a, index_b))
        n = embeddings.shape[0]
        for index in (index_a, index_b):
            if index.size and (index.min() < 0 or index.max() >= n):
                raise ValueError(
                    f"pair indices must lie in [0, {n - 1}] (rows of embeddings); received "
                    f"[{index.min()}, {index.max()}]."
                )
    scores = pair_scores(embeddings[index_a], embeddings[index_b], metric=metric)
    result = verification_accuracy(scores, issame, folds=folds)
    figures["verification_accuracy"] = result.accuracy
    figures["verification_std"] = result.std
    figures["roc_auc"] = roc_auc(scores, issame)
    figures[_far_key(far)] = tar_at_far(scores, issame, far=far)
    return figures
