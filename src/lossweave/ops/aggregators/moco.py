"""MoCo (Fernando et al., ICLR 2023): tracked term gradients, weights moved on the simplex."""

from keras import ops

from lossweave.ops.aggregators._rows import as_losses, as_rows, as_state_like, gramian_of, per_term, squared_norms

# LibMTL's MoCo.py: g_k / (||g_k|| + 1e-8) * L_k.
NORM_EPSILON = 1e-8


def project_simplex(vector):
    """The Euclidean projection of a ``(K,)`` vector onto the probability simplex (exact).

    Sort-based (Held, Wolfe & Crowder 1974; Duchi et al., ICML 2008,
    Fig. 1): with ``u`` the entries in decreasing order and ``c`` their
    cumulative sums, ``rho = max{j : u_j > (c_j - 1) / j}`` and the
    projection is ``max(v - (c_rho - 1) / rho, 0)``. One sort, no iterations.

    Example:
        >>> [round(float(v), 4) for v in project_simplex([0.5, 1.5, -1.0])]
        [0.0, 1.0, 0.0]
        >>> [round(float(v), 4) for v in project_simplex([0.2, 0.3, 0.1])]
        [0.3333, 0.4333, 0.2333]
    """
    vector = ops.cast(ops.convert_to_tensor(vector), "float32")
    k = vector.shape[0]
    descending = ops.flip(ops.sort(vector), axis=0)
    cumulative = ops.cumsum(descending)
    index = ops.arange(1, k + 1, dtype="float32")
    thresholds = (cumulative - 1.0) / index
    support = ops.sum(ops.cast(descending > thresholds, "float32"))  # >= 1: u_1 > u_1 - 1
    theta = ops.sum(ops.where(index == support, thresholds, ops.zeros_like(thresholds)))
    return ops.maximum(vector - theta, 0.0)


def moco(state, rows, losses, step, beta=0.5, beta_sigma=0.5, gamma=0.1, gamma_sigma=0.5, rho=0.0,
         normalize=True):
    """One MoCo step: ``(new_state, updates, weights)``, state ``(y, lambda)``.

    Fernando, Shen, Liu, Chaudhury, Murugesan & Chen, "Mitigating Gradient
    Bias in Multi-objective Learning: A Provably Convergent Approach",
    ICLR 2023, Algorithm 1, with the step sizes and the gradient
    normalisation of LibMTL's ``MoCo.py`` (from the authors' code). At step
    ``t`` (1 at the first step)::

        h_k = g_k / (||g_k|| + 1e-8) L_k                   # normalize=True (the authors' code)
        y_k <- y_k - beta / t^beta_sigma (y_k - h_k)       # tracked gradients (line 4)
        lambda <- Proj_simplex(lambda - gamma / t^gamma_sigma (Y Y^T + rho I) lambda)   # line 5
        update = sum_k lambda_k y_k                         # line 6

    The projection onto the simplex is the paper's (exact, sort-based:
    ``project_simplex``); LibMTL takes a softmax of the same vector instead.
    ``||g_k||`` and ``Y Y^T`` are over all the entries together. No loop
    and no iteration budget (the projection is one sort): the step matches a
    float64 reference (bisection for the projection) to 1e-5 relative.

    Args:
        state: ``(y, lambda)``: one ``(K, *shape)`` tensor per entry (zeros
            at the start) and the ``(K,)`` weights (``1 / K`` at the start).
        rows: one ``(K, *shape)`` tensor per entry, row k term k's gradient.
        losses: ``(K,)`` term losses. step: the 0-based step (``t = step + 1``).
        beta, beta_sigma: the tracking rate ``beta / t^beta_sigma``.
        gamma, gamma_sigma: the weights' step ``gamma / t^gamma_sigma``.
        rho: the l2 regularisation of the weights' update.
        normalize: rescale each gradient to norm ``L_k`` first (authors' code).

    Returns:
        ``((y, lambda), updates, lambda)``: the new state, one float32
        ``(*shape)`` update per entry and the new ``(K,)`` weights.

    Example:
        >>> import numpy as np
        >>> state = ([np.zeros((2, 2), "float32")], np.full(2, 0.5, "float32"))
        >>> (y, lam), updates, w = moco(state, [np.array([[3.0, 0.0], [0.0, 1.0]])], np.ones(2), 0)
        >>> [round(float(v), 4) for v in np.ravel(y[0])]     # half way to the unit-norm gradients
        [0.5, 0.0, 0.0, 0.5]
        >>> [round(float(v), 4) for v in updates[0]]
        [0.25, 0.25]
    """
    ys, lam = state
    lam = ops.cast(ops.convert_to_tensor(lam), "float32")
    if len(lam.shape) != 1 or lam.shape[0] is None:
        raise ValueError(f"MoCo: received lambda of shape {tuple(lam.shape)}; expected (K,) weights on the simplex.")
    k = lam.shape[0]
    rows, losses = as_rows(rows, k, "MoCo"), as_losses(losses, k, "MoCo")
    ys = as_state_like(ys, rows, "MoCo", "tracked gradients y")
    t = ops.cast(step, "float32") + 1.0
    if normalize:
        scale = losses / (ops.sqrt(squared_norms(rows, k)) + NORM_EPSILON)
        rows = [r * per_term(scale, r) for r in rows]
    rate = beta / ops.power(t, beta_sigma)
    ys = [y - rate * (y - r) for y, r in zip(ys, rows)]
    gram = gramian_of(ys, k)
    step_size = gamma / ops.power(t, gamma_sigma)
    direction = ops.matmul(gram + rho * ops.eye(k, dtype="float32"), lam[:, None])[:, 0]
    lam = project_simplex(lam - step_size * direction)
    updates = [ops.tensordot(lam, y, axes=1) for y in ys]
    return (ys, lam), updates, lam
