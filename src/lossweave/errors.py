"""Errors raised for bad input."""

import numpy as np


class InvalidInputError(ValueError):
    """Labels or features that a term cannot use (out of range, NaN, wrong shape).

    ``Objective.fit``, ``evaluate`` and ``train_on_batch`` raise this class
    itself on every backend, compiled or not (``jit_compile`` on or off):
    inside their steps a failed check is recorded, and the trainer raises
    right after the step, before any state has moved. A term called eagerly
    raises it directly. Inside a compiled function of your own the exception
    cannot leave the graph: ``tf.function`` fails with TensorFlow's
    ``InvalidArgumentError`` whose text starts ``InvalidInputError:`` (under
    XLA nothing fails and the bad rows are left out of the loss), ``jax.jit``
    with a ``JaxRuntimeError`` that carries the message.
    """


def format_message(message, values):
    """``message.format(*values)``, with arrays shown as plain numbers."""
    shown = []
    for v in values:
        v = np.asarray(v)
        shown.append(v.item() if v.ndim == 0 else v.tolist())
    return message.format(*shown)
