"""lossweave.data: the registry and the bundled digits (stratified, seeded, disjoint split)."""

import numpy as np
import pytest

from conftest import one_backend
from lossweave import data
from lossweave.data.digits import load_digits

pytestmark = one_backend  # NumPy loaders (and TensorFlow's image reader whatever the backend)


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
    with pytest.raises(ValueError, match=r"unknown data 'cifar'; choose from: digits"):
        data.load("cifar")


# --------------------------------------------------------------------------------------------
# File-based loaders: IDX, npz, image folder; the generated multi-task set.
# --------------------------------------------------------------------------------------------

import gzip  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import struct  # noqa: E402

from lossweave.data import DataError, MultiTaskDataset  # noqa: E402
from lossweave.data.folder import load_folder  # noqa: E402
from lossweave.data.idx import load_idx, read_idx  # noqa: E402
from lossweave.data.multitask import load_multitask  # noqa: E402
from lossweave.data.npz import load_npz  # noqa: E402

IDX_CODES = {"u1": 0x08, "i1": 0x09, ">i2": 0x0B, ">i4": 0x0C, ">f4": 0x0D, ">f8": 0x0E}


def idx_bytes(array, dtype="u1"):
    array = np.asarray(array).astype(dtype)
    head = struct.pack(">BBBB", 0, 0, IDX_CODES[dtype], array.ndim)
    return head + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_idx(path, array, dtype="u1", gz=False):
    raw = idx_bytes(array, dtype)
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def make_images(n, seed, shape=(28, 28)):
    return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype="uint8")


def make_labels(n, k=3):
    return (np.arange(n) % k).astype("uint8")


def mnist_folder(folder, n_train=60, n_test=30, gz=False, test=True):
    folder.mkdir(exist_ok=True)
    suffix = ".gz" if gz else ""
    write_idx(folder / f"train-images-idx3-ubyte{suffix}", make_images(n_train, 1), gz=gz)
    write_idx(folder / f"train-labels-idx1-ubyte{suffix}", make_labels(n_train), gz=gz)
    if test:
        write_idx(folder / f"t10k-images-idx3-ubyte{suffix}", make_images(n_test, 2), gz=gz)
        write_idx(folder / f"t10k-labels-idx1-ubyte{suffix}", make_labels(n_test), gz=gz)
    return folder


def assert_split(ds, x_all, y_all=None):
    """Disjoint, complete, typed split of exactly the rows of ``x_all``."""
    parts = [ds.x_train, ds.x_val, ds.x_test]
    for x, y in zip(parts, (ds.y_train, ds.y_val, ds.y_test)):
        assert x.dtype == np.float32 and y.dtype == np.int32 and y.shape == (len(x),)
        assert y.min() >= 0 and y.max() < ds.num_classes
    rows = [_rows(x) for x in parts]
    assert sum(len(r) for r in rows) == sum(len(x) for x in parts)  # rows are distinct
    assert not rows[0] & rows[1] and not rows[0] & rows[2] and not rows[1] & rows[2]
    assert rows[0] | rows[1] | rows[2] == _rows(x_all)
    if y_all is not None:  # each row keeps its own label
        lookup = {row.tobytes(): label for row, label in zip(np.ascontiguousarray(x_all), y_all)}
        for x, y in zip(parts, (ds.y_train, ds.y_val, ds.y_test)):
            assert [lookup[row.tobytes()] for row in np.ascontiguousarray(x)] == y.tolist()


def assert_same(a, b):
    for field in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


def raises_naming(path, match):
    return pytest.raises(DataError, match=rf"^data: {re.escape(os.fspath(path))}: .*{match}")



# ---- IDX ------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", sorted(IDX_CODES))
@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_types(tmp_path, dtype, gz):
    array = np.arange(24).reshape(2, 3, 4) - (0 if dtype == "u1" else 5)
    file = write_idx(tmp_path / "a.idx", array, dtype, gz=gz)  # gzip found by magic, not name
    out = read_idx(file)
    assert out.shape == (2, 3, 4) and out.dtype == np.dtype(dtype).newbyteorder("=")
    np.testing.assert_array_equal(out, array.astype(dtype))


