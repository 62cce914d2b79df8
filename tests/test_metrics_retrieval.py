"""Retrieval metrics: R-precision, and every retrieval figure against a reference (gallery) set.

References: brute-force loops written from the definitions (Musgrave et al.,
"A Metric Learning Reality Check", ECCV 2020, Sec. 3.2: R-precision, MAP@R;
Oh Song et al., CVPR 2016: Recall@k), on continuous random data (no ties).
The leave-one-out figures without a reference set are tested, unchanged, in
test_metrics_embedding.py.
"""

import numpy as np
import pytest
from conftest import one_backend

from lossweave.metrics import (
    evaluate_embeddings,
    map_at_r,
    mean_reciprocal_rank,
    nearest_neighbor_accuracy,
    precision_at_k,
    queries_without_reference,
    r_precision,
    recall_at_k,
)

pytestmark = one_backend
METRICS = ["cosine", "euclidean"]


def _distances(queries, gallery, metric):
    if metric == "cosine":
        q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
        g = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
        return 1.0 - q @ g.T
    return np.linalg.norm(queries[:, None, :] - gallery[None, :, :], axis=-1)


def numpy_ranked_labels(queries, gallery, gallery_labels, metric, leave_one_out):
    """For each query, the gallery labels ordered by distance (itself left out if asked)."""
    d = _distances(queries, gallery, metric)
    ranked = []
    for i in range(len(queries)):
        others = [j for j in range(len(gallery)) if not (leave_one_out and j == i)]
        order = sorted(others, key=lambda j: d[i, j])
        ranked.append([gallery_labels[j] for j in order])
    return ranked


def numpy_figures(x, y, metric, reference=None, ks=(1, 3)):
    """Recall@k, MAP@R and R-precision by their definitions, skipping queries with R = 0."""
    gallery, gallery_labels = (x, y) if reference is None else reference
    ranked = numpy_ranked_labels(x, gallery, gallery_labels, metric, reference is None)
    recall = {k: [] for k in ks}
    aps, rps, skipped = [], [], 0
    for label, neighbours in zip(y, ranked):
        r = sum(1 for g in neighbours if g == label)  # gallery samples of the query's class
        if r == 0:
            skipped += 1
            continue
        for k in ks:
            recall[k].append(float(label in neighbours[:k]))
        rel = [int(g == label) for g in neighbours[:r]]
        rps.append(sum(rel) / r)  # R-precision: r/R
        aps.append(sum(rel[i] * sum(rel[: i + 1]) / (i + 1) for i in range(r)) / r)  # AP@R
    return ({k: float(np.mean(v)) for k, v in recall.items()}, float(np.mean(aps)),
            float(np.mean(rps)), skipped)


def _gallery_data(seed=0):
    """Queries of classes 0..5, a gallery of classes 0..3 and 9 (classes 4, 5 have no reference)."""
    rng = np.random.default_rng(seed)
    centers = 1.2 * rng.normal(size=(10, 6))
    y = np.arange(30) % 6
    yr = rng.permutation(np.concatenate([np.repeat([0, 1, 2, 3], [5, 8, 3, 6]), [9, 9]]))
    x = centers[y] + rng.normal(size=(30, 6))
    xr = centers[yr] + rng.normal(size=(yr.size, 6))
    return x, y, xr, yr


# ---------------------------------------------------------------- R-precision
def test_r_precision_by_hand():
    # Points on a line, no ties; class A = {0, 1.1, 5}, class B = {2, 3, 10}; R = 2 for all.
    #   query 0   (A): nearest 1.1 (A), 2 (B)  -> r/R = 1/2, AP@R = (1/1) / 2
    #   query 1.1 (A): nearest 2 (B), 0 (A)    -> 1/2,        AP@R = (1/2) / 2
    #   query 5   (A): nearest 3 (B), 2 (B)    -> 0,          AP@R = 0
    #   query 2   (B): nearest 1.1 (A), 3 (B)  -> 1/2,        AP@R = (1/2) / 2
    #   query 3   (B): nearest 2 (B), 1.1 (A)  -> 1/2,        AP@R = (1/1) / 2
    #   query 10  (B): nearest 5 (A), 3 (B)    -> 1/2,        AP@R = (1/2) / 2
    # R-precision ignores where in the first R the hits are; MAP@R does not.
    x = np.array([[0.0], [1.1], [5.0], [2.0], [3.0], [10.0]])
    y = np.array([0, 0, 0, 1, 1, 1])
    assert r_precision(x, y, metric="euclidean") == pytest.approx(2.5 / 6)
    assert map_at_r(x, y, metric="euclidean") == pytest.approx(1.75 / 6)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("seed", [0, 1])
