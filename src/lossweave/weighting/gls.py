"""GLS: the geometric mean of the term losses."""

import keras
from lossweave.ops import weighting as rules
from lossweave.weighting.base import Weighting


@keras.saving.register_keras_serializable(package="lossweave")
class GLS(Weighting):
    """Geometric loss strategy (Chennupati et al., "MultiNet++", CVPR Workshops 2019).

    The minimised objective is the geometric mean of the ``K`` term losses::

        total = (prod_k L_k) ** (1 / K)

    computed as ``exp(mean_k log L_k)`` so that a product of many small
    losses does not underflow. It is invariant to a constant rescaling of any
    one term. Its gradient with respect to ``L_k`` is ``total / (K * L_k)``,
    the *equivalent weight* that ``combine`` reports (and the Objective logs
    as ``weight/<term>``): a term with a small loss gets a large weight.
    Every loss must be positive; a zero loss makes the total 0 and its
    weight infinite. The strategy has no state and no arguments.

    Example:
        >>> import numpy as np
        >>> w = GLS()
        >>> w.setup(["a", "b"])
        >>> total, weights = w.combine({"a": np.float32(2.0), "b": np.float32(8.0)})
        >>> round(float(total), 4), round(float(weights["a"]), 4), round(float(weights["b"]), 4)
        (4.0, 1.0, 0.25)
    """

    def update(self, state, losses, step=None, training=False):
        return rules.gls(losses), state