@pytest.mark.parametrize("gz", [False, True])
def test_idx_folder_with_t10k(tmp_path, gz):
    folder = mnist_folder(tmp_path / "mnist", gz=gz)
    ds = load_idx(folder, seed=0, val_fraction=0.25)
    assert ds.name == "idx" and ds.input_shape == (28, 28, 1)
    assert ds.sizes() == {"train": 45, "val": 15, "test": 30}
    assert ds.num_classes == 3 and ds.class_names == ("0", "1", "2")
    np.testing.assert_array_equal(ds.x_test[..., 0], make_images(30, 2) / np.float32(255))
    np.testing.assert_array_equal(ds.y_test, make_labels(30))
    train_x = (make_images(60, 1) / np.float32(255)).astype("float32")[..., None]
    both = np.concatenate([ds.x_train, ds.x_val])
    assert _rows(both) == _rows(train_x) and not _rows(ds.x_train) & _rows(ds.x_val)
    assert np.bincount(ds.y_val).tolist() == [5, 5, 5]  # stratified
    assert float(ds.x_train.min()) >= 0.0 and float(ds.x_train.max()) <= 1.0
    assert_same(ds, load_idx(folder, seed=0, val_fraction=0.25))
    assert _rows(load_idx(folder, seed=1, val_fraction=0.25).x_val) != _rows(ds.x_val)


def test_idx_folder_without_t10k_splits_three_ways(tmp_path):
    folder = mnist_folder(tmp_path / "m", n_train=50, test=False)
    ds = load_idx(folder, seed=3)
    assert ds.sizes() == {"train": 30, "val": 10, "test": 10}
    x_all = (make_images(50, 1) / np.float32(255)).astype("float32")[..., None]
    assert_split(ds, x_all, make_labels(50))


def test_idx_explicit_pair_and_registry(tmp_path):
    images = write_idx(tmp_path / "imgs.bin", make_images(40, 4, shape=(5, 6)), gz=True)
    labels = write_idx(tmp_path / "labs.bin", np.arange(40) % 4 + 3)  # labels 3..6 -> 0..3
    ds = load_idx(images=images, labels=labels, seed=0)
    assert ds.input_shape == (5, 6, 1) and ds.num_classes == 4
    assert ds.class_names == ("3", "4", "5", "6")
    x_all = (make_images(40, 4, shape=(5, 6)) / np.float32(255)).astype("float32")[..., None]
    assert_split(ds, x_all, np.arange(40) % 4)
    named = load_idx(images=images, labels=write_idx(tmp_path / "l0", np.arange(40) % 4),
                     class_names=["a", "b", "c", "d"])
    assert named.class_names == ("a", "b", "c", "d")
    assert_same(data.load("idx", images=str(images), labels=str(labels), seed=0), ds)
    assert_same(data.load("idx", path=mnist_folder(tmp_path / "f")), load_idx(tmp_path / "f"))


