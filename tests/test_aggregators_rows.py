"""The row-level aggregators (GradVac, GradDrop, MoCo, DB-MTL) against NumPy references.

GradVac: Wang et al., ICLR 2021 (Algorithm 1, Eq. 2-3); GradDrop: Chen et al.,
NeurIPS 2020 (Eq. 1-3); MoCo: Fernando et al., ICLR 2023 (Algorithm 1, with
LibMTL's step sizes and normalisation); DB-MTL: Lin et al. 2023
(arXiv:2308.12029, Algorithm 1, LibMTL's defaults). The references are written
from the papers, vector by vector, in float64. None of these has an iteration
budget (the loops are unrolled over the static K, the simplex projection is
exact), so they must match to float32 rounding.
"""

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator_cases import jacobian
from conftest import BACKEND, to_numpy
from lossweave.ops import aggregators as agg
from lossweave.ops.aggregators.gradvac import gradvac_order
from lossweave.ops.aggregators.moco import project_simplex

RNG = np.random.default_rng(12)
CASES = ("conflicting", "aligned", "one_zero", "duplicated")
KS = (2, 3, 4, 5, 6)


def _jacobian(case, k, params=7, rng=RNG):
    """A (K, params) float32 Jacobian of the named kind (aggregator_cases.jacobian, drawn in turn from RNG)."""
    return jacobian(case, k, params, rng=rng)


def _order(k, rng=RNG):
    return np.array([rng.permutation([o for o in range(k) if o != i]) for i in range(k)]).reshape(k, k - 1)


def _close(got, want, tol=1e-5):
    got, want = np.asarray(got, "float64"), np.asarray(want, "float64")
    np.testing.assert_allclose(got, want, atol=tol * max(1.0, np.abs(want).max()))


# --- NumPy references ----------------------------------------------------------


def np_gradvac(blocks, targets, beta, order):
    """GradVac's update rule, task by task and pair by pair, one block (group) at a time."""
    targets = np.array(targets, "float64")
    updates = []
    for g, block in enumerate(blocks):
        block = np.asarray(block, "float64")
        floor = 1e-12 * max((block * block).sum(axis=1).max(), 0.0)
        out = []
        for i in range(len(block)):
            gi = block[i].copy()
            for j in order[i]:
                gj = block[j]
                ni, nj = np.linalg.norm(gi), np.linalg.norm(gj)
                phi = gi @ gj / (ni * nj) if ni * ni > floor and nj * nj > floor else 0.0
                phi = float(np.clip(phi, -1.0, 1.0))
                target = targets[g, i, j]
                if phi < target and 1.0 - target**2 > 1e-6 and nj * nj > floor:  # Eq. 2
                    gi = gi + ni * (target * np.sqrt(1 - phi**2) - phi * np.sqrt(1 - target**2)) / (
                        nj * np.sqrt(1 - target**2)
                    ) * gj
                targets[g, i, j] = (1 - beta) * target + beta * phi  # Eq. 3
            out.append(gi)
        updates.append(np.sum(out, axis=0))
    return targets, updates


def np_graddrop(rows, uniforms, leak, batched=False, activations=None):
    """Eq. 1-3 of Chen et al. element by element (the batch summed in G when batched)."""
    updates, kept, total = [], 0.0, 0.0
    for index, r in enumerate(rows):
        r = np.asarray(r, "float64")
        k = len(r)
        if batched:
            signs = np.sign(activations[index]) if activations is not None else 1.0
            stat = (r * signs).sum(axis=1)
        else:
            stat = r
        leaks = np.broadcast_to(np.asarray(leak, "float64"), (k,))
        keep = np.zeros(stat.shape)
        for position in np.ndindex(stat.shape[1:]):
            g = stat[(slice(None),) + position]
            mass = np.abs(g).sum()
            purity = 0.5 * (1 + g.sum() / mass) if mass > 0 else 0.5
            u = uniforms[index][position]
            for t in range(k):
                m = (purity > u and g[t] > 0) or (purity < u and g[t] < 0)
                keep[(t,) + position] = leaks[t] + (1 - leaks[t]) * m
        if batched:
            keep = keep[:, None]
        updates.append((keep * r).sum(axis=0))
        kept = kept + np.abs(keep * r).reshape(k, -1).sum(axis=1)
        total = total + np.abs(r).reshape(k, -1).sum(axis=1)
    return updates, np.where(total > 0, kept / np.where(total > 0, total, 1.0), 1.0)


