"""Errors raised for bad input."""

import numpy as np


class InvalidInputError(ValueError):
    """Labels or features that a term cannot use (out of range, NaN, wrong shape).

    Raised by the per-backend ``check``; inside a compiled TensorFlow or JAX
    step the backend wraps it, and the message text is kept.
    """


def format_message(message, values):
    """``message.format(*values)``, with arrays shown as plain numbers."""
    shown = []
    for v in values:
        v = np.asarray(v)
        shown.append(v.item() if v.ndim == 0 else v.tolist())
    return message.format(*shown)
