"""A pure ``keras.ops`` function compiled by the current backend, where that pays (private).

``compiled(function, static_argnames)`` returns ``jax.jit(function)`` on JAX
and ``tf.function(function)`` on TensorFlow (a graph: one trace per set of
static arguments and input shapes), and ``function`` itself on PyTorch (eager:
``torch.compile`` costs seconds of compilation per shape for no gain on the
matmul + top-k that ``lossweave.ops.search`` runs). The backend is read at the
first call, so that a module may wrap its functions at import.
"""

import functools

import keras


def compiled(function, static_argnames=()):
    """``function`` compiled for the current Keras backend (``static_argnames`` are Python values)."""
    cache = {}

    @functools.wraps(function)
    def call(*args, **kwargs):
        if "function" not in cache:
            cache["function"] = _compile(function, tuple(static_argnames))
        return cache["function"](*args, **kwargs)

    return call


def _compile(function, static_argnames):
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.jit(function, static_argnames=static_argnames)
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(function)
    return function
