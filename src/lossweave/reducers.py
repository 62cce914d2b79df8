"""How a tuple loss's terms become one number (``reducer=``): the reducers every pair and triplet loss takes.

A tuple loss has one term per tuple: per pair (contrastive, lifted
structure), per triplet (triplet), or per anchor (batch-hard triplets,
multi-similarity, circle, SupCon, NT-Xent, N-pairs): each loss's docstring
says which. A reducer keeps some of the terms (``low < term < high``) and
reduces them, with the library's one meaning of ``sample_weight``
(``docs/sample_weight.md``): the weight ``w_a`` of an anchor scales the
terms it anchors, denominators count tuples (or anchors) and never weigh,
weights all ``c`` give ``c`` times the loss, weight 0 removes the sample.
Nothing kept gives 0 (with a zero gradient). The formulas are in
:mod:`lossweave.ops.reducers`.

=========================  ==================================================  =====================================
class                      loss                                                pytorch-metric-learning
=========================  ==================================================  =====================================
``MeanReducer``            ``sum w_a l / #tuples`` (every loss's default)      ``MeanReducer()``
``AvgNonZeroReducer``      ``sum w_a l / #{l > 0}``                            ``AvgNonZeroReducer()``
``ThresholdReducer``       ``sum w_a l / #{low < l < high}`` over those        ``ThresholdReducer(low, high)``
``PerAnchorReducer``       each anchor's mean, then their mean                 ``PerAnchorReducer()`` (see below)
``DivisorReducer``         ``sum w_a l / divisor``                             ``DivisorReducer`` (its divisor: an argument here)
``ClassWeightedReducer``   ``sum w_a c_{y_a} l / #tuples``                     ``ClassWeightedReducer(weights)``
=========================  ==================================================  =====================================

A loss without ``reducer`` gives its paper's value: the mean over its tuples
(for ``TripletLoss(mining="batch-all")`` its ``average`` argument). PML
averages contrastive, triplet, circle and SupCon over their non-zero terms
by default: ``reducer=AvgNonZeroReducer()`` gives that reduction.
"""

import keras
from keras import ops

from lossweave import arguments
from lossweave._config_object import ConfigObject, resolve
from lossweave.ops import reducers as reducer_ops


@keras.saving.register_keras_serializable(package="lossweave")
class Reducer(ConfigObject):
    """Base of the reducers: the terms it keeps (``low``, ``high``) and ``reduce``.

    ``reduce(sums, counts, weights, ids)`` reads, per anchor, the sum and the
    number of its kept terms, its weight and its class id.
    """

    low = None
    high = None

    def reduce(self, sums, counts, weights, ids):
        raise NotImplementedError(f"{type(self).__name__} must implement reduce.")


@keras.saving.register_keras_serializable(package="lossweave")
class MeanReducer(Reducer):
    """The mean over every tuple, ``sum_a w_a sum_t l_t / #tuples``: the papers' value, every loss's default.

    Example:
        >>> import numpy as np
        >>> import lossweave as lw
        >>> x, y = np.array([[0.], [1.], [1.5], [3.]], "float32"), np.array([0, 0, 1, 1])
        >>> round(float(lw.ops.pairs.contrastive_loss(x, y, reducer=MeanReducer())), 4)
        0.2917
    """

    def reduce(self, sums, counts, weights, ids):
        return reducer_ops.mean(sums, counts, weights)


@keras.saving.register_keras_serializable(package="lossweave")
class ThresholdReducer(MeanReducer):
    """The mean over the terms with ``low < l < high``: pytorch-metric-learning's ``ThresholdReducer``.

    Args:
        low: terms at or below it are left out (and not counted); ``None``: no lower bound.
        high: terms at or above it are left out; ``None``: no upper bound. At least one is given.

    Example:
        >>> import numpy as np
        >>> import lossweave as lw
        >>> x, y = np.array([[0.], [1.], [1.5], [3.]], "float32"), np.array([0, 0, 1, 1])
        >>> round(float(lw.ops.pairs.contrastive_loss(x, y, reducer=ThresholdReducer(low=0.2))), 4)
        0.8125
    """

    _config = ("low", "high")

    def __init__(self, low=None, high=None):
        self.low = arguments.optional(arguments.number, low, "low", self)
        self.high = arguments.optional(arguments.number, high, "high", self)
        if self.low is None and self.high is None:
            raise ValueError(f"{type(self).__name__}: received low=None and high=None; expected at least one "
                             f"bound (MeanReducer keeps every term).")


@keras.saving.register_keras_serializable(package="lossweave")
class AvgNonZeroReducer(ThresholdReducer):
    """The mean over the non-zero terms (``l > 0``): pytorch-metric-learning's default for most losses.

    Hermans et al.'s "BA≠0" for batch-all triplets (``TripletLoss(mining="batch-all")``'s default).

    Example:
        >>> import numpy as np
        >>> import lossweave as lw
        >>> x, y = np.array([[0.], [1.], [1.5], [3.]], "float32"), np.array([0, 0, 1, 1])
        >>> round(float(lw.ops.pairs.contrastive_loss(x, y, reducer=AvgNonZeroReducer())), 4)
        0.5833
    """

    _config = ()

    def __init__(self):
        super().__init__(low=0.0)


