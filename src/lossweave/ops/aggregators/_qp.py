"""The small quadratic programs of the aggregators, over a K x K Gramian, inside a compiled step.

Two problems, both convex:

- ``lower_bounded_qp``: ``min_v v^T G v`` subject to ``v >= u``, for several
  lower bounds ``u`` at once (the dual-cone projection of Quinton & Rey
  2024, Prop. 1, Eq. 5: UPGrad, DualProj); ``G`` positive definite;
- ``simplex_qp``: ``min_w w^T G w`` subject to ``w >= 0``, ``sum w = 1``
  (the min-norm point of MGDA, Sener & Koltun 2018, Eq. 3); ``G`` positive
  semidefinite (zero, duplicated, linearly dependent gradients).

Up to ``EXACT_MAX_K`` terms both are solved exactly by enumerating the faces
of the feasible set. On a face (the coordinates that are free, the others at
their bound) the KKT conditions are one linear system, and the optimum is the
face whose solution is primal and dual feasible. All ``2^K`` systems go into
one batched ``ops.solve`` (``ops.inv`` for the simplex, which reuses it), so
there is no loop and the result is exact up to float32 rounding. The winning
face is the one of least KKT violation, not the feasible one of least
objective under some tolerance: rounding in the right face's solution never
rejects it.

Above ``EXACT_MAX_K`` the ``2^K`` systems cost more than they save (256
systems at K = 8, 1024 at K = 10; timings in ``upgrad_weights``), and
``lower_bounded_qp`` runs Lawson & Hanson's active-set method instead
(``_lower_bounded_active_set``): exact when it stops, at most 1.8 K
iterations measured, under a budget of ``3 K``. ``simplex_qp`` has no
fallback (MGDA keeps Frank-Wolfe above the threshold). Projected
Gauss-Seidel, the obvious fixed-sweep alternative, was measured and
rejected: with the Gramian's eigenvalues down to ``reg_eps = 1e-4`` of the
largest, 64 sweeps leave the UPGrad weights 10-100 % off at K = 4..16.

Loops: the active-set iterations are an ``ops.while_loop`` with the fixed
budget as ``maximum_iterations`` (it stops once every problem has
converged); everything else is unrolled over the static K or batched over
the faces.
"""

import itertools

import numpy as np
from keras import ops

from lossweave.ops.aggregators._common import REL_EPS

EXACT_MAX_K = 8
# Ridge on the trace-normalised Gramian in the simplex face systems: without
# it the systems of duplicated or linearly dependent gradients are singular
# (torch.linalg.solve raises on those). PROX_STEPS proximal steps with the
# same matrix take its bias off again.
SIMPLEX_RIDGE = 1e-6
PROX_STEPS = 2
# Simplex faces whose KKT violations are within this of the least one are
# tied (rounding): the least ||w||^2 wins, the largest support.
SIMPLEX_TIE = 1e-6


def faces(k, nonempty=False):
    """``(2^K, K)`` float32 0/1 masks, row f the free coordinates of face f."""
    rows = np.array(list(itertools.product((0.0, 1.0), repeat=k)), "float32")
    return rows[1:] if nonempty else rows


def _finite_or_identity(gramian):
    """``(finite, G or I)``: TensorFlow's solve and inverse raise on a non-finite matrix.

    A NaN or infinite gradient must reach the train step's failed-step gate
    as a NaN update, not stop training with an exception; the solvers run
    on the identity instead and the caller returns NaN (``_nan_unless``).
    """
    finite = ops.all(ops.isfinite(gramian))
    return finite, ops.where(finite, gramian, ops.eye(gramian.shape[0]))


def _nan_unless(finite, x):
    return ops.where(finite, x, ops.full_like(x, float("nan")))


def _kkt_violation(gramian, lower, v):
    """The largest violation of the KKT conditions of ``min v^T G v, v >= u`` at ``v``.

    Primal ``v >= u``; at a coordinate on its bound the multiplier ``(G v)_i
    >= 0``; above it stationarity ``(G v)_i = 0``. ``v`` is ``(..., K)``,
    broadcast against ``lower``; returns ``(...)``.
    """
    gv = ops.matmul(v, gramian)
    primal = ops.max(ops.relu(lower - v), axis=-1)
    dual = ops.max(ops.where(v > lower, ops.abs(gv), ops.relu(-gv)), axis=-1)
    return ops.maximum(primal, dual)


def _face_matrices(gramian, free):
    """``D G D + (I - D)`` for ``D = diag(free)``: free rows ``(G v)_i``, fixed rows ``v_i``.

    Symmetric, and positive definite whenever G is. The fixed coordinates'
    part of ``G v`` goes to the right-hand side (``_face_rhs``).
    """
    k = gramian.shape[0]
    return free[..., :, None] * gramian * free[..., None, :] + (1.0 - free)[..., :, None] * ops.eye(k)


