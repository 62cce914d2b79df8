"""Center loss as a stateful term: the centers are a non-trainable variable of the layer."""

import keras
from keras import ops

from lossweave import _backend as backend
from lossweave import arguments
from lossweave import ops as lw_ops
from lossweave.ops import center as center_ops
from lossweave.terms.table import ClassTable

UPDATES = ("paper", "gradient")


@keras.saving.register_keras_serializable(package="lossweave")
class CenterLoss(ClassTable):
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
        **kwargs: ``validate``, ``missing`` and Layer arguments (see :class:`~lossweave.terms.Term`).

    Example:
        >>> import numpy as np
        >>> term = CenterLoss(num_classes=3, alpha=0.5)
        >>> x = np.array([[2., 0.], [4., 0.]], "float32")
        >>> loss = term(x, np.array([1, 1]), training=True)
        >>> float(loss), [float(v) for v in term.centers.numpy()[1]]
        (5.0, [1.0, 0.0])
    """

    table_name = "centers"

    def __init__(
        self,
        num_classes,
        alpha=0.5,
        update="paper",
        centers_initializer="zeros",
        on="embedding",
        target="label",
        **kwargs,
    ):
        super().__init__(num_classes, on=on, target=target, **kwargs)
        self.alpha = arguments.number(alpha, "alpha", self, low=0.0, high=1.0)
        self.update = arguments.choice(update, UPDATES, "update", self)
        self.centers_initializer = keras.initializers.get(centers_initializer)

    @property
    def table_trainable(self):
        return self.update == "gradient"

    def compute_loss(self, outputs, targets, sample_weight, training):
        rows = self.checked_rows(outputs, targets)
        if rows is None:
            return lw_ops.center_loss(outputs, targets, self.centers, sample_weight)
        # One pass over the labels and features for the check, the loss and Eq. 4.
        features, indices, keep = center_ops.prepare_checked(
            rows.features32, rows.indices, rows.valid, rows.finite, sample_weight
        )
        differences = center_ops.center_differences(features, indices, self.centers)
        # For update_state in this call: Eq. 4 reads the same differences (without their gradient).
        self.remember("step_rows", (outputs, targets, sample_weight, (differences, indices, keep)))
        return center_ops.center_loss_of(differences, keep, sample_weight)

    def update_state(self, outputs, targets, sample_weight):
        if self.update != "paper":
            return
        # Eq. 4 over the global batch (n_j counts every replica's rows): under
        # tf.distribute each replica gathers the batch and applies the same
        # rows to its copy of the centers; elsewhere this is the batch itself.
        step = self.recall("step_rows")
        if step is not None and step[0] is outputs and step[1] is targets and step[2] is sample_weight:
            # The rows compute_loss prepared (per row, and the centers are the same on every
            # replica: gathering them gives what preparing the gathered batch gives).
            differences, indices, keep = step[3]
            differences, indices, keep = backend.all_gather((ops.stop_gradient(differences), indices, keep))
            indices, deltas = center_ops.center_update_of(differences, indices, keep, self.alpha, self.num_classes)
        else:
            features, labels, weights = backend.all_gather((outputs, targets, sample_weight))
            indices, deltas = lw_ops.center_update_rows(features, labels, self.centers, self.alpha, weights)
        self.add_to_table(indices, deltas)

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "update": self.update}
