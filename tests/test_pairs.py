"""Distances and pair losses against NumPy references written from the papers (loops, float64)."""

import keras
import numpy as np
import pytest

import lossweave as lw
from conftest import gradient, one_backend, to_numpy
from lossweave.ops import distances as D
from lossweave.ops import pairs as P

RNG = np.random.default_rng(21)
TOL = dict(rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------ NumPy references
def np_distances(x, y, metric):
    x, y = np.asarray(x, "float64"), np.asarray(y, "float64")
    if metric == "cosine":
        nx = np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        ny = np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)
        return 1.0 - (x / nx) @ (y / ny).T
    squared = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    return squared if metric == "squared_euclidean" else np.sqrt(squared)


def np_structure(x, y, w=None, ref_x=None, ref_y=None, ref_mask=None, exclude_self=True):
    """Per anchor i: (its positive partners, its negative partners); rows of weight 0 take no part."""
    w = np.ones(len(x)) if w is None else np.asarray(w, "float64")
    if ref_x is None:
        ref_y, usable, self_pair = y, w != 0, True
    else:
        usable = np.ones(len(ref_y), bool) if ref_mask is None else np.asarray(ref_mask, bool)
        self_pair = exclude_self
    structure = {}
    for i in range(len(x)):
        if w[i] == 0:
            continue
        pos = [j for j in range(len(ref_y)) if usable[j] and ref_y[j] == y[i] and not (self_pair and j == i)]
        neg = [j for j in range(len(ref_y)) if usable[j] and ref_y[j] != y[i]]
        structure[i] = (pos, neg)
    return structure, w


def np_contrastive(x, y, pos_margin=0.0, neg_margin=1.0, metric="euclidean", w=None, **ref):
    """Hadsell et al. 2006, Eq. 4 (with 1/2), mean over the ordered pairs."""
    structure, w = np_structure(x, y, w, **ref)
    d = np_distances(x, x if ref.get("ref_x") is None else ref["ref_x"], metric)
    total, count = 0.0, 0
    for i, (pos, neg) in structure.items():
        for j in pos:
            total += w[i] * 0.5 * max(d[i, j] - pos_margin, 0.0) ** 2
        for j in neg:
            total += w[i] * 0.5 * max(neg_margin - d[i, j], 0.0) ** 2
        count += len(pos) + len(neg)
    return total / count if count else 0.0


def np_triplet(x, y, margin=1.0, mining="semi-hard", metric="euclidean", soft=False, average="positive", w=None,
               **ref):
    """Semi-hard as TF Addons' TripletSemiHardLoss; batch-hard / batch-all as Hermans et al. 2017, Eq. 4-6."""
    structure, w = np_structure(x, y, w, **ref)
    d = np_distances(x, x if ref.get("ref_x") is None else ref["ref_x"], metric)
    total, count, count_positive = 0.0, 0, 0
    for a, (pos, neg) in structure.items():
        if not pos or not neg:
            continue
        if mining == "batch-hard":
            gap = max(d[a, p] for p in pos) - min(d[a, n] for n in neg)
            total += w[a] * (np.log1p(np.exp(gap)) if soft else max(gap + margin, 0.0))
            count += 1
        elif mining == "semi-hard":
            for p in pos:
                farther = [d[a, n] for n in neg if d[a, n] > d[a, p]]
                d_an = min(farther) if farther else max(d[a, n] for n in neg)
                total += w[a] * max(d[a, p] - d_an + margin, 0.0)
                count += 1
        else:
            for p in pos:
                for n in neg:
                    z = d[a, p] - d[a, n] + margin
                    total += w[a] * max(z, 0.0)
                    count += 1
                    count_positive += z > 0
    if mining == "batch-all" and average == "positive":
        count = count_positive
    return total / count if count else 0.0


