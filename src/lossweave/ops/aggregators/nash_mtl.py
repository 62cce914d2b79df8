"""Nash-MTL (Navon et al., ICML 2022): the Nash bargaining solution ``G alpha = 1 / alpha``."""

import numpy as np
from keras import ops

from lossweave import arguments
from lossweave.ops.aggregators._common import apply_weights, as_gramian

# Newton is in its quadratic phase below this decrement: take the full step.
FULL_STEP = 0.25
# The line search tries the step to 99 % of the boundary and 7 halvings, and the damped step.
HALVINGS = 8
# Solved when every alpha_i (G alpha)_i is within this of 1 (the bargaining equations).
SOLVED = 1e-2
# torch.nn.utils.clip_grad_norm_'s guard, which the authors' clipping goes through.
CLIP_EPS = 1e-6


def _objective(points, gramian):
    """``0.5 a^T G a - sum log a`` of each row of ``points`` (rows must be positive)."""
    return 0.5 * ops.einsum("pi,ij,pj->p", points, gramian, points) - ops.sum(ops.log(points), axis=1)


def _solve_shifted(system, rhs):
    """``x`` with ``system x = rhs`` for ``system = I + (PSD)``: Gauss-Jordan unrolled over K.

    Every pivot of such a matrix is >= 1 (a Schur complement of I plus a PSD
    matrix), so no pivoting is needed, and a pivot that rounding pushed
    below 1 (huge entries) is taken as 1 instead of ~0. ``ops.solve`` would
    raise on TensorFlow and PyTorch where float32 rounding makes it singular.
    """
    k = system.shape[0]
    rows = ops.concatenate([system, rhs[:, None]], axis=1)
    for j in range(k):
        pick = ops.one_hot(j, k, dtype="float32")
        pivot = ops.maximum(rows[j, j], 1.0)
        row = rows[j] / pivot
        # Row i != j loses A_ij times the pivot row; row j becomes it (coefficient pivot - 1).
        coefficient = rows[:, j] * (1.0 - pick) + (pivot - 1.0) * pick
        rows = rows - coefficient[:, None] * row[None, :]
    return rows[:, k]


def _newton_step(alpha, gramian):
    """One damped Newton step on ``f(a) = 0.5 a^T G a - sum log a`` that keeps ``a > 0``.

    In the scaled variable ``u = D^-1 delta`` (``D = diag(alpha)``) the Newton
    system is ``(I + D G D) u = D G alpha - 1``, whose matrix is >= I: never
    singular, whatever G (``_solve_shifted``). ``lam^2 = u . (D G alpha - 1)`` is the Newton
    decrement. f is self-concordant, so the damped step ``1 / (1 + lam)``
    always decreases f by ``lam - log(1 + lam)`` and stays positive; below
    ``lam = 0.25`` the full step is taken (quadratic convergence, and
    ``|u_i| <= lam < 1`` keeps it positive). Above, the step with the lowest
    f among the damped step and the step to 99 % of the boundary and its
    halvings (no fewer decreases than the damped step alone).
    """
    k = gramian.shape[0]
    ga = ops.matmul(gramian, alpha)
    rhs = alpha * ga - 1.0
    system = ops.eye(k, dtype="float32") + alpha[:, None] * gramian * alpha[None, :]
    u = _solve_shifted(system, rhs)
    lam = ops.sqrt(ops.maximum(ops.sum(u * rhs), 0.0))
    top = ops.max(u)
    longest = ops.where(top > 0, ops.minimum(1.0, 0.99 / ops.where(top > 0, top, ops.ones_like(top))), 1.0)
    steps = ops.concatenate(
        [longest * ops.convert_to_tensor(0.5 ** np.arange(HALVINGS), "float32"), ops.reshape(1.0 / (1.0 + lam), (1,))]
    )
    points = alpha[None, :] * (1.0 - steps[:, None] * u[None, :])
    positive = ops.all(points > 0, axis=1)
    value = _objective(ops.where(positive[:, None], points, ops.ones_like(points)), gramian)
    value = ops.where(ops.logical_and(positive, ops.isfinite(value)), value, ops.full_like(value, np.inf))
    # float32 cannot rank f values near the optimum: there, trust Newton.
    pick = ops.where(lam < FULL_STEP, 0, ops.argmin(value))
    return ops.take(points, pick, axis=0)


