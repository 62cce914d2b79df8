"""MNIST-format IDX files (MNIST, Fashion-MNIST, KMNIST, ...), gzipped or not.

The IDX format (http://yann.lecun.com/exdb/mnist/): a 4-byte magic number,
two zero bytes, a type code (``0x08`` unsigned byte, ``0x09`` signed byte,
``0x0B`` short, ``0x0C`` int, ``0x0D`` float, ``0x0E`` double) and the number
of dimensions; then one big-endian uint32 per dimension; then the values,
big-endian, in C order. A file is read as gzip when it starts with the gzip
magic bytes ``1f 8b``, whatever its name.

Nothing is downloaded: point ``path`` at a folder that already holds the files.
"""

import gzip
import os
import struct
import zlib

import numpy as np

from lossweave.data import _files

TYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

# part -> (images stem, labels stem), the usual MNIST / Fashion-MNIST file names
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(file):
    if not os.path.isfile(file):
        raise _files.fail(file, "expected an IDX file, found no such file")
    with open(file, "rb") as handle:
        raw = handle.read()
    if raw[:2] == GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as error:
            raise _files.fail(file, f"expected a valid gzip file, found a corrupt one ({error})") from None
    return raw


def read_idx(file):
    """Read one IDX file (gzipped or not) into a NumPy array of its stored type.

    Args:
        file: path of the file.

    Returns:
        An array with the shape of the header's dimensions and the dtype of
        its type code (native byte order: uint8, int8, int16, int32, float32
        or float64).

    Raises:
        DataError: missing file, corrupt gzip, wrong magic number, unknown
            type code, or a size that does not match the header.

    Example:
        >>> import os, struct, tempfile
        >>> file = os.path.join(tempfile.mkdtemp(), "labels-idx1-ubyte")
        >>> with open(file, "wb") as f:
        ...     _ = f.write(struct.pack(">BBBBI", 0, 0, 0x08, 1, 3) + bytes([7, 0, 9]))
        >>> read_idx(file)
        array([7, 0, 9], dtype=uint8)
    """
    file = os.fspath(file)
    raw = _read_bytes(file)
    if len(raw) < 4:
        raise _files.fail(file, f"expected an IDX header of at least 4 bytes, found {len(raw)} bytes")
    zero, code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or code not in TYPES:
        raise _files.fail(file, f"expected an IDX magic number 00 00 <type 08/09/0B/0C/0D/0E> <ndim>, "
                                f"found {raw[:4].hex(' ')}")
    if ndim == 0:
        raise _files.fail(file, "expected at least 1 dimension in the IDX header, found 0")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise _files.fail(file, f"expected {ndim} dimensions in a {header}-byte header, "
                                f"found a file of {len(raw)} bytes (truncated)")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = TYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    found = len(raw) - header
    if found != expected:
        what = "truncated" if found < expected else "trailing bytes"
        raise _files.fail(file, f"expected {expected} data bytes for shape {tuple(shape)} of "
                                f"{dtype.name}, found {found} ({what})")
    array = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


def _find(folder, stem):
    """The path of ``stem`` or ``stem.gz`` in ``folder``, else None."""
    for name in (stem, stem + ".gz"):
        candidate = os.path.join(folder, name)
        if os.path.isfile(candidate):
            return candidate
    return None


def _pair(images_file, labels_file):
    images = read_idx(images_file)
    labels = read_idx(labels_file)
    if images.ndim < 2:
        raise _files.fail(images_file, f"expected images of shape (n, rows, cols) or (n, d), "
                                       f"found shape {images.shape}")
    if labels.ndim != 1:
        raise _files.fail(labels_file, f"expected labels of shape (n,), found shape {labels.shape}")
    if np.issubdtype(labels.dtype, np.floating):
        _files.as_labels(labels, labels_file)  # non-integer values name the file
    if len(images) != len(labels):
        raise _files.fail(labels_file, f"expected {len(images)} labels (one per image in "
                                       f"{images_file}), found {len(labels)}")
    if images.ndim == 3:  # (n, rows, cols) -> channels last
        images = images[..., None]
    return _files.as_features(images, images_file, "images"), labels