def test_leave_one_out_r_precision_matches_the_definition(metric, seed):
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.repeat(np.arange(5), [2, 3, 6, 9, 1]))  # class 4: a lone query
    x = rng.normal(size=(y.size, 5)) + 0.7 * rng.normal(size=(5, 5))[y]
    _, map_r, rp, skipped = numpy_figures(x, y, metric)
    assert skipped == 1
    assert r_precision(x, y, metric=metric) == pytest.approx(rp, abs=1e-12)
    assert map_at_r(x, y, metric=metric) == pytest.approx(map_r, abs=1e-12)
    assert map_r <= rp  # AP@R <= R-precision query by query


# ------------------------------------------------------------ reference set
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_reference_figures_match_the_definitions(metric, seed):
    x, y, xr, yr = _gallery_data(seed)
    recall, map_r, rp, skipped = numpy_figures(x, y, metric, reference=(xr, yr), ks=(1, 3, 7))
    assert skipped == queries_without_reference(y, yr) == 10  # classes 4 and 5
    gallery = {"reference_embeddings": xr, "reference_labels": yr}
    got = recall_at_k(x, y, ks=(1, 3, 7), metric=metric, **gallery)
    for k in (1, 3, 7):
        assert got[k] == pytest.approx(recall[k], abs=1e-12)
    assert nearest_neighbor_accuracy(x, y, metric=metric, **gallery) == got[1]
    assert map_at_r(x, y, metric=metric, **gallery) == pytest.approx(map_r, abs=1e-12)
    assert r_precision(x, y, metric=metric, **gallery) == pytest.approx(rp, abs=1e-12)
    assert 0.0 < map_r < 1.0 and 0.0 < recall[1] < recall[7] <= 1.0


def test_a_set_as_its_own_reference_finds_itself():
    # The reference protocol never leaves a query out: each query is its own nearest
    # neighbour, unlike leave-one-out.
    x, y, _, _ = _gallery_data()
    assert recall_at_k(x, y, ks=(1,), reference_embeddings=x, reference_labels=y)[1] == 1.0
    assert recall_at_k(x, y, ks=(1,))[1] < 1.0


def test_evaluate_embeddings_with_a_reference_set_and_the_optional_figures():
    x, y, xr, yr = _gallery_data(3)
    figures = evaluate_embeddings(x, y, ks=(1, 2), num_pairs=200, reference_embeddings=xr,
                                  reference_labels=yr, r_precision=True, clustering=True)
    assert sorted(figures) == sorted(
        ["distance_ratio", "nn_top1", "recall@1", "recall@2", "map@r", "r_precision",
         "queries_without_reference", "nmi", "ami", "verification_accuracy", "verification_std",
         "roc_auc", "tar@far=1e-3"]
    )
    assert all(type(v) is float for v in figures.values())
    gallery = {"reference_embeddings": xr, "reference_labels": yr}
    assert figures["queries_without_reference"] == 10.0
    assert figures["recall@2"] == recall_at_k(x, y, ks=(2,), **gallery)[2]
    assert figures["map@r"] == map_at_r(x, y, **gallery)
    assert figures["r_precision"] == r_precision(x, y, **gallery)
    # The query set's own figures do not depend on the gallery.
    alone = evaluate_embeddings(x, y, ks=(1, 2), num_pairs=200, r_precision=True, clustering=True)
    for key in ("distance_ratio", "nmi", "ami", "verification_accuracy", "roc_auc"):
        assert figures[key] == alone[key], key
    assert alone["r_precision"] == r_precision(x, y)
    assert "queries_without_reference" not in alone


def test_evaluate_embeddings_one_search_equals_the_figures_one_by_one():
    # One search with k = max(max(ks), R) gives every figure: ks beyond R and R beyond ks,
    # duplicated rows (ties broken by gallery position), Euclidean and cosine.
    rng = np.random.default_rng(4)
    y = np.repeat(np.arange(5), [2, 3, 4, 6, 1])
    x = rng.normal(size=(y.size, 3)) + y[:, None]
    x[3] = x[2]
    for metric in ("euclidean", "cosine"):
        for ks in ((1, 2), (1, 9)):
            figures = evaluate_embeddings(x, y, ks=ks, metric=metric, pairs=False, r_precision=True)
            recalls = recall_at_k(x, y, ks=ks, metric=metric)
            assert [figures[f"recall@{k}"] for k in ks] == [recalls[k] for k in ks]
            assert figures["map@r"] == map_at_r(x, y, metric=metric)
            assert figures["r_precision"] == r_precision(x, y, metric=metric)


