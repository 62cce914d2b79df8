"""``lossweave.report``: the feature grid of a sweep, weight curves, HTML tables, offline pages.

Figures are checked through their matplotlib artists (axes, titles, the
colours of the scatter collections); the HTML by reading values back from the
``data-key`` attributes.
"""

import base64
import html
import re

import numpy as np
import pytest
from conftest import one_backend
from matplotlib.collections import PathCollection
from matplotlib.colors import to_rgba

from lossweave.report import (
    PROJECTIONS,
    TOTALS,
    class_distance_ratio,
    format_value,
    plot_cosine_curves,
    plot_feature_grid,
    plot_features,
    plot_loss_curves,
    plot_weight_curves,
    render_html,
    weight_names,
    weights_vary,
    write_html,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

pytestmark = one_backend  # NumPy and matplotlib only


def _panel(title, dim, num_classes, rng, n=120, centers=True, subtitle=None):
    labels = np.arange(n) % num_classes
    means = rng.normal(size=(num_classes, dim)) * 5
    features = means[labels] + rng.normal(size=(n, dim))
    panel = {"title": title, "features": features, "labels": labels,
             "centers": means if centers else None}
    if subtitle is not None:
        panel["subtitle"] = subtitle
    return panel


def _class_collections(ax):
    """``{legend label: PathCollection}`` of the class scatters (the crosses left out)."""
    return {c.get_label(): c for c in ax.collections
            if isinstance(c, PathCollection) and c.get_label() != "centers"}


def _centers(ax):
    return [c for c in ax.collections if c.get_label() == "centers"]


# ---------------------------------------------------------------- feature grid
def test_feature_grid_one_axes_per_panel_titles_legend(tmp_path):
    rng = np.random.default_rng(0)
    panels = [_panel(f"lambda={lam:g}", 2, 4, rng, subtitle=f"ratio {r}")
              for lam, r in [(0, 0.8), (1e-3, 0.4), (1e-2, 0.2), (1e-1, 0.1), (1.0, 0.05)]]
    fig = plot_feature_grid(panels, path=tmp_path / "grid.png", title="sweep")
    assert (tmp_path / "grid.png").read_bytes()[:8] == PNG_SIGNATURE
    assert len(fig.axes) == 5  # 2 x 3 grid, the unused sixth cell removed
    assert [ax.get_title() for ax in fig.axes] == [p["title"] for p in panels]
    subtitles = [[t.get_text() for t in ax.texts] for ax in fig.axes]
    assert subtitles == [[p["subtitle"]] for p in panels]
    assert fig.get_suptitle() == "sweep"
    # one shared legend on the figure: the 4 classes and the centers
    assert [ax.get_legend() for ax in fig.axes] == [None] * 5
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["0", "1", "2", "3", "centers"]
    # balanced rows of at most 4 by default; ncols overrides
    rows_cols = {ax.get_subplotspec().get_geometry()[:2] for ax in fig.axes}
    assert rows_cols == {(2, 3)}
    fig = plot_feature_grid(panels[:4], ncols=2)
    assert {ax.get_subplotspec().get_geometry()[:2] for ax in fig.axes} == {(2, 2)}
    assert len(plot_feature_grid(panels[:3]).axes) == 3


def test_feature_grid_class_colours_identical_across_panels():
    rng = np.random.default_rng(1)
    # the second panel lacks class 1 and 3; the colours of 0 and 2 must not shift
    full = _panel("all", 2, 4, rng)
    partial = _panel("some", 2, 4, rng)
    keep = np.isin(partial["labels"], [0, 2])
    partial["features"], partial["labels"] = partial["features"][keep], partial["labels"][keep]
    fig = plot_feature_grid([full, partial, _panel("5-D", 5, 4, rng)],
                            class_names=["a", "b", "c", "d"])
    first, second, third = (_class_collections(ax) for ax in fig.axes)
    assert sorted(first) == sorted(third) == ["a", "b", "c", "d"]
    assert sorted(second) == ["a", "c"]
    for name in "abcd":
        colour = first[name].get_facecolors()[0][:3]
        assert np.allclose(third[name].get_facecolors()[:, :3], colour)
        if name in second:
            assert np.allclose(second[name].get_facecolors()[:, :3], colour)
    colours = {tuple(np.round(first[name].get_facecolors()[0][:3], 6)) for name in "abcd"}
    assert len(colours) == 4  # distinct per class
    # the legend's markers have those colours too
    legend = {t.get_text(): h for t, h in zip(fig.legends[0].get_texts(),
                                              fig.legends[0].legend_handles)}
    for name in "abcd":
        assert np.allclose(to_rgba(legend[name].get_color())[:3],
                           first[name].get_facecolors()[0][:3])


def test_feature_grid_draws_centers_and_projects_with_pca():
    rng = np.random.default_rng(2)
    flat = _panel("2-D", 2, 3, rng)
    deep = _panel("6-D", 6, 3, rng)
    bare = _panel("no centers", 2, 3, rng, centers=False)
    fig = plot_feature_grid([flat, deep, bare])
    ax_flat, ax_deep, ax_bare = fig.axes
    # 2-D: points and crosses drawn as given
    (crosses,) = _centers(ax_flat)
    assert np.allclose(crosses.get_offsets(), flat["centers"])
    assert np.allclose(to_rgba(crosses.get_edgecolor()[0])[:3], (0, 0, 0))
    points = np.concatenate([c.get_offsets() for c in _class_collections(ax_flat).values()])
    assert points.shape == (120, 2)
    assert ax_flat.get_xlabel() == "feature 1"
    # 6-D: PCA of the panel's own features, the centers through the same projection
    from sklearn.decomposition import PCA

    pca = PCA(n_components=2).fit(deep["features"])
    (crosses,) = _centers(ax_deep)
    assert np.allclose(crosses.get_offsets(), pca.transform(deep["centers"]))
    drawn = _class_collections(ax_deep)
    expected = pca.transform(deep["features"])
    for c in range(3):
        assert np.allclose(drawn[str(c)].get_offsets(), expected[deep["labels"] == c])
    assert re.fullmatch(r"PC 1 \(\d+% var\.\)", ax_deep.get_xlabel())
    assert ax_deep.get_ylabel().startswith("PC 2")
    # no centers: no crosses
    assert _centers(ax_bare) == []


def test_feature_grid_subsample_same_rows_and_nonfinite_rows():
    rng = np.random.default_rng(3)
    panels = [_panel("a", 2, 3, rng, n=300), _panel("b", 2, 3, rng, n=300)]
    panels[1]["features"][:5] = np.nan
    fig = plot_feature_grid(panels, max_points=100)
    counts = [sum(len(c.get_offsets()) for c in _class_collections(ax).values())
              for ax in fig.axes]
    assert counts == [100, 100]
    assert any("5 non-finite rows" in t.get_text() for t in fig.axes[1].texts)


def test_feature_grid_bad_input():
    rng = np.random.default_rng(4)
    panel = _panel("a", 3, 2, rng)
    with pytest.raises(ValueError, match=r"projection in \['pca'\]; received projection='tsne'"):
        plot_feature_grid([panel], projection="tsne")
    assert PROJECTIONS == ("pca",)
    with pytest.raises(ValueError, match="at least one panel"):
        plot_feature_grid([])
    with pytest.raises(ValueError, match=r"panel 0 \('a'\): expected centers of shape"):
        plot_feature_grid([{**panel, "centers": np.zeros((2, 2))}])
    with pytest.raises(ValueError, match=r"missing \['labels'\], unknown \['label'\]"):
        plot_feature_grid([{"title": "x", "features": panel["features"], "label": [0]}])
    with pytest.raises(TypeError, match="expected a dict"):
        plot_feature_grid([("a", panel["features"])])
    with pytest.raises(ValueError, match="positive integer"):
        plot_feature_grid([panel], ncols=0)


def test_plot_features_still_works_and_skips_nonfinite_rows():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(50, 2)), np.arange(50) % 5
    x[0] = np.inf
    fig = plot_features(x, y, np.zeros((5, 2)))
    ax = fig.axes[0]
    assert sum(len(c.get_offsets()) for c in _class_collections(ax).values()) == 49
    assert [t.get_text() for t in ax.get_legend().get_texts()][-1] == "centers"
    assert "1 non-finite rows left out" in ax.texts[0].get_text()


