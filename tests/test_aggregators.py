"""Gradient aggregators (lossweave.ops.aggregators) against NumPy references.

MGDA: Sener & Koltun, NeurIPS 2018 (Eq. 3, Algorithms 1 and 2); PCGrad: Yu et
al., NeurIPS 2020 (Algorithm 1). The references below are written from the
papers, vector by vector where the paper is, in float64.
"""

import itertools

import keras
import numpy as np
import pytest

from aggregator_cases import gram, jacobian, np_min_norm
from conftest import BACKEND, one_backend, to_numpy
from lossweave.ops import aggregators as agg

RNG = np.random.default_rng(0)
CASES = ("conflicting", "aligned", "one_zero", "rank_deficient")


def _jacobian(case, k, params=8, rng=RNG):
    """A (K, params) float32 Jacobian of the named kind (aggregator_cases.jacobian, drawn in turn from RNG)."""
    if case == "rank_deficient":  # K > params and a duplicated row
        j = rng.normal(size=(k, 2))
        j[-1] = j[0]
        return j.astype("float32")
    return jacobian(case, k, params, rng=rng)


# --- NumPy references ----------------------------------------------------------


def np_segment(aa, ab, bb):
    """Algorithm 1 (Sener & Koltun): gamma minimising ||gamma a + (1 - gamma) b||^2."""
    if ab >= aa:
        return 1.0
    if ab >= bb:
        return 0.0
    return (bb - ab) / (aa + bb - 2.0 * ab)


def np_frank_wolfe(g, iterations, tolerance):
    """Algorithm 2's FRANKWOLFESOLVER, written from the paper."""
    k = len(g)
    alpha = np.full(k, 1.0 / k)
    for _ in range(iterations):
        t = int(np.argmin(g @ alpha))
        gamma = np_segment(g[t, t], alpha @ g[:, t], alpha @ g @ alpha)
        vertex = np.eye(k)[t]
        new = (1.0 - gamma) * alpha + gamma * vertex
        change = np.abs(new - alpha).sum()
        alpha = new
        if change < tolerance:
            break
    return alpha


def np_pcgrad(j, order):
    """PCGrad Algorithm 1 (Yu et al.), vector by vector, projections onto the original g_j."""
    j = j.astype("float64")
    projected = []
    for i in range(len(j)):
        g = j[i].copy()
        for other in order[i]:
            dot = g @ j[other]
            if dot < 0 and j[other] @ j[other] > 0:
                g = g - dot / (j[other] @ j[other]) * j[other]
        projected.append(g)
    return np.sum(projected, axis=0)


def _random_order(k, rng=RNG):
    return np.array([rng.permutation([o for o in range(k) if o != i]) for i in range(k)])


def _merge_duplicates(w, j):
    """Weights with each duplicated gradient's weight moved to its first copy.

    Which of two identical gradients a Frank-Wolfe step picks is a tie broken
    by rounding; the update does not depend on it.
    """
    w = np.array(w, "float64")
    for i in range(len(j)):
        for first in range(i):
            if np.array_equal(j[i], j[first]):
                w[first] += w[i]
                w[i] = 0.0
                break
    return w


def _assert_simplex(w):
    assert w.min() >= -1e-7 and abs(w.sum() - 1.0) < 1e-5, w


def _optimality_gap(w, g):
    """max_k (||d||^2 - d . g_k) / max_k ||g_k||^2 for d = w @ J (0 at the optimum)."""
    gw = g @ w
    return (w @ gw - gw.min()) / max(np.diag(g).max(), 1e-30)


