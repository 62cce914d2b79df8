"""Terms made from plain losses: any Keras loss, and softmax cross-entropy on logits."""

import keras
from keras import ops

from lossweave import ops as lw_ops
from lossweave.ops.softmax import softmax_cross_entropy_checked
from lossweave.terms.base import Term


@keras.saving.register_keras_serializable(package="lossweave")
class FunctionLoss(keras.losses.Loss):
    """A per-sample loss function as a ``keras.losses.Loss`` (sample weights, reduction).

    Example:
        >>> import numpy as np
        >>> loss = FunctionLoss(keras.losses.mean_absolute_error)
        >>> float(loss(np.zeros((2, 1)), np.array([[1.0], [3.0]]), sample_weight=np.array([1.0, 0.0])))
        0.5
    """

    def __init__(self, fn, name=None, **kwargs):
        fn = keras.losses.get(fn)
        super().__init__(name=name or getattr(fn, "__name__", "loss"), **kwargs)
        self.fn = fn

    def call(self, y_true, y_pred):
        return self.fn(y_true, y_pred)

    def get_config(self):
        return {**super().get_config(), "fn": keras.saving.serialize_keras_object(self.fn)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["fn"] = keras.saving.deserialize_keras_object(config["fn"])
        return cls(**config)


@keras.saving.register_keras_serializable(package="lossweave")
class Loss(Term):
    """Any ``keras.losses.Loss`` (or loss name) as a term on one output.

    The term does not check its inputs: label values are passed to the Keras
    loss as they are, and Keras's ``SparseCategoricalCrossentropy`` does not
    raise on a label out of range (depending on the backend it clamps the
    index, returns NaN or a wrong value), nor on NaN/Inf outputs. For class
    labels use :class:`SoftmaxCrossEntropy`, which raises ``InvalidInputError``
    and leaves the state unchanged. Shapes and an empty batch are still checked
    when the step is traced, and inside an ``Objective`` a NaN or Inf loss (a
    NaN target, say) fails the step with ``InvalidInputError`` naming the term,
    changing no state.

    Args:
        loss: a Keras loss instance, name or function.
        on: model output the loss reads (``y_pred``).
        target: target the loss compares with (``y_true``).

    Example:
        >>> import keras, numpy as np
        >>> term = Loss(keras.losses.MeanSquaredError(), on="score", target="score")
        >>> float(term(np.array([[1.], [3.]]), np.array([[0.], [1.]])))
        2.5
    """

    def __init__(self, loss, on=None, target="label", **kwargs):
        super().__init__(on=on, target=target, **kwargs)
        resolved = keras.losses.get(loss)
        if resolved is None:
            raise ValueError(f"Loss term: received loss={loss!r}; expected a Keras loss or its name.")
        if not isinstance(resolved, keras.losses.Loss):  # a name or function: give it sample weights
            resolved = FunctionLoss(resolved)
        self.loss = resolved

    def compute_loss(self, outputs, targets, sample_weight, training):
        return self.loss(targets, outputs, sample_weight=sample_weight)

    def get_config(self):
        config = super().get_config()
        config["loss"] = keras.losses.serialize(self.loss)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["loss"] = keras.losses.deserialize(config["loss"])
        return cls(**config)


@keras.saving.register_keras_serializable(package="lossweave")
class SoftmaxCrossEntropy(Term):
    """Softmax cross-entropy on logits, with sparse or one-hot labels checked.

    ``-mean_i log softmax(z_i)_{y_i}``: the softmax loss of the center-loss paper
    (Eq. 1), computed on the logits of the last dense layer. Unlike
    ``keras.losses.SparseCategoricalCrossentropy``, a label out of range raises
    ``InvalidInputError`` on every backend instead of being clamped.

    Args:
        on: model output holding the logits ``(batch, num_classes)``.
        target: target holding sparse or one-hot labels.
        **kwargs: ``validate``, ``missing`` and Layer arguments (see :class:`~lossweave.terms.Term`).

    Example:
        >>> import numpy as np
        >>> round(float(SoftmaxCrossEntropy()(np.zeros((2, 4), "float32"), np.array([1, 3]))), 4)
        1.3863
    """

    input_checks = "class_rows"  # num_classes: the width of the logits

    def __init__(self, on="logits", target="label", **kwargs):
        super().__init__(on=on, target=target, **kwargs)

    def compute_loss(self, outputs, targets, sample_weight, training):
        rows = self.checked_rows(outputs, targets)
        if rows is None or len(tuple(outputs.shape)) != 2:
            return lw_ops.softmax_cross_entropy(outputs, targets, sample_weight)
        valid = ops.logical_and(rows.valid, rows.finite)
        return softmax_cross_entropy_checked(rows.features32, rows.indices, valid, sample_weight)