def _face_rhs(gramian, lower, free):
    at_bound = (1.0 - free) * lower
    return at_bound - free * ops.matmul(at_bound, gramian)


def _lower_bounded_faces(gramian, lower):
    """Exact: the stationary point of every face, the least KKT violation per bound."""
    k = gramian.shape[0]
    free = ops.convert_to_tensor(faces(k))  # (F, K)
    rhs = _face_rhs(gramian, lower[None], free[:, None, :])  # (F, n, K)
    v = ops.transpose(ops.solve(_face_matrices(gramian, free), ops.transpose(rhs, (0, 2, 1))), (0, 2, 1))
    # The fixed coordinates exactly at their bound (the solve rounds them).
    v = ops.where(free[:, None, :] > 0, v, ops.broadcast_to(lower[None], ops.shape(v)))
    violation = _kkt_violation(gramian, lower[None], v)  # (F, n)
    pick = ops.one_hot(ops.argmin(violation, axis=0), free.shape[0], dtype="float32")  # (n, F)
    return ops.einsum("nf,fnk->nk", pick, v)


def _lower_bounded_active_set(gramian, lower, iterations):
    """Lawson & Hanson's active-set NNLS on ``s = v - u >= 0``: all bounds at once.

    Lawson & Hanson, "Solving Least Squares Problems" (1974), Ch. 23,
    Algorithm NNLS, one step per iteration: solve the face of the current
    free set; if that point is feasible, move there and free the bound
    coordinate of largest negative gradient ``-(G v)_i`` (none: converged,
    the iterate stays put); if not, step towards it until the first free
    coordinate reaches its bound, and fix the coordinates on their bound.
    Each bound has its own free set. Returns ``(v, done, iterations used)``;
    the last two are for the measurements in the tests.
    """
    k = gramian.shape[0]
    n = lower.shape[0]
    # A gradient component below this is rounding in G v. Not larger: with
    # eigenvalues of G down to 1e-4 of the largest, a gradient of 1e-6
    # still moves the solution by 1e-2.
    tol = 0.1 * REL_EPS * ops.max(ops.diagonal(gramian))

    def body(v, free, done, count):
        matrices, rhs = _face_matrices(gramian, free), _face_rhs(gramian, lower, free)[..., None]
        face = ops.solve(matrices, rhs)
        # One step of iterative refinement: XLA's own LU (TensorFlow's
        # jit_compile) left the update 1e-5 off, 10x the LAPACK solve.
        face = (face + ops.solve(matrices, rhs - ops.matmul(matrices, face)))[..., 0]
        face = ops.where(free > 0, face, lower)
        feasible = ops.all(ops.logical_or(free <= 0, face > lower), axis=-1, keepdims=True)
        # Feasible: move there and free the most violated bound coordinate.
        pull = ops.where(free > 0, -ops.ones_like(face), -ops.matmul(face, gramian))
        add = ops.logical_and(
            ops.max(pull, axis=-1, keepdims=True) > tol,
            ops.one_hot(ops.argmax(pull, axis=-1), k, dtype="bool"),
        )
        # Not feasible: the longest step towards the face that keeps v >= u.
        blocking = ops.logical_and(free > 0, face <= lower)
        room = v - lower
        drop = ops.where(blocking, room - (face - lower), ops.ones_like(room))  # > 0 where blocking
        alpha = ops.clip(ops.min(ops.where(blocking, room / drop, ops.ones_like(room)), axis=-1, keepdims=True), 0.0, 1.0)
        stepped = ops.maximum(v + alpha * (face - v), lower)
        new_free = ops.where(
            feasible,
            ops.logical_or(free > 0, add),
            ops.logical_and(free > 0, stepped > lower),
        )
        converged = ops.logical_and(feasible, ops.logical_not(ops.any(add, axis=-1, keepdims=True)))
        done = ops.logical_or(done, converged)
        count = count + ops.cast(ops.logical_not(done), "int32")
        return ops.where(feasible, face, stepped), ops.cast(new_free, "float32"), done, count

    def cond(v, free, done, count):
        return ops.logical_not(ops.all(done))

    start = (lower, ops.zeros((n, k), "float32"), ops.zeros((n, 1), "bool"), ops.zeros((n, 1), "int32"))
    v, _, done, count = ops.while_loop(cond, body, start, maximum_iterations=iterations)
    return v, done, count