def np_lifted(x, y, margin=1.0, w=None):
    """Oh Song et al. 2016, Eq. 4 over unordered positive pairs; a pair weighs the mean of its rows' weights."""
    structure, w = np_structure(x, y, w)
    d = np_distances(x, x, "euclidean")
    total, pairs = 0.0, 0
    for i, (pos, neg_i) in structure.items():
        for j in pos:
            if j < i or not neg_i:
                continue
            neg_j = structure[j][1]
            inner = sum(np.exp(margin - d[i, k]) for k in neg_i) + sum(np.exp(margin - d[j, k]) for k in neg_j)
            total += 0.5 * (w[i] + w[j]) * max(np.log(inner) + d[i, j], 0.0) ** 2
            pairs += 1
    return total / (2 * pairs) if pairs else 0.0


def np_npairs(x, y, l2_reg=0.002, w=None):
    """Sohn 2016, Eq. 3 on the first two rows of each class, plus TF's 0.25 * l2_reg * mean squared norms."""
    x = np.asarray(x, "float64")
    w = np.ones(len(x)) if w is None else np.asarray(w, "float64")
    rows = {}
    for i, label in enumerate(y):
        if w[i] != 0:
            rows.setdefault(label, []).append(i)
    pairs = [(r[0], r[1]) for r in rows.values() if len(r) >= 2]
    if len(pairs) < 2:
        return 0.0
    positives = np.array([x[p] for _, p in pairs])
    total = 0.0
    for k, (a, p) in enumerate(pairs):
        logits = positives @ x[a]
        total += w[a] * (np.log(np.exp(logits).sum()) - logits[k])
        total += 0.25 * l2_reg * w[a] * (x[a] @ x[a] + x[p] @ x[p])
    return total / len(pairs)


# ------------------------------------------------------------------ helpers
def _data(n=10, dim=3, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, dim)).astype("float32"), rng.integers(0, classes, n)


def _value(v):
    return float(to_numpy(v))


# ---------------------------------------------------------------- distances
@pytest.mark.parametrize("metric", D.METRICS)
def test_pairwise_distances_match_numpy(metric):
    x, _ = _data(6, 5)
    y, _ = _data(4, 5, seed=1)
    np.testing.assert_allclose(to_numpy(D.pairwise_distances(x, y, metric)), np_distances(x, y, metric), **TOL)
    own = to_numpy(D.pairwise_distances(x, metric=metric))
    np.testing.assert_allclose(own, np_distances(x, x, metric), **TOL)
    assert np.all(np.diag(own) == 0.0)  # exactly
    np.testing.assert_allclose(to_numpy(D.paired_distances(x[:4], y, metric)),
                               np.diag(np_distances(x[:4], y, metric)), **TOL)


def test_pairwise_similarity_is_cosine_and_safe_at_zero_rows():
    x, _ = _data(5, 3)
    x[2] = 0.0
    s = to_numpy(D.pairwise_similarity(x))
    np.testing.assert_allclose(s, 1.0 - np_distances(x, x, "cosine"), **TOL)
    assert np.all(s[2] == 0.0)
    grad = gradient(lambda v: keras.ops.sum(D.pairwise_similarity(v)), x)
    assert np.all(np.isfinite(grad))


@pytest.mark.parametrize("metric", D.METRICS)
def test_distance_gradients_are_finite_at_distance_zero(metric):
    x, _ = _data(4, 3)
    x[1] = x[0]  # two identical embeddings
    for fn in (lambda v: keras.ops.sum(D.pairwise_distances(v, metric=metric)),
               lambda v: keras.ops.sum(D.pairwise_distances(v, v, metric=metric)),
               lambda v: keras.ops.sum(D.paired_distances(v, keras.ops.flip(v, axis=0), metric=metric))):
        assert np.all(np.isfinite(gradient(fn, x)))
    # Away from 0 the Euclidean gradient is the usual one: (x_i - x_j) / d_ij.
    if metric == "euclidean":
        grad = gradient(lambda v: D.pairwise_distances(v)[2, 3], x)
        np.testing.assert_allclose(grad[2], (x[2] - x[3]) / np.linalg.norm(x[2] - x[3]), **TOL)


