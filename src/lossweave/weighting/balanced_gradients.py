"""Gradient-level strategies that equalise what each term gets from the update (closed forms).

``IMTLG`` gives the update the same projection on every unit term gradient,
``AlignedMTL`` makes the term gradients orthogonal with equal norms before
combining them, ``ConFIG`` picks the direction with equal cosines to every
term gradient. Each is one eigendecomposition of the K x K Gramian inside the
compiled step (``lossweave.ops.aggregators``), no iteration and no state.
"""

import keras

from lossweave import arguments
from lossweave.ops import aggregators
from lossweave.weighting._common import check_known_terms, term_names
from lossweave.weighting.gradient import GradientWeighting


def _check_preference(owner, preference):
    """A ``{term: positive float}`` dict (terms not named get 1), or a clear error."""
    if preference is None:
        return {}
    if not isinstance(preference, dict):
        raise ValueError(
            f"{owner}: `preference` must be a dict of term name -> positive weight (terms not "
            f"named get 1) or None; received {preference!r}."
        )
    return {name: arguments.positive(value, f"preference[{name!r}]", owner) for name, value in preference.items()}


class _WithPreference(GradientWeighting):
    """A strategy with per-term preference weights, in ``setup`` order at every step."""

    def setup(self, term_names):
        check_known_terms(type(self).__name__, "a preference", self.preference, term_names)
        super().setup(term_names)

    def preference_vector(self):
        return [self.preference.get(name, 1.0) for name in term_names(self)]


@keras.saving.register_keras_serializable(package="lossweave")
class IMTLG(GradientWeighting):
    """IMTL-G: the update has the same projection on every unit term gradient.

    Liu et al., "Towards Impartial Multi-task Learning", ICLR 2021, Sec. 3.2
    (gradient balance): the weights ``alpha`` sum to 1 and make ``g = sum_k
    alpha_k g_k`` satisfy ``g . u_1 = .. = g . u_K`` for the unit gradients
    ``u_k = g_k / ||g_k||``, the paper's closed form ``alpha_{2:K} = g_1 U^T
    (D U^T)^{-1}``, computed from the Gramian as ``G^+ d / sum(G^+ d)``
    (``d_k = ||g_k||``; Quinton & Rey 2024's generalisation, defined for
    zero and dependent gradients too). The loss-balance half of the paper
    (IMTL-L, learned loss scales for the task-specific parameters) is not
    part of this strategy. See ``lossweave.ops.aggregators.imtl_g_weights``
    for the degenerate cases and the float32 accuracy. No arguments: the
    method has none.

    Example:
        >>> import numpy as np
        >>> g = np.array([[1.0, 0.0], [0.0, 2.0]], "float32")
        >>> [round(float(w), 4) for w in IMTLG().aggregate(g @ g.T, None, 0, True)]
        [0.6667, 0.3333]
    """

    def update(self, state, losses, step, training, gramian):
        return aggregators.imtl_g_weights(gramian), state


@keras.saving.register_keras_serializable(package="lossweave")
class AlignedMTL(_WithPreference):
    """Aligned-MTL: combine the term gradients after aligning them to condition number 1.

    Senushkin et al., "Independent Component Alignment for Multi-Task
    Learning", CVPR 2023, Algorithm 1: the eigendecomposition of the Gramian
    gives the balance transformation ``B = sqrt(s) V Lambda^{-1/2} V^T`` that
    makes the aligned gradients orthogonal with the common squared norm
    ``s``; the update is the preference-weighted sum of the aligned
    gradients, i.e. weights ``B w``. See
    ``lossweave.ops.aggregators.aligned_mtl_weights`` for the rank cut, the
    degenerate cases and the float32 accuracy.

    Args:
        scale_mode: the common singular value ``sqrt(s)``: ``"min"`` (the
            paper's Algorithm 1 and the authors' default: the smallest),
            ``"median"`` or ``"rmse"`` (the authors' other modes).
        preference: dict of term name -> positive task weight ``w_k`` (the
            paper's pre-defined trade-off); terms not named get 1, the sum
            of the aligned gradients of the authors' code.

    Example:
        >>> import numpy as np
        >>> g = np.array([[2.0, 0.0], [0.0, 1.0]], "float32")
        >>> w = AlignedMTL()
        >>> w.setup(["a", "b"])
        >>> [round(float(v), 4) for v in w.aggregate(g @ g.T, None, 0, True)]
        [0.5, 1.0]
    """

    def __init__(self, scale_mode="min", preference=None, **kwargs):
        super().__init__(**kwargs)
        self.scale_mode = arguments.choice(scale_mode, aggregators.SCALE_MODES, "scale_mode", "AlignedMTL")
        self.preference = _check_preference("AlignedMTL", preference)

    def update(self, state, losses, step, training, gramian):
        return aggregators.aligned_mtl_weights(gramian, self.scale_mode, self.preference_vector()), state

    def get_config(self):
        config = super().get_config()
        config.update({"scale_mode": self.scale_mode, "preference": dict(self.preference)})
        return config


@keras.saving.register_keras_serializable(package="lossweave")
class ConFIG(_WithPreference):
    """ConFIG: the conflict-free direction with equal cosines to every term gradient.

    Liu, Chu & Thuerey, "ConFIG: Towards Conflict-free Training of Physics
    Informed Neural Networks", ICLR 2025, Sec. 3.1 (the ConFIG operator):
    ``g_u`` is the normalised min-norm solution of ``U(g_k) . g = w_k`` for
    the unit gradients ``U(g_k)`` (pseudo-inverse, from the Gramian), and the
    update is ``(sum_k g_k . g_u) g_u``. Where the term gradients are
    linearly independent every term's cosine with the update is the same
    positive number (proportional to ``w_k`` for a preference), so no term's
    loss increases to first order. See
    ``lossweave.ops.aggregators.config_weights`` for the degenerate cases
    and the float32 accuracy.

    Args:
        preference: dict of term name -> positive direction weight ``w_k``
            (the authors' ``weight_model``); terms not named get 1 (the
            paper's equal weights).
        length: the update's length, one of
            ``lossweave.ops.aggregators.CONFIG_LENGTHS``: ``"projection"``
            (the paper, the sum of the gradients' projections) or the
            authors' ``Track*`` length models ``"minimum"``, ``"maximum"``,
            ``"harmonic"``, ``"arithmetic"``, ``"geometric"`` (every
            gradient given that mean norm before projecting).

    Example:
        >>> import numpy as np
        >>> g = np.array([[1.0, 0.0], [0.0, 2.0]], "float32")
        >>> w = ConFIG()
        >>> w.setup(["a", "b"])
        >>> [round(float(v), 4) for v in w.aggregate(g @ g.T, None, 0, True)]
        [1.5, 0.75]
    """

    def __init__(self, preference=None, length="projection", **kwargs):
        super().__init__(**kwargs)
        self.preference = _check_preference("ConFIG", preference)
        self.length = arguments.choice(length, aggregators.CONFIG_LENGTHS, "length", "ConFIG")

    def update(self, state, losses, step, training, gramian):
        return aggregators.config_weights(gramian, self.preference_vector(), self.length), state

    def get_config(self):
        config = super().get_config()
        config.update({"preference": dict(self.preference), "length": self.length})
        return config
