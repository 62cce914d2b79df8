"""JAX: ``.at[].add`` (in place under ``jit`` buffer donation) and checks.

Keras's JAX trainer donates the state buffers to each compiled step and purges
the model's variables during an epoch, so an exception inside a step would
leave the model without its weights. Inside a guarded step a check is only
recorded (in the term's ``InputCheck`` metric, part of the step's state);
``guard_step`` reads it after the step, writes the new state back into the
model's variables and only then raises ``InvalidInputError``.
"""

import threading

import jax
import numpy as np
from keras import ops

from lossweave.backend import _common as backend_common
from lossweave.errors import InvalidInputError, format_message

_local = threading.local()


def gather_rows(table, indices):
    return ops.take(table, indices, axis=0)


def add_to_rows(variable, indices, updates):
    table = variable.value
    variable.assign(table.at[indices].add(updates.astype(table.dtype)))


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
        jax.debug.callback(lambda o, *v: _raise(o, *v, message=message), ok, *values)
    else:
        _raise(ok, *values, message=message)
    return ok


def gate_train_step(model, train_step, records, state, data):
    """Keras's train step, whose new state is the old one when a check of this step failed.

    A failed check makes the whole step a no-op (weights, optimizer slots and
    iterations, centers, weighting state, step counters, seed generators); only
    the metric variables, which carry the failure to ``guard_step``, move on.
    Under ``jit`` with donated buffers this is one select per state buffer.
    """
    logs, new_state = train_step(state, data)
    if not records:
        return logs, new_state
    trainable, non_trainable, optimizer, metrics_variables = new_state
    positions = [next(i for i, v in enumerate(model.metrics_variables) if v is r.record) for r in records]
    ok = jax.numpy.all(jax.numpy.stack([metrics_variables[i][0] <= 0 for i in positions]))

    def keep(new, old):
        return jax.tree.map(lambda n, o: jax.numpy.where(ok, n, o), new, old)

    # Tables a term gates itself (the centers: O(batch x dim) row updates) are not
    # selected, which would read and write the whole table every step.
    self_gated = [backend_common.self_gated(v) for v in model.non_trainable_variables]
    non_trainable = [n if gated else keep(n, o) for n, o, gated in zip(non_trainable, state[1], self_gated)]
    return logs, (keep(trainable, state[0]), non_trainable, keep(optimizer, state[2]), metrics_variables)


_STATE_KEYS = {
    "train": ("trainable_variables", "non_trainable_variables", "optimizer_variables", "metrics_variables"),
    "test": ("trainable_variables", "non_trainable_variables", "metrics_variables"),
}


def guard_step(model, function, kind, records):
    """Trace and run the step with checks recorded; raise a recorded failure after it."""
    keys = _STATE_KEYS[kind]
    slot = keys.index("metrics_variables")

    def write_back(state):
        # Keras purged the variables at the start of the epoch: give them the state.
        model._jax_state = dict(zip(keys, state))
        model._jax_state_synced = False
        model.jax_state_sync()

    def guarded(state, data):
        _local.guarded = True
        try:
            logs, new_state = function(state, data)
        except Exception:
            # A trace-time error (bad shape): nothing ran, the input state is intact.
            if not any(getattr(a, "is_deleted", lambda: False)() for a in jax.tree.leaves(state)):
                write_back(state)
            raise
        finally:
            _local.guarded = False
        positions = [
            next(i for i, v in enumerate(model.metrics_variables) if v is r.record) for r in records
        ]
        failures = [r.failure(new_state[slot][i]) for r, i in zip(records, positions)]
        failures = [f for f in failures if f is not None]
        if failures:
            write_back(new_state)
            for record in records:  # the next step starts clean (train_on_batch resets no metric)
                record.reset_state()
            raise InvalidInputError(failures[0])
        return logs, new_state

    return guarded
