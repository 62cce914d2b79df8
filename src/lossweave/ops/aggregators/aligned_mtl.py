"""Aligned-MTL (Senushkin et al., CVPR 2023): the gradient system made orthogonal with equal singular values."""

from keras import ops

from lossweave import arguments
from lossweave.ops.aggregators._common import apply_weights, as_gramian
from lossweave.ops.aggregators.imtl import preference_vector, spectrum

SCALE_MODES = ("min", "median", "rmse")


def _scale(values, kept, scale_mode):
    """The squared singular value ``s`` that every aligned component gets (kept eigenvalues only)."""
    k = values.shape[0]
    count = ops.sum(ops.cast(kept, "int32"))
    if scale_mode == "min":  # Algorithm 1: lambda_R, the smallest of the R kept ones
        return ops.min(ops.where(kept, values, ops.max(values) * ops.ones_like(values)))
    if scale_mode == "median":
        # torch.median of the authors' code: the lower middle value of the R
        # kept ones. Sorted ascending, the K - R cut ones (marked -1) come first.
        ordered = ops.sort(ops.where(kept, values, -ops.ones_like(values)))
        index = k - count + ops.floor_divide(count - 1, 2)
        return ops.sum(ordered * ops.one_hot(index, k, dtype="float32"))
    # "rmse": sqrt(s) is the root mean square of the kept singular values.
    return ops.sum(ops.where(kept, values, ops.zeros_like(values))) / ops.cast(ops.maximum(count, 1), "float32")


def aligned_mtl_weights(gramian, scale_mode="min", preference=None):
    """Aligned-MTL weights: the preference applied to the aligned gradients.

    Senushkin, Patakin, Kuznetsov & Konushin, "Independent Component
    Alignment for Multi-Task Learning", CVPR 2023, Algorithm 1: with the
    Gramian ``M = G^T G`` of the gradient matrix ``G = [g_1 .. g_K]`` (here
    ``J J^T``) and its eigendecomposition ``M = V Lambda V^T`` over the R
    non-zero eigenvalues ``lambda_1 >= .. >= lambda_R``, the balance
    transformation ``B = sqrt(lambda_R) V Lambda^{-1/2} V^T`` makes the
    aligned gradients ``G B`` orthogonal with equal norms (condition number
    1, the paper's stability criterion); the update is ``G B w`` for the
    task preference ``w``, i.e. the weights ``B w``.

    ``scale_mode`` sets the common singular value, as in the authors' code
    (``ProcrustesSolver``, SamsungLabs/MTL): ``"min"`` (Algorithm 1, the
    default there) ``sqrt(lambda_R)``; ``"median"`` the square root of the
    median kept eigenvalue (the lower middle one for even R, as
    ``torch.median``); ``"rmse"`` ``sqrt(mean(lambda))``, the root mean
    square of the kept singular values. ``preference=None`` is ``w = 1``,
    the sum of the aligned gradients of the authors' code and LibMTL's
    ``Aligned_MTL`` (torchjd's ``AlignedMTL`` uses ``1/K``, the same
    direction, 1/K of the update).

    The rank R is numerical: eigenvalues at or below ``K * 1e-6 *
    lambda_max`` are dropped (the authors cut at ``K * eps_float32``; see
    ``RANK_RTOL`` for why the float32 Gramian needs more). A zero,
    duplicated or linearly dependent gradient therefore only removes a
    direction: a zero gradient gets weight 0, duplicates share theirs, and
    collinear gradients keep their one direction (for two of them the
    update is their sum, 0 when they cancel). When every gradient is zero (R = 0) the weights are the
    preference (torchjd's identity fallback; the update is 0). ``B`` is
    invariant to the scale of the gradients, so the weights are too; they
    are constants for autodiff.

    Accuracy: no iteration; the error is float32 ``eigh``'s. ``B w`` is a
    smooth function of the Gramian (``M^{-1/2}`` on its range), so repeated
    or close eigenvalues do not hurt; the error grows with the condition
    number. Measured against a float64 Algorithm 1 (the authors' rank cut
    ``K * eps_float32``) over random Jacobians, K = 2..6, 3 to 100
    parameters, random, aligned, zero, duplicated, opposite and dependent
    gradients, the three scale modes, ``w = 1`` (per K: 1000 on PyTorch,
    600 on JAX, 300 on TensorFlow): ``|update - reference| <= 1e-6 cond(G)
    max_k ||g_k||`` (largest seen 4.2e-7), leaving out the Gramians with an
    eigenvalue between the two rank cuts (``K * 1.2e-7`` and ``K * 1e-6``
    of the largest), where they differ by design.

    Args:
        gramian: ``(K, K)`` Gramian ``G_ij = g_i . g_j`` of the term gradients.
        scale_mode: ``"min"``, ``"median"`` or ``"rmse"``.
        preference: ``(K,)`` positive task weights ``w``; None for ones.

    Returns:
        ``(K,)`` float32 weights.

    Example:
        >>> w = aligned_mtl_weights([[4., 0.], [0., 1.]])   # orthogonal, norms 2 and 1
        >>> [round(float(v), 4) for v in w]                 # both aligned to norm 1
        [0.5, 1.0]
    """
    arguments.choice(scale_mode, SCALE_MODES, "scale_mode", "AlignedMTL")
    gramian = ops.stop_gradient(as_gramian(gramian, "aligned_mtl_weights"))
    k = gramian.shape[0]
    preference = preference_vector(preference, k, "Aligned-MTL")
    values, vectors, kept = spectrum(gramian)
    scale = _scale(values, kept, scale_mode)
    ratio = ops.sqrt(ops.maximum(scale, 0.0) / ops.where(kept, values, ops.ones_like(values)))
    diagonal = ops.where(kept, ratio, ops.zeros_like(ratio))
    balance = ops.matmul(vectors * diagonal[None, :], ops.transpose(vectors))
    weights = ops.matmul(balance, preference)
    return ops.where(ops.any(kept), weights, preference)


def aligned_mtl(jacobian, scale_mode="min", preference=None):
    """The Aligned-MTL update ``aligned_mtl_weights(J J^T, ...) @ J`` (Senushkin et al. 2023, Alg. 1).

    Example:
        >>> [round(float(v), 4) for v in aligned_mtl([[2., 0.], [0., 1.]])]
        [1.0, 1.0]
    """
    return apply_weights(aligned_mtl_weights, jacobian, "aligned_mtl", scale_mode=scale_mode, preference=preference)
