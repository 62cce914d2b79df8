"""The migration table of ``docs/pair_losses.md``, checked: pytorch-metric-learning (PML 2.9.0, pinned) against us.

Each row of the table is a case here: PML's object on PyTorch tensors and the
lossweave object with the arguments the table names, on the same inputs (a
batch with a one-row class, ties and two rows at distance 0), equal within
1e-5. Backend-independent (PML computes with PyTorch whatever our backend), so
the comparison runs in one pass; ``tests/test_cross_backend.py`` carries our
side to the other backends.
"""

import numpy as np
import pytest

import lossweave as lw
from tests.conftest import one_backend

torch = pytest.importorskip("torch")
pml = pytest.importorskip("pytorch_metric_learning")
from pytorch_metric_learning import distances as D  # noqa: E402
from pytorch_metric_learning import losses as L  # noqa: E402
from pytorch_metric_learning import miners as M  # noqa: E402
from pytorch_metric_learning import reducers as R  # noqa: E402

pytestmark = one_backend

# Rows: 12 of 5 classes; class 4 has one row; rows 2 and 5 coincide (distance 0 across classes).
_RNG = np.random.default_rng(0)
X = _RNG.normal(size=(12, 5)).astype("float32")
X[5] = X[2]
LABELS = np.array([0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 3, 4])
PK_LABELS = np.repeat(np.arange(4), 3)  # every anchor has the same number of positives

NORMALIZED = {"normalize_embeddings": True}
avg_nonzero = lw.reducers.AvgNonZeroReducer


def euclidean():
    """PML's default ``LpDistance()``: Euclidean on L2-normalised rows."""
    return lw.distances.EuclideanDistance(**NORMALIZED)


def _pml_value(loss, miner=None, labels=LABELS):
    x, y = torch.tensor(X), torch.tensor(labels)
    return float(loss(x, y, miner(x, y) if miner is not None else None))


def _value(term, labels=LABELS):
    return float(term(X, labels))


DISTANCES = {
    "lp": (lambda: D.LpDistance(), euclidean),
    "lp_power2": (lambda: D.LpDistance(power=2), lambda: lw.distances.SquaredEuclideanDistance(**NORMALIZED)),
    "lp_p1_raw": (lambda: D.LpDistance(p=1, normalize_embeddings=False),
                  lambda: lw.distances.LpDistance(p=1, normalize_embeddings=False)),
    "cosine": (lambda: D.CosineSimilarity(), lambda: lw.distances.CosineSimilarity()),
    "dot": (lambda: D.DotProductSimilarity(normalize_embeddings=False), lambda: lw.distances.DotProductSimilarity()),
    "snr": (lambda: D.SNRDistance(), lambda: lw.distances.SNRDistance(**NORMALIZED)),
}


@pytest.mark.parametrize("case", sorted(DISTANCES))
def test_distance_matrix_equals_pml(case):
    theirs, ours = DISTANCES[case]
    expected = theirs()(torch.tensor(X)).numpy()
    got = np.asarray(ours().pairwise(X))
    np.testing.assert_allclose(got, expected, atol=2e-5, rtol=1e-5)
    assert ours().is_inverted == theirs().is_inverted


