"""NCA, margin, tuplet margin, angular, generalized lifted, intra-pair variance, SNR contrastive and FastAP.

Each loss of ``lossweave.ops.tuple_losses`` against a NumPy reference
written from its paper (explicit loops over pairs and triplets; the JAX pass
only: ``tests/cross_backend_run.py`` carries the values to TensorFlow and
PyTorch), and, on every backend, the edge cases of the pair losses: a batch
of one class, a batch with no tuple (a defined value, finite gradients) and
duplicate rows (distance 0: finite gradients).
"""

import math

import numpy as np
import pytest

import lossweave as lw
from conftest import BACKEND, gradient, one_backend, to_numpy
from lossweave.ops import tuple_losses as tl

TOL = {"rtol": 1e-5, "atol": 1e-6}
RNG = np.random.default_rng(7)
X = RNG.normal(size=(8, 4)).astype("float32")
Y = np.array([0, 1, 0, 2, 1, 0, 3, 1])  # class 3 has one row: an anchor without a positive
W = RNG.uniform(0.5, 2.0, size=8).astype("float32")


# ------------------------------------------------------------------ NumPy references from the papers
def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _sq(x):
    return ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1).astype("float64")


def _pairs(y):
    n = len(y)
    pos = [(i, j) for i in range(n) for j in range(n) if i != j and y[i] == y[j]]
    neg = [(i, j) for i in range(n) for j in range(n) if y[i] != y[j]]
    return pos, neg


def np_nca(x, y, scale=1.0, w=None):
    """Goldberger et al. 2004, Eq. 1-2: p_ij softmax of -||x_i - x_j||^2 over j != i, L = mean -log sum_{C_i} p_ij."""
    w = np.ones(len(y)) if w is None else w
    d, total, count = _sq(x), 0.0, 0
    for i in range(len(y)):
        others = [j for j in range(len(y)) if j != i]
        p = np.exp(-scale * d[i, others])
        p = p / p.sum()
        same = sum(pj for j, pj in zip(others, p) if y[j] == y[i])
        if any(y[j] == y[i] for j in others):
            total += w[i] * -np.log(same)
            count += 1
    return total / count if count else 0.0


def np_margin(x, y, beta, margin=0.2, nu=0.0, triplets=False, w=None):
    """Wu et al. 2017, Eq. 3-4: [margin + y_ij (D_ij - beta)]_+, mean over the non-zero terms, + nu beta per tuple."""
    w = np.ones(len(y)) if w is None else w
    d = np.sqrt(_sq(x))
    beta = np.broadcast_to(np.asarray(beta, "float64"), (max(y) + 1,))
    total, count, reg = 0.0, 0, 0.0
    for a in range(len(y)):
        positives = [p for p in range(len(y)) if p != a and y[p] == y[a]]
        negatives = [n for n in range(len(y)) if y[n] != y[a]]
        if triplets:  # every triplet (a, p, n): its positive and its negative pair
            items = [(p, 1.0) for p in positives for _ in negatives] + [(n, -1.0) for n in negatives for _ in positives]
            tuples = len(positives) * len(negatives)
        else:
            items = [(p, 1.0) for p in positives] + [(n, -1.0) for n in negatives]
            tuples = len(positives)
        for j, sign in items:
            term = max(margin + sign * (d[a, j] - beta[y[a]]), 0.0)
            total += w[a] * term
            count += term > 0
        reg += w[a] * nu * beta[y[a]] * tuples
    return (total + reg) / count if count else 0.0


def np_tuplet(x, y, m=0.1, s=64.0):
    """Yu & Tao 2019, Eq. 5 and 7: log(1 + sum_n exp(s (cos theta_an - cos(theta_ap - m)))), mean over (a, p)."""
    c = np.clip(_unit(x.astype("float64")) @ _unit(x.astype("float64")).T, -1, 1)
    pos, _ = _pairs(y)
    terms = []
    for a, p in pos:
        negatives = [n for n in range(len(y)) if y[n] != y[a]]
        inner = sum(np.exp(s * (c[a, n] - np.cos(np.arccos(c[a, p]) - m))) for n in negatives)
        terms.append(np.log1p(inner) if negatives else 0.0)
    return np.mean(terms) if terms else 0.0


