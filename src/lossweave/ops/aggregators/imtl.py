"""IMTL-G (Liu et al., ICLR 2021): the combination with equal projections on every unit gradient.

Also the spectral helpers that the closed forms share (IMTL-G, Aligned-MTL,
ConFIG): the eigendecomposition of the Gramian with its numerical rank, the
pseudo-inverse of a positive semi-definite matrix, and preference vectors.
"""

from keras import ops

from lossweave.ops.aggregators._common import REL_EPS, apply_weights, as_gramian

# An eigenvalue of a (K, K) Gramian at or below K * RANK_RTOL * its largest
# eigenvalue counts as zero (a zero, duplicated or linearly dependent
# gradient). torch.linalg.pinv and the Aligned-MTL code cut at K * eps_float32
# (1.2e-7 per row); the Gramian here is itself float32, and the rounding
# eigenvalue of a row that is the float32 sum of two others measures up to
# 2.6e-7 of the largest (K = 3..6, 10 to 1e5 parameters), so the cut is set
# about 8x higher. An eigenvalue that close to the cut carries a relative
# error of a few percent in float32 anyway.
RANK_RTOL = 1e-6


def spectrum(gramian):
    """``(values, vectors, kept)`` of a symmetric float32 ``(K, K)`` matrix.

    ``values`` and the columns of ``vectors`` are its eigenpairs
    (``ops.eigh``, in whatever order the backend returns them); ``kept``
    marks the eigenvalues above the numerical-rank cut (``RANK_RTOL``).
    Nothing is kept for a zero matrix.
    """
    values, vectors = ops.eigh(gramian)
    cut = gramian.shape[0] * RANK_RTOL * ops.max(values)
    kept = ops.logical_and(values > 0, values > cut)
    return values, vectors, kept


def psd_pinv(gramian):
    """Moore-Penrose pseudo-inverse of a symmetric positive semi-definite ``(K, K)`` matrix.

    ``V diag(1 / lambda) V^T`` over the kept eigenvalues of ``spectrum`` (the
    others contribute 0): the pseudo-inverse, with the rank decided by
    ``RANK_RTOL``.

    Example:
        >>> [[round(float(v), 4) for v in row] for row in psd_pinv([[1., 1.], [1., 1.]])]
        [[0.25, 0.25], [0.25, 0.25]]
    """
    gramian = ops.cast(ops.convert_to_tensor(gramian), "float32")
    values, vectors, kept = spectrum(gramian)
    inverse = ops.where(kept, 1.0 / ops.where(kept, values, ops.ones_like(values)), ops.zeros_like(values))
    return ops.matmul(vectors * inverse[None, :], ops.transpose(vectors))


def preference_vector(preference, k, what):
    """The ``(K,)`` float32 preference (direction) weights; ``None`` gives ones.

    A concrete preference is checked now: K finite, positive numbers.
    """
    if preference is None:
        return ops.ones((k,), dtype="float32")
    if not ops.is_tensor(preference):
        values = [float(v) for v in preference]
        if len(values) != k or not all(0.0 < v < float("inf") for v in values):
            raise ValueError(
                f"{what}: received preference={values}; expected K = {k} finite, positive "
                f"weights, one per term in the order of the gramian's rows (or None for "
                f"equal weights)."
            )
    preference = ops.cast(ops.convert_to_tensor(preference), "float32")
    if tuple(preference.shape) != (k,):
        raise ValueError(
            f"{what}: received a preference of shape {tuple(preference.shape)}; expected "
            f"({k},), one positive weight per term in the order of the gramian's rows."
        )
    return preference


