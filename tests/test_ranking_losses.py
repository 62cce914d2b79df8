"""Ranking and neighbourhood pair losses (``lossweave.ops.ranking``, ``lossweave.terms.ranking``).

NumPy references written from the papers, loop by loop (soft nearest
neighbour: Frosst et al. 2019, Eq. 1; histogram: Ustinova & Lempitsky 2016;
ranked list: Wang et al. 2019, no equation numbers verified; PNP: Li et al.
2022, Eq. 5, 7, 9, 12-13, the variants of pytorch-metric-learning) check the formulas in the JAX pass only; the
cross-backend listing carries the values to the other backends. The edge
cases of the pair tests (one-row classes, one-class batches, no valid tuple,
weight 0 as absence, finite gradients at distance 0) run on every backend.
"""

import numpy as np
import pytest

import lossweave as lw
from conftest import gradient, one_backend, to_numpy
from lossweave.ops import ranking

RNG = np.random.default_rng(11)
X = RNG.normal(size=(10, 4)).astype("float32")
X0 = X.copy()  # no coincident rows: a float32 distance near 0 is off by ~sqrt(1e-7) (the 2 - 2 cos form)
X[7] = X[3]  # two rows at distance 0 (different classes)
Y = np.array([0, 0, 1, 1, 2, 2, 2, 0, 1, 3])  # class 3 has one row
W = RNG.uniform(0.5, 2.0, 10).astype("float32")


def value(x):
    return float(to_numpy(x))


def unit(x):
    x = x.astype("float64")
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# ------------------------------------------------------------------ NumPy references from the papers
def numpy_snn(x, y, t=1.0, w=None):
    """Eq. 1: -log(sum_{same class} e^{-d/T} / sum_{others} e^{-d/T}), squared Euclidean; anchors with a positive."""
    x = x.astype("float64")
    w = np.ones(len(x)) if w is None else w
    total, count = 0.0, 0
    for i in range(len(x)):
        d = np.sum((x - x[i]) ** 2, axis=1)
        others = [j for j in range(len(x)) if j != i]
        same = [j for j in others if y[j] == y[i]]
        if not same:
            continue
        total += w[i] * -np.log(np.sum(np.exp(-d[same] / t)) / np.sum(np.exp(-d[others] / t)))
        count += 1
    return total / count


def numpy_histogram(x, y, n_bins=100):
    """Soft histograms of the cosine similarities on the nodes -1 + r 2/n_bins; L = sum_r h-_r phi+_r."""
    z = unit(x)
    s = z @ z.T
    delta = 2.0 / n_bins
    nodes = -1.0 + delta * np.arange(n_bins + 1)
    pos, neg = [], []
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            (pos if y[i] == y[j] else neg).append(s[i, j])

    def histogram(values):
        h = np.zeros(n_bins + 1)
        for v in values:
            for r, t in enumerate(nodes):
                if t - delta <= v <= t + delta:
                    h[r] += 1.0 - abs(v - t) / delta
        return h / len(values)

    return float(np.sum(histogram(neg) * np.cumsum(histogram(pos))))


def numpy_rll(x, y, m=0.4, tn=10.0, lam=0.5, alpha=None, tp=0.0, w=None):
    """RLL: mined sets P* (d > alpha - m), N* (d < alpha), exp-weighted hinges, (1 - lam) L_P + lam L_N."""
    alpha = 1 + m / 2 if alpha is None else alpha
    z = unit(x)
    w = np.ones(len(x)) if w is None else w
    total = 0.0
    for i in range(len(x)):
        d = np.linalg.norm(z - z[i], axis=1)
        p = [j for j in range(len(x)) if j != i and y[j] == y[i] and d[j] > alpha - m]
        n = [j for j in range(len(x)) if y[j] != y[i] and d[j] < alpha]
        lp = ln = 0.0
        if p:
            wp = np.exp(tp * (d[p] - (alpha - m)))
            lp = np.sum(wp * (d[p] - (alpha - m))) / np.sum(wp)
        if n:
            wn = np.exp(tn * (alpha - d[n]))
            ln = np.sum(wn * (alpha - d[n])) / np.sum(wn)
        total += w[i] * ((1 - lam) * lp + lam * ln)
    return total / len(x)