# (PML loss, PML miner or None, our term, labels): the losses' rows of the table.
LOSSES = {
    "contrastive": (lambda: L.ContrastiveLoss(), None,
                    lambda: lw.terms.ContrastiveLoss(hinge="linear", reduce_parts=True, reducer=avg_nonzero(),
                                                     distance=euclidean()), LABELS),
    "contrastive_margins": (lambda: L.ContrastiveLoss(pos_margin=0.3, neg_margin=0.9), None,
                            lambda: lw.terms.ContrastiveLoss(0.3, 0.9, hinge="linear", reduce_parts=True,
                                                             reducer=avg_nonzero(), distance=euclidean()), LABELS),
    "triplet_all": (lambda: L.TripletMarginLoss(margin=0.2), None,
                    lambda: lw.terms.TripletLoss(
                        margin=0.2, miner=lw.miners.TripletMarginMiner(margin=0.2, type_of_triplets="all"),
                        distance=euclidean(), reducer=avg_nonzero()), LABELS),
    "multi_similarity": (lambda: L.MultiSimilarityLoss(), None,
                         lambda: lw.terms.MultiSimilarityLoss(base=0.5, mining=False), LABELS),
    "multi_similarity_miner": (lambda: L.MultiSimilarityLoss(), lambda: M.MultiSimilarityMiner(0.1),
                               lambda: lw.terms.MultiSimilarityLoss(
                                   base=0.5, miner=lw.miners.MultiSimilarityMiner(0.1)), LABELS),
    "circle": (lambda: L.CircleLoss(), None,
               lambda: lw.terms.CircleLoss(relaxation=0.4, scale=80.0, reducer=avg_nonzero()), LABELS),
    "supcon": (lambda: L.SupConLoss(), None, lambda: lw.terms.SupConLoss(reducer=avg_nonzero()), LABELS),
    "ntxent_pk": (lambda: L.NTXentLoss(), None, lambda: lw.terms.NTXentLoss(temperature=0.07), PK_LABELS),
    "lifted": (lambda: L.LiftedStructureLoss(), None, lambda: lw.terms.LiftedStructureLoss(distance=euclidean()),
               LABELS),
    "npairs": (lambda: L.NPairsLoss(), None,
               lambda: lw.terms.NPairsLoss(l2_reg=0.0, distance="cosine_similarity"), LABELS),
}


def _triplet_with(miner, margin=0.2):
    return lw.terms.TripletLoss(margin=margin, miner=miner, distance=euclidean(), reducer=avg_nonzero())


# The miners' rows: PML's TripletMarginLoss (or ContrastiveLoss) given PML's miner, and ours given ours. The easy
# triplets are outside the miner's margin 0.2: a loss margin of 0.5 makes some of them cost.
for _kind in ("all", "hard", "semihard", "easy"):
    LOSSES[f"triplet_miner_{_kind}"] = (
        lambda: L.TripletMarginLoss(margin=0.5),
        lambda kind=_kind: M.TripletMarginMiner(margin=0.2, type_of_triplets=kind),
        lambda kind=_kind: _triplet_with(lw.miners.TripletMarginMiner(margin=0.2, type_of_triplets=kind), 0.5),
        LABELS,
    )
LOSSES["triplet_batch_hard"] = (lambda: L.TripletMarginLoss(margin=0.2), lambda: M.BatchHardMiner(),
                                lambda: _triplet_with(lw.miners.BatchHardMiner()), LABELS)
LOSSES["triplet_batch_easy_hard"] = (
    lambda: L.TripletMarginLoss(margin=0.2), lambda: M.BatchEasyHardMiner(),
    lambda: _triplet_with(lw.miners.BatchEasyHardMiner()), LABELS)
LOSSES["contrastive_pair_margin_miner"] = (
    lambda: L.ContrastiveLoss(), lambda: M.PairMarginMiner(pos_margin=0.3, neg_margin=1.0),
    lambda: lw.terms.ContrastiveLoss(hinge="linear", reduce_parts=True, reducer=avg_nonzero(), distance=euclidean(),
                                     miner=lw.miners.PairMarginMiner(0.3, 1.0)), LABELS)
LOSSES["contrastive_hdc_miner"] = (
    lambda: L.ContrastiveLoss(), lambda: M.HDCMiner(filter_percentage=0.5),
    lambda: lw.terms.ContrastiveLoss(hinge="linear", reduce_parts=True, reducer=avg_nonzero(), distance=euclidean(),
                                     miner=lw.miners.HDCMiner(0.5)), LABELS)

# The reducers' rows, on the triplet loss over every triplet (PML's default without a miner: batch-all; a
# TripletMarginMiner(type_of_triplets="all") keeps only the triplets inside the margin).
REDUCERS = {
    "mean": (lambda: R.MeanReducer(), lambda: lw.reducers.MeanReducer()),
    "avg_nonzero": (lambda: R.AvgNonZeroReducer(), avg_nonzero),
    "threshold": (lambda: R.ThresholdReducer(low=0.05, high=0.5), lambda: lw.reducers.ThresholdReducer(0.05, 0.5)),
    "divisor": (None, lambda: lw.reducers.DivisorReducer(7.0)),
    "class_weighted": (lambda: R.ClassWeightedReducer(torch.tensor([1.0, 2.0, 0.5, 3.0, 1.5])),
                       lambda: lw.reducers.ClassWeightedReducer([1.0, 2.0, 0.5, 3.0, 1.5])),
}
for _name, (_theirs, _ours) in REDUCERS.items():
    if _theirs is None:
        continue
    LOSSES[f"reducer_{_name}"] = (
        lambda theirs=_theirs: L.TripletMarginLoss(margin=0.2, reducer=theirs()), None,
        lambda ours=_ours: lw.terms.TripletLoss(margin=0.2, mining="batch-all", distance=euclidean(), reducer=ours()),
        LABELS,
    )


