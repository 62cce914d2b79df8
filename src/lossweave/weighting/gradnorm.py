"""GradNorm: loss weights learned so that the terms' gradient norms train at a common rate."""

import keras

from lossweave import arguments
from lossweave.ops.aggregators.gradnorm import GradNormState, gradnorm, gradnorm_init, gradnorm_update, last_layer
from lossweave.weighting.gradient import GradientWeighting
from lossweave.weighting.gradient_state import term_rows

__all__ = ["GradNorm", "gradnorm_update", "last_layer"]  # the rule's earlier home: lossweave.ops.aggregators


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

    def init(self, term_names):
        return gradnorm_init(len(term_names))._asdict()

    def build_rows(self, entries):
        super().build_rows(entries)
        self.last = last_layer(self.row_entries)

    def update_rows(self, state, losses, step, training, rows, gramian, activations=None):
        new, updates, weights = gradnorm(
            GradNormState(**state), term_rows(self, rows), losses, self.last, self.alpha, self.learning_rate
        )
        return (updates, weights), new._asdict()

    def get_config(self):
        config = super().get_config()
        config.update({"alpha": self.alpha, "learning_rate": self.learning_rate})
        return config
