"""Two-view self-supervised losses (``lossweave.ops.self_supervised``, ``lossweave.terms.self_supervised``).

The formulas are checked against NumPy references written from the papers
(VICReg: Bardes et al. 2022, Eq. 1-6 with the authors' code's two choices;
Barlow Twins: Zbontar et al. 2021, Eq. 1-2) in the JAX pass only; the
cross-backend listing (``tests/cross_backend_run.py``) carries the values to
the other backends. Edge cases (fewer than two rows, weight 0 as absence,
NaN rows, a constant feature, finite gradients) run on every backend.
"""

import numpy as np
import pytest

import lossweave as lw
from conftest import gradient, one_backend, to_numpy
from lossweave.ops import self_supervised as ssl

RNG = np.random.default_rng(3)
A = RNG.normal(size=(7, 5)).astype("float32")
B = (A + 0.5 * RNG.normal(size=A.shape)).astype("float32")
W = RNG.uniform(0.5, 2.0, 7).astype("float32")


# ------------------------------------------------------------------ NumPy references from the papers
def numpy_vicreg(a, b, lam=25.0, mu=25.0, nu=1.0, eps=1e-4, w=None):
    """Eq. 1-6; invariance a mean over n and d, variance averaged over the views (authors' code).

    Weights: rows of weight 0 dropped from every statistic; w scales the invariance rows; batch terms x mean w.
    """
    w = np.ones(len(a)) if w is None else np.asarray(w, "float64")
    keep = w != 0
    a, b, w = a[keep].astype("float64"), b[keep].astype("float64"), w[keep]
    n, d = a.shape
    s = np.sum(w * np.mean((a - b) ** 2, axis=1)) / n                                  # Eq. 5 (/ d)

    def v(z):                                                                          # Eq. 1
        return np.mean(np.maximum(0.0, 1.0 - np.sqrt(z.var(axis=0, ddof=1) + eps)))

    def c(z):                                                                          # Eq. 3-4
        cov = np.cov(z, rowvar=False)
        return (np.sum(cov ** 2) - np.sum(np.diag(cov) ** 2)) / d

    return lam * s + w.mean() * (mu * (v(a) + v(b)) / 2 + nu * (c(a) + c(b)))       # Eq. 6


def numpy_barlow(a, b, lam=0.005, eps=1e-5, w=None):
    """Eq. 1 over the cross-correlation of Eq. 2 (views standardised along the batch, biased std)."""
    w = np.ones(len(a)) if w is None else np.asarray(w, "float64")
    keep = w != 0
    a, b, w = a[keep].astype("float64"), b[keep].astype("float64"), w[keep]
    za = (a - a.mean(0)) / np.sqrt(a.var(0) + eps)
    zb = (b - b.mean(0)) / np.sqrt(b.var(0) + eps)
    c = za.T @ zb / len(a)
    on = np.sum((1 - np.diag(c)) ** 2)
    off = np.sum(c ** 2) - np.sum(np.diag(c) ** 2)
    return w.mean() * (on + lam * off)


def value(x):
    return float(to_numpy(x))


@one_backend
@pytest.mark.parametrize("kwargs", [{}, {"invariance_lambda": 5.0, "variance_mu": 10.0, "covariance_v": 2.0,
                                         "eps": 1e-3}])
def test_vicreg_equals_its_numpy_reference(kwargs):
    ref = numpy_vicreg(A, B, **{k: v for k, v in zip(("lam", "mu", "nu", "eps"), kwargs.values())})
    np.testing.assert_allclose(value(ssl.vicreg_loss(A, B, **kwargs)), ref, rtol=1e-5)
    np.testing.assert_allclose(value(ssl.vicreg_loss(A, B, sample_weight=W)), numpy_vicreg(A, B, w=W), rtol=1e-5)
    term = lw.terms.VICRegLoss(**kwargs)
    np.testing.assert_allclose(value(term((A, B), None)), ref, rtol=1e-5)


@one_backend
def test_vicreg_variance_term_acts_below_gamma_only():
    wide = (A * 10.0).astype("float32")  # every std far above 1: the variance term is 0
    inv, var, cov = (value(t) for t in ssl.vicreg_terms(wide, wide))
    assert inv == 0.0 and var == 0.0 and cov > 0.0


@one_backend
@pytest.mark.parametrize("lam", [0.005, 0.5])
def test_barlow_twins_equals_its_numpy_reference(lam):
    np.testing.assert_allclose(value(ssl.barlow_twins_loss(A, B, lam)), numpy_barlow(A, B, lam), rtol=1e-5)
    np.testing.assert_allclose(value(ssl.barlow_twins_loss(A, B, lam, sample_weight=W)),
                               numpy_barlow(A, B, lam, w=W), rtol=1e-5)
    term = lw.terms.BarlowTwinsLoss(redundancy_lambda=lam)
    np.testing.assert_allclose(value(term((A, B), None)), numpy_barlow(A, B, lam), rtol=1e-5)


@one_backend
def test_barlow_twins_is_zero_for_identical_decorrelated_views():
    z = np.array([[1., 1.], [1., -1.], [-1., 1.], [-1., -1.]], "float32")  # C = I exactly
    assert value(ssl.barlow_twins_loss(z, z, eps=0.0)) == 0.0


