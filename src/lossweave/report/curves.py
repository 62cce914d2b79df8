"""Per-term loss, weight and gradient-cosine curves from a Keras history of an ``lossweave.Objective``."""

import math

import numpy as np


def _history_dict(history):
    history = getattr(history, "history", history)  # a keras.callbacks.History or its dict
    if not isinstance(history, dict):
        raise TypeError(
            f"expected a keras History or its .history dict; received {type(history).__name__}."
        )
    return history


def term_names(history):
    """Names of the terms logged in a history (``loss/<term>`` keys), in logged order.

    Example:
        >>> term_names({"loss": [1.0], "loss/softmax": [0.9], "val_loss/softmax": [1.0],
        ...             "loss/center": [3.0]})
        ['softmax', 'center']
    """
    return [key[len("loss/"):] for key in _history_dict(history) if key.startswith("loss/")]


def _epoch_axis(ax, epochs):
    """Label the x axis "epoch" with whole-epoch ticks: every epoch up to 12, else a few."""
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel("epoch")
    if epochs <= 12:
        ax.set_xticks(np.arange(1, epochs + 1))
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


# What the logged ``loss`` (and ``val_loss``) is -> the title of its panel. The loss
# level minimises the weighted total; the gradient level combines the terms'
# gradients and logs their plain sum (the gradient-level ``Mean``: their mean).
TOTALS = {"weighted total": "total (weighted)", "sum of the terms": "total (sum of the terms)",
          "mean of the terms": "total (mean of the terms)"}


def _total_title(total):
    if total not in TOTALS:
        raise ValueError(f"expected total in {list(TOTALS)}; received total={total!r}.")
    return TOTALS[total]


def _draw(ax, values, **kwargs):
    values = np.asarray(values, dtype="float64")
    epochs = np.arange(1, len(values) + 1)
    ax.plot(epochs, values, marker="o" if len(values) < 3 else None, markersize=3, **kwargs)
    return values