def _class_means(x, y, num_classes):
    """NaN rows for classes without rows, as the command line's class means."""
    means = np.full((num_classes, x.shape[1]), np.nan)
    for c in np.unique(y):
        means[c] = x[y == c].mean(axis=0)
    return means


@pytest.mark.parametrize("dim", [2, 16, 32])
def test_nan_center_rows_are_left_out_before_the_projection(dim):
    """An unseen-classes test set: the training classes 0-4 have no rows, so no mean.

    The PCA (``dim`` > 2) must neither see nor draw them: it raised "Input X
    contains NaN" after training.
    """
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(8)
    y = 5 + np.arange(60) % 5
    x = rng.normal(size=(60, dim)) + 4 * rng.normal(size=(10, dim))[y]
    means = _class_means(x, y, 10)
    expected = means[5:] if dim == 2 else PCA(n_components=2).fit(x).transform(means[5:])
    panel = {"title": "unseen", "features": x, "labels": y, "centers": means}
    for ax in (plot_features(x, y, means).axes[0], plot_feature_grid([panel]).axes[0]):
        (crosses,) = _centers(ax)
        assert np.allclose(crosses.get_offsets(), expected)
    # no finite center at all: no crosses and no legend entry for them
    fig = plot_feature_grid([{**panel, "centers": np.full((10, dim), np.nan)}])
    assert _centers(fig.axes[0]) == []
    assert "centers" not in [t.get_text() for t in fig.legends[0].get_texts()]
    assert _centers(plot_features(x, y, np.full((10, dim), np.nan)).axes[0]) == []


