"""IMTL-G, Aligned-MTL and ConFIG (lossweave.ops.aggregators, lossweave.weighting) against NumPy references.

IMTL-G: Liu et al., ICLR 2021, Sec. 3.2 (the closed form alpha_{2:K} =
g_1 U^T (D U^T)^{-1}), and for degenerate gradients the pseudo-inverse form
of Quinton & Rey 2024. Aligned-MTL: Senushkin et al., CVPR 2023, Algorithm 1
with the authors' scale modes. ConFIG: Liu, Chu & Thuerey, ICLR 2025, the
ConFIG operator with the authors' length models. The references are written
from the papers in float64, on the Jacobian where the paper is (unit vectors,
pseudo-inverses of the gradient matrix), not on the Gramian.
"""

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lossweave as lw
from aggregator_cases import case_rng, fit_and_logged_weights, gram, head_objective, jacobian
from conftest import BACKEND, one_backend, to_numpy
from lossweave.ops import aggregators as agg

EPS32 = float(np.finfo(np.float32).eps)
RANK_CUT = 1e-6  # per row: the implementation's documented numerical-rank cut (RANK_RTOL)
CASES = ("conflicting", "aligned", "zero", "duplicated", "opposed", "dependent")
KS = (2, 3, 4, 5, 6)


def _jacobian(case, k, params=8, seed=0):
    """A (K, params) float32 Jacobian of the named kind (aggregator_cases.jacobian; deterministic per case, K, seed)."""
    return jacobian(case, k, params, rng=case_rng(case, k, seed, CASES), spread=0.5, low=0.5)


def _units(j):
    """U(g_k) = g_k / ||g_k||, a zero gradient's unit vector 0 (the authors' nan_to_num)."""
    n = np.linalg.norm(j, axis=1, keepdims=True)
    return np.divide(j, n, out=np.zeros_like(j), where=n > 0)


def _range_cond(m):
    """lambda_max / lambda_min over the numerically non-zero eigenvalues of a PSD matrix."""
    lam = np.linalg.eigvalsh(m)
    kept = lam[lam > len(m) * RANK_CUT * lam.max()]
    return kept.max() / kept.min() if kept.size else 1.0


def _scale(j):
    return max(np.linalg.norm(j.astype("float64"), axis=1).max(), 1e-30)


# --- NumPy references ----------------------------------------------------------


def np_imtl_g_paper(j):
    """IMTL-G, Liu et al. 2021, Sec. 3.2: alpha_{2:K} = g_1 U^T (D U^T)^{-1}, alpha_1 = 1 - sum."""
    j = j.astype("float64")
    u = _units(j)
    d = np.array([j[0] - j[t] for t in range(1, len(j))])
    uu = np.array([u[0] - u[t] for t in range(1, len(j))])
    tail = j[0] @ uu.T @ np.linalg.inv(d @ uu.T)
    return np.concatenate([[1.0 - tail.sum()], tail])


def np_imtl_g_pinv(j):
    """Quinton & Rey 2024's A_IMTL-G: v = G^+ d, alpha = v / sum(v) (0 when the sum is 0)."""
    j = j.astype("float64")
    g = j @ j.T
    d = np.sqrt(np.diag(g))
    v = np.linalg.pinv(g, rcond=len(j) * RANK_CUT, hermitian=True) @ d
    return v / v.sum() if abs(v.sum()) > 1e-9 * d.sum() / np.trace(g) else np.zeros(len(j))