def test_gram_matrix_has_the_symmetric_gradient():
    x, _ = _data(5, 3)
    w = RNG.normal(size=(5, 5)).astype("float32")
    np.testing.assert_allclose(to_numpy(D.gram(x)), x.astype("float64") @ x.T, **TOL)
    grad = gradient(lambda v: keras.ops.sum(keras.ops.convert_to_tensor(w) * D.gram(v)), x)
    np.testing.assert_allclose(grad, (w + w.T) @ x, **TOL)  # d/dx <w, x x^T>


@one_backend
def test_unknown_metric_is_a_clear_error():
    with pytest.raises(ValueError, match=r"received metric='manhattan'; expected one of \('euclidean'"):
        D.pairwise_distances(np.ones((2, 2), "float32"), metric="manhattan")


def test_label_masks_and_pair_labels():
    labels = np.array([2, 0, 2, 2, 1.5, -1])
    pos, neg = (to_numpy(m) for m in D.label_masks(labels.astype("float32")))
    for i in range(6):
        for j in range(6):
            valid = labels[i] >= 0 and labels[j] >= 0 and labels[i] % 1 == 0 and labels[j] % 1 == 0
            assert pos[i, j] == (valid and i != j and labels[i] == labels[j])
            assert neg[i, j] == (valid and labels[i] != labels[j])
    pos, neg = (to_numpy(m) for m in D.label_masks(np.array([0, 1]), np.array([1, 0, 0])))
    assert pos.tolist() == [[False, True, True], [True, False, False]]
    assert neg.tolist() == [[True, False, False], [False, True, True]]


# ----------------------------------------------------------- pair losses vs NumPy
@pytest.mark.parametrize("metric", D.METRICS)
def test_contrastive_matches_eq4(metric):
    x, y = _data()
    w = RNG.uniform(0.5, 2.0, len(x))
    for kwargs in ({}, {"pos_margin": 0.2, "neg_margin": 2.0}):
        got = P.contrastive_loss(x, y, metric=metric, sample_weight=w, **kwargs)
        np.testing.assert_allclose(_value(got), np_contrastive(x, y, metric=metric, w=w, **kwargs), **TOL)


TRIPLET_CASES = [
    ("semi-hard", "euclidean", False, "positive"),
    ("semi-hard", "squared_euclidean", False, "positive"),
    ("batch-hard", "euclidean", False, "positive"),
    ("batch-hard", "cosine", True, "positive"),
    ("batch-all", "euclidean", False, "positive"),
    ("batch-all", "squared_euclidean", False, "all"),
]


@pytest.mark.parametrize("mining, metric, soft, average", TRIPLET_CASES)
def test_triplet_matches_the_references(mining, metric, soft, average):
    for seed in range(3):
        x, y = _data(seed=seed)
        w = np.random.default_rng(seed).uniform(0.5, 2.0, len(x))
        kwargs = dict(margin=0.5, mining=mining, metric=metric, soft=soft, average=average)
        got = P.triplet_loss(x, y, sample_weight=w, **kwargs)
        np.testing.assert_allclose(_value(got), np_triplet(x, y, w=w, **kwargs), **TOL)


def test_lifted_structure_matches_eq4():
    for seed in range(3):
        x, y = _data(seed=seed)
        w = np.random.default_rng(seed).uniform(0.5, 2.0, len(x))
        np.testing.assert_allclose(_value(P.lifted_structure_loss(x, y)), np_lifted(x, y), **TOL)
        np.testing.assert_allclose(_value(P.lifted_structure_loss(x, y, 0.5, w)), np_lifted(x, y, 0.5, w), **TOL)


def test_lifted_structure_is_stable_at_large_distances():
    x, y = _data()
    x = x * 300.0  # exp(margin - D) underflows without the log-sum-exp
    value = _value(P.lifted_structure_loss(x, y))
    assert np.isfinite(value)
    np.testing.assert_allclose(value, np_lifted(x.astype("float64"), y), rtol=1e-5)