# PML's PerAnchorReducer takes no triplets: its row is on the contrastive loss's pairs.
LOSSES["reducer_per_anchor"] = (
    lambda: L.ContrastiveLoss(reducer=R.PerAnchorReducer()), None,
    lambda: lw.terms.ContrastiveLoss(hinge="linear", reduce_parts=True, distance=euclidean(),
                                     reducer=lw.reducers.PerAnchorReducer(count_empty=True)), LABELS)


@pytest.mark.parametrize("case", sorted(LOSSES))
def test_loss_equals_pml(case):
    theirs, miner, ours, labels = LOSSES[case]
    expected = _pml_value(theirs(), miner() if miner is not None else None, labels)
    assert expected > 0.0, "a case whose PML value is 0 proves nothing: change its inputs"
    np.testing.assert_allclose(_value(ours(), labels), expected, rtol=1e-5, atol=1e-6)


def test_divisor_reducer_equals_pml():
    """PML's DivisorReducer reads the divisor from the loss's output; ours takes it as an argument."""
    x, y = torch.tensor(X), torch.tensor(LABELS)
    total = _value(lw.terms.TripletLoss(margin=0.2, mining="batch-all", distance=euclidean(),
                                        reducer=lw.reducers.DivisorReducer(1.0)))
    per_triplet = L.TripletMarginLoss(margin=0.2, reducer=R.DoNothingReducer())(x, y)["loss"]["losses"]
    np.testing.assert_allclose(total, float(per_triplet.sum()), rtol=1e-5)
    ours = _value(lw.terms.TripletLoss(margin=0.2, mining="batch-all", distance=euclidean(),
                                       reducer=lw.reducers.DivisorReducer(7.0)))
    np.testing.assert_allclose(ours, float(per_triplet.sum()) / 7.0, rtol=1e-5)


def _with_proxies(term, proxies):
    term.build((None, X.shape[1]))
    term.proxies.assign(proxies)
    return term


def test_proxy_anchor_equals_pml():
    loss = L.ProxyAnchorLoss(5, X.shape[1])
    ours = _with_proxies(lw.terms.ProxyAnchorLoss(5), loss.proxies.detach().numpy())
    expected = float(loss(torch.tensor(X), torch.tensor(LABELS)))
    np.testing.assert_allclose(_value(ours), expected, rtol=1e-5)


def test_proxy_nca_equals_pml():
    """PML's ProxyNCALoss keeps the positive proxy in the softmax's denominator (ProxyNCA++'s form)."""
    loss = L.ProxyNCALoss(5, X.shape[1])
    ours = _with_proxies(lw.terms.ProxyNCALoss(5, include_positive=True), loss.proxies.detach().numpy())
    expected = float(loss(torch.tensor(X), torch.tensor(LABELS)))
    np.testing.assert_allclose(_value(ours), expected, rtol=1e-5)


