"""The strategy protocol, one for both levels: a pure ``init``/``update`` pair held by a thin Layer.

In the spirit of optax's ``GradientTransformation``, a strategy is two pure
functions over explicit state:

- ``init(term_names) -> state``: a dict ``{variable name: initial value}``
  (empty for a strategy without state);
- ``update(state, losses, step, training, ...) -> (output, new_state)``:
  the rule, a call into ``lossweave.ops`` that assigns nothing. Its
  trailing arguments and its output depend on the strategy's **level**, a
  property of its type (``Weighting.level``, checked when a subclass is
  defined):

  * ``"loss"`` (``Weighting``): ``update(state, losses, step, training)``
    with the ``(K,)`` term losses returns ``((total, weights), new_state)``:
    the one scalar the optimizer minimises and the ``(K,)`` weights logged
    as ``weight/<term>``;
  * ``"gradient"`` (``lossweave.weighting.GradientWeighting``):
    ``update(state, losses, step, training, gramian)`` returns the ``(K,)``
    weights of the term gradients, or ``update_rows(state, losses, step,
    training, rows, gramian, activations)`` the update of each shared entry
    itself.

The strategy is the Layer that holds that state: ``setup(term_names)``
(called once by the ``Objective``) creates one variable per entry of
``init``'s dict, with that name, and the Layer's entry points
(``combine``; at the gradient level ``aggregate`` and ``aggregate_rows``)
read the variables, call the rule and assign the new state it returns. So
the state is saved with the Objective, trained by the optimizer where the
strategy says so (``trainable_state``) and moved by the rule otherwise, and
a custom loop can call the rule without any Layer.

``step`` is the Objective's training step counter (an int32 tensor: 0 at the
first training step, saved with the model).
"""

import keyword

import keras
from keras import ops

from lossweave import arguments
from lossweave.ops import weighting as rules

LEVELS = ("loss", "gradient")


def _exposed(layer, name):
    """Whether the state variable ``name`` may also be reached as ``layer.<name>`` (the names of earlier releases)."""
    if not name.isidentifier() or keyword.iskeyword(name):
        return False
    return name not in vars(layer) and not hasattr(type(layer), name)


