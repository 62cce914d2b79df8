"""How term losses become one scalar: interchangeable strategies on one protocol."""

from lossweave.weighting.base import Weighting
from lossweave.weighting.fixed import Fixed

__all__ = ["Fixed", "Weighting"]
