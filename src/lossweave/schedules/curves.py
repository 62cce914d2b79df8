"""Warm-up, cosine, piecewise-constant and exponential schedules."""

import math

import keras
from keras import ops

from lossweave import arguments
from lossweave.schedules.base import Schedule


@keras.saving.register_keras_serializable(package="lossweave")
class LinearWarmup(Schedule):
    """Linear ramp from ``start`` to ``value`` over ``steps``, then constant.

    ``v(t) = start + (value - start) * min(t / steps, 1)``; with ``steps=0`` the
    value is ``value`` from the first step. The usual way to bring in an
    auxiliary term (e.g. center loss) once the main loss has settled.

    Args:
        value: the value reached at ``t = steps`` and kept afterwards.
        steps: length of the ramp, in ``unit``s (>= 0).
        start: the value at ``t = 0``.
        unit: ``"step"`` or ``"epoch"`` (``t`` is then the epoch index).
        steps_per_epoch: required with ``unit="epoch"``.

    Example:
        >>> schedule = LinearWarmup(0.1, steps=100)
        >>> [round(float(schedule(s)), 4) for s in (0, 50, 100, 500)]
        [0.0, 0.05, 0.1, 0.1]
        >>> by_epoch = LinearWarmup(1.0, steps=4, unit="epoch", steps_per_epoch=10)
        >>> float(by_epoch(25))  # epoch 2 of 4
        0.5
    """

    def __init__(self, value, steps, start=0.0, unit="step", steps_per_epoch=None):
        super().__init__(unit=unit, steps_per_epoch=steps_per_epoch)
        self.value = arguments.number(value, "value", "LinearWarmup")
        self.steps = arguments.number(steps, "steps", "LinearWarmup", low=0.0)
        self.start = arguments.number(start, "start", "LinearWarmup")

    def at(self, t):
        if self.steps == 0:
            return ops.zeros_like(t) + self.value
        fraction = ops.clip(t / self.steps, 0.0, 1.0)
        return self.start + (self.value - self.start) * fraction

    def get_config(self):
        return {"value": self.value, "steps": self.steps, "start": self.start, **super().get_config()}


@keras.saving.register_keras_serializable(package="lossweave")
class Cosine(Schedule):
    """Cosine decay from ``initial`` to ``final`` over ``steps``, then constant.

    ``v(t) = final + (initial - final) * (1 + cos(pi * min(t, steps) / steps)) / 2``
    (Loshchilov & Hutter, "SGDR", ICLR 2017, Eq. 5, one cycle without restart).
    ``final > initial`` gives a cosine ramp up.

    Args:
        initial: the value at ``t = 0``.
        final: the value at ``t >= steps``.
        steps: length of the decay, in ``unit``s (> 0).
        unit: ``"step"`` or ``"epoch"``.
        steps_per_epoch: required with ``unit="epoch"``.

    Example:
        >>> schedule = Cosine(1.0, 0.0, steps=10)
        >>> [round(float(schedule(s)), 4) for s in (0, 5, 10, 20)]
        [1.0, 0.5, 0.0, 0.0]
    """

    def __init__(self, initial, final, steps, unit="step", steps_per_epoch=None):
        super().__init__(unit=unit, steps_per_epoch=steps_per_epoch)
        self.initial = arguments.number(initial, "initial", "Cosine")
        self.final = arguments.number(final, "final", "Cosine")
        self.steps = arguments.positive(steps, "steps", "Cosine")

    def at(self, t):
        fraction = ops.clip(t / self.steps, 0.0, 1.0)
        return self.final + (self.initial - self.final) * 0.5 * (1.0 + ops.cos(math.pi * fraction))

    def get_config(self):
        return {"initial": self.initial, "final": self.final, "steps": self.steps, **super().get_config()}


@keras.saving.register_keras_serializable(package="lossweave")
class Piecewise(Schedule):
    """Piecewise constant: ``values[i]`` from ``boundaries[i-1]`` up to ``boundaries[i]``.

    ``v(t) = values[0]`` for ``t < boundaries[0]``, ``values[i]`` for
    ``boundaries[i-1] <= t < boundaries[i]`` and ``values[-1]`` for
    ``t >= boundaries[-1]``: the value switches *at* each boundary.

    Args:
        boundaries: strictly increasing list of steps (or epochs).
        values: one more value than boundaries.
        unit: ``"step"`` or ``"epoch"``.
        steps_per_epoch: required with ``unit="epoch"``.

    Example:
        >>> schedule = Piecewise([10, 20], [1.0, 0.5, 0.25])
        >>> [float(schedule(s)) for s in (0, 9, 10, 19, 20, 100)]
        [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    """

    def __init__(self, boundaries, values, unit="step", steps_per_epoch=None):
        super().__init__(unit=unit, steps_per_epoch=steps_per_epoch)
        if not isinstance(boundaries, (list, tuple)) or not isinstance(values, (list, tuple)):
            raise ValueError(
                "Piecewise: `boundaries` and `values` must be lists; received "
                f"boundaries={boundaries!r}, values={values!r}."
            )
        self.boundaries = [arguments.number(b, f"boundaries[{i}]", "Piecewise") for i, b in enumerate(boundaries)]
        self.values = [arguments.number(v, f"values[{i}]", "Piecewise") for i, v in enumerate(values)]
        if len(self.values) != len(self.boundaries) + 1:
            raise ValueError(
                f"Piecewise: expected len(values) == len(boundaries) + 1; received "
                f"{len(self.boundaries)} boundaries and {len(self.values)} values."
            )
        if any(b >= c for b, c in zip(self.boundaries, self.boundaries[1:])):
            raise ValueError(f"Piecewise: `boundaries` must be strictly increasing; received {boundaries!r}.")

    def at(self, t):
        result = ops.zeros_like(t) + self.values[0]
        for boundary, value in zip(self.boundaries, self.values[1:]):
            result = ops.where(t >= boundary, value, result)
        return result

    def get_config(self):
        return {"boundaries": list(self.boundaries), "values": list(self.values), **super().get_config()}


@keras.saving.register_keras_serializable(package="lossweave")
class Exponential(Schedule):
    """Exponential decay (or growth): ``initial * rate ** (t / steps)``.

    Continuous in ``t`` (no staircase); use ``unit="epoch"`` for a value that
    moves once per epoch.

    Args:
        initial: the value at ``t = 0``.
        rate: the factor applied every ``steps`` (> 0; < 1 decays, > 1 grows).
        steps: the period of one factor ``rate``, in ``unit``s (> 0).
        unit: ``"step"`` or ``"epoch"``.
        steps_per_epoch: required with ``unit="epoch"``.

    Example:
        >>> schedule = Exponential(1.0, rate=0.5, steps=10)
        >>> [round(float(schedule(s)), 4) for s in (0, 10, 15, 20)]
        [1.0, 0.5, 0.3536, 0.25]
    """

    def __init__(self, initial, rate, steps, unit="step", steps_per_epoch=None):
        super().__init__(unit=unit, steps_per_epoch=steps_per_epoch)
        self.initial = arguments.number(initial, "initial", "Exponential")
        self.rate = arguments.positive(rate, "rate", "Exponential")
        self.steps = arguments.positive(steps, "steps", "Exponential")

    def at(self, t):
        return self.initial * ops.exp((t / self.steps) * math.log(self.rate))

    def get_config(self):
        return {"initial": self.initial, "rate": self.rate, "steps": self.steps, **super().get_config()}