def _drawn_extent(fig, artist):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return artist.get_window_extent(canvas.get_renderer())


def test_plot_features_long_title_stays_inside_the_figure():
    rng = np.random.default_rng(9)
    x, y = rng.normal(size=(40, 8)), np.arange(40) % 4
    title = "mnist test features, mlp, softmax + 0.003 x center, gradnorm weighting, 60 epochs"
    fig = plot_features(x, y, title=title)
    ax = fig.axes[0]
    assert ax.get_title().replace("\n", " ") == title
    extent = _drawn_extent(fig, ax.title)
    assert 0 <= extent.x0 and extent.x1 <= fig.bbox.x1 and extent.y1 <= fig.bbox.y1
    assert plot_features(x, y, title="short").axes[0].get_title() == "short"


def test_class_distance_ratio_by_hand():
    x = np.array([[0.0, 1.0], [0.0, -1.0], [10.0, 1.0], [10.0, -1.0]])
    assert class_distance_ratio(x, [0, 0, 1, 1]) == pytest.approx(0.1)
    # given centers replace the class means
    assert class_distance_ratio(x, [0, 0, 1, 1], [[0.0, 0.0], [5.0, 0.0]]) == pytest.approx(
        ((1 + 1 + np.hypot(5, 1) * 2) / 4) / 5)


# ---------------------------------------------------------------- weight curves
def _lines(fig):
    return {line.get_label(): line for line in fig.axes[0].get_lines()}


