"""NumPy backend (inference only in Keras): plain array updates."""

import numpy as np
from keras import ops

from lossweave.errors import InvalidInputError, format_message


def gather_rows(table, indices):
    return ops.take(table, indices, axis=0)


def add_to_rows(variable, indices, updates):
    table = np.array(variable.value)
    np.add.at(table, np.asarray(indices), np.asarray(updates, table.dtype))
    variable.assign(table)


def all_gather(tensors):
    """One program sees the global batch (JAX shards it under ``jit``): nothing to gather."""
    return tensors


def all_reduce(value, op):
    return value


def check(ok, message, *values, record=None):
    if not bool(ok):
        raise InvalidInputError(format_message(message, [np.asarray(v) for v in values]))
    return ok


def recording_checks():
    import contextlib

    return contextlib.nullcontext()
