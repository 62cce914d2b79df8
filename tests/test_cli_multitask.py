"""``lossweave train --data multitask``: one head and one term per target, any gradient-level weighting.

The helpers of ``lossweave.cli.tasks`` are checked on their own (heads on the
trunk, terms, the test metrics against NumPy); every gradient-level name of
the registry builds its objective on the multi-task data (no training: each
strategy trains in ``tests/test_contract.py``); one short run goes end to end
(report figures of the weights and the gradient cosines). The command line
does not depend on the backend: one pass.
"""

import json
import math

import numpy as np
import pytest
from conftest import one_backend

from lossweave import data
from lossweave.cli import main, registry
from lossweave.cli import tasks as cli_tasks
from lossweave.cli import config_file, prepare
from lossweave.cli.models import build_mlp

TASKS = {"parity": 2, "ink": None, "top": None}
GRADIENT_LEVEL = [name for name, entry in registry.WEIGHTINGS.items() if entry.level == "gradient"]


def _numbers(tree, prefix=""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _numbers(value, f"{prefix}{key}/")
        else:
            yield f"{prefix}{key}", value


@pytest.fixture(scope="module")
def dataset():
    return data.load("multitask", seed=0, n=200)


@one_backend
def test_tasks_and_targets_of_a_multitask_and_a_plain_dataset(dataset):
    assert cli_tasks.extra_tasks(dataset) == TASKS
    for part in ("train", "val", "test"):
        y = cli_tasks.targets(dataset, part)
        assert set(y) == {"label", *TASKS}
        assert y["label"] is dataset.targets(part)["label"]
        assert all(len(v) == len(getattr(dataset, f"y_{part}")) for v in y.values())
    digits = data.load("digits", seed=0)
    assert cli_tasks.extra_tasks(digits) == {}
    assert set(cli_tasks.targets(digits, "test")) == {"label"}
    assert cli_tasks.targets(digits, "test")["label"] is digits.y_test


@one_backend
def test_heads_read_the_trunk_features_not_the_embedding():
    base = build_mlp((64,), 10, 2)
    model = cli_tasks.add_task_heads(base, TASKS)
    assert list(model.output) == ["embedding", "logits", "parity", "ink", "top"]
    assert [tuple(model.output[t].shape) for t in TASKS] == [(None, 2), (None, 1), (None, 1)]
    for name in TASKS:
        head = model.get_layer(f"task_{name}")
        (source,) = head._inbound_nodes[0].input_tensors
        assert source._keras_history[0].name == "hidden_2"  # the embedding layer's input
    # the same layers: the base model's weights are the new model's
    assert all(any(v is w for w in model.weights) for v in base.weights)
    assert cli_tasks.add_task_heads(base, {}) is base
    with pytest.raises(ValueError, match=r"the tasks \['logits'\] have the names of model outputs"):
        cli_tasks.add_task_heads(base, {"logits": 2})


@one_backend
def test_task_terms_and_test_metrics_against_numpy():
    import lossweave as lw

    terms = cli_tasks.task_terms(TASKS)
    assert isinstance(terms["parity"], lw.terms.SoftmaxCrossEntropy)
    assert isinstance(terms["ink"], lw.terms.Loss) and isinstance(terms["top"], lw.terms.Loss)
    assert {n: (t.on, t.target) for n, t in terms.items()} == {n: (n, n) for n in TASKS}

    rng = np.random.default_rng(0)
    outputs = {"parity": rng.normal(size=(50, 2)), "ink": rng.normal(size=(50, 1)),
               "top": 50 + 10 * rng.normal(size=(50, 1))}
    targets = {"parity": rng.integers(0, 2, size=50), "ink": rng.normal(size=(50, 1)),
               "top": 50 + 10 * rng.normal(size=(50, 1))}
    got = cli_tasks.task_metrics(outputs, targets, TASKS)
    hits = sum(int(np.argmax(outputs["parity"][i]) == targets["parity"][i]) for i in range(50))
    assert got["parity"] == {"accuracy": pytest.approx(hits / 50)}
    for name in ("ink", "top"):
        mae = sum(abs(outputs[name][i, 0] - targets[name][i, 0]) for i in range(50)) / 50
        assert got[name] == {"mae": pytest.approx(mae)}


@one_backend
@pytest.mark.parametrize("weighting", GRADIENT_LEVEL)
def test_every_gradient_level_name_builds_on_the_multitask_data(weighting, dataset):
    """Four terms (label, three tasks; no center term unless asked) and the trunk they share, found from the graph."""
    config, _ = config_file.resolve_config({"data": "multitask", "weighting": weighting})
    model = prepare.build_model(config, dataset)
    objective = prepare.objective_of(config, model, dataset)
    assert list(objective.terms) == ["softmax", *TASKS]
    assert objective.gradient_level
    assert sorted(objective.weighting.term_names) == sorted(objective.terms)
    shared = {path.split("/")[0] for path, _ in objective.gradient_plan().entries}
    assert shared == {"hidden_1", "hidden_2"}  # the trunk; the embedding is the label term's alone
    assert len(objective.cosine_pairs) == 6  # every pair of the 4 terms


@one_backend
def test_multitask_data_has_a_center_term_only_when_asked(dataset):
    for weighting in ("fixed", "mgda"):
        for given, center in (({}, False), ({"center": True}, True), ({"center-weight": "0.01", "center": True}, True)):
            if weighting != "fixed" and "center-weight" in given:
                continue
            config, _ = config_file.resolve_config({"data": "multitask", "weighting": weighting, **given})
            objective = prepare.objective_of(config, prepare.build_model(config, dataset), dataset)
            assert ("center" in objective.terms) == center, (weighting, given)
    # the registry's list of multi-task data sets is the data sets with targets beside the label
    bundled = [name for name in data.names() if not data.takes_path(name) and name != "mnist"]
    assert [n for n in bundled if cli_tasks.extra_tasks(data.load(n, seed=0))] == list(registry.MULTI_TASK_DATA)


@one_backend
def test_multitask_run_with_a_gradient_level_weighting(tmp_path, capsys, monkeypatch):
    from lossweave import report

    plotted = []
    plot = report.plot_loss_curves
    monkeypatch.setattr(report, "plot_loss_curves", lambda *a, **k: plotted.append(k["total"]) or plot(*a, **k))
    out = tmp_path / "run"
    status = main(["train", "--data", "multitask", "--weighting", "pcgrad", "--epochs", "2",
                   "--batch-size", "128", "--quiet", "--out", str(out)])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    metrics = json.loads((out / "metrics.json").read_text())
    for key, value in _numbers(metrics):
        assert isinstance(value, (int, float)) and math.isfinite(value), key
    terms = {"softmax", *TASKS}  # no center term unless --center asks for one
    assert set(metrics["final_weights"]) == set(metrics["test_losses"]) == terms
    assert set(metrics["tasks"]) == set(TASKS)
    assert 0.0 <= metrics["tasks"]["parity"]["accuracy"] <= 1.0
    assert metrics["tasks"]["ink"]["mae"] < 1.0 and metrics["tasks"]["top"]["mae"] > 0.0

    history = json.loads((out / "history.json").read_text())
    names = ["softmax", *TASKS]
    pairs = {f"cosine/{a}/{b}" for i, a in enumerate(names) for b in names[i + 1:]}
    assert pairs <= set(history) and all(len(history[p]) == 2 for p in pairs)
    assert all(-1.0 <= v <= 1.0 for p in pairs for v in history[p])
    page = (out / "report.html").read_text()
    for figure, caption in (("weights.png", "Weight of each term per epoch"),
                            ("cosines.png", "Cosine between the term gradients")):
        assert (out / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and caption in page
    assert 'data-key="tasks/top/mae"' in page
    assert plotted == ["sum of the terms"] and "test loss (sum of the terms)" in page  # pcgrad: the plain sum

    import keras

    model = keras.saving.load_model(out / "model.keras")
    predicted = model.predict(np.zeros((3, 64), "float32"), verbose=0)
    assert {k: v.shape for k, v in predicted.items()} == {
        "embedding": (3, 2), "logits": (3, 10), "parity": (3, 2), "ink": (3, 1), "top": (3, 1)}
