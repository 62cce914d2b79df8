"""scikit-learn's bundled handwritten digits (8x8 images, 10 classes, 1797 samples).

The data ship inside scikit-learn, so nothing is downloaded.
"""

import numpy as np

from lossweave.data import Dataset, stratified_split

NUM_CLASSES = 10


def load_digits(seed=0, val_fraction=0.2, test_fraction=0.2):
    """The digits as flat 64-pixel vectors scaled to [0, 1], split with a seed.

    The split is stratified (each part keeps the class proportions), disjoint
    and deterministic for a given ``seed``.

    Args:
        seed: seed of the split.
        val_fraction: share of the samples in the validation part.
        test_fraction: share of the samples in the test part.

    Returns:
        A ``lossweave.data.Dataset``: float32 ``(n, 64)`` features, int32 labels.

    Example:
        >>> ds = load_digits(seed=0)
        >>> ds.sizes()
        {'train': 1077, 'val': 360, 'test': 360}
        >>> float(ds.x_train.min()), float(ds.x_train.max())
        (0.0, 1.0)
    """
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    x = (np.asarray(bunch.data, dtype="float32") / 16.0).astype("float32")  # pixels are 0..16
    y = np.asarray(bunch.target, dtype="int32")
    train, val, test = stratified_split(
        x, y, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed
    )
    return Dataset(
        name="digits",
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
