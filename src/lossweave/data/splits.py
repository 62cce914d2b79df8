"""The unseen-classes protocol of metric learning: train on some classes, evaluate on the others.

Deep metric learning benchmarks split by class, not by sample: CUB-200-2011
trains on its first 100 classes and retrieves among the other 100, Cars196
98 / 98, Stanford Online Products about half of its 22,634 products each
(Oh Song et al., "Deep Metric Learning via Lifted Structured Feature
Embedding", CVPR 2016, Sec. 5; kept by Musgrave et al., "A Metric Learning
Reality Check", ECCV 2020). The evaluation classes are never seen in
training, so the figures measure how the embedding generalises to new
classes, which a classification accuracy cannot.
"""

import dataclasses

import numpy as np

from lossweave.data import _arrays

WHO = "split_unseen_classes"


def _train_classes(classes, train_classes, who):
    """The sorted training classes: the first half by default, else the given ones (checked)."""
    if classes.size < 2:
        raise ValueError(f"{who}: expected samples of at least 2 classes (some to train on, some "
                         f"to evaluate on); received {classes.size} class(es).")
    if train_classes is None:
        return classes[: classes.size // 2]
    if isinstance(train_classes, (str, bytes)) or np.ndim(train_classes) > 1:
        raise ValueError(f"{who}: expected train_classes to be a list of class labels; received "
                         f"{train_classes!r}.")
    chosen = np.unique(np.asarray(train_classes).reshape(-1))
    if chosen.size and not np.issubdtype(chosen.dtype, np.integer):
        if not np.issubdtype(chosen.dtype, np.floating) or np.any(chosen != np.round(chosen)):
            raise ValueError(f"{who}: expected integer class labels in train_classes; received "
                             f"{train_classes!r}.")
        chosen = chosen.astype("int64")
    missing = chosen[~np.isin(chosen, classes)]
    if missing.size:
        raise ValueError(f"{who}: train_classes {missing.tolist()} do not occur in the labels; "
                         f"the classes are {classes.tolist()}.")
    if chosen.size == 0 or chosen.size == classes.size:
        raise ValueError(
            f"{who}: expected train_classes to leave classes on both sides; received "
            f"{chosen.size} of the {classes.size} classes. Pass some but not all of "
            f"{classes.tolist()}, or None for the first half."
        )
    return chosen


def split_unseen_classes(x, y, train_classes=None, labels_key="label"):
    """Split samples by class: the training classes on one side, the unseen classes on the other.

    Every sample of a training class goes to the training part, every sample
    of another class to the evaluation part (the protocol of Oh Song et al.,
    CVPR 2016, Sec. 5): e.g. digits 0-4 to train on and 5-9 to evaluate
    retrieval on. Rows keep their order and labels keep their values (they
    are not renumbered), so class names still apply.

    Args:
        x: inputs: an array or a dict of arrays, one row per sample.
        y: class labels ``(n,)`` or ``(n, 1)``, or a dict of target arrays of
            which ``labels_key`` names the class labels.
        train_classes: the label values to train on; default: the first half
            of the sorted classes (``K // 2`` of ``K``), i.e. 0-4 of 0-9.
        labels_key: the key of the class labels when ``y`` is a dict.

    Returns:
        ``((x_train, y_train), (x_eval, y_eval))`` with the structure of
        ``x`` and ``y``.

    Raises:
        ValueError: fewer than two classes, ``train_classes`` that do not
            occur in ``y`` or that take none or all of the classes,
            non-integer labels, or ``x`` and ``y`` of different lengths.

    Example:
        >>> x = np.arange(12.0)[:, None]
        >>> y = np.arange(12) % 4
        >>> (x_train, y_train), (x_eval, y_eval) = split_unseen_classes(x, y)
        >>> sorted(set(y_train.tolist())), sorted(set(y_eval.tolist()))
        ([0, 1], [2, 3])
        >>> split_unseen_classes(x, y, train_classes=[3])[0][1].tolist()
        [3, 3, 3]
    """
    x, n_x = _arrays.as_rows(x, "x", WHO)
    y, n_y = _arrays.as_rows(y, "y", WHO)
    if n_x != n_y:
        raise ValueError(f"{WHO}: x has {n_x} rows and y has {n_y}; expected one target row per "
                         "input row.")
    labels = _arrays.class_labels(y, labels_key, WHO)
    train = np.isin(labels, _train_classes(np.unique(labels), train_classes, WHO))
    return ((_arrays.take(x, train), _arrays.take(y, train)),
            (_arrays.take(x, ~train), _arrays.take(y, ~train)))


def unseen_classes_dataset(dataset, train_classes=None):
    """A :class:`lossweave.data.Dataset` re-split by class for the unseen-classes protocol.

    * train and validation: the dataset's own train and validation rows of
      the training classes (its stratified split is kept, so a validation
      loss still measures the training classes);
    * test: every row of the other classes, from all three parts: the
      evaluation set of retrieval on classes never seen in training.

    The original test rows of the training classes are left out: they are
    neither training data nor unseen classes.

    Labels, ``num_classes`` and ``class_names`` are unchanged (a classifier
    head keeps ``num_classes`` outputs; the test classes' outputs are never
    trained). A :class:`lossweave.data.MultiTaskDataset` keeps its targets,
    split the same way.

    Args:
        dataset: a :class:`lossweave.data.Dataset` (e.g. ``data.load("digits")``).
        train_classes: the label values to train on; default: the first half
            of the sorted classes present.

    Returns:
        A dataset of the same type and name.

    Raises:
        ValueError: as :func:`split_unseen_classes`.

    Example:
        >>> from lossweave import data
        >>> digits = data.load("digits", seed=0)
        >>> ds = unseen_classes_dataset(digits)
        >>> sorted(set(ds.y_train.tolist())), sorted(set(ds.y_test.tolist()))
        ([0, 1, 2, 3, 4], [5, 6, 7, 8, 9])
        >>> sum(ds.sizes().values()) == 1797 - int((digits.y_test < 5).sum())
        True
    """
    from lossweave.data import Dataset, MultiTaskDataset

    who = "unseen_classes_dataset"
    if not isinstance(dataset, Dataset):
        raise ValueError(f"{who}: expected a lossweave.data.Dataset; received "
                         f"{type(dataset).__name__}. For arrays use split_unseen_classes(x, y).")
    parts = ("train", "val", "test")
    ys = {part: getattr(dataset, f"y_{part}") for part in parts}
    classes = np.unique(np.concatenate([_arrays.class_labels(ys[p], None, who) for p in parts]))
    chosen = _train_classes(classes, train_classes, who)
    keep = {part: np.isin(ys[part], chosen) for part in parts}
    changes = {
        "x_train": dataset.x_train[keep["train"]], "y_train": ys["train"][keep["train"]],
        "x_val": dataset.x_val[keep["val"]], "y_val": ys["val"][keep["val"]],
        "x_test": np.concatenate([getattr(dataset, f"x_{p}")[~keep[p]] for p in parts]),
        "y_test": np.concatenate([ys[p][~keep[p]] for p in parts]),
    }
    if isinstance(dataset, MultiTaskDataset):
        changes["targets_train"] = _arrays.take(dataset.targets_train, keep["train"])
        changes["targets_val"] = _arrays.take(dataset.targets_val, keep["val"])
        changes["targets_test"] = {
            key: np.concatenate([dataset.targets(p)[key][~keep[p]] for p in parts])
            for key in dataset.targets_test
        }
    return dataclasses.replace(dataset, **changes)
