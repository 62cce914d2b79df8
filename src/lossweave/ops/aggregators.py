"""Gradient aggregators: K per-term gradients in, one update out (pure functions).

Every aggregator here returns an update that is a linear combination of the
term gradients, ``update = w @ J`` for a ``(K, params)`` Jacobian ``J`` whose
row k is term k's gradient of the shared parameters. The weights ``w`` depend
on the gradients only through their inner products, so each aggregator comes
as two functions (the split torchjd makes):

- ``<name>_weights(gramian, ...)``: the ``(K,)`` weights from the Gramian
  ``G = J J^T`` (``G_ij = g_i . g_j``), which a train step can compute once
  and which stays ``(K, K)`` whatever the parameter count;
- ``<name>(jacobian, ...)``: the ``(params,)`` update
  ``<name>_weights(jacobian @ jacobian.T, ...) @ jacobian``, for custom
  training loops and tests.

=============  ============================================  ===============================
aggregator     weights                                       paper
=============  ============================================  ===============================
``mean``       ``1 / K``                                     (equal weighting)
``total``      ``1``                                         (the plain sum of the losses)
``mgda``       min-norm point of the gradients' convex hull  Sener & Koltun, NeurIPS 2018
``pcgrad``     sum of the conflict-projected gradients       Yu et al., NeurIPS 2020
=============  ============================================  ===============================

The sum is called ``total`` (and ``total_weights``): a module-level ``sum``
would shadow the builtin for anyone who star-imports this module.

Everything runs inside a compiled step (``jax.jit``, ``tf.function``, torch):
``keras.ops`` only, loops unrolled over the static K or bounded by a fixed
iteration budget, float32 whatever the input dtype, and every division
guarded, so a zero, duplicated or linearly dependent gradient never makes a
NaN. Non-finite gradients are not repaired: they propagate to the update,
where the train step's failed-step gate catches them.
"""

from keras import ops
from keras import random

NORMALIZATIONS = ("none", "l2", "loss", "loss+")

# Inner products are float32: within this fraction of the largest one, two
# values are treated as equal (a tie, a zero gradient), so that rounding noise
# never drives a step.
_REL_EPS = 1e-6
# A term gradient with ||g_j||^2 below this fraction of the largest squared
# norm counts as zero: PCGrad does not project onto it (no division by ~0).
_ZERO_GRAD = 1e-12


def _gramian(gramian, what):
    """The Gramian as a symmetric float32 ``(K, K)`` tensor with a static K."""
    gramian = ops.convert_to_tensor(gramian)
    shape = tuple(gramian.shape)
    if len(shape) != 2 or shape[0] is None or shape[0] != shape[1]:
        raise ValueError(
            f"{what}: received a gramian of shape {shape}; expected a square (K, K) "
            f"matrix with a static K, G[i, j] = g_i . g_j for the K term gradients "
            f"(jacobian @ jacobian.T for a (K, params) jacobian)."
        )
    gramian = ops.cast(gramian, "float32")
    # J J^T is symmetric up to rounding; symmetrise so both triangles agree.
    return 0.5 * (gramian + ops.transpose(gramian))


def _jacobian(jacobian, what):
    jacobian = ops.convert_to_tensor(jacobian)
    shape = tuple(jacobian.shape)
    if len(shape) != 2 or shape[0] is None:
        raise ValueError(
            f"{what}: received a jacobian of shape {shape}; expected a 2-D (K, params) "
            f"tensor with a static K, row k the flattened gradient of term k. "
            f"Stack the flattened per-term gradients (ops.stack of ops.reshape(g, (-1,)))."
        )
    return ops.cast(jacobian, "float32")


def _apply(weights_fn, jacobian, what, **kwargs):
    jacobian = _jacobian(jacobian, what)
    weights = weights_fn(ops.matmul(jacobian, ops.transpose(jacobian)), **kwargs)
    return ops.matmul(weights, jacobian)


def mean_weights(gramian):
    """Equal weights ``1 / K``: the update is the mean of the term gradients.

    Args:
        gramian: ``(K, K)`` Gramian of the term gradients (only K is read).

    Returns:
        ``(K,)`` float32 weights.

    Example:
        >>> [float(w) for w in mean_weights([[1., 0.], [0., 4.]])]
        [0.5, 0.5]
    """
    k = _gramian(gramian, "mean_weights").shape[0]
    return ops.full((k,), 1.0 / k, dtype="float32")


