"""GradVac (Wang et al., ICLR 2021): raise each pair's gradient cosine to its running target."""

from keras import ops

from lossweave import arguments
from lossweave.ops.aggregators._common import REL_EPS, ZERO_GRAD, as_gramian, task_orders

# Eq. 2 divides by sqrt(1 - target^2): a target this close to +-1 (a float32
# EMA of cosines that rounded to 1) is not pursued, its correction is unbounded.
TARGET_EDGE = REL_EPS


def check_beta(beta):
    """The EMA rate of the target cosines, a float in [0, 1] (Eq. 3: ``phi_hat <- (1 - beta)
    phi_hat + beta phi``; 0 keeps the targets at 0, which is PCGrad), or a ValueError."""
    return arguments.number(beta, "beta", "GradVac", low=0.0, high=1.0)


def _as_targets(targets, what):
    targets = ops.cast(ops.convert_to_tensor(targets), "float32")
    shape = tuple(targets.shape)
    if len(shape) != 3 or None in shape or shape[1] != shape[2]:
        raise ValueError(
            f"{what}: received targets of shape {shape}; expected (groups, K, K) with static sizes: "
            f"the EMA target cosine phi_hat_ij of each group and pair (zeros before the first step)."
        )
    return targets


def gradvac_order(k, seed=None, order=None):
    """``(K, K - 1)`` int32: row i, the other tasks in the order task i visits them.

    Args:
        k: the number of tasks.
        seed: an int or a ``keras.random.SeedGenerator``: one random
            permutation of the others per task.
        order: an explicit ``(K, K - 1)`` order (tests); give one of the two.
    """
    return task_orders(k, seed, order, "GradVac")


def gradvac_weights(targets, gramians, beta=0.5, seed=None, order=None):
    """GradVac from the per-group Gramians: ``(new_targets, weights)``.

    Wang, Tsvetkov, Firat & Cao, "Gradient Vaccine: Investigating and
    Improving Multi-task Optimization in Massively Multilingual Models",
    ICLR 2021, the GradVac update rule (Algorithm 1 of the paper, Eq. 2-3).
    In each group (the whole model, a layer or a variable: the paper's
    per-component targets ``phi_hat_ijk``), for each task i with
    ``g_i^PC = g_i`` and each other task j in a random order::

        phi_ij = cos(g_i^PC, g_j)
        if phi_ij < phi_hat_ij:                                     # Eq. 2
            g_i^PC += ||g_i^PC|| (phi_hat sqrt(1 - phi^2) - phi sqrt(1 - phi_hat^2))
                      / (||g_j|| sqrt(1 - phi_hat^2)) g_j
        phi_hat_ij <- (1 - beta) phi_hat_ij + beta phi_ij           # Eq. 3

    and the update is ``sum_i g_i^PC``. The correction sets the cosine of
    ``g_i^PC`` and ``g_j`` to exactly ``phi_hat_ij``. As in the paper (and
    torchjd's GradVac), the target of every visited pair moves each step;
    LibMTL's ``GradVac.py`` moves it only when a correction was made. One
    order per task and step serves every group, as in LibMTL. With
    ``beta = 0`` the targets stay 0 and the rule is PCGrad's projection.

    Each ``g_i^PC`` stays a combination ``sum_m C_im g_m`` of the originals,
    so only Gramian entries are needed (``||g_i^PC||^2 = (C G C^T)_ii``,
    ``g_i^PC . g_j = (C G)_ij``); the weights are the column sums of ``C``.
    The K - 1 rounds over the others are an unrolled Python loop over the
    static K (each round moves every task at once; K is small and known when
    the step is traced, so no ``fori_loop`` is needed). There is no iteration
    budget: the rule is exact, and matches a float64 reference to 1e-5
    relative (``tests/test_aggregators_rows.py``, K = 2..6). A zero ``g_j``
    (``||g_j||^2 <= 1e-12 max_k ||g_k||^2``) and a zero ``g_i^PC`` have
    cosine 0 and ``g_j`` is never added when zero; a target within 1e-6 of
    +-1 (``1 - phi_hat^2 <= 1e-6``) is not pursued (Eq. 2 would divide by 0).

    Args:
        targets: ``(groups, K, K)`` EMA targets ``phi_hat`` (zeros at the start).
        gramians: ``(groups, K, K)`` Gramians, one per group, or one ``(K, K)``.
        beta: EMA rate of Eq. 3 (the paper's experiments use 1e-2; LibMTL
            and torchjd default to 0.5).
        seed: an int or ``keras.random.SeedGenerator`` drawing the orders;
            or ``order``: an explicit ``(K, K - 1)`` order (tests).

    Returns:
        ``(new_targets, weights)``: ``(groups, K, K)`` and ``(groups, K)``
        float32 (group g's update is ``weights[g] @ J_g``).

    Example:
        >>> targets = [[[0.0, 0.5], [0.5, 0.0]]]           # phi_hat = 0.5; g_1 = (1, 0), g_2 = (0, 1)
        >>> new, w = gradvac_weights(targets, [[1.0, 0.0], [0.0, 1.0]], beta=0.5, order=[[1], [0]])
        >>> [round(float(v), 4) for v in w[0]]             # each gets 1/sqrt(3) of the other: cos = 0.5
        [1.5774, 1.5774]
        >>> [round(float(v), 4) for v in new[0, 0]]        # the targets move half way to cos = 0
        [0.0, 0.25]
    """
    beta = check_beta(beta)
    gramians = ops.cast(ops.convert_to_tensor(gramians), "float32")
    if len(gramians.shape) == 2:
        gramians = gramians[None]
    if len(gramians.shape) != 3:
        as_gramian(gramians, "gradvac_weights")  # raises: not (K, K) nor (groups, K, K)
    # J J^T is symmetric up to rounding; symmetrise so both triangles agree.
    gramians = 0.5 * (gramians + ops.transpose(gramians, (0, 2, 1)))
    targets = _as_targets(targets, "gradvac_weights")
    groups, k = targets.shape[0], targets.shape[1]
    if tuple(gramians.shape) != (groups, k, k):
        raise ValueError(
            f"gradvac_weights: received gramians of shape {tuple(gramians.shape)} and targets of "
            f"shape {tuple(targets.shape)}; expected the same (groups, K, K) for both."
        )
    order = gradvac_order(k, seed, order)
    diagonal = ops.diagonal(gramians, axis1=1, axis2=2)  # (groups, K): ||g_j||^2
    floor = ZERO_GRAD * ops.max(diagonal, axis=1, keepdims=True)
    nonzero = diagonal > floor
    coefficients = ops.broadcast_to(ops.eye(k, dtype="float32"), (groups, k, k))
    for step in range(k - 1):  # unrolled over the static K: every task at once
        pick = ops.one_hot(order[:, step], k, dtype="float32")[None]  # row i selects task i's j
        products = ops.matmul(coefficients, gramians)  # (C G)_im = g_i^PC . g_m
        dots = ops.sum(products * pick, axis=2)
        squared_pc = ops.maximum(ops.sum(products * coefficients, axis=2), 0.0)
        squared_j = ops.sum(pick * diagonal[:, None, :], axis=2)
        visible = ops.logical_and(
            ops.sum(pick * ops.cast(nonzero, "float32")[:, None, :], axis=2) > 0, squared_pc > floor
        )
        norm_pc, norm_j = ops.sqrt(squared_pc), ops.sqrt(squared_j)
        denominator = ops.where(visible, norm_pc * norm_j, ops.ones_like(norm_pc))
        phi = ops.clip(ops.where(visible, dots / denominator, ops.zeros_like(dots)), -1.0, 1.0)
        target = ops.sum(targets * pick, axis=2)
        room = 1.0 - target * target
        correct = ops.logical_and(
            ops.logical_and(phi < target, room > TARGET_EDGE),
            ops.sum(pick * ops.cast(nonzero, "float32")[:, None, :], axis=2) > 0,
        )
        sine_target = ops.sqrt(ops.maximum(room, 0.0))
        scale = norm_pc * (target * ops.sqrt(ops.maximum(1.0 - phi * phi, 0.0)) - phi * sine_target)
        safe = ops.where(correct, norm_j * sine_target, ops.ones_like(norm_j))
        added = ops.where(correct, scale / safe, ops.zeros_like(scale))
        coefficients = coefficients + added[:, :, None] * pick
        targets = targets + (beta * (phi - target))[:, :, None] * pick
    return targets, ops.sum(coefficients, axis=1)


