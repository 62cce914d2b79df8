"""JAX: ``.at[].add`` (in place under ``jit`` buffer donation), replicated row updates, recorded checks."""

import threading

import jax
import keras

from lossweave._backend._common import Backend, check_values


class JaxBackend(Backend):
    """Row updates as ``.at[].add``; checks recorded inside guarded steps, host callbacks in a user's ``jit``.

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

    ``all_gather`` and ``all_reduce`` keep the defaults: one program sees the
    global batch (``keras.distribution`` shards one global computation under ``jit``).
    """

    name = "jax"

    def __init__(self):
        super().__init__()
        self._recording = threading.local()  # a guarded step's trace marks its own thread only

    def _add_rows(self, variable, indices, updates):
        table = variable.value
        indices, updates = self.replicated(indices), self.replicated(updates)
        variable.assign(table.at[indices].add(updates.astype(table.dtype)))

    def replicated(self, tensor):
        """``tensor`` laid out whole on every device of the distribution's mesh (itself without one).

        Under ``jit`` a sharding constraint: XLA all-gathers a batch-sharded
        tensor (O(batch) per device) instead of reducing what is computed from it.
        An O(batch) vector built from a batch-sharded one before it is scattered
        into an O(classes) table thus keeps XLA from all-reducing the table.
        """
        distribution = keras.distribution.distribution()
        if distribution is None:
            return tensor
        layout = keras.distribution.TensorLayout([None] * len(tensor.shape), distribution.device_mesh)
        return keras.distribution.distribute_tensor(tensor, layout)

    def check(self, ok, message, *values, record=None):
        if record is not None and self.recording:
            self._record(record, ok, message, values)
        elif isinstance(ok, jax.core.Tracer):  # a jit of the user's own: a host callback
            jax.debug.callback(lambda o, *v: self._raise(o, message, v), ok, *check_values(values))
        else:
            super().check(ok, message, *values)
        return ok
