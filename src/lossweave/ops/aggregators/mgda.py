"""MGDA (Sener & Koltun, NeurIPS 2018): the min-norm point of the gradients' convex hull."""

from keras import ops

from lossweave import _backend as backend
from lossweave import arguments
from lossweave.ops.aggregators._common import REL_EPS, apply_weights, as_gramian
from lossweave.ops.aggregators._qp import EXACT_MAX_K, simplex_qp

NORMALIZATIONS = ("none", "l2", "loss", "loss+")


def gradient_normalizers(gramian, losses=None, normalization="none"):
    """Per-term gradient normalisers ``n_k`` of the MGDA authors' code.

    The options of ``gradient_normalizers`` in Sener & Koltun's
    ``multi_task/min_norm_solvers.py`` (not part of the paper):

    ===========  ==========================
    ``"none"``   ``1``
    ``"l2"``     ``||g_k||``
    ``"loss"``   ``L_k``
    ``"loss+"``  ``L_k * ||g_k||``
    ===========  ==========================

    A normaliser that is zero, negative or not finite (a zero gradient under
    ``"l2"``, a non-positive loss under ``"loss"``) is replaced by 1: that
    term is left unnormalised instead of divided by zero or flipped in sign.

    Args:
        gramian: ``(K, K)`` Gramian of the term gradients.
        losses: ``(K,)`` term losses; needed by ``"loss"`` and ``"loss+"``.
        normalization: one of ``"none"``, ``"l2"``, ``"loss"``, ``"loss+"``.

    Returns:
        ``(K,)`` float32 positive normalisers.

    Example:
        >>> [float(n) for n in gradient_normalizers([[9., 0.], [0., 0.]], normalization="l2")]
        [3.0, 1.0]
    """
    gramian = as_gramian(gramian, "gradient_normalizers")
    k = gramian.shape[0]
    arguments.choice(normalization, NORMALIZATIONS, "normalization", "MGDA")
    if normalization == "none":
        return ops.ones((k,), dtype="float32")
    norms = ops.sqrt(ops.maximum(ops.diagonal(gramian), 0.0))
    if normalization == "l2":
        scale = norms
    else:
        if losses is None:
            raise ValueError(
                f"MGDA: normalization={normalization!r} divides each gradient by its "
                f"term's loss, but received losses=None; pass the (K,) = ({k},) term "
                f"losses, or use normalization='none' or 'l2'."
            )
        losses = ops.cast(ops.convert_to_tensor(losses), "float32")
        if tuple(losses.shape) != (k,):
            raise ValueError(
                f"MGDA: received losses of shape {tuple(losses.shape)}; expected one "
                f"loss per term, shape ({k},), in the order of the gramian's rows."
            )
        scale = losses if normalization == "loss" else losses * norms
    usable = ops.logical_and(ops.isfinite(scale), scale > 0)
    return ops.where(usable, scale, ops.ones_like(scale))


def _min_norm_segment(aa, ab, bb, tie):
    """``gamma`` in [0, 1] minimising ``||gamma a + (1 - gamma) b||^2``: Algorithm 1.

    From the inner products ``aa = a.a``, ``ab = a.b``, ``bb = b.b``. The
    paper's cases: ``a.b >= a.a`` -> 1, ``a.b >= b.b`` -> 0, else
    ``(b - a).b / ||a - b||^2``; both (``a == b``, any gamma is optimal) ->
    ``tie``. The comparisons allow float32 rounding, and the interior formula
    is only reached with a positive denominator.
    """
    slack = REL_EPS * ops.maximum(ops.abs(aa), ops.abs(bb))
    a_wins = ab >= aa - slack
    b_wins = ab >= bb - slack
    denominator = (aa - ab) + (bb - ab)  # ||a - b||^2, both parts > 0 when reached
    safe = ops.where(denominator > 0, denominator, ops.ones_like(denominator))
    inner = ops.clip((bb - ab) / safe, 0.0, 1.0)
    gamma = ops.where(a_wins, ops.ones_like(inner), ops.where(b_wins, ops.zeros_like(inner), inner))
    return ops.where(ops.logical_and(a_wins, b_wins), tie * ops.ones_like(inner), gamma)


