"""``lossweave train``: softmax + center loss on a bundled dataset, with a run folder.

The run folder holds ``metrics.json``, ``history.json``, ``config.toml`` (the
resolved configuration, reusable with ``--config``, and the command line),
``objective.keras``, ``model.keras``, ``features.png``, ``losses.png`` and a
self-contained ``report.html``.

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

BACKENDS = ("jax", "tensorflow", "torch")
_REEXEC_MARK = "_LOSSWEAVE_REEXEC_BACKEND"


# ----------------------------------------------------------------------- models
def build_mlp(input_shape, num_classes, embedding_dim, hidden=(64, 64)):
    """A small MLP with a linear embedding layer and a logits layer on top of it.

    ``inputs -> Dense(64, relu) -> Dense(64, relu) -> embedding -> logits``, a
    functional model with dict outputs ``{"embedding", "logits"}``: the
    embedding is the "deep feature" of the center-loss paper, the logits the
    input of the softmax loss.
    """
    import keras

    inputs = keras.Input(shape=tuple(input_shape), name="inputs")
    x = keras.layers.Flatten(name="flatten")(inputs) if len(input_shape) > 1 else inputs
    for index, units in enumerate(hidden, start=1):
        x = keras.layers.Dense(units, activation="relu", name=f"hidden_{index}")(x)
    embedding = keras.layers.Dense(embedding_dim, name="embedding")(x)
    logits = keras.layers.Dense(num_classes, name="logits")(embedding)
    return keras.Model(inputs, {"embedding": embedding, "logits": logits}, name="mlp")


# name -> builder(input_shape, num_classes, embedding_dim) -> keras.Model with
# outputs {"embedding": (batch, embedding_dim), "logits": (batch, num_classes)}
MODELS = {
    "mlp": build_mlp,
}


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

    @property
    def dest(self):
        return self.name.replace("-", "_")


OPTIONS = (
    Option("data", _choice(data.names, "data"), "digits", "dataset (bundled, no download)", "NAME"),
    Option("model", _choice(lambda: sorted(MODELS), "model"), "mlp",
           "built-in model: mlp = Dense 64 relu, Dense 64 relu, embedding, logits", "NAME"),
    Option("embedding-dim", _integer(1), 2, "size of the embedding (features plotted; PCA if > 2)", "N"),
    Option("center-weight", _real(0.0), 0.003,
           "lambda, weight of the center-loss term (0 trains with softmax only)", "LAMBDA"),
    Option("alpha", _real(0.0, 1.0), 0.5, "center learning rate of the paper's update, in [0, 1]", "ALPHA"),
    Option("epochs", _integer(1), 60, "training epochs", "N"),
    Option("batch-size", _integer(1), 128, "batch size", "N"),
    Option("learning-rate", _real(0.0, low_open=True), 0.01, "Adam learning rate", "LR"),
    Option("seed", _integer(0), 0, "seed of the data split, the initial weights and the shuffling", "N"),
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
    model: str = "mlp"
    embedding_dim: int = 2
    center_weight: float = 0.003
    alpha: float = 0.5
    epochs: int = 60
    batch_size: int = 128
    learning_rate: float = 0.01
    seed: int = 0
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
        help="train softmax + center loss and write a run folder with an HTML report",
        description=(
            "Train lossweave.Objective(model, {softmax, center}) on a bundled dataset and "
            "write metrics.json, history.json, config.toml, objective.keras, model.keras, "
            "features.png, losses.png and report.html to the run folder."
        ),
        argument_default=argparse.SUPPRESS,  # only options given on the command line appear
    )
    for option in OPTIONS:
        if option.flag:
            parser.add_argument(f"--{option.name}", action=argparse.BooleanOptionalAction,
                                help=f"{option.help} (default: {option.default})")
        else:
            default = "" if option.default is None else f" (default: {option.default})"
            parser.add_argument(f"--{option.name}", metavar=option.metavar,
                                help=f"{option.help}{default}")
    parser.add_argument("--config", metavar="FILE.toml",
                        help="read options from a TOML file; the command line wins")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved configuration as TOML and exit")
    parser.set_defaults(run=run)
    return parser


# ----------------------------------------------------------------- config files
def read_config_file(path):
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
    values = {}
    for key, value in raw.items():
        name = key.replace("_", "-")
        if name not in OPTIONS_BY_NAME:
            close = difflib.get_close_matches(name, list(OPTIONS_BY_NAME), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UsageError(
                f"--config {path}: unknown key {key!r}; the keys are: "
                f"{', '.join(OPTIONS_BY_NAME)}.{hint}"
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
    file_values = read_config_file(config_path) if config_path is not None else {}
    resolved, sources = {}, {}
    for option in OPTIONS:
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
    if resolved["out"] is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        resolved["out"] = str(pathlib.Path("runs") / stamp)
    return TrainConfig(**resolved), sources


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


def build_objective(model, num_classes, center_weight, alpha):
    """Softmax cross-entropy on ``logits`` plus ``center_weight`` x center loss on ``embedding``.

    ``center_weight == 0`` leaves the center term out (softmax only).
    """
    import lossweave as lw

    terms = {"softmax": lw.terms.SoftmaxCrossEntropy(on="logits")}
    weights = {}
    if center_weight > 0:
        terms["center"] = lw.terms.CenterLoss(num_classes=num_classes, alpha=alpha, on="embedding")
        weights["center"] = center_weight
    return lw.Objective(model, terms, weighting=lw.weighting.Fixed(weights))


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
    "intra_inter_ratio": "intra/inter-class distance (test)",
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
    test_logits: np.ndarray
    train_seconds: float

    def centers(self):
        """``(centers, label)``: the center term's centers, else the test class means."""
        import keras

        if "center" in self.objective.terms:
            return keras.ops.convert_to_numpy(self.objective.terms["center"].centers), "learned centers"
        labels = self.dataset.y_test
        means = np.stack([self.test_embedding[labels == c].mean(axis=0)
                          for c in range(self.dataset.num_classes)])
        return means, "class means"


