"""A NumPy ``.npz`` file of named arrays (features and integer class labels)."""

import os
import zipfile
import zlib

import numpy as np

from lossweave.data import _files


def _read(path):
    if not os.path.isfile(path):
        raise _files.fail(path, "expected an .npz file, found "
                                + ("a folder" if os.path.isdir(path) else "no such file"))
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as handle:
            start = handle.read(6)
        found = "a single .npy array" if start == b"\x93NUMPY" else "no zip archive"
        raise _files.fail(path, f"expected an .npz archive of named arrays (np.savez), found {found}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except ValueError as error:  # object arrays (allow_pickle=False), bad .npy headers
        raise _files.fail(path, f"expected plain numeric arrays, found: {error}") from None
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise _files.fail(path, f"expected a readable .npz archive, found a corrupt one "
                                f"({error})") from None


def load_npz(path=None, x="x", y="y", seed=0, val_fraction=0.2, test_fraction=0.2,
             class_names=None):
    """Features and labels from an ``.npz`` file, with its own split or a seeded one.

    Which arrays are read (``x``/``y`` name them; defaults ``"x"`` and ``"y"``):

    * ``{x}_train``, ``{y}_train``, ``{x}_test``, ``{y}_test`` (and optionally
      ``{x}_val``, ``{y}_val``): the file's own split. Without a validation
      pair, ``val_fraction`` of the train pair is split off (stratified,
      seeded); ``test_fraction`` is unused.
    * otherwise ``{x}`` and ``{y}``: split into train/val/test (stratified,
      seeded): ``val_fraction`` and ``test_fraction`` of all samples.

    Features: uint8 arrays (images) are divided by 255; other numeric arrays
    are converted to float32 unchanged and must be finite. The shape of one
    sample is kept (e.g. ``(n, 28, 28, 1)`` stays so).

    Labels: integers, or integer-valued floats (``(n,)`` or ``(n, 1)``).
    Without ``class_names`` the sorted distinct labels of all parts are
    numbered ``0..K-1`` and their original values become the class names, so
    labels like ``{3, 7, 42}`` or ``{-1, 1}`` work; with ``class_names``
    (K names) the labels are kept as they are and must lie in ``[0, K)``.

    Args:
        path: the ``.npz`` file.
        x, y: names (or name prefixes) of the feature and label arrays.
        seed: seed of the split.
        val_fraction, test_fraction: shares of the validation and test parts.
        class_names: optional display names, one per class.

    Returns:
        A ``lossweave.data.Dataset`` named ``"npz"``.

    Raises:
        ValueError: no ``path``.
        DataError: missing or unreadable file, missing arrays (the message
            lists the arrays the file has), non-integer or out-of-range
            labels, feature/label counts that differ.

    Example:
        >>> import os, tempfile
        >>> import numpy as np
        >>> file = os.path.join(tempfile.mkdtemp(), "blobs.npz")
        >>> rng = np.random.default_rng(0)
        >>> np.savez(file, x=rng.normal(size=(50, 3)), y=np.repeat([10, 20], 25))
        >>> ds = load_npz(file, seed=0)
        >>> ds.sizes(), ds.class_names, sorted(set(ds.y_train.tolist()))
        ({'train': 30, 'val': 10, 'test': 10}, ('10', '20'), [0, 1])
    """
    path = _files.require_path(path, "load_npz", "an .npz file")
    arrays = _read(path)
    has = ", ".join(f"{k} {arrays[k].shape}" for k in sorted(arrays)) or "no arrays"
    split_names = [f"{x}_train", f"{y}_train", f"{x}_test", f"{y}_test"]
    if all(name in arrays for name in split_names):
        parts = ["train", "test"]
        if f"{x}_val" in arrays or f"{y}_val" in arrays:
            missing = [n for n in (f"{x}_val", f"{y}_val") if n not in arrays]
            if missing:
                raise _files.fail(path, f"expected both {x}_val and {y}_val, found only "
                                        f"{'/'.join(n for n in (f'{x}_val', f'{y}_val') if n in arrays)} "
                                        f"(the file has: {has})")
            parts.insert(1, "val")
        xs, ys = {}, {}
        for part in parts:
            xs[part] = _files.as_features(arrays[f"{x}_{part}"], path, f"{x}_{part}")
            ys[part] = _files.as_labels(arrays[f"{y}_{part}"], path, f"{y}_{part}")
            _files.check_counts(xs[part], ys[part], path, f"{x}_{part}", f"{y}_{part}")
            if xs[part].shape[1:] != xs["train"].shape[1:]:
                raise _files.fail(path, f"expected {x}_{part} samples of shape "
                                        f"{xs['train'].shape[1:]} like {x}_train, found "
                                        f"{xs[part].shape[1:]}")
        encoded, num_classes, names = _files.encode_labels([ys[p] for p in parts], path, class_names)
        ys = dict(zip(parts, encoded))
        if "val" in parts:
            train, val = (xs["train"], ys["train"]), (xs["val"], ys["val"])
        else:
            train, val = _files.split2(xs["train"], ys["train"], path, fraction=val_fraction,
                                       seed=seed)
        return _files.make_dataset("npz", train, val, (xs["test"], ys["test"]), num_classes, names,
                                   seed)
    if x not in arrays or y not in arrays:
        raise _files.fail(path, f"expected arrays {x!r} and {y!r} (or {', '.join(split_names)}), "
                                f"found: {has}")
    features = _files.as_features(arrays[x], path, x)
    labels = _files.as_labels(arrays[y], path, y)
    _files.check_counts(features, labels, path, x, y)
    (labels,), num_classes, names = _files.encode_labels([labels], path, class_names)
    train, val, test = _files.split3(features, labels, path, val_fraction=val_fraction,
                                     test_fraction=test_fraction, seed=seed)
    return _files.make_dataset("npz", train, val, test, num_classes, names, seed)
