"""Every figure of the embedding metrics on one labelled embedding, as a flat dict."""

import numpy as np

from lossweave.metrics import _checks, retrieval
from lossweave.metrics.clustering import clustering_scores
from lossweave.metrics.tightness import distance_ratio
from lossweave.metrics.verification import (
    _far_key,
    pair_scores,
    roc_auc,
    tar_at_far,
    verification_accuracy,
    verification_pairs,
)


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
    *,
    reference_embeddings=None,
    reference_labels=None,
    r_precision=False,
    clustering=False,
):
    """Every figure of the embedding metrics on one labelled embedding, as a flat dict of floats.

    Keys (ready for Keras logs or a ``metrics.json``): ``"distance_ratio"``,
    ``"nn_top1"``, ``"recall@<k>"`` for each ``k``, ``"map@r"`` (Musgrave et
    al., ECCV 2020), and for pair verification (Huang et al., LFW Tech. Rep.
    07-49, 2007) ``"verification_accuracy"``, ``"verification_std"``,
    ``"roc_auc"`` and ``"tar@far=<far>"`` (e.g. ``"tar@far=1e-3"``). On
    request: ``"r_precision"`` (``r_precision=True``) and ``"nmi"``,
    ``"ami"`` (``clustering=True``: one seeded k-means).

    Without a reference set the retrieval figures are leave-one-out over
    ``embeddings``. With ``reference_embeddings`` and ``reference_labels``
    the rows of ``embeddings`` are queries searched in that gallery (e.g.
    test images against enrolled ones); queries whose class is absent from
    the gallery are left out of the retrieval figures and counted in
    ``"queries_without_reference"``. The distance ratio, the clustering and
    the verification pairs always describe ``embeddings`` (the queries).

    Args:
        embeddings: ``(n, dim)`` array.
        labels: ``(n,)`` integer classes; at least two distinct, and (without
            a reference set) one class with two samples.
        metric: ``"cosine"`` or ``"euclidean"``, for every figure.
        ks: the ``k`` of the Recall@k figures.
        pairs: the verification pairs: ``None`` to draw ``num_pairs`` with
            :func:`lossweave.metrics.verification_pairs` (seeded by ``seed``), a tuple
            ``(index_a, index_b, issame)`` of row indices into
            ``embeddings``, or ``False`` to leave verification out.
        num_pairs: number of pairs drawn when ``pairs`` is None.
        far: the FAR of the TAR figure.
        folds: folds of the verification accuracy.
        seed: seed of the drawn pairs and of k-means.
        reference_embeddings: optional ``(m, dim)`` gallery of the retrieval
            figures.
        reference_labels: ``(m,)`` integer classes of the gallery (at least
            two distinct); with ``reference_embeddings`` only.
        r_precision: add ``"r_precision"`` (:func:`lossweave.metrics.r_precision`).
        clustering: add ``"nmi"`` and ``"ami"`` (:func:`lossweave.metrics.clustering_scores`).

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
        >>> queries = np.eye(4)[[0, 1, 2, 3, 3]] + 0.05 * rng.normal(size=(5, 4))
        >>> gallery = evaluate_embeddings(queries, [0, 1, 2, 3, 9], pairs=False,
        ...                               reference_embeddings=x, reference_labels=labels,
        ...                               r_precision=True, clustering=True)
        >>> gallery["map@r"], gallery["r_precision"], gallery["queries_without_reference"]
        (1.0, 1.0, 1.0)
    """
    embeddings, labels = _checks.check_set(embeddings, labels, _checks.check_metric(metric))
    ks = _checks.check_ks(ks, "evaluate_embeddings")
    reference = {"reference_embeddings": reference_embeddings, "reference_labels": reference_labels}
    recalls, map_r, r_prec = retrieval.ranked_figures(embeddings, labels, tuple(sorted(set(ks) | {1})), metric,
                                                      **reference)
    figures = {
        "distance_ratio": distance_ratio(embeddings, labels, metric=metric),
        "nn_top1": recalls[1],
    }
    figures.update({f"recall@{k}": recalls[k] for k in ks})
    figures["map@r"] = map_r
    if r_precision:
        figures["r_precision"] = r_prec
    if reference_labels is not None:
        figures["queries_without_reference"] = float(
            retrieval.queries_without_reference(labels, reference_labels)
        )
    if clustering:
        result = clustering_scores(embeddings, labels, metric=metric, seed=seed)
        figures["nmi"], figures["ami"] = result.nmi, result.ami
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
        index_a, index_b = (_checks.as_labels(i, what="pair indices") for i in (index_a, index_b))
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