def imtl_g_weights(gramian):
    """IMTL-G weights: the update has the same projection on every unit term gradient.

    Liu, Li, Kuang, Xue, Chen, Yang, Liao & Zhang, "Towards Impartial
    Multi-task Learning", ICLR 2021, Sec. 3.2 (gradient balance, IMTL-G):
    find ``g = sum_k alpha_k g_k`` with ``sum_k alpha_k = 1`` whose
    projections ``g . u_k`` on the unit gradients ``u_k = g_k / ||g_k||``
    are all equal. The paper's closed form is ``alpha_{2:K} = g_1 U^T
    (D U^T)^{-1}``, ``alpha_1 = 1 - sum alpha_{2:K}``, with rows ``D_k = g_1
    - g_k`` and ``U_k = u_1 - u_k``; every product there is an inner product
    of gradients, so it is a function of the Gramian ``G``.

    Here it is written as the equivalent ``v = G^+ d``, ``alpha = v / sum(v)``
    with ``d_k = ||g_k||`` (``G alpha`` proportional to ``d`` is the equal
    projections; the sum fixes the scale): the generalisation of Quinton &
    Rey, "Jacobian Descent for Multi-Objective Optimization", 2024
    (``A_IMTL-G``, the form of torchjd's ``IMTLG``), which equals the paper's
    closed form whenever ``D U^T`` is invertible and stays defined when it is
    not. ``G^+`` is the pseudo-inverse over the eigenvalues above the
    numerical-rank cut ``K * 1e-6 * lambda_max`` (``RANK_RTOL``).

    Degenerate inputs: a zero gradient gets weight 0 and the others are
    balanced among themselves (the paper's ``u_k = g_k / 0`` would be NaN);
    duplicated gradients share their weight equally; when ``sum(v)`` is 0
    (``|sum(v)| <= 1e-6 ||d||_1 / trace(G)``, e.g. two opposite gradients of
    equal norm, where no combination summing to 1 has equal projections
    except through an update 1e6 times the gradients) the weights are 0. The
    weights are not bounded: strongly conflicting gradients give large ones,
    and where ``sum(v) < 0`` (possible for K >= 3 with very different
    norms) the paper's normalisation makes the common projection negative;
    this follows the paper. The weights are constants for autodiff.

    Accuracy: no iteration; the error is float32 ``eigh``'s, growing with
    the condition number of ``G`` on its range and with the size of the
    weights. Measured against float64 references (the paper's closed form;
    the pseudo-inverse form where an eigenvalue is below the rank cut) over
    random Jacobians, K = 2..6, 3 to 100 parameters, random, aligned, zero,
    duplicated, opposite and dependent gradients (per K: 1000 on PyTorch,
    600 on JAX, 300 on TensorFlow): ``|update - reference| <= 3e-6 cond(G)
    max(sum_k |alpha_k|, 1) max_k ||g_k||`` (largest seen 1.7e-6, with
    weights in the thousands).

    Args:
        gramian: ``(K, K)`` Gramian ``G_ij = g_i . g_j`` of the term gradients.

    Returns:
        ``(K,)`` float32 weights summing to 1 (or all 0, see above).

    Example:
        >>> w = imtl_g_weights([[1., 0.], [0., 4.]])   # orthogonal, ||g_2|| = 2
        >>> [round(float(v), 4) for v in w]            # g = (2/3, 2/3): projections 2/3, 2/3
        [0.6667, 0.3333]
    """
    gramian = ops.stop_gradient(as_gramian(gramian, "imtl_g_weights"))
    k = gramian.shape[0]
    if k == 1:
        return ops.ones((1,), dtype="float32")
    norms = ops.sqrt(ops.maximum(ops.diagonal(gramian), 0.0))
    v = ops.matmul(psd_pinv(gramian), norms)
    total = ops.sum(v)
    # v scales as ||d|| / lambda; trace(G) is within K of lambda_max.
    scale = ops.sum(norms) / ops.maximum(ops.trace(gramian), 1e-30)
    usable = ops.abs(total) > REL_EPS * scale
    return ops.where(usable, v / ops.where(usable, total, ops.ones_like(total)), ops.zeros_like(v))


def imtl_g(jacobian):
    """The IMTL-G update ``imtl_g_weights(J J^T) @ J`` (Liu et al., ICLR 2021, Sec. 3.2).

    Example:
        >>> [round(float(v), 4) for v in imtl_g([[1., 0.], [0., 2.]])]
        [0.6667, 0.6667]
    """
    return apply_weights(imtl_g_weights, jacobian, "imtl_g")
