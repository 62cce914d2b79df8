"""``lossweave train``: one objective (a loss of ``lossweave.cli.registry``, center loss, a weighting) on one dataset.

The loss is softmax, a margin term or a pair or proxy loss (``--loss``; a
pair loss optionally inside a cross-batch memory, ``--memory``), trained on
plain batches or class-balanced P x K batches (``--classes-per-batch``,
``--samples-per-class``), on a stratified split or, for retrieval on classes
never seen in training, ``--split unseen-classes``.

The run folder holds ``metrics.json``, ``history.json``, ``config.toml`` (the
resolved configuration, reusable with ``--config``, and the command line),
``objective.keras``, ``model.keras`` (the inference model: embedding and
logits, no labels), ``features.png``, ``losses.png``, ``weights.png`` (when a
weight changes during training), ``cosines.png`` (a gradient-level weighting:
the cosine between each two terms' gradients) and a self-contained
``report.html``.

``--data multitask`` adds, beside the digit class, one head and one term
per other target (parity, ink, top share; ``lossweave.cli.tasks``), so the
weighting combines four or five terms of different kinds and scales.

Every option can also come from a TOML file (``--config FILE``) whose keys are
the option names (``embedding-dim = 2`` or ``embedding_dim = 2``); the
command line wins over the file, the file over the defaults.

Keras is imported only inside functions, after ``--backend`` is applied.
"""

import dataclasses
import datetime
import difflib
import json
import os
import pathlib
import platform
import shlex
import sys
import time

import numpy as np

from lossweave import data
from lossweave.cli import PROG, UsageError
from lossweave.cli.models import MODELS, build_mlp, is_model_file  # build_mlp: used by tests and users
from lossweave.cli import registry

BACKENDS = ("jax", "tensorflow", "torch")
SPLITS = ("stratified", "unseen-classes")
_REEXEC_MARK = "_LOSSWEAVE_REEXEC_BACKEND"


# ---------------------------------------------------------------------- options
def _choice(names, what):
    def convert(value):
        if not isinstance(value, str) or value not in names():
            raise ValueError(f"unknown {what} {value!r}; choose from: {', '.join(names())}.")
        return value

    return convert


def _integer(minimum):
    def convert(value):
        raw = value
        if isinstance(value, str):
            try:
                value = int(value.strip())
            except ValueError:
                value = None
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"expected an integer >= {minimum}; received {raw!r}.")
        return value

    return convert


def _real(low, high=None, low_open=False):
    expected = f"a number {'>' if low_open else '>='} {low}" + (f" and <= {high}" if high is not None else "")

    def convert(value):
        raw = value
        if isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                raise ValueError(f"expected {expected}; received {raw!r}.") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"expected {expected}; received {raw!r}.")
        value = float(value)
        if not np.isfinite(value) or value < low or (low_open and value == low):
            raise ValueError(f"expected {expected}; received {raw!r}.")
        if high is not None and value > high:
            raise ValueError(f"expected {expected}; received {raw!r}.")
        return value

    return convert


def _path(value):
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a folder path; received {value!r}.")
    return value


def _boolean(value):
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false; received {value!r}.")
    return value


@dataclasses.dataclass(frozen=True)
class Option:
    """One option of ``train``: a ``--flag`` and the same key in a config file."""

    name: str
    convert: object
    default: object
    help: str
    metavar: str = None
    flag: bool = False
    choices: object = None  # callable -> the accepted names, given to the parser as ``choices``

    @property
    def dest(self):
        return self.name.replace("-", "_")


def _model_name(value):
    if isinstance(value, str) and (value in MODELS or is_model_file(value)):
        return value
    raise ValueError(f"unknown model {value!r}; choose from: {', '.join(MODELS)}, or a .keras file.")


def _optional_path(value):
    if value is None or value == "":
        return None
    return _path(value)


def _optional_integer(minimum):
    convert = _integer(minimum)
    return lambda value: None if value is None or value == "" else convert(value)