def lower_bounded_qp(gramian, lower, exact_max_k=EXACT_MAX_K, iterations=None):
    """``argmin_v v^T G v`` subject to ``v >= u``, for each row ``u`` of ``lower``.

    Args:
        gramian: ``(K, K)`` float32, symmetric positive definite (the caller
            regularises it).
        lower: ``(n, K)`` lower bounds, one problem per row.
        exact_max_k: faces up to this K, the active-set method above.
        iterations: the active-set budget; default ``3 K``.

    Returns:
        ``(n, K)`` float32 solutions, each ``>= u`` exactly.
    """
    k = gramian.shape[0]
    lower = ops.cast(ops.convert_to_tensor(lower), "float32")
    finite, gramian = _finite_or_identity(gramian)
    if k <= exact_max_k:
        v = _lower_bounded_faces(gramian, lower)
    else:
        v = _lower_bounded_active_set(gramian, lower, 3 * k if iterations is None else int(iterations))[0]
    return _nan_unless(finite, ops.maximum(v, lower))


def simplex_qp(gramian):
    """``argmin_w w^T G w`` over the simplex, exactly, by its ``2^K - 1`` faces.

    On the face of support S the KKT system is ``G_SS w_S = lambda 1``,
    ``sum w_S = 1``, ``w = 0`` off S. It is solved for the trace-normalised
    ``G + SIMPLEX_RIDGE I`` (never singular), then ``PROX_STEPS`` proximal
    steps ``w <- argmin_face w^T G w + ridge ||w - w_prev||^2`` (the same
    matrix, so one inverse per face) remove the ridge's bias where the
    face's Gramian is regular and keep the least-norm weights where it is
    singular. The face of least KKT violation (``w_S >= 0``, ``(G w)_i >=
    w^T G w`` off S, with the unregularised G) wins; ties within
    ``SIMPLEX_TIE`` go to the least ``||w||^2``. Duplicated gradients
    (``||g_i - g_j||^2 <= REL_EPS max_k ||g_k||^2``) then share their
    group's weight equally: the face solve splits it by rounding.

    Args:
        gramian: ``(K, K)`` float32, symmetric positive semidefinite, K >= 2.

    Returns:
        ``(K,)`` float32 weights on the simplex.
    """
    k = gramian.shape[0]
    finite, gramian = _finite_or_identity(gramian)
    trace = ops.sum(ops.diagonal(gramian))
    # The optimum does not depend on the scale; the ridge and the tie are relative to it.
    gramian = gramian / ops.where(trace > 0, trace, ops.ones_like(trace))
    free = ops.convert_to_tensor(faces(k, nonempty=True))  # (F, K)
    fixed = 1.0 - free
    n_faces = free.shape[0]
    # [[D (G + ridge I) D + (I - D), d], [d^T, 0]] [w; -lambda] = [r; 1], d = diag(D):
    # free rows ((G + ridge I) w)_i - lambda = r_i, fixed rows w_i = 0.
    top = _face_matrices(gramian + SIMPLEX_RIDGE * ops.eye(k), free)
    system = ops.concatenate(
        [
            ops.concatenate([top, free[:, :, None]], axis=2),
            ops.concatenate([free[:, None, :], ops.zeros((n_faces, 1, 1))], axis=2),
        ],
        axis=1,
    )
    inverse = ops.inv(system)[:, :k, :]  # (F, K, K + 1)
    w = inverse[:, :, k]  # r = 0: the ridge problem's stationary point
    for _ in range(PROX_STEPS):  # unrolled: r = ridge * w_prev
        rhs = ops.concatenate([SIMPLEX_RIDGE * free * w, ops.ones((n_faces, 1))], axis=1)
        w = ops.einsum("fij,fj->fi", inverse, rhs)
    w = free * w
    gw = ops.matmul(w, gramian)
    norm = ops.sum(w * gw, axis=1, keepdims=True)  # w^T G w, lambda of the face
    primal = ops.max(ops.relu(-w), axis=1)
    dual = ops.max(fixed * ops.relu(norm - gw), axis=1)
    violation = ops.maximum(primal, dual)
    tied = violation <= ops.min(violation) + SIMPLEX_TIE
    size = ops.where(tied, ops.sum(w * w, axis=1), ops.full((n_faces,), float("inf")))
    w = ops.relu(ops.einsum("f,fk->k", ops.one_hot(ops.argmin(size), n_faces, dtype="float32"), w))
    # Duplicated gradients: any split of their weight is optimal, and the
    # face solve splits it by rounding (its system is singular up to the
    # ridge). Give each copy the mean of its group, the least-norm split.
    diagonal = ops.diagonal(gramian)
    distance = diagonal[:, None] + diagonal[None, :] - 2.0 * gramian  # ||g_i - g_j||^2
    same = ops.cast(distance <= REL_EPS * ops.max(diagonal), "float32")
    w = ops.matmul(same, w) / ops.sum(same, axis=1)
    return _nan_unless(finite, w / ops.sum(w))
