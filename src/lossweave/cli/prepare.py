"""Setting a run up: the backend, the seeds, the data and its batches, the model and the objective.

Keras is imported only inside functions: :func:`apply_backend` runs first.
"""

import os
import pathlib
import sys

import numpy as np

from lossweave import data
from lossweave.cli import PROG, UsageError, registry
from lossweave.cli.models import MODELS

_REEXEC_MARK = "_LOSSWEAVE_REEXEC_BACKEND"


def _launched_as_tool():
    script = pathlib.Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if script is None:
        return False
    return script.name == PROG or (script.name == "__main__.py" and script.parent.name == "lossweave")


def apply_backend(name, *, argv, from_process=False):
    """Select the Keras backend ``name`` before Keras is imported.

    If Keras is already loaded with another backend (something imported it
    before the command ran) and this is the ``lossweave`` program itself, the
    process is restarted with ``KERAS_BACKEND=name``; called in-process
    (``main(argv)``), that is a usage error.
    """
    if name is None:
        return
    if "keras" not in sys.modules:
        os.environ["KERAS_BACKEND"] = name
        return
    import keras

    current = keras.backend.backend()
    if current == name:
        return
    if from_process and _launched_as_tool() and os.environ.get(_REEXEC_MARK) != name:
        environment = {**os.environ, "KERAS_BACKEND": name, _REEXEC_MARK: name}
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, [sys.executable, "-m", "lossweave", *argv], environment)
    raise UsageError(
        f"--backend {name}: Keras is already loaded with the {current} backend in this "
        f"process; set KERAS_BACKEND={name} before starting Python."
    )


def set_seed(seed):
    """Seed Python, NumPy and the backend, like ``keras.utils.set_random_seed``.

    ``keras.utils.set_random_seed`` also seeds TensorFlow whenever it is
    installed, importing it (about 10 s) even on JAX or PyTorch. On those
    backends nothing here uses TensorFlow, so it is skipped: Keras's
    initializers draw their seeds from Python's ``random``, JAX's data
    iterator shuffles with NumPy and PyTorch's with ``torch``'s generator.
    """
    import importlib.util
    import random

    import keras

    backend = keras.backend.backend()
    tensorflow_cheap = "tensorflow" in sys.modules or importlib.util.find_spec("tensorflow") is None
    if backend == "tensorflow" or tensorflow_cheap:
        keras.utils.set_random_seed(seed)
        return
    random.seed(seed)
    np.random.seed(seed)
    if backend == "torch":
        import torch

        torch.manual_seed(seed)


def build_model(config, dataset):
    """The model of ``config``: a built-in one or the user's ``.keras`` file, re-wired (+ task heads)."""
    from lossweave.cli.models import load_user_model
    from lossweave.cli.objectives import has_logits_head
    from lossweave.cli.tasks import add_task_heads, extra_tasks

    logits = has_logits_head(config.loss)
    if config.model in MODELS:
        model = MODELS[config.model](dataset.input_shape, dataset.num_classes, config.embedding_dim, logits=logits)
    else:
        model = load_user_model(config.model, dataset.input_shape, dataset.num_classes,
                                embedding_output=config.embedding_output,
                                logits_output=config.logits_output, logits=logits)
    return add_task_heads(model, extra_tasks(dataset))  # a multi-task data set: one head per other target


