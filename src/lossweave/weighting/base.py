"""The weighting protocol: how per-term losses become the one scalar that is minimised.

In the spirit of optax's ``GradientTransformation``, a strategy is small and
interchangeable. ``Objective`` calls, once, ``setup(term_names)`` (create any
state: learned weights, loss history) and, every step inside the compiled
train/test step, ``combine(losses, step, training)`` with a dict of scalar
term losses and the Objective's training step counter (an int32 tensor: 0 at
the first training step, saved with the model). ``combine`` (the one hook a
loss-level strategy implements) returns the total and the per-term weights,
which the Objective logs as ``weight/<term>``. Gradient-level strategies
(``lossweave.weighting.gradient``) implement ``aggregate`` over the term
gradients' Gramian instead. Strategies that keep state are Layers, so their variables
are tracked, trained where trainable and saved with the Objective.
"""

import keras
from keras import ops

from lossweave import arguments
from lossweave.weighting._common import weighted_sum


@keras.saving.register_keras_serializable(package="lossweave")
class Weighting(keras.layers.Layer):
    """Base class: the plain sum of the terms (every weight 1).

    Subclasses override ``combine`` (and ``setup`` if stateful);
    ``lossweave.weighting._common.weighted_sum`` gives ``sum_k w_k * L_k``.
    A keyword argument that neither the strategy nor ``keras.layers.Layer``
    (``name``, ``dtype``, ``trainable``) takes is refused with a ``TypeError``
    listing the accepted ones.
    """

    def __init__(self, **kwargs):
        arguments.check_keywords(self, kwargs)
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.term_names = None

    def setup(self, term_names):
        """Record the term names; subclasses create their state here."""
        self.term_names = list(term_names)
        self.built = True

    def combine(self, losses, step=None, training=False):
        """``(total, weights)`` for a dict of scalar losses: here every weight is 1."""
        weights = {name: ops.ones((), "float32") for name in losses}
        return weighted_sum(losses, weights), weights
