"""Bundled and file-based datasets: no downloads at run time.

Every loader returns a :class:`Dataset` (train/validation/test arrays and the
class count) and is registered by name in :data:`LOADERS`, which the command
line tool reads (``lossweave train --data NAME``). Loaders are imported lazily,
so listing the names imports neither scikit-learn nor any backend.

Example:
    >>> from lossweave import data
    >>> ds = data.load("digits", seed=0)
    >>> ds.num_classes, ds.x_train.shape[1], ds.x_train.dtype
    (10, 64, dtype('float32'))
"""

import dataclasses
import importlib

import numpy as np

__all__ = ["LOADERS", "Dataset", "load", "names", "stratified_split"]


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


def stratified_split(x, y, *, val_fraction, test_fraction, seed):
    """Split ``(x, y)`` into stratified, disjoint train/validation/test parts.

    Each class keeps (up to rounding) its share of samples in every part; the
    same ``seed`` always gives the same split.

    Returns:
        ``((x_train, y_train), (x_val, y_val), (x_test, y_test))``.
    """
    from sklearn.model_selection import train_test_split

    for label, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 < value < 1.0:
            raise ValueError(f"stratified_split: {label} must be in (0, 1); received {value!r}.")
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
}


def names():
    """Sorted names of the registered datasets."""
    return sorted(LOADERS)


def load(name, **kwargs):
    """Load the registered dataset ``name``; ``kwargs`` go to its loader (``seed=``, ...)."""
    if name not in LOADERS:
        raise ValueError(f"unknown data {name!r}; choose from: {', '.join(names())}.")
    module_name, function_name = LOADERS[name].split(":")
    loader = getattr(importlib.import_module(module_name), function_name)
    return loader(**kwargs)
