"""CAGrad (lossweave.ops.aggregators.cagrad, lossweave.weighting.CAGrad) against the paper.

Liu, Liu, Jin, Stone & Liu, "Conflict-Averse Gradient Descent for Multi-task
Learning", NeurIPS 2021, Sec. 3.1 and Algorithm 1. The reference solves the
paper's dual over the simplex with scipy's SLSQP, as the authors' code does
every step (float64, a tight tolerance, started from 1/K and near every
vertex), and forms the update from the gradient vectors; the primal problem
(the ball around the mean gradient) checks the result independently.
"""

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize

import lossweave as lw
from aggregator_cases import case_rng, head_data, head_objective, jacobian, np_head_gradients
from conftest import BACKEND, to_numpy
from lossweave.ops import aggregators as agg

CASES = ("conflicting", "aligned", "one_zero", "duplicated", "rank_deficient")
# Measured over K = 2..8, c in {0.2, 0.5, 0.9} and these cases: <= 5e-6 of max |J| (the docstring).
ATOL = 1e-5


def _weights(gramian, c=0.5, rescale=0):
    return to_numpy(agg.cagrad_weights(gramian, c=c, rescale=rescale))


def _update(jacobian, c=0.5, rescale=0):
    return to_numpy(agg.cagrad(jacobian, c=c, rescale=rescale))


def _jacobian(case, k, params=8, seed=0):
    """A (K, params) float32 Jacobian of the named kind (aggregator_cases.jacobian), one generator per case."""
    rng = case_rng(case, k, seed, CASES)
    if case == "rank_deficient":  # K > params, and a duplicated row
        j = rng.normal(size=(k, 2)) * rng.uniform(0.3, 2.0, size=(k, 1))
        j[-1] = j[0]
        return j.astype("float32")
    return jacobian(case, k, params, rng=rng)


# --- NumPy references (float64) ---------------------------------------------------


def np_dual_weights(g, c):
    """w* = argmin_w g_w . g_0 + sqrt(phi) ||g_w|| over the simplex (Sec. 3.1), by SLSQP."""
    k = len(g)
    a = g.mean(axis=1)  # a_i = g_i . g_0
    root_phi = c * np.sqrt(max(a.mean(), 0.0))

    def f(w):
        return a @ w + root_phi * np.sqrt(max(w @ g @ w, 0.0) + 1e-30)

    best = None
    for start in [np.full(k, 1.0 / k)] + list(0.9 * np.eye(k) + 0.1 / k):
        result = minimize(
            f, start, bounds=[(0.0, 1.0)] * k, method="SLSQP",
            constraints=({"type": "eq", "fun": lambda w: 1.0 - w.sum()},),
            options={"ftol": 1e-15, "maxiter": 1000},
        )
        if best is None or result.fun < best.fun:
            best = result
    return best.x


def np_cagrad(j, c=0.5, rescale=0):
    """Algorithm 1: d = g_0 + sqrt(phi) / ||g_w*|| g_w*, from the gradient vectors."""
    j = j.astype("float64")
    g0 = j.mean(axis=0)
    root_phi = c * np.linalg.norm(g0)
    gw = np_dual_weights(j @ j.T, c) @ j
    norm = np.linalg.norm(gw)
    # g_w* = 0 (||g_w*|| <= 1e-3 max ||g_k||): the direction is undefined, the update is g_0.
    if root_phi == 0 or norm <= 1e-3 * np.linalg.norm(j, axis=1).max():
        d = g0
    else:
        d = g0 + root_phi / norm * gw
    return d / {0: 1.0, 1: 1.0 + c * c, 2: 1.0 + c}[rescale]


def _scale(j):
    return max(float(np.abs(j).max()), 1e-30)


# --- the update equals the paper's ----------------------------------------------


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("k", [2, 3, 6])  # few shapes: eager JAX compiles every op once per shape
def test_update_matches_slsqp_reference(case, k):
    j = _jacobian(case, k)
    for c in (0.2, 0.5, 0.9):
        expected = np_cagrad(j, c)
        got = _update(j, c=c).astype("float64")
        assert np.abs(got - expected).max() <= ATOL * _scale(j), (c, got, expected)
        w = _weights(j @ j.T, c=c)
        assert w.dtype == np.float32 and np.all(np.isfinite(w)) and np.all(w > 0)
        np.testing.assert_allclose(w @ j.astype("float64"), got, atol=1e-5 * _scale(j))


