"""A generated multi-task data set on scikit-learn's bundled digits (no download).

One input (the 8x8 digit, flat 64 pixels in [0, 1], as ``load_digits``) and
four named targets of different kinds and scales, computed from the image
and its label:

* ``label``: the digit, 10 classes (int32, ``(n,)``);
* ``parity``: 0 for even digits, 1 for odd (int32, ``(n,)``);
* ``ink``: mean pixel intensity in [0, 1] (float32, ``(n, 1)``), a small-scale
  regression target;
* ``top``: the share of the ink in the top half of the image, in percent
  (float32, ``(n, 1)``), a regression target whose squared error is 100x+
  larger than the others' (the loss-scale gap of ``benchmarks/multitask.py``,
  which uses the top 4 rows the same way).
"""

import numpy as np

from lossweave.data import MultiTaskDataset, stratified_split

TARGETS = ("label", "parity", "ink", "top")
NUM_CLASSES = 10


def load_multitask(seed=0, n=None, val_fraction=0.2, test_fraction=0.2, targets=TARGETS):
    """Digits with several targets, split with a seed into a ``MultiTaskDataset``.

    The split is stratified by digit, disjoint and deterministic for a given
    ``seed``; every target is split with the same rows. ``y_train`` (and
    ``y_val``, ``y_test``) are the digit labels, so the result also works
    wherever a plain ``Dataset`` is expected.

    Args:
        seed: seed of the split (and of the subsample when ``n`` is given).
        n: number of samples, at most 1797 (all, the default); a smaller
            ``n`` takes a stratified, seeded subsample.
        val_fraction, test_fraction: shares of the validation and test parts.
        targets: names of the targets to include, among
            ``"label"``, ``"parity"``, ``"ink"``, ``"top"``; ``"label"`` is
            always included.

    Returns:
        A ``lossweave.data.MultiTaskDataset`` named ``"multitask"``;
        ``tasks`` is ``{"label": 10, "parity": 2, "ink": None, "top": None}``
        (number of classes, None for regression).

    Example:
        >>> ds = load_multitask(seed=0)
        >>> ds.sizes(), ds.tasks
        ({'train': 1077, 'val': 360, 'test': 360}, {'label': 10, 'parity': 2, 'ink': None, 'top': None})
        >>> {k: v.shape for k, v in ds.targets("train").items()}
        {'label': (1077,), 'parity': (1077,), 'ink': (1077, 1), 'top': (1077, 1)}
        >>> bool((ds.targets_train["label"] == ds.y_train).all())
        True
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    unknown = [t for t in targets if t not in TARGETS]
    if isinstance(targets, str) or unknown:
        raise ValueError(f"load_multitask: targets must be names among {', '.join(TARGETS)}; "
                         f"received {targets!r}.")
    names = ("label",) + tuple(t for t in TARGETS if t in targets and t != "label")

    bunch = load_digits()
    images = np.asarray(bunch.images, dtype="float64")  # (n, 8, 8), pixels 0..16
    digit = np.asarray(bunch.target, dtype="int32")
    total = len(digit)
    index = np.arange(total)
    if n is not None:
        n = int(n)
        if not NUM_CLASSES * 3 <= n <= total:
            raise ValueError(f"load_multitask: n must be between {NUM_CLASSES * 3} and {total} "
                             f"(the bundled digits); received {n}.")
        if n < total:
            index, _ = train_test_split(index, train_size=n, stratify=digit, random_state=seed)
            index = np.sort(index)
    images, digit = images[index], digit[index]

    ink = images.sum(axis=(1, 2))
    columns = {
        "label": digit,
        "parity": (digit % 2).astype("int32"),
        "ink": (ink / (16.0 * 64)).astype("float32")[:, None],
        "top": (100.0 * images[:, :4, :].sum(axis=(1, 2)) / ink).astype("float32")[:, None],
    }
    tasks = {"label": NUM_CLASSES, "parity": 2, "ink": None, "top": None}
    x = (images.reshape(len(images), 64) / 16.0).astype("float32")

    rows = np.arange(len(x))
    (i_train, y_train), (i_val, y_val), (i_test, y_test) = stratified_split(
        rows, digit, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed
    )

    def part(i):
        return {name: np.ascontiguousarray(columns[name][i]) for name in names}

    return MultiTaskDataset(
        name="multitask",
        x_train=x[i_train],
        y_train=y_train,
        x_val=x[i_val],
        y_val=y_val,
        x_test=x[i_test],
        y_test=y_test,
        num_classes=NUM_CLASSES,
        class_names=tuple(str(c) for c in range(NUM_CLASSES)),
        seed=int(seed),
        targets_train=part(i_train),
        targets_val=part(i_val),
        targets_test=part(i_test),
        tasks={name: tasks[name] for name in names},
    )
