"""Multi-similarity, circle, SupCon and NT-Xent against NumPy references written from the papers."""

import functools
import types

import keras
import numpy as np
import pytest

import lossweave as lw
from conftest import BACKEND, gradient, one_backend, to_numpy
from lossweave.ops import pair_similarity as ps
from lossweave.ops.distances import COSINE_SIMILARITY
from lossweave.ops.pair_structure import pair_structure

TOL = {"rtol": 1e-5, "atol": 1e-5}
N, DIM = 8, 4  # one batch shape for most tests: JAX compiles each shape once


def _compiled(op):
    """The op under ``jax.jit`` on JAX (one XLA compile per shape, not one per primitive); as is elsewhere."""
    if BACKEND != "jax":
        return op
    import jax

    cache = {}

    def call(*args, **kwargs):
        static = tuple(sorted((k, v) for k, v in kwargs.items() if isinstance(v, (bool, int, float))))
        dynamic = {k: v for k, v in kwargs.items() if not isinstance(v, (bool, int, float)) and v is not None}
        if static not in cache:
            cache[static] = jax.jit(functools.partial(op, **dict(static)))
        return cache[static](*args, **dynamic)

    return call


def _pair_structure(x, y):
    """The cosine similarities, pair masks and anchor weights of ``pair_structure``."""
    s = pair_structure(x, y, metric=COSINE_SIMILARITY)
    return s.values, s.positives, s.negatives, s.weights


P = types.SimpleNamespace(**{
    name: _compiled(getattr(ps, name))
    for name in ("multi_similarity_loss", "circle_loss", "supcon_loss", "nt_xent_loss", "nt_xent_views_loss",
                 "multi_similarity_mining")
}, _pair_structure=_compiled(_pair_structure))


# ------------------------------------------------------------ NumPy references
def _unit(v):
    v = np.asarray(v, dtype="float64")
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return np.where(norms > 0, v / np.where(norms > 0, norms, 1.0), 0.0)


def np_anchors(x, y, w=None, ref=None, ref_y=None, ref_mask=None, exclude_self=True):
    """Per anchor: (weight, positive similarities, negative similarities), written pair by pair.

    Without a reference the partners are the other batch rows; with one they
    are the filled reference rows, minus ``j == i`` when ``exclude_self``.
    """
    x = _unit(x)
    w = np.ones(len(x)) if w is None else np.asarray(w, "float64")
    if ref is None:
        r, ry, filled, skip_self = x, y, np.ones(len(x), bool), True
    else:
        r, ry = _unit(ref), ref_y
        filled = np.ones(len(r), bool) if ref_mask is None else np.asarray(ref_mask, bool)
        skip_self = exclude_self
    anchors = []
    for i in range(len(x)):
        if w[i] == 0:
            continue
        pos, neg = [], []
        for j in range(len(r)):
            if not filled[j] or (skip_self and j == i) or (ref is None and w[j] == 0):
                continue
            s = float(np.clip(x[i] @ r[j], -1.0, 1.0))
            (pos if ry[j] == y[i] else neg).append(s)
        anchors.append((w[i], pos, neg))
    return anchors


def _mean(values):
    """``sum w v / count`` of (weight, value) pairs (weights scale, the count divides); 0 when there are none."""
    return sum(w * v for w, v in values) / len(values) if values else 0.0


def np_multi_similarity(anchors, alpha=2.0, beta=50.0, lam=1.0, eps=0.1, mining=True):
    """Wang et al., CVPR 2019: mining Eq. 9-10, loss Eq. 11, 1/m over every anchor."""
    values = []
    for w, pos, neg in anchors:
        if mining:
            kept_neg = [s for s in neg if pos and s + eps > min(pos)]  # Eq. 9
            kept_pos = [s for s in pos if neg and s - eps < max(neg)]  # Eq. 10
        else:
            kept_neg, kept_pos = neg, pos
        loss = np.log(1 + sum(np.exp(-alpha * (s - lam)) for s in kept_pos)) / alpha
        loss += np.log(1 + sum(np.exp(beta * (s - lam)) for s in kept_neg)) / beta
        values.append((w, loss))
    return _mean(values)


