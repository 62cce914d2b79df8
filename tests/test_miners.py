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
    "distance-weighted": M.DistanceWeightedMiner(3, seed=1),
    "uniform-histogram": M.UniformHistogramMiner(4, 2, 2, seed=1),
    "angular": M.AngularMiner(30.0),
}


@pytest.mark.parametrize("name", sorted(MINERS))
def test_edge_cases(name):
    miner = MINERS[name]
    x = X.copy()
    x[1] = x[0]  # distance 0 between two rows
    x[2] = x[4]
    losses = [lambda v, y: P.triplet_loss(v, y, miner=miner), lambda v, y: P.contrastive_loss(v, y, miner=miner)]
    for loss in losses:
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


# ----------------------------------------------------- AngularMiner, DistanceWeightedMiner, UniformHistogramMiner
def np_angular(x, y, angle):
    """PML AngularMiner / Wang et al. 2017: (a, p, n) with atan(|a - p| / (2 |n - c|)) > angle, c = (a + p) / 2."""
    x = np.asarray(x, "float64")
    out = set()
    for a, p in _pairs(y)[0]:
        for n in range(len(y)):
            if y[n] != y[a]:
                ap, nc = np.linalg.norm(x[a] - x[p]), np.linalg.norm(x[n] - (x[a] + x[p]) / 2)
                with np.errstate(divide="ignore", invalid="ignore"):
                    if np.arctan(ap / (2 * nc)) > np.radians(angle):
                        out.add((a, p, n))
    return out


def _triplets_of_gap(x, y, miner, metric):
    """The triplets of a gap selection, read as a triplet loss reads them (one positive rank at a time)."""
    s = lw.ops.pair_structure.pair_structure(x, y, metric=metric)
    d = lw.ops.distances.ordered(metric, s.values)
    mined = miner.mine(d, s.positives, s.negatives, s.inverted)
    ranks = to_numpy(lw.ops.miners.positive_ranks(mined.positives))
    values, negatives = to_numpy(d), to_numpy(mined.negatives)
    out = set()
    for k in range(1, ranks.max() + 1):
        this = ranks == k
        query = np.where(this, values, -np.inf).max(axis=1, keepdims=True)
        keep = to_numpy(mined.gap(keras.ops.convert_to_tensor(values - query), keras.ops.convert_to_tensor(this)))
        for a in np.nonzero(this.any(axis=1))[0]:
            p = int(np.argmax(this[a]))
            out |= {(int(a), p, int(n)) for n in np.nonzero(keep[a] & negatives[a])[0]}
    return out


@one_backend
def test_angular_miner_matches_numpy_on_raw_and_unit_embeddings():
    unit = X / np.linalg.norm(X, axis=1, keepdims=True)
    for metric, points in ((lw.distances.EuclideanDistance(), X),  # pytorch-metric-learning's numbers (raw rows)
                           (lw.distances.EuclideanDistance(normalize_embeddings=True), unit),
                           (lw.distances.CosineSimilarity(), unit)):
        for angle in (0.0, 35.0, 50.0):
            expected = np_angular(points, LABELS, angle)
            assert _triplets_of_gap(X, LABELS, M.AngularMiner(angle), metric) == expected, (metric, angle)
    # A pair loss uses the triplets' pairs.
    triplets = np_angular(X, LABELS, 35.0)
    pairs = sorted({(a, p) for a, p, _ in triplets} | {(a, q) for a, _, q in triplets})
    got = P.contrastive_loss(X, LABELS, miner=M.AngularMiner(35.0))
    np.testing.assert_allclose(float(to_numpy(got)), np_contrastive_pairs(D, pairs, LABELS), **TOL)
    with pytest.raises(ValueError, match="batch against itself"):
        P.contrastive_loss(X, LABELS, miner=M.AngularMiner(), ref_embeddings=X[:6], ref_labels=LABELS[:6])
    with pytest.raises(ValueError, match="angle"):
        M.AngularMiner(90.0)


@one_backend
def test_angular_miner_in_a_triplet_loss():
    for angle in (20.0, 40.0):
        triplets = sorted(np_angular(X, LABELS, angle))
        got = P.triplet_loss(X, LABELS, 0.4, miner=M.AngularMiner(angle), reducer=lw.reducers.MeanReducer())
        np.testing.assert_allclose(float(to_numpy(got)), np_triplet_mean(D, triplets, 0.4), **TOL)


