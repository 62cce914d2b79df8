"""``lossweave.report.retrieval``: the neighbour tiles and the calibration curve (matplotlib, one backend pass)."""

import matplotlib.colors as mcolors
import numpy as np
import pytest
from conftest import one_backend

from lossweave.report.retrieval import RIGHT, WRONG, image_shape, plot_calibration, plot_neighbors
from lossweave.retrieval import sweep

pytestmark = one_backend
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_image_shape():
    assert image_shape((8, 8)) == (8, 8) and image_shape((32, 32, 3)) == (32, 32, 3)
    assert image_shape((64,), "digits") == (8, 8) and image_shape((784,), "mnist") == (28, 28)
    assert image_shape((64,), "npz") is None and image_shape((63,), "digits") is None
    assert image_shape((4, 4, 7)) is None and image_shape((2, 3, 4, 1)) is None


def _frame_colour(fig, row, column):
    """The colour of the frame pixels of a tile, read from the drawn image."""
    canvas = fig.axes[0].get_images()[0].get_array()
    y, x = fig.mosaic.origin(row, column)
    return mcolors.to_hex(canvas[y, x + fig.mosaic.border + 1])


def _tile_pixels(fig, row, column):
    canvas = fig.axes[0].get_images()[0].get_array()
    y, x = fig.mosaic.origin(row, column)
    b, s = fig.mosaic.border, fig.mosaic.scale
    return canvas[y + b:y + b + fig.mosaic.height:s, x + b:x + b + fig.mosaic.width:s]


def test_tiles_are_marked_right_or_wrong(tmp_path):
    rng = np.random.default_rng(0)
    queries = rng.random((3, 16)).astype("float32")
    references = rng.random((3, 4, 16)).astype("float32")
    query_labels = np.array([1, 2, 9])  # 9: a class with no reference
    reference_labels = np.array([[1, 1, 0, 1], [0, 2, 2, 2], [1, 0, 2, 1]])
    distances = np.sort(rng.random((3, 4)), axis=1)
    answers = np.array([1, -1, -1])  # right; rejected a known class (wrong); rejected an unknown (right)
    path = tmp_path / "neighbors.png"
    fig = plot_neighbors(queries, query_labels, references, reference_labels, distances, shape=(4, 4),
                         answers=answers, class_names=[f"c{i}" for i in range(10)], path=path)
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    texts = [t.get_text() for t in fig.axes[0].texts]
    for row in range(3):
        for column in range(4):
            right = reference_labels[row, column] == query_labels[row]
            assert fig.marks[row, column + 1] == ("right" if right else "wrong")
            assert _frame_colour(fig, row, column + 1) == (RIGHT if right else WRONG)
            assert texts[row * 5 + column + 1] == f"c{reference_labels[row, column]}\nd={distances[row, column]:.3g}"
            # the tile is the sample, dark on light, scaled to its own range
            sample = references[row, column].reshape(4, 4)
            grey = 1 - (sample - sample.min()) / (sample.max() - sample.min())
            assert np.allclose(_tile_pixels(fig, row, column + 1)[..., 0], grey)
    assert fig.marks[:, 0].tolist() == ["right", "wrong", "right"]
    assert [_frame_colour(fig, row, 0) for row in range(3)] == [RIGHT, WRONG, RIGHT]
    assert texts[10] == "query c9\nanswer unknown" and texts[0] == "query c1\nanswer c1"
    # a class the index holds but the neighbours shown do not: "unknown" is wrong for it
    fig = plot_neighbors(queries, query_labels, references, reference_labels, distances, shape=(4, 4),
                         answers=answers, enrolled=[0, 1, 2, 9])
    assert fig.marks[:, 0].tolist() == ["right", "wrong", "wrong"]
    # without answers the query tile is not judged
    fig = plot_neighbors(queries, query_labels, references, reference_labels, distances, shape=(4, 4))
    assert fig.marks[0, 0] == "" and fig.axes[0].texts[0].get_text() == "query 1"


def test_colour_tiles_and_bad_shapes():
    rng = np.random.default_rng(1)
    references = rng.random((1, 2, 2, 2, 3))
    fig = plot_neighbors(rng.random((1, 2, 2, 3)), [0], references, [[0, 1]], [[0.1, 0.2]],
                         shape=(2, 2, 3), title="colour")
    sample = references[0, 1]
    assert np.allclose(_tile_pixels(fig, 0, 2), (sample - sample.min()) / (sample.max() - sample.min()))
    with pytest.raises(ValueError, match=r"expected \(1, 2\) distances"):
        plot_neighbors(rng.random((1, 4)), [0], rng.random((1, 2, 4)), [[0, 1]], [[0.1]], shape=(2, 2))
    with pytest.raises(ValueError, match="expected 1 query labels"):
        plot_neighbors(rng.random((1, 4)), [0, 1], rng.random((1, 2, 4)), [[0, 1]], [[0.1, 0.2]], shape=(2, 2))


def test_calibration_curve_draws_the_sweep(tmp_path):
    cal = sweep([0.1, 0.2, 0.3, 0.4, 0.5], [1, 1, 1, 1, 1], [1, 2, 1, 1, 1], target_precision=0.75,
                target_far=0.0, metric="cosine")
    path = tmp_path / "calibration.png"
    fig = plot_calibration(cal, threshold=0.3, path=path, title="run")
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    for label, name in (("precision", "precision"), ("recall", "recall"), ("F1", "f1"), ("FAR", "far")):
        assert np.array_equal(lines[label].get_xdata(), cal.thresholds)
        assert np.array_equal(lines[label].get_ydata(), getattr(cal, name))
    curves = ("precision", "recall", "F1", "FAR")
    verticals = sorted({float(line.get_xdata()[0]) for line in ax.get_lines() if line.get_label() not in curves})
    assert verticals == [0.1, 0.3, 0.5]  # FAR target, the threshold in use, precision target and best F1
    assert "cosine distance" in ax.get_xlabel() and ax.get_xscale() == "linear"
    assert sorted(t.get_text() for t in ax.texts) == ["FAR <= 0", "precision >= 0.75, best F1"]  # one per line


def test_calibration_over_decades_gets_a_log_axis():
    cal = sweep([1e-7, 1e-5, 1e-3, 0.1], [1, 1, 1, 1], [1, 1, 2, 1])
    assert plot_calibration(cal).axes[0].get_xscale() == "symlog"