def np_aligned_mtl(j, scale_mode="min", w=None):
    """Aligned-MTL, Senushkin et al. 2023, Algorithm 1, with the authors' scale modes and rank rule."""
    j = j.astype("float64")
    k = len(j)
    w = np.ones(k) if w is None else np.asarray(w, "float64")
    lam, v = np.linalg.eigh(j @ j.T)  # M = G^T G for the (params, K) gradient matrix G = J^T
    rank = int((lam > lam.max() * k * EPS32).sum())  # the authors' tolerance, K * eps_float32
    if rank == 0:
        return w
    order = np.argsort(lam)[::-1][:rank]
    lam, v = lam[order], v[:, order]
    sigma = {"min": lam[-1], "median": np.sort(lam)[(rank - 1) // 2], "rmse": lam.mean()}[scale_mode]
    balance = np.sqrt(sigma) * v @ np.diag(1.0 / np.sqrt(lam)) @ v.T
    return balance @ w


def np_config(j, w=None, length="projection"):
    """The ConFIG operator, Liu, Chu & Thuerey 2025: (sum_i g_i . g_u) g_u, g_u = U(pinv(U^T)^T w)."""
    j = j.astype("float64")
    k = len(j)
    w = np.ones(k) if w is None else np.asarray(w, "float64")
    u = _units(j)
    # [U(g_1) .. U(g_K)]^{-T} w: the min-norm g_v with U(g_k) . g_v = w_k (least squares).
    g_v = np.linalg.pinv(u, rcond=np.sqrt(k * RANK_CUT)) @ w
    if np.linalg.norm(g_v) <= 1e-3 * np.linalg.norm(w):
        return np.zeros(j.shape[1])
    g_u = g_v / np.linalg.norm(g_v)
    n = np.linalg.norm(j, axis=1)
    if length == "projection":
        return sum(g @ g_u for g in j) * g_u
    if length == "harmonic":
        m = k / np.sum(1.0 / n) if n.min() > 0 else 0.0
    else:
        m = {"minimum": n.min(), "maximum": n.max(), "arithmetic": n.mean(), "geometric": np.prod(n) ** (1.0 / k)}[
            length
        ]
    return m * sum(unit @ g_u for unit in u) * g_u


# --- IMTL-G -------------------------------------------------------------------


def _imtl_g_tolerance(j, ref):
    """The documented accuracy: 3e-6 cond(G) max(sum|alpha|, 1) (times max ||g||), at least 1e-5."""
    return max(1e-5, 3e-6 * _range_cond(gram(j)) * max(np.abs(ref).sum(), 1.0))


@pytest.mark.parametrize("case", ["conflicting", "aligned"])
@pytest.mark.parametrize("k", KS)
def test_imtl_g_is_the_paper_closed_form(case, k):
    j = _jacobian(case, k)
    ref = np_imtl_g_paper(j)
    w = to_numpy(agg.imtl_g_weights(j @ j.T)).astype("float64")
    tol = _imtl_g_tolerance(j, ref)
    np.testing.assert_allclose(w @ j, ref @ j.astype("float64"), atol=tol * _scale(j))
    assert abs(w.sum() - 1.0) <= 1e-5 * np.abs(ref).sum()
    np.testing.assert_allclose(to_numpy(agg.imtl_g(j)), w @ j, atol=1e-5 * _scale(j))


@pytest.mark.parametrize("case", ["zero", "duplicated", "opposed", "dependent"])
@pytest.mark.parametrize("k", KS)
def test_imtl_g_degenerate_gradients_follow_the_pseudo_inverse_form(case, k):
    j = _jacobian(case, k)
    ref = np_imtl_g_pinv(j)
    w = to_numpy(agg.imtl_g_weights(j @ j.T)).astype("float64")
    assert np.all(np.isfinite(w))
    tol = _imtl_g_tolerance(j, ref)
    np.testing.assert_allclose(w @ j, ref @ j.astype("float64"), atol=tol * _scale(j))
    if case == "zero":
        assert abs(w[k // 2]) <= 1e-6
    if case == "duplicated" and k > 2:
        assert abs(w[0] - w[-1]) <= 1e-5 * np.abs(w).sum()


def test_imtl_g_two_opposite_gradients_of_equal_norm_give_zero_weights():
    j = np.array([[1.0, 2.0, -1.0], [-1.0, -2.0, 1.0]], "float32")
    np.testing.assert_array_equal(to_numpy(agg.imtl_g_weights(j @ j.T)), [0.0, 0.0])
    np.testing.assert_array_equal(to_numpy(agg.imtl_g_weights(np.zeros((3, 3), "float32"))), np.zeros(3))
    np.testing.assert_array_equal(to_numpy(agg.imtl_g_weights([[4.0]])), [1.0])


def test_imtl_g_update_does_not_depend_on_the_gradient_scale():
    j = _jacobian("conflicting", 4)
    w = to_numpy(agg.imtl_g_weights(j @ j.T))
    for factor in (1e-3, 1e3):
        scaled = (factor * j).astype("float32")
        np.testing.assert_allclose(to_numpy(agg.imtl_g_weights(scaled @ scaled.T)), w, rtol=1e-4, atol=1e-5)


# --- Aligned-MTL --------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("k", KS)
def test_aligned_mtl_is_algorithm_1(k, case):
    j = _jacobian(case, k)
    tol = max(1e-5, 1e-6 * _range_cond(gram(j)))  # documented: 1e-6 cond(G) max||g||
    for scale_mode in agg.SCALE_MODES:
        ref = np_aligned_mtl(j, scale_mode)
        w = to_numpy(agg.aligned_mtl_weights(j @ j.T, scale_mode)).astype("float64")
        assert np.all(np.isfinite(w))
        np.testing.assert_allclose(w @ j, ref @ j.astype("float64"), atol=tol * _scale(j), err_msg=scale_mode)
        update = to_numpy(agg.aligned_mtl(j, scale_mode))  # its own float32 Gramian: the same tolerance
        np.testing.assert_allclose(update, w @ j, atol=tol * _scale(j), err_msg=scale_mode)


def test_aligned_mtl_preference_and_scale_modes():
    j = _jacobian("conflicting", 5)
    preference = np.array([1.0, 2.0, 0.5, 1.0, 3.0], "float32")
    for mode in agg.SCALE_MODES:
        w = to_numpy(agg.aligned_mtl_weights(j @ j.T, mode, preference))
        np.testing.assert_allclose(w @ j, np_aligned_mtl(j, mode, preference) @ j, atol=3e-5 * _scale(j))
    # The modes only rescale: the same direction, lengths sqrt(lambda_R) <= median <= rms.
    lengths = [np.linalg.norm(to_numpy(agg.aligned_mtl(j, mode))) for mode in ("min", "median", "rmse")]
    directions = [to_numpy(agg.aligned_mtl(j, mode)) / n for mode, n in zip(("min", "median", "rmse"), lengths)]
    np.testing.assert_allclose(directions[0], directions[1], atol=1e-5)
    np.testing.assert_allclose(directions[0], directions[2], atol=1e-5)
    assert lengths[0] < lengths[1] < lengths[2]


def test_aligned_mtl_two_collinear_gradients_give_their_sum_and_zero_gives_the_preference():
    g = np.array([1.0, -2.0, 0.5], "float32")
    for factor in (-2.0, 0.5):
        j = np.stack([g, factor * g]).astype("float32")
        np.testing.assert_allclose(to_numpy(agg.aligned_mtl(j)), j.sum(axis=0), atol=1e-5)
    np.testing.assert_array_equal(to_numpy(agg.aligned_mtl_weights(np.zeros((3, 3), "float32"))), np.ones(3))


# --- ConFIG -------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("k", KS)
def test_config_is_the_paper_operator(k, case):
    j = _jacobian(case, k)
    ref = np_config(j)
    update = to_numpy(agg.config(j)).astype("float64")
    assert np.all(np.isfinite(update))
    cond = _range_cond(_units(j.astype("float64")) @ _units(j.astype("float64")).T)
    tol = max(1e-5, 1e-6 * cond) * _scale(j)  # documented: 1e-6 cond(G_u) max_k ||g_k||
    np.testing.assert_allclose(update, ref, atol=tol)
    w = to_numpy(agg.config_weights(j @ j.T))  # from another float32 Gramian: the same tolerance
    np.testing.assert_allclose(w @ j, update, atol=tol)
    if case == "zero":
        assert w[k // 2] == 0.0
    if case == "opposed" and k == 2:
        np.testing.assert_array_equal(w, [0.0, 0.0])  # U d = (1, 1) has only d = 0 in least squares


@pytest.mark.parametrize("length", agg.CONFIG_LENGTHS)
@pytest.mark.parametrize("case", ["conflicting", "zero"])
def test_config_length_models_and_preference(length, case):
    j = _jacobian(case, 4)
    preference = np.array([1.0, 2.0, 0.5, 1.5], "float32")
    for w in (None, preference):
        ref = np_config(j, w, length)
        got = to_numpy(agg.config(j, preference=w, length=length))
        np.testing.assert_allclose(got, ref, atol=1e-5 * np.linalg.norm(j, axis=1).sum())


@one_backend  # the same keras.ops code on every backend (measured on all three); jitted here for speed
def test_documented_accuracy_on_random_jacobians():
    import jax

    imtl_g = jax.jit(agg.imtl_g_weights)
    aligned = {mode: jax.jit(lambda g, mode=mode: agg.aligned_mtl_weights(g, mode)) for mode in agg.SCALE_MODES}
    config = jax.jit(agg.config_weights)
    rng = np.random.default_rng(11)
    worst = {"imtl_g": 0.0, "aligned_mtl": 0.0, "config": 0.0}
    for k in KS:
        for draw in range(24):
            params = int(rng.choice([3, 8, 20, 100]))
            case = CASES[draw % len(CASES)]
            if case == "aligned":
                j = rng.normal(size=(1, params)) + 0.5 * rng.normal(size=(k, params))
            else:
                j = rng.normal(size=(k, params)) * rng.uniform(0.1, 3.0, size=(k, 1))
            if case in ("zero", "duplicated", "opposed", "dependent"):
                j = _jacobian(case, k, params, seed=draw).astype("float64")
            j = j.astype("float32")
            jj, g = j.astype("float64"), j @ j.T
            units = _units(jj)
            lam, lam_u = np.linalg.eigvalsh(gram(j)), np.linalg.eigvalsh(units @ units.T)
            if np.any((lam > k * EPS32 * lam.max()) & (lam <= k * RANK_CUT * lam.max())) or np.any(
                (lam_u > 0.1 * k * RANK_CUT * lam_u.max()) & (lam_u <= k * RANK_CUT * lam_u.max())
            ):
                continue  # between the rank cuts: the references and RANK_RTOL differ by design
            scale, cond, cond_u = _scale(j), _range_cond(gram(j)), _range_cond(units @ units.T)
            regular = lam.min() > k * RANK_CUT * lam.max()  # else the pseudo-inverse form
            ref = np_imtl_g_paper(j) if regular else np_imtl_g_pinv(j)
            error = np.abs(np.asarray(imtl_g(g)) @ jj - ref @ jj).max()
            worst["imtl_g"] = max(worst["imtl_g"], error / (scale * cond * max(np.abs(ref).sum(), 1.0)))
            for mode, solve in aligned.items():
                error = np.abs(np.asarray(solve(g)) @ jj - np_aligned_mtl(j, mode) @ jj).max()
                worst["aligned_mtl"] = max(worst["aligned_mtl"], error / (scale * cond))
            error = np.abs(np.asarray(config(g)) @ jj - np_config(j)).max()
            worst["config"] = max(worst["config"], error / (scale * cond_u))
    # The docstrings' bounds.
    assert worst["imtl_g"] <= 3e-6 and worst["aligned_mtl"] <= 1e-6 and worst["config"] <= 1e-6, worst


# --- properties (hypothesis) ---------------------------------------------------


@st.composite
def independent_jacobians(draw):
    """K <= params linearly independent gradients (cond(G) <= 1e3), of very different norms."""
    k = draw(st.integers(2, 6))
    params = draw(st.sampled_from([k, 8, 32]))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    kind = draw(st.sampled_from(["random", "conflicting", "aligned"]))
    j = rng.normal(size=(k, params))
    if kind == "conflicting":
        j[1] = -0.8 * j[0] + 0.6 * j[1]
    elif kind == "aligned":
        j = j + 2.0 * rng.normal(size=(1, params))
    j = j * np.exp(rng.uniform(-2.0, 2.0, size=(k, 1)))  # norms over a factor e^4 ~ 55
    j = j.astype("float32")
    cond = np.linalg.cond(gram(j))
    if cond > 1e3:  # outside the documented accuracy, draw again
        j = np.linalg.qr(rng.normal(size=(params, k)))[0].T.astype("float32") * (k - np.arange(k))[:, None]
    return j


@settings(max_examples=25, deadline=None)
@given(independent_jacobians(), st.sampled_from(["ones", "random"]))
def test_config_update_has_equal_positive_cosines(j, preference):
    """ConFIG's property (Liu, Chu & Thuerey 2025, Sec. 3.1): cos(g_c, g_k) = w_k / ||g_v|| > 0 for every k."""
    k = len(j)
    w = np.ones(k) if preference == "ones" else np.linspace(0.5, 2.0, k)
    update = to_numpy(agg.config(j, preference=w.astype("float32"))).astype("float64")
    jj = j.astype("float64")
    cosines = jj @ update / (np.linalg.norm(jj, axis=1) * np.linalg.norm(update))
    ratio = cosines / w
    assert ratio.min() > 0
    np.testing.assert_allclose(ratio, ratio.mean(), rtol=1e-3)
    # The length: the sum of the gradients' projections on the direction.
    np.testing.assert_allclose(np.linalg.norm(update), (jj @ update).sum() / np.linalg.norm(update), rtol=1e-4)


@settings(max_examples=25, deadline=None)
@given(independent_jacobians())
def test_imtl_g_update_has_equal_projections_on_unit_gradients(j):
    """IMTL-G's defining property (Liu et al. 2021, Sec. 3.2): g . u_k equal for every k, sum alpha = 1."""
    w = to_numpy(agg.imtl_g_weights(j @ j.T)).astype("float64")
    jj = j.astype("float64")
    projections = _units(jj) @ (w @ jj)
    spread = 1e-6 * np.linalg.cond(gram(j)) * np.abs(w).sum() * _scale(j)
    assert projections.max() - projections.min() <= max(spread, 1e-5 * _scale(j))
    assert abs(w.sum() - 1.0) <= 1e-5 * np.abs(w).sum()


@settings(max_examples=25, deadline=None)
@given(independent_jacobians(), st.sampled_from(agg.SCALE_MODES))
def test_aligned_gradients_are_orthogonal_with_equal_norms(j, scale_mode):
    """Aligned-MTL (Senushkin et al. 2023, Sec. 4): the aligned system G B has condition number 1.

    Applied to each unit preference e_k, the weights are column k of B; B G B
    is then sigma * I (G has full rank here), sigma the mode's squared
    singular value, and the update does not depend on the gradients' scale.
    """
    k = len(j)
    g = j @ j.T
    ones = np.ones(k, "float32")
    base = to_numpy(agg.aligned_mtl_weights(g, scale_mode, ones)).astype("float64")
    # The weights are linear in the preference: B e_t = B (1 + e_t) - B 1.
    balance = np.stack(
        [to_numpy(agg.aligned_mtl_weights(g, scale_mode, ones + np.eye(k, dtype="float32")[t])) - base for t in range(k)],
        axis=1,
    ).astype("float64")
    aligned = balance @ gram(j) @ balance
    lam = np.linalg.eigvalsh(gram(j))
    sigma = {"min": lam.min(), "median": np.sort(lam)[(k - 1) // 2], "rmse": lam.mean()}[scale_mode]
    np.testing.assert_allclose(aligned / sigma, np.eye(k), atol=1e-6 * np.linalg.cond(gram(j)) + 1e-5)
    scaled = (8.0 * j).astype("float32")
    np.testing.assert_allclose(to_numpy(agg.aligned_mtl_weights(scaled @ scaled.T, scale_mode)), base, rtol=1e-4, atol=1e-5)


# --- every closed form: dtypes, compiled steps, errors ---------------------------


def _closed_forms(k=4):
    preference = np.linspace(0.5, 2.0, k).astype("float32")
    return [
        lambda x: agg.imtl_g(x),
        lambda x: agg.aligned_mtl(x, "median", preference),
        lambda x: agg.config(x, preference, "harmonic"),
        lambda x: agg.config(x),
    ]


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision_jacobian_gives_float32(dtype):
    j = keras.ops.cast(_jacobian("conflicting", 4), dtype)
    exact = keras.ops.cast(j, "float32")
    for fn in _closed_forms():
        got = fn(j)
        assert keras.backend.standardize_dtype(got.dtype) == "float32"
        np.testing.assert_allclose(to_numpy(got), to_numpy(fn(exact)), atol=1e-5)


def _compiled_cases():
    """A Jacobian with a zero, a duplicated and an opposite gradient, as a compiled step sees them."""
    a, b = _jacobian("conflicting", 2)
    return [np.stack([a, np.zeros_like(a), b, a, -2.0 * b, 0.5 * a])]


@pytest.mark.skipif(BACKEND != "jax", reason="jax.jit")
def test_finite_under_jax_jit():
    import jax

    for j in _compiled_cases():
        for fn in _closed_forms(len(j)):
            got = np.asarray(jax.jit(fn)(j))
            assert np.all(np.isfinite(got))
            np.testing.assert_allclose(got, to_numpy(fn(j)), atol=1e-5 * _scale(j))


@pytest.mark.skipif(BACKEND != "tensorflow", reason="tf.function(jit_compile=True)")
def test_finite_under_tf_function_xla():
    import tensorflow as tf

    for j in _compiled_cases():
        for fn in _closed_forms(len(j)):
            got = tf.function(fn, jit_compile=True)(tf.constant(j)).numpy()
            assert np.all(np.isfinite(got))
            np.testing.assert_allclose(got, to_numpy(fn(j)), atol=1e-5 * _scale(j))


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: agg.imtl_g_weights(np.zeros((3, 2))), "expected a square"),
        (lambda: agg.config(np.zeros(3)), "expected a 2-D"),
        (lambda: agg.aligned_mtl_weights(np.eye(2), scale_mode="max"), r"`scale_mode` must be one of \('min', 'median', 'rmse'\); received 'max'"),
        (lambda: agg.config_weights(np.eye(2), length="norm"), r"`length` must be one of \('projection', .*received 'norm'"),
        (lambda: agg.config_weights(np.eye(3), preference=[1.0, 2.0]), "expected K = 3 finite, positive"),
        (lambda: agg.aligned_mtl_weights(np.eye(2), preference=[1.0, 0.0]), "received preference=\\[1.0, 0.0\\]"),
        (lambda: lw.weighting.AlignedMTL(scale_mode="mean"), "must be one of"),
        (lambda: lw.weighting.ConFIG(length="min"), "must be one of"),
        (lambda: lw.weighting.ConFIG(preference=[1.0, 2.0]), "must be a dict of term name"),
        (lambda: lw.weighting.AlignedMTL(preference={"a": -1.0}), r"AlignedMTL: `preference\['a'\]` must be a number > 0; received -1.0"),
        (lambda: lw.weighting.ConFIG(preference={"a": 2.0}).setup(["b", "c"]), "received a preference for \\['a'\\]"),
    ],
)
def test_errors_say_what_was_received_and_expected(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# --- the strategies in fit ------------------------------------------------------


@pytest.mark.parametrize(
    "name, weighting",
    [
        ("imtlg", lambda: lw.weighting.IMTLG()),
        ("aligned", lambda: lw.weighting.AlignedMTL(scale_mode="rmse", preference={"task_0": 2.0})),
        ("config", lambda: lw.weighting.ConFIG(preference={"task_2": 0.5}, length="arithmetic")),
    ],
)
def test_strategy_trains_three_heads_with_the_logged_weights(name, weighting):
    weights = fit_and_logged_weights(head_objective(weighting()))
    assert np.all(np.isfinite(weights)) and np.all(weights != 0.0)
    if name == "imtlg":  # the weights sum to 1 (logged: the last step's)
        assert abs(weights.sum() - 1.0) <= 1e-4
