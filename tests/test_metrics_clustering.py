"""Clustering metrics: NMI and AMI of a seeded k-means against the classes.

References: NMI from the entropies and mutual information of the contingency
table (Strehl & Ghosh, JMLR 2002, arithmetic mean), AMI with the expected
mutual information of the hypergeometric model (Vinh, Epps & Bailey, JMLR
2010) written as loops with log-factorials, and scikit-learn's
normalized_mutual_info_score / adjusted_mutual_info_score on the same
k-means assignment.
"""

from math import lgamma, log

import numpy as np
import pytest
from conftest import one_backend
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_mutual_info_score, normalized_mutual_info_score

from lossweave.metrics import clustering_scores, evaluate_embeddings

pytestmark = one_backend


def _contingency(a, b):
    _, a = np.unique(a, return_inverse=True)
    _, b = np.unique(b, return_inverse=True)
    table = np.zeros((a.max() + 1, b.max() + 1))
    np.add.at(table, (a, b), 1)
    return table


def _entropy(counts, n):
    return -sum(c / n * log(c / n) for c in counts if c > 0)


def numpy_mutual_information(a, b):
    table = _contingency(a, b)
    n = table.sum()
    rows, cols = table.sum(axis=1), table.sum(axis=0)
    mi = sum(table[i, j] / n * log(n * table[i, j] / (rows[i] * cols[j]))
             for i in range(table.shape[0]) for j in range(table.shape[1]) if table[i, j] > 0)
    return mi, _entropy(rows, n), _entropy(cols, n), rows, cols, int(n)


def numpy_nmi(a, b):
    mi, ha, hb, *_ = numpy_mutual_information(a, b)
    return mi / ((ha + hb) / 2)


def numpy_ami(a, b):
    """(MI - E[MI]) / (mean(H) - E[MI]), E[MI] summed over the hypergeometric n_ij."""
    mi, ha, hb, rows, cols, n = numpy_mutual_information(a, b)
    emi = 0.0
    for ai in rows.astype(int):
        for bj in cols.astype(int):
            for nij in range(max(1, ai + bj - n), min(ai, bj) + 1):
                log_p = (lgamma(ai + 1) + lgamma(bj + 1) + lgamma(n - ai + 1) + lgamma(n - bj + 1)
                         - lgamma(n + 1) - lgamma(nij + 1) - lgamma(ai - nij + 1)
                         - lgamma(bj - nij + 1) - lgamma(n - ai - bj + nij + 1))
                emi += nij / n * log(n * nij / (ai * bj)) * np.exp(log_p)
    return (mi - emi) / ((ha + hb) / 2 - emi)


def _blobs(spread, seed=0, n_per=15, classes=4, dim=5):
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.repeat(np.arange(classes), n_per))
    return 3.0 * rng.normal(size=(classes, dim))[y] + spread * rng.normal(size=(y.size, dim)), y


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("spread", [0.5, 2.5])
def test_nmi_and_ami_of_the_kmeans_assignment_match_the_references(metric, spread):
    x, y = _blobs(spread)
    result = clustering_scores(x, y, metric=metric, seed=3)
    # The assignment is scikit-learn's k-means with K = number of classes, seeded.
    rows = x / np.linalg.norm(x, axis=1, keepdims=True) if metric == "cosine" else x
    expected = KMeans(n_clusters=4, n_init=10, random_state=3).fit_predict(rows)
    np.testing.assert_array_equal(result.assignments, expected)
    assert result.nmi == pytest.approx(numpy_nmi(y, result.assignments), abs=1e-12)
    assert result.ami == pytest.approx(numpy_ami(y, result.assignments), abs=1e-9)
    assert result.nmi == pytest.approx(normalized_mutual_info_score(y, result.assignments), abs=1e-12)
    assert result.ami == pytest.approx(adjusted_mutual_info_score(y, result.assignments), abs=1e-12)
    if spread < 1:
        assert result.nmi == result.ami == 1.0  # well separated: the clusters are the classes
    else:
        assert 0.0 < result.ami < result.nmi < 1.0  # AMI takes off what chance gives


def test_random_embedding_has_ami_near_zero_and_seeds_repeat():
    rng = np.random.default_rng(1)
    y = np.arange(200) % 5
    x = rng.normal(size=(200, 8))
    a = clustering_scores(x, y, seed=0)
    assert abs(a.ami) < 0.05 and a.nmi < 0.1
    np.testing.assert_array_equal(clustering_scores(x, y, seed=0).assignments, a.assignments)
    figures = evaluate_embeddings(x, y, clustering=True, pairs=False, seed=0)
    assert (figures["nmi"], figures["ami"]) == (a.nmi, a.ami)


def test_clustering_needs_two_classes():
    with pytest.raises(ValueError, match="at least 2 classes"):
        clustering_scores(np.ones((4, 2)), [1, 1, 1, 1])
