"""Stateful loss terms: Keras Layers that read a model output and a target."""

from lossweave.terms.base import Term
from lossweave.terms.center import CenterLoss
from lossweave.terms.loss import Loss, SoftmaxCrossEntropy
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
from lossweave.terms.proxy import ProxyAnchorLoss, ProxyNCALoss

__all__ = [
    "ArcFace",
    "CenterLoss",
    "CombinedMargin",
    "CosFace",
    "Loss",
    "MarginLogits",
    "MarginSoftmax",
    "NormFace",
    "ProxyAnchorLoss",
    "ProxyNCALoss",
    "SoftmaxCrossEntropy",
    "SphereFace",
    "SubCenterArcFace",
    "Term",
]
