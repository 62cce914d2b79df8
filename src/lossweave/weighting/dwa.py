"""DWA: weights from the rate at which each term's epoch-mean loss falls."""

import keras

from lossweave import arguments
from lossweave.ops import weighting as rules
from lossweave.weighting.base import Weighting


@keras.saving.register_keras_serializable(package="lossweave")
class DWA(Weighting):
    """Dynamic weight average (Liu, Johns & Davison, "End-to-End Multi-Task
    Learning with Attention", CVPR 2019, Eq. 1).

    During epoch ``t`` (counted from 0) the weights are::

        w_k(t) = K * exp(r_k(t-1) / T) / sum_i exp(r_i(t-1) / T),
        r_k(t-1) = L_k(t-1) / L_k(t-2)

    where ``L_k(e)`` is the mean of term ``k``'s batch losses over epoch ``e``
    and ``T`` the temperature; in the first two epochs every weight is 1. The
    total is ``sum_k w_k * L_k``.

    A training step cannot see the epoch, so the strategy counts its own
    training steps and needs ``steps_per_epoch`` (with ``fit``, the number of
    batches per epoch: ``ceil(num_samples / batch_size)``, or the
    ``steps_per_epoch`` given to ``fit``). Its state is non-trainable
    variables, updated only when ``training`` (evaluation uses the current
    weights and changes nothing) and saved with the Objective: ``steps`` (the
    training steps seen), ``epoch_sum`` (the sum of this epoch's losses) and
    ``mean_1``/``mean_2`` (the mean losses of the last and second-last
    complete epochs). When ``steps`` reaches a multiple of
    ``steps_per_epoch`` the epoch closes: ``mean_2 <- mean_1``,
    ``mean_1 <- epoch_sum / steps_per_epoch``, ``epoch_sum <- 0``. If
    ``steps_per_epoch`` does not match the real epochs, the "epochs" are
    simply windows of that many steps.

    Args:
        steps_per_epoch: training steps per epoch (required, positive int).
        temperature: the softmax temperature ``T`` (paper: 2).

    Example:
        >>> import numpy as np
        >>> w = DWA(steps_per_epoch=1)
        >>> w.setup(["a", "b"])
        >>> for a, b in [(1.0, 1.0), (0.5, 1.0), (0.5, 1.0)]:
        ...     _, weights = w.combine({"a": np.float32(a), "b": np.float32(b)}, training=True)
        >>> round(float(weights["a"]), 4), round(float(weights["b"]), 4)
        (0.8756, 1.1244)
    """

    def __init__(self, steps_per_epoch=None, temperature=2.0, **kwargs):
        super().__init__(**kwargs)
        if steps_per_epoch is None:
            raise ValueError(
                "DWA: `steps_per_epoch` is required: the weights change at epoch boundaries, "
                "which a training step cannot see. Pass the number of batches per epoch, "
                "e.g. DWA(steps_per_epoch=math.ceil(len(x) / batch_size))."
            )
        self.steps_per_epoch = arguments.positive_int(steps_per_epoch, "steps_per_epoch", "DWA")
        self.temperature = arguments.positive(temperature, "temperature", "DWA")

    def init(self, term_names):
        return rules.dwa_init(len(term_names))._asdict()

    def update(self, state, losses, step=None, training=False):
        out, new = rules.dwa(rules.DWAState(**state), losses, self.steps_per_epoch, self.temperature, training)
        return out, new._asdict()

    def get_config(self):
        config = super().get_config()
        config.update({"steps_per_epoch": self.steps_per_epoch, "temperature": self.temperature})
        return config