def test_queries_without_reference_counts_absent_classes():
    assert queries_without_reference([0, 0, 1, 2, 5], [1, 2, 2, 7]) == 3
    assert queries_without_reference([[1], [2]], [1, 2]) == 0


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda x, y, xr, yr: recall_at_k(x, y, reference_embeddings=xr), "reference_embeddings alone"),
        (lambda x, y, xr, yr: map_at_r(x, y, reference_labels=yr), "reference_labels alone"),
        (lambda x, y, xr, yr: r_precision(x, y, reference_embeddings=xr[:, :3], reference_labels=yr),
         r"width 6 like the queries; received shape \(24, 3\)"),
        (lambda x, y, xr, yr: r_precision(x, y, reference_embeddings=xr, reference_labels=yr[:-1]),
         "one label per embedding row"),
        (lambda x, y, xr, yr: recall_at_k(x, y, reference_embeddings=xr, reference_labels=0 * yr),
         "reference set of at least 2 classes"),
        (lambda x, y, xr, yr: map_at_r(x[y >= 4], y[y >= 4], reference_embeddings=xr,
                                       reference_labels=yr), "none of the 10 queries' classes"),
        (lambda x, y, xr, yr: recall_at_k(x, y, ks=(25,), reference_embeddings=xr,
                                          reference_labels=yr), "reference set has only 24 samples"),
        (lambda x, y, xr, yr: evaluate_embeddings(x, y, reference_embeddings=xr), "alone"),
    ],
)
def test_bad_reference_input_is_refused(call, match):
    x, y, xr, yr = _gallery_data()
    with pytest.raises(ValueError, match=match):
        call(x, y, xr, yr)


# ------------------------------------------- precision@k, mean reciprocal rank
def numpy_precision_and_mrr(x, y, metric, ks, cutoff, reference=None):
    """P@k (Manning et al. 2008, Ch. 8.4) and MRR@cutoff (Voorhees, TREC 1999) by definition."""
    gallery, gallery_labels = (x, y) if reference is None else reference
    ranked = numpy_ranked_labels(x, gallery, gallery_labels, metric, reference is None)
    precision, reciprocal = {k: [] for k in ks}, []
    for label, neighbours in zip(y, ranked):
        if label not in neighbours:
            continue  # no correct answer: skipped
        for k in ks:
            precision[k].append(sum(g == label for g in neighbours[:k]) / k)
        first = neighbours.index(label) + 1
        reciprocal.append(1.0 / first if first <= cutoff else 0.0)
    return {k: float(np.mean(v)) for k, v in precision.items()}, float(np.mean(reciprocal))


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("gallery", [False, True])
def test_precision_at_k_and_mrr_match_the_definitions(metric, gallery):
    x, y, xr, yr = _gallery_data(4)
    if gallery:
        reference = {"reference_embeddings": xr, "reference_labels": yr}
        want_p, want_mrr = numpy_precision_and_mrr(x, y, metric, (1, 4), 3, reference=(xr, yr))
    else:
        reference = {}
        want_p, want_mrr = numpy_precision_and_mrr(x, y, metric, (1, 4), 3)
    got = precision_at_k(x, y, ks=(1, 4), metric=metric, **reference)
    for k in (1, 4):
        assert got[k] == pytest.approx(want_p[k], abs=1e-12)
    assert got[1] == nearest_neighbor_accuracy(x, y, metric=metric, **reference)
    assert mean_reciprocal_rank(x, y, k=3, metric=metric, **reference) == pytest.approx(
        want_mrr, abs=1e-12)
    assert 0.0 < want_mrr < 1.0 and got[4] < 1.0


def test_precision_and_mrr_refuse_a_k_past_the_gallery():
    x, y, xr, yr = _gallery_data()
    with pytest.raises(ValueError, match="reference set has only 24 samples"):
        mean_reciprocal_rank(x, y, k=30, reference_embeddings=xr, reference_labels=yr)
    with pytest.raises(ValueError, match="only 30 samples"):
        precision_at_k(x, y, ks=(30,))
