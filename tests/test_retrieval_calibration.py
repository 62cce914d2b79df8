"""``lossweave.retrieval.calibration``: the threshold sweep, its chosen thresholds, its JSON round trip.

The curve is checked point by point against scikit-learn on the equivalent
binary decisions, and each chosen threshold against a brute-force search
of the rule it documents. NumPy over the index's answers: one backend
pass, plus one end-to-end test through the index on every backend.
"""

import json

import numpy as np
import pytest
from conftest import one_backend
from test_retrieval_matching import numpy_nearest, random_answers, sklearn_figures

from lossweave.retrieval import Calibration, calibrate, sweep
from lossweave.retrieval import matching


def brute_force_choice(distances, nearest_labels, labels, target_precision, target_far):
    """The documented rules, by trying every distinct distance."""
    candidates = np.unique(np.asarray(distances, "float64"))
    rows = [sklearn_figures(distances, nearest_labels, labels, t) for t in candidates]
    precision = [t for t, r in zip(candidates, rows) if r["precision"] >= target_precision]
    far = [t for t, r in zip(candidates, rows) if r["far"] <= target_far]
    best = max(r["f1"] for r in rows)
    return {
        "precision": max(precision) if precision else None,
        "far": max(far) if far else None,
        "f1": min(t for t, r in zip(candidates, rows) if r["f1"] == best),
    }


@one_backend
@pytest.mark.parametrize("seed", [0, 1])
def test_the_curve_equals_sklearn_and_the_choices_follow_their_rules(seed):
    rng = np.random.default_rng(seed)
    distances, nearest_labels, labels = random_answers(rng)
    cal = sweep(distances, nearest_labels, labels, target_precision=0.8, target_far=0.2, metric="cosine")
    assert np.array_equal(cal.thresholds, np.unique(distances.astype("float64")))  # ties: one point each
    for i, threshold in enumerate(cal.thresholds):
        expected = sklearn_figures(distances, nearest_labels, labels, threshold)
        for name, value in expected.items():
            assert getattr(cal, name)[i] == pytest.approx(value, abs=1e-12), (name, threshold)
    expected = brute_force_choice(distances, nearest_labels, labels, 0.8, 0.2)
    assert cal.precision_threshold == expected["precision"] is not None
    assert cal.far_threshold == expected["far"] is not None
    assert cal.f1_threshold == expected["f1"]
    assert cal.threshold("precision") == cal.precision_threshold
    point = cal.cutpoints["f1"]
    assert point["f1"] == pytest.approx(float(cal.f1.max())) and point["threshold"] == cal.f1_threshold
    # between two candidates, at() is the lower one's point; below them all, every query is rejected
    middle = (cal.thresholds[3] + cal.thresholds[4]) / 2
    assert cal.at(middle) == pytest.approx({"threshold": middle, **sklearn_figures(
        distances, nearest_labels, labels, middle)})
    assert cal.at(-1.0)["tp"] == 0 and cal.at(-1.0)["fp"] == 0 and cal.at(-1.0)["accuracy"] == pytest.approx(
        float(np.mean(nearest_labels != labels)))


@one_backend
def test_precision_is_not_monotone_the_largest_threshold_that_reaches_it_wins():
    # accepted in order: right, wrong, right, right, right -> precision 1, .5, .67, .75, .8
    cal = sweep([0.1, 0.2, 0.3, 0.4, 0.5], [1, 1, 1, 1, 1], [1, 2, 1, 1, 1], target_precision=0.75,
                target_far=0.0)
    assert cal.precision.tolist() == pytest.approx([1.0, 0.5, 2 / 3, 0.75, 0.8])
    assert cal.precision_threshold == 0.5
    assert cal.far_threshold == 0.1  # FAR 0 until the wrong answer is accepted
    assert cal.f1_threshold == 0.5


@one_backend
def test_one_query_and_unreachable_targets():
    right = sweep([0.3], [4], [4], target_precision=0.99, target_far=0.0)
    assert right.thresholds.tolist() == [0.3] and right.precision_threshold == 0.3
    assert right.far_threshold == 0.3 and right.f1_threshold == 0.3  # no wrong answer: FAR 0
    wrong = sweep([0.3], [4], [5], target_precision=0.5, target_far=0.5)
    assert wrong.precision_threshold is None and wrong.far_threshold is None  # only rejecting all meets them
    assert wrong.cutpoints["precision"] is None and wrong.f1_threshold == 0.3 and wrong.f1.tolist() == [0.0]
    assert "None" in repr(wrong)


