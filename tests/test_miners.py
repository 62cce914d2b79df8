"""Miners (lossweave.miners) against NumPy references from pytorch-metric-learning's definitions."""

import keras
import numpy as np
import pytest

import lossweave as lw
from conftest import gradient, one_backend, to_numpy
from lossweave.ops import pairs as P
from test_pairs import np_distances

TOL = dict(rtol=1e-5, atol=1e-5)
M = lw.miners
RNG = np.random.default_rng(9)
X = RNG.normal(size=(10, 3)).astype("float32")
LABELS = np.array([0, 1, 0, 2, 1, 0, 2, 2, 1, 3])  # class 3: one sample


def _pairs(y):
    n = len(y)
    pos = [(a, p) for a in range(n) for p in range(n) if a != p and y[a] == y[p]]
    neg = [(a, q) for a in range(n) for q in range(n) if y[a] != y[q]]
    return pos, neg


def np_triplet_margin(d, y, margin, kind):
    """PML TripletMarginMiner: triplets by g = d_an - d_ap."""
    pos, neg = _pairs(y)
    out = []
    for a, p in pos:
        for b, q in neg:
            if a == b:
                g = d[a, q] - d[a, p]
                keep = {"easy": g > margin, "all": g <= margin, "hard": g <= margin and g <= 0,
                        "semihard": margin >= g > 0}[kind]
                if keep:
                    out.append((a, p, q))
    return out


def np_batch_easy_hard(d, y, pos_strategy, neg_strategy):
    out = []
    for a in range(len(y)):
        pos = [p for p in range(len(y)) if p != a and y[p] == y[a]]
        neg = [q for q in range(len(y)) if y[q] != y[a]]
        if not pos or not neg:
            continue
        pick_pos = lambda c: (max if pos_strategy == "hard" else min)(c, key=lambda j: d[a, j])  # noqa: E731
        pick_neg = lambda c: (max if neg_strategy == "easy" else min)(c, key=lambda j: d[a, j])  # noqa: E731
        if pos_strategy == "semihard":
            q = pick_neg(neg)
            pos = [p for p in pos if d[a, p] < d[a, q]]
            p = max(pos, key=lambda j: d[a, j]) if pos else None
        else:
            p = pick_pos(pos)
            if neg_strategy == "semihard":
                neg = [q for q in neg if d[a, q] > d[a, p]]
            q = pick_neg(neg) if neg else None
        if p is not None and q is not None:
            out.append((a, p, q))
    return out


def np_triplet_mean(d, triplets, margin):
    terms = [max(d[a, p] - d[a, q] + margin, 0.0) for a, p, q in triplets]
    return float(np.mean(terms)) if terms else 0.0


def np_contrastive_pairs(d, pairs, y, neg_margin=1.0):
    terms = [0.5 * (d[a, j] ** 2 if y[a] == y[j] else max(neg_margin - d[a, j], 0.0) ** 2) for a, j in pairs]
    return float(np.mean(terms)) if terms else 0.0


D = np_distances(X, X, "euclidean")


@one_backend
@pytest.mark.parametrize("kind", ["all", "hard", "semihard", "easy"])
def test_triplet_margin_miner_in_a_triplet_and_a_pair_loss(kind):
    miner = M.TripletMarginMiner(margin=0.6, type_of_triplets=kind)
    triplets = np_triplet_margin(D, LABELS, 0.6, kind)
    got = P.triplet_loss(X, LABELS, 0.4, miner=miner, reducer=lw.reducers.MeanReducer())
    np.testing.assert_allclose(float(to_numpy(got)), np_triplet_mean(D, triplets, 0.4), **TOL)
    # A pair loss uses the triplets' pairs: (a, p) with a triplet, (a, n) in one.
    pairs = sorted({(a, p) for a, p, _ in triplets} | {(a, q) for a, _, q in triplets})
    got = P.contrastive_loss(X, LABELS, miner=miner)
    np.testing.assert_allclose(float(to_numpy(got)), np_contrastive_pairs(D, pairs, LABELS), **TOL)


@one_backend
@pytest.mark.parametrize("strategies", [("easy", "semihard"), ("hard", "hard"), ("semihard", "hard"),
                                        ("hard", "easy"), ("easy", "semihard")])
def test_batch_easy_hard_miner(strategies):
    triplets = np_batch_easy_hard(D, LABELS, *strategies)
    got = P.triplet_loss(X, LABELS, 0.5, miner=M.BatchEasyHardMiner(*strategies))
    np.testing.assert_allclose(float(to_numpy(got)), np_triplet_mean(D, triplets, 0.5), **TOL)