def test_weight_curves_one_line_per_term_varying_solid():
    history = {"loss": [3.0, 2.0, 1.0], "loss/softmax": [2.0, 1.5, 1.0],
               "weight/softmax": [1.0, 1.0, 1.0], "weight/center": [0.0, 0.005, 0.01],
               "weight/aux": [0.9, 0.6, 0.5], "val_weight/center": [7.0, 7.0, 7.0]}
    assert weight_names(history) == ["softmax", "center", "aux"]
    fig = plot_weight_curves(history, title="weights")
    lines = _lines(fig)
    assert list(lines) == ["softmax (fixed)", "center", "aux"]
    assert [lines[name].get_linestyle() for name in lines] == ["--", "-", "-"]
    assert np.allclose(lines["center"].get_xdata(), [1, 2, 3])  # epochs from 1
    assert np.allclose(lines["center"].get_ydata(), history["weight/center"])
    assert fig.axes[0].get_title() == "weights"
    assert fig.axes[0].get_yscale() == "symlog"  # 0 .. 1 over a factor 200
    varying = [name for name, line in lines.items() if line.get_linestyle() == "-"]
    assert varying == ["center", "aux"]
    fig = plot_weight_curves(history, terms=["aux"])
    assert list(_lines(fig)) == ["aux"]
    assert fig.axes[0].get_yscale() == "linear"


def test_weights_vary():
    assert weights_vary({"weight/softmax": [1.0, 1.0], "weight/center": [0.0, 0.5]})
    assert not weights_vary({"weight/softmax": [1.0, 1.0], "weight/center": [0.01, 0.01]})
    # float32 round-off of a constant is not a change; validation copies are ignored
    assert not weights_vary({"weight/center": [0.003, float(np.float32(0.003))],
                             "val_weight/center": [0.0, 1.0]})
    assert not weights_vary({"weight/center": [0.5]})  # one epoch
    assert not weights_vary({"loss": [1.0, 0.5]})  # no weights logged
    assert weights_vary({"weight/a": [1.0, float("nan")]})
    assert not weights_vary({"weight/softmax": [1.0, 1.0], "weight/center": [0.0, 0.5]},
                            terms=["softmax"])

    class History:  # a keras.callbacks.History stand-in
        history = {"weight/a": [1.0, 2.0]}

    assert weights_vary(History())


def test_weight_curves_bad_input():
    with pytest.raises(ValueError, match="no 'weight/<term>' entries"):
        plot_weight_curves({"loss": [1.0]})
    with pytest.raises(ValueError, match=r"terms \['margin'\] have no 'weight/<term>'"):
        plot_weight_curves({"weight/softmax": [1.0]}, terms=["margin"])
    with pytest.raises(TypeError, match="History"):
        weights_vary([1.0, 2.0])


