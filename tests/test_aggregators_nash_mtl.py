"""Nash-MTL (lossweave.ops.aggregators.nash_mtl, lossweave.weighting.NashMTL) against the paper.

Navon et al., "Multi-Task Learning as a Bargaining Game", ICML 2022. The
reference is the paper's sequence of convex problems (Sec. 3.2, the authors'
``NashMTL.solve_optimization``): linearise ``phi(alpha) = sum_i log alpha_i +
log (G alpha)_i`` at the previous alpha, minimise ``sum_i (G alpha)_i`` plus
the linearisation subject to ``log alpha_i + log (G alpha)_i >= 0``, repeat.
Each convex problem is solved here in float64 by a log-barrier Newton method
(the authors use cvxpy/ECOS, which is not installed), started from a strictly
feasible point that a linear program finds (it exists exactly when the
bargaining problem has a solution).
"""

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linprog

import lossweave as lw
from aggregator_cases import case_rng, head_data, head_objective, jacobian, np_head_gradients
from conftest import BACKEND, to_numpy
from lossweave.ops import aggregators as agg

CASES = ("conflicting", "aligned", "duplicated", "scaled")
# Measured on the cases below with the default 20 Newton steps: <= 1.6e-6 of max alpha.
RTOL = 1e-5


def _jacobian(case, k, params=8, seed=0):
    """A (K, params) float32 Jacobian whose bargaining problem has a solution (aggregator_cases.jacobian)."""
    return jacobian(case, k, params, rng=case_rng(case, k, seed, CASES))


# --- NumPy/scipy reference: the paper's sequence of convex problems (float64) --------


def np_feasible_point(g):
    """A strictly feasible alpha (alpha_i (G alpha)_i > 1), or None when there is none."""
    k = len(g)
    lp = linprog(np.ones(k), A_ub=-g, b_ub=-np.ones(k), bounds=[(1e-3, None)] * k, method="highs")
    if lp.status != 0:
        return None
    alpha = lp.x
    return 1.01 * alpha * max(1.0, np.sqrt(1.0 / np.min(alpha * (g @ alpha))))


def np_convex_problem(cost, g, start):
    """min cost . alpha s.t. log alpha_i + log (G alpha)_i >= 0, by a log-barrier method."""
    k = len(g)
    alpha, t = start.copy(), 1.0

    def barrier(a):
        return t * (cost @ a) - np.sum(np.log(np.log(a) + np.log(g @ a)))

    def inside(a):
        return np.all(a > 0) and np.all(g @ a > 0) and np.all(np.log(a) + np.log(g @ a) > 0)

    while k / t > 1e-12:
        for _ in range(100):
            ga = g @ alpha
            h = np.log(alpha) + np.log(ga)
            dh = np.diag(1.0 / alpha) + g / ga[:, None]  # row i: the gradient of h_i
            grad = t * cost - (dh / h[:, None]).sum(axis=0)
            # sum_i (dh_i dh_i^T / h_i^2 - d2h_i / h_i), d2h_i = -e_i e_i^T / alpha_i^2 - g_i g_i^T / (G alpha)_i^2
            hess = (dh / h[:, None]).T @ (dh / h[:, None])
            hess += np.diag(1.0 / (h * alpha**2)) + (g / (h * ga**2)[:, None]).T @ g
            step = np.linalg.lstsq(hess, grad, rcond=None)[0]
            decrement = grad @ step
            if decrement < 1e-14:
                break
            size, before = 1.0, barrier(alpha)  # backtracking (Armijo) inside the feasible set
            while size > 1e-20 and not (
                inside(alpha - size * step) and barrier(alpha - size * step) <= before - 0.25 * size * decrement
            ):
                size *= 0.5
            alpha = alpha - size * step
        t *= 100.0
    return alpha


def np_nash_ccp(g, iterations=20):
    """The paper's sequence of convex problems on the Gramian normalised by its norm, as the authors."""
    norm = np.linalg.norm(g)
    gn = g / norm
    alpha = np_feasible_point(g)
    if alpha is None:
        return None
    for _ in range(iterations):
        slope = 1.0 / alpha + (1.0 / (gn @ alpha)) @ gn  # d phi / d alpha at the previous alpha
        new = np_convex_problem(gn.sum(axis=0) + slope / norm, g, alpha)
        done = np.linalg.norm(new - alpha) < 1e-10
        alpha = new
        if done:
            break
    return alpha


