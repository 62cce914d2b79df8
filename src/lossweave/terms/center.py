"""Center loss as a stateful term: the centers are a non-trainable variable of the layer."""

import keras
from keras import ops

from lossweave import _backend as backend
from lossweave import ops as lw_ops
from lossweave.terms.base import Term
from lossweave.terms.check import check_class_rows

UPDATES = ("paper", "gradient")


@keras.saving.register_keras_serializable(package="lossweave")
class CenterLoss(Term):
    """Center loss with the paper's center update (Wen et al., ECCV 2016).

    The loss is ``1/2 * mean_i ||x_i - c_{y_i}||^2`` (Eq. 2 averaged over the
    batch; see ``lossweave.ops.center`` for how ``lambda`` maps to other
    implementations). With ``update="paper"`` (the default) the centers are a
    non-trainable variable moved after each training batch by Eq. 4::

        c_j <- c_j - alpha * sum_{i: y_i = j} (c_j - x_i) / (1 + n_j)

    as an in-place row update that costs O(batch x dim) whatever
    ``num_classes`` is. With ``update="gradient"`` the centers are trainable
    and the optimizer moves them (no count normalisation), as in some PyTorch
    implementations. The loss is computed with the centers from before the
    update. Rows with a bad label or non-finite features raise
    ``InvalidInputError`` and never move a center.

    Args:
        num_classes: number of classes (rows of the centers table).
        alpha: center learning rate in [0, 1] (paper: 0.5).
        update: ``"paper"`` or ``"gradient"``.
        centers_initializer: initializer of the centers (paper: zeros).
        on: model output holding the features ``(batch, dim)``.
        target: target holding sparse or one-hot labels.
        validate: raise on bad rows at run time (bad rows are skipped either way).

    Example:
        >>> import numpy as np
        >>> term = CenterLoss(num_classes=3, alpha=0.5)
        >>> x = np.array([[2., 0.], [4., 0.]], "float32")
        >>> loss = term(x, np.array([1, 1]), training=True)
        >>> float(loss), [float(v) for v in term.centers.numpy()[1]]
        (5.0, [1.0, 0.0])
    """

    def __init__(
        self,
        num_classes,
        alpha=0.5,
        update="paper",
        centers_initializer="zeros",
        on="embedding",
        target="label",
        validate=True,
        **kwargs,
    ):
        super().__init__(on=on, target=target, **kwargs)
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
            raise ValueError(f"CenterLoss: num_classes must be a positive int; received {num_classes!r}.")
        if not 0.0 <= float(alpha) <= 1.0:
            raise ValueError(f"CenterLoss: alpha must be in [0, 1]; received {alpha!r}.")
        if update not in UPDATES:
            raise ValueError(f"CenterLoss: update must be one of {UPDATES}; received {update!r}.")
        self.num_classes = num_classes
        self.alpha = float(alpha)
        self.update = update
        self.centers_initializer = keras.initializers.get(centers_initializer)
        self.validate = bool(validate)

    def build(self, outputs_shape):
        super().build(outputs_shape)
        if len(outputs_shape) != 2 or outputs_shape[-1] is None:
            raise ValueError(
                f"CenterLoss '{self.name}': received features of shape {tuple(outputs_shape)}; "
                f"expected (batch, dim) with a known dim. Point `on` at the embedding output."
            )
        self.centers = self.add_weight(
            name="centers",
            shape=(self.num_classes, outputs_shape[-1]),
            initializer=self.centers_initializer,
            trainable=self.update == "gradient",
            dtype="float32",
            autocast=False,
        )
        if self.update == "paper":  # the term gates its own row update on the input check
            backend.mark_self_gated(self.centers)

    def call(self, outputs, targets, sample_weight=None, training=None):
        clean = check_class_rows(self, outputs, targets, self.num_classes) if self.validate else None
        loss = lw_ops.center_loss(outputs, targets, self.centers, sample_weight)
        if clean is not None:
            loss = ops.where(clean, loss, ops.zeros_like(loss))
        if training and self.update == "paper":
            # Eq. 4 over the global batch (n_j counts every replica's rows): under
            # tf.distribute each replica gathers the batch and applies the same
            # rows to its copy of the centers; elsewhere this is the batch itself.
            features, labels, weights = backend.all_gather((outputs, targets, sample_weight))
            indices, deltas = lw_ops.center_update_rows(features, labels, self.centers, self.alpha, weights)
            if clean is not None:
                deltas = deltas * ops.cast(clean, deltas.dtype)
            backend.add_to_rows(self.centers, indices, deltas)
        return loss

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_classes": self.num_classes,
                "alpha": self.alpha,
                "update": self.update,
                "centers_initializer": keras.initializers.serialize(self.centers_initializer),
                "validate": self.validate,
            }
        )
        return config
