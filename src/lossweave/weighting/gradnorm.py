"""GradNorm: loss weights learned so that the terms' gradient norms train at a common rate."""

import keras
from keras import ops

from lossweave import arguments
from lossweave.weighting._common import term_names
from lossweave.weighting.gradient import GradientWeighting
from lossweave.weighting.gradient_state import term_rows


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


@keras.saving.register_keras_serializable(package="lossweave")
class GradNorm(GradientWeighting):
    """GradNorm: loss weights moved so that every term's gradient norm trains at a common rate.

    Chen, Badrinarayanan, Lee & Rabinovich, "GradNorm: Gradient
    Normalization for Adaptive Loss Balancing in Deep Multitask Networks",
    ICML 2018, Eq. 1-2 and Algorithm 1: the weighted gradient norms
    ``G_i = w_i ||grad_W L_i||`` on the last shared layer W are pulled to
    ``G_bar r_i^alpha``, their mean times the relative inverse training rate
    ``r_i`` (``L_i(t) / L_i(0)`` over its mean) to the power ``alpha``; the
    weights take a gradient step on ``L_grad = sum_i |G_i - G_bar r_i^alpha|``
    (targets constant) and are renormalised to sum K. The update of every
    shared variable is ``sum_k w_k g_k`` with the weights of this step
    (Algorithm 1 updates both with the step's values).

    W is the last layer, in variable order, among the shared entries: the
    entries whose paths share the last entry's prefix before ``"/"`` (a
    ``Dense``'s kernel and bias). In representation mode it is the
    representation. The weights take plain gradient descent with their own
    ``learning_rate`` (the paper and LibMTL step them with the model's
    optimizer; a separate rate keeps them independent of the user's
    optimizer and its state). ``L_i(0)`` are the losses of the first
    training step. Weights, ``L_i(0)`` and whether they were recorded are
    non-trainable variables saved with the Objective. Logged weights: the
    ``w_i`` of the step. See ``gradnorm_update``.

    Args:
        alpha: strength of the pull towards a common training rate (1.5 in
            the paper; 0 equalises the gradient norms).
        learning_rate: step of the weights on ``L_grad`` (units: 1 per unit
            of gradient norm).

    Example:
        >>> import numpy as np
        >>> w = GradNorm(learning_rate=0.1)
        >>> w.setup(["a", "b"])
        >>> w.build_rows([("trunk/kernel", (2,))])
        >>> rows = [np.array([[2.0, 0.0], [0.0, 1.0]], "float32")]
        >>> updates, weights = w.aggregate_rows(rows, None, np.ones(2, "float32"), 0, True)
        >>> [float(v) for v in updates[0]], [float(v) for v in weights]    # this step: w = 1
        ([2.0, 1.0], [1.0, 1.0])
        >>> [round(float(v), 4) for v in np.asarray(w.loss_weights)]                  # the next step's
        [0.8421, 1.1579]
    """

    def __init__(self, alpha=1.5, learning_rate=0.025, **kwargs):
        super().__init__(**kwargs)
        self.alpha = arguments.number(alpha, "alpha", "GradNorm", low=0.0)
        self.learning_rate = arguments.positive(learning_rate, "learning_rate", "GradNorm")

    def setup(self, term_names):
        count = len(term_names)

        def state(name, shape, initializer):
            return self.add_weight(
                name=name, shape=shape, initializer=initializer, trainable=False, dtype="float32", autocast=False
            )

        self.loss_weights = state("loss_weights", (count,), "ones")
        self.initial_losses = state("initial_losses", (count,), "zeros")
        self.has_initial = state("has_initial", (), "zeros")
        super().setup(term_names)

    def build_rows(self, entries):
        super().build_rows(entries)
        self.last = last_layer(self.row_entries)

    def aggregate_rows(self, rows, gramian, losses, step, training):
        k = len(term_names(self))
        rows = term_rows(self, rows)
        losses = ops.cast(losses, "float32")
        weights = ops.copy(self.loss_weights)  # this step's weights, not an alias of the variable
        initial = ops.where(ops.convert_to_tensor(self.has_initial) > 0, ops.convert_to_tensor(self.initial_losses), losses)
        squared = ops.zeros((k,), "float32")
        for index in self.last:
            squared = squared + ops.sum(ops.reshape(rows[index] * rows[index], (k, -1)), axis=1)
        new, _ = gradnorm_update(weights, ops.sqrt(squared), losses, initial, self.alpha, self.learning_rate)
        updates = [ops.tensordot(weights, r, axes=1) for r in rows]
        self.loss_weights.assign(new)
        self.initial_losses.assign(initial)
        self.has_initial.assign(ops.ones((), "float32"))
        return updates, weights

    def get_config(self):
        config = super().get_config()
        config.update({"alpha": self.alpha, "learning_rate": self.learning_rate})
        return config
