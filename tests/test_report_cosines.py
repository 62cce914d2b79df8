"""``lossweave.report.plot_cosine_curves``: the gradient cosine of each pair of terms per epoch.

Checked through the matplotlib artists (lines, labels, styles, limits), on
hand-made histories in the shape a gradient-level Objective logs them
(``cosine/<a>/<b>``, Keras's sorted key order). NumPy and matplotlib only.
"""

import numpy as np
import pytest
from conftest import one_backend

from lossweave.report import cosine_pairs, plot_cosine_curves

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# Keras sorts the logged keys by name: the pairs arrive out of the terms' order.
HISTORY = {
    "loss": [3.0, 2.0, 1.0],
    "cosine/parity/center": [0.4, 0.2, 0.1],
    "cosine/softmax/center": [0.5, 0.6, 0.7],
    "cosine/softmax/parity": [0.1, -0.2, -0.5],
    "val_cosine/softmax/parity": [0.0, 0.0, 0.0],  # evaluation: no gradients
    "weight/softmax": [1.0, 1.0, 1.0],
}
TERMS = ["softmax", "parity", "center"]


def _lines(fig):
    """The pairs' lines (the 0 line, drawn last by ``axhline``, left out)."""
    return fig.axes[0].get_lines()[:-1]


@one_backend
def test_pairs_in_logged_or_term_order_without_validation_copies():
    assert cosine_pairs(HISTORY) == [("parity", "center"), ("softmax", "center"), ("softmax", "parity")]
    assert cosine_pairs(HISTORY, terms=TERMS) == [("softmax", "parity"), ("softmax", "center"),
                                                  ("parity", "center")]
    assert cosine_pairs({"loss": [1.0], "weight/a": [1.0]}) == []
    with pytest.raises(ValueError, match=r"cosines of the terms \['parity'\], which are not in terms="):
        cosine_pairs(HISTORY, terms=["softmax", "center"])


@one_backend
def test_one_line_per_pair_conflicts_solid_values_per_epoch():
    fig = plot_cosine_curves(HISTORY, terms=TERMS, title="pcgrad")
    lines = _lines(fig)
    assert [line.get_label() for line in lines] == [
        "softmax / parity (conflict)", "softmax / center", "parity / center"]
    assert [line.get_linestyle() for line in lines] == ["-", "--", "--"]
    for line, key in zip(lines, ("cosine/softmax/parity", "cosine/softmax/center", "cosine/parity/center")):
        assert np.allclose(line.get_xdata(), [1, 2, 3])  # epochs from 1
        assert np.allclose(line.get_ydata(), HISTORY[key])
    zero = fig.axes[0].get_lines()[-1]
    assert np.allclose(zero.get_ydata(), 0.0)
    assert fig.axes[0].get_title() == "pcgrad"
    low, high = fig.axes[0].get_ylim()
    assert low == pytest.approx(-high) and high == pytest.approx(0.75)  # |-0.5|, 0.7 + margin
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["1", "2", "3"]


@one_backend
def test_limits_stay_within_minus_one_one_and_nonfinite_values_are_drawn_as_gaps():
    history = {"cosine/a/b": [1.0, 1.0], "cosine/a/c": [-1.0, float("nan")]}
    fig = plot_cosine_curves(history)
    assert fig.axes[0].get_ylim() == pytest.approx((-1.05, 1.05))
    labels = [line.get_label() for line in _lines(fig)]
    assert labels == ["a / b", "a / c (conflict)"]
    flat = plot_cosine_curves({"cosine/a/b": [0.0, 0.0]})
    assert flat.axes[0].get_ylim() == pytest.approx((-0.1, 0.1))  # a visible band around 0


@one_backend
def test_saves_png_and_rejects_a_history_without_cosines(tmp_path):
    plot_cosine_curves(HISTORY, path=tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes()[:8] == PNG_SIGNATURE
    with pytest.raises(ValueError, match=r"no 'cosine/<a>/<b>' entries; its keys are \['loss', 'weight/a'\]"):
        plot_cosine_curves({"loss": [1.0], "weight/a": [1.0]})
    with pytest.raises(TypeError, match="History"):
        plot_cosine_curves([0.1, 0.2])