def np_angular(x, y, angle=40.0):
    """Wang et al. 2017, Eq. 8-9 on unit vectors: log(1 + sum_n exp(f_apn)), mean over the positive pairs."""
    u = _unit(x.astype("float64"))
    t = math.tan(math.radians(angle)) ** 2
    pos, _ = _pairs(y)
    terms = []
    for a, p in pos:
        f = [4 * t * (u[a] + u[p]) @ u[n] - 2 * (1 + t) * u[a] @ u[p] for n in range(len(y)) if y[n] != y[a]]
        terms.append(np.log1p(np.exp(f).sum()) if f else 0.0)
    return np.mean(terms) if terms else 0.0


def np_generalized_lifted(x, y, pos_margin=0.0, neg_margin=1.0):
    """Hermans et al. 2017, p. 4: [log sum_p e^{D_ap - m_p} + log sum_n e^{m_n - D_an}]_+, mean over the anchors."""
    d = np.sqrt(_sq(x))
    terms = []
    for a in range(len(y)):
        p = [d[a, j] - pos_margin for j in range(len(y)) if j != a and y[j] == y[a]]
        n = [neg_margin - d[a, j] for j in range(len(y)) if y[j] != y[a]]
        if p or n:
            lse = lambda v: np.log(np.exp(v).sum()) if v else 0.0  # noqa: E731
            terms.append(max(lse(p) + lse(n), 0.0))
    return np.mean(terms) if terms else 0.0


def np_intra_pair_variance(x, y, pos_eps=0.01, neg_eps=0.01):
    """Yu & Tao 2019 (L_pos + L_neg; equation number unverified).

    mean_p [(1 - e_p) E[S_p] - S_p]_+^2 + mean_n [S_n - (1 + e_n) E[S_n]]_+^2.
    """
    c = _unit(x.astype("float64")) @ _unit(x.astype("float64")).T
    pos, neg = _pairs(y)
    sp, sn = np.array([c[i, j] for i, j in pos]), np.array([c[i, j] for i, j in neg])
    loss = 0.0
    if len(sp):
        loss += np.mean(np.maximum((1 - pos_eps) * sp.mean() - sp, 0) ** 2)
    if len(sn):
        loss += np.mean(np.maximum(sn - (1 + neg_eps) * sn.mean(), 0) ** 2)
    return loss


def np_snr(x, y, pos_margin=0.0, neg_margin=1.0, zero_mean_weight=0.0):
    """Yuan et al. 2019, Eq. 10-11: d_S = var(h_j - h_i) / var(h_i); hinge parts, each over its non-zero terms."""
    x = x.astype("float64")
    d = np.array([[np.var(x[j] - x[i]) / np.var(x[i]) for j in range(len(x))] for i in range(len(x))])
    pos, neg = _pairs(y)
    p = [max(d[i, j] - pos_margin, 0) for i, j in pos]
    n = [max(neg_margin - d[i, j], 0) for i, j in neg]
    nonzero_mean = lambda v: np.mean([t for t in v if t > 0]) if any(t > 0 for t in v) else 0.0  # noqa: E731
    return nonzero_mean(p) + nonzero_mean(n) + zero_mean_weight * np.mean(np.abs(x.sum(axis=1)))


def np_fast_ap(x, y, num_bins=10):
    """Cakir et al. 2019, Eq. 9-12: triangular bins of the squared distance of unit vectors in [0, 4]."""
    u = _unit(x.astype("float64"))
    d = np.maximum(2 - 2 * u @ u.T, 0)
    delta, terms = 4.0 / num_bins, []
    for a in range(len(y)):
        others = [j for j in range(len(y)) if j != a]
        positives = [j for j in others if y[j] == y[a]]
        if not positives:
            continue
        h_pos = np.array([sum(max(1 - abs(d[a, j] - k * delta) / delta, 0) for j in positives)
                          for k in range(num_bins + 1)])
        h_all = np.array([sum(max(1 - abs(d[a, j] - k * delta) / delta, 0) for j in others)
                          for k in range(num_bins + 1)])
        cum_pos, cum_all = np.cumsum(h_pos), np.cumsum(h_all)
        ap = sum(h_pos[k] * cum_pos[k] / cum_all[k] for k in range(num_bins + 1) if h_pos[k] * cum_pos[k] > 0)
        terms.append(1 - ap / len(positives))
    return np.mean(terms) if terms else 0.0


