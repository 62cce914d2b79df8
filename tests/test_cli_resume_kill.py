"""``lossweave train --resume RUN`` after a real SIGKILL ends where the run straight through ends.

A ``python -m lossweave train`` subprocess is killed once its backup holds
two epochs; ``--resume`` continues it (in this process) and the run folder
then has the straight run's weights, centers, optimizer state, history and
metrics, within the 1e-6 of tests/test_interruption.py. The bad uses of
``--resume`` stop with one line saying what to do.
"""

import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
from conftest import one_backend

from lossweave.cli import main

# A warm-up schedule (its position matters), the center update (non-trainable state) and Adam.
OPTIONS = ["--epochs", "12", "--batch-size", "359", "--center-weight", "0.01", "--center-warmup", "20", "--seed", "3",
           "--quiet"]  # 3 full batches an epoch: one shape to compile
ATOL = 1e-6


def _epochs_backed_up(run):
    path = run / "backup" / "training_metadata.json"
    try:
        return json.loads(path.read_text())["epoch"]
    except (OSError, ValueError, KeyError):  # not written yet, or being written
        return 0


def _kill_after_two_epochs(run):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND=keras.backend.backend())
    process = subprocess.Popen([sys.executable, "-m", "lossweave", "train", *OPTIONS, "--out", str(run)],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while _epochs_backed_up(run) < 2:
        assert process.poll() is None, f"the run ended before it was killed: {process.stderr.read()[-2000:]}"
        assert time.monotonic() < deadline, "no backup after 240 s"
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    process.stderr.close()
    assert process.returncode == -signal.SIGKILL
    return _epochs_backed_up(run)


def _state(run):
    """Every variable of the saved objective and its optimizer, by position."""
    objective = keras.saving.load_model(run / "objective.keras")
    values = [keras.ops.convert_to_numpy(v) for v in objective.weights]
    values += [keras.ops.convert_to_numpy(v) for v in objective.optimizer.variables]
    return values


def _numbers(tree, prefix=""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _numbers(value, f"{prefix}{key}/")
        elif key != "train_seconds":
            yield f"{prefix}{key}", value


@one_backend
def test_a_killed_run_resumed_ends_as_the_run_straight_through(tmp_path, capsys):
    killed = tmp_path / "killed"
    done = _kill_after_two_epochs(killed)
    assert 2 <= done < 12 and not (killed / "metrics.json").exists()
    assert main(["train", "--resume", str(killed), "--quiet"]) == 0
    assert not (killed / "backup").exists()  # finished: the backup is gone
    straight = tmp_path / "straight"
    assert main(["train", *OPTIONS, "--out", str(straight)]) == 0
    capsys.readouterr()

    history = json.loads((killed / "history.json").read_text())
    expected_history = json.loads((straight / "history.json").read_text())
    assert set(history) == set(expected_history) and len(history["loss"]) == 12
    for key, values in expected_history.items():
        np.testing.assert_allclose(history[key], values, atol=ATOL, rtol=0, err_msg=key)
    metrics = dict(_numbers(json.loads((killed / "metrics.json").read_text())))
    expected_metrics = dict(_numbers(json.loads((straight / "metrics.json").read_text())))
    assert metrics.keys() == expected_metrics.keys()
    for key, value in expected_metrics.items():
        assert metrics[key] == pytest.approx(value, abs=ATOL), key
    got, expected = _state(killed), _state(straight)
    assert len(got) == len(expected)
    for i, (a, b) in enumerate(zip(got, expected)):
        np.testing.assert_allclose(a, b, atol=ATOL, rtol=0, err_msg=f"variable {i}")
    config = (killed / "config.toml").read_text()
    assert f"resumed-at-epoch = {done}" in config and '"--center-warmup", "20"' in config

    # Resuming again: the run is finished.
    assert main(["train", "--resume", str(killed)]) == 2
    assert "the run is finished" in capsys.readouterr().err
