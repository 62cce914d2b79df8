"""Metrics computed on logits (and, later, on embeddings)."""

from lossweave.metrics.logits import LogitsAccuracy

__all__ = ["LogitsAccuracy"]