def test_npairs_matches_eq3_with_the_regulariser():
    x, y = _data(classes=4)
    w = RNG.uniform(0.5, 2.0, len(x))
    for l2_reg in (0.0, 0.002, 0.5):
        np.testing.assert_allclose(_value(P.npairs_loss(x, y, l2_reg, w)), np_npairs(x, y, l2_reg, w), **TOL)
    anchor, positive, _ = P.npairs_pairs(np.array([5, 5, 1, 5, 1, 7]))
    assert np.flatnonzero(to_numpy(anchor)).tolist() == [0, 2]
    assert np.flatnonzero(to_numpy(positive)).tolist() == [1, 4]


# ---------------------------------------------------------------- hard cases
def test_ties_in_distance():
    # Integer points on a line: many d(a, n) equal d(a, p) exactly (and are not semi-hard).
    x = np.array([[0.0], [1.0], [2.0], [3.0], [4.0], [2.0], [1.0], [3.0]], "float32")
    y = np.array([0, 1, 0, 1, 0, 1, 1, 0])
    d = to_numpy(D.pairwise_distances(x))
    assert np.all(d == np.abs(x - x.T))  # exact, so ties are ties
    for mining, average in (("semi-hard", "positive"), ("batch-hard", "positive"), ("batch-all", "positive"),
                            ("batch-all", "all")):
        for margin in (0.0, 1.0, 2.0):
            got = _value(P.triplet_loss(x, y, margin, mining, average=average))
            np.testing.assert_allclose(got, np_triplet(x, y, margin, mining, average=average), **TOL)
    np.testing.assert_allclose(_value(P.contrastive_loss(x, y, neg_margin=2.0)),
                               np_contrastive(x, y, neg_margin=2.0), **TOL)


def test_an_anchor_without_a_semi_hard_negative_takes_the_farthest_negative():
    # Pair (0, 1) at distance 3: both negatives (at 1 and 2) are nearer, so the farthest (2) is used,
    # not the hardest (1). Pairs (2, 3) and (3, 2) have a negative at their own distance (a tie): the
    # next one out is the semi-hard negative.
    x = np.array([[0.0], [3.0], [1.0], [2.0]], "float32")
    y = np.array([0, 0, 1, 1])
    margin = 1.0
    per_pair = [max(3 - 2 + margin, 0), max(3 - 2 + margin, 0), max(1 - 2 + margin, 0), max(1 - 2 + margin, 0)]
    got = _value(P.triplet_loss(x, y, margin, "semi-hard"))
    assert got == pytest.approx(np.mean(per_pair), abs=1e-6)
    assert got == pytest.approx(np_triplet(x, y, margin, "semi-hard"), abs=1e-6)


ALL_LOSSES = {
    "contrastive": lambda x, y, w=None: P.contrastive_loss(x, y, sample_weight=w),
    "semi-hard": lambda x, y, w=None: P.triplet_loss(x, y, mining="semi-hard", sample_weight=w),
    "batch-hard": lambda x, y, w=None: P.triplet_loss(x, y, mining="batch-hard", sample_weight=w),
    "batch-hard-soft": lambda x, y, w=None: P.triplet_loss(x, y, mining="batch-hard", soft=True, sample_weight=w),
    "batch-all": lambda x, y, w=None: P.triplet_loss(x, y, mining="batch-all", sample_weight=w),
    "lifted": lambda x, y, w=None: P.lifted_structure_loss(x, y, sample_weight=w),
    "npairs": lambda x, y, w=None: P.npairs_loss(x, y, sample_weight=w),
}
REFERENCES = {
    "contrastive": lambda x, y, w=None: np_contrastive(x, y, w=w),
    "semi-hard": lambda x, y, w=None: np_triplet(x, y, mining="semi-hard", w=w),
    "batch-hard": lambda x, y, w=None: np_triplet(x, y, mining="batch-hard", w=w),
    "batch-hard-soft": lambda x, y, w=None: np_triplet(x, y, mining="batch-hard", soft=True, w=w),
    "batch-all": lambda x, y, w=None: np_triplet(x, y, mining="batch-all", w=w),
    "lifted": lambda x, y, w=None: np_lifted(x, y, w=w),
    "npairs": lambda x, y, w=None: np_npairs(x, y, w=w),
}


