"""Clustering figures of an embedding: NMI and AMI of a seeded k-means against the classes."""

from typing import NamedTuple

import numpy as np

from lossweave.metrics import _checks

# Restarts of k-means from different seeds; the best (lowest inertia) is kept.
KMEANS_RESTARTS = 10


class ClusteringResult(NamedTuple):
    """Result of :func:`clustering_scores`.

    Attributes:
        nmi: normalized mutual information of the clusters and the classes.
        ami: adjusted mutual information (0 in expectation for a random
            clustering, 1 for a perfect one; can be negative).
        assignments: ``(n,)`` int cluster of each sample (``0..K-1``).
    """

    nmi: float
    ami: float
    assignments: np.ndarray


def clustering_scores(embeddings, labels, metric="cosine", seed=0):
    """NMI and AMI of a k-means clustering of the embedding, against the classes.

    The embedding is clustered by k-means (scikit-learn's ``KMeans``,
    k-means++ starts, the best of ``KMEANS_RESTARTS`` seeded restarts) into as
    many clusters as ``labels`` has classes, and the assignment is compared
    with the classes:

    * NMI, ``I(Y; C) / ((H(Y) + H(C)) / 2)`` (Strehl & Ghosh, "Cluster
      Ensembles", JMLR 2002, with the arithmetic mean of the entropies;
      ``sklearn.metrics.normalized_mutual_info_score``), the clustering figure
      of Oh Song et al., CVPR 2016 and of Musgrave et al., "A Metric Learning
      Reality Check", ECCV 2020 (Sec. 3.2, which also shows its weaknesses).
    * AMI, ``(I - E[I]) / ((H(Y) + H(C)) / 2 - E[I])`` with the expected
      mutual information ``E[I]`` of two random clusterings with the same
      cluster sizes (the hypergeometric model of Vinh, Epps & Bailey,
      "Information Theoretic Measures for Clusterings Comparison: Variants,
      Properties, Normalization and Correction for Chance", JMLR 2010; here
      with the arithmetic mean, ``sklearn.metrics.adjusted_mutual_info_score``),
      as Musgrave et al. report it next to NMI.

    ``metric="cosine"`` clusters the L2-normalized rows (directions, as the
    cosine retrieval figures compare them); ``"euclidean"`` the raw rows.

    Args:
        embeddings: ``(n, dim)`` array.
        labels: ``(n,)`` integer classes; at least two distinct.
        metric: ``"cosine"`` or ``"euclidean"``.
        seed: seed of k-means (the same seed gives the same clusters).

    Returns:
        A :class:`ClusteringResult` ``(nmi, ami, assignments)``.

    Raises:
        ValueError: bad shapes, NaN values, fewer than two classes, or
            (cosine) a zero row.

    Example:
        >>> x = np.array([[0., 1.], [0.1, 1.], [1., 0.], [1., 0.1], [-1., 0.], [-1., -0.1]])
        >>> result = clustering_scores(x, [0, 0, 1, 1, 2, 2])
        >>> result.nmi, result.ami
        (1.0, 1.0)
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_mutual_info_score, normalized_mutual_info_score

    embeddings, labels = _checks.check_set(embeddings, labels, metric)
    num_classes = int(np.unique(labels).size)
    kmeans = KMeans(n_clusters=num_classes, n_init=KMEANS_RESTARTS, random_state=seed)
    assignments = kmeans.fit_predict(embeddings).astype("int64")
    return ClusteringResult(
        float(normalized_mutual_info_score(labels, assignments)),
        float(adjusted_mutual_info_score(labels, assignments)),
        assignments,
    )
