"""Gradient-level strategies that keep running averages of the term gradients: MoCo, DBMTL.

Their state is shaped like the shared variables (one ``(K, *shape)``
non-trainable variable per shared variable, created in ``build_rows``), is
moved by the strategy's own rule inside the compiled step and is saved with
the Objective. Both need the gradients of the shared variables themselves,
so they refuse representation mode (``Objective(representation=...)``),
whose rows change shape with the batch.
"""

import keras
import numpy as np
from keras import ops

from lossweave import arguments
from lossweave.ops import aggregators
from lossweave.ops.aggregators.dbmtl import LOG_EPSILON
from lossweave.weighting._common import term_names
from lossweave.weighting.gradient import GradientWeighting

REPRESENTATION = "representation/"


def is_representation(entries):
    """Whether ``build_rows`` was given the one representation entry (representation mode)."""
    return len(entries) == 1 and entries[0][0].startswith(REPRESENTATION)


def parameter_mode_only(weighting, entries):
    """A ValueError for a strategy that keeps per-parameter state, handed a representation."""
    if is_representation(entries):
        name = type(weighting).__name__
        raise ValueError(
            f"{name}: received the entry {entries[0][0]!r} (Objective(representation=...)); expected "
            f"the shared variables: {name} keeps a running average of each term's gradient of every "
            f"shared parameter, which a representation (a new batch every step) does not have. Drop "
            f"`representation=` from the Objective (parameter mode)."
        )


def term_rows(weighting, rows):
    """The K term rows of each entry, float32 (a regularizers' row K, if any, is not a term)."""
    k = len(term_names(weighting))
    return [ops.cast(r[:k], "float32") for r in rows]


class _RowState(GradientWeighting):
    """Base of the strategies whose state is one ``(K, *shape)`` variable per shared entry."""

    state_name = None

    def init_rows(self, term_names, entries):
        """One zero ``(K, *shape)`` float32 entry ``<state_name>_<i>`` per shared entry."""
        parameter_mode_only(self, entries)
        k = len(term_names)
        return {f"{self.state_name}_{i}": np.zeros((k, *shape), "float32") for i, (_, shape) in enumerate(entries)}

    def row_names(self):
        return [f"{self.state_name}_{i}" for i in range(len(self.row_entries))]

    @property
    def row_variables(self):
        """The ``(K, *shape)`` state variables, one per shared entry (after ``build_rows``)."""
        return [self.state_variables[name] for name in self.row_names()]


@keras.saving.register_keras_serializable(package="lossweave")
class MoCo(_RowState):
    """MoCo: tracked term gradients and weights moved on the simplex.

    Fernando, Shen, Liu, Chaudhury, Murugesan & Chen, "Mitigating Gradient
    Bias in Multi-objective Learning: A Provably Convergent Approach",
    ICLR 2023, Algorithm 1: each term's stochastic gradient is tracked by
    ``y_k <- y_k - beta_t (y_k - h_k)`` (which removes the bias that MGDA's
    weights get from one batch's gradients), the weights take a projected
    gradient step ``lambda <- Proj_simplex(lambda - gamma_t (Y Y^T + rho I)
    lambda)`` and the update is ``sum_k lambda_k y_k``. Step sizes
    ``beta_t = beta / t^beta_sigma``, ``gamma_t = gamma / t^gamma_sigma``
    (``t`` = the Objective's step + 1) and the defaults are LibMTL's
    ``MoCo.py`` (the authors' code), as is ``h_k = g_k / ||g_k|| L_k``
    (``normalize``); the projection is the paper's, exact (LibMTL uses a
    softmax). The tracked ``y`` (one ``(K, *shape)`` non-trainable variable
    per shared variable) and ``lambda`` are saved with the Objective.
    Logged weights: ``lambda`` (of the tracked gradients). Parameter mode
    only. See ``lossweave.ops.aggregators.moco``.

    Args:
        beta, beta_sigma: tracking rate of ``y`` and its decay exponent.
        gamma, gamma_sigma: step size of ``lambda`` and its decay exponent.
        rho: l2 regularisation of the ``lambda`` step.
        normalize: rescale each gradient to norm ``L_k`` before tracking.

    Example:
        >>> import numpy as np
        >>> w = MoCo()
        >>> w.setup(["a", "b"])
        >>> w.build_rows([("trunk/kernel", (2,))])
        >>> rows = [np.array([[3.0, 0.0], [0.0, 1.0]], "float32")]
        >>> updates, lam = w.aggregate_rows(rows, None, np.ones(2, "float32"), 0, True)
        >>> [round(float(v), 4) for v in updates[0]], [round(float(v), 4) for v in lam]
        ([0.25, 0.25], [0.5, 0.5])
    """

    state_name = "tracked"

    def __init__(self, beta=0.5, beta_sigma=0.5, gamma=0.1, gamma_sigma=0.5, rho=0.0, normalize=True, **kwargs):
        super().__init__(**kwargs)
        # y moves a fraction beta / t^beta_sigma of the way to the new gradient.
        self.beta = arguments.number(beta, "beta", "MoCo", low=0.0, low_open=True, high=1.0)
        self.beta_sigma = arguments.number(beta_sigma, "beta_sigma", "MoCo", low=0.0)
        self.gamma = arguments.positive(gamma, "gamma", "MoCo")
        self.gamma_sigma = arguments.number(gamma_sigma, "gamma_sigma", "MoCo", low=0.0)
        self.rho = arguments.number(rho, "rho", "MoCo", low=0.0)
        self.normalize = arguments.boolean(normalize, "normalize", "MoCo")

    @property
    def simplex_weights(self):
        """The weights ``lambda`` on the simplex (after ``setup``)."""
        return self.state_variables["lambda"]

    def init(self, term_names):
        count = len(term_names)
        return {"lambda": np.full((count,), 1.0 / count, "float32")}

    def update_rows(self, state, losses, step, training, rows, gramian, activations=None):
        names = self.row_names()
        (tracked, lam), updates, weights = aggregators.moco(
            ([state[n] for n in names], state["lambda"]), term_rows(self, rows), losses, step,
            beta=self.beta, beta_sigma=self.beta_sigma, gamma=self.gamma,
            gamma_sigma=self.gamma_sigma, rho=self.rho, normalize=self.normalize,
        )
        return (updates, weights), {"lambda": lam, **dict(zip(names, tracked))}

    def get_config(self):
        config = super().get_config()
        config.update({
            "beta": self.beta, "beta_sigma": self.beta_sigma, "gamma": self.gamma,
            "gamma_sigma": self.gamma_sigma, "rho": self.rho, "normalize": self.normalize,
        })
        return config