@pytest.mark.parametrize("name", sorted(ALL_LOSSES))
def test_a_class_with_one_sample_and_a_batch_of_one_class(name):
    x, _ = _data()
    one_sample = np.array([0, 0, 1, 1, 2, 2, 3, 1, 0, 2])  # class 3 has one sample: an anchor without positive
    np.testing.assert_allclose(_value(ALL_LOSSES[name](x, one_sample)), REFERENCES[name](x, one_sample), **TOL)
    one_class = np.full(10, 4)
    value = _value(ALL_LOSSES[name](x, one_class))
    grad = gradient(lambda v: ALL_LOSSES[name](v, one_class), x)
    assert np.all(np.isfinite(grad))
    if name == "contrastive":  # pairs are independent: the mean over the positive pairs
        np.testing.assert_allclose(value, np_contrastive(x, one_class), **TOL)
    else:  # no negative: no triplet, no N-pair batch
        assert value == 0.0
    # One row: no pair at all, 0 for every loss.
    assert _value(ALL_LOSSES[name](x[:1], one_class[:1])) == 0.0


@pytest.mark.parametrize("name", sorted(ALL_LOSSES))
def test_zero_distances_and_a_non_finite_row(name):
    """Identical rows (distance 0, of one class and of two) and a NaN row: finite gradients, the NaN row left out."""
    x, _ = _data()
    x[1] = x[0]  # the same class
    x[3] = x[2]  # different classes
    y = np.array([0, 0, 1, 2, 1, 2, 0, 1, 2, 0])
    bad = x.copy()
    bad[5, 1] = np.nan
    keep = np.arange(10) != 5
    grad = gradient(lambda v: ALL_LOSSES[name](v, y), bad)
    assert np.all(np.isfinite(grad)), grad
    assert np.any(grad != 0) and np.all(grad[5] == 0)
    np.testing.assert_allclose(_value(ALL_LOSSES[name](bad, y)), REFERENCES[name](x[keep], y[keep]), **TOL)


@pytest.mark.parametrize("name", sorted(ALL_LOSSES))
def test_a_weight_of_zero_leaves_the_row_out_of_every_pair(name):
    x, y = _data()
    w = np.ones(len(x))
    w[[1, 4]] = 0.0
    keep = w > 0
    full = _value(ALL_LOSSES[name](x, y, w))
    np.testing.assert_allclose(full, _value(ALL_LOSSES[name](x[keep], y[keep])), **TOL)
    np.testing.assert_allclose(full, REFERENCES[name](x, y, w), **TOL)
    # Scaling every weight by c scales the loss by c (means count pairs, not weights).
    np.testing.assert_allclose(_value(ALL_LOSSES[name](x, y, 3.0 * w)), 3.0 * full, **TOL)


# ----------------------------------------------------------------- reference set
REF_CASES = [
    ("contrastive", {}),
    ("semi-hard", {"mining": "semi-hard"}),
    ("batch-hard", {"mining": "batch-hard"}),
    ("batch-all", {"mining": "batch-all"}),
    ("batch-all-mean", {"mining": "batch-all", "average": "all"}),
]


