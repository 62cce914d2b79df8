"""Gradient aggregators: K per-term gradients in, one update out (pure functions).

Every aggregator here returns an update that is a linear combination of the
term gradients, ``update = w @ J`` for a ``(K, params)`` Jacobian ``J`` whose
row k is term k's gradient of the shared parameters. The weights ``w`` depend
on the gradients only through their inner products, so each aggregator comes
as two functions (the split torchjd makes):

- ``<name>_weights(gramian, ...)``: the ``(K,)`` weights from the Gramian
  ``G = J J^T`` (``G_ij = g_i . g_j``), which a train step can compute once
  and which stays ``(K, K)`` whatever the parameter count;
- ``<name>(jacobian, ...)``: the ``(params,)`` update
  ``<name>_weights(jacobian @ jacobian.T, ...) @ jacobian``, for custom
  training loops and tests.

=============  ============================================  ===============================
aggregator     weights                                       paper
=============  ============================================  ===============================
``mean``       ``1 / K``                                     (equal weighting)
``total``      ``1``                                         (the plain sum of the losses)
``mgda``       min-norm point of the gradients' convex hull  Sener & Koltun, NeurIPS 2018
``pcgrad``     sum of the conflict-projected gradients       Yu et al., NeurIPS 2020
=============  ============================================  ===============================

The sum is called ``total`` (and ``total_weights``): a module-level ``sum``
would shadow the builtin for anyone who star-imports this module.

Everything runs inside a compiled step (``jax.jit``, ``tf.function``, torch):
``keras.ops`` only, loops unrolled over the static K or bounded by a fixed
iteration budget, float32 whatever the input dtype, and every division
guarded, so a zero, duplicated or linearly dependent gradient never makes a
NaN. Non-finite gradients are not repaired: they propagate to the update,
where the train step's failed-step gate catches them.
"""

from lossweave.ops.aggregators.basic import mean, mean_weights, total, total_weights
from lossweave.ops.aggregators.mgda import NORMALIZATIONS, gradient_normalizers, mgda, mgda_weights
from lossweave.ops.aggregators.pcgrad import pcgrad, pcgrad_weights

__all__ = [
    "NORMALIZATIONS",
    "gradient_normalizers",
    "mean",
    "mean_weights",
    "mgda",
    "mgda_weights",
    "pcgrad",
    "pcgrad_weights",
    "total",
    "total_weights",
]
