"""The tool's own ``fit`` callbacks: the backup's progress file, the best epoch kept, the TensorBoard scalars.

Imported after ``--backend`` is applied (it imports Keras).
"""

import io
import json
import os
import pathlib
import time

import keras
import numpy as np

VALIDATION_PREFIX = "val_"


def _write_atomically(path, content):
    """``content`` (bytes, or text as UTF-8) into ``path``."""
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    os.replace(partial, path)  # a kill leaves the old file or the new one, never half of one


class ProgressFile(keras.callbacks.Callback):
    """Writes ``{"history": ..., "seconds": ...}`` of the run so far to ``path`` after every epoch.

    Args:
        path: the JSON file (replaced whole each epoch).
        history: the history of the epochs trained before this ``fit`` (a continued run).
        seconds: their training time.
    """

    def __init__(self, path, history=None, seconds=0.0):
        super().__init__()
        self.path = pathlib.Path(path)
        self.before = {key: list(values) for key, values in (history or {}).items()}
        self.seconds = float(seconds)

    def on_train_begin(self, logs=None):
        self.started = time.perf_counter()
        self.history = {key: list(values) for key, values in self.before.items()}

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        seconds = self.seconds + time.perf_counter() - self.started
        _write_atomically(self.path, json.dumps({"history": self.history, "seconds": seconds}))


class KeepBest(keras.callbacks.Callback):
    """Puts back, when ``fit`` ends, the variables of the epoch with the lowest ``monitor``.

    Every variable of the model (for an Objective: the user's model, the
    terms' centers and class tables, the weighting's state) is copied to the
    host at each new lowest value; the optimizer's are not (training is over).
    With ``path`` the copy is also written there, so a run continued in a new
    process (``lossweave.cli.resume``) knows its best epoch so far. An epoch
    whose ``monitor`` is missing or not finite is never kept; if none is, the
    last epoch's variables stay.

    Args:
        path: an ``.npz`` file (replaced whole at each new best), or ``None``.
        monitor: the epoch log to minimize.

    Example:
        >>> keep = KeepBest()  # objective.fit(..., validation_data=..., callbacks=[keep])
        >>> keep.monitor, keep.best_epoch
        ('val_loss', None)
    """

    def __init__(self, path=None, monitor="val_loss"):
        super().__init__()
        self.path = None if path is None else pathlib.Path(path)
        self.monitor = monitor
        self.best, self.best_epoch, self.values = np.inf, None, None

    def on_train_begin(self, logs=None):
        if self.path is not None and self.path.is_file():  # a continued run: its best epoch so far
            with np.load(self.path) as saved:
                self.best, self.best_epoch = float(saved["best"]), int(saved["epoch"])
                self.values = [saved[f"v{i}"] for i in range(len(saved.files) - 2)]

    def on_epoch_end(self, epoch, logs=None):
        value = float((logs or {}).get(self.monitor, np.nan))
        if not np.isfinite(value) or value >= self.best:
            return
        self.best, self.best_epoch = value, int(epoch)
        self.values = [keras.ops.convert_to_numpy(v) for v in self.model.weights]
        if self.path is not None:
            buffer = io.BytesIO()
            np.savez(buffer, best=value, epoch=epoch, **{f"v{i}": a for i, a in enumerate(self.values)})
            _write_atomically(self.path, buffer.getvalue())

    def on_train_end(self, logs=None):
        if self.values is not None:
            for variable, value in zip(self.model.weights, self.values):
                variable.assign(value)


class EpochScalars(keras.callbacks.Callback):
    """Writes every number of ``fit``'s epoch logs to TensorBoard event files, under its own name.

    Training values (``loss``, ``loss/<term>``, ``weight/<term>``,
    ``cosine/<a>/<b>``, metrics) go to ``log_dir/train``, validation values
    (``val_loss/<term>``, ...) to ``log_dir/validation`` without their
    ``val_`` prefix, so TensorBoard draws a term's training and validation
    loss in one chart. The step is the epoch (0-based), as
    ``keras.callbacks.TensorBoard``'s; a continued run appends its epochs.
    Needs TensorFlow (``tf.summary``) on any backend, not the ``tensorboard``
    package (which only the viewer needs).

    Args:
        log_dir: the folder of the two runs.

    Example:
        >>> callback = EpochScalars("runs/tensorboard")  # objective.fit(..., callbacks=[callback])
        >>> callback.log_dir
        'runs/tensorboard'
    """

    def __init__(self, log_dir):
        super().__init__()
        self.log_dir = os.fspath(log_dir)
        self._writers = {}

    def on_train_begin(self, logs=None):
        import tensorflow as tf
        from tensorflow.core.framework import summary_pb2

        self._tf = tf
        # tf.summary.scalar needs the tensorboard package; the core tf.summary.write with the
        # scalars plugin's metadata writes the same records with TensorFlow alone.
        self._metadata = summary_pb2.SummaryMetadata(
            plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"),
            data_class=summary_pb2.DATA_CLASS_SCALAR,
        ).SerializeToString()
        self._writers = {run: tf.summary.create_file_writer(os.path.join(self.log_dir, run))
                         for run in ("train", "validation")}

    def on_epoch_end(self, epoch, logs=None):
        by_run = {"train": {}, "validation": {}}
        for key, value in (logs or {}).items():
            if key.startswith(VALIDATION_PREFIX):
                by_run["validation"][key[len(VALIDATION_PREFIX):]] = value
            else:
                by_run["train"][key] = value
        for run, values in by_run.items():
            self._write(run, values, epoch)

    def on_train_end(self, logs=None):
        for writer in self._writers.values():
            writer.close()
        self._writers = {}

    def _write(self, run, values, step):
        with self._writers[run].as_default():
            for name, value in values.items():
                self._tf.summary.write(name, self._tf.constant(float(value), "float32"), step=int(step),
                                       metadata=self._metadata)
        self._writers[run].flush()


class StepScalars(EpochScalars):
    """:class:`EpochScalars`, plus the training numbers every ``every`` steps as ``steps/<name>``.

    A step's value is what the progress bar shows: the running mean over the
    epoch so far (so at an epoch's last step it is the epoch's value). The
    step counts from the start of the run (``epoch x steps per epoch +
    batch + 1``), so a continued run goes on from where it stopped. Reading the
    numbers every ``every`` steps is the only cost (a device-to-host copy).

    Args:
        log_dir: the folder of the two runs.
        every: write the training numbers every this many steps (>= 1).

    Example:
        >>> StepScalars("runs/tensorboard", every=50).every
        50
    """

    def __init__(self, log_dir, every):
        super().__init__(log_dir)
        self.every = int(every)
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = int(epoch)

    def on_train_batch_end(self, batch, logs=None):
        step = self._epoch * self.params["steps"] + batch + 1
        if step % self.every == 0 and logs:
            self._write("train", {f"steps/{name}": value for name, value in logs.items()}, step)