def test_idx_errors(tmp_path):
    good = write_idx(tmp_path / "good", make_labels(30))
    imgs = write_idx(tmp_path / "imgs", make_images(30, 0))
    with raises_naming(tmp_path / "nope", "no such file"):
        read_idx(tmp_path / "nope")
    bad_magic = tmp_path / "magic"
    bad_magic.write_bytes(b"\x08\x03\x00\x00" + good.read_bytes()[4:])
    with raises_naming(bad_magic, "magic number .* found 08 03 00 00"):
        read_idx(bad_magic)
    truncated = tmp_path / "truncated.gz"
    truncated.write_bytes(gzip.compress(imgs.read_bytes()[:-10]))
    with raises_naming(truncated, r"expected 23520 data bytes .*found 23510 \(truncated\)"):
        read_idx(truncated)
    short = tmp_path / "short"
    short.write_bytes(imgs.read_bytes()[:9])
    with raises_naming(short, "truncated"):
        read_idx(short)
    corrupt = tmp_path / "corrupt-idx1-ubyte.gz"
    corrupt.write_bytes(gzip.compress(good.read_bytes())[:-12])
    with raises_naming(corrupt, "gzip"):
        read_idx(corrupt)
    garbage = tmp_path / "garbage.gz"
    garbage.write_bytes(b"\x1f\x8b" + b"not gzip at all" * 3)
    with raises_naming(garbage, "corrupt"):
        read_idx(garbage)
    fewer = write_idx(tmp_path / "fewer", make_labels(29))
    with raises_naming(fewer, "expected 30 labels .*found 29"):
        load_idx(images=imgs, labels=fewer)
    floats = write_idx(tmp_path / "floats", np.linspace(0, 2, 30), ">f4")
    with raises_naming(floats, "non-integer"):
        load_idx(images=imgs, labels=floats)
    wide = write_idx(tmp_path / "wide", make_labels(30).reshape(30, 1))
    with raises_naming(wide, r"shape \(n,\)"):
        load_idx(images=imgs, labels=wide)
    with raises_naming(good, r"labels in \[0, 2\) .*found 2"):
        load_idx(images=imgs, labels=good, class_names=["a", "b"])
    with raises_naming(tmp_path / "missing", "nothing"):
        load_idx(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with raises_naming(empty, "train-images-idx3-ubyte.* found: nothing"):
        load_idx(empty)
    half = mnist_folder(tmp_path / "half")
    (half / "t10k-labels-idx1-ubyte").unlink()
    with raises_naming(half / "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        load_idx(half)
    with pytest.raises(ValueError, match="needs path="):
        data.load("idx")
    with pytest.raises(ValueError, match="not both"):
        load_idx(half, images=imgs, labels=good)


# ---- npz ------------------------------------------------------------------------------------

def test_npz_single_array_pair(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 2, 3))
    y = np.repeat([-1.0, 5.0, 12.0], 20)  # integer-valued floats, arbitrary values
    file = tmp_path / "d.npz"
    np.savez(file, x=x, y=y)
    ds = load_npz(file, seed=0)
    assert ds.name == "npz" and ds.input_shape == (2, 3) and ds.num_classes == 3
    assert ds.class_names == ("-1", "5", "12")
    assert ds.sizes() == {"train": 36, "val": 12, "test": 12}
    assert_split(ds, x.astype("float32"), np.repeat([0, 1, 2], 20))
    assert_same(ds, load_npz(file, seed=0))
    assert _rows(load_npz(file, seed=1).x_test) != _rows(ds.x_test)
    assert_same(data.load("npz", path=str(file), seed=0), ds)


def test_npz_named_arrays_and_uint8(tmp_path):
    file = tmp_path / "img.npz"
    images = make_images(30, 5, shape=(4, 4))
    np.savez(file, pixels=images, target=make_labels(30).reshape(30, 1))
    ds = load_npz(file, x="pixels", y="target", seed=2, class_names=["a", "b", "c"])
    assert ds.class_names == ("a", "b", "c")
    assert_split(ds, (images / np.float32(255)).astype("float32"), make_labels(30))


def test_npz_explicit_splits(tmp_path):
    rng = np.random.default_rng(1)
    arrays = {f"{a}_{p}": None for a in "xy" for p in ("train", "val", "test")}
    for part, n in (("train", 30), ("val", 9), ("test", 12)):
        arrays[f"x_{part}"] = rng.normal(size=(n, 4)).astype("float32")
        arrays[f"y_{part}"] = np.arange(n) % 3 + 1  # labels 1..3 -> 0..2
    with_val = tmp_path / "with_val.npz"
    np.savez(with_val, **arrays)
    ds = load_npz(with_val, seed=0)
    for part in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(ds, f"x_{part}"), arrays[f"x_{part}"])
        np.testing.assert_array_equal(getattr(ds, f"y_{part}"), arrays[f"y_{part}"] - 1)
    assert ds.class_names == ("1", "2", "3")
    without_val = tmp_path / "without_val.npz"
    np.savez(without_val, **{k: v for k, v in arrays.items() if "val" not in k})
    ds = load_npz(without_val, seed=0, val_fraction=0.2)
    assert ds.sizes() == {"train": 24, "val": 6, "test": 12}
    np.testing.assert_array_equal(ds.x_test, arrays["x_test"])
    assert _rows(np.concatenate([ds.x_train, ds.x_val])) == _rows(arrays["x_train"])
    assert_same(ds, load_npz(without_val, seed=0, val_fraction=0.2))


