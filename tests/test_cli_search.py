"""``lossweave train``'s index and calibration, and ``lossweave search`` on them.

One short training (1 epoch) checked from every side in a single test
(a module fixture would train once per xdist worker), in the JAX pass only:
the index, the calibration and the report are NumPy and matplotlib over the
run's arrays; the index's own backends are tested in tests/test_retrieval_*.
The usage errors stop before any Keras work.
"""

import csv
import json
import re

import keras
import numpy as np
import pytest
from conftest import one_backend
from test_retrieval_matching import numpy_nearest

from lossweave import data
from lossweave.cli import main

pytestmark = one_backend
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ROW = re.compile(r"^\s+(\d+)  (\S+)\s+(\S+)  (.*)$")


def test_train_keeps_an_index_and_its_calibration_and_search_answers_from_them(tmp_path, capsys):
    run = tmp_path / "run"
    status = main(["train", "--epochs", "1", "--batch-size", "359", "--embedding-dim", "8",
                   "--target-precision", "0.9", "--quiet", "--out", str(run)])
    assert status == 0, capsys.readouterr().err
    capsys.readouterr()
    dataset = data.load("digits", seed=0)
    model = keras.saving.load_model(run / "model.keras")
    index = _check_index(run, dataset, model)
    saved = _check_calibration(run, index, dataset, model)
    _check_report(run, saved)
    queries = tmp_path / "queries.npz"
    y = dataset.y_test[:12].copy()
    y[-1] = 42  # a label that is no class of the run: should be answered unknown
    np.savez(queries, x=dataset.x_test[:12], y=y)
    expected = _expected_answers(index, model, dataset.x_test[:12], saved)
    _check_search(run, queries, y, expected, saved, capsys, tmp_path)


def _check_index(run, dataset, model):
    from lossweave.retrieval import Index

    index = Index.load(run / "index.npz")
    assert len(index) == len(dataset.y_train) and index.metric == "cosine"
    assert np.array_equal(np.asarray(index.labels), dataset.y_train)
    embedding = model.predict(dataset.x_train, batch_size=359, verbose=0)["embedding"]
    assert np.allclose(np.asarray(index.embeddings), embedding, atol=1e-5)
    return index


def _check_calibration(run, index, dataset, model):
    from lossweave.retrieval import Calibration, calibrate

    saved = json.loads((run / "calibration.json").read_text())
    assert saved["class_names"] == list(dataset.class_names)
    queries = model.predict(dataset.x_val, batch_size=359, verbose=0)["embedding"]
    again = calibrate(index, queries, dataset.y_val, target_precision=0.9)
    stored = Calibration.from_dict(saved["calibration"])
    # The run embedded the validation rows in other batches than here: the last float32 bits differ, and the
    # index's float64 distances show it, so the curves agree to a tolerance, not bit for bit.
    _assert_close(stored.get_config(), again.get_config())
    assert stored.target_precision == 0.9 and len(stored.thresholds) > 10
    if again.precision_threshold is not None:
        assert saved["threshold_from"] == "precision"
        assert np.isclose(saved["threshold"], again.precision_threshold, atol=1e-5)
        assert again.at(saved["threshold"])["precision"] >= 0.9
    else:
        assert saved["threshold_from"] == "f1" and np.isclose(saved["threshold"], again.f1_threshold, atol=1e-5)
    return saved


