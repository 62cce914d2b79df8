"""FAMO: fast adaptive multitask optimisation, task logits learned from loss decreases."""

import keras
from keras import ops

from lossweave import arguments
from lossweave.weighting._common import stack_losses, unstack_weights
from lossweave.weighting.base import Weighting


@keras.saving.register_keras_serializable(package="lossweave")
class FAMO(Weighting):
    """FAMO (Liu, Liu, Jin, Stone & Liu, "FAMO: Fast Adaptive Multitask
    Optimization", NeurIPS 2023; Algorithm 1 and the authors' ``famo.py``).

    Task logits ``xi`` (a non-trainable variable, initialised to 0) give
    ``z = softmax(xi)``. With ``D_k = L_k - min_loss + eps`` the model is
    trained on::

        total = sum_k z_k * log(D_k) / c,   c = stop_gradient(sum_k z_k / D_k)

    whose gradient is ``sum_k w_k * grad L_k`` with the effective weights
    ``w_k = (z_k / D_k) / c`` (positive, summing to 1); ``combine`` reports
    these ``w_k`` (logged as ``weight/<term>``). Note that ``total`` is a sum
    of logs, so the logged ``loss`` may be negative.

    After each step the logits move so that the weighted log-losses decrease
    at equal rates::

        delta_k = log D_k(t) - log D_k(t+1)
        xi <- xi - beta * (grad_xi(z^T delta) + gamma * xi)

    with ``grad_xi(z^T delta) = z * (delta - z . delta)`` (the softmax
    Jacobian), a plain gradient step as in Algorithm 1 (the authors' code
    uses Adam with weight decay ``gamma`` for this step).

    **Approximation.** FAMO evaluates the *same* batch again after the model
    update to get ``L(t+1)``. Inside ``Objective.compute_loss`` that second
    forward pass is not available, so the losses of the *next* training step
    (the next batch, at the updated parameters) stand in for ``L(t+1)``: the
    previous step's losses are kept in a non-trainable variable and, at each
    training step, the logits are updated first and the current losses are
    then weighted with the new ``z``. The first training step makes no
    update. Evaluation (``training=False``) uses the current ``z`` and changes
    no state.

    Args:
        beta: step size of the logits (the authors' ``w_lr``, 0.025).
        gamma: decay of the logits (regularisation towards equal weights).
        min_loss: the lower bound ``L*`` subtracted from every loss (0 for
            the usual non-negative losses, as in the authors' code).
        epsilon: the ``eps`` keeping ``log D_k`` finite.

    Example:
        >>> import numpy as np
        >>> w = FAMO()
        >>> w.setup(["a", "b"])
        >>> _, weights = w.combine({"a": np.float32(1.0), "b": np.float32(3.0)}, training=True)
        >>> round(float(weights["a"]), 4), round(float(weights["b"]), 4)
        (0.75, 0.25)
    """

    def __init__(self, beta=0.025, gamma=0.001, min_loss=0.0, epsilon=1e-8, **kwargs):
        super().__init__(**kwargs)
        self.beta = arguments.positive(beta, "beta", "FAMO")
        self.gamma = arguments.number(gamma, "gamma", "FAMO", low=0.0)
        self.min_loss = arguments.number(min_loss, "min_loss", "FAMO")
        self.epsilon = arguments.positive(epsilon, "epsilon", "FAMO")

    def setup(self, term_names):
        count = len(term_names)

        def state(name, shape):
            return self.add_weight(
                name=name, shape=shape, initializer="zeros", trainable=False, dtype="float32", autocast=False
            )

        self.logits = state("logits", (count,))
        self.previous_losses = state("previous_losses", (count,))
        self.has_previous = state("has_previous", ())
        super().setup(term_names)

    def combine(self, losses, step=None, training=False):
        vector = stack_losses(self, losses)
        gap = vector - self.min_loss + self.epsilon
        logits = ops.convert_to_tensor(self.logits)
        if training:
            logits = self._update(ops.stop_gradient(vector))
        z = ops.softmax(logits)
        c = ops.stop_gradient(ops.sum(z / gap))
        total = ops.sum(z * ops.log(gap)) / c
        weights = ops.stop_gradient(z / gap / c)
        return total, unstack_weights(self, weights)

    def _update(self, vector):
        log_gap = ops.log(vector - self.min_loss + self.epsilon)
        logits = ops.convert_to_tensor(self.logits)
        z = ops.softmax(logits)
        delta = ops.log(self.previous_losses - self.min_loss + self.epsilon) - log_gap
        grad = z * (delta - ops.sum(z * delta))
        moved = logits - self.beta * (grad + self.gamma * logits)
        new = ops.where(self.has_previous > 0, moved, logits)
        self.logits.assign(new)
        self.previous_losses.assign(vector)
        self.has_previous.assign(ops.ones((), "float32"))
        return new

    def get_config(self):
        config = super().get_config()
        config.update(
            {"beta": self.beta, "gamma": self.gamma, "min_loss": self.min_loss, "epsilon": self.epsilon}
        )
        return config