def _optional_real(low, low_open=False):
    convert = _real(low, low_open=low_open)
    return lambda value: None if value is None or value == "" else convert(value)


def _margins(value):
    """``"1.0,0.3,0.2"`` or ``[1.0, 0.3, 0.2]`` -> (m1, m2, m3)."""
    raw = value
    if value is None or value == "":
        return None
    if isinstance(value, str):
        value = [v for v in value.split(",")]
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        raise ValueError(f"expected three numbers M1,M2,M3; received {raw!r}.")
    return tuple(_real(0.0)(v) for v in value)


def _name(value):
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a name; received {value!r}.")
    return value


OPTIONS = (
    Option("data", _choice(data.names, "data"), "digits",
           "dataset: digits and multitask are bundled; idx, npz and folder read --data-path", "NAME"),
    Option("data-path", _optional_path, None,
           "file or folder for --data idx (MNIST files), npz (x/y arrays) or folder (one sub-folder "
           "per class)", "PATH"),
    Option("model", _model_name, "mlp",
           "mlp (Dense 64 relu x2), lenet (small CNN), or a saved .keras model", "NAME|FILE"),
    Option("embedding-output", _name, "embedding", "output (or layer) of a .keras model holding the embedding",
           "NAME"),
    Option("logits-output", _name, "logits", "output (or layer) of a .keras model holding the logits", "NAME"),
    Option("embedding-dim", _integer(1), 2, "size of the embedding (features plotted; PCA if > 2)", "N"),
    Option("loss", _choice(lambda: registry.names(registry.LOSSES), "loss"), "softmax",
           "the main term: " + registry.help_lines(registry.LOSSES), "NAME",
           choices=lambda: registry.names(registry.LOSSES)),
    Option("scale", _optional_real(0.0, low_open=True), None,
           "scale s of a margin term (default: the paper's)", "S"),
    Option("margin", _optional_real(0.0), None,
           "margin of the losses that have one (see --loss; default: the paper's)", "M"),
    Option("combined-margins", _margins, None, "m1,m2,m3 of --loss combined (default 1,0.3,0.2)",
           "M1,M2,M3"),
    Option("sub-centers", _integer(1), 3, "sub-centers per class of --loss subcenter", "K"),
    Option("mining", _choice(lambda: registry.MININGS, "mining"), "semi-hard",
           "triplets of --loss triplet: " + ", ".join(registry.MININGS), "NAME",
           choices=lambda: registry.MININGS),
    Option("memory", _optional_integer(1), None,
           "cross-batch memory of M past embeddings around the pair loss (XBM; --loss "
           + " or ".join(registry.memory_losses()) + ")", "M"),
    Option("center-weight", _real(0.0), 0.003,
           "lambda, weight of the center-loss term (0: no center term)", "LAMBDA"),
    Option("center-warmup", _integer(0), 0,
           "ramp lambda linearly from 0 over this many steps (fixed weighting; 0: constant)", "STEPS"),
    Option("alpha", _real(0.0, 1.0), 0.5, "center learning rate of the paper's update, in [0, 1]", "ALPHA"),
    Option("weighting", _choice(lambda: registry.names(registry.WEIGHTINGS), "weighting"), "fixed",
           "how the terms combine: " + registry.help_lines(registry.WEIGHTINGS), "NAME",
           choices=lambda: registry.names(registry.WEIGHTINGS)),
    Option("epochs", _integer(1), 60, "training epochs", "N"),
    Option("batch-size", _integer(1), 128, "batch size", "N"),
    Option("classes-per-batch", _optional_integer(1), None,
           "P of class-balanced batches of P classes x K samples (with --samples-per-class; "
           "replaces --batch-size in training)", "P"),
    Option("samples-per-class", _optional_integer(1), None,
           "K of class-balanced batches (with --classes-per-batch)", "K"),
    Option("learning-rate", _real(0.0, low_open=True), 0.01, "Adam learning rate", "LR"),
    Option("seed", _integer(0), 0, "seed of the data split, the initial weights and the shuffling", "N"),
    Option("split", _choice(lambda: SPLITS, "split"), "stratified",
           "stratified: every class in train/val/test; unseen-classes: train on the first half of the "
           "classes, test (retrieval) on the others", "NAME", choices=lambda: SPLITS),
    Option("out", _path, None, "run folder (default: runs/<timestamp>)", "DIR"),
    Option("backend", _choice(lambda: list(BACKENDS), "backend"), None,
           "Keras backend (default: KERAS_BACKEND or Keras's configured one)", "NAME"),
    Option("quiet", _boolean, False, "no progress or summary; print only the report's path", flag=True),
)
OPTIONS_BY_NAME = {option.name: option for option in OPTIONS}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The resolved options of one ``train`` run (defaults < config file < command line)."""

    data: str = "digits"
    data_path: str = None
    model: str = "mlp"
    embedding_output: str = "embedding"
    logits_output: str = "logits"
    embedding_dim: int = 2
    loss: str = "softmax"
    scale: float = None
    margin: float = None
    combined_margins: tuple = None
    sub_centers: int = 3
    mining: str = "semi-hard"
    memory: int = None
    center_weight: float = 0.003
    center_warmup: int = 0
    alpha: float = 0.5
    weighting: str = "fixed"
    epochs: int = 60
    batch_size: int = 128
    classes_per_batch: int = None
    samples_per_class: int = None
    learning_rate: float = 0.01
    seed: int = 0
    split: str = "stratified"
    out: str = None
    backend: str = None
    quiet: bool = False

    def to_dict(self):
        """``{option name: value}`` with the command line's names (``embedding-dim``)."""
        return {option.name: getattr(self, option.dest) for option in OPTIONS}


