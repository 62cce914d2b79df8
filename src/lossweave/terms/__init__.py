"""Stateful loss terms: Keras Layers that read a model output and a target."""

from lossweave.terms.base import Term
from lossweave.terms.center import CenterLoss
from lossweave.terms.loss import Loss, SoftmaxCrossEntropy
from lossweave.terms.memory import CrossBatchMemory
from lossweave.terms.margin import (
    ArcFace,
    CombinedMargin,
    CosFace,
    MarginLogits,
    MarginSoftmax,
    NormFace,
    SphereFace,
    SubCenterArcFace,
)
from lossweave.terms.pairs import ContrastiveLoss, LiftedStructureLoss, NPairsLoss, PairTerm, TripletLoss
from lossweave.terms.proxy import ProxyAnchorLoss, ProxyNCALoss
from lossweave.terms.similarity import CircleLoss, MultiSimilarityLoss, NTXentLoss, SupConLoss

__all__ = [
    "ArcFace",
    "CenterLoss",
    "CircleLoss",
    "CombinedMargin",
    "ContrastiveLoss",
    "CosFace",
    "CrossBatchMemory",
    "LiftedStructureLoss",
    "Loss",
    "MarginLogits",
    "MarginSoftmax",
    "MultiSimilarityLoss",
    "NPairsLoss",
    "NTXentLoss",
    "NormFace",
    "PairTerm",
    "ProxyAnchorLoss",
    "ProxyNCALoss",
    "SoftmaxCrossEntropy",
    "SphereFace",
    "SubCenterArcFace",
    "SupConLoss",
    "Term",
    "TripletLoss",
]
