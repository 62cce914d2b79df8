"""Homoscedastic uncertainty weighting (Kendall, Gal & Cipolla, CVPR 2018)."""

import keras
from keras import ops

from lossweave import arguments
from lossweave.ops import weighting as rules
from lossweave.weighting._common import check_known_terms
from lossweave.weighting.base import Weighting

KINDS = ("regression", "classification")


@keras.saving.register_keras_serializable(package="lossweave")
class Uncertainty(Weighting):
    """Learned per-term weights from each task's homoscedastic uncertainty.

    Kendall, Gal & Cipolla, "Multi-task learning using uncertainty to weigh
    losses for scene geometry and semantics", CVPR 2018. Each term ``k`` has a
    learned log-variance ``s_k = log sigma_k^2`` (a trainable float32 variable,
    initialised to 0 so every sigma starts at 1), the numerically stable
    parameterisation of Sec. 3.2. The total is

    - regression term (Eq. 7, a Gaussian likelihood):
      ``0.5 * exp(-s_k) * L_k + 0.5 * s_k``  (``1/(2 sigma^2) L + log sigma``);
    - classification term (Eq. 10 and the approximation of Eq. 12, a scaled
      softmax): ``exp(-s_k) * L_k + 0.5 * s_k``  (``1/sigma^2 L + log sigma``).

    The weight logged as ``weight/<term>`` is the factor multiplying ``L_k``:
    ``0.5 * exp(-s_k)`` or ``exp(-s_k)``. A term with a small loss gets a small
    variance and a large weight; the ``0.5 * s_k`` regulariser stops every
    variance growing without bound. At the optimum ``s_k = log L_k`` (regression)
    the total is ``0.5 + 0.5 * log L_k`` per term, negative once
    ``L_k < 1/e``.

    With ``nonnegative=True`` the regulariser is ``log(1 + exp(s_k))``, that is
    ``log(1 + sigma_k^2)`` (Liebel & Koerner, "Auxiliary tasks in multi-task
    learning", 2018, Eq. 2), which is positive, so the total stays >= 0.

    Args:
        kinds: dict term name -> ``"regression"`` or ``"classification"``;
            terms not named are regression terms.
        nonnegative: use the ``log(1 + sigma^2)`` regulariser.

    Example:
        >>> import numpy as np
        >>> from keras import ops
        >>> w = Uncertainty({"label": "classification"})
        >>> w.setup(["label", "depth"])
        >>> total, weights = w.combine({"label": np.float32(2.0), "depth": np.float32(3.0)})
        >>> [float(ops.convert_to_numpy(v)) for v in (total, weights["label"], weights["depth"])]
        [3.5, 1.0, 0.5]
        >>> _ = w.log_variances["depth"].assign(np.log(3.0))  # sigma^2 = 3: weight 1/6
        >>> round(float(ops.convert_to_numpy(w.combine({"label": 2.0, "depth": 3.0})[0])), 4)
        3.0493
    """

    def __init__(self, kinds=None, nonnegative=False, **kwargs):
        super().__init__(**kwargs)
        self.kinds = {
            name: arguments.choice(kind, KINDS, f"kinds[{name!r}]", "Uncertainty")
            for name, kind in dict(kinds or {}).items()
        }
        self.nonnegative = arguments.boolean(nonnegative, "nonnegative", "Uncertainty")

    @property
    def trainable_state(self):
        return tuple(f"log_var_{name}" for name in self.term_names or ())

    @property
    def log_variances(self):
        """``{term: variable}``: the learned ``s_k = log sigma_k^2`` (after ``setup``), else None."""
        if not self.state_variables:
            return None
        return {name: self.state_variables[f"log_var_{name}"] for name in self.term_names}

    def init(self, term_names):
        # sigma_k = 1 at the start: s_k = 0.
        return {f"log_var_{name}": ops.zeros((), "float32") for name in term_names}

    def setup(self, term_names):
        check_known_terms("Uncertainty", "kinds", self.kinds, term_names)
        super().setup(term_names)

    def kind(self, name):
        return self.kinds.get(name, "regression")

    def update(self, state, losses, step=None, training=False):
        total, weights = rules.uncertainty(
            [state[f"log_var_{name}"] for name in self.term_names], losses,
            [self.kind(name) == "classification" for name in self.term_names], self.nonnegative,
        )
        return (total, weights), state

    def get_config(self):
        config = super().get_config()
        config.update({"kinds": dict(self.kinds), "nonnegative": self.nonnegative})
        return config