def np_simplex_projection(v):
    """Euclidean projection onto the simplex by bisection on theta: sum max(v - theta, 0) = 1."""
    low, high = v.min() - 1.0, v.max()
    for _ in range(200):
        mid = 0.5 * (low + high)
        low, high = (mid, high) if np.maximum(v - mid, 0).sum() > 1 else (low, mid)
    return np.maximum(v - 0.5 * (low + high), 0.0)


def np_moco(ys, lam, jacobian_blocks, losses, step, beta, beta_sigma, gamma, gamma_sigma, rho, normalize=True):
    """MoCo Algorithm 1 with LibMTL's normalisation and step sizes, on the concatenated gradients."""
    g = np.concatenate([np.asarray(b, "float64").reshape(len(losses), -1) for b in jacobian_blocks], axis=1)
    y = np.concatenate([np.asarray(b, "float64").reshape(len(losses), -1) for b in ys], axis=1)
    if normalize:
        g = np.stack([g[k] / (np.linalg.norm(g[k]) + 1e-8) * losses[k] for k in range(len(losses))])
    t = step + 1
    y = y - beta / t**beta_sigma * (y - g)
    lam = np_simplex_projection(lam - gamma / t**gamma_sigma * (y @ y.T + rho * np.eye(len(lam))) @ lam)
    return y, lam, lam @ y


def np_dbmtl(buffer, jacobian, losses, step, beta, beta_sigma, eps):
    """DB-MTL Algorithm 1: log-loss gradients, their EMA, every one scaled to the largest norm."""
    jacobian, buffer = np.asarray(jacobian, "float64"), np.asarray(buffer, "float64")
    h = np.stack([jacobian[k] / (max(losses[k], 0.0) + eps) for k in range(len(losses))])
    buffer = h + beta / (step + 1) ** beta_sigma * (buffer - h)
    norms = np.linalg.norm(buffer, axis=1)
    nonzero = norms**2 > 1e-12 * (norms**2).max()
    alpha = np.where(nonzero, norms.max() / np.where(nonzero, norms, 1.0), 1.0)
    return buffer, alpha, alpha @ buffer


# --- GradVac ------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("k", KS)
def test_gradvac_matches_the_update_rule_over_steps(case, k):
    """Two steps with the targets carried (random targets to start: corrections of every kind)."""
    targets = RNG.uniform(-0.8, 0.8, size=(1, k, k)).astype("float32")
    reference = targets.astype("float64")
    for _ in range(2):
        j = _jacobian(case, k)
        order = _order(k)
        reference, (want,) = np_gradvac([j], reference, 0.5, order)
        targets, (update,), weights = agg.gradvac(targets, [j], beta=0.5, order=order)
        _close(to_numpy(update), want)
        _close(to_numpy(weights)[0] @ j.astype("float64"), want)
        _close(to_numpy(targets), reference)


def test_gradvac_groups_are_independent_blocks():
    k = 3
    rows = [_jacobian("conflicting", k, 6).reshape(k, 2, 3), _jacobian("aligned", k, 4), _jacobian("one_zero", k, 5)]
    groups = [0, 1, 0]
    targets = RNG.uniform(-0.5, 0.5, size=(2, k, k)).astype("float32")
    order = _order(k)
    blocks = [np.concatenate([rows[0].reshape(k, -1), rows[2]], axis=1), rows[1]]
    want_targets, want = np_gradvac(blocks, targets, 0.3, order)
    new, updates, weights = agg.gradvac(targets, rows, beta=0.3, groups=groups, order=order)
    _close(to_numpy(new), want_targets)
    got0 = np.concatenate([to_numpy(updates[0]).ravel(), to_numpy(updates[2])])
    _close(got0, want[0])
    _close(to_numpy(updates[1]), want[1])
    assert tuple(to_numpy(weights).shape) == (2, k)