def load_idx(path=None, *, images=None, labels=None, seed=0, val_fraction=0.2, test_fraction=0.2,
             class_names=None):
    """MNIST-format IDX images and labels, as float32 in [0, 1] with a channel axis.

    Two ways to name the files:

    * ``path``: a folder holding ``train-images-idx3-ubyte`` and
      ``train-labels-idx1-ubyte`` (each optionally ``.gz``). When
      ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` are there
      too, they are the test part and ``val_fraction`` of the *train files*
      is split off (stratified, seeded) as validation; ``test_fraction`` is
      unused. Without the t10k files the train files are split three ways.
    * ``images=`` and ``labels=``: one pair of files, split three ways:
      ``val_fraction`` and ``test_fraction`` of all samples.

    Shapes: ``(n, rows, cols)`` images become ``(n, rows, cols, 1)``
    (channels last, e.g. ``(n, 28, 28, 1)`` for MNIST); other shapes are
    kept. Unsigned-byte images are divided by 255; images of any other type
    are converted to float32 unchanged. Labels become int32 ``0..K-1``: the
    sorted distinct labels of all files are numbered in order and their
    original values are the class names (for MNIST labels 0..9 this changes
    nothing); pass ``class_names`` (K names, e.g. Fashion-MNIST's) to keep
    the labels as they are instead, which must then lie in ``[0, K)``.

    Args:
        path: folder with the MNIST file names; or None with ``images``/``labels``.
        images, labels: paths of one images file and one labels file.
        seed: seed of the split.
        val_fraction: share of the validation part (see above).
        test_fraction: share of the test part when there are no t10k files.
        class_names: optional display names, one per class.

    Returns:
        A ``lossweave.data.Dataset`` named ``"idx"``.

    Raises:
        ValueError: neither ``path`` nor both ``images`` and ``labels``.
        DataError: a missing or malformed file, or image/label counts that differ.

    Example:
        >>> import os, struct, tempfile
        >>> import numpy as np
        >>> folder = tempfile.mkdtemp()
        >>> def write(name, code, array):
        ...     head = struct.pack(">BBBB", 0, 0, code, array.ndim)
        ...     head += struct.pack(f">{array.ndim}I", *array.shape)
        ...     with open(os.path.join(folder, name), "wb") as f:
        ...         _ = f.write(head + array.tobytes())
        >>> rng = np.random.default_rng(0)
        >>> write("train-images-idx3-ubyte", 0x08, rng.integers(0, 256, (40, 28, 28), dtype="u1"))
        >>> write("train-labels-idx1-ubyte", 0x08, np.arange(40, dtype="u1") % 2)
        >>> ds = load_idx(folder, seed=0)
        >>> ds.input_shape, ds.sizes(), ds.class_names
        ((28, 28, 1), {'train': 24, 'val': 8, 'test': 8}, ('0', '1'))
    """
    if path is None and (images is None or labels is None):
        raise ValueError("load_idx: needs path= (a folder with train-images-idx3-ubyte[.gz] and "
                         "train-labels-idx1-ubyte[.gz]) or both images= and labels= (file paths); "
                         "e.g. lossweave.data.load('idx', path='mnist/').")
    if path is not None and (images is not None or labels is not None):
        raise ValueError("load_idx: pass either path= (a folder) or images= and labels= (files), "
                         "not both.")
    if path is None:
        images, labels = os.fspath(images), os.fspath(labels)
        x, y = _pair(images, labels)
        (y,), num_classes, names = _files.encode_labels([y], labels, class_names)
        train, val, test = _files.split3(x, y, labels, val_fraction=val_fraction,
                                         test_fraction=test_fraction, seed=seed)
        return _files.make_dataset("idx", train, val, test, num_classes, names, seed)

    folder = os.fspath(path)
    if not os.path.isdir(folder):
        raise _files.fail(folder, "expected a folder of IDX files, found "
                                  + ("a file" if os.path.exists(folder) else "nothing"))
    found = {part: tuple(_find(folder, stem) for stem in stems) for part, stems in FILES.items()}
    if None in found["train"]:
        listing = ", ".join(sorted(os.listdir(folder))) or "nothing"
        raise _files.fail(folder, f"expected {FILES['train'][0]}[.gz] and {FILES['train'][1]}[.gz], "
                                  f"found: {listing}")
    x, y = _pair(*found["train"])
    test_files = found["test"]
    if test_files == (None, None):
        (y,), num_classes, names = _files.encode_labels([y], found["train"][1], class_names)
        train, val, test = _files.split3(x, y, found["train"][1], val_fraction=val_fraction,
                                         test_fraction=test_fraction, seed=seed)
        return _files.make_dataset("idx", train, val, test, num_classes, names, seed)
    if None in test_files:
        present = [f for f in test_files if f is not None][0]
        missing = FILES["test"][test_files.index(None)]
        raise _files.fail(present, f"expected its partner {missing}[.gz] in the same folder, "
                                   f"found none")
    x_test, y_test = _pair(*test_files)
    if x_test.shape[1:] != x.shape[1:]:
        raise _files.fail(test_files[0], f"expected images of shape {x.shape[1:]} like the train "
                                         f"images, found {x_test.shape[1:]}")
    (y, y_test), num_classes, names = _files.encode_labels([y, y_test], folder, class_names)
    train, val = _files.split2(x, y, found["train"][1], fraction=val_fraction, seed=seed)
    return _files.make_dataset("idx", train, val, (x_test, y_test), num_classes, names, seed)