# --- mean / total -------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 2, 4])
def test_mean_and_total(k):
    j = RNG.normal(size=(k, 5)).astype("float32")
    g = j @ j.T
    np.testing.assert_allclose(to_numpy(agg.mean_weights(g)), np.full(k, 1.0 / k), atol=1e-7)
    np.testing.assert_array_equal(to_numpy(agg.total_weights(g)), np.ones(k))
    np.testing.assert_allclose(to_numpy(agg.mean(j)), j.mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(to_numpy(agg.total(j)), j.sum(axis=0), atol=1e-5)


# --- MGDA ---------------------------------------------------------------------


@pytest.mark.parametrize("case", ["conflicting", "aligned", "one_zero", "rank_deficient"])
def test_mgda_two_terms_is_algorithm_1(case):
    j = _jacobian(case, 2, params=1 if case == "rank_deficient" else 8)
    if case == "rank_deficient":
        j[1] = -2.5 * j[0]  # collinear, opposite: the min-norm point is 0
    g1, g2 = j.astype("float64")
    diff = ((g1 - g2) ** 2).sum()
    gamma = np.clip(((g2 - g1) @ g2) / diff, 0.0, 1.0)  # Algorithm 1 in vector form
    w = to_numpy(agg.mgda_weights(j @ j.T))
    np.testing.assert_allclose(w, [gamma, 1.0 - gamma], atol=1e-5)
    best, _ = np_min_norm(gram(j))
    d = to_numpy(agg.mgda(j))
    assert abs((d.astype("float64") ** 2).sum() - best) <= 1e-5 * max(1.0, np.diag(gram(j)).max())
    np.testing.assert_allclose(d, w @ j, atol=1e-5)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("k", [3, 4, 6])
def test_mgda_frank_wolfe_matches_algorithm_2(case, k):
    # exact_max_k=2: Frank-Wolfe from K = 3. A short budget: the float32 and
    # float64 trajectories stay together (late Frank-Wolfe steps choose
    # between near-tied vertices).
    j = _jacobian(case, k)
    w = to_numpy(agg.mgda_weights(j @ j.T, iterations=30, exact_max_k=2))
    ref = np_frank_wolfe(gram(j), 30, 1e-5)
    np.testing.assert_allclose(_merge_duplicates(w, j), _merge_duplicates(ref, j), atol=1e-5)
    np.testing.assert_allclose(to_numpy(agg.mgda(j, iterations=30, exact_max_k=2)), w @ j, atol=1e-5)


def test_mgda_frank_wolfe_host_loop_equals_the_ops_loop(monkeypatch):
    # The two Frank-Wolfe loops (ops' while_loop; PyTorch's host loop on a float64 copy,
    # lossweave._backend.frank_wolfe_on_host) give the same weights on one K = 10 Gramian,
    # full budget: the ops loop is forced by taking the backend's fast path away.
    from lossweave import _backend
    from lossweave._backend._common import frank_wolfe_on_host
    from lossweave.ops.aggregators._common import REL_EPS

    j = _jacobian(CASES[0], 10, params=12, rng=np.random.default_rng(21))  # RNG's draws left to the others
    g = gram(j)
    host = frank_wolfe_on_host(g.astype("float64"), 250, 1e-5, REL_EPS)
    monkeypatch.setattr(_backend, "frank_wolfe", lambda *args: None)
    loop = to_numpy(agg.mgda_weights(g.astype("float32")))
    np.testing.assert_allclose(loop, host, atol=1e-5)
    assert np.abs(host - 0.1).max() > 1e-2  # not the start 1/K


@pytest.mark.parametrize("case", CASES)
def test_mgda_frank_wolfe_above_exact_max_k(case):
    # K = 10 > exact_max_k: the default path is Frank-Wolfe (on PyTorch the host's scalar
    # loop, lossweave._backend.frank_wolfe; elsewhere the compiled while_loop): Algorithm 2
    # step for step on a short budget, and within the documented gap on the full one.
    j = _jacobian(case, 10, params=12)
    g = gram(j)
    w = to_numpy(agg.mgda_weights(j @ j.T, iterations=30))
    np.testing.assert_allclose(_merge_duplicates(w, j), _merge_duplicates(np_frank_wolfe(g, 30, 1e-5), j), atol=1e-5)
    w = to_numpy(agg.mgda_weights(j @ j.T)).astype("float64")
    _assert_simplex(w)
    d = w @ j.astype("float64")
    assert np.all(j.astype("float64") @ d >= d @ d - 3.2e-3 * np.diag(g).max())


@pytest.mark.parametrize("case", CASES + ("duplicated",))
@pytest.mark.parametrize("k", [3, 4, 6])
def test_mgda_exact_solver_is_the_minimum(case, k):
    # 3 <= K <= 8: the faces of the simplex, exact up to float32.
    if case == "duplicated":
        j = _jacobian("conflicting", k)
        j[-1] = j[0]
    else:
        j = _jacobian(case, k)
    g = gram(j)
    best, ref = np_min_norm(g)
    w = to_numpy(agg.mgda_weights(j @ j.T)).astype("float64")
    _assert_simplex(w)
    d, d_ref = w @ j.astype("float64"), ref @ j.astype("float64")
    scale = np.diag(g).max()
    np.testing.assert_allclose(d, d_ref, atol=1e-5 * np.sqrt(scale))  # the min-norm point is unique
    assert abs(d @ d - best) <= 1e-6 * scale
    if case in ("conflicting", "aligned"):  # unique weights (linearly independent gradients)
        np.testing.assert_allclose(w, ref, atol=1e-5)
    if case == "duplicated":  # the two copies share their weight
        assert abs(w[0] - w[-1]) <= 1e-6, w
    # Agrees with Frank-Wolfe within its documented gap, and is closer to the minimum.
    fw = to_numpy(agg.mgda_weights(j @ j.T, exact_max_k=2)).astype("float64")
    assert d @ d <= fw @ g @ fw + 1e-6 * scale
    assert fw @ g @ fw - best <= 2.8e-3 * scale


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("k", [2, 3, 5])
def test_mgda_solution_is_optimal_within_documented_gap(case, k):
    j = _jacobian(case, k)
    g = gram(j)
    w = to_numpy(agg.mgda_weights(j @ j.T)).astype("float64")
    _assert_simplex(w)
    d = w @ j.astype("float64")
    scale = np.diag(g).max()
    tol = 1e-6 * scale  # closed form (K = 2) and faces (K <= 8)
    # The optimality condition of Eq. 3: d . g_k >= ||d||^2 for every k.
    assert np.all(j.astype("float64") @ d >= d @ d - tol)
    assert d @ d <= np_min_norm(g)[0] + tol
    if k > 2:  # Frank-Wolfe, within its documented gap
        w = to_numpy(agg.mgda_weights(j @ j.T, exact_max_k=2)).astype("float64")
        d = w @ j.astype("float64")
        assert np.all(j.astype("float64") @ d >= d @ d - 3.2e-3 * scale)


@one_backend  # the solver is the same keras.ops code on every backend; jitted here for speed
def test_mgda_documented_accuracy_on_random_gramians():
    import jax

    exact = jax.jit(agg.mgda_weights)
    frank_wolfe = jax.jit(lambda g: agg.mgda_weights(g, exact_max_k=2))
    rng = np.random.default_rng(1)
    for k in range(2, 9):
        gaps, excess, fw_gaps, fw_excess = [], [], [], []
        for params in (3, 10, 100) * 4:
            j = (rng.normal(size=(k, params)) * rng.uniform(0.1, 3.0, size=(k, 1))).astype("float32")
            if params == 3 and k > 3:  # a duplicated and a zero row
                j[1], j[2] = j[0], 0.0
            g = gram(j)
            best = np_min_norm(g)[0]
            for solve, gap, more in ((exact, gaps, excess), (frank_wolfe, fw_gaps, fw_excess)):
                w = np.asarray(solve(j @ j.T)).astype("float64")
                _assert_simplex(w)
                gap.append(_optimality_gap(w, g))
                more.append((w @ g @ w - best) / np.diag(g).max())
        # The docstring's numbers: 1e-7 for K = 2 (closed form), 3e-7 (gap) and
        # 2e-7 (excess) for K = 3..8 (faces); Frank-Wolfe <= 3.1e-3, 2.8e-3.
        assert max(gaps) <= (1e-7 if k == 2 else 3e-7), (k, max(gaps))
        assert max(excess) <= (1e-7 if k == 2 else 2e-7), (k, max(excess))
        assert max(fw_gaps) <= (1e-7 if k == 2 else 3.1e-3), (k, max(fw_gaps))
        assert max(fw_excess) <= (1e-7 if k == 2 else 2.8e-3), (k, max(fw_excess))


@pytest.mark.parametrize("k", [3, 4, 5])
def test_mgda_zero_gradient_takes_the_weight(k):
    j = _jacobian("one_zero", k, params=8)
    w = to_numpy(agg.mgda_weights(j @ j.T))
    assert w[k // 2] >= 1.0 - 1e-5, w
    np.testing.assert_allclose(to_numpy(agg.mgda(j)), 0.0, atol=1e-6)


@pytest.mark.parametrize("k", [2, 3, 4])
def test_mgda_identical_gradients(k):
    j = np.tile(RNG.normal(size=(1, 6)).astype("float32"), (k, 1))
    w = to_numpy(agg.mgda_weights(j @ j.T))
    np.testing.assert_allclose(w, np.full(k, 1.0 / k), atol=1e-6)
    np.testing.assert_allclose(to_numpy(agg.mgda(j)), j[0], atol=1e-5)


def test_mgda_all_zero_gradients_are_finite():
    for k in (2, 3):
        w = to_numpy(agg.mgda_weights(np.zeros((k, k), "float32")))
        assert np.all(np.isfinite(w))
        _assert_simplex(w)


@pytest.mark.parametrize("normalization", ["l2", "loss", "loss+"])
@pytest.mark.parametrize("k", [2, 3])
def test_mgda_normalizations_solve_on_normalized_gramian(normalization, k):
    j = _jacobian("conflicting", k)
    losses = RNG.uniform(0.5, 3.0, size=k).astype("float32")
    g = gram(j)
    norms = np.sqrt(np.diag(g))
    n = {"l2": norms, "loss": losses, "loss+": losses * norms}[normalization].astype("float64")
    np.testing.assert_allclose(
        to_numpy(agg.gradient_normalizers(j @ j.T, losses, normalization)), n, rtol=1e-5
    )
    gn = g / np.outer(n, n)
    ref = np_min_norm(gn)[1]  # closed form (K = 2) and faces (K = 3): exact
    w = to_numpy(agg.mgda_weights(j @ j.T, losses, normalization))
    np.testing.assert_allclose(w, ref, atol=1e-5)
    fw = to_numpy(agg.mgda_weights(j @ j.T, losses, normalization, iterations=30, exact_max_k=2))
    np.testing.assert_allclose(fw, np_frank_wolfe(gn, 30, 1e-5) if k > 2 else ref, atol=1e-5)
    # The authors apply the weights to the unnormalised losses: update = w @ J.
    update = to_numpy(agg.mgda(j, losses, normalization))
    np.testing.assert_allclose(update, w @ j, atol=1e-5)
    if k == 2:  # w / n applied to the raw gradients is the normalised problem's min-norm point
        d = (w / n) @ j.astype("float64")
        np.testing.assert_allclose(d @ d, np_min_norm(gn)[0], rtol=1e-5, atol=1e-6)


def test_mgda_l2_with_a_zero_gradient_and_nonpositive_losses():
    j = _jacobian("one_zero", 3)
    w = to_numpy(agg.mgda_weights(j @ j.T, normalization="l2"))
    assert np.all(np.isfinite(w)) and w[1] >= 1.0 - 1e-5, w
    n = to_numpy(agg.gradient_normalizers(j @ j.T, np.array([1.0, 0.0, -2.0]), "loss"))
    np.testing.assert_array_equal(n, [1.0, 1.0, 1.0])  # 0 and negative losses left unnormalised


def test_mgda_iteration_budget_and_tolerance():
    j = _jacobian("conflicting", 4)
    g = gram(j)
    for iterations, tolerance in [(0, 1e-5), (1, 1e-5), (7, 0.0), (250, 1e-2)]:
        w = to_numpy(agg.mgda_weights(j @ j.T, iterations=iterations, tolerance=tolerance, exact_max_k=2))
        np.testing.assert_allclose(w, np_frank_wolfe(g, iterations, tolerance), atol=1e-5)


# --- PCGrad -------------------------------------------------------------------


@pytest.mark.parametrize("conflict", [True, False])
def test_pcgrad_two_terms_closed_form(conflict):
    g1 = RNG.normal(size=6)
    g2 = RNG.normal(size=6)
    g2 = g2 - (g1 @ g2) / (g1 @ g1) * g1 + (-0.8 if conflict else 0.8) * g1
    j = np.stack([g1, g2]).astype("float32")
    g1, g2 = j.astype("float64")
    assert (g1 @ g2 < 0) == conflict
    if conflict:
        expected = g1 - (g1 @ g2) / (g2 @ g2) * g2 + g2 - (g2 @ g1) / (g1 @ g1) * g1
    else:
        expected = g1 + g2
    np.testing.assert_allclose(to_numpy(agg.pcgrad(j, seed=3)), expected, atol=1e-5)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("k", [3, 4, 5])
def test_pcgrad_fixed_order_matches_algorithm_1(case, k):
    j = _jacobian(case, k)
    order = _random_order(k)
    expected = np_pcgrad(j, order)
    np.testing.assert_allclose(to_numpy(agg.pcgrad(j, order=order)), expected, atol=1e-5)
    w = to_numpy(agg.pcgrad_weights(j @ j.T, order=order))
    assert np.all(np.isfinite(w))
    np.testing.assert_allclose(w @ j.astype("float64"), expected, atol=1e-5)


def test_pcgrad_order_matters_and_seeded_draws_are_valid_orders():
    k = 3
    j = np.array([[1.0, 0.0, 0.0], [-0.6, 1.0, 0.0], [-0.5, -0.7, 1.0]], "float32")
    orders = [np.array(rows) for rows in itertools.product(*[list(itertools.permutations([o for o in range(k) if o != i])) for i in range(k)])]
    candidates = np.array([np_pcgrad(j, o) for o in orders])
    assert np.abs(candidates - candidates[0]).max() > 1e-3  # the order changes the result
    results = []
    for seed in range(8):
        got = to_numpy(agg.pcgrad(j, seed=seed)).astype("float64")
        assert np.abs(candidates - got).max(axis=1).min() < 1e-5  # PCGrad for one valid order
        results.append(got)
    assert len({tuple(np.round(r, 4)) for r in results}) > 1  # the draw depends on the seed


def test_pcgrad_seed_is_reproducible():
    j = _jacobian("conflicting", 5)
    g = j @ j.T
    np.testing.assert_array_equal(to_numpy(agg.pcgrad_weights(g, seed=11)), to_numpy(agg.pcgrad_weights(g, seed=11)))
    runs = []
    for _ in range(2):
        generator = keras.random.SeedGenerator(42)
        runs.append([to_numpy(agg.pcgrad_weights(g, seed=generator)) for _ in range(4)])
    np.testing.assert_array_equal(np.array(runs[0]), np.array(runs[1]))
    # A SeedGenerator advances: successive steps draw fresh orders.
    assert len({tuple(np.round(w, 5)) for w in runs[0]}) > 1


def test_pcgrad_single_term_and_zero_gradients():
    np.testing.assert_array_equal(to_numpy(agg.pcgrad_weights([[4.0]], seed=0)), [1.0])
    np.testing.assert_array_equal(to_numpy(agg.mgda_weights([[4.0]])), [1.0])
    w = to_numpy(agg.pcgrad_weights(np.zeros((3, 3), "float32"), seed=0))
    np.testing.assert_array_equal(w, np.ones(3))


# --- every aggregator: dtypes, compiled steps, errors ---------------------------


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision_jacobian_gives_float32(dtype):
    j = keras.ops.cast(_jacobian("conflicting", 3), dtype)
    exact = keras.ops.cast(j, "float32")
    order = _random_order(3)
    for fn, kwargs in [(agg.mean, {}), (agg.mgda, {"iterations": 30}), (agg.pcgrad, {"order": order})]:
        got = fn(j, **kwargs)
        assert keras.backend.standardize_dtype(got.dtype) == "float32"
        np.testing.assert_allclose(to_numpy(got), to_numpy(fn(exact, **kwargs)), atol=1e-5)


def _compiled_cases():
    """A Jacobian with a zero row, and the aggregators a compiled step would call."""
    j = _jacobian("one_zero", 4)
    losses = np.array([1.0, 2.0, 0.5, 1.5], "float32")
    return j, [
        lambda x: agg.mgda(x),
        lambda x: agg.mgda(x, losses, "loss+"),
        lambda x: agg.pcgrad(x, seed=5),
    ]


@pytest.mark.skipif(BACKEND != "jax", reason="jax.jit")
def test_finite_under_jax_jit():
    import jax

    j, cases = _compiled_cases()
    for fn in cases:
        got = np.asarray(jax.jit(fn)(j))
        assert np.all(np.isfinite(got))
        np.testing.assert_allclose(got, to_numpy(fn(j)), atol=1e-5)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="tf.function(jit_compile=True)")
def test_finite_under_tf_function_xla():
    import tensorflow as tf

    j, cases = _compiled_cases()
    for fn in cases:
        got = tf.function(fn, jit_compile=True)(tf.constant(j)).numpy()
        assert np.all(np.isfinite(got))
        np.testing.assert_allclose(got, to_numpy(fn(j)), atol=1e-5)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: agg.mgda_weights(np.zeros((3, 2))), "expected a square"),
        (lambda: agg.mean(np.zeros(3)), "expected a 2-D"),
        (lambda: agg.mgda_weights(np.eye(2), normalization="L2"), r"`normalization` must be one of \('none', 'l2', 'loss', 'loss\+'\); received 'L2'"),
        (lambda: agg.mgda_weights(np.eye(2), normalization="loss"), "received losses=None"),
        (lambda: agg.mgda_weights(np.eye(2), np.ones(3), "loss"), r"shape \(2,\)"),
        (lambda: agg.mgda_weights(np.eye(3), iterations=-1), "MGDA: `iterations` must be an int >= 0; received -1"),
        (lambda: agg.mgda_weights(np.eye(3), exact_max_k=13), "MGDA: `exact_max_k` must be an int >= 2 and <= 12; received 13"),
        (lambda: agg.pcgrad_weights(np.eye(3)), "expected exactly one"),
        (lambda: agg.pcgrad_weights(np.eye(3), seed=1, order=[[1, 2], [0, 2], [0, 1]]), "expected exactly one"),
        (lambda: agg.pcgrad_weights(np.eye(3), order=[[1, 2], [0, 2]]), "expected K = 3 rows"),
        (lambda: agg.pcgrad_weights(np.eye(3), order=[[1, 2], [1, 2], [0, 1]]), r"row 1 is not"),
    ],
)
def test_errors_say_what_was_received_and_expected(call, message):
    with pytest.raises(ValueError, match=message):
        call()