def test_gradvac_correction_sets_the_cosine_to_the_target():
    """Eq. 2 is built so that cos(g_1 + w g_2, g_2) = phi_hat exactly (when below it)."""
    j = np.array([[1.0, 0.2, -0.5], [-0.4, 1.0, 0.3]], "float32")
    original = j[0] @ j[1] / np.linalg.norm(j[0]) / np.linalg.norm(j[1])
    for target in (-0.3, 0.0, 0.4, 0.9):
        # Task 2's target -1 is never pursued: its row stays (0, 1), so weights[1] - 1 = w.
        targets = np.array([[[0.0, target], [-1.0, 0.0]]], "float32")
        _, weights = agg.gradvac_weights(targets, j @ j.T, beta=0.0, order=[[1], [0]])
        w = to_numpy(weights)[0].astype("float64")
        assert abs(w[0] - 1.0) < 1e-6
        g1 = j[0].astype("float64") + (w[1] - 1.0) * j[1]
        cos = g1 @ j[1] / np.linalg.norm(g1) / np.linalg.norm(j[1])
        assert abs(cos - max(target, original)) < 1e-5, (target, cos)


def test_gradvac_zero_targets_and_beta_zero_is_pcgrad():
    for k in (2, 5):
        for case in CASES:
            j = _jacobian(case, k)
            order = _order(k)
            _, (update,), _ = agg.gradvac(np.zeros((1, k, k)), [j], beta=0.0, order=order)
            _close(to_numpy(update), to_numpy(agg.pcgrad(j, order=order)))


def test_gradvac_identical_and_zero_gradients_are_finite():
    for k in (2, 4):
        same = np.tile(RNG.normal(size=(1, 5)), (k, 1)).astype("float32")
        targets = np.full((1, k, k), 0.9999999, "float32")  # 1 - phi_hat^2 < 1e-6: not pursued
        new, (update,), _ = agg.gradvac(targets, [same], beta=0.5, order=_order(k))
        _close(to_numpy(update), k * same[0].astype("float64"))
        assert np.all(np.isfinite(to_numpy(new)))
        new, (update,), weights = agg.gradvac(np.full((1, k, k), 0.5, "float32"), [np.zeros((k, 4))], seed=1)
        assert np.all(to_numpy(update) == 0) and np.all(np.isfinite(to_numpy(weights)))
        np.testing.assert_allclose(to_numpy(new)[0][~np.eye(k, dtype=bool)], 0.25, atol=1e-7)  # phi = 0


def test_gradvac_seeded_orders_are_valid_and_move():
    k = 4
    generator = keras.random.SeedGenerator(3)
    results = set()
    for _ in range(6):
        order = to_numpy(gradvac_order(k, seed=generator))
        for i in range(k):
            assert sorted(order[i]) == [o for o in range(k) if o != i]
        results.add(order.tobytes())
    assert len(results) > 1


# --- GradDrop -----------------------------------------------------------------


@pytest.mark.parametrize("leak", [0.0, 0.3, [0.0, 0.5, 1.0]])
@pytest.mark.parametrize("case", CASES)
def test_graddrop_parameter_mode_matches_eq_1_to_3(case, leak):
    k = 3
    rows = [_jacobian(case, k, 6).reshape(k, 2, 3), _jacobian(case, k, 4)]
    uniforms = [RNG.uniform(size=(2, 3)).astype("float32"), RNG.uniform(size=(4,)).astype("float32")]
    want, want_kept = np_graddrop(rows, uniforms, leak)
    updates, kept = agg.graddrop(rows, uniforms=uniforms, leak=leak)
    for got, w in zip(updates, want):
        _close(to_numpy(got), w)
    _close(to_numpy(kept), want_kept)


@pytest.mark.parametrize("signs", [False, True])
@pytest.mark.parametrize("k", [2, 4, 6])
def test_graddrop_representation_mode_sums_the_batch(k, signs):
    batch = 5
    rows = [RNG.normal(size=(k, batch, 3)).astype("float32")]
    rows[0][1] = -0.8 * rows[0][0]  # conflicting terms
    activations = [RNG.normal(size=(batch, 3)).astype("float32")] if signs else None
    uniforms = [RNG.uniform(size=(3,)).astype("float32")]
    want, want_kept = np_graddrop(rows, uniforms, 0.0, batched=True, activations=activations)
    updates, kept = agg.graddrop(rows, uniforms=uniforms, batched=True, activations=activations)
    _close(to_numpy(updates[0]), want[0])
    _close(to_numpy(kept), want_kept)


def test_graddrop_seeded_draws_are_reproducible_and_advance():
    rows = [_jacobian("conflicting", 3, 40)]
    runs = []
    for _ in range(2):
        generator = keras.random.SeedGenerator(7)
        runs.append([to_numpy(agg.graddrop(rows, seed=generator)[0][0]) for _ in range(3)])
    np.testing.assert_array_equal(np.array(runs[0]), np.array(runs[1]))
    assert len({r.tobytes() for r in runs[0]}) > 1


