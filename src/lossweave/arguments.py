"""Constructor-argument validation: the one module every public class calls.

The rules, once for the whole library (as Keras's ``utils/argument_validation``):

- a NumPy integer or float scalar is accepted wherever a Python number is
  (``y.max() + 1`` is an ``np.int64``; a margin read from an array is an
  ``np.float32``), and the value kept is the Python number;
- ``bool`` is never taken for a number (``True`` is an ``int`` in Python);
- an integer argument accepts an integer-valued number (``10``, ``np.int64(10)``),
  not ``10.5`` and not ``10.0`` (a float where an int is meant is a bug upstream);
- an error names the class, the argument, what was received, what was expected,
  and where it helps how to fix it.

Each function returns the checked value as a plain Python ``int``/``float``/
``bool`` (what ``get_config`` writes to JSON).

Example:
    >>> import numpy as np
    >>> from lossweave import arguments
    >>> arguments.integer(np.int64(10), "num_classes", "CenterLoss", low=1)
    10
    >>> arguments.number(np.float32(0.5), "margin", "ArcFace", low=0.0)
    0.5
    >>> arguments.number(True, "margin", "ArcFace")
    Traceback (most recent call last):
    ...
    ValueError: ArcFace: `margin` must be a number; received True.
"""

import inspect
import math

import numpy as np

# Layer arguments every term, strategy and layer takes through ``**kwargs``.
LAYER_ARGUMENTS = ("name", "dtype", "trainable")


def _owner(owner):
    return owner if isinstance(owner, str) else type(owner).__name__


def _is_number(value):
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _bounds(low, high, low_open, high_open):
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {low:g}")
    if high is not None:
        parts.append(f"{'<' if high_open else '<='} {high:g}")
    return " and ".join(parts)


def number(value, name, owner, *, low=None, high=None, low_open=False, high_open=False, finite=True, hint=None):
    """A finite ``float`` within the bounds, or a ``ValueError`` saying what was expected.

    Args:
        value: the argument as given.
        name: the argument's name (the message quotes it).
        owner: the class (or its name) whose argument it is.
        low, high: bounds, ``None`` for none.
        low_open, high_open: exclude the bound itself.
        finite: refuse NaN and Inf (``False`` for a value that may be NaN, such as a ``missing`` marker).
        hint: what the number is or how to fix it, added to the message (e.g. the unit).
    """
    bounds = _bounds(low, high, low_open, high_open)
    suffix = f" {hint}" if hint else ""
    if not _is_number(value) or (finite and not math.isfinite(float(value))):
        raise ValueError(
            f"{_owner(owner)}: `{name}` must be a {'finite ' if _is_number(value) else ''}number"
            f"{' ' + bounds if bounds else ''}; received {value!r}.{suffix}"
        )
    value = float(value)
    below = low is not None and (value <= low if low_open else value < low)
    above = high is not None and (value >= high if high_open else value > high)
    if below or above:
        raise ValueError(f"{_owner(owner)}: `{name}` must be a number {bounds}; received {value!r}.{suffix}")
    return value


def positive(value, name, owner):
    """A finite ``float > 0``."""
    return number(value, name, owner, low=0.0, low_open=True)


def integer(value, name, owner, *, low=None, high=None):
    """An ``int`` within ``[low, high]``: Python or NumPy integers (never bool, never a float)."""
    bounds = _bounds(low, high, False, False)
    expected = f"{_owner(owner)}: `{name}` must be an int{' ' + bounds if bounds else ''}"
    if not isinstance(value, (int, np.integer)) or isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{expected}; received {value!r}.")
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{expected}; received {value!r}.")
    return value


def positive_int(value, name, owner):
    """An ``int >= 1``."""
    return integer(value, name, owner, low=1)


def seed(value, owner, name="seed"):
    """``None`` (a random seed) or an ``int`` (Python or NumPy, never bool)."""
    if value is None:
        return None
    if not isinstance(value, (int, np.integer)) or isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{_owner(owner)}: `{name}` must be an int or None; received {value!r}.")
    return int(value)


def boolean(value, name, owner):
    """A ``bool`` from ``True``/``False`` or a NumPy bool (never a number or a string)."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{_owner(owner)}: `{name}` must be True or False; received {value!r}.")
    return bool(value)


def choice(value, choices, name, owner):
    """``value`` if it is one of ``choices`` (compared by equality, bool excluded), else a ``ValueError``."""
    if isinstance(value, (bool, np.bool_)) or value not in choices:
        raise ValueError(f"{_owner(owner)}: `{name}` must be one of {tuple(choices)}; received {value!r}.")
    return value


def optional(check, value, *args, **kwargs):
    """``None``, or ``check(value, *args, **kwargs)``."""
    return None if value is None else check(value, *args, **kwargs)


def accepted_keywords(cls):
    """The keyword arguments ``cls(...)`` takes: every named ``__init__`` argument along its MRO.

    A class whose ``__init__`` forwards ``**kwargs`` to its base accepts the
    base's named arguments too; the Layer arguments (``LAYER_ARGUMENTS``) are
    accepted by every class that ends in a Keras Layer.
    """
    names = []
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None or klass.__module__.startswith(("keras", "torch", "builtins")):
            continue
        for parameter in list(inspect.signature(init).parameters.values())[1:]:
            if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY) and (
                parameter.name not in names
            ):
                names.append(parameter.name)
    return names


def check_keywords(owner, kwargs, extra=LAYER_ARGUMENTS):
    """Refuse keyword arguments that ``owner``'s class does not take, listing the ones it does.

    Called by a base class before it forwards ``**kwargs`` to ``keras.layers.Layer``
    (whose own message lists neither the class's arguments nor the accepted ones).
    """
    cls = owner if isinstance(owner, type) else type(owner)
    accepted = [*accepted_keywords(cls), *[e for e in extra if e not in accepted_keywords(cls)]]
    unknown = sorted(k for k in kwargs if k not in accepted)
    if unknown:
        raise TypeError(
            f"{cls.__name__}: unknown keyword argument(s) {unknown}; it takes {sorted(accepted)}. "
            f"Check the spelling (arguments were renamed when they meant different things in different "
            f"classes: see the class's docstring)."
        )
