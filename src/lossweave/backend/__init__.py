"""The only backend-specific code outside the train steps: in-place row updates
and runtime input checks, one small file per backend.

``add_to_rows(variable, indices, updates)`` adds ``updates[i]`` to row
``indices[i]`` of a Keras variable (duplicates summed) in O(len(indices) x dim)
time and extra memory, whatever the number of rows: a plain
``variable.assign(new_table)`` would rewrite the whole table on TensorFlow and
PyTorch.

``check(ok, message, *values)`` raises ``lossweave.InvalidInputError`` with
``message.format(*values)`` when the scalar ``ok`` is false at run time, inside
compiled steps too (TensorFlow graph, ``jax.jit``, eager PyTorch), and returns
``ok``: a caller that gates its loss and state update on the returned flag
runs them after the check (TensorFlow orders them by that data dependency).

``guard_step(model, function, kind)`` wraps Keras's train/test function where
a backend must raise outside the step (JAX) to leave the model's state intact.
"""

import importlib

import keras

_impl = importlib.import_module(f"lossweave.backend._{keras.backend.backend()}")

add_to_rows = _impl.add_to_rows
check = _impl.check
guard_step = _impl.guard_step

__all__ = ["add_to_rows", "check", "guard_step"]