@keras.saving.register_keras_serializable(package="lossweave")
class Weighting(keras.layers.Layer):
    """Base of every strategy, and the loss-level plain sum (every weight 1).

    A loss-level subclass implements ``update`` (and ``init`` when it keeps
    state): ``update(state, losses, step, training) -> ((total, weights),
    new_state)`` over a ``(K,)`` vector of losses in ``setup`` order. A
    gradient-level one derives from ``GradientWeighting``. A keyword
    argument that neither the strategy nor ``keras.layers.Layer`` (``name``,
    ``dtype``, ``trainable``) takes is refused with a ``TypeError`` listing
    the accepted ones.

    Attributes:
        level: ``"loss"`` or ``"gradient"``, a property of the type that
            the Objective and the command line read.
        trainable_state: names of ``init``'s entries that the optimizer
            trains (a learned weight); the others only the rule moves.
        state_constraints: ``{name: keras constraint}`` of trainable entries.

    Example:
        >>> import numpy as np
        >>> w = Weighting()
        >>> w.setup(["a", "b"])
        >>> total, weights = w.combine({"a": np.float32(2.0), "b": np.float32(3.0)})
        >>> float(total), [float(v) for v in weights.values()]
        (5.0, [1.0, 1.0])
    """

    level = "loss"
    setup_optional = True  # combine takes the terms of its losses (read on the class that says so only)
    trainable_state = ()
    state_constraints = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        level = vars(cls).get("level", cls.level)
        if not isinstance(level, property) and level not in LEVELS:
            raise TypeError(
                f"{cls.__name__}: received level={level!r}; a strategy's level is one of {LEVELS}. "
                f"Derive from lossweave.weighting.Weighting (loss level) or GradientWeighting (gradient level)."
            )

    def __init__(self, **kwargs):
        arguments.check_keywords(self, kwargs)
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.term_names = None
        self.state_variables = {}
        self._row_state = set()

    # ------------------------------------------------------------- protocol
    def init(self, term_names):
        """``{variable name: initial value}``: the state before the first step (pure; here none)."""
        return {}

    def update(self, state, losses, step=None, training=False):
        """``((total, weights), new_state)`` for the ``(K,)`` losses (pure; here the plain sum)."""
        weights = [ops.ones((), "float32")] * len(losses)
        return (rules.weighted_total(losses, weights), weights), state

    # ---------------------------------------------------------------- Layer
    def setup(self, term_names):
        """Record the term names and create the state ``init`` gives (once)."""
        self.term_names = list(term_names)
        if not self.state_variables:
            self._create_state(self.init(self.term_names))
        self.built = True

    def _create_state(self, initial, rows=False):
        """One variable per entry of ``initial``, named after it (float32 unless the value says int)."""
        for name, value in initial.items():
            value = ops.convert_to_tensor(value)
            trainable = name in self.trainable_state
            variable = self.add_weight(
                name=name, shape=tuple(value.shape),
                initializer=lambda shape, dtype, v=value: ops.copy(ops.cast(v, dtype)),  # a buffer of its own
                dtype=keras.backend.standardize_dtype(value.dtype), trainable=trainable,
                constraint=self.state_constraints.get(name), autocast=trainable,
            )
            self.state_variables[name] = variable
            if rows:
                self._row_state.add(name)
            if _exposed(self, name):
                setattr(self, name, variable)

    def state_values(self):
        """The current state as tensors: a trainable entry as itself (differentiable), the others a copy.

        A copy, so that a value the rule returns is not changed by the
        assignment that follows on backends that assign in place (row state
        shaped like the parameters is read without one: rules never return it).
        """
        values = {}
        for name, variable in self.state_variables.items():
            value = ops.convert_to_tensor(variable)
            if name not in self.trainable_state and name not in self._row_state:
                value = ops.copy(value)
            values[name] = value
        return values

    def assign_state(self, state, before):
        """Assign the entries of ``state`` that the rule changed (``before``: what it was given)."""
        for name, value in state.items():
            if value is not before.get(name):
                self.state_variables[name].assign(value)

    def names_of(self, losses):
        """The term names in ``setup`` order, checked against a dict of losses.

        A strategy that declares ``setup_optional`` (its weights are per term
        name, it keeps no per-term state) takes the terms of the losses it is
        given instead.
        """
        if vars(type(self)).get("setup_optional", False):
            if self.term_names is None or list(losses) != self.term_names:
                self.setup(list(losses))
            return self.term_names
        if self.term_names is None:
            raise ValueError(
                f"{type(self).__name__}: setup(term_names) was not called. An Objective "
                "calls it; standalone, call weighting.setup([...names...]) before combine."
            )
        if set(losses) != set(self.term_names):
            raise ValueError(
                f"{type(self).__name__}: received losses for {sorted(losses)}, but setup "
                f"was given the terms {self.term_names}; they must be the same."
            )
        return self.term_names

    def combine(self, losses, step=None, training=False):
        """``(total, {term: weight})`` for a dict of scalar losses: the rule, and its new state assigned."""
        names = self.names_of(losses)
        vector = [_float32_scalar(losses[n]) for n in names]
        before = self.state_values()
        (total, weights), state = self.update(before, vector, step, training)
        self.assign_state(state, before)
        return total, unstack(names, weights)


def _float32_scalar(value):
    """``value`` as a float32 scalar tensor; one that is already (a term's loss) as it is: no eager op."""
    if ops.is_tensor(value) and len(value.shape) == 0 and keras.backend.standardize_dtype(value.dtype) == "float32":
        return value
    return ops.reshape(ops.cast(value, "float32"), ())


def unstack(names, weights):
    """``{name: weight}`` from K scalars or a ``(K,)`` tensor."""
    return {name: weights[i] for i, name in enumerate(names)}
