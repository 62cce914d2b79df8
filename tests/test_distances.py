"""Distance objects (lossweave.distances) against NumPy references, and the losses that take them."""

import keras
import numpy as np
import pytest

import lossweave as lw
from conftest import gradient, one_backend, to_numpy
from lossweave.ops import distances as D
from lossweave.ops import pairs as P
from test_pairs import np_contrastive, np_distances

TOL = dict(rtol=1e-5, atol=1e-5)
RNG = np.random.default_rng(23)
X = RNG.normal(size=(6, 20)).astype("float32")  # 20 features: two slices of the Lp sum
Y = RNG.normal(size=(4, 20)).astype("float32")
LABELS = np.array([0, 0, 1, 1, 2, 0])


def _unit(v, p=2.0):
    v = np.asarray(v, "float64")
    return v / np.maximum((np.abs(v) ** p).sum(1, keepdims=True) ** (1 / p), 1e-12)


def np_lp(x, y, p=2.0, power=1.0, normalize=False):
    if normalize:
        x, y = _unit(x, p), _unit(y, p)
    return (np.abs(np.asarray(x, "float64")[:, None] - y[None]) ** p).sum(-1) ** (power / p)


def np_snr(x, y, normalize=False):
    """Yuan et al. 2019: var(y_j - x_i) / var(x_i), variances over the features."""
    if normalize:
        x, y = _unit(x), _unit(y)
    x, y = np.asarray(x, "float64"), np.asarray(y, "float64")
    return np.array([[np.var(b - a) / np.var(a) for b in y] for a in x])


CASES = {
    "euclidean": (lw.distances.EuclideanDistance(), lambda x, y: np_lp(x, y)),
    "euclidean-normalized": (lw.distances.EuclideanDistance(True), lambda x, y: np_lp(x, y, normalize=True)),
    "squared": (lw.distances.SquaredEuclideanDistance(), lambda x, y: np_lp(x, y, power=2.0)),
    "squared-normalized": (lw.distances.SquaredEuclideanDistance(True), lambda x, y: np_lp(x, y, 2.0, 2.0, True)),
    "l1": (lw.distances.LpDistance(p=1.0), lambda x, y: np_lp(x, y, 1.0)),
    "l3-power-normalized": (lw.distances.LpDistance(3.0, 1.5, True), lambda x, y: np_lp(x, y, 3.0, 1.5, True)),
    "cosine-distance": (lw.distances.CosineDistance(), lambda x, y: np_distances(x, y, "cosine")),
    "cosine-similarity": (lw.distances.CosineSimilarity(), lambda x, y: _unit(x) @ _unit(y).T),
    "dot": (lw.distances.DotProductSimilarity(), lambda x, y: np.asarray(x, "float64") @ np.asarray(y, "float64").T),
    "dot-normalized": (lw.distances.DotProductSimilarity(True), lambda x, y: _unit(x) @ _unit(y).T),
    "snr": (lw.distances.SNRDistance(), np_snr),
    "snr-normalized": (lw.distances.SNRDistance(True), lambda x, y: np_snr(x, y, True)),
}


@one_backend
@pytest.mark.parametrize("name", sorted(CASES))
def test_distances_match_numpy(name):
    distance, reference = CASES[name]
    np.testing.assert_allclose(to_numpy(distance.pairwise(X, Y)), reference(X, Y), **TOL)
    own = to_numpy(distance.pairwise(X))
    np.testing.assert_allclose(own, reference(X, X), **TOL)
    if not distance.is_inverted:
        assert np.all(np.diag(own) == 0.0)  # exactly
    np.testing.assert_allclose(to_numpy(distance.paired(X[:4], Y)), np.diag(reference(X[:4], Y)), **TOL)


@pytest.mark.parametrize("name", ["euclidean", "squared-normalized", "l1", "l3-power-normalized", "snr", "dot"])
def test_gradients_are_finite_at_distance_zero(name):
    distance, _ = CASES[name]
    x = X[:4, :5].copy()
    x[1] = x[0]
    for fn in (lambda v: keras.ops.sum(distance.pairwise(v)),
               lambda v: keras.ops.sum(distance.pairwise(v, v)),
               lambda v: keras.ops.sum(distance.paired(v, keras.ops.flip(v, axis=0)))):
        assert np.all(np.isfinite(gradient(fn, x)))


@one_backend
def test_names_map_to_objects_with_todays_values_bit_for_bit():
    for name, cls in (("euclidean", lw.distances.EuclideanDistance),
                      ("squared_euclidean", lw.distances.SquaredEuclideanDistance),
                      ("cosine", lw.distances.CosineDistance)):
        assert lw.distances.get(name) == cls()
        np.testing.assert_array_equal(to_numpy(cls().pairwise(X)), to_numpy(D.pairwise_distances(X, metric=name)))
        for loss in (lambda m: P.contrastive_loss(X, LABELS, metric=m),
                     lambda m: P.triplet_loss(X, LABELS, metric=m, mining="batch-all")):
            assert float(to_numpy(loss(name))) == float(to_numpy(loss(cls())))
    # The similarity losses' default is the cosine similarity object.
    for op in (lw.ops.multi_similarity_loss, lw.ops.supcon_loss, lw.ops.circle_loss, lw.ops.nt_xent_loss):
        assert float(to_numpy(op(X, LABELS))) == float(to_numpy(op(X, LABELS, metric=lw.distances.CosineSimilarity())))
    with pytest.raises(ValueError, match=r"`distance` must be one of \('euclidean'.*received 'l1'"):
        lw.terms.TripletLoss(distance="l1")
    with pytest.raises(ValueError, match=r"`p` must be a number > 0"):
        lw.distances.LpDistance(p=0.0)


@one_backend
def test_a_similarity_orders_pairs_and_its_margins_are_similarities():
    # Triplet gaps are the same under 1 - cos and cos (larger is closer): the same loss.
    for mining in ("semi-hard", "batch-hard", "batch-all"):
        a = P.triplet_loss(X, LABELS, 0.3, mining, lw.distances.CosineSimilarity())
        b = P.triplet_loss(X, LABELS, 0.3, mining, "cosine")
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), **TOL)
    # Contrastive with a similarity: positives pay below pos_margin, negatives above neg_margin.
    s = _unit(X) @ _unit(X).T
    total, count = 0.0, 0
    for i in range(6):
        for j in range(6):
            if i != j:
                same = LABELS[i] == LABELS[j]
                total += 0.5 * (max(0.9 - s[i, j], 0) if same else max(s[i, j] - 0.2, 0)) ** 2
                count += 1
    got = P.contrastive_loss(X, LABELS, 0.9, 0.2, lw.distances.CosineSimilarity())
    np.testing.assert_allclose(to_numpy(got), total / count, **TOL)
    # Any distance in a loss equals the loss's NumPy reference on that distance's values.
    snr = np_snr(X, X)
    np.testing.assert_allclose(to_numpy(P.contrastive_loss(X, LABELS, metric=lw.distances.SNRDistance())),
                               _contrastive_on(snr), **TOL)


def _contrastive_on(d, pos_margin=0.0, neg_margin=1.0):
    total, count = 0.0, 0
    for i in range(len(d)):
        for j in range(len(d)):
            if i != j:
                same = LABELS[i] == LABELS[j]
                total += 0.5 * (max(d[i, j] - pos_margin, 0) if same else max(neg_margin - d[i, j], 0)) ** 2
                count += 1
    return total / count


def test_terms_take_distance_objects_and_old_configs_load():
    x = X[:, :3]
    term = lw.terms.TripletLoss(margin=0.4, mining="batch-all", distance=lw.distances.LpDistance(p=1.0))
    d = np_lp(x, x, 1.0)
    total, count = 0.0, 0
    for a in range(6):
        for p in range(6):
            for n in range(6):
                if a != p and LABELS[a] == LABELS[p] and LABELS[n] != LABELS[a]:
                    z = d[a, p] - d[a, n] + 0.4
                    total += max(z, 0.0)
                    count += z > 0
    expected = total / count
    np.testing.assert_allclose(float(to_numpy(term(x, LABELS))), expected, **TOL)
    restored = lw.terms.TripletLoss.from_config(term.get_config())
    assert restored.distance == term.distance
    # A config written when `distance` was a string still loads.
    old = {**lw.terms.ContrastiveLoss().get_config(), "distance": "cosine"}
    old.pop("reducer"), old.pop("miner")
    loaded = lw.terms.ContrastiveLoss.from_config(old)
    assert loaded.distance == lw.distances.CosineDistance()
    np.testing.assert_allclose(float(to_numpy(loaded(x, LABELS))), np_contrastive(x, LABELS, metric="cosine"), **TOL)


def test_proxy_losses_take_a_distance():
    x, labels = X[:, :4], np.array([0, 1, 2, 0, 1, 2])
    init = keras.initializers.Constant(RNG.normal(size=(3, 4)))
    default = lw.terms.ProxyNCALoss(3, proxies_initializer=init)
    given = lw.terms.ProxyNCALoss(3, proxies_initializer=init,
                                  distance=lw.distances.SquaredEuclideanDistance(normalize_embeddings=True))
    np.testing.assert_allclose(to_numpy(default(x, labels)), to_numpy(given(x, labels)), **TOL)
    anchor = lw.terms.ProxyAnchorLoss(3, proxies_initializer=init)
    cosine = lw.terms.ProxyAnchorLoss(3, proxies_initializer=init, distance="cosine_similarity")
    np.testing.assert_allclose(to_numpy(anchor(x, labels)), to_numpy(cosine(x, labels)), **TOL)