def test_weight_and_loss_curves_save_png(tmp_path):
    history = {"loss": [2.0, 1.0], "loss/softmax": [2.0, 1.0], "weight/softmax": [1.0, 0.5]}
    plot_weight_curves(history, path=tmp_path / "w.png")
    plot_loss_curves(history, path=tmp_path / "l.png")
    for name in ("w.png", "l.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG_SIGNATURE


def test_loss_curves_total_title_says_what_the_total_is():
    """Loss level: the weighted total; gradient level: the plain sum (Mean: the mean)."""
    history = {"loss": [3.0, 2.0], "loss/a": [1.0, 1.0], "loss/b": [2.0, 1.0]}
    titles = {total: plot_loss_curves(history, total=total).axes[0].get_title() for total in TOTALS}
    assert titles == {"weighted total": "total (weighted)", "sum of the terms": "total (sum of the terms)",
                      "mean of the terms": "total (mean of the terms)"}
    assert plot_loss_curves(history).axes[0].get_title() == "total (weighted)"
    with pytest.raises(ValueError, match=r"total in \['weighted total', .*\]; received total='sum'"):
        plot_loss_curves(history, total="sum")


@pytest.mark.parametrize("epochs", [1, 2, 5, 13, 60])
def test_epoch_axes_have_whole_epoch_ticks(epochs):
    values = list(np.linspace(2.0, 1.0, epochs))
    history = {"loss": values, "loss/a": values, "val_loss/a": values, "weight/a": values,
               "cosine/a/b": [v - 1.5 for v in values]}
    figures = [plot_loss_curves(history), plot_weight_curves(history), plot_cosine_curves(history)]
    for ax in [ax for fig in figures for ax in fig.axes]:
        low, high = ax.get_xlim()
        shown = [t for t in ax.get_xticks() if low <= t <= high]
        assert shown and all(float(t).is_integer() for t in shown), (ax.get_title(), shown)
        assert ax.get_xlabel() == "epoch"
        if epochs <= 12:
            assert shown == list(range(1, epochs + 1))


# ---------------------------------------------------------------- html
def _cells(page):
    """``{data-key: shown text}`` of every cell with a data-key."""
    cells = re.findall(r'<td(?: class="\w+")? data-key="([^"]*)">([^<]*)</td>', page)
    return {html.unescape(key): html.unescape(text) for key, text in cells}


def test_html_tables_read_back():
    rows = [
        {"objective": "softmax", "test_accuracy": 0.912345, "ratio": 0.5,
         "recall@1": np.float32(0.875), "train_seconds": 12.3456789, "epochs": np.int64(3)},
        {"objective": "softmax+center", "test_accuracy": 0.95, "ratio": 3e-5,
         "recall@1": None, "train_seconds": 20.0, "epochs": 3},
        ("arcface <m=0.5>", 0.9, float("nan"), 1.0, 1.5, 3),
    ]
    columns = [("objective", "objective"), ("test_accuracy", "test accuracy"),
               ("ratio", "distance ratio"), ("recall@1", "recall@1"),
               ("train_seconds", "train seconds"), "epochs"]
    page = render_html(title="lossweave compare", tables=[("Objectives", columns, rows)],
                       metrics=[("n", "samples", 10)])
    cells = _cells(page)
    keys = [c if isinstance(c, str) else c[0] for c in columns]
    for row in rows:
        values = [row[k] for k in keys] if isinstance(row, dict) else list(row)
        for key, value in zip(keys, values):
            assert cells[f"{values[0]}/{key}"] == format_value(value)
    assert cells["softmax/test_accuracy"] == "0.9123"
    assert cells["softmax+center/ratio"] == "3e-05"
    assert cells["softmax+center/recall@1"] == "-"
    assert cells["n"] == "10"  # the metrics table is still there
    assert "<h2>Objectives</h2>" in page
    assert "<th data-column=\"test_accuracy\">test accuracy</th>" in page
    assert "arcface &lt;m=0.5&gt;" in page  # escaped
    assert page.index("<h2>Metrics</h2>") < page.index("<h2>Objectives</h2>")


def test_html_table_bad_rows():
    with pytest.raises(ValueError, match=r"expected 2 values per row"):
        render_html(title="t", tables=[("T", ["a", "b"], [(1, 2, 3)])])
    with pytest.raises(ValueError, match=r"keys \['c'\] that are not columns"):
        render_html(title="t", tables=[("T", ["a", "b"], [{"a": 1, "c": 2}])])
    with pytest.raises(ValueError, match="two rows have the key 'x'"):
        render_html(title="t", tables=[("T", ["a", "b"], [("x", 1), ("x", 2)])])
    with pytest.raises(ValueError, match="at least one column"):
        render_html(title="t", tables=[("T", [], [])])


def test_html_is_self_contained_and_backward_compatible(tmp_path):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 2))
    fig.add_subplot().plot([0, 1], [1, 0])
    fig.savefig(tmp_path / "a.png")
    png_bytes = (tmp_path / "a.png").read_bytes()
    path = write_html(
        tmp_path / "report.html", title="run <1>", command="lossweave train --epochs 2",
        metrics=[("test_accuracy", "test accuracy", 0.5)],
        config=[("epochs", "epochs", 2), ("data", "data", "synthetic")],
        images=[("a figure", tmp_path / "a.png"), ("bytes", png_bytes)],
        notes=["a note"],
    )
    page = path.read_text(encoding="utf-8")
    assert not re.search(r"https?://", page)  # opens offline
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) == 2
    for source in sources:
        assert source.startswith("data:image/png;base64,")
        assert base64.b64decode(source.split(",", 1)[1]) == png_bytes
    assert not re.search(r"<(link|script)\b", page)
    assert '<pre class="command">lossweave train --epochs 2</pre>' in page
    assert '<td data-option="data">synthetic</td>' in page
    assert _cells(page)["test_accuracy"] == "0.5000"
    assert "<title>run &lt;1&gt;</title>" in page


