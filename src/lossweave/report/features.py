"""The embedding of a run: a scatter by class with its centers, and a tightness ratio."""

import math
import textwrap

import numpy as np

from lossweave.metrics.tightness import ratio_from_centers


def _as_features(features, labels):
    features = np.asarray(features, dtype="float64")
    labels = np.asarray(labels)
    if features.ndim != 2:
        raise ValueError(
            f"expected features of shape (n, dim); received shape {features.shape}. "
            "Flatten the embedding first."
        )
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.shape != (features.shape[0],):
        raise ValueError(
            f"expected one integer label per feature row, shape ({features.shape[0]},); "
            f"received labels of shape {labels.shape}."
        )
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        if not np.all(np.equal(np.mod(labels, 1), 0)):
            raise ValueError("expected integer class labels; received non-integer values.")
        labels = labels.astype("int64")
    return features, labels


def class_distance_ratio(features, labels, centers=None):
    """Intra-class over inter-class distance of an embedding (lower is tighter).

    .. math::

        r = \\frac{\\frac{1}{n} \\sum_i \\lVert x_i - c_{y_i} \\rVert}
                  {\\frac{2}{K(K-1)} \\sum_{j < k} \\lVert c_j - c_k \\rVert}

    the mean Euclidean distance of a sample to its own class center, divided by
    the mean distance between two class centers, over the ``K`` classes present
    in ``labels`` (computed by
    :func:`lossweave.metrics.tightness.ratio_from_centers`). It does not change
    when the embedding is scaled, rotated or shifted, so runs with different
    feature norms compare. It is the tightness
    that center loss (Wen et al., "A Discriminative Feature Learning Approach
    for Deep Face Recognition", ECCV 2016) aims for. Without ``centers`` it
    equals ``lossweave.metrics.distance_ratio(..., metric="euclidean")``, except
    that NaN features give ``nan`` here instead of an error (a diverged run
    still gets a report).

    Args:
        features: ``(n, dim)`` array of embeddings.
        labels: ``(n,)`` integer class of each row (``(n, 1)`` is accepted).
        centers: optional ``(num_classes, dim)`` center of each class, indexed
            by label (for instance the centers a center-loss term learned).
            Default: the mean of each class's rows.

    Returns:
        The ratio as a float; ``inf`` if all centers coincide while samples
        spread, ``nan`` if everything coincides.

    Raises:
        ValueError: the shapes disagree, fewer than two classes are present, or
            a label has no row in ``centers``.

    Example:
        >>> x = np.array([[0., 1.], [0., -1.], [10., 1.], [10., -1.]])
        >>> class_distance_ratio(x, [0, 0, 1, 1])
        0.1
    """
    features, labels = _as_features(features, labels)
    classes = np.unique(labels)
    if classes.size < 2:
        raise ValueError(
            f"class_distance_ratio needs at least two classes; received {classes.size}."
        )
    if centers is None:
        table = {c: features[labels == c].mean(axis=0) for c in classes}
    else:
        centers = np.asarray(centers, dtype="float64")
        if centers.ndim != 2 or centers.shape[1] != features.shape[1]:
            raise ValueError(
                f"expected centers of shape (num_classes, {features.shape[1]}); received "
                f"{centers.shape}."
            )
        if classes.min() < 0 or classes.max() >= centers.shape[0]:
            raise ValueError(
                f"labels span [{classes.min()}, {classes.max()}], but centers has "
                f"{centers.shape[0]} rows."
            )
        table = {c: centers[c] for c in classes}
    present = np.stack([table[c] for c in classes])
    return ratio_from_centers(features, present, np.searchsorted(classes, labels), "euclidean")


def _drawable_centers(centers):
    """The finite rows of ``centers``, or None if there are none.

    A class without rows has no mean (a NaN row: the training classes of an
    unseen-classes test set); it has nothing to draw, and PCA refuses NaN.
    """
    if centers is None:
        return None
    centers = centers[np.all(np.isfinite(centers), axis=1)]
    return centers if len(centers) else None


def _project_2d(features, centers):
    """Features (and finite centers) as 2-D points: PCA if dim > 2, padded if dim == 1."""
    centers = _drawable_centers(centers)
    dim = features.shape[1]
    if dim == 2:
        return features, centers, None
    if dim == 1:
        pad = lambda a: None if a is None else np.concatenate([a, np.zeros_like(a)], axis=1)  # noqa: E731
        return pad(features), pad(centers), None
    from sklearn.decomposition import PCA

    pca = PCA(n_components=2).fit(features)
    projected = pca.transform(features)
    return projected, None if centers is None else pca.transform(centers), pca


