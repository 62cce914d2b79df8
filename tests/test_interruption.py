"""Interrupted training resumes exactly: save/load in a new process, and BackupAndRestore.

The Objective has a scheduled center weight (LinearWarmup over 20 steps, so the
schedule position matters), Adam (optimizer state matters) and the paper's
center update (non-trainable state matters). Data order is fixed (shuffle=False).
On CPU every backend is deterministic here: the comparisons are exact, or
within 1e-6 where noted.
"""

import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from interruption_common import data, objective, state

HERE = Path(__file__).parent
FIRST, MORE = 2, 2


def _assert_same_state(got, expected, atol):
    assert set(got) == set(expected), set(got) ^ set(expected)
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], atol=atol, rtol=0, err_msg=key)


def test_save_load_in_a_new_process_then_continue_equals_straight_through(tmp_path):
    x, y = data()
    straight = objective()
    history = straight.fit(x, {"label": y}, batch_size=16, epochs=FIRST + MORE, shuffle=False, verbose=0)
    expected = state(straight)
    assert int(keras.ops.convert_to_numpy(straight.step_counter)) == 4 * (FIRST + MORE)

    first = objective()
    first.fit(x, {"label": y}, batch_size=16, epochs=FIRST, shuffle=False, verbose=0)
    saved = os.fspath(tmp_path / "first.keras")
    first.save(saved)

    out = os.fspath(tmp_path / "resumed.npz")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run(
        [sys.executable, str(HERE / "interruption_run.py"), saved, str(MORE), out],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    resumed = dict(np.load(out))
    # The schedule resumed where it stopped: the logged center weight of the resumed
    # epochs is that of epochs FIRST+1.. of the straight run.
    np.testing.assert_allclose(resumed.pop("history/weight/center"), history.history["weight/center"][FIRST:], rtol=1e-6)
    np.testing.assert_allclose(resumed.pop("history/loss"), history.history["loss"][FIRST:], rtol=1e-5)
    resumed = {k: v for k, v in resumed.items() if not k.startswith("history/")}
    _assert_same_state(resumed, expected, atol=1e-6)


class _InterruptAfter(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise RuntimeError("interrupted")


def test_backup_and_restore_resumes_an_interrupted_fit(tmp_path):
    x, y = data()
    epochs = FIRST + MORE
    straight = objective()
    straight.fit(x, {"label": y}, batch_size=16, epochs=epochs, shuffle=False, verbose=0)
    expected = state(straight)

    backup = os.fspath(tmp_path / "backup")
    interrupted = objective()
    with pytest.raises(RuntimeError, match="interrupted"):
        interrupted.fit(
            x, {"label": y}, batch_size=16, epochs=epochs, shuffle=False, verbose=0,
            callbacks=[keras.callbacks.BackupAndRestore(backup), _InterruptAfter(FIRST - 1)],
        )
    # A new process would build a fresh Objective: so does this test.
    restarted = objective()
    history = restarted.fit(
        x, {"label": y}, batch_size=16, epochs=epochs, shuffle=False, verbose=0,
        callbacks=[keras.callbacks.BackupAndRestore(backup)],
    )
    assert len(history.history["loss"]) == MORE  # only the epochs that had not run
    _assert_same_state(state(restarted), expected, atol=1e-6)