def add_parser(subparsers):
    """Register ``train`` on the top-level parser's subparsers."""
    import argparse

    parser = subparsers.add_parser(
        "train",
        help="train one objective and write a run folder with an HTML report",
        description=(
            "Train lossweave.Objective(model, {softmax, a margin, pair or proxy loss, center loss}) on a "
            "dataset and write metrics.json, history.json, config.toml, objective.keras, "
            "model.keras, features.png, losses.png (weights.png) and report.html to the run folder."
        ),
        argument_default=argparse.SUPPRESS,  # only options given on the command line appear
    )
    add_options(parser, OPTIONS)
    parser.set_defaults(run=run)
    return parser


def add_options(parser, options):
    """Add ``options`` as ``--flags`` plus ``--config`` and ``--print-config`` to ``parser``."""
    import argparse

    for option in options:
        if option.flag:
            parser.add_argument(f"--{option.name}", action=argparse.BooleanOptionalAction,
                                help=f"{option.help} (default: {option.default})")
            continue
        default = "" if option.default is None else f" (default: {option.default})"
        named = {}
        if option.choices is not None:  # the option's own check runs first, for its message
            named = {"choices": tuple(option.choices()), "type": _parser_type(option.convert)}
        parser.add_argument(f"--{option.name}", metavar=option.metavar,
                            help=f"{option.help}{default}", **named)
    parser.add_argument("--config", metavar="FILE.toml",
                        help="read options from a TOML file; the command line wins")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved configuration as TOML and exit")


def _parser_type(convert):
    """``convert`` as an argparse ``type``: its ``ValueError`` message becomes the usage error."""
    import argparse

    def check(value):
        try:
            return convert(value)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return check