def _newton_body(i, carry):
    """The loop body (module level: one function object, so eager JAX compiles it once per shape)."""
    alpha, gramian = carry
    return _newton_step(alpha, gramian), gramian


def nash_mtl_solve(gramian, start=None, iterations=20):
    """The Nash bargaining weights ``alpha > 0`` with ``G alpha = 1 / alpha``, and whether it exists.

    Navon, Shamsian, Achituve, Maron, Kawaguchi, Chechik & Fetaya,
    "Multi-Task Learning as a Bargaining Game", ICML 2022, Sec. 3.1 and
    Algorithm 1: the Nash bargaining update is ``d = sum_i alpha_i g_i`` with
    ``G alpha = 1 / alpha``, i.e. ``alpha_i g_i . d = 1`` for every task.

    What is solved, and why it is the paper's problem. The paper (Sec. 3.2)
    and the authors' code (``methods/weight_methods.py``, NashMTL, cvxpy)
    approach the solution by a sequence of convex problems (CCP): minimise
    ``sum_i beta_i + phi(alpha)``, ``beta = G alpha``, ``phi = sum_i log
    alpha_i + log beta_i`` linearised at the previous alpha, subject to
    ``log alpha_i + log beta_i >= 0``, up to ``optim_niter = 20`` times. The
    equations ``G alpha = 1 / alpha`` are exactly the stationarity conditions
    of ``f(alpha) = 0.5 alpha^T G alpha - sum_i log alpha_i`` on alpha > 0,
    which is strictly convex there (its Hessian ``G + diag(1 / alpha^2)`` is
    positive definite for any PSD G, singular included): f has at most one
    minimiser, and it is the bargaining solution. It exists unless a
    non-negative non-zero ``v`` has ``G v = 0`` (a zero gradient, or 0 a
    convex combination of the gradients: a Pareto-stationary point), where
    f is unbounded below and the authors' convex problems are infeasible.
    This minimises f by damped Newton (``_newton_step``: a K x K solve per
    step, inside the compiled step) with a fixed budget (an ``ops.fori_loop``:
    one compiled step body whatever the budget; the K x K elimination in it
    is unrolled over the static, small K), from ``start``
    scaled along its ray to the exact minimiser of f on that ray; the
    authors warm-start from their previous weights too. A test solves the
    paper's sequence of convex problems in float64 (scipy, a log-barrier
    method per problem, started feasible) and finds the same weights (to
    1.6e-6 relative) on conflicting, aligned and duplicated gradients, K = 2
    .. 6. The sequence solves a relaxation of the equations, though, and can
    settle where a task's constraint is slack: on two conflicting gradients
    of norms 12 and 0.15 it stops at ``alpha_2 (G alpha)_2 ~ 8.3``, a point
    with a lower relaxed objective than the bargaining solution; this
    returns the bargaining solution there (tested). The authors' code also
    linearises at its ones start when some ``(G 1)_i < 0``, where ``log
    (G alpha)_i`` is undefined; Newton needs no feasible start.

    Accuracy, measured in float32 (``jax.jit``, the default 20 steps) on
    1800 random Gramians (K = 2 .. 10, 3 to 200 parameters; conflicting,
    aligned, duplicated and differently scaled gradients) against a float64
    Newton solve run to convergence: of the 1630 that have a solution, 1605
    are within 1e-5 of it (relative to ``max alpha``; median 1e-7) and the
    other 25, near-singular with alpha spread over 1 .. 10^4, within 1.3e-3,
    about what rounding G to float32 alone moves the solution by (a float64
    solve of the rounded G is off by 8e-4 on the worst); the 170 without one
    are all flagged. ``G`` is solved normalised by its Frobenius norm (as
    the authors do), which scales alpha by ``sqrt(||G||)``.

    Singular G: duplicated gradients and K > params still have a solution
    (duplicates get equal weights) and are solved. Where there is none, or
    the budget ran out, (``max_i |alpha_i (G alpha)_i - 1| > 0.01``) the
    result is ``start``: the authors keep their previous weights when cvxpy
    fails. The weights are constants for autodiff.

    Args:
        gramian: ``(K, K)`` Gramian ``G_ij = g_i . g_j`` of the term gradients.
        start: ``(K,)`` positive weights to warm-start from and to fall back
            to (the previous step's); ``None``: ones (the authors' initial
            weights).
        iterations: Newton steps (a fixed budget; 20 by default): an int, or
            an int32 scalar tensor computed in the step (0 where a strategy
            keeps its weights, which costs no Newton step).

    Returns:
        ``(alpha, solved)``: ``(K,)`` float32 weights and a bool scalar.

    Example:
        >>> alpha, solved = nash_mtl_solve([[4.0, 0.0], [0.0, 1.0]])   # orthogonal, ||g|| = 2 and 1
        >>> [round(float(v), 4) for v in alpha], bool(solved)           # alpha_i = 1 / ||g_i||
        ([0.5, 1.0], True)
    """
    if ops.is_tensor(iterations):  # a budget chosen inside the compiled step
        iterations = ops.cast(iterations, "int32")
    else:
        iterations = arguments.integer(iterations, "iterations", "NashMTL", low=0)
    gramian = ops.stop_gradient(as_gramian(gramian, "nash_mtl_solve"))
    k = gramian.shape[0]
    if start is None:
        start = ops.ones((k,), "float32")
    start = ops.cast(ops.convert_to_tensor(start), "float32")
    if tuple(start.shape) != (k,):
        raise ValueError(
            f"NashMTL: received start of shape {tuple(start.shape)}; expected ({k},), one positive "
            f"weight per term (the previous step's weights)."
        )
    norm = ops.sqrt(ops.sum(gramian * gramian))
    safe_norm = ops.where(norm > 0, norm, ops.ones_like(norm))
    normalized = gramian / safe_norm
    root = ops.sqrt(safe_norm)
    # G alpha = 1 / alpha with G = n G_n: alpha = alpha_n / sqrt(n).
    usable = ops.logical_and(start > 0, ops.isfinite(start))
    alpha = ops.where(usable, start, ops.ones_like(start)) * root
    curvature = ops.sum(alpha * ops.matmul(normalized, alpha))
    ray = ops.sqrt(k / ops.where(curvature > 0, curvature, ops.ones_like(curvature)))
    alpha = alpha * ops.where(curvature > 0, ray, ops.ones_like(ray))  # argmin of f on the ray
    alpha, _ = ops.fori_loop(0, iterations, _newton_body, (alpha, normalized))
    residual = ops.max(ops.abs(alpha * ops.matmul(normalized, alpha) - 1.0))
    solved = ops.logical_and(ops.logical_and(norm > 0, residual <= SOLVED), ops.all(alpha > 0))
    solved = ops.logical_and(solved, ops.all(ops.isfinite(alpha)))
    return ops.where(solved, alpha / root, start), solved


