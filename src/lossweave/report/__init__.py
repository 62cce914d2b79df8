"""Figures and HTML reports of a training run (matplotlib, Agg; no display needed).

- :mod:`lossweave.report.features`: 2-D scatter of the features by class, with
  the centers; the intra/inter-class distance ratio of an embedding.
- :mod:`lossweave.report.curves`: per-term loss curves from a Keras history.
- :mod:`lossweave.report.html`: one self-contained HTML page (images inlined).

The figures are drawn on ``matplotlib.figure.Figure`` objects, never through
``pyplot``, so they neither need nor change a global matplotlib backend.
"""

from lossweave.report.curves import plot_loss_curves, term_names
from lossweave.report.features import class_distance_ratio, plot_features
from lossweave.report.html import format_value, render_html, write_html

__all__ = [
    "class_distance_ratio",
    "format_value",
    "plot_features",
    "plot_loss_curves",
    "render_html",
    "term_names",
    "write_html",
]
