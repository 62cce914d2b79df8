"""JAX: ``.at[].add`` (in place under ``jit`` buffer donation) and checks.

Under ``keras.distribution`` (``DataParallel``, or ``ModelParallel`` with a
table sharded by rows) the row indices and updates are made replicated before
the scatter: each device then all-gathers O(batch x dim) and adds the rows that
fall in its own shard. Left to itself, XLA partitions the scatter by the
batch-sharded updates and all-reduces the whole table (or table shard) every
step.

Keras's JAX trainer donates the state buffers to each compiled step and purges
the model's variables during an epoch, so an exception inside a step would
leave the model without its weights. Inside ``recording_checks()`` (entered by
``lossweave.trainer``'s guarded step) a check is only recorded (in the term's
``InputCheck`` metric, part of the step's state); the trainer reads it after
the step, writes the new state back into the model's variables and only then
raises ``InvalidInputError``.
"""

import contextlib
import threading

import jax
import keras
import numpy as np
from keras import ops

from lossweave._backend._common import check_values
from lossweave.errors import InvalidInputError, format_message

_local = threading.local()


def gather_rows(table, indices):
    return ops.take(table, indices, axis=0)


def add_to_rows(variable, indices, updates):
    table = variable.value
    indices, updates = replicated(indices), replicated(updates)
    variable.assign(table.at[indices].add(updates.astype(table.dtype)))


def replicated(tensor):
    """``tensor`` laid out whole on every device of the distribution's mesh (itself without one).

    Under ``jit`` a sharding constraint: XLA all-gathers a batch-sharded
    tensor (O(batch) per device) instead of reducing what is computed from it.
    """
    distribution = keras.distribution.distribution()
    if distribution is None:
        return tensor
    layout = keras.distribution.TensorLayout([None] * len(tensor.shape), distribution.device_mesh)
    return keras.distribution.distribute_tensor(tensor, layout)


def _raise(ok, *values, message):
    if not bool(np.asarray(ok)):
        raise InvalidInputError(format_message(message, [np.asarray(v) for v in values]))


def all_gather(tensors):
    """One program sees the global batch (JAX shards it under ``jit``): nothing to gather."""
    return tensors


def all_reduce(value, op):
    return value


def check(ok, message, *values, record=None):
    if record is not None and getattr(_local, "guarded", False):
        record.message = message
        record.update_state(ok, values)
    elif isinstance(ok, jax.core.Tracer):  # a jit of the user's own: a host callback
        jax.debug.callback(lambda o, *v: _raise(o, *v, message=message), ok, *check_values(values))
    else:
        _raise(ok, *check_values(values), message=message)
    return ok


@contextlib.contextmanager
def recording_checks():
    """Checks traced inside are recorded in their ``InputCheck``, not raised."""
    _local.guarded = True
    try:
        yield
    finally:
        _local.guarded = False
