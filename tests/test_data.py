"""lossweave.data: the registry and the bundled digits (stratified, seeded, disjoint split)."""

import numpy as np
import pytest

from lossweave import data
from lossweave.data.digits import load_digits


def _rows(x):
    return {row.tobytes() for row in np.ascontiguousarray(x)}


@pytest.fixture(scope="module")
def digits():
    return load_digits(seed=0)


def test_digits_arrays(digits):
    assert digits.name == "digits"
    assert digits.num_classes == 10
    assert digits.class_names == tuple(str(c) for c in range(10))
    assert digits.input_shape == (64,)
    for x, y in ((digits.x_train, digits.y_train), (digits.x_val, digits.y_val),
                 (digits.x_test, digits.y_test)):
        assert x.dtype == np.float32 and y.dtype == np.int32
        assert x.ndim == 2 and x.shape[1] == 64 and y.shape == (x.shape[0],)
        assert x.min() >= 0.0 and x.max() <= 1.0
        assert set(np.unique(y)) == set(range(10))
    assert max(digits.x_train.max(), digits.x_val.max(), digits.x_test.max()) == 1.0
    assert digits.sizes() == {"train": 1077, "val": 360, "test": 360}


def test_split_is_disjoint_and_complete(digits):
    from sklearn.datasets import load_digits as sklearn_digits

    parts = [_rows(digits.x_train), _rows(digits.x_val), _rows(digits.x_test)]
    assert not parts[0] & parts[1] and not parts[0] & parts[2] and not parts[1] & parts[2]
    everything = _rows((sklearn_digits().data / 16.0).astype("float32"))
    assert parts[0] | parts[1] | parts[2] == everything


def test_split_is_stratified(digits):
    y_all = np.concatenate([digits.y_train, digits.y_val, digits.y_test])
    totals = np.bincount(y_all, minlength=10)
    for y, fraction in ((digits.y_train, 0.6), (digits.y_val, 0.2), (digits.y_test, 0.2)):
        counts = np.bincount(y, minlength=10)
        assert np.all(np.abs(counts - fraction * totals) <= 1.5), (counts, fraction * totals)


def test_split_is_deterministic_per_seed(digits):
    again = load_digits(seed=0)
    for field in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(digits, field), getattr(again, field))
    other = load_digits(seed=1)
    assert _rows(other.x_test) != _rows(digits.x_test)
    assert other.sizes() == digits.sizes()


def test_custom_fractions():
    ds = load_digits(seed=3, val_fraction=0.1, test_fraction=0.3)
    assert ds.sizes() == {"train": 1077, "val": 180, "test": 540}


@pytest.mark.parametrize("val, test", [(0.0, 0.2), (0.2, 1.0), (0.5, 0.5), (-0.1, 0.2)])
def test_bad_fractions(val, test):
    with pytest.raises(ValueError, match="fraction"):
        load_digits(val_fraction=val, test_fraction=test)


def test_registry():
    assert "digits" in data.names()
    ds = data.load("digits", seed=0)
    assert ds.num_classes == 10
    with pytest.raises(ValueError, match=r"unknown data 'mnist'; choose from: digits"):
        data.load("mnist")
