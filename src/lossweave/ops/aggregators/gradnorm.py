"""GradNorm (Chen et al., ICML 2018): loss weights moved so that the gradient norms train at a common rate."""

import typing

from keras import ops


def gradnorm_update(weights, norms, losses, initial_losses, alpha=1.5, learning_rate=0.025):
    """One GradNorm step of the loss weights: ``(new_weights, targets)`` (pure).

    Chen, Badrinarayanan, Lee & Rabinovich, "GradNorm: Gradient
    Normalization for Adaptive Loss Balancing in Deep Multitask Networks",
    ICML 2018, Eq. 1-2 and Algorithm 1. With ``n_i = ||grad_W L_i||`` for the
    last shared layer W::

        G_i = w_i n_i,   G_bar = mean_i G_i
        r_i = (L_i / L_i(0)) / mean_j (L_j / L_j(0))         # relative inverse training rate
        L_grad = sum_i |G_i - G_bar r_i^alpha|                # Eq. 2, the targets held constant
        w_i <- w_i - learning_rate sign(G_i - G_bar r_i^alpha) n_i
        w <- K w / sum_j w_j                                  # renormalised to sum K

    A weight that the step would make negative is set to 0 (the paper does
    not say; a zero weight has ``G_i = 0`` below its target and grows back);
    if every weight is 0 they restart at 1. A non-positive ``L_i(0)`` gives
    that term ``L_i / L_i(0) = 1``.

    Args:
        weights: ``(K,)`` current weights ``w_i`` (sum K).
        norms: ``(K,)`` gradient norms ``n_i`` of the unweighted losses.
        losses, initial_losses: ``(K,)`` ``L_i(t)`` and ``L_i(0)``.
        alpha: the restoring force's asymmetry (1.5 in the paper).
        learning_rate: the step of plain gradient descent on ``L_grad``.

    Returns:
        The new ``(K,)`` weights and the ``(K,)`` targets ``G_bar r_i^alpha``.

    Example:
        >>> new, target = gradnorm_update([1.0, 1.0], [2.0, 1.0], [1.0, 1.0], [1.0, 1.0], learning_rate=0.1)
        >>> [round(float(v), 4) for v in new]              # G = (2, 1) around G_bar = 1.5
        [0.8421, 1.1579]
    """
    weights, norms, losses, initial_losses = (
        ops.cast(ops.convert_to_tensor(v), "float32") for v in (weights, norms, losses, initial_losses)
    )
    k = weights.shape[0]
    positive = initial_losses > 0
    ones = ops.ones_like(losses)
    ratio = ops.where(positive, losses / ops.where(positive, initial_losses, ones), ones)
    ratio = ops.maximum(ratio, 0.0)
    mean_ratio = ops.mean(ratio)
    relative = ops.where(mean_ratio > 0, ratio / ops.maximum(mean_ratio, 1e-30), ones)
    scaled = weights * norms
    targets = ops.mean(scaled) * ops.power(relative, alpha)
    moved = ops.maximum(weights - learning_rate * ops.sign(scaled - targets) * norms, 0.0)
    total = ops.sum(moved)
    new = ops.where(total > 0, k * moved / ops.maximum(total, 1e-30), ones)
    return new, targets


class GradNormState(typing.NamedTuple):
    """GradNorm's state: the loss weights, the first step's losses and whether they were recorded."""

    loss_weights: typing.Any
    initial_losses: typing.Any
    has_initial: typing.Any


def gradnorm_init(k):
    """GradNorm's state before the first step: every weight 1, no initial losses."""
    return GradNormState(ops.ones((k,), "float32"), ops.zeros((k,), "float32"), ops.zeros((), "float32"))


def last_layer(entries):
    """Indices of the entries of the last layer among ``entries`` (paths' prefix before the last "/").

    Example:
        >>> last_layer([("trunk/kernel", (2, 2)), ("trunk/bias", (2,)), ("top/kernel", (2, 2)), ("top/bias", (2,))])
        [2, 3]
    """
    if not entries:
        return []
    prefix = entries[-1][0].rsplit("/", 1)[0]
    return [i for i, (path, _) in enumerate(entries) if path.rsplit("/", 1)[0] == prefix]


def gradnorm(state, rows, losses, last=None, alpha=1.5, learning_rate=0.025):
    """One GradNorm step over the term gradients: ``(new_state, updates, weights)``.

    The update of every entry is ``sum_k w_k rows_k`` with this step's
    weights ``w`` (Algorithm 1 updates the model and the weights with the
    same step's values); the weights then take ``gradnorm_update``'s step
    from the norms ``n_k`` of the rows of the entries ``last`` (the indices
    of the last shared layer's entries; default all). The first call
    records the losses as ``L_k(0)``.

    Args:
        state: a ``GradNormState`` (``gradnorm_init(K)`` at the start).
        rows: one ``(K, *shape)`` tensor per entry, row k term k's gradient.
        losses: the ``(K,)`` term losses of this step.
        last: indices of the entries whose gradient norms GradNorm balances.
        alpha, learning_rate: as in ``gradnorm_update``.

    Example:
        >>> import numpy as np
        >>> state, updates, w = gradnorm(gradnorm_init(2), [np.array([[2.0, 0.0], [0.0, 1.0]])], [1.0, 1.0],
        ...                              learning_rate=0.1)
        >>> [float(v) for v in updates[0]], [round(float(v), 4) for v in state.loss_weights]
        ([2.0, 1.0], [0.8421, 1.1579])
    """
    rows = [ops.cast(ops.convert_to_tensor(r), "float32") for r in rows]
    losses = ops.cast(ops.convert_to_tensor(losses), "float32")
    weights = ops.copy(ops.convert_to_tensor(state.loss_weights))  # this step's, not an alias of the state
    k = weights.shape[0]
    has_initial = ops.convert_to_tensor(state.has_initial)
    initial = ops.where(has_initial > 0, ops.convert_to_tensor(state.initial_losses), losses)
    squared = ops.zeros((k,), "float32")
    for index in range(len(rows)) if last is None else last:
        squared = squared + ops.sum(ops.reshape(rows[index] * rows[index], (k, -1)), axis=1)
    new, _ = gradnorm_update(weights, ops.sqrt(squared), losses, initial, alpha, learning_rate)
    updates = [ops.tensordot(weights, r, axes=1) for r in rows]
    return GradNormState(new, initial, ops.ones_like(has_initial)), updates, weights