def _assert_close(a, b):
    """Equal structures whose numbers agree within 1e-5."""
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            _assert_close(a[key], b[key])
    elif isinstance(a, (list, tuple)) and a and not isinstance(a[0], (int, float)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_close(x, y)
    elif isinstance(a, (int, float, list, tuple)) and not isinstance(a, bool):
        np.testing.assert_allclose(np.asarray(a, "float64"), np.asarray(b, "float64"), atol=1e-5, rtol=1e-5)
    else:
        assert a == b


def _check_report(run, saved):
    for name in ("calibration.png", "neighbors.png"):
        assert (run / name).read_bytes()[:8] == PNG_SIGNATURE, name
    page = (run / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 4  # features, losses, calibration curve, tiles
    assert "nearest training references" in page and "Open-set calibration" in page
    cells = dict(re.findall(r'data-key="([^"]+)">([^<]*)<', page))
    from lossweave.report import format_value

    assert cells["in use (lossweave search)/threshold"] == format_value(saved["threshold"])


def _expected_answers(index, model, x, saved):
    """The NumPy answer: the nearest reference by brute force, its class or unknown beyond the threshold."""
    queries = model.predict(x, verbose=0)["embedding"]
    distances, nearest = numpy_nearest(queries, np.asarray(index.embeddings), "cosine")
    assert np.all(np.abs(distances - saved["threshold"]) > 1e-6)  # no query on the edge of float32 rounding
    names = saved["class_names"]
    return [names[index.labels[n]] if d <= saved["threshold"] else "unknown" for d, n in zip(distances, nearest)]


def _check_search(run, queries, y, expected, saved, capsys, tmp_path):
    assert main(["search", str(run), "--data", str(queries), "--k", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("lossweave search: 12 queries") and f"{saved['threshold']:.6g}" in out[0]
    rows = [ROW.match(line) for line in out[2:14]]
    assert [int(r.group(1)) for r in rows] == list(range(12))
    assert [r.group(2) for r in rows] == expected
    assert all(len(r.group(4).split(" | ")) == 3 for r in rows)
    figures = out[14]
    labels = np.array([str(v) for v in y])
    right = np.array(expected) == labels
    accepted = np.array(expected) != "unknown"
    assert figures.startswith("12 labelled queries (1 of no class of the run)")
    tp, fp = int(np.sum(right & accepted)), int(np.sum(~right & accepted))
    precision = tp / (tp + fp) if tp + fp else 0.0
    assert f"precision {precision:.4f}" in figures

    # --out: JSON and CSV hold the same answers; --threshold inf answers every query with a class
    answers = tmp_path / "answers.json"
    assert main(["search", str(run), "--data", str(queries), "--out", str(answers), "--quiet", "--k", "3"]) == 0
    written = json.loads(answers.read_text())
    assert [a["answer"] for a in written["answers"]] == expected and written["k"] == 3
    assert written["evaluation"]["precision"] == pytest.approx(precision)
    assert all(len(a["neighbors"]) == 3 for a in written["answers"])
    assert capsys.readouterr().out.splitlines()[0] == f"answers: {answers}"  # --quiet: the path, then the figures
    table = tmp_path / "answers.csv"
    np.save(tmp_path / "x.npy", np.load(queries)["x"])
    assert main(["search", str(run), "--data", str(tmp_path / "x.npy"), "--out", str(table),
                 "--threshold", "inf", "--k", "3"]) == 0
    lines = list(csv.reader(table.open()))
    assert lines[0][:5] == ["query", "answer", "distance", "class_1", "distance_1"] and len(lines) == 13
    assert [line[1] for line in lines[1:]] == [line[3] for line in lines[1:]]  # the nearest class, always
    assert "labelled" not in capsys.readouterr().out  # no labels in an .npy

    # queries of another shape than the model's input
    np.savez(tmp_path / "wrong.npz", x=np.zeros((2, 10), "float32"))
    assert main(["search", str(run), "--data", str(tmp_path / "wrong.npz")]) == 2
    assert "shape (10,); the run's model takes (64,)" in capsys.readouterr().err


@pytest.mark.parametrize("setup, argv, message", [
    (None, ["--data", "q.npz"], "is not a folder"),
    ("empty", ["--data", "q.npz"], "has no model.keras, index.npz, calibration.json"),
    ("run", ["--data", "q.npz"], "q.npz: expected an .npz file, found no such file"),
    ("run", ["--data", "noxy.npz"], "expected an array 'x' of queries (and optionally 'y'), found: z (3,)"),
    ("run", ["--data", "q.npz", "--out", "answers.txt"], "--out answers.txt: expected a .json or .csv"),
    ("run", ["--data", "q.npz", "--k", "0"], "expected an integer >= 1; received '0'"),
    ("run", ["--data", "q.npz", "--threshold", "near"], "expected a distance threshold"),
    ("run", [], "the following arguments are required: --data"),
])
def test_bad_input_is_one_line_and_status_2(setup, argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    np.savez("noxy.npz", z=np.zeros(3))
    folder = tmp_path / "run"
    if setup is not None:
        folder.mkdir()
    if setup == "run":  # what check_run looks for; the errors come before any is read
        for name in ("model.keras", "calibration.json"):
            (folder / name).write_text("")
        (folder / "index.npz").write_text("")
    assert main(["search", str(folder), *argv]) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("lossweave: error: ") and captured.out == ""
    assert message in lines[0]


def test_query_labels_map_to_the_run_classes_by_name():
    from lossweave.cli.search import run_labels

    assert run_labels(np.array([10, 20, 30]), ("10", "20")).tolist() == [0, 1, -1]
    assert run_labels(np.array(["cat", "dog"]), ("dog", "cat")).tolist() == [1, 0]


class _Model:
    """Stands in for the run's model: the embedding is a fixed function of the input (or NaN)."""

    def __init__(self, broken=False):
        self.broken = broken

    def predict(self, x, batch_size=None, verbose=0):
        embedding = np.asarray(x, "float32")[:, :8] + 0.1
        return {"embedding": np.full_like(embedding, np.nan) if self.broken else embedding}


def _result(dataset, model):
    import types

    from lossweave.cli.options import TrainConfig

    return types.SimpleNamespace(config=TrainConfig(), dataset=dataset, objective=types.SimpleNamespace(model=model))


def test_write_retrieval_without_training(tmp_path):
    """The run folder's retrieval part on its own: tiles for image data only, a note instead of a crash."""
    import dataclasses

    from lossweave.cli.retrieval import write_retrieval
    from lossweave.retrieval import Index

    digits = data.load("digits", seed=0)
    paths, images, tables, notes = write_retrieval(tmp_path, _result(digits, _Model()), target_precision=0.5,
                                                   title="t")
    assert sorted(paths) == ["calibration.json", "calibration.png", "index.npz", "neighbors.png"] and not notes
    assert len(images) == 2 and tables[0][2][-1]["target"] == "in use (lossweave search)"
    assert len(Index.load(tmp_path / "index.npz")) == len(digits.y_train)
    features = dataclasses.replace(digits, name="npz")  # the same arrays, not known to be images: no tiles
    (tmp_path / "f").mkdir()
    paths, images, _, _ = write_retrieval(tmp_path / "f", _result(features, _Model()), target_precision=0.5,
                                          title="t")
    assert "neighbors.png" not in paths and len(images) == 1
    paths, images, tables, notes = write_retrieval(tmp_path / "n", _result(digits, _Model(broken=True)),
                                                   target_precision=0.5, title="t")
    assert (paths, images, tables) == ({}, [], []) and "NaN" in notes[0]
