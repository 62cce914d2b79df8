"""Shared checks of the file-based loaders: paths, labels and splits, each failure a DataError."""

import os

import numpy as np

from lossweave.data import DataError, Dataset, check_fraction, stratified_split


def fail(path, message):
    """A :class:`DataError` whose one-line message names ``path``."""
    return DataError(f"data: {os.fspath(path)}: {message}")


def require_path(path, loader, what):
    """``path`` as a string; a plain ValueError when the caller gave none."""
    if path is None:
        raise ValueError(f"{loader}: needs path= ({what}); e.g. "
                         f"lossweave.data.load({loader.removeprefix('load_')!r}, path=...).")
    return os.fspath(path)


def as_labels(y, source, name="labels"):
    """``y`` as a 1-D int64 array, or DataError if it is not integer-valued."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise fail(source, f"expected {name} of shape (n,), found shape {y.shape}")
    if y.dtype == bool:
        return y.astype("int64")
    if np.issubdtype(y.dtype, np.integer):
        return y.astype("int64")
    if np.issubdtype(y.dtype, np.floating):
        bad = ~np.isfinite(y) | (y != np.round(y))
        if bad.any():
            first = int(np.argmax(bad))
            raise fail(source, f"expected integer class {name}, found non-integer value "
                               f"{y[first].item()!r} at index {first}")
        return y.astype("int64")
    raise fail(source, f"expected integer class {name}, found dtype {y.dtype}")


def encode_labels(parts, source, class_names=None):
    """Map the label arrays of ``parts`` to ``0..K-1`` consistently.

    Without ``class_names`` the sorted distinct labels of all parts become
    ``0..K-1`` and their original values (as strings) the class names. With
    ``class_names`` (K names) the labels must already lie in ``[0, K)``.

    Returns:
        ``(list of int32 arrays, num_classes, class_names tuple)``.
    """
    parts = [as_labels(y, source) for y in parts]
    everything = np.concatenate(parts)
    if everything.size == 0:
        raise fail(source, "expected labelled samples, found none")
    if class_names is not None:
        class_names = tuple(str(c) for c in class_names)
        k = len(class_names)
        outside = (everything < 0) | (everything >= k)
        if outside.any():
            raise fail(source, f"expected labels in [0, {k}) for the {k} class_names given, "
                               f"found {int(everything[np.argmax(outside)])}")
        return [y.astype("int32") for y in parts], k, class_names
    values = np.unique(everything)
    if len(values) < 2:
        raise fail(source, f"expected at least 2 classes, found only label {int(values[0])}")
    encoded = [np.searchsorted(values, y).astype("int32") for y in parts]
    return encoded, len(values), tuple(str(int(v)) for v in values)


def as_features(x, source, name="x"):
    """Features as float32: uint8 divided by 255, anything else converted unchanged."""
    x = np.asarray(x)
    if x.ndim < 2:
        raise fail(source, f"expected {name} of shape (n, ...) with features per sample, "
                           f"found shape {x.shape}")
    if x.dtype == np.uint8:
        return (x.astype("float32") / np.float32(255.0)).astype("float32")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise fail(source, f"expected numeric {name}, found dtype {x.dtype}")
    x = x.astype("float32")
    if not np.isfinite(x).all():
        raise fail(source, f"expected finite {name}, found NaN or infinity")
    return x


def check_counts(x, y, source, x_name="x", y_name="y"):
    if len(x) != len(y):
        raise fail(source, f"expected as many {y_name} as {x_name}, found {len(x)} {x_name} "
                           f"and {len(y)} {y_name}")


def split3(x, y, source, *, val_fraction, test_fraction, seed):
    """Stratified train/val/test split; DataError when the classes are too small to split."""
    try:
        return stratified_split(x, y, val_fraction=val_fraction, test_fraction=test_fraction,
                                seed=seed)
    except ValueError as error:
        if "fraction" in str(error):
            raise
        raise fail(source, f"cannot make a stratified split of {len(y)} samples in "
                           f"{len(np.unique(y))} classes: {error}") from None


def split2(x, y, source, *, fraction, seed):
    """Stratified ``(x_a, y_a), (x_b, y_b)`` with ``fraction`` of the samples in the second."""
    from sklearn.model_selection import train_test_split

    fraction = check_fraction(fraction, "val_fraction")
    try:
        x_a, x_b, y_a, y_b = train_test_split(x, y, test_size=fraction, stratify=y,
                                              random_state=seed)
    except ValueError as error:
        raise fail(source, f"cannot make a stratified split of {len(y)} samples in "
                           f"{len(np.unique(y))} classes: {error}") from None
    return (x_a, y_a), (x_b, y_b)


def make_dataset(name, train, val, test, num_classes, class_names, seed):
    return Dataset(
        name=name,
        x_train=np.ascontiguousarray(train[0], dtype="float32"),
        y_train=np.ascontiguousarray(train[1], dtype="int32"),
        x_val=np.ascontiguousarray(val[0], dtype="float32"),
        y_val=np.ascontiguousarray(val[1], dtype="int32"),
        x_test=np.ascontiguousarray(test[0], dtype="float32"),
        y_test=np.ascontiguousarray(test[1], dtype="int32"),
        num_classes=int(num_classes),
        class_names=tuple(class_names),
        seed=int(seed),
    )