@pytest.mark.parametrize("case", ["conflicting", "aligned", "duplicated"])
def test_update_solves_the_primal_problem(case):
    """Sec. 3.1's primal: max_d min_k g_k . d over ||d - g_0|| <= c ||g_0||."""
    j = _jacobian(case, 3).astype("float64")
    g0 = j.mean(axis=0)
    for c in (0.3, 0.6):
        d = _update(j.astype("float32"), c=c).astype("float64")
        radius = c * np.linalg.norm(g0)
        assert np.linalg.norm(d - g0) <= radius * (1 + 1e-5)  # feasible: on the ball
        # Optimal: no feasible direction improves the worst term (strong duality: the
        # primal value equals the dual's F(w*)), and the mean itself is feasible.
        w = np_dual_weights(j @ j.T, c)
        dual = (j @ g0) @ w + radius * np.linalg.norm(w @ j)
        assert (j @ d).min() == pytest.approx(dual, abs=1e-5 * _scale(j) ** 2)
        assert (j @ d).min() >= (j @ g0).min() - 1e-6


@pytest.mark.parametrize("rescale, factor", [(0, 1.0), (1, 1.25), (2, 1.5)])
def test_rescale_options_of_the_authors(rescale, factor):
    j = _jacobian("conflicting", 3)
    base = _weights(j @ j.T, c=0.5)
    np.testing.assert_allclose(_weights(j @ j.T, c=0.5, rescale=rescale), base / factor, rtol=1e-6)
    np.testing.assert_allclose(_update(j, 0.5, rescale), np_cagrad(j, 0.5, rescale), atol=ATOL * _scale(j))


def test_torchjd_example_and_special_cases():
    # torchjd's documented CAGrad(c=0.5) value on J = [[-4, 1, 1], [6, 1, 1]].
    torchjd = np.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]], "float32")
    np.testing.assert_allclose(_update(torchjd), [0.1835, 1.2041, 1.2041], atol=1e-4)
    j = _jacobian("conflicting", 3)
    np.testing.assert_allclose(_weights(j @ j.T, c=0.0), np.full(3, 1 / 3), atol=1e-7)  # c = 0: GD
    # One term: g_0 = g_1 = g_w, the update is (1 + c) g_1.
    np.testing.assert_allclose(_weights(np.array([[9.0]], "float32"), c=0.5), [1.5], rtol=1e-6)
    # Identical gradients: every w is optimal and the update is (1 + c) g.
    same = np.tile(j[:1], (3, 1))
    np.testing.assert_allclose(_update(same, c=0.4), 1.4 * same[0], atol=1e-5 * _scale(same))


def test_degenerate_gramians_give_finite_weights():
    for g in (np.zeros((3, 3), "float32"), np.full((2, 2), 1e-30, "float32")):
        w = _weights(g)
        assert np.all(np.isfinite(w)), w
    # A zero gradient and others that agree with g_0: F's minimum is g_w = 0, the update is g_0.
    j = np.array([[1.0, 0.2, 0.0], [0.8, -0.1, 0.3], [0.0, 0.0, 0.0]], "float32")
    np.testing.assert_allclose(_update(j, c=0.5), j.mean(axis=0), atol=1e-6)
    # g_0 = 0 (opposite gradients): the update is 0.
    np.testing.assert_allclose(_update(np.array([[1.0, 2.0], [-1.0, -2.0]], "float32")), [0.0, 0.0], atol=1e-7)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision_jacobian_gives_float32(dtype):
    j = keras.ops.cast(_jacobian("conflicting", 3), dtype)
    got = agg.cagrad(j)
    assert keras.backend.standardize_dtype(got.dtype) == "float32"
    np.testing.assert_allclose(to_numpy(got), to_numpy(agg.cagrad(keras.ops.cast(j, "float32"))), atol=1e-6)


