"""Metrics computed on logits (Keras metrics) and on embeddings (NumPy evaluation)."""

from lossweave.metrics.callback import EmbeddingEvaluation
from lossweave.metrics.embedding import (
    VerificationResult,
    distance_ratio,
    evaluate_embeddings,
    map_at_r,
    nearest_neighbor_accuracy,
    pair_scores,
    recall_at_k,
    roc_auc,
    tar_at_far,
    verification_accuracy,
    verification_pairs,
)
from lossweave.metrics.logits import LogitsAccuracy

__all__ = [
    "EmbeddingEvaluation",
    "LogitsAccuracy",
    "VerificationResult",
    "distance_ratio",
    "evaluate_embeddings",
    "map_at_r",
    "nearest_neighbor_accuracy",
    "pair_scores",
    "recall_at_k",
    "roc_auc",
    "tar_at_far",
    "verification_accuracy",
    "verification_pairs",
]
