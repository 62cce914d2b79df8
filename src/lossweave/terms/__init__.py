"""Stateful loss terms: Keras Layers that read a model output and a target.

``add_to_rows(variable, indices, updates)`` and ``gather_rows(table, indices)``
are the O(rows x dim) row update and read the terms use (``scatter_add`` of
``IndexedSlices`` on TensorFlow, ``index_add_`` on PyTorch, ``.at[].add`` on JAX): a custom training
loop that updates centers itself (``lw.ops.center_update_rows``) applies the
rows with them.
"""

from lossweave._backend import add_to_rows, gather_rows

from lossweave.terms.adaptive_margin import AdaCos, AdaFace, CurricularFace, MagFace
from lossweave.terms.base import Term
from lossweave.terms.center import CenterLoss
from lossweave.terms.loss import Loss, SoftmaxCrossEntropy
from lossweave.terms.elastic import ElasticArcFace, ElasticCosFace
from lossweave.terms.memory import CrossBatchMemory
from lossweave.terms.large_margin import LargeMarginSoftmax
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
from lossweave.terms.pairs import (
    ContrastiveLoss,
    LiftedStructureLoss,
    NPairsLoss,
    PairTerm,
    SiameseContrastiveLoss,
    TripletLoss,
)
from lossweave.terms.proxy import ProxyAnchorLoss, ProxyNCALoss
from lossweave.terms.similarity import CircleLoss, MultiSimilarityLoss, NTXentLoss, SupConLoss, TwoViewNTXentLoss
from lossweave.terms.ranking import HistogramLoss, InstanceLoss, PNPLoss, RankedListLoss, SoftNearestNeighborLoss
from lossweave.terms.self_supervised import BarlowTwinsLoss, SelfSupervisedLoss, VICRegLoss
from lossweave.terms.soft_triple import SoftTripleLoss
from lossweave.terms.tuple_losses import (
    AngularLoss,
    FastAPLoss,
    GeneralizedLiftedStructureLoss,
    IntraPairVarianceLoss,
    MarginLoss,
    NCALoss,
    SNRContrastiveLoss,
    TupletMarginLoss,
)

__all__ = [
    "BarlowTwinsLoss",
    "HistogramLoss",
    "InstanceLoss",
    "LargeMarginSoftmax",
    "PNPLoss",
    "RankedListLoss",
    "SelfSupervisedLoss",
    "SoftNearestNeighborLoss",
    "VICRegLoss",
    "AngularLoss",
    "FastAPLoss",
    "GeneralizedLiftedStructureLoss",
    "IntraPairVarianceLoss",
    "MarginLoss",
    "NCALoss",
    "SNRContrastiveLoss",
    "SoftTripleLoss",
    "TupletMarginLoss",
    "add_to_rows",
    "gather_rows",
    "AdaCos",
    "AdaFace",
    "ArcFace",
    "CenterLoss",
    "CircleLoss",
    "CombinedMargin",
    "ContrastiveLoss",
    "CosFace",
    "CrossBatchMemory",
    "CurricularFace",
    "ElasticArcFace",
    "ElasticCosFace",
    "LiftedStructureLoss",
    "Loss",
    "MagFace",
    "MarginLogits",
    "MarginSoftmax",
    "MultiSimilarityLoss",
    "NPairsLoss",
    "NTXentLoss",
    "NormFace",
    "PairTerm",
    "ProxyAnchorLoss",
    "ProxyNCALoss",
    "SiameseContrastiveLoss",
    "SoftmaxCrossEntropy",
    "SphereFace",
    "SubCenterArcFace",
    "SupConLoss",
    "Term",
    "TripletLoss",
    "TwoViewNTXentLoss",
]
