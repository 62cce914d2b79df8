"""FAMO: fast adaptive multitask optimisation, task logits learned from loss decreases."""

import keras

from lossweave import arguments
from lossweave.ops import weighting as rules
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

    def init(self, term_names):
        return rules.famo_init(len(term_names))._asdict()

    def update(self, state, losses, step=None, training=False):
        out, new = rules.famo(
            rules.FAMOState(**state), losses, self.beta, self.gamma, self.min_loss, self.epsilon, training
        )
        return out, new._asdict()

    def get_config(self):
        config = super().get_config()
        config.update(
            {"beta": self.beta, "gamma": self.gamma, "min_loss": self.min_loss, "epsilon": self.epsilon}
        )
        return config
