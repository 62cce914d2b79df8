"""The base of every loss term: a Keras Layer that reads one model output and one target."""

import keras
import numpy as np
from keras import ops

from lossweave.terms.check import InputCheck


def _as_tensor(x):
    if isinstance(x, (np.ndarray, np.generic, list, tuple, int, float)):
        return ops.convert_to_tensor(x)
    return x


@keras.saving.register_keras_serializable(package="lossweave")
class Term(keras.layers.Layer):
    """A loss term: ``call(outputs, targets, sample_weight, training) -> scalar``.

    A term is a Layer so that any state it has (centers, class weights) is a
    tracked, saved Keras variable updated the way ``BatchNormalization``
    updates its statistics. Subclasses implement ``call`` and, if they own
    variables, ``build(outputs_shape)``.

    Args:
        on: name of the model output the term reads; ``None`` for a model with
            a single output.
        target: name of the target (key of the ``y`` dict given to ``fit``).
        **kwargs: Layer arguments (``name``, ``dtype``). Terms compute in
            float32 by default, also under a mixed-precision policy.
    """

    def __init__(self, on=None, target="label", **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.on = on
        self.target = target
        self._outputs_shape = None
        self.input_check = InputCheck()  # used by terms that check their inputs
        # Labels must never be autocast (float16 cannot hold class ids > 2048).
        self._convert_input_args = False

    def __call__(self, outputs, targets, **kwargs):
        # With input conversion off, Keras takes only tensors as positional args:
        # convert NumPy arrays here, keeping their dtype (labels stay integers).
        outputs = keras.tree.map_structure(_as_tensor, outputs)
        targets = keras.tree.map_structure(_as_tensor, targets)
        return super().__call__(outputs, targets, **kwargs)

    def build(self, outputs_shape):
        self._outputs_shape = tuple(outputs_shape)

    def get_build_config(self):
        if self._outputs_shape is None:
            return {}
        return {"outputs_shape": list(self._outputs_shape)}

    def build_from_config(self, config):
        if config and not self.built:
            self.build(tuple(config["outputs_shape"]))

    def get_config(self):
        config = super().get_config()
        config.update({"on": self.on, "target": self.target})
        return config
