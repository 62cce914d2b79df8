"""Gradient-level strategies that project onto the dual cone of the term gradients (Quinton & Rey 2024).

An update in the dual cone ``{d : g_k . d >= 0 for every k}`` conflicts with
no term: to first order no term's loss increases. ``UPGrad`` projects each
term gradient onto that cone and averages the projections; ``DualProj``
projects the mean gradient. Each projection is a small quadratic program over
the K x K Gramian, solved inside the compiled step
(``lossweave.ops.aggregators.upgrad_weights``); no state.
"""

import keras

from lossweave import arguments
from lossweave.ops import aggregators
from lossweave.weighting.balanced_gradients import _check_preference, _WithPreference


class _DualCone(_WithPreference):
    """Shared by UPGrad and DualProj: preferences and torchjd's two epsilons."""

    def __init__(self, preference=None, norm_eps=1e-4, reg_eps=1e-4, **kwargs):
        super().__init__(**kwargs)
        owner = type(self).__name__
        self.preference = _check_preference(owner, preference)
        self.norm_eps = arguments.number(norm_eps, "norm_eps", owner, low=0.0)
        self.reg_eps = arguments.positive(reg_eps, "reg_eps", owner)

    def normalised_preference(self):
        """The preferences in ``setup`` order, divided by their sum: the default is the mean."""
        values = self.preference_vector()
        return [v / sum(values) for v in values]

    def get_config(self):
        config = super().get_config()
        config.update({"preference": dict(self.preference), "norm_eps": self.norm_eps, "reg_eps": self.reg_eps})
        return config


@keras.saving.register_keras_serializable(package="lossweave")
class UPGrad(_DualCone):
    """UPGrad: the mean of the term gradients' projections onto their dual cone.

    Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization",
    arXiv:2406.16232 (2024): ``A_UPGrad(J) = 1/K sum_i pi_J(g_i)`` (Eq. 4),
    ``pi_J`` the projection onto the dual cone of the term gradients (Eq. 3),
    solved as ``w_i = argmin_{v >= e_i} v^T G v`` on the Gramian (Prop. 1,
    Eq. 5-6). The update conflicts with no term gradient, is linear under a
    positive rescaling of any term's gradient (unlike MGDA, a term whose
    gradient is small still moves in proportion) and is a combination of
    the term gradients. Where no two gradients conflict it is their mean.

    The defaults are torchjd's (``UPGrad``: ``norm_eps = reg_eps = 1e-4``):
    the QPs are solved on ``G / tr(G) + reg_eps I``, and when ``tr(G) <
    norm_eps`` the update is the plain mean. That threshold is absolute:
    for a model whose squared gradient norms sum to less than 1e-4, lower
    ``norm_eps``. See ``lossweave.ops.aggregators.upgrad_weights`` for the
    solver, its float32 accuracy and timing.

    Args:
        preference: dict of term name -> positive weight ``p_k`` of term k's
            projection (terms not named get 1); the weights are divided by
            their sum, so the default is the paper's mean (torchjd's
            ``pref_vector`` is not normalised, which only scales the update).
        norm_eps: trace of the Gramian below which the gradients count as zero.
        reg_eps: ridge added to the trace-normalised Gramian, ``> 0``.

    Example:
        >>> import numpy as np
        >>> g = np.array([[2.0, 0.0], [-1.0, 1.0]], "float32")   # conflicting
        >>> w = UPGrad()
        >>> w.setup(["a", "b"])
        >>> [round(float(v), 3) for v in w.aggregate(g @ g.T, None, 0, True)]
        [0.75, 1.0]
    """

    def update(self, state, losses, step, training, gramian):
        return aggregators.upgrad_weights(gramian, self.normalised_preference(), self.norm_eps, self.reg_eps), state


@keras.saving.register_keras_serializable(package="lossweave")
class DualProj(_DualCone):
    """DualProj: the mean term gradient projected onto the dual cone of the term gradients.

    Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization",
    arXiv:2406.16232 (2024), Appendix C.3, Eq. 29 (after Lopez-Paz &
    Ranzato, "Gradient Episodic Memory for Continual Learning", NeurIPS
    2017, Eq. 11): ``A_DualProj(J) = pi_J(1/K J^T 1)``, the weights
    ``argmin_{v >= 1/K} v^T G v`` (Prop. 1). The update conflicts with no
    term gradient and is the mean where the mean conflicts with none; unlike
    UPGrad it is not linear under scaling (a term with a large gradient
    dominates the mean before the projection). Defaults from torchjd
    (``DualProj``); see ``UPGrad`` for ``norm_eps`` and ``reg_eps`` and
    ``lossweave.ops.aggregators.dualproj_weights`` for the solver.

    Args:
        preference: dict of term name -> positive weight of term k in the
            combination that is projected (terms not named get 1),
            normalised to sum 1: the default is the mean.
        norm_eps: trace of the Gramian below which the gradients count as zero.
        reg_eps: ridge added to the trace-normalised Gramian, ``> 0``.

    Example:
        >>> import numpy as np
        >>> g = np.array([[2.0, 0.0], [-4.0, 4.0]], "float32")   # the mean (-1, 2) conflicts with g_1
        >>> w = DualProj()
        >>> w.setup(["a", "b"])
        >>> [round(float(v), 2) for v in w.aggregate(g @ g.T, None, 0, True)]
        [1.0, 0.5]
    """

    def update(self, state, losses, step, training, gramian):
        weights = aggregators.dualproj_weights(gramian, self.normalised_preference(), self.norm_eps, self.reg_eps)
        return weights, state