# ----------------------------------------------------------------- config files
def read_config_file(path, options=OPTIONS):
    """``{option name: value}`` from a TOML file, keys checked (values are not converted yet).

    A ``[run]`` table (what ``train`` writes into ``config.toml``) is ignored.
    """
    import tomllib

    file = pathlib.Path(path)
    try:
        with file.open("rb") as handle:
            raw = tomllib.load(handle)
    except FileNotFoundError:
        raise UsageError(f"--config: no such file: {str(path)!r}.") from None
    except IsADirectoryError:
        raise UsageError(f"--config: {str(path)!r} is a folder; expected a TOML file.") from None
    except OSError as error:
        raise UsageError(f"--config: cannot read {str(path)!r}: {error.strerror or error}.") from None
    except tomllib.TOMLDecodeError as error:
        raise UsageError(f"--config {path}: invalid TOML: {error}.") from None
    raw.pop("run", None)
    known = [option.name for option in options]
    values = {}
    for key, value in raw.items():
        name = key.replace("_", "-")
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UsageError(
                f"--config {path}: unknown key {key!r}; the keys are: "
                f"{', '.join(known)}.{hint}"
            )
        if name in values:
            raise UsageError(f"--config {path}: key {key!r} is given twice (with '-' and '_').")
        values[name] = value
    return values


def resolve_config(cli_values, config_path=None):
    """Merge defaults < config file < command line and check every value.

    Args:
        cli_values: ``{option name: value}`` given on the command line.
        config_path: optional TOML file.

    Returns:
        ``(TrainConfig, sources)`` where ``sources`` maps each option name to
        ``"default"``, ``"config"`` or ``"command line"``.
    """
    resolved, sources = resolve_values(cli_values, config_path, OPTIONS)
    return TrainConfig(**resolved), sources


def resolve_values(cli_values, config_path, options):
    """``({dest: checked value}, {name: source})`` of ``options`` (see ``resolve_config``)."""
    file_values = read_config_file(config_path, options) if config_path is not None else {}
    resolved, sources = {}, {}
    for option in options:
        if option.name in cli_values:
            value, source, where = cli_values[option.name], "command line", f"--{option.name}"
        elif option.name in file_values:
            value, source, where = file_values[option.name], "config", f"{config_path}: {option.name}"
        else:
            resolved[option.dest], sources[option.name] = option.default, "default"
            continue
        try:
            resolved[option.dest] = option.convert(value)
        except ValueError as error:
            raise UsageError(f"{where}: {error}") from None
        sources[option.name] = source
    if resolved.get("out", "") is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        resolved["out"] = str(pathlib.Path("runs") / stamp)
    return resolved, sources


# ---------------------------------------------------------------------- backend
def _launched_as_tool():
    script = pathlib.Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if script is None:
        return False
    return script.name == PROG or (script.name == "__main__.py" and script.parent.name == "lossweave")