@pytest.mark.parametrize("case, kwargs", REF_CASES, ids=[c for c, _ in REF_CASES])
def test_pairs_against_a_reference_set(case, kwargs):
    x, y = _data(5, 3, classes=2, seed=3)
    memory, memory_y = _data(7, 3, classes=3, seed=4)
    mask = np.array([True, True, False, True, True, True, False])
    w = RNG.uniform(0.5, 2.0, len(x))
    op = P.contrastive_loss if case == "contrastive" else P.triplet_loss
    ref = np_contrastive if case == "contrastive" else np_triplet
    # An independent reference set: every (anchor, reference row) pair counts.
    got = op(x, y, sample_weight=w, ref_embeddings=memory, ref_labels=memory_y, ref_mask=mask, exclude_self=False,
             **kwargs)
    expected = ref(x, y, w=w, ref_x=memory, ref_y=memory_y, ref_mask=mask, exclude_self=False, **kwargs)
    np.testing.assert_allclose(_value(got), expected, **TOL)
    # The batch followed by a memory: the pair (i, i) is left out.
    both_x, both_y = np.concatenate([x, memory]), np.concatenate([y, memory_y])
    both_mask = np.concatenate([np.ones(len(x), bool), mask])
    got = op(x, y, sample_weight=w, ref_embeddings=both_x, ref_labels=both_y, ref_mask=both_mask, **kwargs)
    expected = ref(x, y, w=w, ref_x=both_x, ref_y=both_y, ref_mask=both_mask, **kwargs)
    np.testing.assert_allclose(_value(got), expected, **TOL)
    # With the batch alone as reference it is the in-batch loss.
    alone = op(x, y, ref_embeddings=x, ref_labels=y, ref_mask=np.ones(len(x), bool), **kwargs)
    np.testing.assert_allclose(_value(alone), _value(op(x, y, **kwargs)), **TOL)


@one_backend
def test_reference_arguments_come_together():
    x, y = _data(4, 2)
    with pytest.raises(ValueError, match="without ref_embeddings"):
        P.triplet_loss(x, y, ref_labels=y)
    with pytest.raises(ValueError, match="without ref_labels"):
        P.contrastive_loss(x, y, ref_embeddings=x)


# ------------------------------------------------------------------ terms
def test_terms_are_the_ops_gated_on_the_check():
    x, y = _data()
    cases = [
        (lw.terms.ContrastiveLoss(pos_margin=0.1, neg_margin=1.5, distance="cosine"),
         np_contrastive(x, y, 0.1, 1.5, "cosine")),
        (lw.terms.TripletLoss(margin=0.3, mining="batch-all", average="all"),
         np_triplet(x, y, 0.3, "batch-all", average="all")),
        (lw.terms.TripletLoss(), np_triplet(x, y)),
        (lw.terms.LiftedStructureLoss(margin=0.5), np_lifted(x, y, 0.5)),
        (lw.terms.NPairsLoss(l2_reg=0.01), np_npairs(x, y, 0.01)),
    ]
    for term, expected in cases:
        np.testing.assert_allclose(_value(term(x, y.astype("float32"))), expected, **TOL)
        np.testing.assert_allclose(_value(term(x, y[:, None])), expected, **TOL)  # (batch, 1) labels
        with pytest.raises(lw.InvalidInputError, match=r"Expected non-negative integer labels"):
            term(x, np.where(np.arange(10) == 3, -1, y))
        with pytest.raises(ValueError, match=r"received labels of rank 3"):
            term(x, np.eye(10, dtype="float32")[:, :4, None])


def test_missing_labels_are_left_out_of_every_pair():
    x, y = _data()
    labels = y.astype("float32")
    labels[[2, 5]] = -1
    keep = labels >= 0
    for term in (lw.terms.TripletLoss(mining="batch-hard", missing=-1), lw.terms.ContrastiveLoss(missing=-1)):
        plain = type(term).from_config({**term.get_config(), "missing": None})
        np.testing.assert_allclose(_value(term(x, labels)), _value(plain(x[keep], y[keep])), **TOL)


def test_siamese_contrastive_pairs():
    left, _ = _data(6, 3)
    right, _ = _data(6, 3, seed=1)
    right[0] = left[0]  # distance 0: finite gradient
    same = np.array([1, 0, 1, 1, 0, 0])
    w = RNG.uniform(0.5, 2.0, 6)
    term = lw.terms.SiameseContrastiveLoss(pos_margin=0.1, neg_margin=2.0, on=("left", "right"), target="same")
    d = np.sqrt(((left.astype("float64") - right) ** 2).sum(1))
    per = same * 0.5 * np.maximum(d - 0.1, 0) ** 2 + (1 - same) * 0.5 * np.maximum(2.0 - d, 0) ** 2
    np.testing.assert_allclose(_value(term((left, right), same, sample_weight=w)), np.mean(w * per), **TOL)
    grad = gradient(lambda v: P.contrastive_pair_loss(v, right, same), left)
    assert np.all(np.isfinite(grad))
    with pytest.raises(lw.InvalidInputError, match=r"Expected same\(1\)/different\(0\) pair targets"):
        term((left, right), np.array([1, 0, 2, 1, 0, 0]))