# ------------------------------------------------------------------ the wrapper
def numpy_ntxent_views(a, b, t):
    """SimCLR Eq. 1 over the 2N anchors of [a; b], cosine similarities."""
    z = np.concatenate([a, b]).astype("float64")
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    s = z @ z.T / t
    n = len(a)
    total = 0.0
    for i in range(2 * n):
        j = (i + n) % (2 * n)
        others = [k for k in range(2 * n) if k != i]
        total += -(s[i, j] - np.log(np.sum(np.exp(s[i, others]))))
    return total / (2 * n)


@one_backend
def test_self_supervised_ntxent_is_simclr():
    ref = numpy_ntxent_views(A, B, 0.5)
    term = lw.terms.SelfSupervisedLoss(lw.terms.NTXentLoss(temperature=0.5))
    np.testing.assert_allclose(value(term((A, B), None)), ref, rtol=1e-5)
    np.testing.assert_allclose(value(lw.terms.TwoViewNTXentLoss(temperature=0.5)((A, B), None)), ref, rtol=1e-5)


@one_backend
def test_self_supervised_asymmetric_anchors_on_view1_only():
    """symmetric=False: anchors are view1's rows, partners view2's; contrastive mean over the N x N pairs."""
    d = np.linalg.norm(A[:, None, :] - B[None, :, :], axis=-1).astype("float64")
    same = np.eye(len(A), dtype=bool)
    ref = np.mean(np.where(same, 0.5 * d ** 2, 0.5 * np.maximum(1.0 - d, 0.0) ** 2))
    term = lw.terms.SelfSupervisedLoss(lw.terms.ContrastiveLoss(), symmetric=False)
    np.testing.assert_allclose(value(term((A, B), None)), ref, rtol=1e-5)


@one_backend
def test_self_supervised_ids_make_other_samples_positives():
    ids = np.array([0, 0, 1, 2, 3, 4, 5])
    term = lw.terms.SelfSupervisedLoss(lw.terms.SupConLoss(temperature=0.5))
    inner = lw.terms.SupConLoss(temperature=0.5)
    expected = value(inner(np.concatenate([A, B]), np.concatenate([ids, ids])))
    np.testing.assert_allclose(value(term((A, B), ids)), expected, rtol=1e-6)
    assert abs(value(term((A, B), None)) - expected) > 1e-3


def test_wrapper_refuses_what_it_cannot_wrap():
    with pytest.raises(ValueError, match="expected a pair term"):
        lw.terms.SelfSupervisedLoss(lw.terms.VICRegLoss())
    with pytest.raises(ValueError, match="takes no reference set"):
        lw.terms.SelfSupervisedLoss(lw.terms.NPairsLoss(), symmetric=False)


# ------------------------------------------------------------------ edge cases, every backend
@pytest.mark.parametrize("loss", [ssl.vicreg_loss, ssl.barlow_twins_loss])
def test_a_batch_of_one_gives_the_defined_value(loss):
    one = A[:1]
    expected = 25.0 * float(np.mean((A[0] - B[0]) ** 2)) if loss is ssl.vicreg_loss else 0.0
    np.testing.assert_allclose(value(loss(one, B[:1])), expected, rtol=1e-5, atol=1e-7)
    g = gradient(lambda x: loss(x, B[:1]), one)
    assert np.all(np.isfinite(g))


@pytest.mark.parametrize("loss", [ssl.vicreg_loss, ssl.barlow_twins_loss])
def test_zero_weight_and_nan_rows_are_absent(loss):
    w = W.copy()
    w[2] = 0.0
    expected = value(loss(np.delete(A, 2, 0), np.delete(B, 2, 0), sample_weight=np.delete(w, 2)))
    np.testing.assert_allclose(value(loss(A, B, sample_weight=w)), expected, rtol=1e-5)
    bad = A.copy()
    bad[2] = np.nan
    np.testing.assert_allclose(value(loss(bad, B, sample_weight=w)), expected, rtol=1e-5)
    g = gradient(lambda x: loss(x, B, sample_weight=w), bad)
    assert np.all(np.isfinite(g)) and np.all(g[2] == 0.0)
    np.testing.assert_allclose(value(loss(A, B, sample_weight=np.full(7, 3.0, "float32"))), 3 * value(loss(A, B)),
                               rtol=1e-5)


@pytest.mark.parametrize("loss", [ssl.vicreg_loss, ssl.barlow_twins_loss])
def test_a_constant_feature_has_finite_gradients(loss):
    a = A.copy()
    a[:, 0] = 1.5
    assert np.isfinite(value(loss(a, a)))
    assert np.all(np.isfinite(gradient(lambda x: loss(x, a), a)))


def test_views_of_different_dims_are_refused():
    with pytest.raises(ValueError, match="same dim"):
        ssl.vicreg_loss(A, B[:, :3])


def test_terms_check_features_not_labels():
    term = lw.terms.VICRegLoss()
    bad = A.copy()
    bad[0, 0] = np.inf
    with pytest.raises(lw.errors.InvalidInputError):
        term((bad, B), np.arange(7))
    assert np.isfinite(value(term((A, B), np.full(7, -5))))  # labels are not read