@one_backend
def test_pair_miners_match_numpy_and_the_old_mining_arguments_are_miners():
    pos, neg = _pairs(LABELS)
    kept = [(a, p) for a, p in pos if D[a, p] > 0.9] + [(a, q) for a, q in neg if D[a, q] < 1.5]
    got = P.contrastive_loss(X, LABELS, miner=M.PairMarginMiner(0.9, 1.5))
    np.testing.assert_allclose(float(to_numpy(got)), np_contrastive_pairs(D, kept, LABELS), **TOL)
    # With a similarity the margins are similarities.
    s = (X / np.linalg.norm(X, axis=1, keepdims=True)) @ (X / np.linalg.norm(X, axis=1, keepdims=True)).T
    kept = [(a, p) for a, p in pos if s[a, p] < 0.5] + [(a, q) for a, q in neg if s[a, q] > 0.0]
    mined = P.contrastive_loss(X, LABELS, 1.0, 0.0, lw.distances.CosineSimilarity(), miner=M.PairMarginMiner(0.5, 0.0))
    all_pairs = P.contrastive_loss(X, LABELS, 1.0, 0.0, lw.distances.CosineSimilarity())
    terms = [0.5 * ((1 - s[a, j]) if LABELS[a] == LABELS[j] else max(s[a, j], 0)) ** 2 for a, j in kept]
    np.testing.assert_allclose(float(to_numpy(mined)), np.mean(terms), **TOL)
    assert float(to_numpy(mined)) != float(to_numpy(all_pairs))
    # HDC: the hardest ceil(f * count) positive and negative pairs (pairs tied with the last one kept too:
    # d(a, b) = d(b, a), so ties are the rule).
    top_pos = sorted(D[t] for t in pos)[::-1][int(np.ceil(0.4 * len(pos))) - 1]
    top_neg = sorted(D[t] for t in neg)[int(np.ceil(0.4 * len(neg))) - 1]
    hard_pos = [t for t in pos if D[t] >= top_pos]
    hard_neg = [t for t in neg if D[t] <= top_neg]
    got = P.contrastive_loss(X, LABELS, miner=M.HDCMiner(0.4))
    np.testing.assert_allclose(float(to_numpy(got)), np_contrastive_pairs(D, hard_pos + hard_neg, LABELS), **TOL)
    # mining= strings are miners, with the same numbers.
    w = RNG.uniform(0.5, 2.0, 10)
    for mining, miner in (("semi-hard", M.SemiHardNegativeMiner()), ("batch-hard", M.BatchHardMiner())):
        a = P.triplet_loss(X, LABELS, mining=mining, sample_weight=w)
        b = P.triplet_loss(X, LABELS, mining="batch-all", miner=miner, sample_weight=w)
        assert float(to_numpy(a)) == float(to_numpy(b))
    a = lw.ops.multi_similarity_loss(X, LABELS, epsilon=0.3, sample_weight=w)
    b = lw.ops.multi_similarity_loss(X, LABELS, mining=False, miner=M.MultiSimilarityMiner(0.3), sample_weight=w)
    assert float(to_numpy(a)) == float(to_numpy(b))
    with pytest.raises(ValueError, match="at most one semi-hard"):
        M.BatchEasyHardMiner("semihard", "semihard")
    with pytest.raises(ValueError, match="soft=True is the soft margin"):
        lw.terms.TripletLoss(soft=True, miner=M.HDCMiner())


MINERS = {
    "triplet-margin": M.TripletMarginMiner(0.5, "semihard"),
    "batch-hard": M.BatchHardMiner(),
    "easy-hard": M.BatchEasyHardMiner(),
    "multi-similarity": M.MultiSimilarityMiner(),
    "pair-margin": M.PairMarginMiner(),
    "hdc": M.HDCMiner(),
}


@pytest.mark.parametrize("name", sorted(MINERS))
def test_edge_cases(name):
    miner = MINERS[name]
    x = X.copy()
    x[1] = x[0]  # distance 0 between two rows
    x[2] = x[4]
    for loss in (lambda v, y: P.triplet_loss(v, y, miner=miner), lambda v, y: P.contrastive_loss(v, y, miner=miner)):
        grad = gradient(lambda v: loss(v, LABELS), x)
        assert np.all(np.isfinite(grad))
        one_class = np.zeros(10, int)
        value = float(to_numpy(loss(x, one_class)))
        assert np.isfinite(value)
        assert np.all(np.isfinite(gradient(lambda v: loss(v, one_class), x)))
        assert float(to_numpy(loss(x[:1], LABELS[:1]))) == 0.0  # no tuple: 0
        ties = np.repeat(np.arange(5, dtype="float32"), 2)[:, None]  # integer distances: ties everywhere
        assert np.isfinite(float(to_numpy(loss(ties, LABELS))))


def test_miners_train_inside_the_compiled_step():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 8)
    x = (rng.normal(size=(32, 6)) + 2.0 * np.eye(6)[y]).astype("float32")
    inputs = keras.Input((6,))
    model = keras.Model(inputs, {"embedding": keras.layers.Dense(4)(inputs)})
    terms = {"triplet": lw.terms.TripletLoss(margin=0.3, miner=M.TripletMarginMiner(0.3)),
             "pairs": lw.terms.ContrastiveLoss(miner=M.HDCMiner(0.5), reducer=lw.reducers.AvgNonZeroReducer())}
    objective = lw.Objective(model, terms)
    objective.compile(optimizer=keras.optimizers.Adam(0.01))
    history = objective.fit(x, {"label": y}, epochs=3, batch_size=16, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