def np_clip(g, weights, max_norm):
    """torch.nn.utils.clip_grad_norm_ on the update w @ J, from the Gramian."""
    norm = np.sqrt(weights @ g @ weights)
    return weights * min(1.0, max_norm / (norm + 1e-6))


# --- the solver equals the paper's sequence of convex problems ------------------------


@pytest.mark.parametrize("case", ["conflicting", "aligned", "duplicated"])
@pytest.mark.parametrize("k", [2, 3, 6])  # few shapes: eager JAX compiles every op once per shape
def test_weights_match_the_papers_convex_problems(case, k):
    j = _jacobian(case, k)
    g = j.astype("float64") @ j.T.astype("float64")
    expected = np_nash_ccp(g)
    assert expected is not None
    result, solved = agg.nash_mtl_solve(j @ j.T)
    assert keras.backend.standardize_dtype(result.dtype) == "float32" and bool(to_numpy(solved))
    alpha = to_numpy(result).astype("float64")
    assert np.abs(alpha - expected).max() <= RTOL * expected.max(), (alpha, expected)
    # The bargaining equations themselves: alpha_i g_i . d = 1 for d = alpha @ J.
    np.testing.assert_allclose(alpha * (g @ alpha), 1.0, atol=2e-4)
    if case == "duplicated":  # equal gradients, equal weights
        assert alpha[0] == pytest.approx(alpha[-1], rel=1e-4)
    got = to_numpy(agg.nash_mtl_weights(j @ j.T, max_norm=0.3))
    np.testing.assert_allclose(got, np_clip(g, expected, 0.3), rtol=2 * RTOL, atol=0)
    update = to_numpy(agg.nash_mtl(j)).astype("float64")
    np.testing.assert_allclose(update, np_clip(g, expected, 1.0) @ j, atol=1e-4 * np.abs(j).max())
    assert np.linalg.norm(update) == pytest.approx(1.0, rel=1e-4)  # ||alpha @ J|| = sqrt(K) > 1: clipped


def test_where_the_papers_relaxation_leaves_a_constraint_slack_the_equations_hold():
    """Sec. 3.2's problem is a relaxation: its minimiser need not be the bargaining solution.

    Here (two conflicting gradients of norms 12 and 0.15) the sequence of
    convex problems settles where task 2's constraint alpha_2 (G alpha)_2 >= 1
    is slack (~8.3), a point with a lower relaxed objective than the
    bargaining solution, which the solver returns (G alpha = 1 / alpha).
    """
    j = np.array([[12.0, 0.0], [-0.12, 0.09]], "float32")
    g = j.astype("float64") @ j.T.astype("float64")
    relaxed = np_nash_ccp(g)
    alpha = to_numpy(agg.nash_mtl_solve(j @ j.T)[0]).astype("float64")
    np.testing.assert_allclose(alpha * (g @ alpha), 1.0, atol=1e-5)
    assert (relaxed * (g @ relaxed))[1] > 2.0  # slack: not a bargaining solution

    def relaxation(a):  # sum_i beta_i + phi(alpha), the objective of Sec. 3.2
        return (g @ a).sum() + np.sum(np.log(a) + np.log(g @ a))

    def strictly_convex(a):  # the objective whose unique minimiser solves G alpha = 1 / alpha
        return 0.5 * a @ g @ a - np.log(a).sum()

    assert relaxation(relaxed) < relaxation(alpha) and strictly_convex(alpha) < strictly_convex(relaxed)


@pytest.mark.parametrize(
    "name, j",
    [
        ("zero gradient", np.array([[1.0, 0.5], [0.0, 0.0], [-0.3, 1.0]], "float32")),
        ("opposite gradients", np.array([[1.0, 2.0, 0.0], [-2.0, -4.0, 0.0]], "float32")),
        ("0 in the convex hull", np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.5]], "float32")),
        ("all zero", np.zeros((2, 3), "float32")),
    ],
)
def test_no_solution_falls_back_to_the_start(name, j):
    g = j.astype("float64") @ j.T.astype("float64")
    assert np_feasible_point(g) is None  # the convex problems are infeasible
    start = np.linspace(0.5, 1.5, len(j)).astype("float32")
    alpha, solved = agg.nash_mtl_solve(j @ j.T, start=start)
    assert not bool(to_numpy(solved)), name
    np.testing.assert_array_equal(to_numpy(alpha), start)
    weights = to_numpy(agg.nash_mtl_weights(j @ j.T))  # no start: the authors' ones, clipped
    assert np.all(np.isfinite(weights))
    np.testing.assert_allclose(weights, np_clip(g, np.ones(len(j)), 1.0), rtol=1e-5)