@settings(max_examples=8, deadline=None)
@given(
    k=st.sampled_from([2, 3, 6]),
    seed=st.integers(0, 2**31 - 1),
    c=st.sampled_from([0.1, 0.5, 0.9]),  # few values: each compiles once
    scale=st.sampled_from([1e-3, 1.0, 1e3]),
)
def test_properties_of_the_update(k, seed, c, scale):
    """On the ball (Sec. 3.1), never worse than the mean for the worst term, equivariant."""
    rng = np.random.default_rng(seed)
    j = (rng.normal(size=(k, 5)) * scale).astype("float32")
    d = _update(j, c=c).astype("float64")
    j64 = j.astype("float64")
    g0 = j64.mean(axis=0)
    size = np.abs(j64).max()
    assert np.linalg.norm(d - g0) <= c * np.linalg.norm(g0) + 1e-5 * size
    assert (j64 @ d).min() >= (j64 @ g0).min() - 1e-5 * size**2
    order = rng.permutation(k)
    np.testing.assert_allclose(_update(j[order], c=c), d, atol=2e-5 * size)
    # Positively homogeneous: scaling every gradient scales the update.
    np.testing.assert_allclose(_update(2.0 * j, c=c), 2.0 * d, atol=4e-5 * size)


# --- compiled steps ------------------------------------------------------------


def _compiled_case():
    j = _jacobian("one_zero", 3)
    return j, lambda x: agg.cagrad(x, c=0.5, rescale=1)


@pytest.mark.skipif(BACKEND != "jax", reason="jax.jit")
def test_same_under_jax_jit():
    import jax

    j, fn = _compiled_case()
    np.testing.assert_allclose(np.asarray(jax.jit(fn)(j)), to_numpy(fn(j)), atol=1e-6)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="tf.function(jit_compile=True)")
def test_same_under_tf_function_xla():
    import tensorflow as tf

    j, fn = _compiled_case()
    for compiled in (tf.function(fn), tf.function(fn, jit_compile=True)):
        np.testing.assert_allclose(compiled(tf.constant(j)).numpy(), to_numpy(fn(j)), atol=1e-6)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: agg.cagrad_weights(np.eye(2), c=-0.1), "CAGrad: `c` must be a number >= 0; received -0.1"),
        (lambda: agg.cagrad_weights(np.eye(2), rescale=3), r"CAGrad: `rescale` must be one of \(0, 1, 2\); received 3"),
        (lambda: agg.cagrad_weights(np.eye(13)), "at most K = 12"),
        (lambda: agg.cagrad_weights(np.zeros((2, 3))), "expected a square"),
        (lambda: lw.weighting.CAGrad(c=float("nan")), "finite number"),
        (lambda: lw.weighting.CAGrad(rescale=True), r"`rescale` must be one of \(0, 1, 2\); received True"),
        (lambda: lw.weighting.CAGrad().setup([f"t{i}" for i in range(13)]), "received 13 terms"),
    ],
)
def test_errors_say_what_was_received_and_expected(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# --- the strategy in fit -----------------------------------------------------------

CLASSES, FEATURES, BATCH = 3, 5, 16


def _objective(heads, weighting):
    return head_objective(weighting, heads, features=FEATURES, classes=CLASSES, width=6, representation=True)


def _data(heads, rows=BATCH, seed=0):
    return head_data(heads, rows, features=FEATURES, classes=CLASSES, seed=seed)


def test_fit_logs_the_reference_weights():
    heads = 3
    x, y = _data(heads)
    objective = _objective(heads, lw.weighting.CAGrad(c=0.4, rescale=1))
    rows = np_head_gradients(objective, x, y, heads)
    logs = objective.train_on_batch(x, y, return_dict=True)
    got = np.array([logs[f"weight/task_{k}"] for k in range(heads)])
    expected_update = np_cagrad(rows, c=0.4, rescale=1)
    np.testing.assert_allclose(got @ rows, expected_update, atol=1e-4 * np.abs(rows).max())
    history = objective.fit(x, y, batch_size=BATCH, epochs=3, verbose=0).history  # no new trace
    assert all(np.isfinite(history[f"weight/task_{k}"]).all() for k in range(heads))
    assert all(np.all(np.isfinite(to_numpy(v))) for v in objective.weights)
