"""L-Softmax (``lw.ops.large_margin``, ``lw.terms.LargeMarginSoftmax``) against the paper and against PML.

The formulas are checked on one backend against NumPy references written from
Liu et al., ICML 2016 (Eq. 1-2, 4-7 and the authors' annealing), and against
pytorch-metric-learning 2.9.0's ``LargeMarginSoftmaxLoss`` (value and input
gradient); ``tests/test_cross_backend.py`` (``cross_backend_run.py``) carries
the term to the other backends. The edge cases (``cos theta = +-1``, a zero
embedding, the refusals) run on all three.
"""

import math

import numpy as np
import pytest
from scipy.special import binom

import lossweave as lw
from conftest import gradient, one_backend, to_numpy

_RNG = np.random.default_rng(5)
DIM, CLASSES = 4, 5
X = _RNG.normal(size=(10, DIM)).astype("float32")
# Class weights with norms from 0.3 to 3: a normalising implementation would fail.
W = (_RNG.normal(size=(CLASSES, DIM)) * np.array([0.3, 1.0, 3.0, 0.7, 1.8])[:, None]).astype("float32")
LABELS = np.array([0, 1, 2, 3, 4, 0, 1, 2, 3, 4])


def psi_reference(theta, m):
    """Eq. 6: ``(-1)^k cos(m theta) - 2k`` with ``k = floor(theta m / pi)`` in ``[0, m - 1]``."""
    k = np.minimum(np.floor(theta * m / np.pi), m - 1)
    return (-1.0) ** k * np.cos(m * theta) - 2.0 * k


