"""``lossweave train``'s batches follow ``fit``'s epoch (``SyncEpoch``, ``FollowEpoch``), so a resumed run keeps the batch order."""

import dataclasses
import json

import keras
import numpy as np
import pytest

import lossweave as lw
from conftest import one_backend
from lossweave.cli import config_file, fitting, main, prepare, resume
from lossweave.cli.batches import FollowEpoch, ShuffledBatches
from lossweave.cli.callbacks import KeepBest


class _Stop(Exception):
    pass


@one_backend
def test_train_gives_fit_a_sync_epoch_on_its_balanced_batches(monkeypatch):
    config, _ = config_file.resolve_config({"data": "digits", "loss": "triplet", "classes-per-batch": "5",
                                          "samples-per-class": "4", "center-weight": "0"})
    dataset = prepare.load_data(config)
    calls = []

    def fit(self, *args, **kwargs):  # stop before training: only the arguments matter here
        calls.append(kwargs)
        raise _Stop

    monkeypatch.setattr(lw.Objective, "fit", fit)
    with pytest.raises(_Stop):
        fitting.fit_and_evaluate(config, dataset, verbose=0)
    (kwargs,) = calls
    sync, keep = kwargs["callbacks"]  # no backup here: the best epoch is kept in memory
    assert isinstance(sync, lw.data.SyncEpoch) and sync.batches is kwargs["x"]
    assert isinstance(keep, KeepBest) and keep.path is None
    plain = prepare.training_batches(dataclasses.replace(config, classes_per_batch=None), dataset)
    (follow,) = prepare.fit_callbacks(plain)
    assert isinstance(plain, ShuffledBatches) and isinstance(follow, FollowEpoch) and follow.batches is plain


def test_a_resumed_fit_draws_the_batches_of_its_epoch():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 6)
    x = rng.normal(size=(24, 3)).astype("float32")

    def run(initial_epoch):
        batches = lw.data.ClassBalancedBatches(x, y, classes_per_batch=2, samples_per_class=3, seed=1)
        drawn = []
        record = keras.callbacks.LambdaCallback(on_train_batch_begin=lambda batch, logs: drawn.append(batches.epoch))
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4)])
        model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(batches, epochs=2, initial_epoch=initial_epoch, shuffle=False, verbose=0,
                  callbacks=prepare.fit_callbacks(batches) + [record])
        return drawn, len(batches)

    straight, per_epoch = run(0)
    resumed, _ = run(1)  # a new process's dataset starts at epoch 0; fit resumes at epoch 1
    assert straight == [0] * per_epoch + [1] * per_epoch
    assert resumed == [1] * per_epoch  # without SyncEpoch: epoch 0's batches again


def _error(argv, capsys):
    assert main(["train", *argv]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lossweave: error: "), lines
    return lines[0]


@one_backend
def test_resume_refuses_what_it_cannot_continue(tmp_path, capsys):
    assert "no such run folder" in _error(["--resume", str(tmp_path / "nowhere")], capsys)
    (tmp_path / "empty").mkdir()
    line = _error(["--resume", str(tmp_path / "empty")], capsys)
    assert "no backup in this folder" in line and "backup/config.toml" in line

    run = tmp_path / "run"  # an unfinished run: its backup holds the resolved configuration
    config, _ = config_file.resolve_config({"epochs": "4", "seed": "2", "out": str(run)})
    resume.Backup.start(config, argv=["train", "--epochs", "4", "--seed", "2", "--out", str(run)])
    line = _error(["--resume", str(run), "--epochs", "5", "--seed", "2"], capsys)
    assert "--epochs 5 (the run has 4)" in line and "--seed" not in line and "leave it out" in line
    assert "--out" in _error(["--resume", str(run), "--out", str(tmp_path / "other")], capsys)
    assert "cannot be combined with --resume" in _error(["--resume", str(run), "--config", "x.toml"], capsys)
    line = _error(["--out", str(run), "--epochs", "4"], capsys)  # a new run would restore the old backup
    assert "holds the backup of an unfinished run" in line and f"--resume {run}" in line

    saved, argv, _, backup = resume.resume(run, {"quiet": True, "out": str(run)})
    assert (saved.epochs, saved.seed, saved.quiet, backup.epochs_done) == (4, 2, True, 0)
    assert argv == ["train", "--epochs", "4", "--seed", "2", "--out", str(run)]


@one_backend
def test_ctrl_c_names_the_resume_command_and_the_continued_run_restores_the_best_epoch(tmp_path, capsys, monkeypatch):
    """Ctrl-C after epoch 2 of 3 prints the command that continues the run; continued, it ends with
    the weights of the best epoch, which only the interrupted process saw (epoch 2: the least val_loss)."""
    val_loss = {0: 3.0, 1: 1.0, 2: 2.0}  # what KeepBest sees: the training itself only improves in 3 epochs
    keep_epoch_end = KeepBest.on_epoch_end
    monkeypatch.setattr(KeepBest, "on_epoch_end",
                        lambda self, epoch, logs=None: keep_epoch_end(self, epoch, {**logs, "val_loss": val_loss[epoch]}))
    backup_epoch_end = keras.callbacks.BackupAndRestore.on_epoch_end

    def interrupt(self, epoch, logs=None):
        backup_epoch_end(self, epoch, logs)
        if epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(keras.callbacks.BackupAndRestore, "on_epoch_end", interrupt)
    run = tmp_path / "run dir"  # a space: the printed command quotes it
    assert main(["train", "--epochs", "3", "--batch-size", "359", "--seed", "3", "--quiet", "--out", str(run)]) == 130
    err = capsys.readouterr().err.strip()
    assert err == f"lossweave: interrupted; continue the run with: lossweave train --resume '{run}'"
    with np.load(run / "backup" / resume.BEST) as saved:
        assert int(saved["epoch"]) == 1 and float(saved["best"]) == 1.0
        best = [saved[f"v{i}"] for i in range(len(saved.files) - 2)]

    monkeypatch.setattr(keras.callbacks.BackupAndRestore, "on_epoch_end", backup_epoch_end)
    assert main(["train", "--resume", str(run), "--no-quiet"]) == 0
    out = capsys.readouterr().out
    assert "kept the weights of epoch 2 of 3, the lowest validation loss (--no-keep-best keeps the last" in out
    metrics = json.loads((run / "metrics.json").read_text())
    assert (metrics["kept_epoch"], metrics["epochs"]) == (2, 3)
    objective = keras.saving.load_model(run / "objective.keras")
    assert len(objective.weights) == len(best)
    for variable, value in zip(objective.weights, best):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable), value, err_msg=variable.path)
