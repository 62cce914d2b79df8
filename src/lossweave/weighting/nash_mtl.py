"""Nash-MTL as a gradient-level strategy: the bargaining weights, kept between updates."""

import keras
import numpy as np

from lossweave import arguments
from lossweave.ops import aggregators
from lossweave.weighting.gradient import GradientWeighting


@keras.saving.register_keras_serializable(package="lossweave")
class NashMTL(GradientWeighting):
    """Nash-MTL: the Nash bargaining solution of the terms, ``G alpha = 1 / alpha``.

    Navon et al., "Multi-Task Learning as a Bargaining Game", ICML 2022,
    Sec. 3 and Algorithm 1, with the authors' defaults
    (``methods/weight_methods.py``, NashMTL): the weights ``alpha`` with
    ``alpha_i g_i . d = 1`` for ``d = sum_i alpha_i g_i``, recomputed every
    ``update_weights_every`` steps (kept in between, in a non-trainable
    variable ``alpha`` saved with the Objective and warm-starting the next
    solve, initially ones as in the authors' code), and the update clipped
    to norm ``max_norm`` every step. The authors reach the solution by a
    sequence of convex problems solved with cvxpy on the host; this solves
    the same equations exactly inside the compiled step (damped Newton on a
    strictly convex function whose minimiser they are): see
    ``lossweave.ops.aggregators.nash_mtl_solve`` for why they agree, the
    measured accuracy, and the fallback: where no solution exists (a zero
    gradient, a Pareto-stationary point) the previous weights are kept, as
    the authors' code keeps them when cvxpy fails.

    The logged ``weight/<term>`` is ``alpha`` times the clipping factor,
    the weights of the update of the shared variables. As with every
    gradient-level strategy here, the other variables (a head) get their own
    term's gradient unweighted, where the authors' ``sum_i alpha_i L_i``
    gives a head ``alpha_i`` times it.

    Args:
        update_weights_every: recompute alpha at steps 0, N, 2N, ... (the authors' 1).
        max_norm: the update's norm is clipped to this (the authors' 1.0; 0: no clipping).
        iterations: Newton steps per solve (a fixed budget; 20).

    Example:
        >>> import numpy as np
        >>> g = np.array([[2.0, 0.0], [0.0, 1.0]], "float32")
        >>> w = NashMTL(max_norm=0.0)
        >>> w.setup(["a", "b"])
        >>> [round(float(v), 4) for v in w.aggregate(g @ g.T, None, 0, True)]   # 1 / ||g_i||
        [0.5, 1.0]
    """

    def __init__(self, update_weights_every=1, max_norm=1.0, iterations=20, **kwargs):
        super().__init__(**kwargs)
        self.update_weights_every = arguments.positive_int(update_weights_every, "update_weights_every", "NashMTL")
        self.max_norm = arguments.number(max_norm, "max_norm", "NashMTL", low=0.0)
        self.iterations = arguments.positive_int(iterations, "iterations", "NashMTL")

    def init(self, term_names):
        return {"alpha": np.ones((len(term_names),), "float32")}  # the authors' start

    def update(self, state, losses, step, training, gramian):
        weights, alpha = aggregators.nash_mtl_step(
            state["alpha"], gramian, step, self.update_weights_every, self.iterations, self.max_norm, training
        )
        return weights, {"alpha": alpha if training else state["alpha"]}

    def get_config(self):
        config = super().get_config()
        config.update({
            "update_weights_every": self.update_weights_every,
            "max_norm": self.max_norm,
            "iterations": self.iterations,
        })
        return config