# ------------------------------------------------------------------ against the references (JAX pass)
CLOSE = X.copy()
CLOSE[2] = CLOSE[0] + 0.01  # a near-duplicate positive (angles near 0)


@one_backend
@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_nca_matches_the_paper(scale):
    np.testing.assert_allclose(float(tl.nca_loss(X, Y, scale=scale)), np_nca(X, Y, scale), **TOL)
    np.testing.assert_allclose(float(tl.nca_loss(X, Y, scale=scale, sample_weight=W)), np_nca(X, Y, scale, W), **TOL)


@one_backend
@pytest.mark.parametrize("triplets", [False, True])
def test_margin_loss_matches_the_paper(triplets):
    beta = np.array([1.5, 2.0, 1.0, 2.5], "float32")
    for b, nu in ((np.array([2.2], "float32"), 0.0), (beta, 0.1)):
        got = float(tl.margin_loss(X, Y, b, nu=nu, triplets=triplets, sample_weight=W))
        np.testing.assert_allclose(got, np_margin(X, Y, b, nu=nu, triplets=triplets, w=W), **TOL)


@one_backend
def test_margin_loss_gradient_moves_beta_as_eq4():
    """d L / d beta against a central difference of the NumPy reference (Eq. 4 with the regulariser)."""
    beta = np.array([1.5, 2.0, 1.0, 2.5], "float32")
    got = gradient(lambda b: tl.margin_loss(X, Y, b, nu=0.1), beta)
    step = 1e-4
    expected = [(np_margin(X, Y, beta + step * e, nu=0.1) - np_margin(X, Y, beta - step * e, nu=0.1)) / (2 * step)
                for e in np.eye(4)]
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-5)


@one_backend
@pytest.mark.parametrize("x", [X, CLOSE], ids=["random", "near-duplicate"])
def test_tuplet_margin_matches_the_paper(x):
    np.testing.assert_allclose(float(tl.tuplet_margin_loss(x, Y)), np_tuplet(x, Y), rtol=1e-4)
    np.testing.assert_allclose(float(tl.tuplet_margin_loss(x, Y, angular_margin=0.3, scale=8.0)),
                               np_tuplet(x, Y, 0.3, 8.0), **TOL)


@one_backend
@pytest.mark.parametrize("angle", [40.0, 55.0])
def test_angular_matches_the_paper(angle):
    np.testing.assert_allclose(float(tl.angular_loss(X, Y, angle=angle)), np_angular(X, Y, angle), **TOL)
    np.testing.assert_allclose(float(tl.angular_loss(3.0 * X, Y, angle=angle)), np_angular(X, Y, angle), **TOL)


@one_backend
def test_generalized_lifted_matches_the_paper():
    np.testing.assert_allclose(float(tl.generalized_lifted_structure_loss(X, Y)), np_generalized_lifted(X, Y), **TOL)
    np.testing.assert_allclose(float(tl.generalized_lifted_structure_loss(X, Y, pos_margin=0.5, neg_margin=3.0)),
                               np_generalized_lifted(X, Y, 0.5, 3.0), **TOL)


@one_backend
def test_intra_pair_variance_matches_the_paper():
    np.testing.assert_allclose(float(tl.intra_pair_variance_loss(X, Y)), np_intra_pair_variance(X, Y), **TOL)
    np.testing.assert_allclose(float(tl.intra_pair_variance_loss(X, Y, pos_eps=0.2, neg_eps=0.3)),
                               np_intra_pair_variance(X, Y, 0.2, 0.3), **TOL)


@one_backend
def test_snr_contrastive_matches_the_paper():
    np.testing.assert_allclose(float(tl.snr_contrastive_loss(X, Y, neg_margin=2.0)), np_snr(X, Y, 0.0, 2.0), **TOL)
    np.testing.assert_allclose(float(tl.snr_contrastive_loss(X, Y, 0.5, 1.5, zero_mean_weight=0.1)),
                               np_snr(X, Y, 0.5, 1.5, 0.1), **TOL)


@one_backend
@pytest.mark.parametrize("num_bins", [10, 4])
def test_fast_ap_matches_the_paper(num_bins):
    np.testing.assert_allclose(float(tl.fast_ap_loss(X, Y, num_bins)), np_fast_ap(X, Y, num_bins), **TOL)


