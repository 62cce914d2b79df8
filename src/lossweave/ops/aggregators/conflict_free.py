"""ConFIG (Liu, Chu & Thuerey, ICLR 2025): the direction with equal cosines to every term gradient."""

from keras import ops

from lossweave import arguments
from lossweave.ops.aggregators._common import REL_EPS, ZERO_GRAD, apply_weights, as_gramian
from lossweave.ops.aggregators.imtl import preference_vector, psd_pinv

# How the update's length is set: the paper's projection length, or the
# authors' length models that give every gradient one tracked norm.
CONFIG_LENGTHS = ("projection", "minimum", "maximum", "harmonic", "arithmetic", "geometric")


def _tracked_norm(norms, nonzero, length):
    """The one norm the authors' ``Track*`` length models give every gradient."""
    if length == "minimum":
        return ops.min(norms)
    if length == "maximum":
        return ops.max(norms)
    if length == "arithmetic":
        return ops.mean(norms)
    safe = ops.where(nonzero, norms, ops.ones_like(norms))
    every = ops.all(nonzero)  # a zero norm makes the harmonic and geometric means 0
    if length == "harmonic":
        mean = norms.shape[0] / ops.sum(1.0 / safe)
    else:  # "geometric"
        mean = ops.exp(ops.mean(ops.log(safe)))
    return ops.where(every, mean, ops.zeros_like(mean))


def config_weights(gramian, preference=None, length="projection"):
    """ConFIG weights: a conflict-free direction with equal cosines, and its length.

    Liu, Chu & Thuerey, "ConFIG: Towards Conflict-free Training of Physics
    Informed Neural Networks", ICLR 2025, Sec. 3.1 (the ConFIG operator,
    Eq. 2 as torchjd cites it)::

        g_ConFIG = (sum_i g_i . g_u) g_u,
        g_u = U[ [U(g_1), .., U(g_K)]^{-T} 1_K ],   U(g) = g / ||g||,

    with ``M^{-T}`` the pseudo-inverse of ``M^T``: the min-norm ``g_v`` with
    ``U(g_k) . g_v = w_k`` (``w = 1_K``, the paper's equal direction
    weights, or the authors' ``weight_model``), normalised, then given the
    sum of the gradients' projections on it as its length. Everything is an
    inner product of gradients: with ``n_k = ||g_k||``, the unit Gramian
    ``G_u = G / (n n^T)`` and ``c = G_u^+ w``, ``g_v = sum_k (c_k / n_k)
    g_k``, ``||g_v||^2 = c . G_u c``, so the weights are ``L (c / n) /
    ||g_v||`` with ``L = sum_i (G c / n)_i / ||g_v||``.

    Where the gradients are linearly independent, ``g_u . U(g_k)`` is the
    same positive number for every k (proportional to ``w_k`` for a
    preference): every term decreases at the same rate. Where they are not,
    the equations are solved in the least-squares sense (the pseudo-inverse
    over the eigenvalues above ``K * 1e-6 * lambda_max``, ``RANK_RTOL``).
    The authors' ``use_least_square`` (``torch.linalg.lstsq`` vs ``pinv``)
    is two routes to this same min-norm solution, so it is not an option
    here; their K = 2 form (``ConFIG_update_double``, orthogonal components)
    equals this one for independent gradients and is not used (for parallel
    gradients it gives 0 where this gives their common direction).

    ``length`` (the authors' ``length_model``): ``"projection"`` (the paper,
    ``ProjectionLength``) ``L = sum_i g_i . g_u``; ``"minimum"``,
    ``"maximum"``, ``"harmonic"``, ``"arithmetic"``, ``"geometric"``
    (``TrackMinimum`` .. ``TrackGeometricAverage``) ``L = m sum_i U(g_i) .
    g_u`` with ``m`` that statistic of the norms ``n_k``.

    Degenerate inputs: a zero gradient (``n_k^2 <= 1e-12 max n^2``) has a
    zero unit vector, as in the authors' ``nan_to_num``: it gets weight 0,
    its equation is dropped, and it adds nothing to the length (its zero
    norm makes the harmonic and geometric means 0, as in the formulas).
    Duplicated gradients are one equation, their weight is shared. When
    ``g_v`` is 0 (``||g_v||^2 <= 1e-6 ||w||^2``: two opposite gradients,
    every gradient zero) the weights are 0. Constants for autodiff.

    Accuracy: no iteration; the error is float32 ``eigh``'s, growing with
    the condition number of ``G_u`` on its range. Measured against a
    float64 ConFIG operator on the Jacobian (``pinv`` of the unit vectors)
    over random Jacobians, K = 2..6, 3 to 100 parameters, random, aligned,
    zero, duplicated, opposite and dependent gradients (per K: 1000 on
    PyTorch, 600 on JAX, 300 on TensorFlow): ``|update - reference| <= 1e-6
    cond(G_u) max_k ||g_k||`` (largest seen 6.7e-7), leaving out the unit
    Gramians with an eigenvalue between ``K * 1e-7`` and ``K * 1e-6`` of the
    largest, at the rank cut.

    Args:
        gramian: ``(K, K)`` Gramian ``G_ij = g_i . g_j`` of the term gradients.
        preference: ``(K,)`` positive direction weights ``w``; None for ones.
        length: one of ``CONFIG_LENGTHS``.

    Returns:
        ``(K,)`` float32 weights.

    Example:
        >>> w = config_weights([[1., 0.], [0., 4.]])   # orthogonal, ||g_2|| = 2
        >>> [round(float(v), 4) for v in w]            # g_u = (1, 1)/sqrt(2), L = 3/sqrt(2)
        [1.5, 0.75]
    """
    arguments.choice(length, CONFIG_LENGTHS, "length", "ConFIG")
    gramian = ops.stop_gradient(as_gramian(gramian, "config_weights"))
    k = gramian.shape[0]
    preference = preference_vector(preference, k, "ConFIG")
    squared_norms = ops.diagonal(gramian)
    nonzero = squared_norms > ZERO_GRAD * ops.max(squared_norms)
    norms = ops.sqrt(ops.where(nonzero, squared_norms, ops.zeros_like(squared_norms)))
    inverse_norms = ops.where(nonzero, 1.0 / ops.where(nonzero, norms, ops.ones_like(norms)), ops.zeros_like(norms))
    unit_gramian = gramian * inverse_norms[:, None] * inverse_norms[None, :]
    c = ops.matmul(psd_pinv(unit_gramian), preference)  # g_v = sum_k c_k U(g_k)
    unit_projections = ops.matmul(unit_gramian, c)  # U(g_k) . g_v
    squared = ops.sum(c * unit_projections)  # ||g_v||^2
    usable = squared > REL_EPS * ops.sum(preference * preference)
    direction_norm = ops.sqrt(ops.where(usable, squared, ops.ones_like(squared)))
    if length == "projection":
        total = ops.sum(norms * unit_projections)  # sum_i g_i . g_v
    else:
        total = _tracked_norm(norms, nonzero, length) * ops.sum(unit_projections)
    weights = (total / direction_norm) * (c * inverse_norms) / direction_norm
    return ops.where(usable, weights, ops.zeros_like(weights))


def config(jacobian, preference=None, length="projection"):
    """The ConFIG update ``config_weights(J J^T, ...) @ J`` (Liu, Chu & Thuerey, ICLR 2025).

    Example:
        >>> [round(float(v), 4) for v in config([[1., 0.], [0., 2.]])]
        [1.5, 1.5]
    """
    return apply_weights(config_weights, jacobian, "config", preference=preference, length=length)
