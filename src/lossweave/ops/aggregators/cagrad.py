"""CAGrad (Liu et al., NeurIPS 2021): the best worst-case improvement near the mean gradient."""

import numpy as np
from keras import ops

from lossweave import arguments
from lossweave.ops.aggregators._common import REL_EPS, apply_weights, as_gramian

# The authors' ``rescale`` options (``cagrad(..., rescale=1)`` in their code, LibMTL's default).
RESCALES = (0, 1, 2)
# The solver enumerates the 2^K - 1 supports of the weights: 4095 small systems at K = 12.
MAX_TERMS = 12


def _supports(k):
    """``(2^k - 1, k)`` float32 masks of every non-empty subset of the k terms."""
    codes = np.arange(1, 2**k)[:, None]
    return ((codes >> np.arange(k)[None, :]) & 1).astype("float32")


def _eliminate(j, carry):
    """Gauss-Jordan step j on every augmented system ``[A | B]`` at once, without pivoting.

    A is symmetric positive semi-definite, so the pivots are the Schur
    complements of its leading blocks (as in a Cholesky factorisation): a
    pivot ``<= REL_EPS A_jj`` means row j is (numerically) dependent on the
    rows before it, and the system is flagged instead of divided by ~0.
    Module level, so that eager JAX compiles the loop body once per shape.
    """
    systems, valid, diagonal = carry
    k, width = systems.shape[1], systems.shape[2]
    row_pick = ops.one_hot(j, k, dtype="float32")
    column_pick = ops.one_hot(j, width, dtype="float32")
    row = ops.einsum("pkc,k->pc", systems, row_pick)
    pivot = ops.sum(row * column_pick[None, :], axis=1)
    ok = pivot > REL_EPS * ops.sum(diagonal * row_pick[None, :], axis=1)
    row = row / ops.where(ok, pivot, ops.ones_like(pivot))[:, None]
    # Row i loses A_ij times the pivot row; row j becomes the pivot row (coefficient A_jj - 1).
    coefficient = ops.einsum("pkc,c->pk", systems, column_pick) - row_pick[None, :]
    systems = systems - coefficient[:, :, None] * row[:, None, :]
    return systems, ops.logical_and(valid, ok), diagonal


def _support_solves(gramian, masks, rhs):
    """Solve ``G_SS x_S = rhs_S`` on every support S at once (zero off S).

    A support whose gradients are linearly dependent (a duplicated gradient,
    K > params) is flagged invalid instead of divided by ~0: its optimum is
    also an optimum on a smaller, independent support (see ``cagrad_weights``).
    The elimination is an ``ops.fori_loop`` over the K pivots, each step
    batched over the supports: one small compiled body rather than K^2
    unrolled ops (which eager JAX compiled one by one, seconds per K).

    Returns ``(x, valid)``: ``(P, K, R)`` solutions and ``(P,)`` bools.
    """
    k = gramian.shape[0]
    eye = ops.eye(k, dtype="float32")
    outer = masks[:, :, None] * masks[:, None, :]
    a = outer * gramian[None] + (1.0 - masks)[:, :, None] * eye[None]  # identity off S
    diagonal = ops.sum(a * eye[None], axis=2)
    start = (ops.concatenate([a, rhs], axis=2), ops.ones((masks.shape[0],), "bool"), diagonal)
    systems, valid, _ = ops.fori_loop(0, k, _eliminate, start)
    return systems[:, :, k:], valid


def _candidates(gramian, a, s):
    """Every support's KKT points of the dual, projected onto the simplex: ``(N, K)``, ``(N,)`` valid."""
    k = gramian.shape[0]
    masks = ops.convert_to_tensor(_supports(k))
    solved, valid = _support_solves(gramian, masks, ops.stack([masks, masks * a[None, :]], axis=-1))
    p, q = solved[:, :, 0], solved[:, :, 1]  # G_SS p = 1_S, G_SS q = a_S
    sum_p, sum_q = ops.sum(p, axis=1), ops.sum(q, axis=1)
    valid = ops.logical_and(valid, sum_p > 0)
    sum_p = ops.where(sum_p > 0, sum_p, ops.ones_like(sum_p))
    # On S the KKT conditions read G w + theta a = rho 1, 1.w = 1, with theta = ||g_w|| / sqrt(phi):
    # w(theta) = w0 + theta w1, and ||g_w||^2 = theta^2 phi is a quadratic in theta.
    w0 = p / sum_p[:, None]
    w1 = (sum_q / sum_p)[:, None] * p - q

    def quad(u, v):
        return ops.einsum("pi,ij,pj->p", u, gramian, v)

    qa = quad(w1, w1) - s * s
    qb, qc = quad(w0, w1), quad(w0, w0)
    root = ops.sqrt(ops.maximum(qb * qb - qa * qc, 0.0))
    big = -(qb + ops.where(qb >= 0, root, -root))  # the cancellation-free pair of roots
    theta_1 = big / ops.where(qa != 0, qa, ops.ones_like(qa))
    theta_2 = qc / ops.where(big != 0, big, ops.ones_like(big))
    points = ops.concatenate(
        [w0, w0 + theta_1[:, None] * w1, w0 + theta_2[:, None] * w1, ops.eye(k, dtype="float32")], axis=0
    )
    ok = ops.concatenate(
        [valid, ops.logical_and(valid, qa != 0), ops.logical_and(valid, big != 0), ops.ones((k,), "bool")], axis=0
    )
    # Any point, once on the simplex, is feasible: a wrong root costs nothing, it is scored and dropped.
    points = ops.maximum(points, 0.0)
    total = ops.sum(points, axis=1)
    ok = ops.logical_and(ok, ops.logical_and(ops.isfinite(total), total > 0))
    return points / ops.where(ok, total, ops.ones_like(total))[:, None], ok


