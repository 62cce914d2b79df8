"""``lossweave train --tensorboard DIR``: the event files hold every epoch's number under its log name.

One 2-epoch run with a gradient-level weighting (MGDA: learned weights and
gradient cosines) is read back with ``tf.compat.v1.train.summary_iterator``
and compared with ``history.json``: ``DIR/train`` has ``loss/<term>``,
``weight/<term>`` and ``cosine/<a>/<b>`` per epoch and, with
``--tensorboard-every``, ``steps/<name>`` every N steps; ``DIR/validation``
the ``val_`` numbers without their prefix.
"""

import json
import math

import numpy as np
import pytest
from conftest import one_backend

from lossweave.cli import main

TERMS = ("softmax", "center")


def _scalars(folder):
    """``{tag: {step: value}}`` of every event file in ``folder``."""
    tf = pytest.importorskip("tensorflow")
    found = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                assert value.metadata.plugin_data.plugin_name == "scalars", value.tag
                found.setdefault(value.tag, {})[event.step] = float(tf.make_ndarray(value.tensor))
    return found


@one_backend
def test_tensorboard_scalars_are_the_history(tmp_path, capsys):
    out, logs = tmp_path / "run", tmp_path / "tensorboard"
    # 1077 training rows in batches of 64: 17 steps an epoch, so steps 17 and 34 end the two epochs.
    status = main(["train", "--epochs", "2", "--batch-size", "64", "--weighting", "mgda",
                   "--quiet", "--out", str(out), "--tensorboard", str(logs), "--tensorboard-every", "17"])
    assert status == 0, capsys.readouterr().err
    history = json.loads((out / "history.json").read_text())
    train, validation = _scalars(logs / "train"), _scalars(logs / "validation")

    expected_train = {key: values for key, values in history.items() if not key.startswith("val_")}
    expected_validation = {key[len("val_"):]: values for key, values in history.items() if key.startswith("val_")}
    for term in TERMS:
        assert f"loss/{term}" in train and f"weight/{term}" in train and f"loss/{term}" in validation
    assert "cosine/softmax/center" in train
    steps = {tag[len("steps/"):]: train.pop(tag) for tag in list(train) if tag.startswith("steps/")}
    assert set(train) == set(expected_train) == set(steps) and set(validation) == set(expected_validation)
    for tag, values in expected_train.items():  # every 17 steps: the running mean, at each epoch's end
        assert sorted(steps[tag]) == [17, 34], tag
        np.testing.assert_allclose([steps[tag][17], steps[tag][34]], values, rtol=1e-6, err_msg=tag)
    for found, expected in ((train, expected_train), (validation, expected_validation)):
        for tag, values in expected.items():
            assert sorted(found[tag]) == [0, 1], tag  # one value per epoch, step = epoch
            np.testing.assert_allclose([found[tag][0], found[tag][1]], values, rtol=1e-6, err_msg=tag)

    # The run itself (MGDA's weights are a convex combination).
    metrics = json.loads((out / "metrics.json").read_text())
    weights = metrics["final_weights"]
    assert set(weights) == set(TERMS) and sum(weights.values()) == pytest.approx(1.0, abs=1e-4)
    numbers = [v for group in metrics.values() for v in (group.values() if isinstance(group, dict) else [group])
               if not isinstance(v, dict)]
    assert all(isinstance(v, (int, float)) and math.isfinite(v) for v in numbers), metrics
    assert 'tensorboard = "' in (out / "config.toml").read_text()


@one_backend
def test_tensorboard_without_tensorflow_says_what_to_install(tmp_path, capsys, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorflow" else find_spec(name, *a))
    assert main(["train", "--epochs", "1", "--out", str(tmp_path / "run"), "--tensorboard", str(tmp_path / "tb")]) == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith("lossweave: error: --tensorboard") and "needs TensorFlow" in line
    assert "pip install -c requirements/pins.txt tensorflow-cpu" in line
    assert not (tmp_path / "run").exists()  # stopped before anything was written
    assert main(["train", "--epochs", "1", "--out", str(tmp_path / "run"), "--tensorboard-every", "5"]) == 2
    assert "give --tensorboard DIR too" in capsys.readouterr().err