def clip_to_max_norm(gramian, weights, max_norm=1.0):
    """``weights`` scaled so that the update ``w @ J`` has norm at most ``max_norm``.

    The authors' Nash-MTL clips the shared parameters' gradient,
    ``torch.nn.utils.clip_grad_norm_(shared_parameters, max_norm)``: a factor
    ``min(1, max_norm / (||w @ J|| + 1e-6))``, where ``||w @ J|| = sqrt(w^T G w)``
    needs only the Gramian. ``max_norm = 0`` (their ``if self.max_norm > 0``)
    leaves the weights as they are.

    Example:
        >>> [round(float(v), 4) for v in clip_to_max_norm([[4.0, 0.0], [0.0, 1.0]], [0.5, 1.0])]
        [0.3536, 0.7071]
    """
    gramian = as_gramian(gramian, "clip_to_max_norm")
    weights = ops.cast(ops.convert_to_tensor(weights), "float32")
    if max_norm == 0:
        return weights
    norm = ops.sqrt(ops.maximum(ops.sum(weights * ops.matmul(gramian, weights)), 0.0))
    return weights * ops.minimum(1.0, max_norm / (norm + CLIP_EPS))


def nash_mtl_weights(gramian, start=None, iterations=20, max_norm=1.0):
    """Nash-MTL weights: the bargaining solution, clipped to ``max_norm`` as the authors do.

    ``nash_mtl_solve`` (see there: the paper, the solver, its accuracy and
    the fallback to ``start``) followed by ``clip_to_max_norm``. At the
    solution ``||alpha @ J||^2 = alpha^T G alpha = K``, so with the authors'
    ``max_norm = 1`` the update is always rescaled to norm ~1 for K >= 2.

    Args:
        gramian: ``(K, K)`` Gramian of the term gradients.
        start: ``(K,)`` positive warm start and fallback (``None``: ones).
        iterations: Newton steps.
        max_norm: bound on the update's norm; 0 for none.

    Returns:
        ``(K,)`` float32 weights.

    Example:
        >>> [round(float(v), 4) for v in nash_mtl_weights([[4.0, 0.0], [0.0, 1.0]], max_norm=0.0)]
        [0.5, 1.0]
    """
    max_norm = arguments.number(max_norm, "max_norm", "NashMTL", low=0.0)
    alpha, _ = nash_mtl_solve(gramian, start=start, iterations=iterations)
    return clip_to_max_norm(gramian, alpha, max_norm)


