"""JAX: functional ``.at[].add`` (in place under ``jit`` buffer donation) and deferred checks.

Keras's JAX trainer donates the state buffers to each compiled step and purges
the model's variables during an epoch, so an exception raised *inside* a step
would leave the model with deleted arrays. Inside a guarded Keras step the
check therefore only records the failure (through a host callback); the step
finishes with the bad rows skipped, ``guard_step`` writes the new state back
into the model's variables and only then raises ``InvalidInputError``.
"""

import threading

import jax
import numpy as np

from lossweave.errors import InvalidInputError, format_message

_local = threading.local()
_pending = []  # messages recorded by host callbacks during a guarded step


def add_to_rows(variable, indices, updates):
    table = variable.value
    variable.assign(table.at[indices].add(updates.astype(table.dtype)))


def _message_unless(ok, values, message):
    if bool(np.asarray(ok)):
        return None
    return format_message(message, [np.asarray(v) for v in values])


def _record(ok, *values, message):
    text = _message_unless(ok, values, message)
    if text is not None:
        _pending.append(text)


def _raise(ok, *values, message):
    text = _message_unless(ok, values, message)
    if text is not None:
        raise InvalidInputError(text)


def check(ok, message, *values):
    if getattr(_local, "deferred", False):
        jax.debug.callback(lambda o, *v: _record(o, *v, message=message), ok, *values)
    elif isinstance(ok, jax.core.Tracer):
        jax.debug.callback(lambda o, *v: _raise(o, *v, message=message), ok, *values)
    else:
        _raise(ok, *values, message=message)
    return ok


_STATE_KEYS = {
    "train": ("trainable_variables", "non_trainable_variables", "optimizer_variables", "metrics_variables"),
    "test": ("trainable_variables", "non_trainable_variables", "metrics_variables"),
}


def guard_step(model, function, kind):
    """Wrap a Keras train/test function so that failed checks raise after the step."""
    keys = _STATE_KEYS[kind]

    def write_back(state):
        # Keras purged the variables at the start of the epoch: give them the state.
        model._jax_state = dict(zip(keys, state))
        model._jax_state_synced = False
        model.jax_state_sync()

    def guarded(state, data):
        _local.deferred = True
        try:
            logs, new_state = function(state, data)
        except Exception:
            # A trace-time error (bad shape): nothing ran, the input state is intact.
            if not any(getattr(a, "is_deleted", lambda: False)() for a in jax.tree.leaves(state)):
                write_back(state)
            raise
        finally:
            _local.deferred = False
        jax.effects_barrier()  # the step's callbacks have run
        if _pending:
            message = _pending[0]
            _pending.clear()
            write_back(new_state)
            raise InvalidInputError(message)
        return logs, new_state

    return guarded
