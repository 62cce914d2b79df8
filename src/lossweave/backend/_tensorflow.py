"""TensorFlow: ``ResourceVariable.scatter_nd_add`` and runtime checks.

Outside XLA the check is a ``tf.debugging.Assert`` that fails the step before
any state update. XLA (``jit_compile=True``, Keras's default on GPU) compiles
neither asserts' strings nor host callbacks, so there the check records the
first failure in a small variable and ``guard_step`` raises once the step is
done; the caller's gating on the returned flag keeps the state unchanged.
"""

import tensorflow as tf
from tensorflow.python.ops import control_flow_util  # XLA-context test; no public API

from lossweave.errors import InvalidInputError, format_message

_records = {}  # message -> tf.Variable [failed, *values] written inside XLA steps


def add_to_rows(variable, indices, updates):
    table = variable.value  # the tf.Variable (the variable is created with autocast=False)
    updates = tf.cast(updates, table.dtype)
    table.scatter_nd_add(tf.reshape(indices, (-1, 1)), updates)


def _in_xla():
    return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())


def _record(ok, message, values):
    if message not in _records:
        with tf.init_scope():
            _records[message] = tf.Variable(tf.zeros(1 + len(values)), trainable=False)
    record = _records[message]
    flat = [tf.reshape(tf.cast(v, tf.float32), ()) for v in values]
    failed = tf.stack([tf.constant(1.0), *flat])
    keep_first = tf.logical_or(ok, record[0] > 0)
    record.assign(tf.where(keep_first, record, failed))


def check(ok, message, *values):
    if tf.executing_eagerly():
        if not bool(ok):
            raise InvalidInputError(format_message(message, values))
        return ok
    if _in_xla():
        _record(ok, message, values)
        return tf.identity(ok)
    text = tf.strings.format(message, [tf.convert_to_tensor(v) for v in values], summarize=8)
    assertion = tf.debugging.Assert(ok, [InvalidInputError.__name__ + ": ", text])
    # Whatever uses the returned flag (the loss, the state update) runs after the assert.
    with tf.control_dependencies([assertion]):
        return tf.identity(ok)


def guard_step(model, function, kind):
    """Raise, after the step, a failure recorded inside an XLA-compiled step."""
    if not model.jit_compile:
        return function

    def guarded(*args, **kwargs):
        logs = function(*args, **kwargs)
        failures = []
        for message, record in _records.items():
            values = record.numpy()
            if values[0] > 0:
                record.assign(tf.zeros_like(record))  # every record: the next step starts clean
                shown = [int(v) if float(v).is_integer() else float(v) for v in values[1:]]
                failures.append(message.format(*shown))
        if failures:
            raise InvalidInputError(failures[0])
        return logs

    return guarded
