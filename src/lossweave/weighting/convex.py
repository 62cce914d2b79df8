"""Convex combination of two terms with a fixed, scheduled or learned mixing weight."""

import keras
from keras import ops

from lossweave import arguments
from lossweave.schedules.base import Schedule
from lossweave.ops import weighting as rules
from lossweave.weighting.base import Weighting
from lossweave.weighting.fixed import as_weight, evaluate_weight, serialize_weight


@keras.saving.register_keras_serializable(package="lossweave")
class Clip(keras.constraints.Constraint):
    """Keeps a weight in ``[min_value, max_value]``: the optimizer clips it after each update.

    Args:
        min_value: lower bound.
        max_value: upper bound.

    Example:
        >>> import numpy as np
        >>> [float(v) for v in Clip(0.0, 1.0)(np.array([-0.5, 0.25, 3.0], "float32"))]
        [0.0, 0.25, 1.0]
    """

    def __init__(self, min_value=0.0, max_value=1.0):
        min_value = arguments.number(min_value, "min_value", "Clip")
        max_value = arguments.number(max_value, "max_value", "Clip")
        if not min_value <= max_value:
            raise ValueError(
                f"Clip: expected min_value <= max_value; received min_value={min_value!r}, "
                f"max_value={max_value!r}."
            )
        self.min_value = min_value
        self.max_value = max_value

    def __call__(self, w):
        w = ops.convert_to_tensor(w)
        return ops.clip(w, ops.cast(self.min_value, w.dtype), ops.cast(self.max_value, w.dtype))

    def get_config(self):
        return {"min_value": self.min_value, "max_value": self.max_value}


@keras.saving.register_keras_serializable(package="lossweave")
class Convex(Weighting):
    """``total = alpha * L_first + (1 - alpha) * L_second``.

    ``alpha`` is a float, a ``lossweave.schedules.Schedule`` evaluated at the
    Objective's step counter, or, with ``learn_alpha=True``, a float32 variable
    (initialised to ``alpha``) trained with the model and kept in ``[0, 1]`` by
    a ``Clip`` constraint that the optimizer applies after every update. Any
    other term of the objective is added with weight 1.

    Beware the collapse of a learned ``alpha``: ``d total / d alpha =
    L_first - L_second`` does not depend on ``alpha``, so gradient descent
    pushes ``alpha`` to 1 if ``L_first < L_second`` and to 0 otherwise; the
    objective then ignores the larger loss. A learned convex weight is only
    useful with something else that balances it (e.g. a regulariser on
    ``alpha``); for learned weights that do not collapse, see
    ``lossweave.weighting.Uncertainty``.

    Args:
        first: name of the term weighted by ``alpha``.
        second: name of the term weighted by ``1 - alpha``.
        alpha: float in ``[0, 1]``, a schedule (or step -> value callable), or
            the initial value of the learned weight.
        learn_alpha: learn ``alpha`` (needs a float ``alpha``). Named so that
            it does not shadow ``keras.layers.Layer``'s ``trainable`` (whether
            the layer's variables train at all), which ``Convex`` also takes.

    Example:
        >>> import numpy as np
        >>> w = Convex("mse", "mae", alpha=0.25)
        >>> w.setup(["mse", "mae"])
        >>> total, weights = w.combine({"mse": np.float32(4.0), "mae": np.float32(2.0)})
        >>> float(total), float(weights["mae"])
        (2.5, 0.75)
    """

    setup_optional = True

    def __init__(self, first, second, alpha=0.5, learn_alpha=False, **kwargs):
        super().__init__(**kwargs)
        for label, value in (("first", first), ("second", second)):
            if not isinstance(value, str) or not value:
                raise ValueError(f"Convex: `{label}` must be a term name (a string); received {value!r}.")
        if first == second:
            raise ValueError(f"Convex: `first` and `second` must be two different terms; both are {first!r}.")
        self.first = first
        self.second = second
        self.learn_alpha = arguments.boolean(learn_alpha, "learn_alpha", "Convex")
        self.alpha = as_weight("Convex", "alpha", alpha)
        if self.learn_alpha and isinstance(self.alpha, Schedule):
            raise ValueError(
                "Convex: learn_alpha=True needs a float `alpha` (its initial value); received "
                f"the schedule {self.alpha!r}. Use a schedule or a learned alpha, not both."
            )
        if isinstance(self.alpha, float):
            arguments.number(self.alpha, "alpha", "Convex", low=0.0, high=1.0)

    trainable_state = ("alpha",)
    state_constraints = {"alpha": Clip(0.0, 1.0)}

    @property
    def alpha_variable(self):
        """The learned ``alpha`` (``learn_alpha=True``, after ``setup``), else None."""
        return self.state_variables.get("alpha")

    def init(self, term_names):
        return {"alpha": ops.convert_to_tensor(self.alpha, "float32")} if self.learn_alpha else {}

    def setup(self, term_names):
        missing = [name for name in (self.first, self.second) if name not in term_names]
        if missing:
            raise ValueError(
                f"Convex: terms {missing} are not terms of the objective; the terms are "
                f"{list(term_names)}."
            )
        super().setup(term_names)

    def current_alpha(self, step, state=None):
        """``alpha`` as a float32 scalar tensor at ``step`` (the learned one: from ``state``, else the variable)."""
        if self.learn_alpha:
            return (state or self.state_values())["alpha"]
        return evaluate_weight(self.alpha, step)

    def update(self, state, losses, step=None, training=False):
        alpha = self.current_alpha(step, state)
        weights = [ops.ones((), "float32")] * len(self.term_names)
        weights[self.term_names.index(self.first)] = alpha
        weights[self.term_names.index(self.second)] = 1.0 - alpha
        return (rules.weighted_total(losses, weights), weights), state

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "first": self.first,
                "second": self.second,
                "alpha": serialize_weight(self.alpha),
                "learn_alpha": self.learn_alpha,
            }
        )
        return config
