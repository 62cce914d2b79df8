"""Retrieval figures of a run: a few queries beside their nearest references, and the calibration curve.

- :func:`plot_neighbors`: one row per query, the query's image then its ``k``
  nearest references' images, each reference framed green when its label is
  the query's and red when it is not (``fig.marks`` says the same for a
  program);
- :func:`plot_calibration`: precision, recall, F1 and FAR against the
  distance threshold of a :class:`lossweave.retrieval.Calibration`, with its
  chosen thresholds marked;
- :func:`image_shape`: the shape to draw a sample in, or ``None`` for data
  that are not images (then there are no tiles).

Like the other figures, drawn on ``matplotlib.figure.Figure`` (no pyplot).
"""

import math

import numpy as np

RIGHT, WRONG = "#1a9850", "#d73027"  # frame colours

# The bundled data sets whose images come flattened: name -> (height, width).
FLAT_IMAGES = {"digits": (8, 8), "multitask": (8, 8), "mnist": (28, 28)}


def image_shape(sample_shape, data_name=None):
    """The ``(height, width)`` or ``(height, width, channels)`` to draw one sample in, or ``None``.

    A sample of shape ``(h, w)`` or ``(h, w, c)`` with ``c`` in 1, 3, 4 is an
    image; so is a flat sample of a bundled image data set (``digits``,
    ``multitask``: 8 x 8; ``mnist``: 28 x 28). Anything else (features) is not.

    Example:
        >>> image_shape((64,), "digits"), image_shape((28, 28, 1)), image_shape((64,), "npz")
        ((8, 8), (28, 28, 1), None)
    """
    sample_shape = tuple(int(s) for s in sample_shape)
    if len(sample_shape) == 2 or (len(sample_shape) == 3 and sample_shape[-1] in (1, 3, 4)):
        return sample_shape
    flat = FLAT_IMAGES.get(data_name)
    if len(sample_shape) == 1 and flat is not None and math.prod(flat) == sample_shape[0]:
        return flat
    return None


def _rgb(image, shape):
    """One sample as an RGB tile in [0, 1]: grey images dark on light (each scaled to its own range)."""
    image = np.asarray(image, dtype="float64").reshape(shape)
    if image.ndim == 3 and image.shape[-1] == 4:
        image = image[..., :3]
    image = np.where(np.isfinite(image), image, np.nan)
    low, high = np.nanmin(image), np.nanmax(image)
    scaled = np.nan_to_num((image - low) / (high - low) if high > low else np.zeros_like(image))
    if image.ndim == 2 or image.shape[-1] == 1:
        grey = 1.0 - scaled.reshape(image.shape[:2])
        return np.repeat(grey[..., None], 3, axis=-1)
    return scaled


def _name(label, class_names):
    label = label.item() if hasattr(label, "item") else label
    if class_names is not None and isinstance(label, (int, np.integer)) and 0 <= label < len(class_names):
        return str(class_names[label])
    return str(label)