@keras.saving.register_keras_serializable(package="lossweave")
class PerAnchorReducer(Reducer):
    """Each anchor's mean over its tuples, then the mean over the anchors that have one.

    ``sum_a w_a mean_a / #{a : a has a tuple}``. pytorch-metric-learning's
    ``PerAnchorReducer`` (pairs only) averages over every row of the batch
    instead, a row without a pair counting 0; ``count_empty=True`` gives that.

    Args:
        count_empty: count the anchors without a tuple (the rows that take
            part: weight 0 or an invalid label still removes a row) in the
            mean, with a term of 0.

    Example:
        >>> import numpy as np
        >>> import lossweave as lw
        >>> x, y = np.array([[0.], [1.], [1.5], [3.]], "float32"), np.array([0, 0, 1, 1])
        >>> round(float(lw.ops.pairs.contrastive_loss(x, y, reducer=PerAnchorReducer())), 4)
        0.2917
    """

    _config = ("count_empty",)

    def __init__(self, count_empty=False):
        self.count_empty = arguments.boolean(count_empty, "count_empty", self)

    def reduce(self, sums, counts, weights, ids):
        if not self.count_empty:
            return reducer_ops.per_anchor_mean(sums, counts, weights)
        means = ops.where(counts > 0, sums / ops.maximum(counts, 1.0), ops.zeros_like(sums))
        return reducer_ops.mean(means, ops.cast(ids >= 0, "float32") * ops.cast(weights != 0, "float32"), weights)


@keras.saving.register_keras_serializable(package="lossweave")
class DivisorReducer(Reducer):
    """The sum of the terms divided by a constant: ``sum_a w_a sum_t l_t / divisor``.

    pytorch-metric-learning's ``DivisorReducer`` divides by a number the loss
    supplies; here the divisor is an argument (``divisor=1``: the sum).

    Args:
        divisor: the constant (> 0).

    Example:
        >>> import numpy as np
        >>> import lossweave as lw
        >>> x, y = np.array([[0.], [1.], [1.5], [3.]], "float32"), np.array([0, 0, 1, 1])
        >>> round(float(lw.ops.pairs.contrastive_loss(x, y, reducer=DivisorReducer(12.0))), 4)
        0.2917
    """

    _config = ("divisor",)

    def __init__(self, divisor=1.0):
        self.divisor = arguments.positive(divisor, "divisor", self)

    def reduce(self, sums, counts, weights, ids):
        return reducer_ops.divided(sums, weights, self.divisor)


@keras.saving.register_keras_serializable(package="lossweave")
class ClassWeightedReducer(Reducer):
    """The mean over every tuple of ``c_{y_a} l``, ``c`` a weight per anchor class: PML's ``ClassWeightedReducer``.

    A class weight multiplies the sample weights (it scales the terms of the
    anchors of its class; the denominator still counts tuples). A class id
    beyond the list weighs ``c`` of the last class.

    Args:
        weights: a list of non-negative floats, one per class id.

    Example:
        >>> import numpy as np
        >>> import lossweave as lw
        >>> x, y = np.array([[0.], [1.], [1.5], [3.]], "float32"), np.array([0, 0, 1, 1])
        >>> round(float(lw.ops.pairs.contrastive_loss(x, y, reducer=ClassWeightedReducer([1.0, 3.0]))), 4)
        0.6875
    """

    _config = ("weights",)

    def __init__(self, weights):
        if isinstance(weights, (str, bytes)) or not hasattr(weights, "__len__") or len(weights) == 0:
            raise ValueError(f"{type(self).__name__}: `weights` must be a non-empty list of numbers, one per "
                             f"class; received {weights!r}.")
        self.weights = [arguments.number(w, "weights", self, low=0.0) for w in weights]

    def reduce(self, sums, counts, weights, ids):
        table = ops.convert_to_tensor(self.weights, "float32")
        scale = ops.take(table, ops.clip(ids, 0, len(self.weights) - 1))
        return reducer_ops.mean(sums, counts, weights * scale)


NAMES = {
    "mean": MeanReducer,
    "non_zero": AvgNonZeroReducer,
    "per_anchor": PerAnchorReducer,
}


def get(value, owner="reducer", argument="reducer"):
    """A :class:`Reducer` from an object, a name of ``NAMES``, a serialized config, or ``None`` (``None``).

    Example:
        >>> get("non_zero")
        AvgNonZeroReducer()
    """
    return resolve(value, Reducer, NAMES, argument, owner)


__all__ = [
    "AvgNonZeroReducer",
    "ClassWeightedReducer",
    "DivisorReducer",
    "MeanReducer",
    "NAMES",
    "PerAnchorReducer",
    "Reducer",
    "ThresholdReducer",
    "get",
]