def np_circle(anchors, m=0.25, gamma=256.0):
    """Sun et al., CVPR 2020, Eq. 6 with Eq. 8's O_p, O_n, Delta_p, Delta_n; anchors with both kinds."""
    values = []
    for w, pos, neg in anchors:
        if not pos or not neg:
            continue
        # log(1 + sum_n e^a_n * sum_p e^b_p), in the log domain: gamma = 256 overflows float64's exp.
        log_neg = np.logaddexp.reduce([gamma * max(s + m, 0.0) * (s - m) for s in neg])
        log_pos = np.logaddexp.reduce([-gamma * max(1 + m - s, 0.0) * (s - (1 - m)) for s in pos])
        values.append((w, np.logaddexp(0.0, log_neg + log_pos)))
    return _mean(values)


def np_supcon(anchors, tau=0.1):
    """Khosla et al., NeurIPS 2020, Eq. 2 (L^sup_out); anchors without positives left out."""
    values = []
    for w, pos, neg in anchors:
        if not pos:
            continue
        denominator = sum(np.exp(s / tau) for s in pos + neg)
        values.append((w, -np.mean([np.log(np.exp(s / tau) / denominator) for s in pos])))
    return _mean(values)


def np_nt_xent(anchors, tau=0.1):
    """SimCLR Eq. 1 with label positives: each positive against the anchor's negatives only."""
    values = []
    for w, pos, neg in anchors:
        if not pos:
            continue
        negatives = sum(np.exp(s / tau) for s in neg)
        values.append((w, np.mean([-np.log(np.exp(p / tau) / (np.exp(p / tau) + negatives)) for p in pos])))
    return _mean(values)


def np_simclr(v1, v2, tau=0.1, labels=None, w=None):
    """Chen et al., ICML 2020, Eq. 1 over the 2N anchors of two views, written row by row."""
    z = _unit(np.concatenate([v1, v2]))
    n = len(v1)
    w = np.ones(n) if w is None else np.asarray(w, "float64")
    values = []
    for i in range(2 * n):
        if w[i % n] == 0:
            continue
        j = (i + n) % (2 * n)
        denominator = 0.0
        for k in range(2 * n):
            if k == i or w[k % n] == 0:
                continue
            if k != j and labels is not None and labels[k % n] == labels[i % n]:
                continue  # another sample of the anchor's class: not a negative
            denominator += np.exp(z[i] @ z[k] / tau)
        values.append((w[i % n], -np.log(np.exp(z[i] @ z[j] / tau) / denominator)))
    return _mean(values)


REFERENCES = {
    "multi_similarity": (P.multi_similarity_loss, np_multi_similarity),
    "circle": (P.circle_loss, np_circle),
    "supcon": (P.supcon_loss, np_supcon),
    "nt_xent": (P.nt_xent_loss, np_nt_xent),
}
# Non-default parameters per loss: (op keyword arguments, reference keyword arguments).
PARAMETERS = {
    "multi_similarity": ({"alpha": 3.0, "beta": 20.0, "base": 0.5, "epsilon": 0.2},
                         {"alpha": 3.0, "beta": 20.0, "lam": 0.5, "eps": 0.2}),
    "circle": ({"relaxation": 0.4, "scale": 80.0}, {"m": 0.4, "gamma": 80.0}),
    "supcon": ({"temperature": 0.5}, {"tau": 0.5}),
    "nt_xent": ({"temperature": 0.5}, {"tau": 0.5}),
}


def _batch(n=N, dim=DIM, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, dim)).astype("float32"), rng.integers(0, classes, n)


