"""Per-term loss curves from a Keras history of an ``lossweave.Objective``."""

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


def _draw(ax, values, **kwargs):
    values = np.asarray(values, dtype="float64")
    epochs = np.arange(1, len(values) + 1)
    ax.plot(epochs, values, marker="o" if len(values) < 3 else None, markersize=3, **kwargs)
    return values


def plot_loss_curves(history, *, terms=None, path=None, title=None, log_scale=True):
    """One panel per loss: the weighted total, then each term (train and validation).

    Term losses have different scales (center loss grows with the feature norm),
    so each term gets its own panel; its last logged weight is in the panel's
    title. Panels use a log scale when every value is positive.

    Args:
        history: a ``keras.callbacks.History`` or its ``.history`` dict.
        terms: term names in panel order (default: as logged; Keras sorts them).
        path: if given, the figure is also saved there (PNG).
        title: figure title.
        log_scale: use a log y axis where possible.

    Returns:
        The ``matplotlib.figure.Figure``.

    Example:
        >>> fig = plot_loss_curves({"loss": [2.0, 1.0], "loss/softmax": [2.0, 1.0],
        ...                         "weight/softmax": [1.0, 1.0]})
        >>> [ax.get_title() for ax in fig.axes]
        ['total (weighted)', 'softmax (weight 1)']
    """
    from matplotlib.figure import Figure

    history = _history_dict(history)
    panels = [("total (weighted)", "loss")]
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
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in axes[len(panels):]:
        fig.delaxes(ax)
    if title:
        fig.suptitle(title)
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig
