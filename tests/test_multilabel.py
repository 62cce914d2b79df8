"""Multi-hot labels in the tuple losses and miners (lossweave.ops.pair_structure.label_relation), against NumPy.

The rule: a positive pair shares a label (default) or has a Jaccard index >= ``min_jaccard``; a negative pair
shares none; an all-zero row takes part in no pair; one-hot rows give exactly the pairs of their class ids.
"""

import keras
import numpy as np
import pytest

import lossweave as lw
from conftest import gradient, one_backend, to_numpy
from lossweave.ops import pair_similarity as S
from lossweave.ops import pairs as P
from lossweave.ops.pair_structure import label_relation, pair_structure
from test_miners import np_triplet_mean
from test_pair_similarity import _unit, np_multi_similarity, np_supcon
from test_pairs import np_distances

TOL = dict(rtol=1e-5, atol=1e-5)
RNG = np.random.default_rng(23)
X = RNG.normal(size=(9, 4)).astype("float32")
Y = np.array([[1, 0, 0, 1], [1, 0, 0, 0], [0, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 0], [1, 1, 0, 0],
              [0, 0, 0, 0], [0, 0, 0, 1], [1, 0, 0, 1]])  # row 6 has no label
EMPTY = 6


def np_relation(y, min_jaccard=None):
    """Positive / negative pairs of multi-hot rows, pair by pair; rows without a label in neither."""
    y = np.asarray(y, bool)
    valid = y.any(axis=1)
    n = len(y)
    pos, neg = np.zeros((n, n), bool), np.zeros((n, n), bool)
    for i in range(n):
        for j in range(n):
            if i == j or not (valid[i] and valid[j]):
                continue
            shared, union = (y[i] & y[j]).sum(), (y[i] | y[j]).sum()
            pos[i, j] = shared > 0 if min_jaccard is None else shared / union >= min_jaccard
            neg[i, j] = shared == 0
    return pos, neg, valid


def np_mask_anchors(x, pos, neg, valid):
    """``test_pair_similarity``'s anchors (weight, positive cosines, negative cosines) from pair masks."""
    u = _unit(x)
    s = np.clip(u @ u.T, -1.0, 1.0)
    return [(1.0, list(s[i, pos[i]]), list(s[i, neg[i]])) for i in range(len(x)) if valid[i]]


def np_contrastive_masks(d, pos, neg, neg_margin=1.0):
    terms = [0.5 * d[i, j] ** 2 for i, j in zip(*np.nonzero(pos))]
    terms += [0.5 * max(neg_margin - d[i, j], 0.0) ** 2 for i, j in zip(*np.nonzero(neg))]
    return float(np.mean(terms))


def np_triplets(d, pos, neg, margin):
    """PML TripletMarginMiner("all"): every (a, p, n) with d_an - d_ap <= margin."""
    return [(a, p, n) for a, p in zip(*np.nonzero(pos)) for n in np.nonzero(neg[a])[0]
            if d[a, n] - d[a, p] <= margin]


@one_backend
def test_label_relation_matches_numpy_for_both_rules():
    for min_jaccard in (None, 0.25, 0.5, 1.0):
        pos, neg, valid = np_relation(Y, min_jaccard)
        relation = label_relation(Y, min_jaccard=min_jaccard)
        np.testing.assert_array_equal(to_numpy(relation.positives), pos)
        np.testing.assert_array_equal(to_numpy(relation.negatives), neg)
        np.testing.assert_array_equal(to_numpy(relation.valid), valid)
    assert np.any(~pos & ~neg & valid[:, None] & valid[None, :] & ~np.eye(9, dtype=bool))  # some pairs in neither
    np.testing.assert_array_equal(to_numpy(relation.ids), [0, 0, 1, 1, 2, 0, -1, 3, 0])  # the first class
    # Against a reference set of multi-hot rows (a memory): rows of the batch against other rows.
    relation = label_relation(Y[:4], Y[3:], min_jaccard=0.5)
    y, r = Y[:4].astype(bool), Y[3:].astype(bool)
    shared = (y[:, None] & r[None]).sum(-1)
    union = (y[:, None] | r[None]).sum(-1)
    valid = r.any(axis=1)[None, :]
    np.testing.assert_array_equal(to_numpy(relation.positives), (shared / np.maximum(union, 1) >= 0.5) & valid)
    np.testing.assert_array_equal(to_numpy(relation.negatives), (shared == 0) & valid)
    # Bool rows are rows too; a row with an entry other than 0 / 1 (soft labels) is not valid.
    soft = Y.astype("float32")
    soft[2, 3] = 0.5
    relation = label_relation(soft)
    assert not bool(to_numpy(relation.valid)[2]) and not to_numpy(relation.positives)[2].any()
    np.testing.assert_array_equal(to_numpy(label_relation(Y.astype(bool)).positives), np_relation(Y)[0])


@one_backend
def test_multi_hot_losses_match_numpy():
    pos, neg, valid = np_relation(Y)
    d = np_distances(X, X, "euclidean")
    got = P.contrastive_loss(X, Y)
    np.testing.assert_allclose(float(to_numpy(got)), np_contrastive_masks(d, pos, neg), **TOL)
    miner = lw.miners.TripletMarginMiner(0.5, "all")
    got = P.triplet_loss(X, Y, 0.4, miner=miner, reducer=lw.reducers.MeanReducer())
    np.testing.assert_allclose(float(to_numpy(got)), np_triplet_mean(d, np_triplets(d, pos, neg, 0.5), 0.4), **TOL)
    anchors = np_mask_anchors(X, pos, neg, valid)
    got = S.multi_similarity_loss(X, Y)
    np.testing.assert_allclose(float(to_numpy(got)), np_multi_similarity(anchors), **TOL)
    got = S.supcon_loss(X, Y, temperature=0.1)
    np.testing.assert_allclose(float(to_numpy(got)), np_supcon(anchors, tau=0.1), **TOL)


@one_backend
def test_miners_mine_the_jaccard_pairs_of_the_builder():
    pos, neg, _ = np_relation(Y, 0.5)
    s = pair_structure(X, Y, metric="euclidean", min_jaccard=0.5)
    np.testing.assert_array_equal(to_numpy(s.positives), pos)
    mined = lw.miners.BatchHardMiner().mine(s.values, s.positives, s.negatives)
    d = np_distances(X, X, "euclidean")
    kept, column = to_numpy(mined.positives), to_numpy(mined.column)
    for a in range(9):
        if pos[a].any() and neg[a].any():  # batch-hard: the farthest positive, the nearest negative
            p = int(np.argmax(np.where(pos[a], d[a], -np.inf)))
            assert kept[a].tolist() == [j == p for j in range(9)]
            assert column[a, p] == int(np.argmin(np.where(neg[a], d[a], np.inf)))
        else:
            assert not kept[a].any()
    with pytest.raises(ValueError, match="min_jaccard"):
        pair_structure(X, Y, min_jaccard=0.0)
    with pytest.raises(ValueError, match="min_jaccard"):
        label_relation(Y, min_jaccard=True)
    with pytest.raises(ValueError, match="both class ids or both multi-hot"):
        pair_structure(X, Y, ref_embeddings=X, ref_labels=np.arange(9))
    with pytest.raises(ValueError, match="multi-hot rows of shape"):
        pair_structure(X, Y[:, :, None])


LOSSES = {
    "contrastive": lambda x, y: P.contrastive_loss(x, y, miner=lw.miners.PairMarginMiner(0.3, 1.2)),
    "triplet": lambda x, y: P.triplet_loss(x, y, 0.4, miner=lw.miners.TripletMarginMiner(0.5, "semihard")),
    "multi_similarity": lambda x, y: S.multi_similarity_loss(x, y),
    "supcon": lambda x, y: S.supcon_loss(x, y, miner=lw.miners.MultiSimilarityMiner(0.2)),
}


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_one_hot_rows_equal_class_ids_and_an_empty_row_takes_no_part(name):
    loss = LOSSES[name]
    ids = np.array([0, 1, 0, 2, 1, 0, 2, 2, 1])
    one_hot = np.eye(3, dtype="float32")[ids]
    assert float(to_numpy(loss(X, one_hot))) == float(to_numpy(loss(X, ids)))
    # A row without a label is left out of every pair: the loss of the other rows, a zero (finite) gradient.
    keep = np.arange(9) != EMPTY
    np.testing.assert_allclose(float(to_numpy(loss(X, Y))), float(to_numpy(loss(X[keep], Y[keep]))), **TOL)
    grad = gradient(lambda v: loss(v, Y), X)
    assert np.all(np.isfinite(grad)) and np.all(grad[EMPTY] == 0.0)
    # An empty row is what an invalid class id is.
    invalid = ids.copy()
    invalid[EMPTY] = -1
    one_hot[EMPTY] = 0.0
    assert float(to_numpy(loss(X, one_hot))) == float(to_numpy(loss(X, invalid)))
    assert float(to_numpy(loss(X[:1], Y[:1]))) == 0.0  # no pair: 0
    assert np.isfinite(float(to_numpy(loss(X, keras.ops.zeros((9, 4))))))  # no valid row at all


def test_terms_take_multi_hot_rows_in_fit_and_refuse_soft_entries():
    """The term-level check (``terms/check.py``) accepts 0/1 rows, refuses other entries, and ``fit`` trains on them."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(8, 4)).astype("float32")
    ids = np.array([0, 0, 1, 1, 2, 2, 0, 1])
    one_hot = np.eye(3, dtype="float32")[ids]
    for term in (lw.terms.ContrastiveLoss(), lw.terms.TripletLoss(miner=lw.miners.TripletMarginMiner(0.5)),
                 lw.terms.SupConLoss()):
        assert float(to_numpy(term(x, one_hot))) == float(to_numpy(term(x, ids)))
    soft = one_hot.copy()
    soft[1, 1] = 0.5
    with pytest.raises(lw.errors.InvalidInputError, match=r"first: 0\.5"):
        lw.terms.ContrastiveLoss()(x, soft)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, {"embedding": keras.layers.Dense(3, name="embedding")(inputs)})
    objective = lw.Objective(model, {"pairs": lw.terms.ContrastiveLoss()})
    objective.compile(optimizer="sgd")
    multi_hot = one_hot.copy()
    multi_hot[0, 2] = 1.0  # two classes
    multi_hot[3] = 0.0  # no class: in no pair
    history = objective.fit(x, {"label": multi_hot}, epochs=2, batch_size=8, verbose=0).history
    assert np.all(np.isfinite(history["loss"])) and history["loss"][1] < history["loss"][0]


def np_batch_hard(d, pos, neg, margin):
    """Hermans et al. 2017, Eq. 5: per anchor with both, [max_p d_ap - min_n d_an + margin]_+; their mean."""
    terms = [max(d[a][pos[a]].max() - d[a][neg[a]].min() + margin, 0.0) for a in range(len(d))
             if pos[a].any() and neg[a].any()]
    return float(np.mean(terms)) if terms else 0.0


@one_backend
def test_min_jaccard_of_a_loss_and_of_a_miner_is_the_builder_rule():
    """``min_jaccard=`` of every tuple loss (``TupleArguments``) and miner (``Miner``) against the NumPy Jaccard rule."""
    d = np_distances(X, X, "euclidean")
    pos, neg, _ = np_relation(Y, 0.5)
    assert not np.array_equal(pos, np_relation(Y)[0])  # the rule changes the pairs of this batch
    # A pair loss.
    got = lw.terms.ContrastiveLoss(min_jaccard=0.5)(X, Y)
    np.testing.assert_allclose(float(to_numpy(got)), np_contrastive_masks(d, pos, neg), **TOL)
    # A triplet loss with a miner of every violating triplet.
    term = lw.terms.TripletLoss(0.4, miner=lw.miners.TripletMarginMiner(0.5, "all"),
                                reducer=lw.reducers.MeanReducer(), min_jaccard=0.5)
    np.testing.assert_allclose(float(to_numpy(term(X, Y))), np_triplet_mean(d, np_triplets(d, pos, neg, 0.5), 0.4),
                               **TOL)
    # A miner's threshold: the loss's tuples are those its rule allows (the larger of the two thresholds).
    for loss_rule in (None, 0.25):
        term = lw.terms.TripletLoss(0.3, miner=lw.miners.BatchHardMiner(min_jaccard=0.5), min_jaccard=loss_rule)
        np.testing.assert_allclose(float(to_numpy(term(X, Y))), np_batch_hard(d, pos, neg, 0.3), **TOL)
    strict = np_relation(Y, 1.0)[0]
    term = lw.terms.TripletLoss(0.3, miner=lw.miners.BatchHardMiner(min_jaccard=0.5), min_jaccard=1.0)
    np.testing.assert_allclose(float(to_numpy(term(X, Y))), np_batch_hard(d, strict, neg, 0.3), **TOL)
    # Configs: present when given, round-tripped; absent by default (saved configs unchanged).
    term = lw.terms.TripletLoss(miner=lw.miners.BatchHardMiner(min_jaccard=0.5), min_jaccard=0.25)
    config = term.get_config()
    assert config["min_jaccard"] == 0.25 and config["miner"]["config"]["min_jaccard"] == 0.5
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(term))
    assert clone.min_jaccard == 0.25 and clone.miner == lw.miners.BatchHardMiner(min_jaccard=0.5)
    assert "min_jaccard" not in lw.terms.TripletLoss().get_config()
    assert "min_jaccard" not in lw.miners.BatchHardMiner().get_config()
    # Class ids: one label a row gives the same pairs for every threshold (ignored, not refused).
    ids = np.array([0, 1, 0, 2, 1, 0, 2, 2, 1])
    assert float(to_numpy(lw.terms.ContrastiveLoss(min_jaccard=0.5)(X, ids))) == float(
        to_numpy(lw.terms.ContrastiveLoss()(X, ids)))
    # Checked once, at construction.
    for make in (lambda: lw.terms.ContrastiveLoss(min_jaccard=1.5), lambda: lw.terms.NCALoss(min_jaccard=0),
                 lambda: lw.miners.BatchHardMiner(min_jaccard=True),
                 lambda: lw.miners.DistanceWeightedMiner(4, min_jaccard=-0.5)):
        with pytest.raises(ValueError, match=r"`min_jaccard` must be a number > 0 and <= 1; received"):
            make()
    with pytest.raises(TypeError, match=r"unknown keyword argument\(s\) \['min_jaccard'\]"):  # given pairs
        lw.terms.SiameseContrastiveLoss(min_jaccard=0.5)


@one_backend
def test_losses_whose_pairs_are_fixed_by_position_refuse_min_jaccard():
    """N-pairs, instance and two-view NT-Xent pick a row's positive by position: a Jaccard threshold has no meaning."""
    for cls in (lw.terms.NPairsLoss, lw.terms.InstanceLoss, lw.terms.TwoViewNTXentLoss):
        with pytest.raises(ValueError, match=rf"{cls.__name__}: received min_jaccard=0.5; this loss takes no "
                                             r"min_jaccard: its positive of a row is fixed by position"):
            cls(min_jaccard=0.5)
        term = cls()
        assert "min_jaccard" not in term.get_config() and "min_jaccard" not in term.tuple_kwargs()


def test_min_jaccard_holds_in_the_compiled_step():
    """The rule is applied when the step is traced (the ops' ``min_jaccard=``): evaluate equals the eager loss."""
    inputs = keras.Input((4,))
    model = keras.Model(inputs, {"embedding": keras.layers.Identity()(inputs)})
    objective = lw.Objective(model, {"pairs": lw.terms.ContrastiveLoss(min_jaccard=0.5)})
    objective.compile(optimizer="sgd")
    got = objective.evaluate(X, {"label": Y.astype("float32")}, batch_size=9, verbose=0, return_dict=True)["loss"]
    pos, neg, _ = np_relation(Y, 0.5)
    np.testing.assert_allclose(got, np_contrastive_masks(np_distances(X, X, "euclidean"), pos, neg), **TOL)
