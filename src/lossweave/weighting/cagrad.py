"""CAGrad as a gradient-level strategy: the worst-case-improving update near the mean gradient."""

import keras

from lossweave import arguments
from lossweave.ops import aggregators
from lossweave.ops.aggregators.cagrad import MAX_TERMS, RESCALES
from lossweave.weighting.gradient import GradientWeighting


@keras.saving.register_keras_serializable(package="lossweave")
class CAGrad(GradientWeighting):
    """CAGrad: the update in a ball around the mean gradient that helps the worst term most.

    Liu, Liu, Jin, Stone & Liu, "Conflict-Averse Gradient Descent for
    Multi-task Learning", NeurIPS 2021, Sec. 3.1 and Algorithm 1:
    ``d = argmax_{||d - g_0|| <= c ||g_0||} min_k g_k . d`` around the mean
    gradient ``g_0``, through its dual over the simplex, ``d = g_0 +
    c ||g_0|| g_w* / ||g_w*||``. The dual is solved exactly inside the
    compiled step from the K x K Gramian (no SLSQP on the host, as in the
    authors' code): see ``lossweave.ops.aggregators.cagrad_weights`` for the
    solver, its measured float32 accuracy, the degenerate cases and the
    limit of 12 terms. The update has the scale of the *mean* gradient (as
    in the paper and LibMTL), 1/K of ``Sum``'s.

    Args:
        c: the ball's radius relative to ``||g_0||`` (0.5 as in LibMTL; the
            paper's convergence result takes c in [0, 1); 0 is ``Mean``).
        rescale: the authors' rescaling of the update: 0 none (the paper,
            Algorithm 1), 1 divide by ``1 + c^2`` (the authors' and LibMTL's
            default), 2 divide by ``1 + c``.

    Example:
        >>> import numpy as np
        >>> g = np.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]], "float32")
        >>> w = CAGrad().aggregate(g @ g.T, None, 0, True)
        >>> [round(float(v), 4) for v in np.asarray(w) @ g]   # torchjd's CAGrad(c=0.5) example
        [0.1835, 1.2041, 1.2041]
    """

    def __init__(self, c=0.5, rescale=0, **kwargs):
        super().__init__(**kwargs)
        self.c = arguments.number(c, "c", "CAGrad", low=0.0)
        self.rescale = int(arguments.choice(rescale, RESCALES, "rescale", "CAGrad"))

    def setup(self, term_names):
        if len(term_names) > MAX_TERMS:
            raise ValueError(
                f"CAGrad: received {len(term_names)} terms; its exact solver takes at most "
                f"{MAX_TERMS} (it enumerates the 2^K - 1 supports of the weights). "
                f"Merge related terms into one, or use a strategy without this limit (MGDA, PCGrad)."
            )
        super().setup(term_names)

    def update(self, state, losses, step, training, gramian):
        return aggregators.cagrad_weights(gramian, c=self.c, rescale=self.rescale), state

    def get_config(self):
        config = super().get_config()
        config.update({"c": self.c, "rescale": self.rescale})
        return config
