"""``lossweave.retrieval.matching``: open-set answers and the classification figures at thresholds.

Every figure is checked against scikit-learn on the equivalent binary
decisions (``y_true``: the nearest label is the query's; ``y_pred``: its
distance is within the threshold) and the FAR by counting. The logic is
NumPy over the index's answers, so it runs in one backend pass; one
end-to-end test through the index runs on every backend.
"""

import numpy as np
import pytest
from conftest import one_backend
from sklearn import metrics as skm
from test_retrieval_index import numpy_search

from lossweave.retrieval import matching


def numpy_nearest(queries, references, metric):
    """Each query's nearest reference (ties: the lower row) and its distance: test_retrieval_index's brute force."""
    distances, positions = numpy_search(queries, references, 1, metric)
    return distances[:, 0], positions[:, 0]


def sklearn_figures(distances, nearest_labels, labels, threshold):
    """Precision, recall, F1 and accuracy by scikit-learn; FAR and the counts by counting."""
    y_true = np.asarray(nearest_labels) == np.asarray(labels)
    y_pred = np.asarray(distances, "float64") <= threshold
    tp, fp = int(np.sum(y_true & y_pred)), int(np.sum(~y_true & y_pred))
    fn, tn = int(np.sum(y_true & ~y_pred)), int(np.sum(~y_true & ~y_pred))
    return {
        "precision": skm.precision_score(y_true, y_pred, zero_division=0),
        "recall": skm.recall_score(y_true, y_pred, zero_division=0),
        "f1": skm.f1_score(y_true, y_pred, zero_division=0),
        "far": fp / (fp + tn) if fp + tn else 0.0,
        "accuracy": skm.accuracy_score(y_true, y_pred),
        "tp": tp, "fp": fp, "fn": fn, "tn": tn,
    }


def random_answers(rng, n=300, classes=6):
    """Nearest answers with ties in distance, duplicated rows and queries of classes the index lacks."""
    labels = rng.integers(0, classes + 2, size=n)  # classes 6 and 7 are not enrolled: unknowns
    nearest_labels = np.where(rng.random(n) < 0.7, labels, rng.integers(0, classes, size=n))
    nearest_labels = np.where(labels >= classes, rng.integers(0, classes, size=n), nearest_labels)
    spread = rng.random(n)  # right answers nearer than wrong ones, as after training; overlapping
    spread = np.where(nearest_labels == labels, 0.6 * spread, 0.3 + 0.7 * spread)
    distances = np.round(spread, 2).astype("float32")  # ~100 distinct values: many ties
    distances[:20] = distances[20:40]  # duplicated rows
    nearest_labels[:20], labels[:20] = nearest_labels[20:40], labels[20:40]
    return distances, nearest_labels, labels


@one_backend
def test_figures_equal_sklearn_at_every_threshold():
    rng = np.random.default_rng(0)
    distances, nearest_labels, labels = random_answers(rng)
    thresholds = np.concatenate([[-1.0, 0.0, np.inf], np.unique(distances)[::7], [0.505, 2.0]])
    result = matching.classification(distances, nearest_labels, labels, thresholds)
    assert np.array_equal(result["threshold"], thresholds)
    for i, threshold in enumerate(thresholds):
        expected = sklearn_figures(distances, nearest_labels, labels, threshold)
        for name, value in expected.items():
            assert result[name][i] == pytest.approx(value, abs=1e-12), (name, threshold)
    # one scalar threshold: plain numbers
    one = matching.classification(distances, nearest_labels, labels, 0.5)
    assert isinstance(one["precision"], float) and isinstance(one["tp"], int)
    assert one == pytest.approx({"threshold": 0.5, **sklearn_figures(distances, nearest_labels, labels, 0.5)})


@one_backend
def test_the_counts_follow_the_table():
    """TP: accepted right; FP: accepted wrong or unknown; FN: rejected right; TN: rejected wrong or unknown."""
    distances = [0.1, 0.1, 0.2, 0.9, 0.9, 0.3]
    nearest = [1, 2, 3, 4, 5, 6]
    labels = [1, 9, -1, 4, 0, -1]  # right, wrong, unknown, right, wrong, unknown
    got = matching.counts(distances, nearest, labels, [0.5])
    assert {k: int(v[0]) for k, v in got.items()} == {"tp": 1, "fp": 3, "fn": 1, "tn": 1}
    # the tie at 0.1 goes in together; a threshold equal to a distance accepts it (d <= t)
    got = matching.counts(distances, nearest, labels, [0.0999, 0.1])
    assert got["tp"].tolist() == [0, 1] and got["fp"].tolist() == [0, 1]