def fit_and_evaluate(config, dataset, *, verbose=2):
    """Build the model and objective of ``config``, fit on ``dataset``, evaluate on its test part."""
    import keras

    import lossweave as lw

    set_seed(config.seed)
    model = MODELS[config.model](dataset.input_shape, dataset.num_classes, config.embedding_dim)
    objective = build_objective(model, dataset.num_classes, config.center_weight, config.alpha)
    objective.compile(
        optimizer=keras.optimizers.Adam(learning_rate=config.learning_rate),
        metrics={"logits": [lw.metrics.LogitsAccuracy()]},
    )
    started = time.perf_counter()
    history = objective.fit(
        dataset.x_train,
        {"label": dataset.y_train},
        validation_data=(dataset.x_val, {"label": dataset.y_val}),
        epochs=config.epochs,
        batch_size=config.batch_size,
        verbose=verbose,
    ).history
    train_seconds = time.perf_counter() - started
    test_logs = objective.evaluate(
        dataset.x_test, {"label": dataset.y_test}, batch_size=config.batch_size,
        verbose=0, return_dict=True,
    )
    outputs = objective.model.predict(dataset.x_test, batch_size=config.batch_size, verbose=0)
    return TrainResult(
        config=config,
        dataset=dataset,
        objective=objective,
        history=history,
        test_logs=test_logs,
        test_embedding=np.asarray(outputs["embedding"], dtype="float64"),
        test_logits=np.asarray(outputs["logits"]),
        train_seconds=train_seconds,
    )


def run_metrics(result):
    """The ``metrics.json`` dict of a ``TrainResult`` (finite floats, or None)."""
    from lossweave.report import class_distance_ratio

    history, labels = result.history, result.dataset.y_test
    terms = list(result.objective.terms)
    val_accuracy = history.get("val_accuracy")
    return {
        "test_accuracy": _float(np.mean(np.argmax(result.test_logits, axis=-1) == labels)),
        "test_loss": _float(result.test_logs["loss"]),
        "test_losses": {t: _float(result.test_logs[f"loss/{t}"]) for t in terms},
        "final_losses": {t: _float(history[f"loss/{t}"][-1]) for t in terms},
        "final_val_losses": {t: _float(history[f"val_loss/{t}"][-1]) for t in terms},
        "final_val_accuracy": _float(val_accuracy[-1]) if val_accuracy else None,
        "intra_inter_ratio": _float(class_distance_ratio(result.test_embedding, labels)),
        "epochs": len(history["loss"]),
        "train_seconds": round(result.train_seconds, 3),
    }


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
    result.objective.model.save(paths["model.keras"])

    centers, centers_label = result.centers()
    report.plot_features(
        result.test_embedding, dataset.y_test, centers, class_names=dataset.class_names,
        title=(f"{config.data} test features, {config.model}, "
               f"lambda={config.center_weight:g}, {metrics['epochs']} epochs"),
        centers_label=centers_label, path=paths["features.png"], seed=config.seed,
    )
    report.plot_loss_curves(result.history, terms=list(result.objective.terms),
                            path=paths["losses.png"],
                            title=f"{config.data} / {config.model}: loss per term")
    report.write_html(
        paths["report.html"],
        title=f"lossweave train: {config.data} / {config.model}",
        command=command,
        metrics=metric_rows(metrics),
        config=[(key, key, value) for key, value in config.to_dict().items()],
        images=[("Test features (PCA if more than 2-D), centers as crosses", paths["features.png"]),
                ("Loss per term (train and validation)", paths["losses.png"])],
        notes=[f"Backend {run_info['backend']}, keras {keras.__version__}, "
               f"lossweave {lw.__version__}."],
    )
    return paths


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
    dataset = data.load(config.data, seed=config.seed)
    sizes = dataset.sizes()
    echo(
        f"{PROG} train: {config.data} ({sizes['train']} train / {sizes['val']} val / "
        f"{sizes['test']} test, {dataset.num_classes} classes), model {config.model}, "
        f"{config.embedding_dim}-D embedding, lambda {config.center_weight:g}, "
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
