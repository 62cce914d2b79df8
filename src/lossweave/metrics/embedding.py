"""The embedding metrics under their former module name (re-exports; nothing is defined here).

They live in one module per family: :mod:`lossweave.metrics.tightness`,
:mod:`~lossweave.metrics.retrieval`, :mod:`~lossweave.metrics.verification`,
:mod:`~lossweave.metrics.clustering` and :mod:`~lossweave.metrics.evaluation`
(``evaluate_embeddings``). ``from lossweave.metrics import ...`` is the
documented way to import them.
"""

from lossweave.metrics.clustering import ClusteringResult, clustering_scores
from lossweave.metrics.evaluation import evaluate_embeddings
from lossweave.metrics.retrieval import (
    map_at_r,
    nearest_neighbor_accuracy,
    queries_without_reference,
    r_precision,
    recall_at_k,
)
from lossweave.metrics.tightness import distance_ratio
from lossweave.metrics.verification import (
    VerificationResult,
    pair_scores,
    roc_auc,
    tar_at_far,
    verification_accuracy,
    verification_pairs,
)

__all__ = [
    "ClusteringResult",
    "VerificationResult",
    "clustering_scores",
    "distance_ratio",
    "evaluate_embeddings",
    "map_at_r",
    "nearest_neighbor_accuracy",
    "pair_scores",
    "queries_without_reference",
    "r_precision",
    "recall_at_k",
    "roc_auc",
    "tar_at_far",
    "verification_accuracy",
    "verification_pairs",
]
