"""NumPy backend (inference only in Keras): plain array updates."""

import numpy as np

from lossweave.errors import InvalidInputError, format_message


def add_to_rows(variable, indices, updates):
    table = np.array(variable.value)
    np.add.at(table, np.asarray(indices), np.asarray(updates, table.dtype))
    variable.assign(table)


def check(ok, message, *values):
    if not bool(ok):
        raise InvalidInputError(format_message(message, [np.asarray(v) for v in values]))
    return ok


def guard_step(model, function, kind):
    """Checks raise inside the step on this backend: nothing to wrap."""
    return function