def cos_m_reference(c, m):
    """Eq. 7: ``sum_n (-1)^n C(m, 2n) cos^(m-2n) (1 - cos^2)^n``."""
    return sum((-1) ** n * binom(m, 2 * n) * c ** (m - 2 * n) * (1.0 - c**2) ** n for n in range(m // 2 + 1))


def loss_reference(x, w, labels, m, lam=0.0, scale=1.0):
    """Eq. 1-2 and 4 with the authors' annealed target, in float64: mean cross-entropy over the batch."""
    x, w = x.astype("float64"), w.astype("float64")
    f = scale * x @ w.T
    norms = np.linalg.norm(x, axis=1) * np.linalg.norm(w[labels], axis=1)
    cos = np.clip(f[np.arange(len(x)), labels] / (scale * norms), -1.0, 1.0)
    theta = np.arccos(cos)
    f[np.arange(len(x)), labels] = scale * norms * (lam * cos + psi_reference(theta, m)) / (1.0 + lam)
    f = f - f.max(axis=1, keepdims=True)
    log_p = f - np.log(np.exp(f).sum(axis=1, keepdims=True))
    return float(-log_p[np.arange(len(x)), labels].mean())


def make(w=W, **kwargs):
    term = lw.terms.LargeMarginSoftmax(len(w), **kwargs)
    term.build((None, w.shape[1]))
    term.class_weights.assign(w)
    return term


@one_backend
@pytest.mark.parametrize("m", [1, 2, 3, 4])
def test_psi_equals_equation_6_and_the_expansion_of_equation_7(m):
    # The bounds k pi / m are included (psi is continuous there), and theta = 0, pi.
    theta = np.concatenate([np.linspace(0.0, np.pi, 181), np.arange(m + 1) * np.pi / m])
    c = np.cos(theta)
    got = to_numpy(lw.ops.large_margin.large_margin_target(c.astype("float32"), m))
    np.testing.assert_allclose(got, psi_reference(theta, m), atol=2e-5)
    np.testing.assert_allclose(cos_m_reference(c, m), np.cos(m * theta), atol=1e-12)
    assert np.all(np.diff(psi_reference(np.linspace(0.0, np.pi, 181), m)) < 0)  # monotonic: the point of Eq. 6
    lam = 3.0
    annealed = to_numpy(lw.ops.large_margin.large_margin_target(c.astype("float32"), m, lam))
    np.testing.assert_allclose(annealed, (lam * c + psi_reference(theta, m)) / (1 + lam), atol=2e-5)


@one_backend
@pytest.mark.parametrize("m", [1, 2, 3, 4])
def test_loss_equals_the_paper(m):
    got = float(make(multiplicative_margin=m, base=0.0)(X, LABELS))
    np.testing.assert_allclose(got, loss_reference(X, W, LABELS, m), rtol=1e-5)
    assert got > loss_reference(X, W, LABELS, 1) or m == 1  # the margin makes the loss harder


@one_backend
def test_annealing_follows_the_authors_schedule_and_scale_multiplies_every_logit():
    term = make(multiplicative_margin=3, scale=2.0, base=50.0, gamma=0.1, power=2.0, lambda_min=0.5)
    for step in (0, 7, 10_000):
        term.iterations.assign(step)
        lam = max(0.5, 50.0 * (1.0 + 0.1 * step) ** -2.0)
        np.testing.assert_allclose(float(term(X, LABELS)),
                                   loss_reference(X, W, LABELS, 3, lam=lam, scale=2.0), rtol=1e-5)
    term(X, LABELS, training=True)
    assert int(to_numpy(term.iterations)) == 10_001  # one training call, one step


@one_backend
def test_functional_logits_equal_the_term_and_inference_logits_are_plain_products():
    term = make(multiplicative_margin=4, scale=1.5, base=2.0)  # lambda = 2 at step 0
    ops_logits = lw.ops.large_margin.large_margin_logits(X, W, LABELS, 4, annealing=2.0, scale=1.5)
    np.testing.assert_allclose(to_numpy(term.margin_logits(X, LABELS)), to_numpy(ops_logits), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(to_numpy(term.logits(X)), 1.5 * X @ W.T, rtol=1e-5, atol=1e-5)


@one_backend
def test_class_sampling_of_every_class_gives_the_full_loss():
    # A batch holding every class: the sample is every class in a drawn order, so the target norms must follow it.
    full = float(make(multiplicative_margin=2, base=0.0)(X, LABELS, training=True))
    sampled = make(multiplicative_margin=2, base=0.0, sample_rate=0.4, seed=3)
    np.testing.assert_allclose(float(sampled(X, LABELS, training=True)), full, rtol=1e-5)


def test_gradients_are_finite_at_cos_plus_minus_one_and_at_a_zero_embedding():
    w = np.eye(3, dtype="float32") * np.array([[2.0], [1.0], [0.5]], "float32")
    x = np.array([[3.0, 0.0, 0.0], [-2.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 1.0, 1.0]], "float32")
    labels = np.array([0, 0, 1, 2])  # cos = 1, cos = -1, a zero row, cos = 1/sqrt(2)
    term = make(w, multiplicative_margin=4, base=0.0)
    value = float(term(x, labels))
    expected = loss_reference(np.delete(x, 2, 0), w, np.delete(labels, 2), 4) * 3 / 4 + math.log(3) / 4
    np.testing.assert_allclose(value, expected, rtol=1e-5)  # the zero row: every logit 0
    g = gradient(lambda v: term(v, labels), x)
    assert np.all(np.isfinite(g)), g


@pytest.mark.parametrize("kwargs, match", [
    ({"sub_centers": 2}, "one weight vector per class"),
    ({"negative_threshold": 0.4}, "cosine of normalised class weights"),
    ({"multiplicative_margin": 1.5}, "multiplicative_margin"),
    ({"scale": 0.0}, "scale"),
])
def test_refused_arguments_say_why(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        lw.terms.LargeMarginSoftmax(3, **kwargs)


# ---------------------------------------------------------------- pytorch-metric-learning 2.9.0
@one_backend
@pytest.mark.parametrize("m, scale", [(1, 1.0), (2, 1.0), (3, 0.5), (4, 1.0), (4, 2.0)])
def test_equals_pml_value_and_input_gradient(m, scale):
    torch = pytest.importorskip("torch")
    losses = pytest.importorskip("pytorch_metric_learning.losses")
    torch.manual_seed(0)
    pml = losses.LargeMarginSoftmaxLoss(CLASSES, DIM, margin=m, scale=scale)
    with torch.no_grad():
        pml.W.copy_(torch.tensor(W.T))
    xt = torch.tensor(X, requires_grad=True)
    expected = pml(xt, torch.tensor(LABELS))
    expected.backward()
    expected = float(expected.detach())
    term = make(multiplicative_margin=m, scale=scale, base=0.0)
    assert expected > 0.0
    np.testing.assert_allclose(float(term(X, LABELS)), expected, rtol=1e-5)
    np.testing.assert_allclose(gradient(lambda v: term(v, LABELS), X), xt.grad.numpy(), rtol=1e-4, atol=1e-6)
