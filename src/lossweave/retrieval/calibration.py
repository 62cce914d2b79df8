"""Threshold calibration: sweep the distance of the nearest neighbour, pick the thresholds that reach targets.

The labelled calibration queries (held out from the index: a validation
split) are answered by their nearest reference. Every distinct nearest
distance ``t`` is a candidate threshold; at each, the queries with
``d <= t`` are accepted and the counts and figures of
:mod:`lossweave.retrieval.matching` (TP/FP/FN/TN as TensorFlow Similarity's
``match_nearest``; precision, recall, F1, FAR, accuracy) make the curve.
Three thresholds are read off it:

* **precision**: the *largest* threshold whose precision is at least
  ``target_precision`` (the most queries accepted at that precision;
  precision is not monotone in ``t``, so a smaller threshold may dip below
  the target);
* **far**: the largest threshold whose FAR is at most ``target_far`` (FAR
  only grows with ``t``, so every smaller threshold meets it too);
* **f1**: the threshold of the best F1 (the smallest of equal bests).

A target no candidate reaches gives ``None`` (the curve says how close it
came): only rejecting every query would meet it.

Departure from TF Similarity's ``calibrate``: it walks the curve from the
largest distance down, keeps only points where the metric improves and
stops at the first one past the target; here every distinct distance is a
candidate and the rule above is applied to all of them, so the threshold
of a target does not depend on the path through the curve.
"""

import numpy as np

from lossweave import arguments
from lossweave.retrieval import matching

OWNER = "lossweave.retrieval.calibrate"
TARGETS = ("precision", "far", "f1")