def test_one_term_and_the_iteration_budget():
    alpha, solved = agg.nash_mtl_solve([[16.0]])
    np.testing.assert_allclose(to_numpy(alpha), [0.25], rtol=1e-6)  # alpha = 1 / ||g||
    assert bool(to_numpy(solved))
    j = _jacobian("scaled", 3)
    start = np.ones(3, "float32")
    unsolved, solved = agg.nash_mtl_solve(j @ j.T, start=start, iterations=0)
    assert not bool(to_numpy(solved))  # no step taken: the start along its best ray is not a solution
    np.testing.assert_array_equal(to_numpy(unsolved), start)
    warm, solved = agg.nash_mtl_solve(j @ j.T, start=to_numpy(agg.nash_mtl_solve(j @ j.T)[0]), iterations=1)
    assert bool(to_numpy(solved))  # from the solution, one step keeps it


@settings(max_examples=6, deadline=None)
@given(k=st.sampled_from([2, 3, 6]), seed=st.integers(0, 2**31 - 1), scale=st.sampled_from([1e-2, 1.0, 1e2]))
def test_properties_of_the_bargaining_solution(k, seed, scale):
    """alpha_i g_i . d = 1; alpha(s^2 G) = alpha(G) / s; the terms' order does not matter."""
    rng = np.random.default_rng(seed)
    j = rng.normal(size=(k, 8)).astype("float32")
    g = j.astype("float64") @ j.T.astype("float64")
    alpha, solved = agg.nash_mtl_solve(j @ j.T)
    alpha = to_numpy(alpha).astype("float64")
    assert bool(to_numpy(solved))  # k <= 8 random gradients in 8-D: 0 is not in their hull (Wendel)
    np.testing.assert_allclose(alpha * (g @ alpha), 1.0, atol=1e-3)
    scaled = scale * j
    np.testing.assert_allclose(to_numpy(agg.nash_mtl_solve(scaled @ scaled.T)[0]) * scale, alpha, rtol=1e-4)
    order = rng.permutation(k)
    np.testing.assert_allclose(to_numpy(agg.nash_mtl_solve(j[order] @ j[order].T)[0]), alpha[order], rtol=1e-4)


def test_clip_to_max_norm_is_torchs_clip_grad_norm():
    j = _jacobian("conflicting", 3)
    g = j.astype("float64") @ j.T.astype("float64")
    w = np.array([0.2, 1.5, 0.7], "float32")
    for max_norm in (0.1, 1.0, 1e3):
        got = to_numpy(agg.clip_to_max_norm(j @ j.T, w, max_norm))
        np.testing.assert_allclose(got, np_clip(g, w.astype("float64"), max_norm), rtol=1e-5)
    np.testing.assert_array_equal(to_numpy(agg.clip_to_max_norm(j @ j.T, w, 0.0)), w)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision_jacobian_gives_float32(dtype):
    j = keras.ops.cast(_jacobian("conflicting", 3), dtype)
    got = agg.nash_mtl(j)
    assert keras.backend.standardize_dtype(got.dtype) == "float32"
    np.testing.assert_allclose(to_numpy(got), to_numpy(agg.nash_mtl(keras.ops.cast(j, "float32"))), atol=1e-5)


def _compiled_cases():
    j = _jacobian("scaled", 3)
    zero = j.copy()
    zero[2] = 0.0
    return [j, zero], lambda x: agg.nash_mtl(x, start=np.full(3, 0.5, "float32"), max_norm=2.0)


@pytest.mark.skipif(BACKEND != "jax", reason="jax.jit")
def test_same_under_jax_jit():
    import jax

    cases, fn = _compiled_cases()
    for j in cases:
        np.testing.assert_allclose(np.asarray(jax.jit(fn)(j)), to_numpy(fn(j)), rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="tf.function(jit_compile=True)")