def mean(jacobian):
    """The mean of the K term gradients, ``mean_weights(J J^T) @ J``.

    Args:
        jacobian: ``(K, params)``, row k term k's gradient.

    Returns:
        ``(params,)`` float32 update.

    Example:
        >>> [float(v) for v in mean([[1., 0.], [0., 4.]])]
        [0.5, 2.0]
    """
    return _apply(mean_weights, jacobian, "mean")


def total_weights(gramian):
    """Weights of one: the update is the sum of the term gradients.

    This is the gradient of the unweighted sum of the losses. Named ``total``
    rather than ``sum`` so that it does not shadow the builtin.

    Args:
        gramian: ``(K, K)`` Gramian of the term gradients (only K is read).

    Returns:
        ``(K,)`` float32 ones.

    Example:
        >>> [float(w) for w in total_weights([[1., 0.], [0., 4.]])]
        [1.0, 1.0]
    """
    k = _gramian(gramian, "total_weights").shape[0]
    return ops.ones((k,), dtype="float32")


def total(jacobian):
    """The sum of the K term gradients, ``total_weights(J J^T) @ J``.

    Example:
        >>> [float(v) for v in total([[1., 0.], [0., 4.]])]
        [1.0, 4.0]
    """
    return _apply(total_weights, jacobian, "total")


# ---------------------------------------------------------------------------
# MGDA (Sener & Koltun 2018)


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
    gramian = _gramian(gramian, "gradient_normalizers")
    k = gramian.shape[0]
    if normalization not in NORMALIZATIONS:
        raise ValueError(
            f"MGDA: received normalization={normalization!r}; expected one of "
            f"{', '.join(repr(n) for n in NORMALIZATIONS)} (the options of the "
            f"authors' gradient_normalizers)."
        )
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
    slack = _REL_EPS * ops.maximum(ops.abs(aa), ops.abs(bb))
    a_wins = ab >= aa - slack
    b_wins = ab >= bb - slack
    denominator = (aa - ab) + (bb - ab)  # ||a - b||^2, both parts > 0 when reached
    safe = ops.where(denominator > 0, denominator, ops.ones_like(denominator))
    inner = ops.clip((bb - ab) / safe, 0.0, 1.0)
    gamma = ops.where(a_wins, ops.ones_like(inner), ops.where(b_wins, ops.zeros_like(inner), inner))
    return ops.where(ops.logical_and(a_wins, b_wins), tie * ops.ones_like(inner), gamma)


def _frank_wolfe(gramian, iterations, tolerance):
    """Algorithm 2's FRANKWOLFESOLVER on a ``(K, K)`` Gramian, K >= 3."""
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


