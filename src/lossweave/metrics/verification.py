"""Pair verification of an embedding: the LFW protocol, ROC AUC and TAR@FAR.

Pairs of samples are scored by similarity (:func:`pair_scores`) and a
threshold decides "same" or "different", as in face verification (Huang et
al., "Labeled Faces in the Wild: A Database for Studying Face Recognition in
Unconstrained Environments", UMass Tech. Rep. 07-49, 2007).
"""

from typing import NamedTuple

import numpy as np

from lossweave import arguments
from lossweave.metrics import _checks


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
    labels = _checks.as_labels(labels)
    num_pairs = arguments.integer(num_pairs, "num_pairs", "verification_pairs", low=2)
    if np.unique(labels).size < 2:
        raise ValueError(
            "verification_pairs needs at least two classes to draw impostor pairs; received "
            f"{np.unique(labels).size}."
        )
    sizes = _checks.class_sizes(labels)
    if not np.any(sizes >= 2):
        raise ValueError(
            "verification_pairs needs at least one class with two or more samples; every class "
            "here has a single sample, so no genuine pair can be drawn (evaluate_embeddings: "
            "pass pairs=False to leave verification out)."
        )
    rng = np.random.default_rng(seed)
    n_same = num_pairs // 2
    n_diff = num_pairs - n_same
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    starts = np.searchsorted(sorted_labels, labels, side="left")

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
    _checks.check_metric(metric)
    emb_a = _checks.as_embeddings(emb_a, "emb_a")
    emb_b = _checks.as_embeddings(emb_b, "emb_b")
    if emb_a.shape != emb_b.shape:
        raise ValueError(
            f"expected emb_a and emb_b of the same shape (pairs, dim); received {emb_a.shape} "
            f"and {emb_b.shape}."
        )
    if metric == "cosine":
        return np.sum(_checks.normalize(emb_a, "emb_a") * _checks.normalize(emb_b, "emb_b"), axis=1)
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
    # At most one fold per pair.
    folds = arguments.integer(folds, "folds", "verification_accuracy", low=2, high=scores.size)
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
    far = arguments.number(far, "far", "tar_at_far", low=0.0, high=1.0)
    fpr, tpr, _ = roc_curve(issame, scores, drop_intermediate=False)
    return float(np.max(tpr[fpr <= far]))


def _far_key(far):
    mantissa, exponent = f"{far:e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"tar@far={mantissa}e{int(exponent)}"