def test_same_under_tf_function_xla():
    import tensorflow as tf

    cases, fn = _compiled_cases()
    for j in cases:
        for compiled in (tf.function(fn), tf.function(fn, jit_compile=True)):
            np.testing.assert_allclose(compiled(tf.constant(j)).numpy(), to_numpy(fn(j)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: agg.nash_mtl_solve(np.eye(2), iterations=-1), "NashMTL: `iterations` must be an int >= 0; received -1"),
        (lambda: agg.nash_mtl_solve(np.eye(2), start=np.ones(3)), r"expected \(2,\)"),
        (lambda: agg.nash_mtl_weights(np.eye(2), max_norm=-1.0), "NashMTL: `max_norm` must be a number >= 0; received -1.0"),
        (lambda: agg.nash_mtl_solve(np.zeros((2, 3))), "expected a square"),
        (lambda: lw.weighting.NashMTL(update_weights_every=0), "`update_weights_every` must be an int >= 1"),
        (lambda: lw.weighting.NashMTL(iterations=2.5), "`iterations` must be an int >= 1"),
        (lambda: lw.weighting.NashMTL(max_norm=-1), "NashMTL: `max_norm` must be a number >= 0; received -1"),
    ],
)
def test_errors_say_what_was_received_and_expected(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# --- the strategy: state between updates, fit, save and load ------------------------


def test_weights_are_recomputed_every_n_steps_and_kept_in_between():
    weighting = lw.weighting.NashMTL(update_weights_every=3, max_norm=0.5)
    weighting.setup(["a", "b", "c"])
    gramians = []
    for seed in range(5):
        j = _jacobian("conflicting", 3, seed=seed)
        gramians.append(j @ j.T)
    alpha = np.ones(3)
    for step, g in enumerate(gramians):
        got = to_numpy(weighting.aggregate(g, None, np.int32(step), True))
        if step % 3 == 0:
            alpha = np_nash_ccp(g.astype("float64"))
        np.testing.assert_allclose(to_numpy(weighting.alpha), alpha, rtol=RTOL)
        np.testing.assert_allclose(got, np_clip(g.astype("float64"), alpha, 0.5), rtol=2 * RTOL)
    kept = to_numpy(weighting.alpha).copy()
    weighting.aggregate(gramians[0], None, np.int32(6), False)  # evaluation: no state moves
    np.testing.assert_array_equal(to_numpy(weighting.alpha), kept)


CLASSES, FEATURES, BATCH = 3, 5, 16


def _objective(weighting, heads=3):
    return head_objective(weighting, heads, features=FEATURES, classes=CLASSES, width=6, representation=True,
                          seed=3, optimizer=keras.optimizers.Adam(0.01))


def _data(heads=3, rows=BATCH, seed=0):
    return head_data(heads, rows, features=FEATURES, classes=CLASSES, seed=seed)


def test_fit_logs_the_reference_weights():
    x, y = _data()
    objective = _objective(lw.weighting.NashMTL())
    rows = np_head_gradients(objective, x, y, 3)
    g = rows @ rows.T
    logs = objective.train_on_batch(x, y, return_dict=True)
    got = np.array([logs[f"weight/task_{k}"] for k in range(3)])
    expected = np_nash_ccp(g)
    np.testing.assert_allclose(got, np_clip(g, expected, 1.0), rtol=1e-4)
    np.testing.assert_allclose(to_numpy(objective.weighting.alpha), expected, rtol=1e-4)
    history = objective.fit(x, y, batch_size=BATCH, epochs=3, verbose=0).history  # no new trace
    assert all(np.isfinite(history[f"weight/task_{k}"]).all() for k in range(3))
    assert all(np.all(np.isfinite(to_numpy(v))) for v in objective.weights)


def test_save_load_and_continue_is_straight_through(tmp_path):
    x, y = _data(rows=64)

    def make():
        return _objective(lw.weighting.NashMTL(update_weights_every=3, max_norm=0.5, iterations=15))

    def state(objective):
        return [to_numpy(v).astype("float64") for v in objective.weights]

    # Straight through: one objective saved after epoch 1 goes on; the reloaded one must end where it does.
    straight = make()
    straight.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    path = str(tmp_path / "nash.keras")
    straight.save(path)
    saved = to_numpy(straight.weighting.alpha).copy()
    straight.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    resumed = keras.saving.load_model(path)
    config = resumed.weighting.get_config()
    assert (config["update_weights_every"], config["max_norm"], config["iterations"]) == (3, 0.5, 15)
    np.testing.assert_array_equal(to_numpy(resumed.weighting.alpha), saved)
    resumed.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    assert max(np.abs(a - b).max() for a, b in zip(state(resumed), state(straight))) <= 1e-5
    # Not vacuous: steps 4 and 5 (solves at 0, 3 and 6; 4 batches an epoch) use the saved alpha,
    # and it is not the initial ones' direction (the clipping would hide a scale).
    assert saved.max() / saved.min() > 1.05