def test_npz_errors(tmp_path):
    def npz(name, **arrays):
        np.savez(tmp_path / name, **arrays)
        return tmp_path / name

    x = np.zeros((12, 3))
    with raises_naming(tmp_path / "none.npz", "no such file"):
        load_npz(tmp_path / "none.npz")
    with raises_naming(tmp_path, "a folder"):
        load_npz(tmp_path)
    wrong = npz("wrong.npz", features=x, labels=np.arange(12) % 2)
    with raises_naming(wrong, r"expected arrays 'x' and 'y'.* found: features \(12, 3\), labels \(12,\)"):
        load_npz(wrong)
    with raises_naming(npz("frac.npz", x=x, y=np.arange(12) / 4), "non-integer value 0.25"):
        load_npz(tmp_path / "frac.npz")
    with raises_naming(npz("nan.npz", x=x, y=np.where(np.arange(12) == 3, np.nan, 1.0)),
                       "non-integer value nan at index 3"):
        load_npz(tmp_path / "nan.npz")
    with raises_naming(npz("text.npz", x=x, y=np.array(["a"] * 12)), "integer class y, found dtype"):
        load_npz(tmp_path / "text.npz")
    with raises_naming(npz("range.npz", x=x, y=np.arange(12) % 3), r"labels in \[0, 2\).*found 2"):
        load_npz(tmp_path / "range.npz", class_names=["a", "b"])
    with raises_naming(npz("count.npz", x=x, y=np.arange(11) % 2), "12 x and 11 y"):
        load_npz(tmp_path / "count.npz")
    with raises_naming(npz("one.npz", x=x, y=np.ones(12)), "at least 2 classes"):
        load_npz(tmp_path / "one.npz")
    with raises_naming(npz("inf.npz", x=np.full((12, 3), np.inf), y=np.arange(12) % 2), "finite"):
        load_npz(tmp_path / "inf.npz")
    with raises_naming(npz("tiny.npz", x=x, y=np.r_[np.zeros(11), 1]), "stratified split"):
        load_npz(tmp_path / "tiny.npz")
    half_val = npz("half_val.npz", x_train=x, y_train=np.arange(12) % 2, x_test=x,
                   y_test=np.arange(12) % 2, x_val=x)
    with raises_naming(half_val, "both x_val and y_val"):
        load_npz(half_val)
    notzip = tmp_path / "notzip.npz"
    notzip.write_bytes(b"hello")
    with raises_naming(notzip, "no zip archive"):
        load_npz(notzip)
    single = tmp_path / "single.npz"
    with open(single, "wb") as handle:
        np.save(handle, x)
    with raises_naming(single, "single .npy array"):
        load_npz(single)
    objects = tmp_path / "objects.npz"
    np.savez(objects, x=np.array([{"a": 1}] * 12, dtype=object), y=np.arange(12) % 2)
    with raises_naming(objects, "plain numeric arrays"):
        load_npz(objects)
    with pytest.raises(ValueError, match=r"load_npz: needs path="):
        data.load("npz")
    with pytest.raises(ValueError, match="bundled and reads no file"):
        data.load("digits", path="x.npz")


# ---- image folder ---------------------------------------------------------------------------

def write_png_folder(folder, classes=("cat", "dog", "emu"), per_class=5, mode="L"):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        (folder / name).mkdir(parents=True)
        for i in range(per_class):
            shape = (10, 12) if mode == "L" else (10, 12, 3)
            pixels = rng.integers(0, 256, shape, dtype="uint8")
            Image.fromarray(pixels, mode=mode).save(folder / name / f"{i}.png")
    return folder