def _frank_wolfe(gramian, iterations, tolerance):
    """Algorithm 2's FRANKWOLFESOLVER on a ``(K, K)`` Gramian, K >= 3.

    A compiled step (JAX, TensorFlow) runs it as an ``ops.while_loop``; eager
    PyTorch runs the same iterations on the host's scalars
    (``lossweave._backend.frank_wolfe``: the loop's ~30 ops per step of
    dispatch cost ~130 ms at K = 10, the scalar loop ~1.5 ms).
    """
    # Two loops of one rule, on purpose: this one in keras.ops (compiled inside the step on
    # JAX/TF) and lossweave._backend.frank_wolfe_on_host (eager PyTorch, Python floats on a
    # float64 copy). Sharing the rule by running this body over NumPy was tried: 5x the
    # host loop's CPU time (11.2 against 2.2 ms for 250 steps at K = 10: ~25 NumPy calls
    # on 0-d arrays per step), ~20 % of PyTorch's K = 10 MGDA step. Kept equal by
    # tests/test_aggregators.py::test_mgda_frank_wolfe_host_loop_equals_the_ops_loop.
    solved = backend.frank_wolfe(gramian, iterations, tolerance, REL_EPS)
    if solved is not None:
        return solved
    k = gramian.shape[0]
    diagonal = ops.diagonal(gramian)

    def body(alpha, change):
        ga = ops.matmul(gramian, alpha)  # (G alpha)_r = g_r . d, d = sum_t alpha_t g_t
        t = ops.argmin(ga)
        vertex = ops.one_hot(t, k, dtype="float32")
        # Exact line search between d and the vertex g_t (Algorithm 1, a = g_t, b = d);
        # tie (g_t == d): stay.
        gamma = _min_norm_segment(ops.sum(vertex * diagonal), ops.min(ga), ops.sum(alpha * ga), 0.0)
        new = (1.0 - gamma) * alpha + gamma * vertex
        return new, ops.sum(ops.abs(new - alpha))

    def cond(alpha, change):
        return change >= tolerance

    start = (ops.full((k,), 1.0 / k, dtype="float32"), ops.convert_to_tensor(float("inf"), "float32"))
    alpha, _ = ops.while_loop(cond, body, start, maximum_iterations=iterations)
    # Convex combinations stay on the simplex; renormalise away the rounding.
    return alpha / ops.sum(alpha)


