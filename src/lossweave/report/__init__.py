"""Figures and HTML reports of a training run (matplotlib, Agg; no display needed).

- :mod:`lossweave.report.features`: 2-D scatter of the features by class, with
  the centers; a grid of such scatters for runs side by side; the
  intra/inter-class distance ratio of an embedding.
- :mod:`lossweave.report.curves`: per-term loss curves, weight trajectories
  and (gradient-level strategies) the gradient cosine of each pair of terms
  from a Keras history; the pair distances and active tuples of
  ``lossweave.metrics.TupleStatistics`` over the epochs.
- :mod:`lossweave.report.retrieval`: a few queries beside their nearest
  references (image tiles marked right or wrong) and the calibration curve
  of an open-set threshold.
- :mod:`lossweave.report.html`: one self-contained HTML page (images inlined,
  opens offline).

The figures are drawn on ``matplotlib.figure.Figure`` objects, never through
``pyplot``, so they neither need nor change a global matplotlib backend.
"""

from lossweave.report.curves import (
    TOTALS,
    cosine_pairs,
    plot_cosine_curves,
    plot_loss_curves,
    plot_tuple_curves,
    plot_weight_curves,
    term_names,
    tuple_statistics_names,
    weight_names,
    weights_vary,
)
from lossweave.report.features import (
    PROJECTIONS,
    class_distance_ratio,
    plot_feature_grid,
    plot_features,
)
from lossweave.report.html import format_value, render_html, write_html
from lossweave.report.retrieval import image_shape, plot_calibration, plot_neighbors

__all__ = [
    "PROJECTIONS",
    "TOTALS",
    "class_distance_ratio",
    "cosine_pairs",
    "format_value",
    "image_shape",
    "plot_feature_grid",
    "plot_features",
    "plot_calibration",
    "plot_cosine_curves",
    "plot_loss_curves",
    "plot_neighbors",
    "plot_tuple_curves",
    "plot_weight_curves",
    "render_html",
    "term_names",
    "tuple_statistics_names",
    "weight_names",
    "weights_vary",
    "write_html",
]
