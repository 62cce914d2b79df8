"""Fixed per-term weights: the result of Keras's ``compile(loss_weights=...)``."""

import keras
from keras import ops

from lossweave.weighting.base import Weighting


@keras.saving.register_keras_serializable(package="lossweave")
class Fixed(Weighting):
    """Constant per-term weights; terms not named get ``default``.

    ``total = sum_k w_k * L_k``, what Keras computes for a dict of losses with
    ``loss_weights``. Center loss's ``lambda`` is the weight of the center term.

    Args:
        weights: dict of term name -> float.
        default: weight of a term missing from ``weights``.

    Example:
        >>> import numpy as np
        >>> w = Fixed({"center": 0.003})
        >>> w.setup(["softmax", "center"])
        >>> total, _ = w.combine({"softmax": np.float32(2.0), "center": np.float32(100.0)})
        >>> round(float(total), 4)
        2.3
    """

    def __init__(self, weights=None, default=1.0, **kwargs):
        super().__init__(**kwargs)
        weights = dict(weights or {})
        for name, value in weights.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise ValueError(
                    f"Fixed: the weight of term '{name}' must be a number; received {value!r}."
                )
        self.weights_by_term = {k: float(v) for k, v in weights.items()}
        self.default = float(default)

    def setup(self, term_names):
        unknown = sorted(set(self.weights_by_term) - set(term_names))
        if unknown:
            raise ValueError(
                f"Fixed: received weights for {unknown}, which are not terms of the "
                f"objective; the terms are {list(term_names)}."
            )
        super().setup(term_names)

    def term_weights(self, losses, step, training):
        return {
            name: ops.convert_to_tensor(self.weights_by_term.get(name, self.default), "float32")
            for name in losses
        }

    def get_config(self):
        config = super().get_config()
        config.update({"weights": dict(self.weights_by_term), "default": self.default})
        return config
