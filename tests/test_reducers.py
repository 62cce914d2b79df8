"""Reducers (lossweave.reducers) against NumPy references, with the one meaning of sample_weight."""

import numpy as np
import pytest

import lossweave as lw
from conftest import gradient, one_backend, to_numpy
from lossweave.ops import pairs as P
from test_pairs import np_distances

TOL = dict(rtol=1e-5, atol=1e-5)
R = lw.reducers
RNG = np.random.default_rng(5)
X = RNG.normal(size=(9, 3)).astype("float32")
LABELS = np.array([0, 1, 0, 2, 1, 0, 2, 2, 1])
W = RNG.uniform(0.5, 2.0, 9)


def np_reduce(reducer, tuples, w, labels):
    """``tuples``: (anchor, term) of every tuple; the reduction as its docstring defines it."""
    low = -np.inf if reducer.low is None else reducer.low
    high = np.inf if reducer.high is None else reducer.high
    kept = [(a, t) for a, t in tuples if low < t < high]
    if isinstance(reducer, R.PerAnchorReducer):
        anchors = sorted({a for a, _ in tuples})
        means = {a: np.mean([t for b, t in tuples if b == a]) for a in anchors}
        denominator = len(set(np.flatnonzero(w != 0))) if reducer.count_empty else len(anchors)
        return sum(w[a] * m for a, m in means.items()) / denominator if denominator else 0.0
    if isinstance(reducer, R.DivisorReducer):
        return sum(w[a] * t for a, t in kept) / reducer.divisor
    scale = np.ones(10) if not isinstance(reducer, R.ClassWeightedReducer) else np.asarray(reducer.weights)
    return sum(w[a] * scale[labels[a]] * t for a, t in kept) / len(kept) if kept else 0.0


def np_contrastive_tuples(x, y, w, neg_margin=1.0):
    d = np_distances(x, x, "euclidean")
    return [(i, 0.5 * (d[i, j] ** 2 if y[i] == y[j] else max(neg_margin - d[i, j], 0.0) ** 2))
            for i in range(len(x)) for j in range(len(x)) if i != j and w[i] != 0 and w[j] != 0]


def np_triplet_tuples(x, y, w, margin=0.5):
    d = np_distances(x, x, "euclidean")
    n = len(x)
    return [(a, max(d[a, p] - d[a, q] + margin, 0.0)) for a in range(n) for p in range(n) for q in range(n)
            if a != p and y[a] == y[p] and y[q] != y[a] and w[a] * w[p] * w[q] != 0]


REDUCERS = {
    "mean": R.MeanReducer(),
    "non-zero": R.AvgNonZeroReducer(),
    "threshold": R.ThresholdReducer(low=0.05, high=0.6),
    "threshold-high": R.ThresholdReducer(high=0.3),
    "per-anchor": R.PerAnchorReducer(),
    "per-anchor-empty": R.PerAnchorReducer(count_empty=True),
    "divisor": R.DivisorReducer(7.0),
    "class-weighted": R.ClassWeightedReducer([1.0, 3.0, 0.5]),
}


@one_backend
@pytest.mark.parametrize("name", sorted(REDUCERS))
def test_reducers_match_numpy_on_pairs_and_triplets(name):
    reducer = REDUCERS[name]
    labels = LABELS.copy()
    labels[8] = 3  # a class of one sample: an anchor without a positive
    for op, tuples in ((lambda w: P.contrastive_loss(X, labels, sample_weight=w, reducer=reducer),
                        np_contrastive_tuples),
                       (lambda w: P.triplet_loss(X, labels, 0.5, "batch-all", sample_weight=w, reducer=reducer),
                        np_triplet_tuples)):
        for w in (np.ones(9), W):
            expected = np_reduce(reducer, tuples(X, labels, w), w, np.minimum(labels, 2))
            np.testing.assert_allclose(float(to_numpy(op(w))), expected, **TOL, err_msg=name)


@one_backend
def test_the_defaults_are_the_reducers_that_give_todays_values():
    batch_all = P.triplet_loss(X, LABELS, 0.5, "batch-all")
    assert float(to_numpy(batch_all)) == float(to_numpy(
        P.triplet_loss(X, LABELS, 0.5, "batch-all", reducer=R.AvgNonZeroReducer())))
    mean = P.triplet_loss(X, LABELS, 0.5, "batch-all", average="all")
    assert float(to_numpy(mean)) == float(to_numpy(
        P.triplet_loss(X, LABELS, 0.5, "batch-all", reducer=R.MeanReducer())))
    for op in (P.contrastive_loss, lw.ops.multi_similarity_loss, lw.ops.supcon_loss, P.lifted_structure_loss):
        assert float(to_numpy(op(X, LABELS))) == pytest.approx(float(to_numpy(op(X, LABELS, reducer=R.MeanReducer()))),
                                                               rel=1e-6)
    with pytest.raises(ValueError, match="expected at least one bound"):
        R.ThresholdReducer()
    with pytest.raises(ValueError, match=r"`weights` must be a non-empty list"):
        R.ClassWeightedReducer([])
    assert R.get("non_zero") == R.AvgNonZeroReducer() and R.get(None) is None


@pytest.mark.parametrize("name", ["non-zero", "per-anchor", "class-weighted"])
def test_sample_weight_rules_and_empty_batches(name):
    reducer = REDUCERS[name]
    term = lw.terms.ContrastiveLoss(reducer=reducer)
    w = np.ones(9, "float32")
    w[[2, 4]] = 0.0
    keep = w > 0
    value = float(to_numpy(term(X, LABELS, sample_weight=w)))
    np.testing.assert_allclose(value, float(to_numpy(term(X[keep], LABELS[keep]))), **TOL)  # weight 0: gone
    np.testing.assert_allclose(float(to_numpy(term(X, LABELS, sample_weight=2.5 * w))), 2.5 * value, **TOL)
    # No tuple (one row; or every term filtered out): 0 with finite gradients.
    assert float(to_numpy(term(X[:1], LABELS[:1]))) == 0.0
    far = lw.terms.ContrastiveLoss(reducer=R.ThresholdReducer(low=1e6))
    assert float(to_numpy(far(X, LABELS))) == 0.0
    grad = gradient(lambda v: far.pair_loss(v, LABELS), X)
    assert np.all(np.isfinite(grad)) and np.all(grad == 0)