def cagrad_weights(gramian, c=0.5, rescale=0):
    """CAGrad weights: the update ``g_0 + sqrt(phi) g_w / ||g_w||`` as a combination of the g_k.

    Liu, Liu, Jin, Stone & Liu, "Conflict-Averse Gradient Descent for
    Multi-task Learning", NeurIPS 2021, Sec. 3.1 and Algorithm 1. The update
    ``d`` maximises the worst local improvement ``min_k g_k . d`` over the
    ball ``||d - g_0|| <= c ||g_0||`` around the mean gradient
    ``g_0 = (1/K) sum_k g_k``. Its dual is a problem over the simplex::

        w* = argmin_w  F(w) = g_w . g_0 + sqrt(phi) ||g_w||,   phi = c^2 ||g_0||^2,
        d  = g_0 + sqrt(phi) / ||g_w*|| g_w*,                  g_w = sum_k w_k g_k,

    so ``d = sum_k (1/K + sqrt(phi) w*_k / ||g_w*||) g_k``: these are the
    weights, read off the Gramian alone (``g_w . g_0 = w^T G 1 / K``,
    ``||g_w||^2 = w^T G w``). ``c = 0`` is gradient descent on the mean loss;
    the paper takes ``c`` in [0, 1) (its convergence result).

    Rescaling (the authors' code, not in Algorithm 1): ``rescale=1`` divides
    the update by ``1 + c^2`` (``cagrad(..., rescale=1)`` in
    Cranial-XIX/CAGrad's ``nyuv2/utils.py``, LibMTL's default), ``rescale=2``
    by ``1 + c``, ``rescale=0`` (the paper) not at all. The authors'
    NYU-v2 trainer also multiplies the update by K ("to match the sum loss");
    LibMTL does not, nor do these weights (a mean-scale update).

    Solver (exact, not iterative). The authors call scipy's SLSQP on F every
    step (torchjd: cvxpy). Here every support S of w is tried at once: on S
    the KKT conditions of F are ``G_SS w_S + theta a_S = rho 1`` with
    ``a = G 1 / K``, ``sum w_S = 1`` and ``theta = ||g_w|| / sqrt(phi)``,
    whose solutions ``w = w0 + theta w1`` (two solves with G_SS, one batched
    elimination) make ``||g_w||^2 = theta^2 phi`` a quadratic in theta. Its
    two roots, and theta = 0, give at most three points per support, each
    projected onto the simplex. The optimum is one of them: it lies in the
    relative interior of a face spanned by affinely independent gradients
    (Caratheodory). When these are linearly dependent (G_SS singular: such
    supports are skipped), 0 is in the face's affine hull, where F is
    positively homogeneous, so F = 0 at the optimum, which is then also
    reached on a smaller support or at ``g_w = 0``; the one case missed is
    an optimum at ``g_w = 0`` inside such a face (measure zero). Of the
    points, the one with the smallest Frank-Wolfe gap ``F(w) - min_k
    dF/dw_k`` (>= ``F(w) - F(w*)``, 0 at the optimum) is taken: the gap
    grows to first order away from the optimum, F only to second order,
    below float32 resolution. The cost is ``2^K - 1`` K x K systems, so K is
    at most 12 (4095 systems).

    Accuracy, measured in float32 against scipy SLSQP (float64, ``ftol =
    1e-15``, started from 1/K and every vertex; tests/test_aggregators_cagrad.py)
    over 210 random Jacobians, K = 2 .. 8 with 3 to 50 parameters, c in
    {0.2, 0.5, 0.9}, conflicting, aligned, duplicated and zero gradients:
    the update agrees to within 5e-6 of ``max |J|`` (``jax.jit``).

    Degenerate inputs: when ``g_w*`` is 0 (``||g_w*||^2 <= 1e-6 max_k
    ||g_k||^2``, e.g. a zero gradient when the others do not conflict with
    ``g_0``) the direction ``g_w* / ||g_w*||`` is undefined; the update is
    the mean gradient ``g_0`` (the authors' code gets ``g_0`` plus rounding
    noise amplified by ``1 / (||g_w|| + 1e-8)``; torchjd returns 0, which
    lies outside the ball). ``g_0 = 0`` or ``c = 0`` also give the mean.
    Duplicated gradients, K > params and zero gradients never make a NaN.
    The weights are constants for autodiff.

    Args:
        gramian: ``(K, K)`` Gramian ``G_ij = g_i . g_j`` of the term gradients, K <= 12.
        c: radius of the ball relative to ``||g_0||`` (the paper's c; 0.5 in LibMTL).
        rescale: 0 (the paper), 1 (divide by ``1 + c^2``) or 2 (divide by ``1 + c``).

    Returns:
        ``(K,)`` float32 weights (positive, summing to ``1 + c ||g_0|| / ||g_w*||``
        before the rescaling).

    Example:
        >>> # g_1 = (-4, 1, 1), g_2 = (6, 1, 1): g_0 = (1, 1, 1); w* = (1, 0), ||g_w*|| = sqrt(18)
        >>> w = cagrad_weights([[18.0, -22.0], [-22.0, 38.0]])   # c = 0.5
        >>> [round(float(v), 4) for v in w]   # 1/2 + 0.5 sqrt(3) / sqrt(18), 1/2
        [0.7041, 0.5]
    """
    c = arguments.number(c, "c", "CAGrad", low=0.0)
    rescale = int(arguments.choice(rescale, RESCALES, "rescale", "CAGrad"))
    gramian = as_gramian(gramian, "cagrad_weights")
    k = gramian.shape[0]
    if k > MAX_TERMS:
        raise ValueError(
            f"CAGrad: received a ({k}, {k}) gramian; the exact solver enumerates the 2^K - 1 "
            f"supports of the weights and takes at most K = {MAX_TERMS} terms. Combine related "
            f"terms into one (e.g. lossweave.terms.Loss over their sum) to bring K down."
        )
    gramian = ops.stop_gradient(gramian)
    # F's minimiser does not change when G is scaled: solve on max_k ||g_k||^2 = 1.
    scale = ops.max(ops.diagonal(gramian))
    gramian = gramian / ops.where(scale > 0, scale, ops.ones_like(scale))
    mean = ops.full((k,), 1.0 / k, dtype="float32")
    a = ops.matmul(gramian, mean)  # a_k = g_k . g_0
    s = c * ops.sqrt(ops.maximum(ops.sum(a * mean), 0.0))  # sqrt(phi) = c ||g_0||
    points, ok = _candidates(gramian, a, s)
    squared = ops.maximum(ops.einsum("pi,ij,pj->p", points, gramian, points), 0.0)
    norm = ops.sqrt(squared)
    value = ops.matmul(points, a) + s * norm
    nonzero = squared > REL_EPS
    grad = a[None, :] + s * ops.matmul(points, gramian) / ops.where(nonzero, norm, ops.ones_like(norm))[:, None]
    gap = value - ops.min(grad, axis=1)
    usable = ops.logical_and(ops.logical_and(ok, nonzero), ops.isfinite(gap))
    score = ops.where(usable, gap, ops.full_like(gap, np.inf))
    best = ops.argmin(score)
    w = ops.take(points, best, axis=0)
    # A feasible g_w = 0 (F = 0) that no other point beats: the direction is undefined, use g_0.
    zero_wins = ops.logical_and(
        ops.any(ops.logical_and(ok, ops.logical_not(nonzero))), ops.take(value, best) >= -REL_EPS
    )
    use_mean = ops.logical_or(ops.logical_or(s <= 0, ops.logical_not(ops.take(usable, best))), zero_wins)
    n_best = ops.take(norm, best)
    lam = ops.where(use_mean, 0.0, s / ops.where(use_mean, ops.ones_like(n_best), n_best))
    weights = mean + lam * w
    return weights / {0: 1.0, 1: 1.0 + c * c, 2: 1.0 + c}[rescale]


def cagrad(jacobian, c=0.5, rescale=0):
    """The CAGrad update ``cagrad_weights(J J^T, c, rescale) @ J`` (Liu et al. 2021, Algorithm 1).

    Example:
        >>> [round(float(v), 4) for v in cagrad([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])]   # torchjd's example
        [0.1835, 1.2041, 1.2041]
        >>> [round(float(v), 4) for v in cagrad([[1.0, 0.0], [0.0, 1.0]], c=0.0)]   # c = 0: the mean
        [0.5, 0.5]
    """
    return apply_weights(cagrad_weights, jacobian, "cagrad", c=c, rescale=rescale)