# The losses added for issue 23: each row the table's arguments (docs/pair_losses.md "More tuple losses", "Ranking
# and neighbourhood losses", docs/self_supervised.md). Rows where PML normalises only some inputs run on unit rows.
UNIT = X / np.linalg.norm(X, axis=1, keepdims=True)
# PML 2.9's HistogramLoss indexes past its last bin at similarity exactly 1 (rows 2 and 5): its row moves row 5.
DISTINCT = X.copy()
DISTINCT[5] += 0.5
NEW_LOSSES = {
    "nca": (lambda: L.NCALoss(),
            lambda: lw.terms.NCALoss(distance=lw.distances.SquaredEuclideanDistance(**NORMALIZED)), X, LABELS),
    "margin": (lambda: L.MarginLoss(),
               lambda: lw.terms.MarginLoss(triplets=True, distance=euclidean(), learn_beta=False), X, LABELS),
    "tuplet_margin": (lambda: L.TupletMarginLoss(margin=float(np.degrees(0.1))),
                      lambda: lw.terms.TupletMarginLoss(angular_margin=0.1), X, LABELS),
    "angular": (lambda: L.AngularLoss(alpha=40), lambda: lw.terms.AngularLoss(angle=40.0), UNIT, LABELS),
    "generalized_lifted": (lambda: L.GeneralizedLiftedStructureLoss(),
                           lambda: lw.terms.GeneralizedLiftedStructureLoss(distance=euclidean()), X, LABELS),
    "intra_pair_variance": (lambda: L.IntraPairVarianceLoss(), lambda: lw.terms.IntraPairVarianceLoss(), X, LABELS),
    "snr_contrastive": (lambda: L.SignalToNoiseRatioContrastiveLoss(),
                        lambda: lw.terms.SNRContrastiveLoss(distance=lw.distances.SNRDistance(**NORMALIZED)),
                        X, LABELS),
    "fastap": (lambda: L.FastAPLoss(num_bins=10), lambda: lw.terms.FastAPLoss(num_bins=10), X, LABELS),
    "histogram": (lambda: L.HistogramLoss(n_bins=100), lambda: lw.terms.HistogramLoss(n_bins=100), DISTINCT,
                  PK_LABELS),
    "instance": (lambda: L.InstanceLoss(gamma=64), lambda: lw.terms.InstanceLoss(scale=64.0), X, LABELS),
    "pnp": (lambda: L.PNPLoss(), lambda: lw.terms.PNPLoss(count_self=True), X, LABELS),
}


@pytest.mark.parametrize("case", sorted(NEW_LOSSES))
def test_new_loss_equals_pml(case):
    theirs, ours, x, labels = NEW_LOSSES[case]
    expected = float(theirs()(torch.tensor(x), torch.tensor(labels)))
    assert expected > 0.0, "a case whose PML value is 0 proves nothing: change its inputs"
    np.testing.assert_allclose(float(ours()(x, labels)), expected, rtol=1e-5, atol=1e-6)


def test_ranked_list_equals_pml():
    """PML adds 1e-5 to each row's weight sums (a few 1e-5 relative) and marks its sets by a distance > 0, so it
    drops a negative at distance exactly 0 (rows 2 and 5 of ``X``; the paper's set keeps it): on distinct rows."""
    expected = float(L.RankedListLoss(margin=0.4, Tn=10.0)(torch.tensor(DISTINCT), torch.tensor(LABELS)))
    got = float(lw.terms.RankedListLoss(margin=0.4, negative_temperature=10.0)(DISTINCT, LABELS))
    assert expected > 0.0
    np.testing.assert_allclose(got, expected, rtol=1e-4)


def test_soft_triple_equals_pml():
    """PML's centers are the columns of ``fc`` (dim, classes x K), class-major as our table's rows."""
    loss = L.SoftTripleLoss(5, X.shape[1], centers_per_class=3)
    ours = _with_proxies(lw.terms.SoftTripleLoss(5, centers_per_class=3, tau=0.0), loss.fc.detach().numpy().T)
    expected = float(loss(torch.tensor(X), torch.tensor(LABELS)))
    np.testing.assert_allclose(_value(ours), expected, rtol=1e-5)


def test_self_supervised_losses_equal_pml():
    views = (X[:6], X[6:])
    ref, aug = torch.tensor(views[0]), torch.tensor(views[1])
    pml_ntxent = float(L.SelfSupervisedLoss(L.NTXentLoss(temperature=0.5))(ref, aug))
    ours_ntxent = float(lw.terms.SelfSupervisedLoss(lw.terms.NTXentLoss(temperature=0.5))(views, None))
    np.testing.assert_allclose(ours_ntxent, pml_ntxent, rtol=5e-5, atol=1e-7)
    pml_vicreg = float(L.VICRegLoss()(ref, ref_emb=aug))
    np.testing.assert_allclose(float(lw.terms.VICRegLoss()(views, None)), pml_vicreg, rtol=5e-5, atol=1e-7)