def mgda_weights(gramian, losses=None, normalization="none", iterations=250, tolerance=1e-5):
    """MGDA weights: the min-norm point of the convex hull of the term gradients.

    Sener & Koltun, "Multi-Task Learning as Multi-Objective Optimization",
    NeurIPS 2018. Solves Sec. 3.1, Eq. 3::

        min_w || sum_k w_k g_k ||^2   subject to  w_k >= 0,  sum_k w_k = 1

    with the closed form of Algorithm 1 for K = 2 (``w_1 = clip((g_2 - g_1)
    . g_2 / ||g_1 - g_2||^2, 0, 1)``) and for K > 2 the Frank-Wolfe solver of
    Algorithm 2: start from ``w = 1/K``; repeat ``t = argmin_r (G w)_r``,
    exact line search (Algorithm 1) between the current point ``d = w @ J``
    and ``g_t``, ``w <- (1 - gamma) w + gamma e_t``; until the step's L1
    change ``|gamma| ||e_t - w||_1 < tolerance`` or after ``iterations``
    steps (the authors' ``MAX_ITER = 250``, ``STOP_CRIT = 1e-5``). The loop
    is a ``while_loop`` with that fixed budget, so it runs inside the compiled
    step. This is the paper's algorithm; the authors' code starts both its
    solvers from the best pair of gradients instead of 1/K, and its training
    script calls the projected-gradient one (``find_min_norm_element``), not
    ``find_min_norm_element_FW``.

    Accuracy: the solution ``d`` satisfies the optimality condition
    ``d . g_k >= ||d||^2 - eps`` for every k. Measured in float32 over 200
    random Gramians per cell (rows of N(0, 1) * U(0.1, 3) with 3, 10 and 100
    parameters), with the defaults the gap ``eps`` relative to
    ``max_k ||g_k||^2`` is at most 1e-7 for K = 2 (closed form) and, for
    K = 3 .. 8, at most 2.8e-3, 2.5e-3, 3.1e-3, 2.0e-3, 2.0e-3, 2.7e-3
    (medians 5e-7 to 2e-4); ``||d||^2`` then exceeds the exact minimum by at
    most 2.8e-3 of ``max_k ||g_k||^2``. Most K > 2 solves use the whole
    budget: Frank-Wolfe converges as O(1 / iterations), so a larger budget
    buys accuracy about linearly.

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
    also combine to 0, all the weight goes to that term; identical gradients
    keep the starting weights 1/K (every point is optimal); a rank-deficient
    Gramian is fine. The weights are constants for autodiff (the authors
    solve on detached gradients).

    Args:
        gramian: ``(K, K)`` Gramian ``G_ij = g_i . g_j`` of the term gradients.
        losses: ``(K,)`` term losses, for ``normalization="loss"``/``"loss+"``.
        normalization: ``"none"`` (the paper), ``"l2"``, ``"loss"`` or
            ``"loss+"``: see ``gradient_normalizers``.
        iterations: Frank-Wolfe step budget (K > 2).
        tolerance: stop when a step changes the weights by less than this (L1).

    Returns:
        ``(K,)`` float32 weights on the simplex.

    Example:
        >>> w = mgda_weights([[1., 0.], [0., 4.]])   # orthogonal g_1, g_2 with ||g_2|| = 2
        >>> [round(float(v), 4) for v in w]          # gamma = 4 / 5
        [0.8, 0.2]
    """
    if int(iterations) != iterations or iterations < 0 or not tolerance >= 0:
        raise ValueError(
            f"MGDA: received iterations={iterations!r}, tolerance={tolerance!r}; expected "
            f"an integer iterations >= 0 and a tolerance >= 0 (the authors use 250 and 1e-5)."
        )
    gramian = _gramian(gramian, "mgda_weights")
    k = gramian.shape[0]
    normalizers = gradient_normalizers(gramian, losses, normalization)
    if k == 1:
        return ops.ones((1,), dtype="float32")
    gramian = ops.stop_gradient(gramian / (normalizers[:, None] * normalizers[None, :]))
    if k == 2:
        gamma = _min_norm_segment(gramian[0, 0], gramian[0, 1], gramian[1, 1], 0.5)
        return ops.stack([gamma, 1.0 - gamma])
    return _frank_wolfe(gramian, int(iterations), float(tolerance))


def mgda(jacobian, losses=None, normalization="none", iterations=250, tolerance=1e-5):
    """The MGDA update ``mgda_weights(J J^T, ...) @ J`` (Sener & Koltun 2018).

    With ``normalization="none"`` this is the min-norm element of the convex
    hull of the term gradients, a common descent direction of every term
    (or 0 at a Pareto-stationary point). Arguments as in ``mgda_weights``.

    Example:
        >>> [round(float(v), 4) for v in mgda([[1., 0.], [0., 2.]])]
        [0.8, 0.4]
    """
    return _apply(
        mgda_weights,
        jacobian,
        "mgda",
        losses=losses,
        normalization=normalization,
        iterations=iterations,
        tolerance=tolerance,
    )


# ---------------------------------------------------------------------------
# PCGrad (Yu et al. 2020)


def _pcgrad_order(k, seed, order):
    """``(K, K - 1)`` int32: row i, the other tasks in task i's projection order."""
    if (seed is None) == (order is None):
        raise ValueError(
            f"PCGrad: received seed={seed!r} and order={'None' if order is None else 'given'}; "
            f"expected exactly one: a seed (an int or a keras.random.SeedGenerator) that "
            f"draws each task's random order, or an explicit order (tests)."
        )
    if order is None:
        # One random permutation of the others per task: argsort of uniform
        # noise with the diagonal pushed last, which drops task i itself.
        noise = random.uniform((k, k), dtype="float32", seed=seed)
        noise = ops.where(ops.eye(k) > 0, 2.0 * ops.ones_like(noise), noise)
        return ops.cast(ops.argsort(noise, axis=-1)[:, : k - 1], "int32")
    if not ops.is_tensor(order):  # a concrete order: check it now
        rows = [[int(j) for j in row] for row in order]
        bad = [i for i, row in enumerate(rows) if sorted(row) != [j for j in range(k) if j != i]]
        if len(rows) != k or bad:
            raise ValueError(
                f"PCGrad: received order={rows}; expected K = {k} rows, row i a "
                f"permutation of the other tasks {{0..{k - 1}}} minus i (row "
                f"{bad[0] if bad else len(rows)} is not)."
            )
    order = ops.convert_to_tensor(order)
    if tuple(order.shape) != (k, k - 1):
        raise ValueError(
            f"PCGrad: received an order of shape {tuple(order.shape)}; expected "
            f"(K, K - 1) = ({k}, {k - 1}): row i the other tasks in the order task "
            f"i's gradient is projected on them."
        )
    return ops.cast(order, "int32")