def test_html_wraps_long_commands():
    """A long command wraps inside its box: ``<pre>`` alone would clip it (or scroll)."""
    command = "lossweave train " + " ".join(f"--option-{i} value-{i}" for i in range(40))
    page = render_html(title="t", command=command)
    assert f'<pre class="command">{command}</pre>' in page
    (rule,) = re.findall(r"pre\.command \{([^}]*)\}", page)
    assert "white-space: pre-wrap" in rule and "overflow-wrap: anywhere" in rule


def test_html_metrics_in_groups():
    groups = {
        "classification": [("test_accuracy", "test accuracy", 0.5)],
        "losses per term": [("test_losses/softmax", "test loss: softmax", 1.25),
                            ("final_losses/softmax", "final train loss: softmax", 1.5)],
        "tasks": [],  # an empty group: no heading
        "embedding": [("embedding/recall@1", "recall@1", 0.75)],
    }
    page = render_html(title="t", metrics=groups)
    (table,) = re.findall(r'<table class="metrics">.*?</table>', page, flags=re.S)
    headings = re.findall(r'<tr class="group"><th colspan="2">([^<]*)</th></tr>', table)
    assert headings == ["classification", "losses per term", "embedding"]
    assert _cells(page) == {"test_accuracy": "0.5000", "test_losses/softmax": "1.2500",
                            "final_losses/softmax": "1.5000", "embedding/recall@1": "0.7500"}
    # each row under its own group's heading
    order = [m.group(1) or m.group(2) for m in re.finditer(
        r'<th colspan="2">([^<]*)</th>|data-key="([^"]*)"', table)]
    assert order == ["classification", "test_accuracy", "losses per term", "test_losses/softmax",
                     "final_losses/softmax", "embedding", "embedding/recall@1"]
    assert 'class="group"' not in render_html(title="t", metrics=groups["classification"])
    assert "<h2>Metrics</h2>" not in render_html(title="t", metrics={"tasks": []})


def test_feature_grid_png_embeds_without_web_links(tmp_path):
    rng = np.random.default_rng(6)
    plot_feature_grid([_panel("a", 2, 3, rng)], path=tmp_path / "g.png")
    data = (tmp_path / "g.png").read_bytes()
    assert b"http" not in data  # no "Software: https://matplotlib.org" text chunk
    page = render_html(title="t", images=[("grid", data)])
    assert not re.search(r"https?://", page)


def test_format_value_numpy_scalars():
    assert format_value(np.bool_(True)) == "true"
    assert format_value(np.int32(7)) == "7"
    assert format_value(np.float32(0.5)) == "0.5000"
    assert format_value(float("inf")) == "inf"


def test_feature_grid_wraps_long_titles_only():
    rng = np.random.default_rng(7)
    long_title = "softmax + center loss with a rather long objective name (lambda=0.003)"
    fig = plot_feature_grid([_panel(long_title, 2, 3, rng, subtitle="x" * 80),
                             _panel("short", 2, 3, rng)])
    assert fig.axes[0].get_title().replace("\n", " ") == long_title
    assert fig.axes[0].get_title().count("\n") == 1
    assert fig.axes[0].texts[0].get_text().count("\n") == 1
    assert fig.axes[1].get_title() == "short"
