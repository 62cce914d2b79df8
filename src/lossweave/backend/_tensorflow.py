"""TensorFlow: row gather and ``scatter_nd_add`` on the ``tf.Variable``; checks.

Reading the whole table (``ReadVariableOp``) and then scattering into it makes
TensorFlow copy the table on every step (copy-on-read once a variable has had
a sparse update): rows are gathered from the variable itself
(``ResourceGather``) so that nothing of size classes x dim is ever touched.
"""

import threading

import keras
import tensorflow as tf

from lossweave.errors import InvalidInputError, format_message

_local = threading.local()


def _table(variable):
    if isinstance(variable, keras.Variable):
        return variable.value  # its tf.Variable (the variable is created with autocast=False)
    return variable  # a tf.Variable, a tensor or an array


def gather_rows(table, indices):
    return tf.gather(_table(table), indices)


def add_to_rows(variable, indices, updates):
    table = _table(variable)
    table.scatter_nd_add(tf.reshape(indices, (-1, 1)), tf.cast(updates, table.dtype))


def check(ok, message, *values, record=None):
    if tf.executing_eagerly():
        if not bool(ok):
            raise InvalidInputError(format_message(message, values))
        return ok
    if record is not None and getattr(_local, "guarded", False):
        record.message = message
        record.update_state(ok, values)
        return tf.identity(ok)
    # A graph of the user's own: an assert that fails the step (not under XLA,
    # which compiles no assert strings; there the caller's gating still applies).
    if _in_xla():
        return ok
    text = tf.strings.format(message, [tf.convert_to_tensor(v) for v in values], summarize=8)
    assertion = tf.debugging.Assert(ok, [InvalidInputError.__name__ + ": ", text])
    with tf.control_dependencies([assertion]):  # users of the flag run after the assert
        return tf.identity(ok)


def _in_xla():
    from tensorflow.python.ops import control_flow_util  # no public API for this test

    return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())


def guard_step(model, function, kind, records):
    """Trace and run the step with checks recorded; raise a recorded failure after it."""
    if not records:
        return function  # nothing is checked: no read-back after each step

    def guarded(*args, **kwargs):
        _local.guarded = True
        try:
            logs = function(*args, **kwargs)
        finally:
            _local.guarded = False
        failures = [f for f in (r.failure() for r in records) if f is not None]
        if failures:
            raise InvalidInputError(failures[0])
        return logs

    return guarded
