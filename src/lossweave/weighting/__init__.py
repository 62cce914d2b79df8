"""How term losses (or term gradients) become one update: interchangeable strategies.

Loss-level strategies (``Fixed``, ``Convex``, ``Uncertainty``, ``DWA``, ``RLW``,
``GLS``, ``FAMO``) weight the losses; gradient-level ones (``Sum``, ``Mean``,
``MGDA``, ``PCGrad``) combine the term gradients inside the train step.
"""

from lossweave.weighting.base import Weighting
from lossweave.weighting.convex import Clip, Convex
from lossweave.weighting.dwa import DWA
from lossweave.weighting.famo import FAMO
from lossweave.weighting.fixed import Fixed
from lossweave.weighting.gls import GLS
from lossweave.weighting.gradient import MGDA, GradientWeighting, Mean, PCGrad, Sum
from lossweave.weighting.rlw import RLW
from lossweave.weighting.uncertainty import Uncertainty

__all__ = [
    "Clip",
    "Convex",
    "DWA",
    "FAMO",
    "Fixed",
    "GLS",
    "GradientWeighting",
    "MGDA",
    "Mean",
    "PCGrad",
    "RLW",
    "Sum",
    "Uncertainty",
    "Weighting",
]