def mgda_weights(
    gramian, losses=None, normalization="none", iterations=250, tolerance=1e-5, exact_max_k=EXACT_MAX_K
):
    """MGDA weights: the min-norm point of the convex hull of the term gradients.

    Sener & Koltun, "Multi-Task Learning as Multi-Objective Optimization",
    NeurIPS 2018. Solves Sec. 3.1, Eq. 3::

        min_w || sum_k w_k g_k ||^2   subject to  w_k >= 0,  sum_k w_k = 1

    K = 2: the closed form of Algorithm 1 (``w_1 = clip((g_2 - g_1) . g_2 /
    ||g_1 - g_2||^2, 0, 1)``).

    3 <= K <= ``exact_max_k`` (8): exactly, by the KKT conditions on each of
    the simplex's ``2^K - 1`` faces (support S: ``G_SS w_S = lambda 1``,
    ``sum w_S = 1``), all solved in one batched ``ops.inv``, and the face
    whose solution is primal and dual feasible (``w_S >= 0``, ``(G w)_i >=
    w^T G w`` off S) kept (``lossweave.ops.aggregators._qp.simplex_qp``). No
    loop; not in the paper, which solves Eq. 3 iteratively, but the same
    optimum.

    K > ``exact_max_k``: the Frank-Wolfe solver of Algorithm 2: start from
    ``w = 1/K``; repeat ``t = argmin_r (G w)_r``, exact line search
    (Algorithm 1) between the current point ``d = w @ J`` and ``g_t``,
    ``w <- (1 - gamma) w + gamma e_t``; until the step's L1 change
    ``|gamma| ||e_t - w||_1 < tolerance`` or after ``iterations`` steps (the
    authors' ``MAX_ITER = 250``, ``STOP_CRIT = 1e-5``). The loop is a
    ``while_loop`` with that fixed budget, so it runs inside the compiled
    step; ``iterations`` and ``tolerance`` apply only there
    (``exact_max_k=2`` gives Algorithm 2 for every K >= 3). This is the
    paper's algorithm; the authors' code starts both its solvers from the
    best pair of gradients instead of 1/K, and its training script calls the
    projected-gradient one (``find_min_norm_element``), not
    ``find_min_norm_element_FW``.

    Accuracy: the solution ``d`` satisfies the optimality condition
    ``d . g_k >= ||d||^2 - eps`` for every k. Measured in float32 over
    random Gramians (rows of N(0, 1) * U(0.1, 3) with 3, 10 and 100
    parameters; also zero, duplicated and rank-2 rows), the gap ``eps``
    relative to ``max_k ||g_k||^2`` is at most 1e-7 for K = 2 (closed form)
    and 3e-7 for K = 3..8 (faces), where ``||d||^2`` is within 2e-7 of the
    float64 minimum. Frank-Wolfe with the defaults, for K = 3 .. 8: at most
    2.8e-3, 2.5e-3, 3.1e-3, 2.0e-3, 2.0e-3, 2.7e-3 (medians 5e-7 to 2e-4),
    ``||d||^2`` up to 2.8e-3 of ``max_k ||g_k||^2`` above the minimum; it
    converges as O(1 / iterations) and most solves use the whole budget.
    Time of one call at K = 4 / 6 (best of 3 x 100, two loaded CPU cores):
    faces 0.05 / 0.17 ms in ``jax.jit``, 0.8 / 1.9 ms in ``tf.function``,
    1.8 / 1.5 ms in PyTorch (eager), against Frank-Wolfe's 0.02 / 0.03 ms,
    11 / 11 ms and 103 / 126 ms; with XLA on TensorFlow 0.6 / 1.5 ms
    against 0.5 / 0.5 ms (the loop is compiled there, as on JAX). Since
    issue 21, PyTorch runs the Frank-Wolfe iterations on a float64 host copy
    of the Gramian (``lossweave._backend.frank_wolfe``): ~1.5 ms for 250
    iterations at K = 10, against ~130 ms for the eager loop.

    Normalisation (the authors' code, ``gradient_normalizers``; not in the
    paper, which is ``"none"``): the weights are solved on the normalised
    gradients ``g_k / n_k``, i.e. on the Gramian ``G_ij / (n_i n_j)``, and,
    as in the authors' ``train_multi_task.py`` (``scale[t] = sol[i]``, then
    ``loss = sum_t scale[t] * loss_t`` on the *unnormalised* losses),
    returned as weights for the raw gradients: the update is
    ``sum_k w_k g_k`` with ``w`` on the simplex. That update is not the
    min-norm point of the normalised gradients; that one is
    ``sum_k (w_k / n_k) g_k``, i.e. these weights divided by
    ``gradient_normalizers(gramian, losses, normalization)``.

    Degenerate inputs: a zero gradient makes the min-norm point 0 (a
    Pareto-stationary point, the update is 0) and, unless other gradients
    also combine to 0, all the weight goes to that term; where several
    weightings give the min-norm point (duplicated gradients) the exact
    solver returns the one of least ``||w||``, so identical gradients share
    the weight equally (Frank-Wolfe keeps its start 1/K there too); a
    rank-deficient Gramian is fine. The weights are constants for autodiff
    (the authors solve on detached gradients).

    Args:
        gramian: ``(K, K)`` Gramian ``G_ij = g_i . g_j`` of the term gradients.
        losses: ``(K,)`` term losses, for ``normalization="loss"``/``"loss+"``.
        normalization: ``"none"`` (the paper), ``"l2"``, ``"loss"`` or
            ``"loss+"``: see ``gradient_normalizers``.
        iterations: Frank-Wolfe step budget (K > ``exact_max_k``).
        tolerance: Frank-Wolfe stops when a step changes the weights by less
            than this (L1).
        exact_max_k: the exact solver up to this K (its cost grows as 2^K),
            Frank-Wolfe above.

    Returns:
        ``(K,)`` float32 weights on the simplex.

    Example:
        >>> w = mgda_weights([[1., 0.], [0., 4.]])   # orthogonal g_1, g_2 with ||g_2|| = 2
        >>> [round(float(v), 4) for v in w]          # gamma = 4 / 5
        [0.8, 0.2]
        >>> g = [[1., 0., 0.], [0., 4., 0.], [0., 0., 4.]]
        >>> [round(float(v), 4) for v in mgda_weights(g)]
        [0.6667, 0.1667, 0.1667]
    """
    iterations = arguments.integer(iterations, "iterations", "MGDA", low=0)
    tolerance = arguments.number(tolerance, "tolerance", "MGDA", low=0.0)
    # 2 means Frank-Wolfe for every K >= 3; above 12 the 2^K face systems do not fit a step.
    exact_max_k = arguments.integer(exact_max_k, "exact_max_k", "MGDA", low=2, high=12)
    gramian = as_gramian(gramian, "mgda_weights")
    k = gramian.shape[0]
    normalizers = gradient_normalizers(gramian, losses, normalization)
    if k == 1:
        return ops.ones((1,), dtype="float32")
    gramian = ops.stop_gradient(gramian / (normalizers[:, None] * normalizers[None, :]))
    if k == 2:
        gamma = _min_norm_segment(gramian[0, 0], gramian[0, 1], gramian[1, 1], 0.5)
        return ops.stack([gamma, 1.0 - gamma])
    if k <= exact_max_k:
        return simplex_qp(gramian)
    return _frank_wolfe(gramian, int(iterations), float(tolerance))


def mgda(jacobian, losses=None, normalization="none", iterations=250, tolerance=1e-5, exact_max_k=EXACT_MAX_K):
    """The MGDA update ``mgda_weights(J J^T, ...) @ J`` (Sener & Koltun 2018).

    With ``normalization="none"`` this is the min-norm element of the convex
    hull of the term gradients, a common descent direction of every term
    (or 0 at a Pareto-stationary point). Arguments as in ``mgda_weights``.

    Example:
        >>> [round(float(v), 4) for v in mgda([[1., 0.], [0., 2.]])]
        [0.8, 0.4]
    """
    return apply_weights(
        mgda_weights,
        jacobian,
        "mgda",
        losses=losses,
        normalization=normalization,
        iterations=iterations,
        tolerance=tolerance,
        exact_max_k=exact_max_k,
    )
