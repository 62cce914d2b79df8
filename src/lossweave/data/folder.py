"""A folder of images with one sub-folder per class, read with Keras's own function.

Images are read with ``keras.utils.image_dataset_from_directory``, which
decodes and resizes them with ``tf.data``/``tf.image``: it needs TensorFlow
installed (``pip install tensorflow-cpu``) whatever ``KERAS_BACKEND`` is; it
returns NumPy arrays, so the data then work on the JAX and PyTorch backends
too. TensorFlow is imported only when the loader runs.
"""

import os

import numpy as np

from lossweave import arguments
from lossweave.data import _files

# The formats image_dataset_from_directory reads.
FORMATS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")
COLOR_MODES = {"grayscale": 1, "rgb": 3, "rgba": 4}


def _require_tensorflow():
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        raise ImportError(
            "lossweave.data.load_folder reads images with keras.utils.image_dataset_from_directory, "
            "which needs TensorFlow (on any KERAS_BACKEND): pip install tensorflow-cpu"
        ) from None


def _class_folders(folder):
    if not os.path.isdir(folder):
        raise _files.fail(folder, "expected a folder with one sub-folder of images per class, found "
                                  + ("a file" if os.path.exists(folder) else "nothing"))
    classes = sorted(entry.name for entry in os.scandir(folder)
                     if entry.is_dir() and not entry.name.startswith("."))
    if len(classes) < 2:
        raise _files.fail(folder, f"expected at least 2 class sub-folders, found {len(classes)}"
                                  + (f" ({classes[0]})" if classes else ""))
    for name in classes:
        count = sum(1 for _, _, files in os.walk(os.path.join(folder, name))
                    for file in files if file.lower().endswith(FORMATS))
        if count == 0:
            raise _files.fail(os.path.join(folder, name),
                              f"expected images ({', '.join(FORMATS)}) in class folder {name!r}, "
                              f"found none")
    return classes


def _read_all(dataset, file_paths, size, channels):
    """Images (0..255 floats) and labels of the unbatched ``dataset``; DataError names a bad file."""
    import tensorflow as tf

    n = len(file_paths)
    x = np.empty((n, *size, channels), dtype="float32")
    y = np.empty((n,), dtype="int64")
    try:
        start = 0
        for images, labels in dataset.batch(256).as_numpy_iterator():
            x[start:start + len(images)] = images
            y[start:start + len(labels)] = labels
            start += len(images)
    except tf.errors.OpError:
        # Find the file: read them one at a time.
        for index, item in enumerate(_one_by_one(dataset)):
            if isinstance(item, tf.errors.OpError):
                reason = (item.message or "").strip().splitlines()[0].rsplit(": ", 1)[-1][:160]
                raise _files.fail(file_paths[index], "expected an image the decoder can read, "
                                                     f"found an unreadable file ({reason})") from None
        raise
    return x, y


def _one_by_one(dataset):
    """Yield each element, or the error of the first that fails to decode (then stop)."""
    import tensorflow as tf

    iterator = iter(dataset.as_numpy_iterator())
    while True:
        try:
            yield next(iterator)
        except StopIteration:
            return
        except tf.errors.OpError as error:
            yield error
            return


def load_folder(path=None, image_size=(28, 28), color_mode="grayscale", seed=0, val_fraction=0.2,
                test_fraction=0.2, interpolation="bilinear"):
    """Images in ``path/<class name>/*.png`` (jpg, bmp, gif) as float32 in [0, 1].

    Every image is read into memory (meant for small data sets), resized to
    ``image_size`` and split into stratified, seeded train/val/test parts.
    The classes are the sub-folders, sorted by name; images may sit in
    nested folders below a class folder. Hidden sub-folders are skipped.

    Needs TensorFlow: ``keras.utils.image_dataset_from_directory`` decodes
    the images with ``tf.image`` on every Keras backend. Without it the
    loader raises ``ImportError`` saying so.

    Args:
        path: the folder.
        image_size: ``(height, width)`` every image is resized to.
        color_mode: ``"grayscale"`` (1 channel), ``"rgb"`` (3) or ``"rgba"`` (4).
        seed: seed of the split.
        val_fraction, test_fraction: shares of the validation and test parts.
        interpolation: resize method, as for ``image_dataset_from_directory``.

    Returns:
        A ``lossweave.data.Dataset`` named ``"folder"``: float32
        ``(n, height, width, channels)`` (channels last), int32 labels,
        ``class_names`` the sub-folder names.

    Raises:
        ValueError: no ``path``, or a bad ``color_mode``/``image_size``.
        DataError: missing folder, fewer than 2 class sub-folders, a class
            folder without images, an unreadable image (the message names it).
        ImportError: TensorFlow is not installed.

    Example:
        >>> import os, tempfile
        >>> import numpy as np
        >>> from PIL import Image
        >>> folder = tempfile.mkdtemp()
        >>> for name, value in (("cats", 40), ("dogs", 200)):
        ...     os.makedirs(os.path.join(folder, name))
        ...     for i in range(5):
        ...         pixels = np.full((12, 10), value + i, dtype="uint8")
        ...         Image.fromarray(pixels).save(os.path.join(folder, name, f"{i}.png"))
        >>> ds = load_folder(folder, image_size=(8, 8), seed=0, val_fraction=0.2, test_fraction=0.2)
        >>> ds.class_names, ds.input_shape, ds.sizes()
        (('cats', 'dogs'), (8, 8, 1), {'train': 6, 'val': 2, 'test': 2})
    """
    folder = _files.require_path(path, "load_folder", "a folder with one sub-folder per class")
    arguments.choice(color_mode, tuple(COLOR_MODES), "color_mode", "load_folder")
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    image_size = tuple(int(s) for s in image_size)
    if len(image_size) != 2 or min(image_size) < 1:
        raise ValueError(f"load_folder: image_size must be (height, width) of positive integers; "
                         f"received {image_size!r}.")
    classes = _class_folders(folder)
    _require_tensorflow()
    import keras

    dataset = keras.utils.image_dataset_from_directory(
        folder, labels="inferred", label_mode="int", class_names=classes, color_mode=color_mode,
        batch_size=None, image_size=image_size, shuffle=False, interpolation=interpolation,
        data_format="channels_last", verbose=False,
    )
    x, y = _read_all(dataset, list(dataset.file_paths), image_size, COLOR_MODES[color_mode])
    x = (x / np.float32(255.0)).astype("float32")
    (y,), num_classes, names = _files.encode_labels([y], folder, classes)
    train, val, test = _files.split3(x, y, folder, val_fraction=val_fraction,
                                     test_fraction=test_fraction, seed=seed)
    return _files.make_dataset("folder", train, val, test, num_classes, names, seed)