def apply_backend(name, *, argv, from_process=False):
    """Select the Keras backend ``name`` before Keras is imported.

    If Keras is already loaded with another backend (``import lossweave``
    imports it) and this is the ``lossweave`` program itself, the process is
    restarted with ``KERAS_BACKEND=name``; called in-process (``main(argv)``),
    that is a usage error.
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


# ------------------------------------------------------------------------- TOML
def _toml_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if np.isnan(value):
            return "nan"
        if np.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def _toml_table(values):
    return [f"{key} = {_toml_value(value)}" for key, value in values.items() if value is not None]


def config_toml(config, run_info=None):
    """The resolved configuration as TOML (reusable with ``--config``), plus a ``[run]`` table."""
    lines = [
        "# Resolved configuration of a lossweave run; reuse it with",
        "#   lossweave train --config config.toml --out NEW_DIR",
        *_toml_table(config.to_dict()),
    ]
    if run_info:
        lines += ["", "# How the run was made (ignored when read back with --config).", "[run]"]
        lines += _toml_table(run_info)
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------ train
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


def build_objective(model, num_classes, center_weight, alpha, **options):
    """The objective of a run: its classification term, ``center_weight`` x center loss, a weighting.

    ``center_weight == 0`` leaves the center term out. ``options`` are
    ``loss``, ``weighting``, ``steps_per_epoch``, ``tasks`` and the term's ``scale``,
    ``margin``, ``combined_margins``, ``sub_centers``, ``mining``, ``memory``
    (see ``lossweave.cli.objectives.build_objective``).
    """
    from lossweave.cli import objectives

    return objectives.build_objective(model, num_classes, center_weight=center_weight, alpha=alpha, **options)


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
    """``build_objective`` with every option of ``config``.

    ``steps_per_epoch`` defaults to the batches of ``--batch-size`` in the training part.
    """
    from lossweave.cli.tasks import extra_tasks

    steps = steps_per_epoch or max(1, -(-len(dataset.y_train) // config.batch_size))
    return build_objective(
        model, dataset.num_classes, config.center_weight, config.alpha, loss=config.loss,
        weighting=config.weighting, steps_per_epoch=steps, center_warmup=config.center_warmup,
        scale=config.scale, margin=config.margin, combined_margins=config.combined_margins,
        sub_centers=config.sub_centers, mining=config.mining, memory=config.memory,
        tasks=extra_tasks(dataset),
    )


def balanced_batches(config, dataset):
    """The training data as ``ClassBalancedBatches`` of ``--classes-per-batch`` x ``--samples-per-class``.

    ``None`` without them (plain batches of ``--batch-size``).
    """
    if config.classes_per_batch is None:
        return None
    from lossweave.cli.tasks import targets

    return data.ClassBalancedBatches(
        dataset.x_train, targets(dataset, "train"), classes_per_batch=config.classes_per_batch,
        samples_per_class=config.samples_per_class, seed=config.seed,
    )


def fit_callbacks(batches):
    """The callbacks of ``fit``: with P x K batches, ``SyncEpoch`` keeps their epoch on ``fit``'s.

    So a run resumed at epoch ``e`` (``fit(initial_epoch=e)``,
    ``keras.callbacks.BackupAndRestore``) draws the batches of epoch ``e``, as
    the uninterrupted run did (``lossweave.data.ClassBalancedBatches``).
    """
    return [] if batches is None else [data.SyncEpoch(batches)]


def _float(value):
    value = float(np.asarray(value))
    return value if np.isfinite(value) else None


def _jsonable_history(history):
    return {key: [_float(v) for v in values] for key, values in history.items()}


def _flatten(metrics, prefix=""):
    for key, value in metrics.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}/")
        else:
            yield f"{prefix}{key}", value


_LABELS = {
    "test_accuracy": "test accuracy",
    "test_loss": "test loss (weighted total)",
    "test_losses": "test loss",
    "final_losses": "final train loss",
    "final_val_losses": "final validation loss",
    "final_val_accuracy": "final validation accuracy",
    "final_weights": "final weight",
    "intra_inter_ratio": "intra/inter-class distance (test)",
    "embedding": "test embedding (cosine)",
    "tasks": "test task",
    "epochs": "epochs",
    "train_seconds": "training time (s)",
}


def metric_rows(metrics):
    """``(key, label, value)`` rows of ``metrics.json``'s numbers, for tables and the summary."""
    rows = []
    for key, value in _flatten(metrics):
        head, _, term = key.partition("/")
        label = _LABELS.get(head, head)
        rows.append((key, f"{label}: {term}" if term else label, value))
    return rows


@dataclasses.dataclass(eq=False)
class TrainResult:
    """What ``fit_and_evaluate`` returns: the trained objective and its test outputs."""

    config: TrainConfig
    dataset: data.Dataset
    objective: object
    history: dict
    test_logs: dict
    test_embedding: np.ndarray
    test_logits: np.ndarray  # None: no class scores (--split unseen-classes)
    train_seconds: float
    test_tasks: dict = None  # a multi-task data set's other targets: lossweave.cli.tasks.task_metrics

    def centers(self):
        """``(centers, label)``: the center term's centers, else the test class means."""
        import keras

        if "center" in self.objective.terms:
            return keras.ops.convert_to_numpy(self.objective.terms["center"].centers), "learned centers"
        from lossweave.cli.objectives import class_means

        # NaN rows for classes without test rows (--split unseen-classes): the plots leave them out
        return class_means(self.test_embedding, self.dataset.y_test, self.dataset.num_classes), "class means"