def np_distance_weights(d, negatives, dim, cutoff, nonzero_loss_cutoff):
    """Wu et al. 2017, Sec. 4: probabilities ~ q(max(d, cutoff))^-1 over the negatives nearer than the cutoff."""
    clipped = np.maximum(d, cutoff)
    eligible = negatives & (clipped < nonzero_loss_cutoff)
    with np.errstate(divide="ignore"):
        log_q = (dim - 2.0) * np.log(clipped) + (dim - 3.0) / 2.0 * np.log(1.0 - clipped ** 2 / 4.0)
    lowest = np.where(eligible, log_q, np.inf).min(axis=1, keepdims=True)
    lowest = np.where(np.isfinite(lowest), lowest, 0.0)  # a row without an eligible negative: all 0
    w = np.where(eligible, np.exp(-(np.where(eligible, log_q, lowest) - lowest)), 0.0)
    total = w.sum(axis=1, keepdims=True)
    return np.divide(w, total, out=np.zeros_like(w), where=total > 0)


def _unit_structure(dim=8, n=12, seed=4):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim)).astype("float32")
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y = np.arange(n) % 4
    d = np_distances(x, x, "euclidean")
    return x, y, d, (y[:, None] != y[None, :])


@one_backend
def test_distance_weights_match_the_paper_and_a_similarity_gives_the_same():
    x, y, d, negatives = _unit_structure()
    for cutoff, nonzero in ((0.5, 1.4), (0.9, 1.2), (0.0, 2.5)):
        expected = np_distance_weights(d, negatives, 8, cutoff, nonzero)
        got = lw.ops.miners.distance_weights(keras.ops.convert_to_tensor(d.astype("float32")), negatives, 8,
                                             cutoff, nonzero)
        np.testing.assert_allclose(to_numpy(got), expected, rtol=2e-4, atol=1e-6)
        cosine = -(x @ x.T)  # ordered values of a similarity: -cos
        got = lw.ops.miners.distance_weights(cosine, negatives, 8, cutoff, nonzero, inverted=True)
        np.testing.assert_allclose(to_numpy(got), expected, rtol=2e-3, atol=1e-5)


@one_backend
def test_distance_weighted_draws_follow_the_weights():
    # 3000 anchors with one positive (column 0) and the same five negatives: the drawn columns' frequencies.
    row = np.array([0.3, 0.55, 0.8, 1.0, 1.2, 1.5], "float32")
    d = np.tile(row, (3000, 1))
    positives = np.zeros(d.shape, bool)
    positives[:, 0] = True
    negatives = ~positives
    expected = np_distance_weights(d[:1].astype("float64"), negatives[:1], 16, 0.5, 1.4)[0]
    mined = lw.ops.miners.distance_weighted(d, positives, negatives, 16, seed=keras.random.SeedGenerator(7))
    column = to_numpy(mined.column)[:, 0]
    frequencies = np.bincount(column, minlength=6) / len(column)
    assert expected[5] == 0.0 and frequencies[5] == 0.0 and frequencies[0] == 0.0  # beyond the cutoff; a positive
    sigma = np.sqrt(expected * (1 - expected) / len(column))
    assert np.all(np.abs(frequencies - expected) <= 5 * sigma + 1e-9), (frequencies, expected)
    # Every positive pair of a real batch gets an eligible negative; the loss's triplets are those.
    x, y, d, negatives = _unit_structure()
    miner = M.DistanceWeightedMiner(8, seed=3)
    mined = miner.mine(keras.ops.convert_to_tensor(d.astype("float32")), (y[:, None] == y[None, :]) & ~np.eye(12, dtype=bool),
                       negatives)
    probabilities = np_distance_weights(d, negatives, 8, 0.5, 1.4)
    kept, column = to_numpy(mined.positives), to_numpy(mined.column)
    assert kept.sum() > 0
    assert np.all(probabilities[np.nonzero(kept)[0], column[kept]] > 0)
    triplets = [(a, p, column[a, p]) for a, p in zip(*np.nonzero(kept))]
    got = P.triplet_loss(x, y, 0.2, miner=_Replay(mined), metric=lw.distances.EuclideanDistance(True))
    np.testing.assert_allclose(float(to_numpy(got)), np_triplet_mean(d, triplets, 0.2), **TOL)


class _Replay(M.Miner):
    """A miner that returns a selection made beforehand (to read a random miner's triplets through a loss)."""

    def __init__(self, mined):
        self.mined = mined

    def mine(self, d, positives, negatives, inverted=False):
        return self.mined


def np_histogram_bins(values, num_bins):
    """PML UniformHistogramMiner's bins: torch.linspace(min, max, num_bins + 1), [s, e) and the last [s, e]."""
    edges = np.linspace(values.min(), values.max(), num_bins + 1)
    bins = np.searchsorted(edges[1:-1], values, side="right")
    return bins


