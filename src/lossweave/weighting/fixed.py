"""Fixed or scheduled per-term weights: ``compile(loss_weights=...)``, plus schedules."""

import keras
from keras import ops

from lossweave import arguments
from lossweave.schedules.base import Lambda, Schedule
from lossweave.ops import weighting as rules
from lossweave.weighting._common import check_known_terms
from lossweave.weighting.base import Weighting


def as_weight(owner, name, value):
    """A float, or a Schedule (a plain callable is wrapped in ``Lambda``).

    ``name`` is the argument as the error quotes it (``"weights['center']"``,
    ``"default"``, ``"alpha"``).
    """
    if isinstance(value, dict):  # a serialized schedule, from get_config
        value = keras.saving.deserialize_keras_object(value)
    if isinstance(value, Schedule):
        return value
    if callable(value):
        return Lambda(value)
    try:
        return arguments.number(value, name, owner)
    except ValueError as error:
        raise ValueError(
            f"{error} A weight may also be a lossweave.schedules.Schedule or a step -> value callable."
        ) from None


def evaluate_weight(weight, step):
    """A float32 scalar tensor: the float, or the schedule at ``step``."""
    if isinstance(weight, Schedule):
        return weight(step)
    return ops.convert_to_tensor(weight, "float32")


def serialize_weight(weight):
    if isinstance(weight, Schedule):
        return keras.saving.serialize_keras_object(weight)
    return weight


@keras.saving.register_keras_serializable(package="lossweave")
class Fixed(Weighting):
    """Constant or scheduled per-term weights; terms not named get ``default``.

    ``total = sum_k w_k(step) * L_k``, what Keras computes for a dict of losses
    with ``loss_weights`` when every weight is a number. Center loss's
    ``lambda`` is the weight of the center term. A weight may also be a
    ``lossweave.schedules.Schedule`` (or any ``step -> value`` callable, wrapped
    in ``lossweave.schedules.Lambda``): it is evaluated inside the compiled
    step from the Objective's step counter, so it changes during ``fit`` on
    every backend, JAX included.

    Args:
        weights: dict of term name -> float or schedule.
        default: weight of a term missing from ``weights`` (float or schedule).

    Example:
        >>> import numpy as np
        >>> from lossweave.schedules import LinearWarmup
        >>> w = Fixed({"center": 0.003})
        >>> w.setup(["softmax", "center"])
        >>> total, _ = w.combine({"softmax": np.float32(2.0), "center": np.float32(100.0)})
        >>> round(float(total), 4)
        2.3
        >>> w = Fixed({"center": LinearWarmup(0.01, steps=100)})
        >>> w.setup(["softmax", "center"])
        >>> _, weights = w.combine({"softmax": np.float32(2.0), "center": np.float32(100.0)}, step=50)
        >>> round(float(weights["center"]), 4)
        0.005
    """

    setup_optional = True

    def __init__(self, weights=None, default=1.0, **kwargs):
        super().__init__(**kwargs)
        weights = dict(weights or {})
        self.weights_by_term = {k: as_weight("Fixed", f"weights[{k!r}]", v) for k, v in weights.items()}
        self.default = as_weight("Fixed", "default", default)

    def setup(self, term_names):
        check_known_terms("Fixed", "weights", self.weights_by_term, term_names)
        super().setup(term_names)

    def update(self, state, losses, step=None, training=False):
        weights = [evaluate_weight(self.weights_by_term.get(name, self.default), step) for name in self.term_names]
        return (rules.weighted_total(losses, weights), weights), state

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "weights": {k: serialize_weight(v) for k, v in self.weights_by_term.items()},
                "default": serialize_weight(self.default),
            }
        )
        return config