def objective_of(config, model, dataset, steps_per_epoch=None):
    """``lossweave.cli.objectives.build_objective`` with every option of ``config``.

    ``steps_per_epoch`` defaults to the batches of ``--batch-size`` in the training part.
    """
    from lossweave.cli.tasks import extra_tasks

    from lossweave.cli.objectives import build_objective

    steps = steps_per_epoch or max(1, -(-len(dataset.y_train) // config.batch_size))
    return build_objective(
        model, dataset.num_classes, center=registry.has_center(config), center_weight=config.center_weight,
        alpha=config.alpha, loss=config.loss,
        weighting=config.weighting, steps_per_epoch=steps, center_warmup=config.center_warmup,
        scale=config.scale, margin=config.margin, combined_margins=config.combined_margins,
        sub_centers=config.sub_centers, mining=config.mining, memory=config.memory,
        tasks=extra_tasks(dataset),
    )


def training_batches(config, dataset):
    """The training data of ``config`` as a ``keras.utils.PyDataset`` whose batches depend on the epoch only.

    Class-balanced ``ClassBalancedBatches`` of ``--classes-per-batch`` x
    ``--samples-per-class``, else :class:`lossweave.cli.batches.ShuffledBatches`
    of ``--batch-size``. Either is drawn from ``(seed, epoch)``, so a run
    resumed at epoch ``e`` sees the batches the uninterrupted run saw
    (:func:`fit_callbacks` keeps them on ``fit``'s epoch).
    """
    from lossweave.cli.tasks import targets

    y = targets(dataset, "train")
    if config.classes_per_batch is None:
        from lossweave.cli.batches import ShuffledBatches

        return ShuffledBatches(dataset.x_train, y, batch_size=config.batch_size, seed=config.seed)
    return data.ClassBalancedBatches(
        dataset.x_train, y, classes_per_batch=config.classes_per_batch,
        samples_per_class=config.samples_per_class, seed=config.seed,
    )


def fit_callbacks(batches):
    """The callback that keeps ``batches`` (of :func:`training_batches`) on the epoch number of ``fit``.

    So a run resumed at epoch ``e`` (``fit(initial_epoch=e)``,
    ``keras.callbacks.BackupAndRestore``) draws the batches of epoch ``e``, as
    the uninterrupted run did.
    """
    if isinstance(batches, data.ClassBalancedBatches):
        return [data.SyncEpoch(batches)]
    from lossweave.cli.batches import FollowEpoch

    return [FollowEpoch(batches)]


def _shown(value):
    """An option's value as written on the command line (`` 8``, `` 1,0.3,0.2``; nothing for a flag)."""
    if isinstance(value, bool):
        return ""
    if isinstance(value, (tuple, list)):
        return " " + ",".join(f"{v:g}" for v in value)
    return f" {value:g}" if isinstance(value, float) else f" {value}"


def check_applicable(config, given):
    """Refuse the options in ``given`` that ``config``'s run does not use (``registry.APPLIES``).

    Args:
        config: the resolved ``TrainConfig``.
        given: names of options given on the command line, or ``{name: "command line" or a config file}``.

    Raises:
        UsageError: one line with every such option, why it cannot apply and what to do.
    """
    sources = given if isinstance(given, dict) else dict.fromkeys(given, "command line")
    values = config.to_dict()
    wrong = []
    for name, why in registry.inapplicable(config, sorted(sources, key=list(values).index)):
        where = "" if sources[name] == "command line" else f" (from {sources[name]})"
        wrong.append(f"--{name}{_shown(values[name])}{where}: {why}")
    if wrong:
        raise UsageError("; ".join(wrong) + ".")


def check_data_options(config):
    """``--data-path`` is given exactly when the data set reads a file."""
    if data.takes_path(config.data) and config.data_path is None:
        raise UsageError(f"--data {config.data} reads a file or folder: give it with --data-path.")
    check_applicable(config, () if config.data_path is None else ("data-path",))


def check_objective_options(config):
    """The options that go together: P with K, ``--memory`` with a loss that takes it, ``--center`` with a weight."""
    if (config.classes_per_batch is None) != (config.samples_per_class is None):
        given = "--classes-per-batch" if config.samples_per_class is None else "--samples-per-class"
        raise UsageError(f"{given}: class-balanced batches need both --classes-per-batch P and "
                         f"--samples-per-class K; give the other one too, or neither.")
    check_applicable(config, () if config.memory is None else ("memory",))
    if config.center and config.weighting == "fixed" and config.center_weight == 0:
        raise UsageError("--center: adds the center term, which --center-weight 0 removes under --weighting "
                         "fixed; give --center-weight LAMBDA > 0, or leave --center out.")


def load_data(config):
    """The data set of ``config`` (re-split by class under ``--split unseen-classes``).

    A bad file is a one-line usage error.
    """
    check_data_options(config)
    try:
        dataset = data.load(config.data, path=config.data_path, seed=config.seed)
        if config.split == "unseen-classes":
            dataset = data.unseen_classes_dataset(dataset)
    except (data.DataError, ImportError) as error:
        raise UsageError(str(error)) from None
    except ValueError as error:  # e.g. one class only: nothing to split
        raise UsageError(f"--split {config.split}: {error}") from None
    return dataset
