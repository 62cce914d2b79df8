"""``lossweave.metrics.TupleStatistics``: pair distances, hardest pairs and active tuples of a tuple loss.

The formulas are checked against NumPy references written from their
definitions (the batch-hard distances of Hermans et al. 2017, Eq. 5; a
contrastive pair or a batch-all triplet is active when its hinge is > 0;
a multi-similarity anchor when the mining of Wang et al. 2019, Eq. 9-10,
keeps a pair) on one backend; a short ``fit`` on every backend shows the
statistics in the history, equal to the metric on the same embeddings.
"""

import keras
import numpy as np
import pytest
from conftest import one_backend, to_numpy

import lossweave as lw
from lossweave import report
from lossweave.metrics.tuples import STATISTICS


def _euclidean(x):
    return np.sqrt(np.maximum(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1), 0.0))


def _cosine_similarity(x):
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    return unit @ unit.T


def _masks(y, w):
    usable = w != 0
    same = y[:, None] == y[None, :]
    both = usable[:, None] & usable[None, :] & ~np.eye(len(y), dtype=bool)
    return same & both, ~same & both


def _distances(values, y, w, inverted):
    """``(totals, counts)`` of the four distance statistics, from their definitions."""
    positives, negatives = _masks(y, w)
    totals, counts = [], []
    for mask in (positives, negatives):
        totals.append(sum(w[a] * values[a, mask[a]].sum() for a in range(len(y))))
        counts.append(sum(w[a] * mask[a].sum() for a in range(len(y))))
    # hardest: the farthest positive (a similarity: the smallest), the nearest negative (the largest)
    far, near = (np.min, np.max) if inverted else (np.max, np.min)
    for mask, pick in ((positives, far), (negatives, near)):
        rows = [a for a in range(len(y)) if mask[a].any()]
        totals.append(sum(w[a] * pick(values[a, mask[a]]) for a in rows))
        counts.append(sum(w[a] for a in rows))
    return totals, counts


def _contrastive_active(x, y, w, pos_margin, neg_margin):
    d = _euclidean(x)
    positives, negatives = _masks(y, w)
    active = (positives & (d > pos_margin)) | (negatives & (d < neg_margin))
    return (w[:, None] * active).sum(), (w[:, None] * (positives | negatives)).sum()


def _triplet_active(x, y, w, margin):
    d = _euclidean(x)
    positives, negatives = _masks(y, w)
    active = total = 0.0
    for a in range(len(y)):
        for p in np.flatnonzero(positives[a]):
            for n in np.flatnonzero(negatives[a]):
                total += w[a]
                active += w[a] * (d[a, p] - d[a, n] + margin > 0)
    return active, total


def _multi_similarity_active(x, y, w, epsilon):
    s = _cosine_similarity(x)
    positives, negatives = _masks(y, w)
    active = total = 0.0
    for a in range(len(y)):
        if w[a] == 0:
            continue
        total += w[a]
        pos, neg = s[a, positives[a]], s[a, negatives[a]]
        if pos.size and neg.size:
            kept = (neg + epsilon > pos.min()).any() or (pos - epsilon < neg.max()).any()  # Eq. 9, Eq. 10
            active += w[a] * kept
    return active, total


def _batches():
    rng = np.random.default_rng(4)
    found = []
    for _ in range(2):
        x = rng.normal(size=(12, 3)).astype("float32")
        y = rng.integers(0, 3, 12).astype("int32")
        w = rng.uniform(0.5, 2.0, 12).astype("float32")
        w[[2, 7]] = 0.0  # left out of every pair, as anchor and as partner
        found.append((x, y, w))
    return found


CASES = {
    "contrastive": (lambda: lw.terms.ContrastiveLoss(pos_margin=0.3, neg_margin=1.2), _euclidean, False,
                    lambda x, y, w: _contrastive_active(x, y, w, 0.3, 1.2)),
    "triplet_batch_all": (lambda: lw.terms.TripletLoss(margin=0.4, mining="batch-all"), _euclidean, False,
                          lambda x, y, w: _triplet_active(x, y, w, 0.4)),
    "multi_similarity": (lambda: lw.terms.MultiSimilarityLoss(epsilon=0.1), _cosine_similarity, True,
                         lambda x, y, w: _multi_similarity_active(x, y, w, 0.1)),
}


@one_backend
@pytest.mark.parametrize("case", sorted(CASES))
def test_statistics_equal_their_numpy_definitions_over_two_weighted_batches(case):
    make, values_of, inverted, active_of = CASES[case]
    metric = lw.metrics.TupleStatistics(make(), name="t")
    totals, counts = np.zeros(5), np.zeros(5)
    for x, y, w in _batches():
        metric.update_state(y, x, sample_weight=w)
        batch_totals, batch_counts = _distances(values_of(x), y, w, inverted)
        active, tuples = active_of(x, y, w)
        totals += [*batch_totals, active]
        counts += [*batch_counts, tuples]
    expected = totals / counts
    result = {k: float(v) for k, v in metric.result().items()}
    assert list(result) == [f"t/{s}" for s in STATISTICS]
    np.testing.assert_allclose(list(result.values()), expected, rtol=1e-5, atol=1e-6)
    assert 0.0 < expected[4] < 1.0 or case == "multi_similarity"  # the active fraction is not trivially 0 or 1
    # Weights all equal to c give the unweighted statistics; reset_state starts over.
    metric.reset_state()
    assert all(np.isnan(float(v)) for v in metric.result().values())
    x, y, _ = _batches()[0]
    metric.update_state(y, x, sample_weight=np.full(12, 3.0, "float32"))
    scaled = [float(v) for v in metric.result().values()]
    metric.reset_state()
    metric.update_state(y, x)
    np.testing.assert_allclose(scaled, [float(v) for v in metric.result().values()], rtol=1e-6, atol=1e-7)


