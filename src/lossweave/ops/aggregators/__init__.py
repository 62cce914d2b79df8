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

===============  ============================================  ===============================
aggregator       weights                                       paper
===============  ============================================  ===============================
``mean``         ``1 / K``                                     (equal weighting)
``total``        ``1``                                         (the plain sum of the losses)
``mgda``         min-norm point of the gradients' convex hull  Sener & Koltun, NeurIPS 2018
                 (exact over the simplex faces for K <= 8)
``upgrad``       mean of each gradient's projection onto the   Quinton & Rey, arXiv 2024
                 dual cone of all of them (exact small QPs)
``dualproj``     the mean projected onto that dual cone        Quinton & Rey, arXiv 2024
``pcgrad``       sum of the conflict-projected gradients       Yu et al., NeurIPS 2020
``cagrad``       best worst-case improvement in a ball around  Liu et al., NeurIPS 2021
                 the mean gradient (exact dual solve)
``nash_mtl``     Nash bargaining, ``G alpha = 1 / alpha``      Navon et al., ICML 2022
                 (Newton), clipped to ``max_norm``
``imtl_g``       equal projections on the unit gradients      Liu et al., ICLR 2021
``aligned_mtl``  preference on the aligned (orthogonal,       Senushkin et al., CVPR 2023
                 equal-norm) gradients
``config``       equal cosines, projection length             Liu, Chu & Thuerey, ICLR 2025
``gradvac``      cosines raised to their EMA targets, per      Wang et al., ICLR 2021
                 group (state: targets)
``graddrop``     one sign kept per element (sign purity)       Chen et al., NeurIPS 2020
``moco``         tracked gradients, simplex weights (state)    Fernando et al., ICLR 2023
``dbmtl``        log losses, EMA gradients at the max norm     Lin et al., arXiv 2023
                 (state)
===============  ============================================  ===============================

The last five need the term gradients themselves (per-group Gramians,
elementwise masks, running averages of the gradients): they take one
``(K, *shape)`` tensor of rows per shared entry and, optax style, their
state explicitly, ``new_state, updates, weights = f(state, rows, ...)``
(``gradvac_weights`` also works from per-group Gramians).

The sum is called ``total`` (and ``total_weights``): a module-level ``sum``
would shadow the builtin for anyone who star-imports this module.

Everything runs inside a compiled step (``jax.jit``, ``tf.function``, torch):
``keras.ops`` only, loops unrolled over the static K or bounded by a fixed
iteration budget, float32 whatever the input dtype, and every division
guarded, so a zero, duplicated or linearly dependent gradient never makes a
NaN. Non-finite gradients are not repaired: they propagate to the update,
where the train step's failed-step gate catches them.
"""

from lossweave.ops.aggregators.aligned_mtl import SCALE_MODES, aligned_mtl, aligned_mtl_weights
from lossweave.ops.aggregators.basic import mean, mean_weights, total, total_weights
from lossweave.ops.aggregators.cagrad import cagrad, cagrad_weights
from lossweave.ops.aggregators.conflict_free import CONFIG_LENGTHS, config, config_weights
from lossweave.ops.aggregators.dbmtl import dbmtl
from lossweave.ops.aggregators.dual_cone import dual_cone_gramian, dualproj, dualproj_weights, upgrad, upgrad_weights
from lossweave.ops.aggregators.graddrop import graddrop, sign_purity
from lossweave.ops.aggregators.gradnorm import GradNormState, gradnorm, gradnorm_init, gradnorm_update
from lossweave.ops.aggregators.gradvac import gradvac, gradvac_weights
from lossweave.ops.aggregators.imtl import imtl_g, imtl_g_weights
from lossweave.ops.aggregators.mgda import NORMALIZATIONS, gradient_normalizers, mgda, mgda_weights
from lossweave.ops.aggregators.moco import moco, project_simplex
from lossweave.ops.aggregators.nash_mtl import (
    clip_to_max_norm,
    nash_mtl,
    nash_mtl_solve,
    nash_mtl_step,
    nash_mtl_weights,
)
from lossweave.ops.aggregators.pcgrad import pcgrad, pcgrad_weights

__all__ = [
    "CONFIG_LENGTHS",
    "GradNormState",
    "NORMALIZATIONS",
    "SCALE_MODES",
    "aligned_mtl",
    "aligned_mtl_weights",
    "cagrad",
    "cagrad_weights",
    "clip_to_max_norm",
    "config",
    "config_weights",
    "dbmtl",
    "dual_cone_gramian",
    "dualproj",
    "dualproj_weights",
    "graddrop",
    "gradnorm",
    "gradnorm_init",
    "gradnorm_update",
    "gradvac",
    "gradvac_weights",
    "gradient_normalizers",
    "imtl_g",
    "imtl_g_weights",
    "mean",
    "mean_weights",
    "mgda",
    "mgda_weights",
    "moco",
    "nash_mtl",
    "nash_mtl_solve",
    "nash_mtl_step",
    "nash_mtl_weights",
    "pcgrad",
    "pcgrad_weights",
    "project_simplex",
    "sign_purity",
    "total",
    "total_weights",
    "upgrad",
    "upgrad_weights",
]