@one_backend
def test_uniform_histogram_miner_keeps_per_bin_counts_and_draws_uniformly():
    x, y, d, negatives = _unit_structure(dim=3, n=16)
    positives = (y[:, None] == y[None, :]) & ~np.eye(16, dtype=bool)
    import jax  # the jax pass only: one compiled draw per seed

    draw = jax.jit(lambda seed: lw.ops.miners.uniform_histogram(d.astype("float32"), positives, negatives, 6, 3, 5,
                                                                seed)[:2])
    hits = {"pos": np.zeros(d.shape), "neg": np.zeros(d.shape)}
    draws = 300
    for i in range(draws):
        mined = draw(jax.numpy.array([11, i], "uint32"))
        for kind, mask, got, per_bin in (("pos", positives, mined[0], 3), ("neg", negatives, mined[1], 5)):
            got = np.asarray(got)
            assert not np.any(got & ~mask)
            bins = np_histogram_bins(d[mask], 6)
            counts = np.bincount(bins, minlength=6)
            kept = np.bincount(bins[got[mask]], minlength=6)
            np.testing.assert_array_equal(kept, np.minimum(counts, per_bin))
            hits[kind] += got
    # Uniform within a bin: every pair of a bin is drawn with probability min(count, per_bin) / count.
    for kind, mask, per_bin in (("pos", positives, 3), ("neg", negatives, 5)):
        bins = np_histogram_bins(d[mask], 6)
        counts = np.bincount(bins, minlength=6)
        p = np.minimum(counts, per_bin)[bins] / counts[bins]
        sigma = np.sqrt(p * (1 - p) / draws)
        assert np.all(np.abs(hits[kind][mask] / draws - p) <= 5 * sigma + 1e-9)


def _seeded_objective(miner):
    inputs = keras.Input((6,))
    model = keras.Model(inputs, {"embedding": keras.layers.UnitNormalization()(keras.layers.Dense(4)(inputs))})
    term = lw.terms.TripletLoss(margin=0.2, miner=miner, distance=lw.distances.EuclideanDistance(True))
    return lw.Objective(model, {"triplet": term}), term


@pytest.mark.parametrize("make", [lambda: M.DistanceWeightedMiner(4, seed=5),
                                  lambda: M.UniformHistogramMiner(3, 2, 2, seed=5)], ids=["distance-weighted",
                                                                                          "uniform-histogram"])
def test_seeded_miner_state_is_saved_and_a_reloaded_miner_draws_the_same_next_sample(make, tmp_path):
    objective, term = _seeded_objective(make())
    objective.build((None, 6))
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(8, 4)).astype("float32"), np.arange(8) % 3
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    s = lw.ops.pair_structure.pair_structure(x, y, metric="euclidean")

    def draw(miner):
        mined = miner.mine(s.values, s.positives, s.negatives)
        return [to_numpy(v) for v in mined if v is not None and not callable(v)]

    initial = to_numpy(term.miner.seed_generator.state).copy()
    draw(term.miner)
    assert not np.array_equal(to_numpy(term.miner.seed_generator.state), initial)  # a draw moves the state
    objective.save(tmp_path / "seeded.keras")
    restored = keras.saving.load_model(tmp_path / "seeded.keras").terms["triplet"].miner
    assert restored is not term.miner and restored.get_config() == term.miner.get_config()
    np.testing.assert_array_equal(to_numpy(restored.seed_generator.state), to_numpy(term.miner.seed_generator.state))
    after, again = draw(term.miner), draw(restored)
    for a, b in zip(after, again):
        np.testing.assert_array_equal(a, b)


def test_new_miners_train_inside_the_compiled_step_and_move_their_seed():
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(4), 4)
    x = (rng.normal(size=(16, 6)) + 2.0 * np.eye(6)[y]).astype("float32")
    inputs = keras.Input((6,))
    model = keras.Model(inputs, {"embedding": keras.layers.UnitNormalization()(keras.layers.Dense(4)(inputs))})
    weighted, histogram = M.DistanceWeightedMiner(4, seed=2), M.UniformHistogramMiner(4, 2, 3, seed=3)
    terms = {"weighted": lw.terms.TripletLoss(margin=0.2, distance=lw.distances.EuclideanDistance(True), miner=weighted),
             "histogram": lw.terms.MultiSimilarityLoss(mining=False, miner=histogram),
             "angular": lw.terms.ContrastiveLoss(miner=M.AngularMiner(30.0))}
    objective = lw.Objective(model, terms)
    objective.compile(optimizer=keras.optimizers.Adam(0.01))
    states = [to_numpy(m.seed_generator.state).copy() for m in (weighted, histogram)]
    history = objective.fit(x, {"label": y}, epochs=1, batch_size=8, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    for miner, before in zip((weighted, histogram), states):
        assert not np.array_equal(to_numpy(miner.seed_generator.state), before)  # one draw per step