@keras.saving.register_keras_serializable(package="lossweave")
class DBMTL(_RowState):
    """DB-MTL: log losses, then every term's averaged gradient scaled to the largest norm.

    Lin, Jiang, Ye, Zhang, Chen, Chen, Liu & Kwok, "Dual-Balancing for
    Multi-Task Learning", arXiv:2308.12029 (2023), Algorithm 1: loss-scale
    balancing by the gradient of ``log(L_k + eps)`` (``g_k / (L_k + eps)``),
    an exponential moving average ``b_k`` of those gradients, and
    gradient-magnitude balancing ``update = sum_k (max_j ||b_j|| / ||b_k||)
    b_k``. The defaults are LibMTL's (the authors' library): the buffer keeps
    ``beta / t^beta_sigma`` of its old value (``t`` = the Objective's step +
    1). The buffers (one ``(K, *shape)`` non-trainable variable per shared
    variable) are saved with the Objective. Logged weights: the scales
    ``max_j ||b_j|| / ||b_k||``. Losses must be non-negative (a log).
    Parameter mode only. See ``lossweave.ops.aggregators.dbmtl``.

    Args:
        beta: weight of the old buffer in the EMA.
        beta_sigma: its decay exponent (0: a constant ``beta``).
        epsilon: the ``eps`` inside the log.

    Example:
        >>> import numpy as np
        >>> w = DBMTL()
        >>> w.setup(["a", "b"])
        >>> w.build_rows([("trunk/kernel", (2,))])
        >>> rows = [np.array([[2.0, 0.0], [0.0, 0.3]], "float32")]
        >>> updates, scales = w.aggregate_rows(rows, None, np.array([2.0, 0.1], "float32"), 0, True)
        >>> [round(float(v), 4) for v in updates[0]], [round(float(v), 4) for v in scales]
        ([0.3, 0.3], [3.0, 1.0])
    """

    state_name = "buffer"

    def __init__(self, beta=0.9, beta_sigma=0.0, epsilon=LOG_EPSILON, **kwargs):
        super().__init__(**kwargs)
        # The EMA keeps a fraction beta of the old buffer: 1 would never let a gradient in.
        self.beta = arguments.number(beta, "beta", "DBMTL", low=0.0, high=1.0, high_open=True)
        self.beta_sigma = arguments.number(beta_sigma, "beta_sigma", "DBMTL", low=0.0)
        self.epsilon = arguments.positive(epsilon, "epsilon", "DBMTL")

    def update_rows(self, state, losses, step, training, rows, gramian, activations=None):
        names = self.row_names()
        buffers, updates, scales = aggregators.dbmtl(
            [state[n] for n in names], term_rows(self, rows), losses, step,
            beta=self.beta, beta_sigma=self.beta_sigma, epsilon=self.epsilon,
        )
        return (updates, scales), dict(zip(names, buffers))

    def get_config(self):
        config = super().get_config()
        config.update({"beta": self.beta, "beta_sigma": self.beta_sigma, "epsilon": self.epsilon})
        return config
