"""The rules of the loss-level strategies: pure functions over the (K,) term losses and explicit state.

optax style: a rule with state has ``<name>_init(k) -> state`` (a NamedTuple
of tensors) and ``<name>(state, losses, ..., training) -> ((total, weights),
new_state)``; it assigns nothing. ``lossweave.weighting``'s strategies are
thin Layers over these functions: they keep the state in variables, call the
rule and assign what it returns. A custom training loop calls them directly::

    state = dwa_init(2)
    for batch in data:
        (total, weights), state = dwa(state, losses_of(batch), steps_per_epoch=100)

``losses`` is a ``(K,)`` vector or a list of K scalars (float32 whatever
their dtype); ``weights`` the ``(K,)`` factors logged as ``weight/<term>``:
the derivative of the total with respect to each loss. Rules that the
gradient-level strategies share with these (GradNorm's weight step) live in
``lossweave.ops.aggregators``.

==================  ===================================================  ==============================
rule                total                                                paper
==================  ===================================================  ==============================
``weighted_total``  ``sum_k w_k L_k`` (Fixed, Convex, the plain sum)     (``compile(loss_weights=)``)
``dwa``             ``sum_k w_k L_k``, ``w = K softmax(r / T)``          Liu et al., CVPR 2019, Eq. 1
``famo``            ``sum_k z_k log(L_k - L* + eps) / c``                Liu et al., NeurIPS 2023, Alg. 1
``uncertainty``     ``sum_k exp(-s_k) L_k (/2) + s_k / 2``               Kendall et al., CVPR 2018, Eq. 7, 10
``gls``             ``(prod_k L_k)^(1/K)``                               Chennupati et al., CVPRW 2019
``rlw_weights``     ``softmax(z)``, ``z ~ N(0, I)``                      Lin et al., TMLR 2022
``rescale_terms``   the losses, Gramian and rows of ``c_k L_k``          (the combinators' rule)
==================  ===================================================  ==============================
"""

import typing

from keras import ops
from keras import random


def as_vector(losses):
    """The losses as a float32 ``(K,)`` vector (a list of scalars is stacked)."""
    if isinstance(losses, (list, tuple)):
        return ops.stack([ops.reshape(ops.cast(v, "float32"), ()) for v in losses])
    return ops.cast(ops.convert_to_tensor(losses), "float32")


def weighted_total(losses, weights):
    """``sum_k w_k L_k`` in float32, added term by term in order.

    Example:
        >>> round(float(weighted_total([2.0, 100.0], [1.0, 0.003])), 4)
        2.3
    """
    total = ops.zeros((), "float32")
    for k in range(len(losses)):
        total = total + ops.cast(weights[k], "float32") * ops.cast(losses[k], "float32")
    return total


# ----------------------------------------------------------------------- DWA
class DWAState(typing.NamedTuple):
    """DWA's state: training steps seen, this epoch's loss sum, the last two epochs' mean losses."""

    steps: typing.Any
    epoch_sum: typing.Any
    mean_1: typing.Any
    mean_2: typing.Any


def dwa_init(k):
    """DWA's state before the first step: zeros (``steps`` int32)."""
    zeros = ops.zeros((k,), "float32")
    return DWAState(ops.zeros((), "int32"), zeros, zeros, zeros)


def dwa_weights(state, steps_per_epoch, temperature=2.0):
    """``w_k = K exp(r_k / T) / sum_i exp(r_i / T)``, ``r = mean_1 / mean_2``; 1 in the first two epochs.

    Liu, Johns & Davison, "End-to-End Multi-Task Learning with Attention",
    CVPR 2019, Eq. 1.
    """
    mean_1, mean_2 = (ops.convert_to_tensor(v) for v in (state.mean_1, state.mean_2))
    count = mean_1.shape[0]
    epoch = ops.convert_to_tensor(state.steps) // steps_per_epoch
    dynamic = count * ops.softmax(ops.divide_no_nan(mean_1, mean_2) / temperature)
    return ops.where(epoch >= 2, dynamic, ops.ones((count,), "float32"))


