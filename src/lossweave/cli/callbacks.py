"""The tool's own ``fit`` callbacks: the backup's progress file and the TensorBoard scalars.

Imported after ``--backend`` is applied (it imports Keras).
"""

import json
import os
import pathlib
import time

import keras

VALIDATION_PREFIX = "val_"


def _write_atomically(path, text):
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
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