def _class_colors(num_classes):
    from matplotlib import colormaps

    cmap = colormaps["tab10" if num_classes <= 10 else "tab20" if num_classes <= 20 else "turbo"]
    if num_classes <= 20:
        return [cmap(i) for i in range(num_classes)]
    return [cmap(i / max(num_classes - 1, 1)) for i in range(num_classes)]


PROJECTIONS = ("pca",)

_TITLE_WIDTH = 50  # characters of plot_features' title that fit above its axes

_CENTER_STYLE = dict(marker="x", s=70, linewidths=2.2, color="black", zorder=3)


def _check_projection(projection):
    if projection not in PROJECTIONS:
        raise ValueError(
            f"expected projection in {list(PROJECTIONS)}; received projection={projection!r}."
        )


def _check_centers(centers, dim):
    if centers is None:
        return None
    centers = np.asarray(centers, dtype="float64")
    if centers.ndim != 2 or centers.shape[1] != dim:
        raise ValueError(
            f"expected centers of shape (num_classes, {dim}); received {centers.shape}."
        )
    return centers


def _subsample(features, labels, max_points, seed):
    """At most ``max_points`` finite rows (a seeded subsample), and the count of dropped rows."""
    finite = np.all(np.isfinite(features), axis=1)
    dropped = int(np.sum(~finite))
    if dropped:
        features, labels = features[finite], labels[finite]
    if len(labels) > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(len(labels), max_points, replace=False))
        features, labels = features[keep], labels[keep]
    return features, labels, dropped


def _num_classes(labels, centers):
    return int(max(labels.max(initial=-1) + 1, 0 if centers is None else len(centers)))


def _scatter(ax, points, labels, centers_2d, colors, class_names, centers_label, size):
    """The points of each class (one collection per class, labelled), then the centers."""
    from matplotlib import patheffects

    for c in np.unique(labels):
        rows = labels == c
        name = class_names[c] if class_names is not None and c < len(class_names) else str(c)
        ax.scatter(points[rows, 0], points[rows, 1], s=size, alpha=0.7, color=colors[c],
                   label=name, linewidths=0, rasterized=False)
    if centers_2d is not None:
        style = dict(_CENTER_STYLE)
        if len(colors) > 20:  # many crosses: smaller, so they do not hide the points
            style.update(s=28, linewidths=1.5)
        ax.scatter(centers_2d[:, 0], centers_2d[:, 1], label=centers_label,
                   path_effects=[patheffects.withStroke(linewidth=3, foreground="white")],
                   **style)


def plot_features(
    features,
    labels,
    centers=None,
    *,
    class_names=None,
    title=None,
    centers_label="centers",
    path=None,
    max_points=5000,
    seed=0,
):
    """Scatter of the features coloured by class, the centers as black crosses.

    Features of more than two dimensions are projected on their first two
    principal components (the centers with the same projection). Rows with
    NaN or infinite values are left out (and counted in a note), and so are
    such center rows (a class without rows has no mean to draw). A title over
    50 characters is wrapped onto more lines, so it stays inside the figure.

    Args:
        features: ``(n, dim)`` array of embeddings.
        labels: ``(n,)`` integer classes.
        centers: optional ``(num_classes, dim)`` array, drawn as black crosses;
            non-finite rows are not drawn.
        class_names: optional display name per class (legend).
        title: figure title.
        centers_label: legend entry of the crosses.
        path: if given, the figure is also saved there (PNG).
        max_points: at most this many points are drawn (a seeded subsample).
        seed: seed of that subsample.

    Returns:
        The ``matplotlib.figure.Figure``.

    Example:
        >>> import numpy as np
        >>> fig = plot_features(np.random.rand(30, 3), np.arange(30) % 3)
        >>> fig.axes[0].get_xlabel()
        'PC 1'
    """
    from matplotlib.figure import Figure

    features, labels = _as_features(features, labels)
    centers = _check_centers(centers, features.shape[1])
    num_classes = _num_classes(labels, centers)
    features, labels, dropped = _subsample(features, labels, max_points, seed)
    points, centers_2d, pca = _project_2d(features, centers) if len(labels) >= 2 else (
        np.zeros((0, 2)), None, None)

    colors = _class_colors(max(num_classes, 1))
    fig = Figure(figsize=(6.4, 5.6), layout="constrained")
    ax = fig.add_subplot()
    _scatter(ax, points, labels, centers_2d, colors, class_names, centers_label, size=8)
    notes = []
    if pca is not None:
        ratio = pca.explained_variance_ratio_
        ax.set_xlabel("PC 1")
        ax.set_ylabel("PC 2")
        notes.append(f"PCA of {features.shape[1]}-D features: "
                     f"{100 * ratio.sum():.0f}% of the variance")
    else:
        ax.set_xlabel("feature 1")
        ax.set_ylabel("feature 2" if features.shape[1] == 2 else "(1-D features)")
    if dropped:
        notes.append(f"{dropped} non-finite rows left out")
    if notes:
        ax.text(0.01, 0.01, "; ".join(notes), transform=ax.transAxes, fontsize=8, color="0.35")
    if title:
        ax.set_title(textwrap.fill(str(title), _TITLE_WIDTH))
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False,
                  markerscale=1.5)
    ax.grid(alpha=0.2)
    if path is not None:
        fig.savefig(path, dpi=110, metadata={"Software": None})
    return fig


