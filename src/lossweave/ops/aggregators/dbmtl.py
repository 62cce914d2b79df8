"""DB-MTL (Lin et al. 2023): log losses, then every term's averaged gradient at the largest norm."""

from keras import ops

from lossweave.ops.aggregators._common import ZERO_GRAD
from lossweave.ops.aggregators._rows import as_rows, as_state_like, per_term, squared_norms

# LibMTL's DB_MTL.py: log(L_k + 1e-8).
LOG_EPSILON = 1e-8


def dbmtl(buffers, rows, losses, step, beta=0.9, beta_sigma=0.0, epsilon=LOG_EPSILON):
    """One DB-MTL step: ``(new_buffers, updates, scales)``.

    Lin, Jiang, Ye, Zhang, Chen, Chen, Liu & Kwok, "Dual-Balancing for
    Multi-Task Learning", arXiv:2308.12029 (2023), Algorithm 1, with the
    defaults of LibMTL's ``DB_MTL.py`` (the authors' library). At step ``t``
    (1 at the first step)::

        h_k = grad log(L_k + eps) = g_k / (L_k + eps)        # loss-scale balancing
        b_k <- h_k + beta / t^beta_sigma (b_k - h_k)          # EMA of the gradients
        alpha_k = max_j ||b_j|| / ||b_k||                     # gradient-magnitude balancing
        update = sum_k alpha_k b_k

    so every term's averaged log-loss gradient enters the update with the
    largest norm among them. The log makes the update invariant to a
    positive rescaling of any one loss (up to ``eps``); norms are over all
    the entries together. Losses are assumed non-negative, as the log needs:
    a negative loss counts as 0. A term whose buffer is zero
    (``||b_k||^2 <= 1e-12 max_j ||b_j||^2``) keeps ``alpha_k = 1``. No loop,
    no iteration budget: it matches a float64 reference to 1e-5 relative.

    Args:
        buffers: one ``(K, *shape)`` EMA buffer per entry (zeros at the start).
        rows: one ``(K, *shape)`` tensor per entry, row k term k's gradient.
        losses: ``(K,)`` term losses. step: the 0-based step (``t = step + 1``).
        beta, beta_sigma: the EMA weight ``beta / t^beta_sigma`` of the old
            buffer (LibMTL: 0.9 and 0).
        epsilon: the ``eps`` inside the log.

    Returns:
        The new buffers, one float32 ``(*shape)`` update per entry and the
        ``(K,)`` scales ``alpha``.

    Example:
        >>> import numpy as np
        >>> rows = [np.array([[2.0, 0.0], [0.0, 0.3]])]    # L = (2, 0.1): h = (1, 0), (0, 3)
        >>> buffers, updates, alpha = dbmtl([np.zeros((2, 2))], rows, [2.0, 0.1], 0)
        >>> [round(float(v), 4) for v in np.ravel(buffers[0])]    # 0.1 h at the first step
        [0.1, 0.0, 0.0, 0.3]
        >>> [round(float(v), 4) for v in alpha], [round(float(v), 4) for v in updates[0]]
        ([3.0, 1.0], [0.3, 0.3])
    """
    losses = ops.cast(ops.convert_to_tensor(losses), "float32")
    if len(losses.shape) != 1 or losses.shape[0] is None:
        raise ValueError(f"DBMTL: received losses of shape {tuple(losses.shape)}; expected (K,), one per term.")
    k = losses.shape[0]
    rows = as_rows(rows, k, "DBMTL")
    buffers = as_state_like(buffers, rows, "DBMTL", "buffers")
    scale = 1.0 / (ops.maximum(losses, 0.0) + epsilon)
    t = ops.cast(step, "float32") + 1.0
    keep = beta / ops.power(t, beta_sigma)
    buffers = [r * per_term(scale, r) + keep * (b - r * per_term(scale, r)) for b, r in zip(buffers, rows)]
    squared = squared_norms(buffers, k)
    nonzero = squared > ZERO_GRAD * ops.max(squared)
    norms = ops.sqrt(squared)
    largest = ops.max(norms)
    alpha = ops.where(nonzero, largest / ops.where(nonzero, norms, ops.ones_like(norms)), ops.ones_like(norms))
    updates = [ops.tensordot(alpha, b, axes=1) for b in buffers]
    return buffers, updates, alpha