@settings(max_examples=10, deadline=None)
@given(st.sampled_from([2, 3, 6]), st.sampled_from([1, 9]), st.integers(0, 2**31 - 1))
def test_graddrop_keeps_one_sign_per_element(k, size, seed):
    """leak = 0: per element the kept gradients share one sign, chosen from those present."""
    rng = np.random.default_rng(seed)
    j = rng.normal(size=(k, size)) * (rng.uniform(size=(k, size)) > 0.2)
    j = j.astype("float32")
    (update,), _ = agg.graddrop([j], uniforms=[rng.uniform(size=size).astype("float32")])
    update = to_numpy(update).astype("float64")
    positive = np.where(j > 0, j, 0).sum(axis=0)
    negative = np.where(j < 0, j, 0).sum(axis=0)
    distance = np.minimum(np.abs(update - positive), np.abs(update - negative))
    assert np.all(distance <= 1e-5 * (1 + np.abs(j).sum(axis=0)))
    # Unanimous elements keep everything.
    unanimous = np.all(j >= 0, axis=0) | np.all(j <= 0, axis=0)
    np.testing.assert_allclose(update[unanimous], j.sum(axis=0)[unanimous], atol=1e-5)
    (full,), kept = agg.graddrop([j], uniforms=[rng.uniform(size=size).astype("float32")], leak=1.0)
    np.testing.assert_allclose(to_numpy(full), j.sum(axis=0), atol=1e-5)
    np.testing.assert_array_equal(to_numpy(kept), np.ones(k))


# --- MoCo ---------------------------------------------------------------------


@settings(max_examples=15, deadline=None)
@given(st.sampled_from([1, 2, 5]), st.integers(0, 2**31 - 1), st.sampled_from([0.01, 1.0, 30.0]))
def test_simplex_projection_is_exact(k, seed, scale):
    v = (np.random.default_rng(seed).normal(size=k) * scale).astype("float32")
    got = to_numpy(project_simplex(v)).astype("float64")
    assert got.min() >= 0.0 and abs(got.sum() - 1.0) <= 1e-5
    np.testing.assert_allclose(got, np_simplex_projection(v.astype("float64")), atol=2e-6 * max(1.0, scale))
    # Idempotent up to the float32 rounding of the first projection (v - theta at |v| ~ scale: its sum is
    # off by a few ulp of |v|, e.g. 3.8e-6 at scale 30, which the second projection spreads over the entries).
    np.testing.assert_allclose(to_numpy(project_simplex(got.astype("float32"))), got, atol=2e-6 * max(1.0, scale))


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("k", KS)
def test_moco_matches_algorithm_1_over_steps(k, case, normalize=True):
    shapes = [(2, 3), (4,)]
    ys = [np.zeros((k, *s), "float32") for s in shapes]
    lam = np.full(k, 1.0 / k, "float32")
    ref_y, ref_lam = np.zeros((k, 10)), lam.astype("float64")
    settings_ = dict(beta=0.5, beta_sigma=0.5, gamma=0.1, gamma_sigma=0.5, rho=0.05, normalize=normalize)
    for step in range(2):
        j = _jacobian(case, k, 10)
        blocks = [j[:, :6].reshape(k, 2, 3), j[:, 6:]]
        losses = RNG.uniform(0.2, 3.0, size=k).astype("float32")
        ref_y, ref_lam, want = np_moco([ref_y], ref_lam, [j], losses, step, **settings_)
        (ys, lam), updates, weights = agg.moco((ys, lam), blocks, losses, step, **settings_)
        _close(to_numpy(lam), ref_lam)
        _close(np.concatenate([to_numpy(y).reshape(k, -1) for y in ys], axis=1), ref_y)
        _close(np.concatenate([to_numpy(u).ravel() for u in updates]), want)
        np.testing.assert_array_equal(to_numpy(weights), to_numpy(lam))


def test_moco_without_normalization():
    test_moco_matches_algorithm_1_over_steps(3, "conflicting", normalize=False)