# ------------------------------------------------------------------ edge cases (every backend)
TERMS = {
    "nca": lambda: lw.terms.NCALoss(),
    "margin": lambda: lw.terms.MarginLoss(nu=0.1, num_classes=6),
    "tuplet_margin": lambda: lw.terms.TupletMarginLoss(),
    "angular": lambda: lw.terms.AngularLoss(),
    "generalized_lifted": lambda: lw.terms.GeneralizedLiftedStructureLoss(),
    "intra_pair_variance": lambda: lw.terms.IntraPairVarianceLoss(),
    "snr_contrastive": lambda: lw.terms.SNRContrastiveLoss(),
    "fast_ap": lambda: lw.terms.FastAPLoss(),
}
REFERENCES = {
    "nca": np_nca,
    "margin": lambda x, y: np_margin(x, y, 1.2, nu=0.1),
    "tuplet_margin": np_tuplet,
    "angular": np_angular,
    "generalized_lifted": np_generalized_lifted,
    "intra_pair_variance": np_intra_pair_variance,
    "snr_contrastive": np_snr,
    "fast_ap": np_fast_ap,
}


# Losses whose every term belongs to a positive pair (or an anchor with one).
ANCHORED_ON_POSITIVES = {"nca", "tuplet_margin", "angular", "fast_ap"}


_COMPILED = {}


def _value_and_gradient(term, x, y, key=None):
    """The loss and its gradient wrt ``x``; on JAX under ``jit`` (an eager JAX call costs seconds here).

    With ``key`` the term and its compiled function are kept: the edge-case
    tests of one loss share them (one compile per loss and shape).
    """
    if key is not None:
        term = _COMPILED.setdefault(key, {"term": term})["term"]
    if not term.built:  # a term's variables (MarginLoss's beta) are made outside the traced function
        term.build(x.shape)
    if BACKEND == "jax":
        import jax

        jitted = _COMPILED[key].setdefault("jit", None) if key is not None else None
        if jitted is None:
            jitted = jax.jit(jax.value_and_grad(lambda t, labels: term(t, labels)))
            if key is not None:
                _COMPILED[key]["jit"] = jitted
        value, grad = jitted(x, np.asarray(y, "int32"))
        return float(value), np.asarray(grad)
    return float(to_numpy(term(x, y))), gradient(lambda t: term(t, y), x)


@pytest.mark.parametrize("name", sorted(TERMS))
def test_one_class_batch_has_the_papers_value_and_finite_gradients(name):
    """Every row one class: only positive pairs (the terms that need a negative count 0, or are left out)."""
    y = np.zeros(6, "int32")
    x = X[:6]
    value, grad = _value_and_gradient(TERMS[name](), x, y, key=name)
    np.testing.assert_allclose(value, REFERENCES[name](x, y), rtol=1e-4, atol=1e-6)
    assert np.all(np.isfinite(grad))


@pytest.mark.parametrize("name", sorted(TERMS))
def test_no_tuple_gives_zero_with_zero_gradients(name):
    """Every row its own class (no positive pair) and a single row (no pair): a defined value, never NaN.

    A single row gives 0 with zero gradients; with negatives only, the losses
    whose terms hang on a positive pair give 0 with zero gradients, and the
    others keep their negative pairs' terms (the reference says the same).
    """
    for x, y in ((X[:6], np.arange(6)), (X[:1], np.array([0]))):
        value, grad = _value_and_gradient(TERMS[name](), x, y, key=name)
        expected = REFERENCES[name](x, y)
        np.testing.assert_allclose(value, expected, rtol=1e-4, atol=1e-6)
        assert np.all(np.isfinite(grad))
        if len(y) == 1 or name in ANCHORED_ON_POSITIVES:
            assert expected == 0.0 and np.all(grad == 0), name


@pytest.mark.parametrize("name", sorted(TERMS))
def test_duplicate_rows_give_finite_gradients(name):
    """Distance 0 (cosine 1) between two positives: finite gradients (Euclidean's sqrt, the tuplet's angle)."""
    x = X[:6].copy()
    x[1] = x[0]  # a positive pair at distance 0
    x[4] = x[3]  # a negative pair at distance 0
    y = np.array([0, 0, 1, 2, 1, 2])
    value, grad = _value_and_gradient(TERMS[name](), x, y, key=name)
    assert np.isfinite(value) and np.all(np.isfinite(grad)), (name, value, grad)


