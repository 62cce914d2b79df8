"""TensorFlow: row gather and ``scatter_add`` on the ``tf.Variable``; tf.distribute collectives; graph checks."""

import keras
import tensorflow as tf

from lossweave._backend._common import Backend, check_values
from lossweave.errors import InvalidInputError


def _table(variable):
    if isinstance(variable, keras.Variable):
        return variable.value  # its tf.Variable (the variable is created with autocast=False)
    return variable  # a tf.Variable, a tensor or an array


def _replicas():
    """The replica context of a multi-replica tf.distribute step, else None."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync <= 1:
        return None
    return context


def _gather(context, tensor):
    if tensor.dtype == tf.bool:  # the collective gathers numbers only
        return tf.cast(context.all_gather(tf.cast(tensor, tf.int32), axis=0), tf.bool)
    return context.all_gather(tensor, axis=0)


def _in_xla():
    from tensorflow.python.ops import control_flow_util  # no public API for this test

    return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())


class TensorFlowBackend(Backend):
    """Rows read from and added to the ``tf.Variable`` itself; collectives over the replica context.

    Reading the whole table (``ReadVariableOp``) and then scattering into it makes
    TensorFlow copy the table on every step (copy-on-read once a variable has had
    a sparse update): rows are gathered from the variable itself
    (``ResourceGather``) so that nothing of size classes x dim is ever touched.

    The ``recording_checks()`` depth is not thread-local (the base's):
    tf.distribute's MirroredStrategy traces each replica's step in a thread of its own.
    """

    name = "tensorflow"

    def gather_rows(self, table, indices):
        return tf.gather(_table(table), indices)

    def map_in_turn(self, fn, xs):
        # Keras's ops.map is tf.map_fn, which runs up to 10 iterations at once in a graph: ten blocks'
        # temporaries live together (PNP's peak at batch 1024: ~21 blocks of 128 MiB). One at a time here.
        xs = tuple(tf.convert_to_tensor(x) for x in xs)
        signature = tf.TensorSpec.from_tensor(fn(tuple(x[0] for x in xs)))  # as Keras's map: one traced call
        return tf.map_fn(fn, xs, fn_output_signature=signature, parallel_iterations=1)

    def _add_rows(self, variable, indices, updates):
        table = _table(variable)
        # ``scatter_add`` of IndexedSlices (ResourceScatterAdd, duplicates summed), not
        # ``scatter_nd_add``: a MirroredVariable (tf.distribute) implements only the former.
        # In a replica context it updates the replica's own copy (aggregation NONE):
        # callers give every replica the same global-batch rows (``all_gather``).
        table.scatter_add(tf.IndexedSlices(tf.cast(updates, table.dtype), tf.reshape(indices, (-1,))))

    def all_gather(self, tensors):
        """The global batch: each tensor (or None) concatenated over the replicas along axis 0."""
        context = _replicas()
        if context is None:
            return tensors
        return tuple(None if t is None else _gather(context, tf.convert_to_tensor(t)) for t in tensors)

    def all_reduce(self, value, op):
        """``op`` ("sum", "min" or "max") of a scalar over the replicas of the step."""
        context = _replicas()
        if context is None:
            return value
        if op == "sum":
            return context.all_reduce(tf.distribute.ReduceOp.SUM, value)
        values = context.all_gather(tf.reshape(value, (1,)), axis=0)
        return tf.reduce_min(values) if op == "min" else tf.reduce_max(values)

    def check(self, ok, message, *values, record=None):
        if tf.executing_eagerly():
            return super().check(ok, message, *values)
        if record is not None and self.recording:
            # Computed values, not a callable run in a cond branch: the branch would hold
            # the collectives of a multi-replica step, which tf.distribute refuses there.
            self._record(record, ok, message, values if _replicas() is None else check_values(values))
            return tf.identity(ok)
        # A graph of the user's own: an assert that fails the step (not under XLA,
        # which compiles no assert strings; there the caller's gating still applies).
        if _in_xla():
            return ok
        text = tf.strings.format(message, [tf.convert_to_tensor(v) for v in check_values(values)], summarize=8)
        assertion = tf.debugging.Assert(ok, [InvalidInputError.__name__ + ": ", text])
        with tf.control_dependencies([assertion]):  # users of the flag run after the assert
            return tf.identity(ok)
