"""The options of ``train`` and ``compare``: one table, :data:`OPTIONS`, read by everything else.

Each :class:`Option` holds its name (``--embedding-dim``, and the key
``embedding-dim`` or ``embedding_dim`` of a config file), its check and
conversion, its default and its help. :class:`TrainConfig`, the resolved
options of a run, is built from the table, so a default lives in one place.
An option that names a loss or a weighting reads its choices and help from
``lossweave.cli.registry``.
"""

import argparse
import dataclasses

import numpy as np

from lossweave import data
from lossweave.cli import registry
from lossweave.cli.models import MODELS, is_model_file

BACKENDS = ("jax", "tensorflow", "torch")
SPLITS = ("stratified", "unseen-classes")


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


def _optional_boolean(value):
    return None if value is None else _boolean(value)


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
           "dataset: digits (8x8 digits) and multitask (the digits with three more targets: parity, ink, "
           "top) are bundled; mnist is 5,000 real MNIST digits (pip install \"lossweave[mnist]\"); idx, npz "
           "and folder read --data-path", "NAME"),
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
    Option("center", _optional_boolean, None,
           "add the center-loss term on the embedding, or leave it out (--no-center); default: added, "
           "except on a multi-task data set (--data multitask), whose tasks are the terms", flag=True),
    Option("center-weight", _real(0.0), 0.003,
           "lambda, weight of the center-loss term under --weighting fixed (0: no center term); other "
           "weightings set the weights themselves", "LAMBDA"),
    Option("center-warmup", _integer(0), 0,
           "ramp lambda linearly from 0 over this many steps (--weighting fixed; 0: constant)", "STEPS"),
    Option("alpha", _real(0.0, 1.0), 0.5, "center learning rate of the paper's update, in [0, 1]", "ALPHA"),
    Option("weighting", _choice(lambda: registry.names(registry.WEIGHTINGS), "weighting"), "fixed",
           "how the terms combine: " + registry.help_lines(registry.WEIGHTINGS), "NAME",
           choices=lambda: registry.names(registry.WEIGHTINGS)),
    Option("epochs", _integer(1), 60, "training epochs", "N"),
    Option("keep-best", _boolean, True,
           "keep the weights of the epoch with the lowest validation loss (val_loss), not the last "
           "epoch's; --no-keep-best keeps the last", flag=True),
    Option("batch-size", _integer(1), 128, "batch size of training (unless class-balanced) and of evaluation", "N"),
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
    Option("target-precision", _real(0.0, 1.0), 0.95,
           "precision the open-set threshold must reach on the validation split (calibration.json; the "
           "threshold of lossweave search); the best-F1 threshold where none reaches it", "P"),
    Option("out", _path, None, "run folder (default: runs/<timestamp>)", "DIR"),
    Option("tensorboard", _optional_path, None,
           "write TensorBoard event files here: loss/<term>, weight/<term>, cosine/<a>/<b> per epoch, "
           "in DIR/train and DIR/validation (needs TensorFlow)", "DIR"),
    Option("tensorboard-every", _optional_integer(1), None,
           "with --tensorboard, also write the training numbers every N steps as steps/<name> "
           "(default: per epoch only)", "N"),
    Option("backend", _choice(lambda: list(BACKENDS), "backend"), None,
           "Keras backend (default: KERAS_BACKEND or Keras's configured one)", "NAME"),
    Option("quiet", _boolean, False, "no progress or summary; print only the report's path", flag=True),
)
OPTIONS_BY_NAME = {option.name: option for option in OPTIONS}


def _to_dict(self):
    """``{option name: value}`` with the command line's names (``embedding-dim``)."""
    return {option.name: getattr(self, option.dest) for option in OPTIONS}


# The resolved options of one run (defaults < config file < command line): one field per
# option of OPTIONS, in its order, with its default.
TrainConfig = dataclasses.make_dataclass(
    "TrainConfig",
    [(option.dest, object, dataclasses.field(default=option.default)) for option in OPTIONS],
    frozen=True,
    namespace={"to_dict": _to_dict, "__module__": __name__,
               "__doc__": "The resolved options of one ``train`` run: one field per entry of ``OPTIONS``."},
)



def add_options(parser, options):
    """Add ``options`` as ``--flags`` plus ``--config`` and ``--print-config`` to ``parser``."""
    for option in options:
        default = "" if option.default is None else f" (default: {option.default})"
        if option.flag:
            parser.add_argument(f"--{option.name}", action=argparse.BooleanOptionalAction,
                                help=f"{option.help}{default}")
            continue
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
    def check(value):
        try:
            return convert(value)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return check