def plot_loss_curves(history, *, terms=None, path=None, title=None, log_scale=True,
                     total="weighted total"):
    """One panel per loss: the total, then each term (train and validation).

    Term losses have different scales (center loss grows with the feature norm),
    so each term gets its own panel; its last logged weight is in the panel's
    title. Panels use a log scale when every value is positive.

    Args:
        history: a ``keras.callbacks.History`` or its ``.history`` dict.
        terms: term names in panel order (default: as logged; Keras sorts them).
        path: if given, the figure is also saved there (PNG).
        title: figure title.
        log_scale: use a log y axis where possible.
        total: what the history's ``loss`` is, for the first panel's title
            (a key of :data:`TOTALS`): ``"weighted total"``, which a
            loss-level weighting minimises; ``"sum of the terms"``, which a
            gradient-level weighting logs; ``"mean of the terms"`` (the
            gradient-level ``Mean``). Each includes the model's regularizers.

    Returns:
        The ``matplotlib.figure.Figure``.

    Raises:
        ValueError: a name in ``terms`` the history does not log, a history
            without losses, or an unknown ``total``.

    Example:
        >>> fig = plot_loss_curves({"loss": [2.0, 1.0], "loss/softmax": [2.0, 1.0],
        ...                         "weight/softmax": [1.0, 1.0]})
        >>> [ax.get_title() for ax in fig.axes]
        ['total (weighted)', 'softmax (weight 1)']
        >>> plot_loss_curves({"loss": [3.0], "loss/a": [1.0], "loss/b": [2.0]},
        ...                  total="sum of the terms").axes[0].get_title()
        'total (sum of the terms)'
    """
    from matplotlib.figure import Figure

    history = _history_dict(history)
    panels = [(_total_title(total), "loss")]
    logged = term_names(history)
    if terms is None:
        terms = logged
    missing = [name for name in terms if name not in logged]
    if missing:
        raise ValueError(f"terms {missing} are not in the history; it logs {logged}.")
    for name in terms:
        weights = history.get(f"weight/{name}")
        label = name if not weights else f"{name} (weight {weights[-1]:.3g})"
        panels.append((label, f"loss/{name}"))
    if "loss" not in history:
        panels = panels[1:]
    if not panels:
        raise ValueError(
            f"the history has no 'loss' or 'loss/<term>' entries; its keys are {sorted(history)}."
        )

    columns = min(len(panels), 3)
    rows = math.ceil(len(panels) / columns)
    fig = Figure(figsize=(4.2 * columns, 3.2 * rows), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax, (label, key) in zip(axes, panels):
        drawn = [_draw(ax, history[key], label="train", color="C0")]
        if f"val_{key}" in history:
            drawn.append(_draw(ax, history[f"val_{key}"], label="validation", color="C1",
                               linestyle="--"))
        values = np.concatenate(drawn)
        if log_scale and values.size and np.all(np.isfinite(values)) and np.all(values > 0):
            ax.set_yscale("log")
        ax.set_title(label)
        _epoch_axis(ax, len(history[key]))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in axes[len(panels):]:
        fig.delaxes(ax)
    if title:
        fig.suptitle(title)
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig


def weight_names(history):
    """Names of the terms with a logged weight (``weight/<term>`` keys), in logged order.

    Validation copies (``val_weight/<term>``) are ignored.

    Example:
        >>> weight_names({"loss": [1.0], "weight/softmax": [1.0], "val_weight/softmax": [1.0],
        ...               "weight/center": [0.1]})
        ['softmax', 'center']
    """
    return [key[len("weight/"):] for key in _history_dict(history) if key.startswith("weight/")]


def _weights(history, terms):
    history = _history_dict(history)
    logged = weight_names(history)
    if terms is None:
        terms = logged
    missing = [name for name in terms if name not in logged]
    if missing:
        raise ValueError(
            f"terms {missing} have no 'weight/<term>' entries in the history; it logs weights "
            f"of {logged}."
        )
    return {name: np.asarray(history[f"weight/{name}"], dtype="float64").reshape(-1)
            for name in terms}


def _varies(values, rtol):
    if values.size < 2:
        return False
    finite = np.isfinite(values)
    if not finite.all():
        # a weight that became NaN or infinite (or came back from it) changed
        return not np.array_equal(values, np.full_like(values, values[0]), equal_nan=True)
    scale = max(float(np.max(np.abs(values))), np.finfo("float64").tiny)
    return float(np.ptp(values)) > rtol * scale


def weights_vary(history, *, terms=None, rtol=1e-6):
    """Whether any term's weight changed over the run (a learned or scheduled weight).

    Args:
        history: a ``keras.callbacks.History`` or its ``.history`` dict.
        terms: the terms to look at (default: every ``weight/<term>`` key).
        rtol: changes below ``rtol`` times the weight's largest magnitude do
            not count (float32 round-off of a constant weight).

    Returns:
        ``True`` if some weight took two different values; ``False`` for fixed
        weights, a single epoch, or a history with no ``weight/`` keys.

    Example:
        >>> weights_vary({"weight/softmax": [1.0, 1.0], "weight/center": [0.0, 0.5]})
        True
        >>> weights_vary({"weight/softmax": [1.0, 1.0], "loss": [2.0, 1.0]})
        False
    """
    return any(_varies(values, rtol) for values in _weights(history, terms).values())


def plot_weight_curves(history, *, terms=None, path=None, title=None):
    """The weight of each term per epoch: learned, scheduled or fixed, one line per term.

    Weights that change are solid lines; constant ones dashed and labelled
    "(fixed)", kept for reference. The y axis is logarithmic when the weights
    are positive and span more than a factor of 20 (a 0.003 center weight next
    to a softmax weight of 1); symmetric-log (linear near 0) when some are 0.
    Validation copies (``val_weight/<term>``) are ignored. Use
    :func:`weights_vary` to decide whether the figure is worth showing.

    Args:
        history: a ``keras.callbacks.History`` or its ``.history`` dict with
            ``weight/<term>`` entries (one value per epoch).
        terms: term names in legend order (default: as logged).
        path: if given, the figure is also saved there (PNG).
        title: axes title (default: "weight per term").

    Returns:
        The ``matplotlib.figure.Figure`` (one axes, one line per term).

    Raises:
        ValueError: the history logs no weights, or a name in ``terms`` has none.

    Example:
        >>> fig = plot_weight_curves({"weight/softmax": [1.0, 1.0, 1.0],
        ...                           "weight/center": [0.0, 0.05, 0.1]})
        >>> [line.get_label() for line in fig.axes[0].get_lines()]
        ['softmax (fixed)', 'center']
    """
    from matplotlib.figure import Figure

    weights = _weights(history, terms)
    if not weights:
        raise ValueError(
            "the history has no 'weight/<term>' entries; its keys are "
            f"{sorted(_history_dict(history))}. The Objective logs them for every term."
        )
    fig = Figure(figsize=(7.2, 3.6), layout="constrained")
    ax = fig.add_subplot()
    for i, (name, values) in enumerate(weights.items()):
        varies = _varies(values, 1e-6)
        _draw(ax, values, label=name if varies else f"{name} (fixed)", color=f"C{i % 10}",
              linestyle="-" if varies else "--", linewidth=1.8 if varies else 1.2)
    values = np.concatenate(list(weights.values()))
    finite = values[np.isfinite(values)]
    nonzero = np.abs(finite[finite != 0])
    if nonzero.size and np.all(finite >= 0) and nonzero.max() / nonzero.min() > 20:
        if np.all(finite > 0):
            ax.set_yscale("log")
        else:  # a weight warming up from 0: linear near 0, logarithmic above
            ax.set_yscale("symlog", linthresh=float(nonzero.min()), linscale=0.5)
    _epoch_axis(ax, max(len(v) for v in weights.values()))
    ax.set_ylabel("weight")
    ax.set_title(title or "weight per term")
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    if path is not None:
        fig.savefig(path, dpi=100, metadata={"Software": None})
    return fig


def cosine_pairs(history, terms=None):
    """The term pairs with a logged gradient cosine (``cosine/<a>/<b>`` keys).

    A gradient-level strategy logs, per epoch, the mean cosine between the
    gradients of each two terms on the shared variables. Validation copies
    (``val_cosine/...``: no gradients in evaluation, logged as 0) are ignored.

    Args:
        history: a ``keras.callbacks.History`` or its ``.history`` dict.
        terms: term names: the pairs come in this order (Keras sorts the
            history's keys by name); default: as logged.

    Example:
        >>> history = {"loss": [1.0], "cosine/softmax/center": [0.2],
        ...            "val_cosine/softmax/center": [0.0], "cosine/parity/center": [-0.1],
        ...            "cosine/softmax/parity": [0.1]}
        >>> cosine_pairs(history)
        [('softmax', 'center'), ('parity', 'center'), ('softmax', 'parity')]
        >>> cosine_pairs(history, terms=["softmax", "parity", "center"])
        [('softmax', 'parity'), ('softmax', 'center'), ('parity', 'center')]
    """
    pairs = []
    for key in _history_dict(history):
        if key.startswith("cosine/"):
            first, _, second = key[len("cosine/"):].partition("/")
            pairs.append((first, second))
    if terms is not None:
        position = {name: i for i, name in enumerate(terms)}
        missing = sorted({name for pair in pairs for name in pair} - set(position))
        if missing:
            raise ValueError(f"the history has gradient cosines of the terms {missing}, which are not "
                             f"in terms={list(terms)}; name every term, or leave terms=None.")
        pairs.sort(key=lambda pair: (position[pair[0]], position[pair[1]]))
    return pairs


def plot_cosine_curves(history, *, terms=None, path=None, title=None):
    """The cosine between each two terms' gradients per epoch: where the terms conflict.

    One line per pair (``cosine/<a>/<b>`` of the history) with a line at 0:
    below it the two gradients conflict (a step along one increases the
    other's loss, to first order), which is what the gradient-level
    strategies (MGDA, PCGrad, CAGrad, ...) act on. Pairs whose epoch mean
    ever falls below 0 are drawn solid and labelled "(conflict)", the others
    dashed. The y axis spans the values and 0, within ``[-1, 1]``.

    Args:
        history: a ``keras.callbacks.History`` or its ``.history`` dict with
            ``cosine/<a>/<b>`` entries (one value per epoch).
        terms: term names, to order the pairs (see :func:`cosine_pairs`).
        path: if given, the figure is also saved there (PNG).
        title: axes title (default: "gradient cosine per pair of terms").

    Returns:
        The ``matplotlib.figure.Figure`` (one axes, one line per pair, then the 0 line).

    Raises:
        ValueError: the history logs no cosines (a loss-level strategy).

    Example:
        >>> fig = plot_cosine_curves({"cosine/softmax/center": [0.3, 0.1, 0.05],
        ...                           "cosine/softmax/parity": [0.2, -0.1, -0.3]})
        >>> [line.get_label() for line in fig.axes[0].get_lines()][:2]
        ['softmax / center', 'softmax / parity (conflict)']
        >>> [round(float(v), 2) for v in fig.axes[0].get_ylim()]
        [-0.35, 0.35]
    """
    from matplotlib.figure import Figure

    history = _history_dict(history)
    pairs = cosine_pairs(history, terms)
    if not pairs:
        raise ValueError(
            "the history has no 'cosine/<a>/<b>' entries; its keys are "
            f"{sorted(history)}. A gradient-level weighting (MGDA, PCGrad, ...) logs them."
        )
    fig = Figure(figsize=(7.2, 3.6), layout="constrained")
    ax = fig.add_subplot()
    drawn = []
    for i, (first, second) in enumerate(pairs):
        values = np.asarray(history[f"cosine/{first}/{second}"], dtype="float64").reshape(-1)
        finite = values[np.isfinite(values)]
        conflict = bool(np.any(finite < 0))
        label = f"{first} / {second}" + (" (conflict)" if conflict else "")
        _draw(ax, values, label=label, color=f"C{i % 10}", linestyle="-" if conflict else "--",
              linewidth=1.8 if conflict else 1.2)
        drawn.append(values)
    ax.axhline(0.0, color="0.3", linewidth=0.8, zorder=0)
    finite = np.concatenate(drawn)
    finite = finite[np.isfinite(finite)]
    reach = max(float(np.max(np.abs(finite))) if finite.size else 1.0, 0.05) + 0.05
    ax.set_ylim(-min(reach, 1.05), min(reach, 1.05))  # symmetric: conflict reads as far as agreement
    _epoch_axis(ax, max(v.size for v in drawn))
    ax.set_ylabel("cosine (epoch mean)")
    ax.set_title(title or "gradient cosine per pair of terms")
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    if path is not None:
        fig.savefig(path, dpi=100, metadata={"Software": None})
    return fig


# The statistics of ``lossweave.metrics.TupleStatistics`` (``<name>/<statistic>``), as the figure labels them.
_TUPLE_DISTANCES = {"positive_distance": "mean positive", "hardest_positive": "hardest positive",
                    "negative_distance": "mean negative", "hardest_negative": "hardest negative"}


def tuple_statistics_names(history):
    """The names of the :class:`lossweave.metrics.TupleStatistics` a history logs (``<name>/active_fraction``).

    Example:
        >>> tuple_statistics_names({"loss": [1.0], "tuples/active_fraction": [0.5],
        ...                         "val_tuples/active_fraction": [0.4]})
        ['tuples']
    """
    suffix = "/active_fraction"
    return [key[:-len(suffix)] for key in _history_dict(history)
            if key.endswith(suffix) and not key.startswith("val_")]


def plot_tuple_curves(history, *, name=None, path=None, title=None):
    """The tuple statistics of a run over the epochs: the pair distances, and the active tuples.

    Left, the mean and the hardest positive and negative distances (the
    term's distance; a similarity for a similarity loss) of
    :class:`lossweave.metrics.TupleStatistics`; right, the fraction of active
    tuples. Validation values, where logged, are dashed. Collapse reads as the
    positive and negative curves falling together to 0; learning, as they part.

    Args:
        history: a ``keras.callbacks.History`` or its ``.history`` dict.
        name: the metric's name (its prefix); default: the first one logged.
        path: also write the figure there as a PNG.
        title: the figure's title.

    Returns:
        The ``matplotlib.figure.Figure`` (two axes).

    Raises:
        ValueError: the history logs no tuple statistics (or not ``name``).
    """
    from matplotlib.figure import Figure

    history = _history_dict(history)
    names = tuple_statistics_names(history)
    if not names or (name is not None and name not in names):
        raise ValueError(f"the history logs no tuple statistics{'' if name is None else f' named {name!r}'} "
                         f"(lossweave.metrics.TupleStatistics); it logs {names or 'none'}. Add the metric to "
                         f"compile(metrics=...).")
    name = names[0] if name is None else name
    fig = Figure(figsize=(9.6, 3.6), layout="constrained")
    distances, active = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    for k, (statistic, label) in enumerate(_TUPLE_DISTANCES.items()):
        key = f"{name}/{statistic}"
        if key not in history:
            continue
        color = f"C{k}"
        style = ":" if statistic.startswith("hardest") else "-"
        _draw(distances, history[key], label=label, color=color, linestyle=style)
        if f"val_{key}" in history:
            _draw(distances, history[f"val_{key}"], color=color, linestyle="--", alpha=0.6)
    distances.set_title("pair distances (dashed: validation)")
    distances.legend(fontsize="small")
    _epoch_axis(distances, len(history[f"{name}/active_fraction"]))
    _draw(active, history[f"{name}/active_fraction"], label="train", color="C0")
    if f"val_{name}/active_fraction" in history:
        _draw(active, history[f"val_{name}/active_fraction"], label="validation", color="C1", linestyle="--")
    active.set_title("fraction of active tuples (loss > 0)")
    active.set_ylim(-0.02, 1.02)
    active.legend(fontsize="small")
    _epoch_axis(active, len(history[f"{name}/active_fraction"]))
    if title:
        fig.suptitle(title)
    if path is not None:
        fig.savefig(path, dpi=100, metadata={"Software": None})
    return fig