def _views(n=N // 2, dim=DIM, seed=0):
    return np.random.default_rng(seed).normal(size=(2, n, dim)).astype("float32")


def _value(x):
    return float(to_numpy(x))


# ------------------------------------------------------------ values
@pytest.mark.parametrize("defaults", [True, False], ids=["defaults", "other"])
@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_matches_reference_on_random_batches(name, defaults):
    op, reference = REFERENCES[name]
    kwargs, ref_kwargs = ({}, {}) if defaults else PARAMETERS[name]
    for seed in range(3):
        x, y = _batch(seed=seed)
        expected = reference(np_anchors(x, y), **ref_kwargs)
        assert expected > 0 or name == "multi_similarity"
        np.testing.assert_allclose(_value(op(x, y, **kwargs)), expected, **TOL)


def test_term_defaults_are_the_papers():
    x, y = _batch(seed=4)
    anchors = np_anchors(x, y)
    np.testing.assert_allclose(_value(lw.terms.MultiSimilarityLoss()(x, y)),
                               np_multi_similarity(anchors, 2.0, 50.0, 1.0, 0.1), **TOL)
    np.testing.assert_allclose(_value(lw.terms.CircleLoss()(x, y)), np_circle(anchors, 0.25, 256.0), **TOL)
    np.testing.assert_allclose(_value(lw.terms.SupConLoss()(x, y)), np_supcon(anchors, 0.1), **TOL)
    np.testing.assert_allclose(_value(lw.terms.NTXentLoss(on="embedding")(x, y)), np_nt_xent(anchors, 0.1), **TOL)


@pytest.mark.parametrize("with_labels", [False, True])
def test_nt_xent_views_matches_simclr(with_labels):
    v1, v2 = _views(seed=5)
    labels = np.array([0, 1, 0, 1]) if with_labels else None
    expected = np_simclr(v1, v2, 0.5, labels)
    np.testing.assert_allclose(_value(P.nt_xent_views_loss(v1, v2, temperature=0.5, labels=labels)), expected, **TOL)
    if with_labels:  # same-class samples left out of the denominator: a different value
        assert abs(expected - np_simclr(v1, v2, 0.5)) > 1e-3


def test_two_views_with_one_positive_each_are_nt_xent_and_supcon():
    """SimCLR's Eq. 1 == the labelled NT-Xent == SupCon when every anchor has one positive."""
    v1, v2 = _views(seed=6)
    z, ids = np.concatenate([v1, v2]), np.concatenate([np.arange(4), np.arange(4)])
    views = _value(P.nt_xent_views_loss(v1, v2, temperature=0.3))
    np.testing.assert_allclose(_value(P.nt_xent_loss(z, ids, temperature=0.3)), views, **TOL)
    np.testing.assert_allclose(_value(P.supcon_loss(z, ids, temperature=0.3)), views, **TOL)
    # With more positives per anchor the two labelled forms differ (SupCon keeps positives in the denominator).
    classes = ids % 2
    nt_xent, supcon = _value(P.nt_xent_loss(z, classes, temperature=0.3)), _value(P.supcon_loss(z, classes, temperature=0.3))
    assert abs(nt_xent - supcon) > 1e-3


def test_ties_in_the_mining_are_strict():
    """A negative as similar as the hardest positive: kept only with a margin (Eq. 9-10 are strict)."""
    x = np.array([[1, 0, 0, 0], [0.6, 0.8, 0, 0], [0.6, 0.8, 0, 0], [-1, 0, 0, 0],
                  [0, 0, 1, 0], [0, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 1]], "float32")  # rows 1 and 2 identical
    y = np.array([0, 0, 1, 2, 3, 3, 4, 4])
    similarity, positives, negatives, _ = P._pair_structure(x, y)
    for epsilon, kept in ((0.0, False), (0.1, True)):
        kept_pos, kept_neg = P.multi_similarity_mining(similarity, positives, negatives, epsilon=epsilon)
        assert bool(to_numpy(kept_pos)[0, 1]) is kept and bool(to_numpy(kept_neg)[0, 2]) is kept
        assert not to_numpy(kept_neg)[0, 3]  # the easy negative (s = -1) is never kept
        expected = np_multi_similarity(np_anchors(x, y), eps=epsilon)
        np.testing.assert_allclose(_value(P.multi_similarity_loss(x, y, epsilon=epsilon)), expected, **TOL)
    # Tied similarities everywhere: duplicated rows give the reference value in every loss.
    x = np.repeat(_batch(n=N // 2, seed=7)[0], 2, axis=0)
    y = np.array([0, 0, 1, 1, 0, 0, 2, 2])
    for name, (op, reference) in REFERENCES.items():
        np.testing.assert_allclose(_value(op(x, y)), reference(np_anchors(x, y)), **TOL, err_msg=name)


def test_mining_removes_pairs_and_matches_the_reference():
    x, y = _batch(seed=8)
    similarity, positives, negatives, _ = P._pair_structure(x, y)
    kept_pos, kept_neg = (to_numpy(m) for m in P.multi_similarity_mining(similarity, positives, negatives))
    s = _unit(x) @ _unit(x).T
    pos, neg = to_numpy(positives), to_numpy(negatives)
    for i in range(N):
        for j in range(N):
            # min / max over an empty set: +inf / -inf (Eq. 9-10 then keep nothing)
            assert kept_neg[i, j] == (neg[i, j] and s[i, j] + 0.1 > s[i][pos[i]].min(initial=np.inf))
            assert kept_pos[i, j] == (pos[i, j] and s[i, j] - 0.1 < s[i][neg[i]].max(initial=-np.inf))
    assert kept_pos.sum() < pos.sum() and kept_neg.sum() < neg.sum()  # the mining removed pairs
    anchors = np_anchors(x, y)
    mined, unmined = (_value(P.multi_similarity_loss(x, y, mining=m, beta=10.0)) for m in (True, False))
    np.testing.assert_allclose(mined, np_multi_similarity(anchors, beta=10.0), **TOL)
    np.testing.assert_allclose(unmined, np_multi_similarity(anchors, beta=10.0, mining=False), **TOL)
    assert abs(mined - unmined) > 1e-3


# ------------------------------------------------------------ degenerate batches
def test_a_class_with_one_sample():
    """A lone sample is a negative of the others and, as an anchor, has no positive."""
    x, _ = _batch(seed=9)
    y = np.array([0, 0, 1, 1, 1, 2, 0, 1])  # class 2 has one sample
    anchors = np_anchors(x, y)
    assert not anchors[5][1]  # the lone anchor has no positive
    for name, (op, reference) in REFERENCES.items():
        np.testing.assert_allclose(_value(op(x, y)), reference(anchors), **TOL, err_msg=name)
    # Left out of the mean (SupCon, NT-Xent, circle): the loss is the mean over the other anchors.
    others = [a for k, a in enumerate(anchors) if k != 5]
    np.testing.assert_allclose(_value(P.supcon_loss(x, y)), np_supcon(others), **TOL)
    # Multi-similarity counts every anchor (the paper's 1/m): the lone one adds 0 to a mean over N.
    np.testing.assert_allclose(_value(P.multi_similarity_loss(x, y)) * N / (N - 1), np_multi_similarity(others),
                               **TOL)


def test_one_class_and_no_positive_batches_are_defined():
    x, _ = _batch(seed=10)
    one_class, all_distinct = np.zeros(N, "int64"), np.arange(N)
    for name, (op, reference) in REFERENCES.items():
        for y in (one_class, all_distinct):
            value = _value(op(x, y))
            assert np.isfinite(value), (name, y)
            np.testing.assert_allclose(value, reference(np_anchors(x, y)), **TOL, err_msg=name)
        assert _value(op(x, all_distinct)) == 0.0
        assert _value(op(x[:1], one_class[:1])) == 0.0  # a batch of one
    # One class: no negative. Circle, multi-similarity and NT-Xent are 0; SupCon's Eq. 2 is still defined.
    for op in (P.circle_loss, P.multi_similarity_loss, P.nt_xent_loss):
        assert _value(op(x, one_class)) == 0.0
    assert _value(P.supcon_loss(x, one_class)) >= np.log(N - 1) - 1e-6  # >= log |P(i)|


def _gradient(fn):
    """``value -> d fn(value) / d value`` with the backend's own autodiff (compiled once on JAX)."""
    if BACKEND == "jax":
        import jax

        compiled = jax.jit(jax.grad(fn))
        return lambda value: np.asarray(compiled(keras.ops.convert_to_tensor(value)))
    return functools.partial(gradient, fn)  # conftest.gradient


GRADIENT_LABELS = np.array([0, 0, 1, 1, 2, 0, 2, 1])


def _loss_of(name):
    if name == "nt_xent_views":
        return lambda v: ps.nt_xent_views_loss(v[:4], v[4:], labels=GRADIENT_LABELS[:4])
    return lambda v: getattr(ps, f"{name}_loss")(v, GRADIENT_LABELS)


@pytest.mark.parametrize("name", sorted(REFERENCES) + ["nt_xent_views"])
def test_finite_gradients_at_identical_and_degenerate_embeddings(name):
    grad_of = _gradient(_loss_of(name))
    ones = np.ones((N, DIM), "float32")
    # All identical; all zero; identical within each half (similarities exactly +-1).
    for x in (ones, np.zeros_like(ones), np.concatenate([ones[:4], -ones[4:]])):
        assert np.all(np.isfinite(grad_of(x))), (name, x[0], x[-1])
    # Away from the degenerate points the gradient is not zero: it flows through every loss.
    assert np.abs(grad_of(_batch(seed=11)[0])).max() > 1e-4


def test_nan_rows_and_bad_labels_are_left_out():
    x, y = _batch(n=N + 1, seed=12)
    spoiled = x.copy()
    spoiled[4, 1] = np.nan
    bad_label = y.astype("float32")
    bad_label[4] = -1.0
    keep = np.arange(N + 1) != 4
    for name, (op, _) in REFERENCES.items():
        clean = _value(op(x[keep], y[keep]))
        np.testing.assert_allclose(_value(op(spoiled, y)), clean, **TOL, err_msg=name)
        np.testing.assert_allclose(_value(op(x, bad_label)), clean, **TOL, err_msg=name)


# ------------------------------------------------------------ sample weights
@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_sample_weights_weigh_anchors(name):
    op, reference = REFERENCES[name]
    x, y = _batch(n=N + 2, seed=13)
    w = np.random.default_rng(14).uniform(0.2, 2.0, size=N + 2).astype("float32")
    np.testing.assert_allclose(_value(op(x, y, sample_weight=w)), reference(np_anchors(x, y, w)), **TOL)
    # Weights scale, the denominator counts anchors: uniform weights c give c times the loss ...
    uniform = np.full(N + 2, 3.0, "float32")
    np.testing.assert_allclose(_value(op(x, y, sample_weight=uniform)), 3.0 * _value(op(x, y)), **TOL)
    # ... and weight 0 is the sample's absence (as anchor and as partner).
    w[[2, 7]] = 0.0
    keep = w > 0
    np.testing.assert_allclose(_value(op(x, y, sample_weight=w)), _value(op(x[keep], y[keep], sample_weight=w[keep])),
                               **TOL)
    assert _value(op(x, y, sample_weight=np.zeros(N + 2, "float32"))) == 0.0


def test_views_sample_weights_weigh_both_anchors_of_a_sample():
    v1, v2 = _views(n=N // 2 + 2, seed=15)
    w = np.array([1.0, 0.5, 0.0, 2.0, 0.0, 0.3], "float32")
    got = _value(P.nt_xent_views_loss(v1, v2, temperature=0.5, sample_weight=w))
    np.testing.assert_allclose(got, np_simclr(v1, v2, 0.5, w=w), **TOL)
    keep = w > 0
    alone = P.nt_xent_views_loss(v1[keep], v2[keep], temperature=0.5, sample_weight=w[keep])
    np.testing.assert_allclose(got, _value(alone), **TOL)
    uniform = np.full(len(w), 2.5, "float32")
    np.testing.assert_allclose(_value(P.nt_xent_views_loss(v1, v2, temperature=0.5, sample_weight=uniform)),
                               2.5 * _value(P.nt_xent_views_loss(v1, v2, temperature=0.5)), **TOL)


def test_missing_labels_leave_samples_out():
    """Term(missing=-1) gives unlabelled samples weight 0: the loss is that of the labelled ones."""
    x, y = _batch(n=N + 2, seed=16)
    partial = y.astype("float32")
    partial[[1, 6]] = -1.0
    keep = partial >= 0
    for make in (lw.terms.MultiSimilarityLoss, lw.terms.CircleLoss, lw.terms.SupConLoss):
        term = make(missing=-1)
        np.testing.assert_allclose(_value(term(x, partial)), _value(make()(x[keep], y[keep])), **TOL)


# ------------------------------------------------------------ reference sets
@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_reference_set_pairs(name):
    op, reference = REFERENCES[name]
    x, y = _batch(seed=17)
    memory, memory_y = _batch(n=6, seed=18)
    # The cross-batch memory layout: the batch first, then the memory; two memory slots empty.
    ref = np.concatenate([x, memory])
    ref_y = np.concatenate([y, memory_y])
    ref_mask = np.array([True] * N + [True, False, True, True, False, True])
    got = op(x, y, ref_embeddings=ref, ref_labels=ref_y, ref_mask=ref_mask)
    np.testing.assert_allclose(_value(got), reference(np_anchors(x, y, ref=ref, ref_y=ref_y, ref_mask=ref_mask)),
                               **TOL)
    # A reference that is the batch itself, self pairs excluded: the plain batch loss.
    np.testing.assert_allclose(_value(op(x, y, ref_embeddings=x, ref_labels=y)), _value(op(x, y)), **TOL)
    # A memory alone (not starting with the batch): every pair counts, also j == i.
    got = op(x, y, ref_embeddings=memory, ref_labels=memory_y, exclude_self=False)
    expected = reference(np_anchors(x, y, ref=memory, ref_y=memory_y, exclude_self=False))
    np.testing.assert_allclose(_value(got), expected, **TOL)
    # Anchor weights apply to the batch rows; an empty reference gives 0.
    w = np.array([1.0, 0.5, 2.0, 1.0, 0.0, 1.0, 1.0, 0.3], "float32")
    got = op(x, y, sample_weight=w, ref_embeddings=ref, ref_labels=ref_y, ref_mask=ref_mask)
    np.testing.assert_allclose(_value(got), reference(np_anchors(x, y, w, ref, ref_y, ref_mask)), **TOL)
    empty = op(x, y, ref_embeddings=memory, ref_labels=memory_y, ref_mask=np.zeros(6, bool), exclude_self=False)
    assert _value(empty) == 0.0


MEMORY_TERMS = {
    "multi_similarity": (lambda: lw.terms.MultiSimilarityLoss(beta=20.0), lambda a: np_multi_similarity(a, beta=20.0)),
    "circle": (lambda: lw.terms.CircleLoss(), np_circle),
    "supcon": (lambda: lw.terms.SupConLoss(), np_supcon),
    "nt_xent": (lambda: lw.terms.NTXentLoss(on="embedding"), np_nt_xent),
}


@pytest.mark.parametrize("name", sorted(MEMORY_TERMS))
def test_cross_batch_memory_pairs_the_batch_with_past_batches(name):
    make, reference = MEMORY_TERMS[name]
    term = lw.terms.CrossBatchMemory(make(), memory_size=N)
    (a, a_y), (b, b_y) = _batch(seed=24), _batch(seed=25)
    np.testing.assert_allclose(_value(term(a, a_y, training=True)), reference(np_anchors(a, a_y)), **TOL)
    # Second step: the anchors of b against b (itself excluded) and the remembered a.
    expected = reference(np_anchors(b, b_y, ref=np.concatenate([b, a]), ref_y=np.concatenate([b_y, a_y])))
    np.testing.assert_allclose(_value(term(b, b_y, training=True)), expected, **TOL)
    with pytest.raises(ValueError, match="does not take a reference set"):
        lw.terms.CrossBatchMemory(lw.terms.TwoViewNTXentLoss(), memory_size=N)


@one_backend
def test_reference_arguments_are_checked():
    x, y = _batch()
    with pytest.raises(ValueError, match="without ref_embeddings"):
        ps.supcon_loss(x, y, ref_labels=y)
    with pytest.raises(ValueError, match="without ref_labels"):
        ps.circle_loss(x, y, ref_embeddings=x)
    with pytest.raises(ValueError, match=r"received embeddings of shape \(8, 4, 1\)"):
        ps.multi_similarity_loss(x[..., None], y)
    with pytest.raises(ValueError, match=r"received labels of shape \(8, 3, 1\); expected class ids"):
        ps.nt_xent_loss(x, np.eye(3)[y][..., None])  # (8, 3) rows are multi-hot labels (tests/test_multilabel.py)
    with pytest.raises(ValueError, match=r"NT-Xent: received views with 8 and 7 rows"):
        ps.nt_xent_views_loss(x, x[:7])


# ------------------------------------------------------------ terms
def test_terms_compute_in_float32_under_low_precision():
    x, y = _batch(seed=19)
    keras.config.set_dtype_policy("mixed_float16")  # reset by conftest
    for term in (lw.terms.MultiSimilarityLoss(beta=10.0), lw.terms.CircleLoss(), lw.terms.SupConLoss(),
                 lw.terms.NTXentLoss(on="embedding")):
        full = term(x, y)
        half = term(keras.ops.cast(x, "float16"), y)
        assert keras.backend.standardize_dtype(half.dtype) == "float32"
        np.testing.assert_allclose(_value(half), _value(full), rtol=2e-2, atol=2e-3)


def test_ntxent_term_two_views_and_one_output():
    v1, v2 = _views(seed=20)
    term = lw.terms.TwoViewNTXentLoss(temperature=0.5)
    assert term.on == ("view1", "view2")
    np.testing.assert_allclose(_value(term((v1, v2), None)), np_simclr(v1, v2, 0.5), **TOL)
    labels = np.array([0, 1, 0, 2])
    np.testing.assert_allclose(_value(term((v1, v2), labels)), np_simclr(v1, v2, 0.5, labels), **TOL)
    single = lw.terms.NTXentLoss(temperature=0.5, on="embedding")
    z, ids = np.concatenate([v1, v2]), np.concatenate([labels, labels])
    np.testing.assert_allclose(_value(single(z, ids)), np_nt_xent(np_anchors(z, ids), 0.5), **TOL)
    spoiled = v2.copy()
    spoiled[3, 0] = np.inf
    with pytest.raises(lw.InvalidInputError, match=r"1 row\(s\) with NaN/Inf features in a batch of 4"):
        term((v1, spoiled), labels)
    with pytest.raises(lw.InvalidInputError, match=r"invalid label \(first: 1\.5\)"):
        term((v1, v2), np.array([0.0, 1.5, 0.0, 1.0]))
    with pytest.raises(ValueError, match=r"outputs of shapes \[\(4, 4\), \(4, 3\)\]"):
        lw.terms.TwoViewNTXentLoss()((v1, v2[:, :3]), labels)
    with pytest.raises(ValueError, match=r"reads two outputs, on=\(first, second\)"):
        lw.terms.TwoViewNTXentLoss(on=("a", "b", "c"))


def test_bad_labels_raise_and_zero_the_loss():
    x, y = _batch(seed=21)
    bad = y.astype("float32")
    bad[2] = 2.5
    for term in (lw.terms.MultiSimilarityLoss(), lw.terms.CircleLoss(), lw.terms.SupConLoss()):
        with pytest.raises(lw.InvalidInputError, match=r"1 row\(s\) with an invalid label \(first: 2\.5\)"):
            term(x, bad)
    with pytest.raises(ValueError, match=r"received labels of rank 3"):
        lw.terms.SupConLoss()(x, np.eye(3, dtype="float32")[y][..., None])
    with pytest.raises(ValueError, match=r"received embeddings of shape \(8, 4, 1\)"):
        lw.terms.CircleLoss()(x[..., None], y)


@one_backend
@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: lw.terms.MultiSimilarityLoss(alpha=0.0), r"`alpha` must be a number > 0; received 0\.0"),
        (lambda: lw.terms.MultiSimilarityLoss(epsilon=-0.1), r"`epsilon` must be a number >= 0; received -0\.1"),
        (lambda: lw.terms.CircleLoss(relaxation=1.0), r"`relaxation` must be a number >= 0 and < 1; received 1\.0"),
        (lambda: lw.terms.CircleLoss(scale="80"), r"`scale` must be a number > 0; received '80'"),
        (lambda: lw.terms.SupConLoss(temperature=float("nan")), r"`temperature` must be a finite number"),
        (lambda: lw.terms.NTXentLoss(temperature=-1), r"`temperature` must be a number > 0; received -1"),
    ],
)
def test_constructor_errors_name_the_argument(make, message):
    with pytest.raises(ValueError, match=message):
        make()


TERMS = {
    "multi_similarity": lambda: lw.terms.MultiSimilarityLoss(beta=10.0, base=0.5),
    "circle": lambda: lw.terms.CircleLoss(relaxation=0.4, scale=32.0),
    "supcon": lambda: lw.terms.SupConLoss(temperature=0.5),
    "nt_xent": lambda: lw.terms.TwoViewNTXentLoss(temperature=0.5, on=("view1", "view2")),
}


def _model():
    inputs = keras.Input((6,))
    encoder = keras.Sequential([keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)])
    embedding = keras.layers.Identity(name="embedding")(encoder(inputs))
    # A second view of each sample, SimCLR-style: the same encoder on a fixed perturbation of the input.
    view2 = keras.layers.Identity(name="view2")(encoder(keras.layers.Lambda(lambda t: t * 0.9 + 0.1)(inputs)))
    view1 = keras.layers.Identity(name="view1")(embedding)
    return keras.Model(inputs, {"embedding": embedding, "view1": view1, "view2": view2})


@pytest.mark.parametrize("names", [("circle", "multi_similarity", "supcon"), ("nt_xent",)], ids=["labels", "views"])
def test_terms_train_inside_an_objective_beside_center_loss(names):
    """The labelled terms together (one compiled step) and the two-view NT-Xent, each beside center loss."""
    rng = np.random.default_rng(22)
    y = np.arange(48) % 4
    x = (rng.normal(size=(48, 6)) + 1.5 * np.eye(6)[y]).astype("float32")
    made = {name: TERMS[name]() for name in names}
    objective = lw.Objective(
        _model(), {**made, "center": lw.terms.CenterLoss(num_classes=4)},
        weighting=lw.weighting.Fixed({**{name: 1.0 for name in made}, "center": 0.01}),
    )
    objective.compile(optimizer=keras.optimizers.Adam(0.02))
    history = objective.fit(x, {"label": y}, epochs=6, batch_size=16, shuffle=False, verbose=0).history
    assert np.isfinite(history["loss/center"]).all()
    for name in made:
        curve = history[f"loss/{name}"]
        assert np.isfinite(curve).all() and curve[-1] < curve[0], (name, curve)
    assert np.any(to_numpy(objective.terms["center"].centers) != 0)  # the center update ran beside them