def _grid_shape(count, ncols):
    if ncols is None:
        rows = math.ceil(count / 4)
        ncols = math.ceil(count / rows)
    if not isinstance(ncols, (int, np.integer)) or isinstance(ncols, bool) or ncols < 1:
        raise ValueError(f"expected ncols a positive integer or None; received ncols={ncols!r}.")
    ncols = int(min(ncols, count))
    return math.ceil(count / ncols), ncols


def _check_panel(index, panel):
    if not isinstance(panel, dict):
        raise TypeError(
            f"panel {index}: expected a dict with 'title', 'features', 'labels' and optional "
            f"'centers' and 'subtitle'; received {type(panel).__name__}."
        )
    missing = [key for key in ("features", "labels") if key not in panel]
    unknown = sorted(set(panel) - {"title", "features", "labels", "centers", "subtitle"})
    if missing or unknown:
        raise ValueError(
            f"panel {index}: expected keys 'title', 'features', 'labels' (required: features, "
            f"labels) and optional 'centers', 'subtitle'; missing {missing}, unknown {unknown}."
        )
    try:
        features, labels = _as_features(panel["features"], panel["labels"])
        centers = _check_centers(panel.get("centers"), features.shape[1])
    except ValueError as error:
        title = panel.get("title")
        raise ValueError(f"panel {index} ({title!r}): {error}") from None
    if labels.size and labels.min() < 0:
        raise ValueError(f"panel {index}: labels must be >= 0; received {labels.min()}.")
    return dict(title=panel.get("title"), subtitle=panel.get("subtitle"), features=features,
                labels=labels, centers=centers)


