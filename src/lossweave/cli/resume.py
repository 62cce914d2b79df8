"""The backup a run keeps in its folder while it trains, and ``train --resume RUN``.

``RUN/backup/`` holds:

* ``config.toml``: the resolved configuration (backend included) and, in its
  ``[run]`` table, the command line, written before the first epoch;
* ``latest.weights.h5`` and ``training_metadata.json``:
  ``keras.callbacks.BackupAndRestore``'s weights (model, terms' centers and
  class weights, weighting and optimizer state, step counter) and epoch,
  with the previous epoch's copy beside them (``double_checkpoint``);
* ``progress.json``: the history of the epochs so far and their training time;
* ``best.npz`` (``--keep-best``): the variables of the epoch with the lowest
  validation loss so far (``lossweave.cli.callbacks.KeepBest``).

The data split and the batches depend on the seed and the epoch only
(``prepare.training_batches``), so a run continued from epoch ``e`` draws the
batches the uninterrupted run drew. The folder is removed once every file of
the run folder is written; a run folder without it is finished.
"""

import json
import os
import pathlib
import shutil

from lossweave.cli import UsageError
from lossweave.cli.config_file import config_toml, resolve_values
from lossweave.cli.options import OPTIONS, TrainConfig

BACKUP = "backup"
CONFIG = "config.toml"
PROGRESS = "progress.json"
KERAS_EPOCH = "training_metadata.json"  # written by keras.callbacks.BackupAndRestore
BEST = "best.npz"
# Options that may differ when a run is continued: they change what is shown, not what is computed.
FREE_ON_RESUME = ("quiet",)


def backup_folder(out):
    """``out/backup``."""
    return pathlib.Path(out) / BACKUP


def check_new(out):
    """A new run may not start in a folder holding an unfinished run's backup (it would restore it).

    Raises:
        UsageError: ``out/backup`` exists.
    """
    folder = backup_folder(out)
    if folder.exists():
        raise UsageError(
            f"--out: {str(out)!r} holds the backup of an unfinished run ({folder}); continue it "
            f"with --resume {out}, or delete {folder} to start over.")


class Backup:
    """The backup of the run in ``out``: ``fit``'s callbacks, and what the epochs so far left.

    Args:
        out: the run folder.
        history: ``{key: values}`` of the epochs already trained (continuing a run).
        seconds: their training time.
    """

    def __init__(self, out, history=None, seconds=0.0):
        self.folder = backup_folder(out)
        self.history = {key: list(values) for key, values in (history or {}).items()}
        self.seconds = float(seconds)

    @property
    def epochs_done(self):
        """Epochs already trained."""
        return len(self.history.get("loss", ()))

    @classmethod
    def start(cls, config, *, argv=(), config_file=None):
        """A new backup in ``config.out``: writes ``backup/config.toml``.

        Raises:
            UsageError: the run folder already holds the backup of an unfinished run.
        """
        check_new(config.out)
        folder = backup_folder(config.out)
        folder.mkdir(parents=True)
        run_info = {"argv": list(argv), "config-file": None if config_file is None else str(config_file)}
        (folder / CONFIG).write_text(config_toml(config, run_info), encoding="utf-8")
        return cls(config.out)

    def keep_best(self):
        """The ``KeepBest`` callback of the run, its best epoch so far in ``best.npz``."""
        from lossweave.cli.callbacks import KeepBest

        return KeepBest(self.folder / BEST)

    def callbacks(self, *between):
        """``fit``'s callbacks: the progress file first, then ``between``, then Keras's weights and epoch.

        In that order an epoch's history is on disk before its weights, so a
        run killed between the two has at least as many epochs of history as
        of weights (the extra ones are dropped when it is continued). A best
        epoch saved by ``between`` (:meth:`keep_best`) whose weights were not
        is trained again, to the same numbers, when the run is continued.
        """
        import keras

        from lossweave.cli.callbacks import ProgressFile

        return [ProgressFile(self.folder / PROGRESS, self.history, self.seconds), *between,
                keras.callbacks.BackupAndRestore(os.fspath(self.folder), double_checkpoint=True,
                                                 delete_checkpoint=False)]

    def whole_run(self, history, seconds):
        """``(history, seconds)`` of the whole run from those of the ``fit`` that continued it."""
        keys = list(self.history) + [key for key in history if key not in self.history]
        merged = {key: self.history.get(key, []) + list(history.get(key, [])) for key in keys}
        return merged, self.seconds + seconds

    def remove(self):
        """Delete the backup: the run is finished."""
        shutil.rmtree(self.folder, ignore_errors=True)