def group_gramians(rows, groups, count):
    """``(count, K, K)``: the Gramian of each group, summed over its entries' rows.

    Args:
        rows: one ``(K, *shape)`` tensor per entry.
        groups: the group index of each entry (Python ints in ``[0, count)``).
        count: the number of groups.
    """
    total = [None] * count
    k = None
    for r, g in zip(rows, groups):
        flat = ops.reshape(ops.cast(r, "float32"), (r.shape[0], -1))
        k = r.shape[0]
        gram = ops.matmul(flat, ops.transpose(flat))
        total[g] = gram if total[g] is None else total[g] + gram
    if k is None:
        raise ValueError("group_gramians: received no rows; expected at least one (K, *shape) tensor.")
    return ops.stack([t if t is not None else ops.zeros((k, k), "float32") for t in total])


def gradvac(targets, rows, beta=0.5, groups=None, seed=None, order=None):
    """GradVac over the term gradients themselves: ``(new_targets, updates, weights)``.

    ``gradvac_weights`` (Wang et al., ICLR 2021, Eq. 2-3) on the Gramian of
    each group, its weights applied to the rows of the group's entries.

    Args:
        targets: ``(groups, K, K)`` EMA targets.
        rows: one ``(K, *shape)`` tensor per entry (a variable, or a
            ``(K, params)`` Jacobian as one entry); row k is term k's gradient.
        beta: EMA rate (Eq. 3).
        groups: the group index (a Python int) of each entry; default all 0.
        seed, order: the visiting orders, as in ``gradvac_weights``.

    Returns:
        ``new_targets``, one float32 ``(*shape)`` update per entry, and the
        ``(groups, K)`` weights.

    Example:
        >>> import numpy as np
        >>> _, updates, _ = gradvac(np.zeros((1, 2, 2)), [np.array([[1.0, 0.0], [-1.0, 1.0]])],
        ...                         order=[[1], [0]])
        >>> [round(float(v), 4) for v in updates[0]]       # targets 0: PCGrad's update
        [0.5, 1.5]
    """
    targets = _as_targets(targets, "gradvac")
    rows = [ops.cast(ops.convert_to_tensor(r), "float32") for r in rows]
    groups = [0] * len(rows) if groups is None else [int(g) for g in groups]
    count = targets.shape[0]
    if len(groups) != len(rows) or any(not 0 <= g < count for g in groups):
        raise ValueError(
            f"gradvac: received groups={groups} for {len(rows)} entries and {count} target groups; "
            f"expected one group index in [0, {count}) per entry."
        )
    gramians = group_gramians(rows, groups, count) if rows else ops.zeros(targets.shape, "float32")
    new_targets, weights = gradvac_weights(targets, gramians, beta, seed, order)
    updates = [ops.tensordot(weights[g], r, axes=1) for r, g in zip(rows, groups)]
    return new_targets, updates, weights