def plot_feature_grid(
    panels,
    *,
    path=None,
    ncols=None,
    title=None,
    max_points=2000,
    seed=0,
    projection="pca",
    class_names=None,
    centers_label="centers",
):
    """Feature scatters of several runs side by side, one panel per run.

    The figure of a sweep, as Fig. 3 of Wen et al., "A Discriminative Feature
    Learning Approach for Deep Face Recognition" (ECCV 2016) shows the 2-D
    MNIST features for several center-loss weights lambda. A class has the same
    colour in every panel; the centers are black crosses; one legend, outside
    the panels, serves them all. Each panel keeps its own scale (feature norms
    differ between runs) with equal x and y units, so a circle stays a circle.
    Features of more than two dimensions are projected on each panel's own
    first two principal components.

    Args:
        panels: list of dicts, one per panel: ``"title"`` (str), ``"features"``
            (``(n, d)`` array), ``"labels"`` (``(n,)`` ints), optional
            ``"centers"`` (``(K, d)`` array or None; non-finite rows are not
            drawn) and ``"subtitle"`` (a short line under the title, e.g.
            ``"ratio 0.14, acc 0.95"``). Titles over 40 characters and
            subtitles over 56 are wrapped onto more lines.
        path: if given, the figure is also saved there (PNG).
        ncols: panels per row (default: at most 4, rows balanced).
        title: figure title.
        max_points: at most this many points per panel (a seeded subsample;
            the same rows in every panel of equal size).
        seed: seed of that subsample.
        projection: how ``d > 2`` features become 2-D; only ``"pca"``.
        class_names: optional display name per class (legend).
        centers_label: legend entry of the crosses.

    Returns:
        The ``matplotlib.figure.Figure``: one axes per panel, in order.

    Raises:
        ValueError: no panels, a panel with bad keys or shapes, or an unknown
            ``projection``.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> y = np.arange(60) % 3
        >>> fig = plot_feature_grid([
        ...     {"title": "lambda=0", "features": rng.normal(size=(60, 2)), "labels": y},
        ...     {"title": "lambda=0.1", "features": rng.normal(size=(60, 5)), "labels": y,
        ...      "centers": np.zeros((3, 5)), "subtitle": "ratio 0.14"}])
        >>> [ax.get_title() for ax in fig.axes], fig.axes[1].get_xlabel()[:4]
        (['lambda=0', 'lambda=0.1'], 'PC 1')
    """
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    _check_projection(projection)
    panels = [_check_panel(i, panel) for i, panel in enumerate(panels)]
    if not panels:
        raise ValueError("plot_feature_grid needs at least one panel; received none.")
    rows, ncols = _grid_shape(len(panels), ncols)
    num_classes = max(_num_classes(p["labels"], p["centers"]) for p in panels)
    colors = _class_colors(max(num_classes, 1))
    for panel in panels:  # long lines wrap rather than run into the next panel
        for key, width in (("title", 40), ("subtitle", 56)):
            if panel[key] is not None and len(str(panel[key])) > width:
                panel[key] = textwrap.fill(str(panel[key]), width)
    subtitle_lines = max(str(p["subtitle"]).count("\n") + 1 if p["subtitle"] else 0
                         for p in panels)
    subtitled = subtitle_lines > 0

    fig = Figure(figsize=(3.5 * ncols + 1.3, (3.7 if subtitled else 3.5) * rows + 0.4),
                 layout="constrained")
    axes = fig.subplots(rows, ncols, squeeze=False).ravel()
    for ax, panel in zip(axes, panels):
        features, labels, dropped = _subsample(panel["features"], panel["labels"], max_points,
                                               seed)
        if len(labels) >= 2:
            points, centers_2d, pca = _project_2d(features, panel["centers"])
        else:
            points, centers_2d, pca = np.zeros((0, 2)), None, None
        _scatter(ax, points, labels, centers_2d, colors, class_names, centers_label, size=5)
        if pca is not None:
            ratio = 100 * pca.explained_variance_ratio_
            ax.set_xlabel(f"PC 1 ({ratio[0]:.0f}% var.)", fontsize=8)
            ax.set_ylabel(f"PC 2 ({ratio[1]:.0f}% var.)", fontsize=8)
        else:
            ax.set_xlabel("feature 1", fontsize=8)
            ax.set_ylabel("feature 2" if features.shape[1] == 2 else "(1-D features)",
                          fontsize=8)
        if panel["title"] is not None:
            ax.set_title(str(panel["title"]), fontsize=10, pad=6 + 10 * subtitle_lines)
        if panel["subtitle"]:
            ax.text(0.5, 1.015, str(panel["subtitle"]), transform=ax.transAxes, ha="center",
                    va="bottom", fontsize=8, color="0.3")
        if dropped or len(labels) < 2:
            ax.text(0.5, 0.5, f"{dropped} non-finite rows left out" if dropped else "no points",
                    transform=ax.transAxes, ha="center", fontsize=8, color="0.35")
        ax.tick_params(labelsize=7)
        ax.set_aspect("equal", adjustable="datalim")
        ax.grid(alpha=0.2)
    for ax in axes[len(panels):]:
        fig.delaxes(ax)

    handles = []
    if num_classes <= 20:
        for c in range(num_classes):
            name = class_names[c] if class_names is not None and c < len(class_names) else str(c)
            handles.append(Line2D([], [], linestyle="", marker="o", markersize=5,
                                  markeredgewidth=0, color=colors[c], label=name))
    if any(_drawable_centers(p["centers"]) is not None for p in panels):
        handles.append(Line2D([], [], linestyle="", marker="x", markersize=7,
                              markeredgewidth=2, color="black", label=centers_label))
    if handles:
        fig.legend(handles=handles, loc="outside right center", fontsize=8, frameon=False,
                   title=f"class ({num_classes})" if num_classes > 20 else "class",
                   title_fontsize=8)
    if title:
        fig.suptitle(title, fontsize=11)
    if path is not None:
        fig.savefig(path, dpi=110, metadata={"Software": None})
    return fig
