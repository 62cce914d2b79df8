"""The embedding of a run: a scatter by class with its centers, and a tightness ratio."""

import numpy as np


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
    in ``labels``. It does not change when the embedding is scaled, rotated or
    shifted, so runs with different feature norms compare.

    Parameters
    ----------
    features : array_like, shape (n, dim)
        Embeddings.
    labels : array_like of int, shape (n,)
        Class of each row.
    centers : array_like, shape (num_classes, dim), optional
        Center of each class, indexed by label (for instance the centers a
        center-loss term learned). Default: the mean of each class's rows.

    Returns
    -------
    float
        The ratio; ``inf`` if all centers coincide while samples spread, ``nan``
        if everything coincides.

    Raises
    ------
    ValueError
        If the shapes disagree, fewer than two classes are present, or a label
        has no row in ``centers``.

    Examples
    --------
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
    own = present[np.searchsorted(classes, labels)]
    intra = float(np.linalg.norm(features - own, axis=1).mean())
    pairwise = np.linalg.norm(present[:, None, :] - present[None, :, :], axis=-1)
    inter = float(pairwise[np.triu_indices(classes.size, k=1)].mean())
    if inter == 0.0:
        return float("nan") if intra == 0.0 else float("inf")
    return intra / inter


def _project_2d(features, centers):
    """Features (and centers) as 2-D points: PCA if dim > 2, padded if dim == 1."""
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
    principal components (the centers with the same projection).

    Args:
        features: ``(n, dim)`` array of embeddings.
        labels: ``(n,)`` integer classes.
        centers: optional ``(num_classes, dim)`` array, drawn as black crosses.
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
    centers = None if centers is None else np.asarray(centers, dtype="float64")
    if centers is not None and (centers.ndim != 2 or centers.shape[1] != features.shape[1]):
        raise ValueError(
            f"expected centers of shape (num_classes, {features.shape[1]}); received {centers.shape}."
        )
    if len(labels) > max_points:
        keep = np.random.default_rng(seed).choice(len(labels), max_points, replace=False)
        features, labels = features[keep], labels[keep]
    points, centers_2d, pca = _project_2d(features, centers)

    num_classes = int(max(labels.max(initial=-1) + 1, 0 if centers is None else len(centers)))
    colors = _class_colors(max(num_classes, 1))
    fig = Figure(figsize=(6.4, 5.6), layout="constrained")
    ax = fig.add_subplot()
    for c in np.unique(labels):
        rows = labels == c
        name = class_names[c] if class_names is not None and c < len(class_names) else str(c)
        ax.scatter(points[rows, 0], points[rows, 1], s=8, alpha=0.75, color=colors[c],
                   label=name, linewidths=0)
    if centers_2d is not None:
        ax.scatter(centers_2d[:, 0], centers_2d[:, 1], marker="x", s=70, linewidths=2,
                   color="black", label=centers_label, zorder=3)
    if pca is not None:
        ratio = pca.explained_variance_ratio_
        ax.set_xlabel("PC 1")
        ax.set_ylabel("PC 2")
        ax.text(0.01, 0.01, f"PCA of {features.shape[1]}-D features: "
                f"{100 * ratio.sum():.0f}% of the variance", transform=ax.transAxes,
                fontsize=8, color="0.35")
    else:
        ax.set_xlabel("feature 1")
        ax.set_ylabel("feature 2" if features.shape[1] == 2 else "(1-D features)")
    if title:
        ax.set_title(title)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False,
              markerscale=1.5)
    ax.grid(alpha=0.2)
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig
