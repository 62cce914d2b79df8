"""Accuracy on logits, for sparse or one-hot labels."""

import keras

from lossweave import ops as lw_ops


def _logits_accuracy(y_true, y_pred):
    return lw_ops.logits_accuracy(y_pred, y_true)


@keras.saving.register_keras_serializable(package="lossweave")
class LogitsAccuracy(keras.metrics.MeanMetricWrapper):
    """Fraction of samples whose ``argmax(softmax(logits))`` equals the label.

    Takes sparse ``(batch,)``/``(batch, 1)`` or one-hot labels, so the same metric
    serves both encodings; rows with an invalid label count as wrong.

    Args:
        name: metric name in the logs.
        dtype: dtype of the result.

    Example:
        >>> import numpy as np
        >>> m = LogitsAccuracy()
        >>> m.update_state(np.array([1, 0]), np.array([[0., 2.], [0., 3.]]))
        >>> float(m.result())
        0.5
    """

    def __init__(self, name="accuracy", dtype=None):
        super().__init__(fn=_logits_accuracy, name=name, dtype=dtype)

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype}