def numpy_pnp(x, y, variant="O", anneal=0.01, alpha=1.0, b=2.0, count_self=False):
    """R_i = sum_{negatives j} sigmoid((s_qj - s_qi) / anneal) per positive i; the variant; mean, then mean."""
    z = unit(x)
    s = z @ z.T
    per_anchor = []
    for q in range(len(x)):
        positives = [i for i in range(len(x)) if i != q and y[i] == y[q]]
        if not positives:
            continue
        if count_self:
            positives.append(q)
        negatives = [j for j in range(len(x)) if y[j] != y[q]]
        values = []
        for i in positives:
            r = np.sum(1.0 / (1.0 + np.exp(-(s[q, negatives] - s[q, i]) / anneal)))
            values.append({"O": r, "Ds": np.log1p(r), "Dq": 1.0 / (1.0 + r) ** alpha, "Iu": (1 + r) * np.log1p(r),
                           "Ib": (b * r - np.log1p(b * r)) / b ** 2}[variant])
        per_anchor.append(np.mean(values))
    loss = np.mean(per_anchor)
    return 1.0 - loss if variant == "Dq" else loss


def numpy_instance(x, y, scale=64.0):
    """PML's InstanceLoss: cross-entropy of scale * cos over the batch, target = the label's rank (np.unique)."""
    z = unit(x)
    logits = scale * z @ z.T
    _, target = np.unique(y, return_inverse=True)
    top = logits.max(axis=1, keepdims=True)
    lse = np.log(np.sum(np.exp(logits - top), axis=1)) + top[:, 0]
    return float(np.mean(lse - logits[np.arange(len(x)), target]))


# ------------------------------------------------------------------ formulas (one backend)
@one_backend
@pytest.mark.parametrize("t", [1.0, 0.3])
def test_soft_nearest_neighbor_equals_eq1(t):
    np.testing.assert_allclose(value(ranking.soft_nearest_neighbor_loss(X, Y, t)), numpy_snn(X, Y, t), rtol=1e-5)
    np.testing.assert_allclose(value(lw.terms.SoftNearestNeighborLoss(t)(X, Y, sample_weight=W)),
                               numpy_snn(X, Y, t, W), rtol=1e-5)


@one_backend
@pytest.mark.parametrize("n_bins", [100, 7])
def test_histogram_equals_the_papers_histograms(n_bins):
    np.testing.assert_allclose(value(lw.terms.HistogramLoss(n_bins)(X, Y)), numpy_histogram(X, Y, n_bins),
                               rtol=1e-5)


@one_backend
@pytest.mark.parametrize("kwargs", [{}, {"margin": 0.6, "negative_temperature": 5.0, "imbalance": 0.3,
                                         "boundary": 1.1, "positive_temperature": 2.0}])
def test_ranked_list_equals_its_reference(kwargs):
    names = {"margin": "m", "negative_temperature": "tn", "imbalance": "lam", "boundary": "alpha",
             "positive_temperature": "tp"}
    ref = numpy_rll(X0, Y, **{names[k]: v for k, v in kwargs.items()})
    np.testing.assert_allclose(value(lw.terms.RankedListLoss(**kwargs)(X0, Y)), ref, rtol=1e-5)
    np.testing.assert_allclose(value(lw.terms.RankedListLoss()(X0, Y, sample_weight=W)), numpy_rll(X0, Y, w=W),
                               rtol=1e-5)


@one_backend
@pytest.mark.parametrize("variant", ranking.PNP_VARIANTS)
@pytest.mark.parametrize("count_self", [False, True])
def test_pnp_variants_equal_their_reference(variant, count_self):
    term = lw.terms.PNPLoss(variant=variant, anneal=0.05, alpha=1.5, b=3.0, count_self=count_self)
    np.testing.assert_allclose(value(term(X, Y)), numpy_pnp(X, Y, variant, 0.05, 1.5, 3.0, count_self), rtol=1e-5)


@one_backend
def test_pnp_gradient_in_anchor_blocks_equals_numpy():
    """PNP's recomputing gradient (blocks of ranking.PNP_CHUNK anchors) against central differences of the reference."""
    rng = np.random.default_rng(3)
    n = ranking.PNP_CHUNK + 8  # two blocks, the second one short
    x, y = rng.normal(size=(n, 3)).astype("float32"), np.arange(n) % 5
    import jax  # one_backend: JAX; compiled, as a step runs it (op by op each new block shape compiles alone)

    ours = np.asarray(jax.jit(jax.grad(lambda e: ranking.pnp_loss(e, y, variant="Ds", anneal=0.1)))(x))
    rows = [0, 5, ranking.PNP_CHUNK - 1, ranking.PNP_CHUNK, n - 1]  # both blocks and their edges
    x64, step, numeric = x.astype("float64"), 1e-6, np.zeros((len(rows), x.shape[1]))
    for k, row in enumerate(rows):
        for column in range(x.shape[1]):
            up, down = x64.copy(), x64.copy()
            up[row, column] += step
            down[row, column] -= step
            numeric[k, column] = (numpy_pnp(up, y, "Ds", 0.1) - numpy_pnp(down, y, "Ds", 0.1)) / (2 * step)
    np.testing.assert_allclose(ours[rows], numeric, rtol=1e-3, atol=1e-5)


