"""``TupleStatistics``: what a tuple loss sees in its batches, to tell collapse from learning.

An embedding that collapses (every row at one point, the loss stuck at the
margin: pytorch-metric-learning issues #20 and #268) shows in the loss only
as a plateau; the distances of the batch's pairs say what happened. This
training metric logs, per epoch, with the term's own distance and pair
structure (:func:`lossweave.ops.pair_structure.pair_structure`: the same
positives, negatives and left-out rows as the loss):

- ``<name>/positive_distance``: the mean value of the positive pairs;
- ``<name>/negative_distance``: the mean value of the negative pairs;
- ``<name>/hardest_positive``: each anchor's farthest positive, averaged over the anchors that have one;
- ``<name>/hardest_negative``: each anchor's nearest negative, averaged over the anchors that have one;
- ``<name>/active_fraction``: the fraction of the loss's tuples (its pairs,
  triplets or anchors, after its miner) whose term is > 0.

Collapse reads as both distances falling together to 0 (the hardest
negative with them) while the active fraction stays near 1; learning reads
as the negative distance pulling away from the positive one and the active
fraction falling.
"""

import threading

import keras
from keras import ops

from lossweave import arguments
from lossweave import reducers as reducer_objects
from lossweave.ops.distances import ordered
from lossweave.ops.pair_structure import pair_structure
from lossweave.terms.pairs import PairTerm, global_batch

STATISTICS = ("positive_distance", "negative_distance", "hardest_positive", "hardest_negative", "active_fraction")


class _CountingReducer(reducer_objects.Reducer):
    """A reducer that records ``sum_a w_a C_a``, the weighted count of the terms it keeps, per thread.

    Called in place of a loss's reducer (``TupleArguments.reducing_with``),
    it sees the loss's own tuples (its miner's choice) and counts those with
    ``low < l`` (``low=None``: all). The loss it returns is not used. The
    count is kept per thread: tf.distribute traces each replica's step in a
    thread of its own.
    """

    def __init__(self, low=None):
        self.low = low
        self._local = threading.local()

    def start(self):
        self._local.count = ops.zeros((), "float32")

    def reduce(self, sums, counts, weights, ids):
        counted = ops.sum(ops.cast(weights, "float32") * ops.cast(counts, "float32"))
        self._local.count = self._local.count + counted  # (a loss may reduce twice: positives, negatives)
        return ops.zeros((), "float32")

    def count(self, term, embeddings, labels, sample_weight):
        """``sum_a w_a C_a`` of ``term``'s tuples on this batch (the term's loss is computed and dropped)."""
        self.start()
        with term.reducing_with(self):
            term.pair_loss(embeddings, labels, sample_weight)
        return self._local.count