def _keras_epoch(folder):
    path = folder / KERAS_EPOCH
    if not path.exists():
        return 0
    return int(json.loads(path.read_text(encoding="utf-8"))["epoch"])


def _contradictions(saved, given, out):
    """The command-line options whose values differ from the saved run's."""
    checked, _ = resolve_values(given, None, [o for o in OPTIONS if o.name in given])
    wrong = []
    for option in OPTIONS:
        if option.name not in given or option.name in FREE_ON_RESUME:
            continue
        value = checked[option.dest]
        if option.name == "out":
            if pathlib.Path(value).resolve() != pathlib.Path(out).resolve():
                wrong.append(f"--out {value} (the run folder is {out})")
        elif value != getattr(saved, option.dest):
            wrong.append(f"--{option.name} {given[option.name]} (the run has {getattr(saved, option.dest)!r})")
    return wrong


def resume(out, given, config_file=None):
    """The saved configuration, command line and backup of the unfinished run in ``out``.

    Args:
        out: the run folder given to ``--resume``.
        given: ``{option name: value}`` of the other options on the command line:
            each must agree with the saved run's (``--quiet`` may differ).
        config_file: a ``--config`` file (refused: the run has its configuration).

    Returns:
        ``(config, argv, saved_config_file, backup)``.

    Raises:
        UsageError: no such folder, no backup in it, a finished run, or
            options that contradict the saved configuration.
    """
    folder = backup_folder(out)
    where = f"--resume {out}"
    if config_file is not None:
        raise UsageError(f"{where}: --config {config_file} cannot be combined with --resume; the run "
                         f"continues with its own configuration ({folder / CONFIG}).")
    if not pathlib.Path(out).is_dir():
        raise UsageError(f"{where}: no such run folder.")
    if not (folder / CONFIG).is_file():
        if (pathlib.Path(out) / "metrics.json").is_file():
            raise UsageError(f"{where}: the run is finished (metrics.json is written, no backup is left); "
                             f"start a new one with --out NEW_DIR (--config {pathlib.Path(out) / CONFIG} "
                             "repeats it).")
        raise UsageError(f"{where}: no backup in this folder (expected {folder / CONFIG}, which "
                         "lossweave train --out writes before its first epoch).")
    values, _ = resolve_values({}, folder / CONFIG, OPTIONS)
    saved = TrainConfig(**{**values, "out": str(out), **({"quiet": given["quiet"]} if "quiet" in given else {})})
    wrong = _contradictions(saved, given, out)
    if wrong:
        raise UsageError(f"{where}: {'; '.join(wrong)}: contradicts the saved configuration "
                         f"({folder / CONFIG}); leave it out to continue the run as it started.")
    import tomllib

    run_info = tomllib.loads((folder / CONFIG).read_text(encoding="utf-8")).get("run", {})
    done = _keras_epoch(folder)
    history, seconds = {}, 0.0
    if (folder / PROGRESS).is_file():
        progress = json.loads((folder / PROGRESS).read_text(encoding="utf-8"))
        history, seconds = progress["history"], progress["seconds"]
    if len(history.get("loss", ())) < done:
        raise UsageError(f"{where}: the backup is inconsistent ({done} epochs of weights, "
                         f"{len(history.get('loss', ()))} of history in {folder / PROGRESS}).")
    history = {key: values[:done] for key, values in history.items()}  # epochs whose weights were saved
    return saved, run_info.get("argv", []), run_info.get("config-file"), Backup(out, history, seconds)


__all__ = ["BACKUP", "Backup", "backup_folder", "check_new", "resume"]