def pcgrad_weights(gramian, seed=None, order=None):
    """PCGrad weights: the projected gradients' sum as a combination of the originals.

    Yu, Kumar, Gupta, Levine, Hausman & Finn, "Gradient Surgery for
    Multi-Task Learning", NeurIPS 2020, Algorithm 1: for each task i,
    ``g_i^PC = g_i``; for each other task j (j != i) in random order, if
    ``g_i^PC . g_j < 0`` then ``g_i^PC -= (g_i^PC . g_j) / ||g_j||^2 g_j``;
    the update is ``sum_i g_i^PC`` (line 8).

    The projections are onto the *original* ``g_j``, as in the paper and in
    both reference codes (the authors' ``tianheyu927/PCGrad`` TensorFlow
    optimizer and ``WeiChengTseng/Pytorch-PCGrad``). This follows the paper
    where those codes differ from it: the others are visited in a fresh
    random order per task (the authors' TF code never uses its shuffled
    losses, so its order is fixed), task i itself is not visited (both codes
    include it, a no-op unless ``g_i^PC . g_i < 0``), and the projected
    gradients are summed (Pytorch-PCGrad averages them over the shared
    parameters, 1/K of this update, whatever its ``reduction``: its
    ``if self._reduction:`` test is true for ``"sum"`` too).

    Each ``g_i^PC`` stays a linear combination ``sum_m C_im g_m`` of the
    originals, so the projections only need Gramian entries:
    ``g_i^PC . g_j = (C G)_ij``; the weights are the column sums of ``C``.
    A zero ``g_j`` (``||g_j||^2 <= 1e-12 max_k ||g_k||^2``) is skipped.

    Args:
        gramian: ``(K, K)`` Gramian ``G_ij = g_i . g_j`` of the term gradients.
        seed: an int or a ``keras.random.SeedGenerator`` (what
            ``keras.random`` accepts) drawing one permutation of the others
            per task; a strategy keeps a ``SeedGenerator`` so the draws are
            saved with the model. Give ``seed`` or ``order``, not both.
        order: ``(K, K - 1)`` ints, row i the other tasks in the order task
            i's gradient is projected on them (deterministic: for tests).

    Returns:
        ``(K,)`` float32 weights (not normalised: conflicts add weight).

    Example:
        >>> w = pcgrad_weights([[1., -1.], [-1., 2.]], seed=0)   # g_1 = (1, 0), g_2 = (-1, 1)
        >>> [round(float(v), 4) for v in w]   # g_1 + g_2/2 + g_2 + g_1
        [2.0, 1.5]
    """
    gramian = _gramian(gramian, "pcgrad_weights")
    k = gramian.shape[0]
    order = _pcgrad_order(k, seed, order)
    diagonal = ops.diagonal(gramian)
    nonzero = ops.cast(diagonal > _ZERO_GRAD * ops.max(diagonal), "float32")
    coefficients = ops.eye(k, dtype="float32")  # row i: g_i^PC in terms of g_1..g_K
    for step in range(k - 1):  # unrolled over the static K: every task at once
        pick = ops.one_hot(order[:, step], k, dtype="float32")  # row i selects task i's j
        dots = ops.sum(ops.matmul(coefficients, gramian) * pick, axis=1)  # g_i^PC . g_j
        squared = ops.sum(pick * diagonal[None, :], axis=1)  # ||g_j||^2
        project = ops.logical_and(dots < 0, ops.sum(pick * nonzero[None, :], axis=1) > 0)
        ratio = dots / ops.where(project, squared, ops.ones_like(squared))
        coefficients = coefficients - ops.where(project, ratio, ops.zeros_like(ratio))[:, None] * pick
    return ops.sum(coefficients, axis=0)


def pcgrad(jacobian, seed=None, order=None):
    """The PCGrad update ``pcgrad_weights(J J^T, ...) @ J`` (Yu et al. 2020, Alg. 1).

    Example:
        >>> [round(float(v), 4) for v in pcgrad([[1., 0.], [-1., 1.]], seed=0)]
        [0.5, 1.5]
    """
    return _apply(pcgrad_weights, jacobian, "pcgrad", seed=seed, order=order)


__all__ = [
    "NORMALIZATIONS",
    "gradient_normalizers",
    "mean",
    "mean_weights",
    "mgda",
    "mgda_weights",
    "pcgrad",
    "pcgrad_weights",
    "total",
    "total_weights",
]