def test_folder_grayscale(tmp_path):
    folder = write_png_folder(tmp_path / "pets")
    ds = load_folder(folder, image_size=(10, 12), seed=0)
    assert ds.name == "folder" and ds.class_names == ("cat", "dog", "emu")
    assert ds.input_shape == (10, 12, 1) and ds.num_classes == 3
    assert ds.sizes() == {"train": 9, "val": 3, "test": 3}
    from PIL import Image

    x_all, y_all = [], []
    for c, name in enumerate(ds.class_names):  # same size: no resampling, exact pixels
        for i in range(5):
            x_all.append(np.asarray(Image.open(folder / name / f"{i}.png"))[..., None] / np.float32(255))
            y_all.append(c)
    assert_split(ds, np.stack(x_all).astype("float32"), y_all)
    assert_same(ds, load_folder(folder, image_size=(10, 12), seed=0))
    assert_same(data.load("folder", path=str(folder), image_size=(10, 12)), ds)


def test_folder_rgb_resized(tmp_path):
    folder = write_png_folder(tmp_path / "rgb", classes=("a", "b"), per_class=5, mode="RGB")
    ds = load_folder(folder, image_size=(6, 7), color_mode="rgb", seed=1)
    assert ds.input_shape == (6, 7, 3) and ds.x_train.dtype == np.float32
    assert 0.0 <= float(ds.x_train.min()) and float(ds.x_train.max()) <= 1.0


def test_folder_errors(tmp_path):
    with raises_naming(tmp_path / "nothing", "found nothing"):
        load_folder(tmp_path / "nothing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with raises_naming(empty, "at least 2 class sub-folders, found 0"):
        load_folder(empty)
    single = write_png_folder(tmp_path / "single", classes=("only",))
    with raises_naming(single, r"found 1 \(only\)"):
        load_folder(single)
    hollow = write_png_folder(tmp_path / "hollow", classes=("a", "b"))
    (hollow / "c").mkdir()
    with raises_naming(hollow / "c", "found none"):
        load_folder(hollow)
    broken = write_png_folder(tmp_path / "broken", classes=("a", "b"))
    (broken / "b" / "3.png").write_bytes(b"\x89PNG but not really an image")
    with raises_naming(broken / "b" / "3.png", "unreadable"):
        load_folder(broken)
    with pytest.raises(ValueError, match="color_mode"):
        load_folder(broken, color_mode="cmyk")
    with pytest.raises(ValueError, match="load_folder: needs path="):
        data.load("folder")


# ---- multi-task -----------------------------------------------------------------------------

def test_multitask():
    ds = load_multitask(seed=0)
    assert isinstance(ds, MultiTaskDataset) and isinstance(ds, data.Dataset)
    assert ds.tasks == {"label": 10, "parity": 2, "ink": None, "top": None}
    digits = load_digits(seed=0)
    assert_same(ds, digits)  # same rows and split as the plain digits
    for part in ("train", "val", "test"):
        t = ds.targets(part)
        y = getattr(ds, f"y_{part}")
        x = getattr(ds, f"x_{part}")
        np.testing.assert_array_equal(t["label"], y)
        np.testing.assert_array_equal(t["parity"], y % 2)
        assert t["label"].dtype == t["parity"].dtype == np.int32
        assert t["ink"].shape == t["top"].shape == (len(y), 1) and t["ink"].dtype == np.float32
        np.testing.assert_allclose(t["ink"][:, 0], x.mean(axis=1), rtol=1e-5)
        top = x.reshape(-1, 8, 8)[:, :4].sum(axis=(1, 2)) / x.sum(axis=1)
        np.testing.assert_allclose(t["top"][:, 0], 100 * top, rtol=1e-4)
    assert 0 <= ds.targets_train["top"].min() and ds.targets_train["top"].max() <= 100


def test_multitask_options():
    ds = data.load("multitask", seed=4, n=300, targets=("parity",))
    assert sum(ds.sizes().values()) == 300 and set(ds.targets_val) == {"label", "parity"}
    assert ds.tasks == {"label": 10, "parity": 2}
    assert_same(ds, load_multitask(seed=4, n=300, targets=("parity",)))
    with pytest.raises(ValueError, match="targets"):
        load_multitask(targets=("colour",))
    with pytest.raises(ValueError, match="n must be"):
        load_multitask(n=5000)


def test_registry_names_and_paths():
    assert data.names() == ["digits", "folder", "idx", "mnist", "multitask", "npz"]
    assert [n for n in data.names() if data.takes_path(n)] == ["folder", "idx", "npz"]
    assert issubclass(DataError, ValueError)