def fit_and_evaluate(config, dataset, *, verbose=2):
    """Build the model and objective of ``config``, fit on ``dataset``, evaluate on its test part."""
    import keras

    import lossweave as lw
    from lossweave.cli.objectives import class_means, class_scores, has_logits_head, predicted_logits
    from lossweave.cli.tasks import extra_tasks, targets, task_metrics

    set_seed(config.seed)
    try:
        batches = balanced_batches(config, dataset)
        model = build_model(config, dataset)
        objective = objective_of(config, model, dataset, steps_per_epoch=len(batches) if batches else None)
    except ValueError as error:  # a bad model file, output name, term parameter or P x K
        raise UsageError(str(error)) from None
    metrics = {"logits": [lw.metrics.LogitsAccuracy()]} if has_logits_head(config.loss) else None
    objective.compile(optimizer=keras.optimizers.Adam(learning_rate=config.learning_rate), metrics=metrics)
    if batches is None:
        train_data = {"x": dataset.x_train, "y": targets(dataset, "train"), "batch_size": config.batch_size}
    else:  # already shuffled per epoch; fit's shuffle would reorder the batches again
        train_data = {"x": batches, "shuffle": False}
    started = time.perf_counter()
    history = objective.fit(
        **train_data,
        validation_data=(dataset.x_val, targets(dataset, "val")),
        epochs=config.epochs,
        verbose=verbose,
        callbacks=fit_callbacks(batches),
    ).history
    train_seconds = time.perf_counter() - started
    test_logs = objective.evaluate(
        dataset.x_test, targets(dataset, "test"), batch_size=config.batch_size,
        verbose=0, return_dict=True,
    )
    outputs = objective.model.predict(dataset.x_test, batch_size=config.batch_size, verbose=0)
    means = None
    if class_scores(config.loss) == "means" and config.split == "stratified":
        # No class logits: score the test rows by the nearest training-class mean.
        train_embedding = objective.model.predict(dataset.x_train, batch_size=config.batch_size, verbose=0)
        means = class_means(train_embedding["embedding"], dataset.y_train, dataset.num_classes)
    test_logits = predicted_logits(objective, config.loss, outputs, means)
    if config.split != "stratified":  # the test classes were never trained: no accuracy
        test_logits = None
    return TrainResult(
        config=config,
        dataset=dataset,
        objective=objective,
        history=history,
        test_logs=test_logs,
        test_embedding=np.asarray(outputs["embedding"], dtype="float64"),
        test_logits=test_logits,
        train_seconds=train_seconds,
        test_tasks=task_metrics(outputs, targets(dataset, "test"), extra_tasks(dataset)),
    )


def run_metrics(result):
    """The ``metrics.json`` dict of a ``TrainResult`` (finite floats, or None).

    ``test_accuracy`` is the argmax of the class scores (``None`` without
    them: ``--split unseen-classes``); for a pair or proxy loss the scores
    are the cosine to each training class's mean embedding (nearest class
    mean). ``intra_inter_ratio`` is the Euclidean ratio of the report's feature
    picture; ``embedding`` holds the cosine retrieval and verification figures
    of ``lossweave.metrics.evaluate_embeddings`` on the test set.
    """
    from lossweave.metrics import evaluate_embeddings
    from lossweave.report import class_distance_ratio

    history, labels = result.history, result.dataset.y_test
    terms = list(result.objective.terms)
    val_accuracy = history.get("val_accuracy")
    return {
        "test_accuracy": (None if result.test_logits is None
                          else _float(np.mean(np.argmax(result.test_logits, axis=-1) == labels))),
        "test_loss": _float(result.test_logs["loss"]),
        "test_losses": {t: _float(result.test_logs[f"loss/{t}"]) for t in terms},
        "final_losses": {t: _float(history[f"loss/{t}"][-1]) for t in terms},
        "final_val_losses": {t: _float(history[f"val_loss/{t}"][-1]) for t in terms},
        "final_val_accuracy": _float(val_accuracy[-1]) if val_accuracy else None,
        "final_weights": {t: _float(history[f"weight/{t}"][-1]) for t in terms if f"weight/{t}" in history},
        "intra_inter_ratio": _float(class_distance_ratio(result.test_embedding, labels)),
        "embedding": {k: _float(v) for k, v in evaluate_embeddings(
            result.test_embedding, labels, metric="cosine", ks=(1, 4)).items()},
        **({"tasks": {t: {k: _float(v) for k, v in m.items()} for t, m in result.test_tasks.items()}}
           if result.test_tasks else {}),
        "epochs": len(history["loss"]),
        "train_seconds": round(result.train_seconds, 3),
    }