class Calibration:
    """The curve of a threshold sweep and the thresholds that reach its targets.

    Built by :func:`calibrate` (or :func:`sweep`); ``get_config()`` /
    ``from_config()`` and ``to_dict()`` (the config plus the figures and the
    chosen thresholds, for JSON) save and restore it.

    Args:
        thresholds: the candidate thresholds, ascending (every distinct
            nearest distance of the calibration queries).
        tp, fp, fn, tn: the counts at each threshold
            (:mod:`lossweave.retrieval.matching`).
        target_precision: the precision to reach.
        target_far: the false accept rate not to exceed.
        metric: the index's metric (``"cosine"``, ``"euclidean"``, ``"dot"``):
            the distance the thresholds are in.

    Attributes:
        precision, recall, f1, far, accuracy: the curve, one value per threshold.
        precision_threshold, far_threshold, f1_threshold: the chosen thresholds
            (``None`` for a target no threshold reaches).
        cutpoints: ``{"precision" | "far" | "f1": {"threshold", "precision",
            "recall", "f1", "far", "accuracy"} or None}``.

    Example:
        >>> cal = Calibration([0.1, 0.2, 0.3], tp=[1, 2, 2], fp=[0, 0, 1], fn=[1, 0, 0], tn=[1, 1, 0],
        ...                   target_precision=0.9, target_far=0.0)
        >>> cal.precision_threshold, cal.far_threshold, cal.f1_threshold
        (0.2, 0.2, 0.2)
        >>> Calibration.from_config(cal.get_config()).cutpoints == cal.cutpoints
        True
    """

    def __init__(self, thresholds, tp, fp, fn, tn, *, target_precision=0.99, target_far=0.01, metric=None):
        self.thresholds = np.asarray(thresholds, dtype="float64")
        if self.thresholds.ndim != 1 or self.thresholds.size == 0 or np.any(np.diff(self.thresholds) <= 0):
            raise ValueError(f"Calibration: expected `thresholds` a non-empty, strictly ascending 1-D array; "
                             f"received {thresholds!r}.")
        for name, value in zip(matching.COUNTS, (tp, fp, fn, tn)):
            value = np.asarray(value, dtype="int64")
            if value.shape != self.thresholds.shape or np.any(value < 0):
                raise ValueError(f"Calibration: expected `{name}` non-negative counts, one per threshold "
                                 f"({self.thresholds.size}); received {value.tolist()!r}.")
            setattr(self, name, value)
        self.target_precision = arguments.number(target_precision, "target_precision", "Calibration",
                                                 low=0.0, high=1.0)
        self.target_far = arguments.number(target_far, "target_far", "Calibration", low=0.0, high=1.0)
        self.metric = None if metric is None else str(metric)
        for name, value in matching.figures(self.tp, self.fp, self.fn, self.tn).items():
            setattr(self, name, value)

    def _largest(self, mask):
        where = np.flatnonzero(mask)
        return None if where.size == 0 else int(where[-1])

    def _positions(self):
        return {
            "precision": self._largest(self.precision >= self.target_precision),
            "far": self._largest(self.far <= self.target_far),
            "f1": int(np.argmax(self.f1)),
        }

    @property
    def cutpoints(self):
        out = {}
        for name, at in self._positions().items():
            out[name] = None if at is None else {
                "threshold": float(self.thresholds[at]),
                **{figure: float(getattr(self, figure)[at]) for figure in matching.FIGURES},
            }
        return out

    @property
    def precision_threshold(self):
        return self._threshold("precision")

    @property
    def far_threshold(self):
        return self._threshold("far")

    @property
    def f1_threshold(self):
        return self._threshold("f1")

    def _threshold(self, name):
        at = self._positions()[name]
        return None if at is None else float(self.thresholds[at])

    def threshold(self, target):
        """The threshold of ``target``: ``"precision"``, ``"far"`` or ``"f1"`` (``None`` if unreached)."""
        return self._threshold(arguments.choice(target, TARGETS, "target", "Calibration.threshold"))

    def at(self, threshold):
        """The counts and figures at any ``threshold`` (the last candidate at or below it).

        Example:
            >>> cal = Calibration([0.1, 0.3], tp=[1, 2], fp=[0, 1], fn=[1, 0], tn=[1, 0])
            >>> cal.at(0.2)["tp"], cal.at(0.05)["tp"]
            (1, 0)
        """
        value = matching.one_threshold(threshold)
        position = int(np.searchsorted(self.thresholds, value, side="right")) - 1
        if position < 0:  # below every nearest distance: every query rejected
            found = {"tp": 0, "fp": 0, "fn": int(self.tp[-1] + self.fn[-1]), "tn": int(self.fp[-1] + self.tn[-1])}
        else:
            found = {name: int(getattr(self, name)[position]) for name in matching.COUNTS}
        return {"threshold": value, **{k: float(v) for k, v in matching.figures(**found).items()}, **found}

    def get_config(self):
        return {
            "thresholds": [float(t) for t in self.thresholds],
            **{name: [int(c) for c in getattr(self, name)] for name in matching.COUNTS},
            "target_precision": self.target_precision,
            "target_far": self.target_far,
            "metric": self.metric,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def to_dict(self):
        """The config, the curve's figures and the cutpoints: plain lists and floats, for ``json.dumps``."""
        return {
            **self.get_config(),
            **{figure: [float(v) for v in getattr(self, figure)] for figure in matching.FIGURES},
            "cutpoints": self.cutpoints,
        }

    @classmethod
    def from_dict(cls, data):
        """A :class:`Calibration` from :meth:`to_dict`'s dict (the figures are recomputed from the counts)."""
        return cls(**{key: data[key] for key in ("thresholds", *matching.COUNTS)},
                   target_precision=data["target_precision"], target_far=data["target_far"],
                   metric=data.get("metric"))

    def __repr__(self):
        return (f"Calibration({self.thresholds.size} thresholds, precision>={self.target_precision:g}: "
                f"{self.precision_threshold}, far<={self.target_far:g}: {self.far_threshold}, "
                f"best f1: {self.f1_threshold})")


def sweep(distances, nearest_labels, labels, *, target_precision=0.99, target_far=0.01, metric=None):
    """The array form of :func:`calibrate`: the sweep over each query's nearest distance and label.

    Args:
        distances: ``(n,)`` the distance of each query's nearest reference
            (or a search result's ``(n, k)``: its first column).
        nearest_labels: ``(n,)`` (or ``(n, k)``) that reference's label.
        labels: ``(n,)`` the queries' true labels.
        target_precision, target_far, metric: as :class:`Calibration`.

    Returns:
        A :class:`Calibration`.

    Example:
        >>> cal = sweep([0.1, 0.2, 0.2, 0.4], [1, 2, 3, 4], [1, 2, 3, 0], target_precision=1.0)
        >>> cal.thresholds.tolist(), cal.precision.tolist(), cal.precision_threshold
        ([0.1, 0.2, 0.4], [1.0, 1.0, 0.75], 0.2)
    """
    target_precision = arguments.number(target_precision, "target_precision", OWNER, low=0.0, high=1.0)
    target_far = arguments.number(target_far, "target_far", OWNER, low=0.0, high=1.0)
    distances, nearest_labels = matching.check_nearest(distances, nearest_labels)
    if distances.size == 0:
        raise ValueError(f"{OWNER}: expected at least one calibration query; received none.")
    thresholds = np.unique(distances[np.isfinite(distances)])  # +inf: no reference found, never accepted
    if thresholds.size == 0:
        raise ValueError(f"{OWNER}: none of the {distances.size} calibration queries has a nearest reference "
                         "(every distance is inf): nothing to calibrate.")
    found = matching.counts(distances, nearest_labels, labels, thresholds)
    return Calibration(thresholds, **found, target_precision=target_precision, target_far=target_far,
                       metric=metric)


def calibrate(index, queries, labels, *, target_precision=0.99, target_far=0.01):
    """Sweep the distance of the nearest neighbour over labelled queries; thresholds for the targets.

    Args:
        index: a :class:`lossweave.retrieval.Index` with labels (the references).
        queries: ``(n, dim)`` labelled query embeddings, held out from the
            index (a query that is also a reference finds itself at distance 0).
        labels: ``(n,)`` their true labels; a label that no reference has
            marks a query of a class that is not enrolled (an unknown).
        target_precision: the precision the ``precision`` threshold reaches.
        target_far: the false accept rate the ``far`` threshold stays within.

    Returns:
        A :class:`Calibration`: the curve (precision, recall, F1, FAR and
        accuracy against the threshold) and ``precision_threshold``,
        ``far_threshold``, ``f1_threshold``.

    Raises:
        ValueError: labels of the wrong length or kind, no queries, targets
            outside [0, 1], an index without labels.

    Example:
        >>> import numpy as np
        >>> from lossweave.retrieval import Index, calibrate
        >>> index = Index(metric="euclidean")
        >>> index.add(np.array([[0.0], [10.0]]), labels=np.array([0, 1]))
        >>> queries = np.array([[1.0], [9.0], [3.0], [6.0]])
        >>> cal = calibrate(index, queries, [0, 1, 0, 0], target_precision=1.0)
        >>> cal.thresholds.tolist(), cal.precision_threshold, cal.f1_threshold
        ([1.0, 3.0, 4.0], 3.0, 3.0)
    """
    distances, nearest_labels = matching.nearest(index, queries)
    return sweep(distances, nearest_labels, labels, target_precision=target_precision, target_far=target_far,
                 metric=getattr(index, "metric", None))


__all__ = ["Calibration", "calibrate", "sweep"]