@keras.saving.register_keras_serializable(package="lossweave")
class TupleStatistics(keras.metrics.Metric):
    """Pair distances and active tuples of a tuple loss's batches, logged as ``<name>/<statistic>``.

    ``update_state(labels, embeddings, sample_weight)`` (Keras's ``y_true,
    y_pred`` order, what ``compile(metrics=...)`` passes) adds one batch; the
    result is the mean over every pair (anchor, tuple) of the batches since
    the last reset:

    .. math::

        \\bar d^+ = \\frac{\\sum_a w_a \\sum_{p \\in P_a} d_{ap}}{\\sum_a w_a |P_a|},\\quad
        \\bar d^- = \\frac{\\sum_a w_a \\sum_{n \\in N_a} d_{an}}{\\sum_a w_a |N_a|},\\quad
        h^+ = \\frac{\\sum_{a : P_a \\ne \\emptyset} w_a \\max_{p \\in P_a} d_{ap}}
                   {\\sum_{a : P_a \\ne \\emptyset} w_a},\\quad
        h^- = \\frac{\\sum_{a : N_a \\ne \\emptyset} w_a \\min_{n \\in N_a} d_{an}}
                   {\\sum_{a : N_a \\ne \\emptyset} w_a}

    with ``d`` the term's ``distance`` (for a similarity, such as the cosine
    similarity of multi-similarity and SupCon, the values are similarities
    and "hardest" is the smallest positive and the largest negative
    similarity), ``P_a`` / ``N_a`` the anchor's positives and negatives in
    the term's pair structure (rows of weight 0, invalid labels or NaN/Inf
    features take no part) and ``w_a`` the sample weights (1 without). ``h^+``
    and ``h^-`` are the batch-hard distances of Hermans, Beyer & Leibe 2017
    ("In Defense of the Triplet Loss", Eq. 5), averaged. The active fraction
    is ``sum_a w_a #{t of a : l_t > 0} / sum_a w_a #{t of a}`` over the
    loss's own tuples (after its miner; per anchor for the losses whose
    terms are per anchor: multi-similarity, circle, SupCon, NT-Xent,
    N-pairs, whose smooth terms are > 0 wherever an anchor has a tuple, so
    their fraction is 1 but for anchors the miner leaves without a pair).
    A weighted mean of the statistic: weights all equal to ``c`` give the
    unweighted value. A statistic with nothing to average (no negative pair
    in any batch) is NaN.

    Under ``tf.distribute`` every replica gathers the global batch, as the
    term does, so the hardest pairs are the global batch's and every replica
    logs the same values. With multi-hot labels the pairs are the term's
    (its ``min_jaccard`` and its miner's).

    Cost: inside the compiled step it forms the batch's pair structure once
    more and runs the term's loss twice more (the counting reducers: every
    tuple, then the active ones; a compiler may share their common work).
    ``benchmarks/tuple_statistics.py`` times the step with and without it.

    Args:
        term: the tuple loss (a :class:`lossweave.terms.PairTerm` with a
            ``distance`` and a ``reducer``, e.g. ``ContrastiveLoss``,
            ``TripletLoss``, ``MultiSimilarityLoss``, ``SupConLoss``; a
            ``CrossBatchMemory`` is read through the term it wraps, on the
            batch only). The term itself computes the active tuples (its
            miner, its state), with a counting reducer in place of its own
            for that call only (``TupleArguments.reducing_with``).
        name: the prefix of the logged names.
        dtype: the dtype of the state.

    Example:
        >>> import numpy as np
        >>> import lossweave as lw
        >>> stats = TupleStatistics(lw.terms.ContrastiveLoss(neg_margin=1.0))
        >>> x = np.array([[0., 0.], [0.5, 0.], [0., 2.]], "float32")
        >>> stats.update_state(np.array([0, 0, 1]), x)
        >>> {k.split("/")[1]: round(float(v), 4) for k, v in stats.result().items()}   # doctest: +NORMALIZE_WHITESPACE
        {'positive_distance': 0.5, 'negative_distance': 2.0308, 'hardest_positive': 0.5,
         'hardest_negative': 2.0205, 'active_fraction': 0.3333}
    """

    def __init__(self, term, name="tuples", dtype="float32"):
        super().__init__(name=name, dtype=dtype)
        if isinstance(term, dict):
            term = keras.saving.deserialize_keras_object(term)
        if not isinstance(term, PairTerm):
            raise TypeError(
                f"TupleStatistics: received term={term!r}; expected a tuple loss, a "
                f"lossweave.terms.PairTerm (ContrastiveLoss, TripletLoss, MultiSimilarityLoss, SupConLoss, ...)."
            )
        self.term = term
        inner = getattr(term, "term", term)  # CrossBatchMemory: the term it wraps
        if not self.accepts(term):
            raise TypeError(
                f"TupleStatistics: received {type(term).__name__}, which has no `distance` and `reducer` "
                f"arguments; expected a tuple loss built on lossweave.terms.pairs.TupleArguments."
            )
        self._inner = inner
        self.distance = inner.distance
        # Reducers that count the loss's terms in its place: all of them, and those > 0.
        self._counters = (_CountingReducer(None), _CountingReducer(0.0))
        self.total = self.add_variable(shape=(len(STATISTICS),), initializer="zeros", name="total")
        self.count = self.add_variable(shape=(len(STATISTICS),), initializer="zeros", name="count")

    @staticmethod
    def accepts(term):
        """Whether ``term`` is a tuple loss this metric reads (a ``PairTerm`` with a ``distance`` and a ``reducer``)."""
        inner = getattr(term, "term", term)
        return isinstance(term, PairTerm) and hasattr(inner, "distance") and hasattr(inner, "reducer")

    @property
    def names(self):
        """The logged names, ``<name>/<statistic>``, in the order of ``STATISTICS``."""
        return [f"{self.name}/{statistic}" for statistic in STATISTICS]

    def batch_statistics(self, labels, embeddings, sample_weight=None):
        """``(totals, counts)``: the ``(5,)`` weighted sums and weights of one batch (the global one)."""
        embeddings, labels, sample_weight = global_batch(embeddings, labels, sample_weight)
        embeddings = ops.stop_gradient(ops.cast(embeddings, "float32"))
        rule = getattr(self._inner, "tuple_min_jaccard", None)  # the term's positives of multi-hot rows
        s = pair_structure(embeddings, labels, sample_weight, self.distance, what="TupleStatistics",
                           min_jaccard=None if rule is None else rule())
        farther = ordered(self.distance, s.values)  # larger is farther, whatever the distance
        weights = s.weights
        totals, counts = [], []
        for mask in (s.positives, s.negatives):
            mask = ops.cast(mask, "float32")
            totals.append(ops.sum(weights * ops.sum(mask * s.values, axis=1)))
            counts.append(ops.sum(weights * ops.sum(mask, axis=1)))
        for mask, hardest in ((s.positives, ops.max), (s.negatives, ops.min)):
            fill = float("-inf") if hardest is ops.max else float("inf")
            extreme = hardest(ops.where(mask, farther, fill), axis=1)
            has = ops.any(mask, axis=1)
            value = ops.where(has, ordered(self.distance, extreme), ops.zeros_like(extreme))
            have = weights * ops.cast(has, "float32")
            totals.append(ops.sum(have * value))
            counts.append(ops.sum(have))
        every, active = self._counters
        counts.append(every.count(self._inner, embeddings, labels, sample_weight))
        totals.append(active.count(self._inner, embeddings, labels, sample_weight))
        return ops.stack(totals), ops.stack(counts)

    def update_state(self, y_true, y_pred, sample_weight=None):
        """Add the batch of labels ``y_true`` and embeddings ``y_pred`` (``sample_weight``: per row)."""
        totals, counts = self.batch_statistics(y_true, y_pred, sample_weight)
        self.total.assign(self.total + ops.cast(totals, self.dtype))
        self.count.assign(self.count + ops.cast(counts, self.dtype))

    def result(self):
        total, count = ops.convert_to_tensor(self.total), ops.convert_to_tensor(self.count)
        means = ops.where(count > 0, total / ops.maximum(count, 1e-30), ops.full_like(total, float("nan")))
        return {name: means[i] for i, name in enumerate(self.names)}

    def reset_state(self):
        self.total.assign(ops.zeros((len(STATISTICS),), self.dtype))
        self.count.assign(ops.zeros((len(STATISTICS),), self.dtype))

    def get_config(self):
        return {"term": keras.saving.serialize_keras_object(self.term), "name": self.name, "dtype": self.dtype}


__all__ = ["STATISTICS", "TupleStatistics"]