def test_moco_permuting_the_terms_permutes_the_weights():
    k = 4
    j = _jacobian("conflicting", k)
    losses = RNG.uniform(0.5, 2.0, size=k).astype("float32")
    perm = RNG.permutation(k)
    state = ([np.zeros_like(j)], np.full(k, 0.25, "float32"))
    _, (update,), lam = agg.moco(state, [j], losses, 0, gamma=1.0)
    _, (update_p,), lam_p = agg.moco(state, [j[perm]], losses[perm], 0, gamma=1.0)
    _close(to_numpy(update_p), to_numpy(update))
    _close(to_numpy(lam_p), to_numpy(lam)[perm])


# --- DB-MTL -------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("k", KS)
def test_dbmtl_matches_algorithm_1_over_steps(k, case):
    buffers = [np.zeros((k, 3, 2), "float32"), np.zeros((k, 3), "float32")]
    reference = np.zeros((k, 9))
    for step in range(2):
        j = _jacobian(case, k, 9)
        losses = RNG.uniform(0.01, 5.0, size=k).astype("float32")
        reference, alpha, want = np_dbmtl(reference, j, losses, step, 0.8, 0.5, 1e-8)
        buffers, updates, scales = agg.dbmtl(buffers, [j[:, :6].reshape(k, 3, 2), j[:, 6:]], losses, step,
                                             beta=0.8, beta_sigma=0.5)
        _close(np.concatenate([to_numpy(b).reshape(k, -1) for b in buffers], axis=1), reference)
        _close(to_numpy(scales), alpha)
        _close(np.concatenate([to_numpy(u).ravel() for u in updates]), want)


@settings(max_examples=10, deadline=None)
@given(st.sampled_from([2, 3, 6]), st.integers(0, 2**31 - 1))
def test_dbmtl_is_invariant_to_rescaling_any_loss(k, seed):
    """The paper's point: log losses make L_k -> c_k L_k (so g_k -> c_k g_k) change nothing."""
    rng = np.random.default_rng(seed)
    j = rng.normal(size=(k, 8)).astype("float32")
    losses = rng.uniform(0.1, 3.0, size=k).astype("float32")
    c = np.exp(rng.uniform(-3, 3, size=k)).astype("float32")
    zeros = [np.zeros((k, 8), "float32")]
    _, (update,), _ = agg.dbmtl(zeros, [j], losses, 0, epsilon=1e-20)
    _, (scaled,), _ = agg.dbmtl(zeros, [j * c[:, None]], losses * c, 0, epsilon=1e-20)
    _close(to_numpy(scaled), to_numpy(update), tol=1e-4)
    buffers, _, scales = agg.dbmtl(zeros, [j], losses, 0)
    balanced = to_numpy(scales)[:, None] * to_numpy(buffers[0])
    norms = np.linalg.norm(balanced, axis=1)
    np.testing.assert_allclose(norms, norms.max(), rtol=1e-5)  # every term at the largest norm


def test_dbmtl_zero_gradient_and_zero_loss_are_finite():
    j = _jacobian("one_zero", 3)
    buffers, (update,), scales = agg.dbmtl([np.zeros_like(j)], [j], np.array([1.0, 0.0, 2.0], "float32"), 0)
    assert np.all(np.isfinite(to_numpy(update))) and to_numpy(scales)[1] == 1.0
    _, (update,), scales = agg.dbmtl([np.zeros((2, 3))], [np.zeros((2, 3))], np.ones(2), 0)
    np.testing.assert_array_equal(to_numpy(update), 0.0)


# --- every row aggregator: dtypes, compiled steps, errors -------------------------


def _compiled_cases():
    k = 4
    j = _jacobian("one_zero", k)
    j[-1] = j[0]
    losses = np.array([1.0, 2.0, 0.5, 1.5], "float32")
    order = _order(k)
    uniforms = [RNG.uniform(size=j.shape[1]).astype("float32")]
    targets = np.full((1, k, k), 0.2, "float32")
    lam = np.full(k, 0.25, "float32")
    return j, [
        lambda x: agg.gradvac(targets, [x], order=order)[1][0],
        lambda x: agg.gradvac(targets, [x], seed=3)[1][0],
        lambda x: agg.graddrop([x], uniforms=uniforms, leak=0.2)[0][0],
        lambda x: agg.graddrop([x], seed=4)[0][0],
        lambda x: agg.moco(([x * 0.5], lam), [x], losses, 2)[1][0],
        lambda x: agg.dbmtl([x * 0.5], [x], losses, 2)[1][0],
    ]


