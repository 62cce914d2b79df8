"""TensorFlow: ``ResourceVariable.scatter_nd_add`` and ``tf.debugging.Assert``."""

import tensorflow as tf

from lossweave.errors import InvalidInputError, format_message


def add_to_rows(variable, indices, updates):
    table = variable.value  # the tf.Variable (the variable is created with autocast=False)
    updates = tf.cast(updates, table.dtype)
    table.scatter_nd_add(tf.reshape(indices, (-1, 1)), updates)


def check(ok, message, *values):
    if tf.executing_eagerly():
        if not bool(ok):
            raise InvalidInputError(format_message(message, values))
        return ok
    text = tf.strings.format(message, [tf.convert_to_tensor(v) for v in values], summarize=8)
    assertion = tf.debugging.Assert(ok, [InvalidInputError.__name__ + ": ", text])
    # Whatever uses the returned flag (the loss, the state update) runs after the assert.
    with tf.control_dependencies([assertion]):
        return tf.identity(ok)


def guard_step(model, function, kind):
    """Checks raise inside the step on this backend: nothing to wrap."""
    return function