def dwa_update(state, losses, steps_per_epoch):
    """The state after one training step with ``losses``: an epoch closes every ``steps_per_epoch``."""
    losses = as_vector(losses)
    steps = ops.convert_to_tensor(state.steps) + 1
    epoch_sum = ops.convert_to_tensor(state.epoch_sum) + losses
    mean_1 = ops.convert_to_tensor(state.mean_1)
    closes = ops.equal(steps % steps_per_epoch, 0)
    return DWAState(
        steps,
        ops.where(closes, ops.zeros_like(epoch_sum), epoch_sum),
        ops.where(closes, epoch_sum / float(steps_per_epoch), mean_1),
        ops.where(closes, mean_1, ops.convert_to_tensor(state.mean_2)),
    )


def dwa(state, losses, steps_per_epoch, temperature=2.0, training=True):
    """DWA's ``((total, weights), new_state)``: this step's weights, then (training) the state moved.

    Example:
        >>> state = dwa_init(2)
        >>> for losses in [(1.0, 1.0), (0.5, 1.0), (0.5, 1.0)]:
        ...     (total, weights), state = dwa(state, losses, steps_per_epoch=1)
        >>> [round(float(w), 4) for w in weights]
        [0.8756, 1.1244]
    """
    vector = as_vector(losses)
    weights = dwa_weights(state, steps_per_epoch, temperature)
    total = ops.sum(weights * vector)
    if training:
        state = dwa_update(state, ops.stop_gradient(vector), steps_per_epoch)
    return (total, weights), state


# ---------------------------------------------------------------------- FAMO
class FAMOState(typing.NamedTuple):
    """FAMO's state: the task logits ``xi``, the previous step's losses and whether there was one."""

    logits: typing.Any
    previous_losses: typing.Any
    has_previous: typing.Any


def famo_init(k):
    """FAMO's state before the first step: zero logits (equal weights), no previous losses."""
    zeros = ops.zeros((k,), "float32")
    return FAMOState(zeros, zeros, ops.zeros((), "float32"))


def famo(state, losses, beta=0.025, gamma=0.001, min_loss=0.0, epsilon=1e-8, training=True):
    """FAMO's ``((total, weights), new_state)`` (Liu et al., NeurIPS 2023, Algorithm 1).

    Training: the logits first take the step ``xi <- xi - beta (z * (delta -
    z . delta) + gamma xi)``, ``delta = log D(previous) - log D(now)``,
    ``D = L - min_loss + epsilon`` (none at the first step); then ``total =
    sum_k z_k log D_k / c``, ``c = stop_gradient(sum_k z_k / D_k)``, with
    ``z = softmax(xi)``, and ``weights = (z / D) / c``. See
    ``lossweave.weighting.FAMO`` for the one-step-late stand-in for the
    paper's second forward pass.

    Example:
        >>> (total, weights), state = famo(famo_init(2), [1.0, 3.0])
        >>> [round(float(w), 4) for w in weights]
        [0.75, 0.25]
    """
    vector = as_vector(losses)
    gap = vector - min_loss + epsilon
    logits = ops.convert_to_tensor(state.logits)
    if training:
        seen = ops.stop_gradient(vector)
        z = ops.softmax(logits)
        delta = ops.log(ops.convert_to_tensor(state.previous_losses) - min_loss + epsilon) - ops.log(
            seen - min_loss + epsilon
        )
        grad = z * (delta - ops.sum(z * delta))
        moved = logits - beta * (grad + gamma * logits)
        logits = ops.where(ops.convert_to_tensor(state.has_previous) > 0, moved, logits)
        state = FAMOState(logits, seen, ops.ones((), "float32"))
    z = ops.softmax(logits)
    c = ops.stop_gradient(ops.sum(z / gap))
    total = ops.sum(z * ops.log(gap)) / c
    return (total, ops.stop_gradient(z / gap / c)), state


