"""How term losses become one scalar: interchangeable strategies on one protocol."""

from lossweave.weighting.base import Weighting
from lossweave.weighting.convex import Clip, Convex
from lossweave.weighting.dwa import DWA
from lossweave.weighting.famo import FAMO
from lossweave.weighting.fixed import Fixed
from lossweave.weighting.gls import GLS
from lossweave.weighting.rlw import RLW
from lossweave.weighting.uncertainty import Uncertainty

__all__ = ["Clip", "Convex", "DWA", "FAMO", "Fixed", "GLS", "RLW", "Uncertainty", "Weighting"]