def test_margin_loss_per_class_labels_are_checked():
    term = lw.terms.MarginLoss(num_classes=2)
    with pytest.raises(lw.InvalidInputError, match=r"\[0, 2\)"):
        term(X[:4], np.array([0, 1, 2, 1]))


def test_losses_that_need_a_similarity_or_no_reference_say_so():
    with pytest.raises(ValueError, match="expected a similarity"):
        lw.terms.TupletMarginLoss(distance="euclidean")
    with pytest.raises(ValueError, match="does not take a reference set"):
        lw.terms.AngularLoss().pair_loss(X, Y, ref_embeddings=X, ref_labels=Y)
    with pytest.raises(ValueError, match="in degrees"):
        lw.terms.AngularLoss(angle=90.0)


@one_backend
def test_a_tuple_loss_without_an_op_is_refused_when_written():
    from lossweave.terms.tuple_losses import _TupleLoss

    with pytest.raises(TypeError, match="NoOpLoss is a tuple loss without an op: set loss_op"):
        type("NoOpLoss", (_TupleLoss,), {})
    assert type("_Intermediate", (_TupleLoss,), {}).loss_op is None  # a private base may leave it to its subclasses


# ------------------------------------------------------------------ SoftTriple (the class-table base)
def np_soft_triple(x, centers, y, k, lam=20.0, gamma=0.1, delta=0.01, tau=0.2):
    """Qian et al. 2019, Eq. 6-8 (relaxed similarity, the loss) and Eq. 10-12 (the center regulariser)."""
    u, c = _unit(x.astype("float64")), _unit(centers.astype("float64"))
    classes = len(c) // k
    losses = []
    for i in range(len(y)):
        relaxed = []
        for j in range(classes):
            s = c[j * k:(j + 1) * k] @ u[i]
            p = np.exp(s / gamma) / np.exp(s / gamma).sum()
            relaxed.append((p * s).sum())
        z = lam * (np.array(relaxed) - delta * (np.arange(classes) == y[i]))
        losses.append(-(z[y[i]] - np.log(np.exp(z).sum())))
    reg = 0.0
    if tau > 0 and k > 1:
        for j in range(classes):
            w = c[j * k:(j + 1) * k]
            reg += sum(np.sqrt(2 + 1e-5 - 2 * w[s] @ w[t]) for s in range(k) for t in range(s + 1, k))
        reg /= classes * k * (k - 1)
    return np.mean(losses) + tau * reg


CENTERS = RNG.normal(size=(4 * 3, 4)).astype("float32")  # 4 classes x K = 3


@one_backend
@pytest.mark.parametrize("tau, k", [(0.2, 3), (0.0, 3), (0.2, 1)])
def test_soft_triple_matches_the_paper(tau, k):
    centers = CENTERS[: 4 * k]
    got = float(tl.soft_triple_loss(X, centers, Y, k, tau=tau))
    np.testing.assert_allclose(got, np_soft_triple(X, centers, Y, k, tau=tau), **TOL)
    got = float(tl.soft_triple_loss(X, centers, Y, k, scale=5.0, gamma=0.5, cosine_margin=0.1, tau=tau))
    np.testing.assert_allclose(got, np_soft_triple(X, centers, Y, k, 5.0, 0.5, 0.1, tau), **TOL)


def test_soft_triple_term_one_class_and_equal_centers_give_finite_gradients():
    """A batch of one class, duplicate rows and a class whose centers coincide (the regulariser at distance 0)."""
    term = lw.terms.SoftTripleLoss(num_classes=4, centers_per_class=3, proxies_initializer="ones")
    x = X[:4].copy()
    x[1] = x[0]
    y = np.zeros(4, "int32")
    value, grad = _value_and_gradient(term, x, y)
    centers = np.ones((12, 4), "float32")
    np.testing.assert_allclose(value, np_soft_triple(x, centers, y, 3), rtol=1e-4)
    assert np.all(np.isfinite(grad))
    assert np.all(np.isfinite(to_numpy(term.proxies)))
    if BACKEND == "jax":  # the centers' gradient (the regulariser at distance 0), compiled
        import jax

        proxy_grad = jax.jit(jax.grad(lambda c: tl.soft_triple_loss(x, c, y, 3)))(centers)
    else:
        proxy_grad = gradient(lambda c: tl.soft_triple_loss(x, c, y, 3), centers)
    assert np.all(np.isfinite(proxy_grad))