def nash_mtl(jacobian, start=None, iterations=20, max_norm=1.0):
    """The Nash-MTL update ``nash_mtl_weights(J J^T, ...) @ J`` (Navon et al. 2022).

    Example:
        >>> [round(float(v), 4) for v in nash_mtl([[2.0, 0.0], [0.0, 1.0]], max_norm=0.0)]
        [1.0, 1.0]
    """
    return apply_weights(
        nash_mtl_weights, jacobian, "nash_mtl", start=start, iterations=iterations, max_norm=max_norm
    )


def nash_mtl_step(alpha, gramian, step, update_weights_every=1, iterations=20, max_norm=1.0, training=True):
    """Nash-MTL's rule with its kept weights: ``(weights, new_alpha)`` (pure; the strategy's state is ``alpha``).

    Training: ``alpha`` is solved afresh (``nash_mtl_solve``, warm-started
    at the kept ``alpha``) at the steps ``0, N, 2N, ...`` of
    ``N = update_weights_every`` and kept in between (the authors'
    ``update_weights_every``); evaluation keeps it. The weights are
    ``clip_to_max_norm(gramian, alpha, max_norm)``.

    Example:
        >>> import numpy as np
        >>> g = np.array([[2.0, 0.0], [0.0, 1.0]], "float32")
        >>> weights, alpha = nash_mtl_step(np.ones(2, "float32"), g @ g.T, 0, max_norm=0.0)
        >>> [round(float(v), 4) for v in alpha]
        [0.5, 1.0]
    """
    alpha = ops.convert_to_tensor(alpha)
    if training:
        if update_weights_every == 1:
            alpha, _ = nash_mtl_solve(gramian, start=alpha, iterations=iterations)
        else:
            # Between updates the Newton budget is 0, so no step is paid for; not an
            # ops.cond, which TensorFlow fails to run when the Gramian is a constant.
            due = ops.equal(ops.mod(ops.cast(step, "int32"), update_weights_every), 0)
            budget = ops.where(due, iterations, 0)
            solved, _ = nash_mtl_solve(gramian, start=alpha, iterations=budget)
            alpha = ops.where(due, solved, alpha)
    return clip_to_max_norm(gramian, alpha, max_norm), alpha
