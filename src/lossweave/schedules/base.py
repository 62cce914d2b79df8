"""The ``Schedule`` base class, ``Constant`` and ``Lambda``."""

import abc

import keras
from keras import ops

from lossweave import arguments

UNITS = ("step", "epoch")


@keras.saving.register_keras_serializable(package="lossweave")
class Schedule(abc.ABC):
    """Base class: a serializable function of the training step.

    ``schedule(step)`` converts ``step`` (the Objective's training step counter: a
    tensor, a Keras variable or a Python int; ``None`` means 0) to a float32
    position ``t`` and returns ``self.at(t)`` as a float32 scalar tensor.
    With ``unit="epoch"`` the position is the epoch index
    ``floor(step / steps_per_epoch)``, so the schedule moves once per epoch.
    Subclasses implement ``at(t)`` with ``keras.ops`` only.

    Args:
        unit: ``"step"`` (the default) or ``"epoch"``.
        steps_per_epoch: optimizer steps per epoch; required when
            ``unit="epoch"``.

    Example:
        >>> class Double(Schedule):
        ...     def at(self, t):
        ...         return 2.0 * t
        >>> float(Double()(3))
        6.0
        >>> float(Double(unit="epoch", steps_per_epoch=4)(9))
        4.0
    """

    def __init__(self, unit="step", steps_per_epoch=None):
        name = type(self).__name__
        unit = arguments.choice(unit, UNITS, "unit", name)
        if unit == "epoch":
            if steps_per_epoch is None:
                raise ValueError(
                    f"{name}: unit='epoch' needs `steps_per_epoch` (the number of batches "
                    "per epoch, e.g. ceil(num_samples / batch_size)); received None."
                )
            steps_per_epoch = arguments.positive_int(steps_per_epoch, "steps_per_epoch", name)
        elif steps_per_epoch is not None:
            raise ValueError(
                f"{name}: `steps_per_epoch` is only used with unit='epoch'; received "
                f"steps_per_epoch={steps_per_epoch!r} with unit={unit!r}."
            )
        self.unit = unit
        self.steps_per_epoch = steps_per_epoch

    def position(self, step):
        """The float32 position ``t`` the schedule is evaluated at (step or epoch index)."""
        if step is None:
            return ops.zeros((), "float32")
        t = ops.cast(ops.convert_to_tensor(step), "float32")
        if self.unit == "epoch":
            t = ops.floor(t / float(self.steps_per_epoch))
        return t

    @abc.abstractmethod
    def at(self, t):
        """The value at float32 position ``t`` (a float32 scalar tensor)."""

    def __call__(self, step):
        return ops.cast(self.at(self.position(step)), "float32")

    def get_config(self):
        return {"unit": self.unit, "steps_per_epoch": self.steps_per_epoch}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


@keras.saving.register_keras_serializable(package="lossweave")
class Constant(Schedule):
    """The same value at every step.

    Args:
        value: the constant.
        unit, steps_per_epoch: as in ``Schedule`` (no effect on the value).

    Example:
        >>> float(Constant(0.25)(1000))
        0.25
    """

    def __init__(self, value, unit="step", steps_per_epoch=None):
        super().__init__(unit=unit, steps_per_epoch=steps_per_epoch)
        self.value = arguments.number(value, "value", "Constant")

    def at(self, t):
        return ops.zeros_like(t) + self.value

    def get_config(self):
        return {"value": self.value, **super().get_config()}


@keras.saving.register_keras_serializable(package="lossweave")
class Lambda(Schedule):
    """Any ``step -> value`` callable as a schedule.

    ``fn`` receives the float32 position (the step, or the epoch index with
    ``unit="epoch"``) as a tensor and must compute with ``keras.ops`` so that it
    runs inside the compiled step; its result is cast to float32.

    Serialization: ``get_config`` stores ``fn`` with
    ``keras.saving.serialize_keras_object``. A function registered with
    ``keras.saving.register_keras_serializable`` round-trips; a lambda or an
    unregistered function does not (Keras refuses to load lambdas in safe
    mode), so a saved Objective using one needs ``custom_objects`` or
    ``safe_mode=False`` to load.

    Args:
        fn: callable ``t -> scalar``.
        unit, steps_per_epoch: as in ``Schedule``.

    Example:
        >>> from keras import ops
        >>> schedule = Lambda(lambda t: ops.minimum(t / 10.0, 1.0))
        >>> float(schedule(5)), float(schedule(50))
        (0.5, 1.0)
    """

    def __init__(self, fn, unit="step", steps_per_epoch=None):
        super().__init__(unit=unit, steps_per_epoch=steps_per_epoch)
        if isinstance(fn, dict):
            fn = keras.saving.deserialize_keras_object(fn)
        if not callable(fn):
            raise ValueError(f"Lambda: `fn` must be a callable step -> value; received {fn!r}.")
        self.fn = fn

    def at(self, t):
        return ops.convert_to_tensor(self.fn(t))

    def get_config(self):
        return {"fn": keras.saving.serialize_keras_object(self.fn), **super().get_config()}