def test_siamese_contrastive_trains_in_an_objective():
    tower = keras.Sequential([keras.layers.Dense(3)])
    a, b = keras.Input((4,)), keras.Input((4,))
    model = keras.Model([a, b], {"left": tower(a), "right": tower(b)})
    objective = lw.Objective(model, {"pairs": lw.terms.SiameseContrastiveLoss(on=("left", "right"), target="same")})
    objective.compile(optimizer=keras.optimizers.Adam(0.05))
    rng = np.random.default_rng(0)
    xa, xb = rng.normal(size=(32, 4)).astype("float32"), rng.normal(size=(32, 4)).astype("float32")
    same = (rng.uniform(size=32) < 0.5).astype("float32")
    xb[same == 1] = xa[same == 1] + 0.1 * xb[same == 1]
    history = objective.fit([xa, xb], {"same": same}, epochs=5, batch_size=16, verbose=0)
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]


@one_backend
def test_constructor_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"`mining` must be one of .*received 'hard'"):
        lw.terms.TripletLoss(mining="hard")
    with pytest.raises(ValueError, match=r"soft=True is the soft margin of batch-hard"):
        lw.terms.TripletLoss(mining="batch-all", soft=True)
    with pytest.raises(ValueError, match=r"`average` must be one of"):
        lw.terms.TripletLoss(average="mean")
    with pytest.raises(ValueError, match=r"`distance` must be one of"):
        lw.terms.ContrastiveLoss(distance="l1")
    with pytest.raises(ValueError, match=r"`neg_margin` must be a number >= 0; received -1.0"):
        lw.terms.ContrastiveLoss(neg_margin=-1.0)
    with pytest.raises(ValueError, match=r"reads two outputs, on=\(first, second\)"):
        lw.terms.SiameseContrastiveLoss(on=("a", "b", "c"))
    with pytest.raises(ValueError, match=r"or use SiameseContrastiveLoss for two outputs"):
        lw.terms.ContrastiveLoss(on=("a", "b"))
    with pytest.raises(ValueError, match=r"`l2_reg` must be a finite number"):
        lw.terms.NPairsLoss(l2_reg=float("nan"))


def test_a_pair_term_trains_beside_center_loss_and_a_margin_term():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 16)
    x = (rng.normal(size=(64, 6)) + 2.0 * np.eye(6)[y]).astype("float32")
    inputs = keras.Input((6,))
    embedding = keras.layers.Dense(4)(keras.layers.Dense(16, activation="relu")(inputs))
    model = keras.Model(inputs, {"embedding": embedding})
    terms = {
        "triplet": lw.terms.TripletLoss(margin=0.5, mining="batch-hard"),
        "center": lw.terms.CenterLoss(num_classes=4),
        "arcface": lw.terms.ArcFace(num_classes=4, scale=8.0),
    }
    objective = lw.Objective(model, terms, weighting=lw.weighting.Fixed({"center": 0.1}))
    objective.compile(optimizer=keras.optimizers.Adam(0.01))
    order = rng.permutation(64)
    history = objective.fit(x[order], {"label": y[order]}, epochs=6, batch_size=16, verbose=0, shuffle=False)
    for name in terms:
        curve = history.history[f"loss/{name}"]
        assert np.all(np.isfinite(curve)), name
    assert history.history["loss/triplet"][-1] < history.history["loss/triplet"][0]
    assert np.any(to_numpy(objective.terms["center"].centers) != 0)
