"""The train step, one small file per backend.

``Objective.train_step`` hands each step to this package:

- for a loss-level weighting, Keras's own train step (the Objective's
  ``compute_loss`` gives the one scalar it differentiates);
- for a gradient-level weighting (``GradientWeighting``: its type's ``level`` is ``"gradient"``),
  ``gradient_train_step(objective, ...)``: one forward pass, the K term
  losses, the per-term gradients of the shared variables (one VJP per term under
  ``jit`` on JAX, one persistent tape on TensorFlow, ``autograd.grad`` on
  PyTorch), their K x K Gramian handed to the strategy, and
  ``sum_k w_k g_k`` applied with the user's optimizer; task-specific variables
  get their own term's gradient and the model's own losses are added once
  (see ``lossweave.trainer._common``). State that the terms update in the
  forward pass moves once per step. With ``Objective(gramian_blocks=True)``
  (a strategy that needs only the Gramian, parameter mode) the Gramian is
  accumulated block by block of the shared variables, each block's K rows
  freed once multiplied in, and the update is one more backward pass of
  ``sum_k w_k L_k``: K x (largest block) of gradient memory instead of
  K x (all shared variables), for K backward passes per block.

``gate_train_step(model, train_step, records, *args)`` makes a step whose
input check failed leave all state as it was (the tables marked
``backend.mark_self_gated`` excepted, whose terms skip their own update);
``guard_step(model, function, kind, records)`` wraps Keras's compiled
train/test function and raises the recorded failure after the step.
"""

import importlib

import keras

from lossweave.trainer._common import Plan, check_gramian_blocks, cosines, gramian

_impl = importlib.import_module(f"lossweave.trainer._{keras.backend.backend()}")

gate_train_step = _impl.gate_train_step
gradient_train_step = _impl.gradient_train_step
guard_step = _impl.guard_step

__all__ = ["Plan", "check_gramian_blocks", "cosines", "gate_train_step", "gradient_train_step", "gramian", "guard_step"]