def objective_label(config):
    """``"softmax + 0.003 x center"``: the objective of a run in a few words."""
    if config.weighting != "fixed":
        center = " + center" if config.center_weight > 0 else ""
        return f"{config.loss}{center}, {config.weighting} weighting"
    center = f" + {config.center_weight:g} x center" if config.center_weight > 0 else ""
    return f"{config.loss}{center}"


def inference_model(result):
    """The plain model, with a margin term's margin-free logits added as an output."""
    from lossweave.cli.objectives import class_scores, classifier_name

    if class_scores(result.config.loss) != "term":
        return result.objective.model

    return result.objective.terms[classifier_name(result.config.loss)].classifier(result.objective.model)


RUN_FILES = ("metrics.json", "history.json", "config.toml", "objective.keras", "model.keras",
             "features.png", "losses.png", "report.html")


def write_run(out, result, metrics, *, argv=(), config_file=None):
    """Write every file of the run folder ``out``; returns ``{file name: Path}``."""
    import keras

    import lossweave as lw
    from lossweave import report

    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config, dataset = result.config, result.dataset
    paths = {name: out / name for name in RUN_FILES}
    command = shlex.join([PROG, *argv])

    paths["metrics.json"].write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    paths["history.json"].write_text(
        json.dumps(_jsonable_history(result.history), indent=1) + "\n", encoding="utf-8")
    run_info = {
        "command": command,
        "argv": list(argv),
        "config-file": None if config_file is None else str(config_file),
        "backend": keras.backend.backend(),
        "lossweave": lw.__version__,
        "keras": keras.__version__,
        "python": platform.python_version(),
        "finished": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    paths["config.toml"].write_text(config_toml(config, run_info), encoding="utf-8")
    result.objective.save(paths["objective.keras"])
    inference_model(result).save(paths["model.keras"])

    centers, centers_label = result.centers()
    report.plot_features(
        result.test_embedding, dataset.y_test, centers, class_names=dataset.class_names,
        title=(f"{config.data} test features, {config.model}, {objective_label(config)}, "
               f"{metrics['epochs']} epochs"),
        centers_label=centers_label, path=paths["features.png"], seed=config.seed,
    )
    report.plot_loss_curves(result.history, terms=list(result.objective.terms),
                            path=paths["losses.png"],
                            title=f"{config.data} / {config.model}: loss per term")
    images = [("Test features (PCA if more than 2-D), centers as crosses", paths["features.png"]),
              ("Loss per term (train and validation)", paths["losses.png"])]
    if report.weights_vary(result.history):
        paths["weights.png"] = out / "weights.png"
        report.plot_weight_curves(result.history, terms=list(result.objective.terms),
                                  path=paths["weights.png"],
                                  title=f"{config.weighting} weighting: weight per term")
        images.append(("Weight of each term per epoch", paths["weights.png"]))
    if report.cosine_pairs(result.history):  # a gradient-level weighting logs them
        paths["cosines.png"] = out / "cosines.png"
        report.plot_cosine_curves(result.history, terms=list(result.objective.terms),
                                  path=paths["cosines.png"],
                                  title=f"{config.weighting}: gradient cosine per pair of terms")
        images.append(("Cosine between the term gradients on the shared variables (below 0: conflict)",
                       paths["cosines.png"]))
    report.write_html(
        paths["report.html"],
        title=f"lossweave train: {config.data} / {config.model}",
        command=command,
        metrics=metric_rows(metrics),
        config=[(key, key, value) for key, value in config.to_dict().items()],
        images=images,
        notes=[f"Backend {run_info['backend']}, keras {keras.__version__}, "
               f"lossweave {lw.__version__}."],
    )
    return paths


def check_data_options(config):
    """``--data-path`` is given exactly when the data set reads a file."""
    if data.takes_path(config.data) and config.data_path is None:
        raise UsageError(f"--data {config.data} reads a file or folder: give it with --data-path.")
    if not data.takes_path(config.data) and config.data_path is not None:
        raise UsageError(f"--data-path: --data {config.data} is bundled and reads no file; "
                         f"use --data idx, npz or folder for your own files.")


def check_objective_options(config):
    """The options that go together: P with K, ``--memory`` with a loss that takes it."""
    if (config.classes_per_batch is None) != (config.samples_per_class is None):
        given = "--classes-per-batch" if config.samples_per_class is None else "--samples-per-class"
        raise UsageError(f"{given}: class-balanced batches need both --classes-per-batch P and "
                         f"--samples-per-class K; give the other one too, or neither.")
    if config.memory is not None and not registry.LOSSES[config.loss].memory:
        raise UsageError(f"--memory: wraps a loss that takes a reference set ("
                         f"{', '.join(registry.memory_losses())}); received --loss {config.loss}.")


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


def train(config, *, argv=(), config_file=None, echo=print):
    """Train, evaluate and write the run folder for a resolved ``TrainConfig``.

    Args:
        config: the ``TrainConfig``; ``config.out`` is the run folder.
        argv: the command line arguments (recorded in ``config.toml`` and the report).
        config_file: the ``--config`` file, if any (recorded).
        echo: where progress lines go (``print``, or a no-op when quiet).

    Returns:
        ``(metrics, paths)``: the ``metrics.json`` dict and ``{file name: Path}``.
    """
    import keras

    config = dataclasses.replace(config, backend=keras.backend.backend())
    dataset = load_data(config)
    sizes = dataset.sizes()
    echo(
        f"{PROG} train: {config.data} ({sizes['train']} train / {sizes['val']} val / "
        f"{sizes['test']} test, {dataset.num_classes} classes), model {config.model}, "
        f"{config.embedding_dim}-D embedding, {objective_label(config)}, "
        f"{config.backend} backend -> {config.out}"
    )
    result = fit_and_evaluate(config, dataset, verbose=0 if config.quiet else 2)
    metrics = run_metrics(result)
    paths = write_run(config.out, result, metrics, argv=argv, config_file=config_file)
    return metrics, paths


def _summary(metrics, paths):
    from lossweave.report import format_value

    rows = [(label, format_value(value)) for _, label, value in metric_rows(metrics)]
    width = max(len(label) for label, _ in rows)
    lines = ["", "summary"]
    lines += [f"  {label:<{width}}  {value:>10}" for label, value in rows]
    lines.append(f"  {'run folder':<{width}}  {paths['report.html'].parent}")
    return "\n".join(lines)


def run(args, *, argv=(), from_process=False):
    """The ``train`` command: resolve options, apply the backend, train, report."""
    given = {o.name: getattr(args, o.dest) for o in OPTIONS if hasattr(args, o.dest)}
    config_file = getattr(args, "config", None)
    config, _ = resolve_config(given, config_file)
    check_data_options(config)
    check_objective_options(config)
    out = pathlib.Path(config.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out: {config.out!r} exists and is not a folder.")
    apply_backend(config.backend, argv=argv, from_process=from_process)
    if getattr(args, "print_config", False):
        import keras

        print(config_toml(dataclasses.replace(config, backend=keras.backend.backend())), end="")
        return 0
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"--out: cannot create {config.out!r}: {error.strerror or error}.") from None

    echo = (lambda *a, **k: None) if config.quiet else print
    metrics, paths = train(config, argv=argv, config_file=config_file, echo=echo)
    echo(_summary(metrics, paths))
    print(f"report: {paths['report.html']}")
    return 0