@one_backend
@pytest.mark.parametrize("scale", [64.0, 4.0])
def test_instance_equals_pmls_definition(scale):
    for labels in (np.arange(10), Y, np.array([9, 9, 2, 2, 5, 7, 7, 2, 9, 0])):
        np.testing.assert_allclose(value(lw.terms.InstanceLoss(scale)(X0, labels)), numpy_instance(X0, labels, scale),
                                   rtol=1e-5, atol=1e-5)


def test_instance_weight_zero_drops_the_column_and_the_rank():
    """A row of weight 0 is neither a logit column nor a rank (its gradient: tests/test_sample_weight.py)."""
    w = np.ones(10, "float32")
    w[0] = 0.0
    labels = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    expected = value(lw.terms.InstanceLoss(4.0)(X0[1:], labels[1:]))
    np.testing.assert_allclose(value(lw.terms.InstanceLoss(4.0)(X0, labels, sample_weight=w)), expected,
                               rtol=1e-5)


@one_backend
def test_arguments_reach_the_formula_and_are_checked():
    assert value(lw.terms.SoftNearestNeighborLoss(distance="cosine_similarity")(X, Y)) != value(
        lw.terms.SoftNearestNeighborLoss()(X, Y))
    with pytest.raises(ValueError, match="expected a similarity"):
        lw.terms.HistogramLoss(distance="euclidean")
    with pytest.raises(ValueError, match="expected a distance"):
        lw.terms.RankedListLoss(distance="cosine_similarity")
    with pytest.raises(ValueError, match="variant"):
        lw.terms.PNPLoss(variant="X")
    with pytest.raises(ValueError, match="reference set"):
        lw.terms.CrossBatchMemory(lw.terms.HistogramLoss(), memory_size=4)(X, Y)


# ------------------------------------------------------------------ edge cases (every backend)
TERMS = {
    "snn": lambda: lw.terms.SoftNearestNeighborLoss(),
    "histogram": lambda: lw.terms.HistogramLoss(n_bins=20),
    "rll": lambda: lw.terms.RankedListLoss(),
    "pnp": lambda: lw.terms.PNPLoss(variant="Ds", anneal=0.1),
}


@pytest.mark.parametrize("case", sorted(TERMS))
def test_no_valid_tuple_and_distance_zero(case):
    """No positive pair: 0 (RLL: its negative part); one class: finite; coincident rows: finite gradients.

    Weight 0 as absence and weights c as c times the loss are checked for every listed term by
    ``tests/test_sample_weight.py``.
    """
    term = TERMS[case]()
    x = X[2:6].copy()
    x[3] = x[1]  # two rows at distance 0
    alone = np.arange(4)
    loss = value(term(x, alone))
    if case == "rll":
        # atol: a float32 Euclidean distance at 0 is ~3e-4 (the 2 - 2 cos form), not 0.
        np.testing.assert_allclose(loss, numpy_rll(x, alone), rtol=1e-5, atol=5e-4)
    else:
        assert loss == 0.0
    for labels in (np.zeros(4, "int64"), np.array([0, 1, 0, 1])):
        loss = value(term(x, labels))
        assert np.isfinite(loss)
        g = gradient(lambda v: term.pair_loss(v, labels), x)
        assert np.all(np.isfinite(g)), (case, labels)
    assert value(term(x, np.zeros(4, "int64"))) == 0.0 or case in ("rll", "snn")  # no negative pair


def test_a_reducer_and_a_miner_are_taken():
    base = value(lw.terms.SoftNearestNeighborLoss()(X, Y))
    summed = value(lw.terms.SoftNearestNeighborLoss(reducer=lw.reducers.DivisorReducer(1.0))(X, Y))
    np.testing.assert_allclose(summed, base * 9, rtol=1e-5)  # 9 anchors have a positive
    mined = value(lw.terms.PNPLoss(miner=lw.miners.BatchHardMiner())(X, Y))
    assert np.isfinite(mined) and mined != value(lw.terms.PNPLoss()(X, Y))