class Mosaic:
    """The pixel layout of :func:`plot_neighbors`'s one image: where each tile and its frame lie.

    Tiles are upscaled to at least 32 pixels a side; each has a frame of
    ``border`` pixels around it; columns are ``gap`` apart (twice after the
    query column) and rows leave room for their titles above.
    """

    def __init__(self, rows, columns, shape):
        self.rows, self.columns = rows, columns
        self.scale = max(1, -(-32 // max(shape[:2])))
        self.height, self.width = shape[0] * self.scale, shape[1] * self.scale
        self.border = max(2, round(max(self.height, self.width) / 14))
        self.gap = max(4, self.width // 6)
        self.title = max(10, int(0.55 * self.height))

    def origin(self, row, column):
        """Top-left pixel ``(y, x)`` of the tile's frame."""
        x = column * (self.width + 2 * self.border + self.gap) + (self.gap if column > 0 else 0)
        y = row * (self.height + 2 * self.border + self.title) + self.title
        return y, x

    @property
    def size(self):
        y, x = self.origin(self.rows - 1, self.columns - 1)
        return y + self.height + 2 * self.border, x + self.width + 2 * self.border

    def place(self, canvas, row, column, tile, colour):
        y, x = self.origin(row, column)
        b = self.border
        canvas[y:y + self.height + 2 * b, x:x + self.width + 2 * b] = colour
        tile = np.repeat(np.repeat(tile, self.scale, axis=0), self.scale, axis=1)
        canvas[y + b:y + b + self.height, x + b:x + b + self.width] = tile


def plot_neighbors(queries, query_labels, references, reference_labels, distances, *, shape,
                   answers=None, enrolled=None, class_names=None, unknown=-1, path=None, title=None):
    """A grid of tiles: each query, then its nearest references framed right (green) or wrong (red).

    Drawn as one image (a :class:`Mosaic` of the tiles, fast to draw and
    save) in one axes, the classes and distances as text above the tiles.

    Args:
        queries: ``(q, ...)`` the query samples (raw inputs: images).
        query_labels: ``(q,)`` their true labels.
        references: ``(q, k, ...)`` the samples of each query's ``k`` nearest
            references, nearest first.
        reference_labels: ``(q, k)`` their labels.
        distances: ``(q, k)`` their distances to the query.
        shape: the image shape of one sample (:func:`image_shape`).
        answers: optional ``(q,)`` open-set answers (the nearest label or
            ``unknown``; :func:`lossweave.retrieval.match`), shown above the
            query, whose frame then says whether the answer is right: a
            query whose class has no reference is answered right by ``unknown``.
        enrolled: the labels the index holds (which queries should be
            answered ``unknown``); default: the labels of the references shown.
        class_names: optional display names of integer labels.
        unknown: the value of ``answers`` that means "unknown".
        path: if given, the figure is saved there (PNG).
        title: figure title.

    Returns:
        The ``matplotlib.figure.Figure``; ``fig.marks`` is the ``(q, 1 + k)``
        array of ``"right"``/``"wrong"`` (``""`` for a query without
        ``answers``) that the frames show, ``fig.mosaic`` the layout.

    Raises:
        ValueError: arrays whose shapes do not agree.

    Example:
        >>> import numpy as np
        >>> images = np.arange(2 * 4, dtype="float32").reshape(2, 4)
        >>> fig = plot_neighbors(images, [0, 1], images[[[1, 0], [1, 0]]], [[1, 0], [1, 0]],
        ...                      [[0.1, 0.2], [0.0, 0.3]], shape=(2, 2))
        >>> fig.marks.tolist()
        [['', 'wrong', 'right'], ['', 'right', 'wrong']]
    """
    from matplotlib.colors import to_rgb
    from matplotlib.figure import Figure

    queries = np.asarray(queries)
    query_labels = np.asarray(query_labels).reshape(-1)
    reference_labels, distances = np.asarray(reference_labels), np.asarray(distances, dtype="float64")
    count = queries.shape[0]
    if query_labels.shape != (count,) or reference_labels.ndim != 2 or reference_labels.shape[0] != count:
        raise ValueError(f"plot_neighbors: expected {count} query labels and ({count}, k) reference labels; "
                         f"received shapes {query_labels.shape} and {reference_labels.shape}.")
    k = reference_labels.shape[1]
    references = np.asarray(references)
    if distances.shape != (count, k) or references.shape[:2] != (count, k):
        raise ValueError(f"plot_neighbors: expected ({count}, {k}) distances and ({count}, {k}, ...) reference "
                         f"samples; received shapes {distances.shape} and {references.shape}.")
    if answers is not None:
        answers = np.asarray(answers).reshape(-1)
        if answers.shape != (count,):
            raise ValueError(f"plot_neighbors: expected {count} answers; received shape {answers.shape}.")
    mosaic = Mosaic(count, k + 1, tuple(shape))
    canvas = np.ones((*mosaic.size, 3))
    colours = {"right": to_rgb(RIGHT), "wrong": to_rgb(WRONG), "": (0.2, 0.2, 0.2)}
    marks = np.full((count, k + 1), "", dtype=object)
    texts = []
    enrolled = set(np.unique(reference_labels if enrolled is None else enrolled).tolist())
    for row in range(count):
        truth = _name(query_labels[row], class_names)
        text = f"query {truth}"
        if answers is not None:
            is_unknown = answers[row] == unknown
            right = answers[row] == query_labels[row] or (is_unknown and query_labels[row].item() not in enrolled)
            marks[row, 0] = "right" if right else "wrong"
            text += f"\nanswer {'unknown' if is_unknown else _name(answers[row], class_names)}"
        texts.append((row, 0, text, "black"))
        for column in range(k):
            right = reference_labels[row, column] == query_labels[row]
            marks[row, column + 1] = "right" if right else "wrong"
            texts.append((row, column + 1, f"{_name(reference_labels[row, column], class_names)}\n"
                                           f"d={distances[row, column]:.3g}", colours[marks[row, column + 1]]))
        for column in range(k + 1):
            sample = queries[row] if column == 0 else references[row, column - 1]
            mosaic.place(canvas, row, column, _rgb(sample, shape), colours[marks[row, column]])
    inches = 1.0 / (mosaic.width + 2 * mosaic.border)  # one framed tile ~ 1 inch
    head = 0.35 if title else 0.05
    fig = Figure(figsize=(canvas.shape[1] * inches + 0.1, canvas.shape[0] * inches + head))
    ax = fig.add_axes((0.05 / fig.get_figwidth(), 0.0, 1 - 0.1 / fig.get_figwidth(),
                       1 - head / fig.get_figheight()))
    ax.imshow(canvas, interpolation="nearest")
    ax.set_axis_off()
    for row, column, text, colour in texts:
        y, x = mosaic.origin(row, column)
        ax.text(x + mosaic.border + mosaic.width / 2, y - 2, text, ha="center", va="bottom", fontsize=7,
                color=colour, fontweight="bold" if column == 0 else "normal", linespacing=1.0)
    if title:
        fig.suptitle(str(title), fontsize=10, y=1 - 0.05 / fig.get_figheight(), va="top")
    fig.marks, fig.mosaic = marks, mosaic
    if path is not None:
        fig.savefig(path, dpi=110, metadata={"Software": None})
    return fig


def plot_calibration(calibration, *, threshold=None, path=None, title=None):
    """Precision, recall, F1 and FAR against the distance threshold, the chosen thresholds marked.

    Args:
        calibration: a :class:`lossweave.retrieval.Calibration`.
        threshold: the threshold in use (e.g. the run's), drawn as a solid
            line; the calibration's precision, FAR and best-F1 thresholds
            are dotted lines.
        path: if given, the figure is saved there (PNG).
        title: figure title.

    Returns:
        The ``matplotlib.figure.Figure`` (one axes; a line per figure,
        labelled ``precision``, ``recall``, ``F1``, ``FAR``). Thresholds
        that span more than two decades get a symmetric-log axis.

    Example:
        >>> from lossweave.retrieval import sweep
        >>> fig = plot_calibration(sweep([0.1, 0.2, 0.4], [1, 2, 3], [1, 2, 0], target_precision=1.0))
        >>> [line.get_label() for line in fig.axes[0].get_lines()][:4]
        ['precision', 'recall', 'F1', 'FAR']
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.2, 4.2), layout="constrained")
    ax = fig.subplots()
    x = calibration.thresholds
    style = {"drawstyle": "steps-post", "marker": "o" if x.size < 3 else None, "markersize": 4}
    for name, label, colour in (("precision", "precision", "#4575b4"), ("recall", "recall", "#fdae61"),
                                ("f1", "F1", "#1a9850"), ("far", "FAR", "#d73027")):
        ax.plot(x, getattr(calibration, name), label=label, color=colour, **style)
    marks = {}  # threshold -> the targets it meets (one line and one label where they coincide)
    for name, label in (("precision", f"precision >= {calibration.target_precision:g}"),
                        ("far", f"FAR <= {calibration.target_far:g}"), ("f1", "best F1")):
        chosen = calibration.threshold(name)
        if chosen is not None:
            marks.setdefault(chosen, []).append(label)
    positive = x[x > 0]
    if positive.size > 1 and positive.max() > 100 * positive.min():  # distances over decades: log-like axis
        # linear around 0 (down to the smallest distances, and any at or below 0), logarithmic above
        linthresh = max(float(np.quantile(positive, 0.05)), float(-x.min()) if x.min() < 0 else 0.0)
        ax.set_xscale("symlog", linthresh=linthresh, linscale=0.3)
    if x.size > 1:
        ax.set_xlim(x[0], x[-1])
    for chosen, labels in marks.items():  # the label on the side of the line with more room
        ax.axvline(chosen, color="0.45", linestyle=":", linewidth=1)
        left = (ax.transAxes.inverted().transform(ax.transData.transform((chosen, 0.0)))[0]) > 0.5
        ax.annotate(", ".join(labels), (chosen, 0.03), xycoords=("data", "axes fraction"), rotation=90,
                    fontsize=7, color="0.3", va="bottom", ha="right" if left else "left",
                    xytext=(-2 if left else 2, 0), textcoords="offset points")
    if threshold is not None:
        ax.axvline(threshold, color="0.1", linewidth=1.2, label=f"threshold {threshold:.4g}")
    metric = f" ({calibration.metric} distance)" if calibration.metric else ""
    ax.set_xlabel(f"threshold on the nearest neighbour's distance{metric}")
    ax.set_ylim(-0.03, 1.03)
    ax.grid(alpha=0.25)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    if title:
        ax.set_title(str(title), fontsize=10)
    if path is not None:
        fig.savefig(path, dpi=110, metadata={"Software": None})
    return fig


__all__ = ["FLAT_IMAGES", "image_shape", "plot_calibration", "plot_neighbors"]
