"""Combinators: a transform of the term losses in front of any strategy, at either level.

A combinator holds one strategy and shows it the terms ``f_k(L_k)`` instead
of the ``L_k``: a loss-level strategy weights ``f_k(L_k)`` (differentiated
through ``f``), a gradient-level one combines their gradients ``c_k g_k``
(``c_k = f_k'(L_k)``, held constant) from the Gramian ``C G C``. Its level
is its strategy's, its state is its strategy's (saved under the strategy's
sub-layer), and its rule is the strategy's rule after
``lossweave.ops.weighting.rescale_terms``.

- ``Scaled``: ``f_k(L) = s_k L``, a fixed per-term scale (the preference of
  a term) in front of any strategy;
- ``LogLosses``: ``f_k(L) = log(L + eps)``, so that every term's gradient
  is divided by its loss (the loss-scale balancing of DB-MTL, Lin et al.
  2023, Eq. 4; "Nash-MTL after log-losses"), in front of any strategy.

The logged weights are those of the raw terms: the strategy's weights times
``c_k`` (a gradient-level strategy whose "weights" are not combination
weights, as GradDrop's kept fractions, logs its own).
"""

import keras
from keras import ops

from lossweave import arguments
from lossweave.ops import weighting as rules
from lossweave.weighting._common import check_known_terms
from lossweave.weighting.base import Weighting, unstack
from lossweave.weighting.gradient import GradientWeighting


def _strategy(owner, strategy):
    """A strategy instance (a serialized one, from ``get_config``, deserialized), or a TypeError."""
    if isinstance(strategy, dict):
        strategy = keras.saving.deserialize_keras_object(strategy)
    if not isinstance(strategy, Weighting):
        raise TypeError(
            f"{owner}: `strategy` must be a lossweave.weighting strategy (e.g. lossweave.weighting.MGDA()); "
            f"received {type(strategy).__name__}."
        )
    return strategy


class _Transform(GradientWeighting):
    """Base of the combinators: ``f_k(L_k)`` and ``c_k = f_k'(L_k)`` in front of ``self.strategy``."""

    def __init__(self, strategy, **kwargs):
        super().__init__(**kwargs)
        self.strategy = _strategy(type(self).__name__, strategy)

    level = property(lambda self: self.strategy.level, doc="The level of the strategy behind the transform.")
    wants_activations = property(lambda self: self.strategy.wants_activations)
    needs_rows = property(lambda self: self.strategy.needs_rows)

    def transform(self, losses):
        """``(f, c)``: the transformed ``(K,)`` losses (differentiable) and the factors ``f'(L)``.

        The one hook of a combinator (``Scaled`` and ``LogLosses`` give it); the base has no transform of its own.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement transform(losses) -> (f(L), f'(L)).")

    # ------------------------------------------------------------- protocol
    def update(self, state, losses, step=None, training=False, gramian=None):
        transformed, factors = self.transform(rules.as_vector(losses))
        if self.level == "loss":
            (total, weights), state = self.strategy.update(state, transformed, step, training)
            return (total, rules.as_vector(weights) * ops.stop_gradient(factors)), state
        transformed, gramian, _ = rules.rescale_terms(factors, gramian=gramian, transformed=transformed)
        weights, state = self.strategy.update(state, transformed, step, training, gramian)
        return ops.cast(weights, "float32") * factors, state  # the weights of the raw gradients

    def update_rows(self, state, losses, step, training, rows, gramian, activations=None):
        if type(self.strategy).update_rows is GradientWeighting.update_rows:  # the Gramian's weights
            return super().update_rows(state, losses, step, training, rows, gramian, activations)
        transformed, factors = self.transform(rules.as_vector(losses))
        transformed, gramian, rows = rules.rescale_terms(factors, gramian=gramian, rows=rows, transformed=transformed)
        return self.strategy.update_rows(state, transformed, step, training, rows, gramian, activations)

    # ---------------------------------------------------------------- Layer
    def setup(self, term_names):
        self.strategy.setup(term_names)
        super().setup(term_names)

    def build_rows(self, entries):
        self.strategy.build_rows(entries)
        self.row_entries = list(entries)

    def state_values(self):
        return self.strategy.state_values()

    def assign_state(self, state, before):
        self.strategy.assign_state(state, before)

    def combine(self, losses, step=None, training=False):
        """Loss level: the strategy's total of ``f(L)``; gradient level: its logged total of ``f(L)``."""
        if self.level == "loss":
            return Weighting.combine(self, losses, step, training)
        names = self.names_of(losses)
        transformed, _ = self.transform(rules.as_vector([losses[n] for n in names]))
        return self.strategy.combine(unstack(names, transformed), step, training)

    def get_config(self):
        config = super().get_config()
        config["strategy"] = keras.saving.serialize_keras_object(self.strategy)
        return config


@keras.saving.register_keras_serializable(package="lossweave")
class Scaled(_Transform):
    """A fixed scale per term in front of any strategy: it sees ``s_k L_k`` (and ``s_k g_k``).

    At the loss level ``Scaled(Fixed(w), s)`` is ``Fixed(w * s)``; at the
    gradient level the strategy combines the scaled gradients ``s_k g_k``
    (Gramian ``S G S``), the preference of a term for a method that is not
    invariant to a gradient's scale (MGDA, CAGrad, Nash-MTL; UPGrad and
    DualProj are linear in such a scale, so that ``Scaled(UPGrad(), s)`` is
    ``UPGrad(preference=s)`` times ``sum(s) / K``). Methods that normalise
    every gradient first (IMTL-G, Aligned-MTL, ConFIG) do not see a scale:
    their ``preference=`` argument is the paper's own trade-off, not a
    scale, and stays theirs. Logged weights: the strategy's times ``s_k``,
    those of the unscaled terms.

    Args:
        strategy: any strategy (loss or gradient level).
        scales: dict of term name -> positive scale ``s_k``; terms not named get 1.

    Example:
        >>> import numpy as np
        >>> from lossweave.weighting import MGDA
        >>> w = Scaled(MGDA(), {"a": 4.0})          # MGDA sees (4, 0) and (0, 1)
        >>> w.setup(["a", "b"])
        >>> g = np.array([[1.0, 0.0], [0.0, 1.0]], "float32")
        >>> [round(float(v), 4) for v in w.aggregate(g @ g.T, np.ones(2, "float32"), 0, True)]
        [0.2353, 0.9412]
    """

    def __init__(self, strategy, scales=None, **kwargs):
        super().__init__(strategy, **kwargs)
        if scales is not None and not isinstance(scales, dict):
            raise ValueError(
                f"Scaled: `scales` must be a dict of term name -> positive scale (terms not named get 1) "
                f"or None; received {scales!r}."
            )
        self.scales = {name: arguments.positive(v, f"scales[{name!r}]", "Scaled") for name, v in (scales or {}).items()}

    def setup(self, term_names):
        check_known_terms("Scaled", "scales", self.scales, term_names)
        super().setup(term_names)

    def transform(self, losses):
        factors = ops.convert_to_tensor([self.scales.get(name, 1.0) for name in self.term_names], "float32")
        return factors * losses, factors

    def get_config(self):
        config = super().get_config()
        config["scales"] = dict(self.scales)
        return config


@keras.saving.register_keras_serializable(package="lossweave")
class LogLosses(_Transform):
    """The log of every loss in front of any strategy: it sees ``log(L_k + eps)`` and ``g_k / (L_k + eps)``.

    The loss-scale balancing step of DB-MTL (Lin et al., "Dual-Balancing
    for Multi-Task Learning", arXiv:2308.12029, Eq. 4, with LibMTL's
    ``eps = 1e-8``), as a combinator: ``LogLosses(NashMTL())`` is Nash-MTL
    on the log-losses, ``LogLosses(Fixed())`` minimises ``sum_k log(L_k +
    eps)``. The combination is invariant to a positive rescaling of any one
    loss (up to ``eps``). Losses must be non-negative; a negative loss counts
    as 0. Logged weights: the strategy's times ``1 / (L_k + eps)``, those of
    the raw terms.

    Args:
        strategy: any strategy (loss or gradient level).
        epsilon: the ``eps`` inside the log, positive.

    Example:
        >>> import numpy as np
        >>> from lossweave.weighting import Sum
        >>> w = LogLosses(Sum())
        >>> w.setup(["a", "b"])
        >>> g = np.array([[2.0, 0.0], [0.0, 1.0]], "float32")
        >>> [round(float(v), 4) for v in w.aggregate(g @ g.T, np.array([2.0, 0.5], "float32"), 0, True)]
        [0.5, 2.0]
    """

    def __init__(self, strategy, epsilon=1e-8, **kwargs):
        super().__init__(strategy, **kwargs)
        self.epsilon = arguments.positive(epsilon, "epsilon", "LogLosses")

    def transform(self, losses):
        shifted = ops.maximum(losses, 0.0) + self.epsilon
        return ops.log(shifted), 1.0 / ops.stop_gradient(shifted)

    def get_config(self):
        config = super().get_config()
        config["epsilon"] = self.epsilon
        return config