@one_backend
def test_queries_without_a_neighbour_are_no_candidate():
    cal = sweep([0.1, np.inf, 0.3], [1, -1, 2], [1, 1, 2])
    assert cal.thresholds.tolist() == [0.1, 0.3] and cal.tn.tolist() == [1, 1] and cal.tp.tolist() == [1, 2]


@one_backend
def test_duplicate_queries_count_twice():
    once = sweep([0.1, 0.2, 0.3], [1, 2, 3], [1, 0, 3])
    twice = sweep([0.1, 0.2, 0.3] * 2, [1, 2, 3] * 2, [1, 0, 3] * 2)
    assert np.array_equal(twice.thresholds, once.thresholds)
    assert np.array_equal(twice.tp, 2 * once.tp) and np.array_equal(twice.tn, 2 * once.tn)
    assert np.array_equal(twice.precision, once.precision)


@one_backend
def test_saves_to_json_and_back():
    rng = np.random.default_rng(3)
    cal = sweep(*random_answers(rng, n=80), target_precision=0.9, target_far=0.05, metric="euclidean")
    text = json.dumps(cal.to_dict())
    data = json.loads(text)
    assert data["cutpoints"] == cal.cutpoints and data["metric"] == "euclidean"
    assert data["precision"] == cal.precision.tolist()
    again = Calibration.from_dict(data)
    assert again.get_config() == cal.get_config() and again.cutpoints == cal.cutpoints
    assert Calibration.from_config(json.loads(json.dumps(cal.get_config()))).to_dict() == cal.to_dict()
    # float32 distances survive JSON exactly: a reloaded threshold accepts the same queries
    assert all(np.float32(t) == t for t in data["thresholds"])


@one_backend
@pytest.mark.parametrize("call, message", [
    (lambda: sweep([0.1, 0.2], [1, 2], [1]), "one of the labels per query (2 queries); received 1"),
    (lambda: sweep([], [], []), "at least one calibration query"),
    (lambda: sweep([0.1], [1], [1], target_precision=1.5), "`target_precision` must be a number >= 0 and <= 1"),
    (lambda: sweep([0.1], [1], [1], target_far=-0.1), "`target_far` must be a number >= 0 and <= 1"),
    (lambda: sweep([0.1], [1], [1], target_far=True), "`target_far` must be a number"),
    (lambda: sweep([0.1, np.nan], [1, 1], [1, 1]), "NaN or -inf"),
    (lambda: sweep([np.inf, np.inf], [-1, -1], [1, 1]), "every distance is inf"),
    (lambda: Calibration([0.2, 0.1], [0, 0], [0, 0], [0, 0], [0, 0]), "strictly ascending"),
    (lambda: Calibration([0.1, 0.2], [0], [0, 0], [0, 0], [0, 0]), "`tp` non-negative counts"),
    (lambda: sweep([0.1], [1], [1]).threshold("recall"), "`target` must be one of"),
])
def test_bad_input_is_a_clear_error(call, message):
    with pytest.raises(ValueError) as error:
        call()
    assert message in str(error.value)


def test_calibrate_through_the_index_equals_the_numpy_sweep(metric="cosine"):
    """End to end on this backend, with queries of a class the index does not hold."""
    from lossweave.retrieval import Index

    rng = np.random.default_rng(4)
    centers = 3.0 * rng.normal(size=(5, 4))
    reference_labels = np.repeat(np.arange(4), 10)  # class 4 is not enrolled
    references = (centers[reference_labels] + rng.normal(size=(40, 4))).astype("float32")
    labels = np.repeat(np.arange(5), 6)
    queries = (centers[labels] + rng.normal(size=(30, 4))).astype("float32")
    index = Index(metric=metric)
    index.add(references, labels=reference_labels)
    cal = calibrate(index, queries, labels, target_precision=0.9, target_far=0.1)
    distances, nearest = numpy_nearest(queries, references, metric)
    assert cal.metric == metric
    assert cal.thresholds == pytest.approx(np.unique(distances), abs=1e-4)
    expected = sweep(distances, reference_labels[nearest], labels, target_precision=0.9, target_far=0.1)
    for name in (*matching.COUNTS, *matching.FIGURES):
        assert np.array_equal(getattr(cal, name), getattr(expected, name)), name
    assert cal.precision_threshold == pytest.approx(expected.precision_threshold, abs=1e-4)
    assert cal.far_threshold == pytest.approx(expected.far_threshold, abs=1e-4)
