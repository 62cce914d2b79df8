"""How term losses (or term gradients) become one update: interchangeable strategies.

Loss-level strategies (``Fixed``, ``Convex``, ``Uncertainty``, ``DWA``, ``RLW``,
``GLS``, ``FAMO``) weight the losses; gradient-level ones (``Sum``, ``Mean``,
``MGDA``, ``PCGrad``, ``IMTLG``, ``AlignedMTL``, ``ConFIG``, ``CAGrad``,
``NashMTL``, ``UPGrad``, ``DualProj``) combine the term gradients inside the train step; ``GradVac``,
``GradDrop``, ``MoCo``, ``DBMTL`` and ``GradNorm`` use the term gradients
themselves (per-layer targets, elementwise masks, running averages, last-layer
norms). Every strategy is one protocol (``lossweave.weighting.base``): a pure
``init``/``update`` pair whose rule lives in ``lossweave.ops``, held by a thin
Layer; the level is a property of its type (``Weighting.level``). The
combinators ``Scaled`` and ``LogLosses`` put a per-term scale or the
log-losses in front of any strategy.
"""

from lossweave.weighting.balanced_gradients import IMTLG, AlignedMTL, ConFIG
from lossweave.weighting.base import Weighting
from lossweave.weighting.cagrad import CAGrad
from lossweave.weighting.combinators import LogLosses, Scaled
from lossweave.weighting.convex import Clip, Convex
from lossweave.weighting.dual_cone import DualProj, UPGrad
from lossweave.weighting.dwa import DWA
from lossweave.weighting.famo import FAMO
from lossweave.weighting.fixed import Fixed
from lossweave.weighting.gls import GLS
from lossweave.weighting.graddrop import GradDrop
from lossweave.weighting.gradient import MGDA, GradientWeighting, Mean, PCGrad, Sum
from lossweave.weighting.gradient_state import DBMTL, MoCo
from lossweave.weighting.gradnorm import GradNorm
from lossweave.weighting.gradvac import GradVac
from lossweave.weighting.nash_mtl import NashMTL
from lossweave.weighting.rlw import RLW
from lossweave.weighting.uncertainty import Uncertainty

__all__ = [
    "AlignedMTL",
    "CAGrad",
    "Clip",
    "ConFIG",
    "Convex",
    "DBMTL",
    "DWA",
    "DualProj",
    "FAMO",
    "Fixed",
    "GLS",
    "GradDrop",
    "GradNorm",
    "GradVac",
    "GradientWeighting",
    "IMTLG",
    "LogLosses",
    "MGDA",
    "Mean",
    "MoCo",
    "NashMTL",
    "PCGrad",
    "RLW",
    "Scaled",
    "Sum",
    "UPGrad",
    "Uncertainty",
    "Weighting",
]