# --------------------------------------------------------------- Uncertainty
def uncertainty(log_variances, losses, classification, nonnegative=False):
    """Kendall, Gal & Cipolla (CVPR 2018): ``(total, weights)`` from the log-variances ``s_k``.

    ``total = sum_k w_k L_k + r(s_k)`` with ``w_k = exp(-s_k)`` for a
    classification term (Eq. 10, 12) and ``exp(-s_k) / 2`` for a regression
    term (Eq. 7); ``r(s) = s / 2``, or ``log(1 + exp(s))`` when
    ``nonnegative`` (Liebel & Koerner 2018, Eq. 2). The ``s_k`` are trained
    by the optimizer with the model: the rule has no state of its own.

    Args:
        log_variances: ``(K,)`` vector or K scalars ``s_k`` (differentiable).
        losses: the K term losses.
        classification: K bools, True for a classification term.
        nonnegative: use ``log(1 + sigma^2)`` as the regulariser.

    Example:
        >>> total, weights = uncertainty([0.0, 0.0], [2.0, 3.0], [True, False])
        >>> float(total), [float(w) for w in weights]
        (3.5, [1.0, 0.5])
    """
    total = ops.zeros((), "float32")
    weights = []
    for k, is_classification in enumerate(classification):
        s = ops.convert_to_tensor(log_variances[k])
        precision = ops.exp(-s)
        weight = precision if is_classification else 0.5 * precision
        regularizer = ops.softplus(s) if nonnegative else 0.5 * s
        total = total + weight * ops.cast(losses[k], "float32") + regularizer
        weights.append(weight)
    return total, weights


# ----------------------------------------------------------------------- GLS
def gls(losses):
    """The geometric mean ``exp(mean_k log L_k)`` and its derivative ``total / (K L_k)`` (Chennupati et al. 2019).

    Example:
        >>> total, weights = gls([2.0, 8.0])
        >>> float(total), [float(w) for w in weights]
        (4.0, [1.0, 0.25])
    """
    vector = as_vector(losses)
    total = ops.exp(ops.mean(ops.log(vector)))
    return total, ops.stop_gradient(total) / (float(vector.shape[0]) * ops.stop_gradient(vector))


# ----------------------------------------------------------------------- RLW
def rlw_weights(k, seed=None, training=True):
    """Random loss weights ``softmax(z)``, ``z ~ N(0, I_K)`` (Lin et al., TMLR 2022); ``1/K`` in evaluation.

    ``seed`` is an int or a ``keras.random.SeedGenerator`` (which the draw
    advances, as every ``keras.random`` function does).

    Example:
        >>> round(float(sum(rlw_weights(3, seed=1))), 5), [round(float(w), 4) for w in rlw_weights(2, training=False)]
        (1.0, [0.5, 0.5])
    """
    if not training:
        return ops.full((k,), 1.0 / k, dtype="float32")
    return ops.softmax(random.normal((k,), seed=seed, dtype="float32"))


# --------------------------------------------------------------- combinators
def rescale_terms(factors, losses=None, gramian=None, rows=None, transformed=None):
    """What a strategy sees of the terms ``f_k(L_k)`` whose gradients are ``c_k g_k``.

    The rule of ``lossweave.weighting.Scaled`` (``f(L) = s L``, ``c = s``)
    and ``LogLosses`` (``f(L) = log(L + eps)``, ``c = 1 / (L + eps)``):
    the rows ``c_k R_k``, the Gramian ``C G C`` and the losses
    ``transformed`` (the ``f_k(L_k)``; default ``c_k L_k``). Arguments left
    None come back None.

    Returns:
        ``(losses, gramian, rows)`` as the strategy behind the transform sees them.

    Example:
        >>> losses, gramian, rows = rescale_terms([2.0, 0.5], [1.0, 4.0], [[1.0, 1.0], [1.0, 4.0]], [[[1.0], [2.0]]])
        >>> [float(v) for v in losses], ops.convert_to_numpy(gramian).tolist(), ops.convert_to_numpy(rows[0]).tolist()
        ([2.0, 2.0], [[4.0, 1.0], [1.0, 1.0]], [[2.0], [1.0]])
    """
    c = ops.stop_gradient(as_vector(factors))
    if transformed is None and losses is not None:
        transformed = c * as_vector(losses)
    if gramian is not None:
        gramian = ops.cast(ops.convert_to_tensor(gramian), "float32") * c[:, None] * c[None, :]
    if rows is not None:
        rows = [ops.cast(ops.convert_to_tensor(r), "float32") for r in rows]
        rows = [r * ops.reshape(c, (-1,) + (1,) * (len(r.shape) - 1)) for r in rows]
    return transformed, gramian, rows
