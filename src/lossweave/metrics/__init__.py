"""Metrics computed on logits (Keras metrics) and on embeddings (NumPy evaluation).

The embedding metrics are NumPy / scikit-learn functions on NumPy
arrays, meant for a validation set at the end of an epoch (see
:class:`EmbeddingEvaluation`) or for a trained model's features. Nothing there
is differentiable; the retrieval figures find neighbours with ``keras.ops`` on
the current backend's device (:mod:`lossweave.ops.search`), everything else is
NumPy. One module per family:

* :mod:`~lossweave.metrics.tightness`: :func:`distance_ratio`.
* :mod:`~lossweave.metrics.retrieval`: :func:`recall_at_k`,
  :func:`nearest_neighbor_accuracy`, :func:`map_at_r`, :func:`r_precision`,
  :func:`precision_at_k`, :func:`mean_reciprocal_rank`; their neighbours come
  from :class:`lossweave.retrieval.Index`'s chunked search on the Keras
  device (no queries x gallery array).
* :mod:`~lossweave.metrics.verification`: :func:`verification_pairs`,
  :func:`pair_scores`, :func:`verification_accuracy` (LFW 10-fold),
  :func:`roc_auc`, :func:`tar_at_far`.
* :mod:`~lossweave.metrics.templates`: the IJB-B / IJB-C template protocol:
  :func:`load_ijb_protocol`, :func:`template_features`,
  :func:`template_verification`, :func:`tar_at_fars`.
* :mod:`~lossweave.metrics.clustering`: :func:`clustering_scores` (NMI, AMI).
* :mod:`~lossweave.metrics.tuples`: :class:`TupleStatistics`, a training metric
  of a tuple loss's batches (pair distances, hardest pairs, active tuples).
* :mod:`~lossweave.metrics.evaluation`: :func:`evaluate_embeddings`, all of it
  as one dict.

Conventions shared by every function:

* ``embeddings`` is a float array of shape ``(n, dim)`` and ``labels`` an
  integer array of shape ``(n,)`` (``(n, 1)`` is accepted).
* ``metric="cosine"`` compares directions (distance ``1 - cos``; rows are
  L2-normalized first, so every figure is invariant to a per-row scaling and a
  zero row is an error); ``metric="euclidean"`` compares the raw vectors.
* Retrieval figures are leave-one-out over the set (every sample is a query,
  the others are the gallery) unless a reference (gallery) set is given with
  ``reference_embeddings=`` and ``reference_labels=``. A query with no
  correct answer in its gallery (a class of one sample, or a class absent
  from the reference set) is **skipped** (left out of the mean, as
  pytorch-metric-learning's ``AccuracyCalculator`` does with "lone" queries),
  and an error is raised if no query is left.
"""

from lossweave.metrics.callback import EmbeddingEvaluation
from lossweave.metrics.clustering import ClusteringResult, clustering_scores
from lossweave.metrics.evaluation import evaluate_embeddings
from lossweave.metrics.logits import LogitsAccuracy
from lossweave.metrics.retrieval import (
    map_at_r,
    mean_reciprocal_rank,
    nearest_neighbor_accuracy,
    precision_at_k,
    queries_without_reference,
    r_precision,
    recall_at_k,
)
from lossweave.metrics.templates import (
    IJBProtocol,
    TemplateVerificationResult,
    load_ijb_protocol,
    read_faceness_scores,
    read_template_media,
    read_template_pairs,
    tar_at_fars,
    template_features,
    template_pair_scores,
    template_verification,
)
from lossweave.metrics.tightness import distance_ratio
from lossweave.metrics.tuples import TupleStatistics
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
    "EmbeddingEvaluation",
    "IJBProtocol",
    "LogitsAccuracy",
    "TemplateVerificationResult",
    "TupleStatistics",
    "VerificationResult",
    "clustering_scores",
    "distance_ratio",
    "evaluate_embeddings",
    "load_ijb_protocol",
    "map_at_r",
    "mean_reciprocal_rank",
    "nearest_neighbor_accuracy",
    "pair_scores",
    "precision_at_k",
    "queries_without_reference",
    "r_precision",
    "read_faceness_scores",
    "read_template_media",
    "read_template_pairs",
    "recall_at_k",
    "roc_auc",
    "tar_at_far",
    "tar_at_fars",
    "template_features",
    "template_pair_scores",
    "template_verification",
    "verification_accuracy",
    "verification_pairs",
]