@one_backend
def test_answer_is_the_nearest_label_or_unknown():
    rng = np.random.default_rng(1)
    distances, nearest_labels, _ = random_answers(rng, n=50)
    got = matching.answer(distances, nearest_labels, 0.4)
    # compared in float64: the float32 distance 0.4 (0.4000000060) is beyond the threshold 0.4
    assert np.array_equal(got, np.where(distances.astype("float64") <= 0.4, nearest_labels, -1))
    assert np.any(distances == np.float32(0.4)) and np.all(got[distances == np.float32(0.4)] == -1)
    assert got.dtype.kind == "i"
    # a search result's (n, k) arrays: the first column
    assert np.array_equal(matching.answer(np.stack([distances, distances + 1], 1),
                                          np.stack([nearest_labels, nearest_labels * 0], 1), 0.4), got)
    # string labels take a string unknown
    names = np.array(["ann", "bob", "cy"])
    assert matching.answer([0.1, 0.9, 0.2], names, 0.5, unknown="unknown").tolist() == ["ann", "unknown", "cy"]
    assert matching.answer([0.1], [3], np.inf).tolist() == [3]


@one_backend
@pytest.mark.parametrize("call, message", [
    (lambda: matching.counts([0.1, 0.2], [1, 2], [1, 2, 3], 0.5), "one of the labels per query (2 queries); received 3"),
    (lambda: matching.counts([0.1, 0.2], [1, 2], [[1, 2]], 0.5), "shape (n,)"),
    (lambda: matching.counts([0.1, 0.2], [1, 2], [0.5, 2.0], 0.5), "non-integer"),
    (lambda: matching.counts([0.1, 0.2], [1, 2], ["a", "b"], 0.5), "different kinds"),
    (lambda: matching.counts([0.1, np.nan], [1, 2], [1, 2], 0.5), "NaN or -inf"),
    (lambda: matching.counts([0.1, -np.inf], [1, 2], [1, 2], 0.5), "NaN or -inf"),
    (lambda: matching.counts([0.1, 0.2], [1, 2], [1, 2], np.nan), "received NaN"),
    (lambda: matching.counts([0.1, 0.2], [1, 2], [1, 2], []), "a 1-D array of them"),
    (lambda: matching.answer([0.1, 0.2], [1, -1], 0.5), "also the label of a reference"),
    (lambda: matching.answer([0.1], [1], 0.5, unknown="none"), "not of the kind"),
    (lambda: matching.answer([0.1], [1], [0.5, 0.6]), "one distance threshold"),
    (lambda: matching.answer([0.1], [1, 2], 0.5), "one of the nearest labels per query (1 queries); received 2"),
])
def test_bad_input_is_a_clear_error(call, message):
    with pytest.raises(ValueError, match="lossweave.retrieval") as error:
        call()
    assert message in str(error.value)


@one_backend
def test_a_query_without_a_neighbour_is_never_accepted():
    """An approximate search's "not found" (distance inf, filler label -1): rejected, a TN, even at t = inf."""
    distances, nearest, labels = [0.1, np.inf, 0.3], [1, -1, 2], [1, -1, 5]
    assert matching.answer(distances, nearest, np.inf).tolist() == [1, -1, 2]
    got = matching.counts(distances, nearest, labels, [0.2, np.inf])
    assert {k: v.tolist() for k, v in got.items()} == {"tp": [1, 1], "fp": [0, 1], "fn": [0, 0], "tn": [2, 1]}


class _NoLabels:
    labels = None

    def __len__(self):
        return 3


@one_backend
def test_an_index_without_labels_or_references_cannot_answer():
    with pytest.raises(ValueError, match="has no labels"):
        matching.match(_NoLabels(), np.zeros((1, 2)), 0.5)

    class Empty(_NoLabels):
        def __len__(self):
            return 0

    with pytest.raises(ValueError, match="index is empty"):
        matching.match(Empty(), np.zeros((1, 2)), 0.5)


def test_through_the_index_equals_a_numpy_reference(metric="dot"):
    """End to end on this backend (the metrics' search is tests/test_retrieval_index.py's): match and
    evaluate_classification over Index.search."""
    from lossweave.retrieval import Index, evaluate_classification, match

    rng = np.random.default_rng(2)
    references = rng.normal(size=(40, 5)).astype("float32")
    references[20:] = references[:20]  # duplicated rows, same label: a tie cannot change the answer
    reference_labels = np.concatenate([np.arange(20) % 4, np.arange(20) % 4])
    queries = (references[:30] + 0.3 * rng.normal(size=(30, 5))).astype("float32")
    labels = np.concatenate([reference_labels[:24], [7] * 6])  # six queries of a class that is not enrolled
    index = Index(metric=metric)
    index.add(references, labels=reference_labels)
    distances, nearest = numpy_nearest(queries, references, metric)
    threshold = float(np.median(distances))
    expected = np.where(distances <= threshold, reference_labels[nearest], -1)
    near_threshold = np.abs(distances - threshold) < 1e-4  # float32 search vs float64 reference
    got = match(index, queries, threshold)
    assert np.array_equal(got[~near_threshold], expected[~near_threshold])
    thresholds = np.quantile(distances, [0.1, 0.5, 0.9]) + 1e-3
    result = evaluate_classification(index, queries, labels, thresholds)
    for i, t in enumerate(thresholds):
        reference = sklearn_figures(distances, reference_labels[nearest], labels, t)
        assert {k: result[k][i] for k in reference} == pytest.approx(reference, abs=1e-12)