@one_backend
def test_a_collapsed_embedding_reads_as_collapse():
    """Every row at one point: both distances 0, every contrastive negative pair and triplet active."""
    x = np.ones((8, 4), "float32")
    y = np.arange(8) % 2
    for term in (lw.terms.ContrastiveLoss(neg_margin=1.0), lw.terms.TripletLoss(margin=0.2, mining="batch-all")):
        metric = lw.metrics.TupleStatistics(term)
        metric.update_state(y, x)
        result = {k.split("/")[1]: float(v) for k, v in metric.result().items()}
        assert result["positive_distance"] == pytest.approx(0.0, abs=1e-6)
        assert result["hardest_negative"] == pytest.approx(0.0, abs=1e-6)
        # contrastive: the 32 negative pairs are active of 56 (the 24 positive ones at d = 0 <= pos_margin are not)
        expected = 32 / 56 if isinstance(term, lw.terms.ContrastiveLoss) else 1.0
        assert result["active_fraction"] == pytest.approx(expected)


@one_backend
def test_a_term_without_tuples_is_refused():
    with pytest.raises(TypeError, match="expected a tuple loss"):
        lw.metrics.TupleStatistics(lw.terms.SoftmaxCrossEntropy())


def test_fit_logs_the_statistics_of_each_epoch():
    """One batch an epoch: the first epoch's values are those of the initial model's embeddings."""
    keras.utils.set_random_seed(2)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 5)).astype("float32")
    y = (np.arange(16) % 4).astype("int32")
    inputs = keras.Input((5,))
    model = keras.Model(inputs, {"embedding": keras.layers.Dense(3)(inputs)})
    term = lw.terms.TripletLoss(margin=0.5, miner=lw.miners.BatchHardMiner())
    before = to_numpy(model(x)["embedding"])
    objective = lw.Objective(model, {"triplet": term})
    objective.compile(optimizer=keras.optimizers.SGD(0.1),
                      metrics={"embedding": [lw.metrics.TupleStatistics(term, name="tuples")]})
    history = objective.fit(x, {"label": y}, batch_size=16, epochs=2, verbose=0).history
    reference = lw.metrics.TupleStatistics(term)
    reference.update_state(y, before)
    for statistic in STATISTICS:
        values = history[f"tuples/{statistic}"]
        assert len(values) == 2 and np.all(np.isfinite(values)), (statistic, values)
        assert values[0] == pytest.approx(float(reference.result()[f"tuples/{statistic}"]), rel=1e-5, abs=1e-6)
    assert history["tuples/hardest_positive"][0] >= history["tuples/positive_distance"][0]
    assert history["tuples/hardest_negative"][0] <= history["tuples/negative_distance"][0]


@one_backend
def test_the_report_draws_the_statistics_over_epochs(tmp_path):
    history = {"loss": [1.0, 0.5], **{f"tuples/{s}": [0.5, 0.4] for s in STATISTICS},
               **{f"val_tuples/{s}": [0.6, 0.3] for s in STATISTICS}}
    assert report.tuple_statistics_names(history) == ["tuples"]
    path = tmp_path / "tuples.png"
    figure = report.plot_tuple_curves(history, path=path, title="run")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(figure.axes) == 2  # distances; active fraction
    with pytest.raises(ValueError, match="no tuple statistics"):
        report.plot_tuple_curves({"loss": [1.0]})


@one_backend
def test_a_cli_run_shows_the_statistics_in_tensorboard_and_the_report(tmp_path, capsys):
    """``lossweave train --loss triplet``: the statistics in history.json, the TensorBoard scalars, tuples.png."""
    import json

    tf = pytest.importorskip("tensorflow")
    from lossweave.cli import main

    out, logs = tmp_path / "run", tmp_path / "tensorboard"
    status = main(["train", "--loss", "triplet", "--epochs", "1", "--batch-size", "64", "--quiet",
                   "--out", str(out), "--tensorboard", str(logs)])
    assert status == 0, capsys.readouterr().err
    history = json.loads((out / "history.json").read_text())
    tags = set()
    for path in (logs / "train").glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            tags.update(value.tag for value in event.summary.value)
    for statistic in STATISTICS:
        assert f"tuples/{statistic}" in history and f"val_tuples/{statistic}" in history, statistic
        assert f"tuples/{statistic}" in tags, (statistic, sorted(tags))
    assert (out / "tuples.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Pair distances and active tuples" in (out / "report.html").read_text()


@one_backend
def test_multi_hot_rows_are_paired_by_the_term_rule():
    """Multi-hot labels: the positives are the term's (``min_jaccard``), shares-any by default."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(6, 3)).astype("float32")
    y = np.array([[1, 1, 0], [1, 0, 0], [0, 1, 1], [0, 0, 1], [1, 1, 1], [0, 1, 0]])
    d = _euclidean(x.astype("float64"))
    shared, union = y @ y.T, (y[:, None, :] | y[None, :, :]).sum(-1)
    off = ~np.eye(6, dtype=bool)
    for rule, positives in ((None, (shared > 0) & off), (0.5, (shared / union >= 0.5) & off)):
        metric = lw.metrics.TupleStatistics(lw.terms.ContrastiveLoss(min_jaccard=rule))
        metric.update_state(y, x)
        got = {k.split("/")[1]: float(v) for k, v in metric.result().items()}
        np.testing.assert_allclose(got["positive_distance"], d[positives].mean(), rtol=1e-5)
        np.testing.assert_allclose(got["negative_distance"], d[(shared == 0) & off].mean(), rtol=1e-5)