@pytest.mark.skipif(BACKEND != "jax", reason="jax.jit")
def test_finite_under_jax_jit():
    import jax

    j, cases = _compiled_cases()
    for index, fn in enumerate(cases):
        got = np.asarray(jax.jit(fn)(j))
        assert np.all(np.isfinite(got))
        if index not in (1, 3):  # seeded draws: an int seed draws the same inside and outside jit
            np.testing.assert_allclose(got, to_numpy(fn(j)), atol=1e-5)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="tf.function(jit_compile=True)")
def test_finite_under_tf_function_xla():
    import tensorflow as tf

    j, cases = _compiled_cases()
    for index, fn in enumerate(cases):
        got = tf.function(fn, jit_compile=True)(tf.constant(j)).numpy()
        assert np.all(np.isfinite(got))
        if index not in (1, 3):
            np.testing.assert_allclose(got, to_numpy(fn(j)), atol=1e-5)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision_rows_give_float32(dtype):
    k = 3
    j = keras.ops.cast(_jacobian("conflicting", k), dtype)
    exact = keras.ops.cast(j, "float32")
    order = _order(k)
    lam = np.full(k, 1 / 3, "float32")
    for fn in [
        lambda x: agg.gradvac(np.zeros((1, k, k)), [x], order=order)[1][0],
        lambda x: agg.graddrop([x], uniforms=[np.full(7, 0.5, "float32")])[0][0],
        lambda x: agg.moco(([keras.ops.zeros_like(x)], lam), [x], np.ones(k), 0)[1][0],
        lambda x: agg.dbmtl([keras.ops.zeros_like(x)], [x], np.ones(k), 0)[1][0],
    ]:
        got = fn(j)
        assert keras.backend.standardize_dtype(got.dtype) == "float32"
        np.testing.assert_allclose(to_numpy(got), to_numpy(fn(exact)), atol=1e-5)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: agg.gradvac(np.zeros((1, 2, 2)), [np.eye(2)]), "expected exactly one"),
        (lambda: agg.gradvac(np.zeros((1, 3, 3)), [np.eye(3)], order=[[1, 2], [1, 2], [0, 1]]), "row 1 is not"),
        (lambda: agg.gradvac(np.zeros((2, 2)), [np.eye(2)], seed=0), r"expected \(groups, K, K\)"),
        (lambda: agg.gradvac(np.zeros((1, 2, 2)), [np.eye(2)], groups=[1], seed=0), r"in \[0, 1\)"),
        (lambda: agg.gradvac_weights(np.zeros((1, 2, 2)), np.eye(3), seed=0), "the same"),
        (lambda: agg.gradvac_weights(np.zeros((1, 2, 2)), np.eye(2), beta=1.5, seed=0), "GradVac: `beta` must be a number >= 0 and <= 1; received 1.5"),
        (lambda: agg.graddrop([np.eye(2)]), "expected exactly one"),
        (lambda: agg.graddrop([np.eye(2)], seed=0, leak=2.0), "GradDrop: `leak` must be a number >= 0 and <= 1; received 2.0"),
        (lambda: agg.graddrop([np.eye(2)], seed=0, leak=[0.1]), r"2 terms"),
        (lambda: agg.graddrop([np.eye(2)], uniforms=[np.ones(3)]), r"shape of P, \(2,\)"),
        (lambda: agg.graddrop([np.ones((2, 3))], seed=0, batched=True), r"\(K, batch, \*shape\)"),
        (lambda: agg.graddrop([], seed=0), "no rows"),
        (lambda: agg.moco(([np.zeros((2, 3))], np.ones(2) / 2), [np.zeros((3, 3))], np.ones(2), 0), "K = 2"),
        (lambda: agg.moco(([np.zeros((2, 4))], np.ones(2) / 2), [np.zeros((2, 3))], np.ones(2), 0), "shaped like"),
        (lambda: agg.dbmtl([np.zeros((2, 3))], [np.zeros((2, 3))], np.ones(3), 0), "K = 3"),
        (lambda: agg.dbmtl([np.zeros((2, 3))], [np.zeros((2, 3))], np.ones((2, 1)), 0), r"expected \(K,\)"),
    ],
)
def test_errors_say_what_was_received_and_expected(call, message):
    with pytest.raises(ValueError, match=message):
        call()
