"""lossweave.data.split_unseen_classes / unseen_classes_dataset: the unseen-classes protocol."""

import numpy as np
import pytest
from conftest import one_backend

from lossweave import data
from lossweave.data import split_unseen_classes, unseen_classes_dataset

pytestmark = one_backend


def _rows(x):
    return [row.tobytes() for row in np.ascontiguousarray(x)]


def test_default_trains_on_the_first_half_of_the_sorted_classes():
    rng = np.random.default_rng(0)
    y = rng.permutation(np.repeat([3, 7, 11, 20, 42], 6))  # 5 classes, not 0..K-1
    x = rng.normal(size=(y.size, 4))
    (x_train, y_train), (x_eval, y_eval) = split_unseen_classes(x, y)
    assert set(y_train) == {3, 7} and set(y_eval) == {11, 20, 42}  # 5 // 2 = 2 classes
    # Every row on the side of its class, in its original order, with its label.
    train = np.isin(y, [3, 7])
    assert _rows(x_train) == _rows(x[train]) and y_train.tolist() == y[train].tolist()
    assert _rows(x_eval) == _rows(x[~train]) and y_eval.tolist() == y[~train].tolist()


def test_given_classes_dicts_and_column_labels():
    y = np.arange(40) % 10
    x = {"a": np.arange(40.0)[:, None], "b": np.arange(40) * 2}
    targets = {"label": y[:, None].astype("float32"), "parity": y % 2}
    (x_train, y_train), (x_eval, y_eval) = split_unseen_classes(x, targets, train_classes=[9, 0, 9])
    assert set(x_train) == {"a", "b"} and set(y_train) == {"label", "parity"}
    assert sorted(set(y_train["label"][:, 0].tolist())) == [0.0, 9.0]
    np.testing.assert_array_equal(x_train["b"], 2 * x_train["a"][:, 0])
    np.testing.assert_array_equal(y_eval["parity"], y_eval["label"][:, 0] % 2)
    assert len(y_eval["label"]) == 32


def test_digits_zero_to_four_then_five_to_nine():
    digits = data.load("digits", seed=0)
    ds = unseen_classes_dataset(digits)
    assert (ds.name, ds.num_classes, ds.class_names) == (digits.name, 10, digits.class_names)
    assert set(ds.y_train) == set(ds.y_val) == {0, 1, 2, 3, 4}
    assert set(ds.y_test) == {5, 6, 7, 8, 9}
    # train / val: the digits' own rows of the seen classes; test: every row of the others.
    assert _rows(ds.x_train) == _rows(digits.x_train[digits.y_train < 5])
    assert _rows(ds.x_val) == _rows(digits.x_val[digits.y_val < 5])
    everything = np.concatenate([digits.x_train, digits.x_val, digits.x_test])
    labels = np.concatenate([digits.y_train, digits.y_val, digits.y_test])
    assert sorted(_rows(ds.x_test)) == sorted(_rows(everything[labels >= 5]))
    assert ds.x_test.dtype == np.float32 and ds.y_test.dtype == np.int32
    for x, y in ((ds.x_train, ds.y_train), (ds.x_val, ds.y_val), (ds.x_test, ds.y_test)):
        lookup = {row: label for row, label in zip(_rows(everything), labels)}
        assert [lookup[row] for row in _rows(x)] == y.tolist()
    custom = unseen_classes_dataset(digits, train_classes=[1, 3, 5, 7, 9])
    assert set(custom.y_train) == {1, 3, 5, 7, 9} and set(custom.y_test) == {0, 2, 4, 6, 8}


def test_multitask_targets_follow_their_rows():
    ds = unseen_classes_dataset(data.load("multitask", seed=1, n=300))
    assert type(ds) is data.MultiTaskDataset
    for part in ("train", "val", "test"):
        targets, y = ds.targets(part), getattr(ds, f"y_{part}")
        np.testing.assert_array_equal(targets["label"], y)
        np.testing.assert_array_equal(targets["parity"], y % 2)
        x = getattr(ds, f"x_{part}")
        np.testing.assert_allclose(targets["ink"][:, 0], x.mean(axis=1), rtol=1e-5)
    assert set(ds.y_test) == {5, 6, 7, 8, 9}


@pytest.mark.parametrize(
    "y, kwargs, match",
    [
        (np.zeros(6, int), {}, r"at least 2 classes.*received 1"),
        (np.arange(6) % 3, {"train_classes": [4]}, r"train_classes \[4\] do not occur.*\[0, 1, 2\]"),
        (np.arange(6) % 3, {"train_classes": [0, 1, 2]}, r"3 of the 3 classes"),
        (np.arange(6) % 3, {"train_classes": []}, r"0 of the 3 classes"),
        (np.arange(6) % 3, {"train_classes": [0.5]}, r"integer class labels in train_classes"),
        (np.arange(6) % 3, {"train_classes": "0"}, r"list of class labels"),
        (np.arange(6) + 0.5, {}, r"integer class labels in y; received 0.5"),
        (np.arange(5) % 3, {}, r"x has 6 rows and y has 5"),
    ],
)
def test_bad_input_is_refused(y, kwargs, match):
    with pytest.raises(ValueError, match=match):
        split_unseen_classes(np.zeros((6, 2)), y, **kwargs)


def test_unseen_classes_dataset_needs_a_dataset():
    with pytest.raises(ValueError, match="expected a lossweave.data.Dataset; received ndarray"):
        unseen_classes_dataset(np.zeros(3))
