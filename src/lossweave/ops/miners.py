"""Tuple selections of the miners (:mod:`lossweave.miners`) inside the compiled step, static shapes.

Every function reads the ``(n, m)`` values ``d`` of a distance *in its
larger-is-farther order* (a similarity negated: ``lossweave.ops.distances.ordered``)
and the positive / negative masks of :func:`lossweave.ops.pair_structure.pair_structure`,
and returns a :class:`Mined` selection; nothing bigger than ``n x m`` is built
(triplet selections are a mask of positive pairs plus either one negative
column per positive pair or a condition on the gap ``d(a, n) - d(a, p)``
that the triplet loss evaluates one positive rank at a time). No gradient
flows through a selection.

A *pair* loss given a triplet selection uses its pairs: the (anchor,
positive) pairs that have a triplet and the (anchor, negative) pairs that are
in one (:func:`pairs_of`); a *triplet* loss given a pair selection forms every
triplet of an anchor's selected positives and negatives (pytorch-metric-learning's
conversions, ``convert_to_pairs`` / ``convert_to_triplets``).
"""

import collections

from keras import ops

Mined = collections.namedtuple("Mined", ["positives", "negatives", "column", "gap"], defaults=(None, None))
Mined.__doc__ = """A selection of tuples.

Attributes:
    positives: bool ``(n, m)``: the selected positive pairs (of a triplet selection: those with a triplet).
    negatives: bool ``(n, m)``: the selected negative pairs (of a column selection: the negatives a
        triplet may use; the columns name them).
    column: ``None``, or int32 ``(n, m)``: for each selected positive pair ``(a, p)``, the column of
        its one negative (the triplet ``(a, p, column[a, p])``).
    gap: ``None``, or a function of the float ``(n, m)`` gaps ``d(a, n) - d(a, p)`` of one positive
        rank to the bool mask of the triplets kept (pytorch-metric-learning's ``TripletMarginMiner``).
"""

_BIG = 1.0e30


def positive_ranks(positives):
    """``rank[a, j]``: ``j`` is the ``rank``-th positive of row ``a`` (1, 2, ...), 0 where not a positive."""
    return ops.where(positives, ops.cumsum(ops.cast(positives, "int32"), axis=1), 0)


def most_positives(positives, rows):
    """The largest number of positives of a row in ``rows``: the trip count of the loops over positives."""
    counts = ops.sum(ops.cast(positives, "int32"), axis=1)
    return ops.max(ops.where(rows, counts, 0), initial=0)


def _first_column(mask):
    """``(n, 1)`` int32: the first true column of each row (the last column where none is)."""
    columns = ops.arange(ops.shape(mask)[1], dtype="int32")[None, :]
    last = ops.maximum(ops.shape(mask)[1] - 1, 0)
    # argmin/argmax are slow variadic reductions on XLA: a masked min of the column numbers instead.
    return ops.minimum(ops.min(ops.where(mask, columns, last), axis=1, keepdims=True), last)


def _extreme(d, mask, largest):
    """``(n, 1)``: the largest (or smallest) ``d`` in each row's mask; -/+1e30 where the mask is empty."""
    keep = ops.cast(mask, "float32")
    if largest:
        return ops.max(d + (keep - 1.0) * _BIG, axis=1, keepdims=True)
    return ops.min(d + (1.0 - keep) * _BIG, axis=1, keepdims=True)


def _column_of(d, mask, largest):
    """The column of the largest (smallest) ``d`` in each row's mask, the first on a tie; ``(n, 1)``."""
    value = _extreme(d, mask, largest)
    return _first_column(ops.logical_and(mask, ops.equal(d, value))), value


def semi_hard_negatives(d, positives, negatives):
    """Column of the semi-hard negative of each (anchor, positive) pair, as TF Addons picks it.

    For pair ``(a, p)``: the negative ``n`` with the smallest ``d(a, n)``
    strictly greater than ``d(a, p)`` (the first such column on a tie); if
    there is none, the negative with the largest ``d(a, n)``
    (``TripletSemiHardLoss``'s ``negatives_inside``). One masked minimum per
    positive rank (the ``k``-th positive of every anchor at once): ``P``
    passes over the ``(n, m)`` matrix for anchors of at most ``P`` positives,
    no sort (row sorts are slow on XLA's CPU backend).
    """
    d = ops.stop_gradient(d)
    inf = ops.full_like(d, float("inf"))
    to_negatives = ops.where(negatives, d, inf)  # d(a, n), +inf where n is not a negative
    farthest, _ = _column_of(d, negatives, largest=True)
    ranks = positive_ranks(positives)

    def one_rank(k, chosen):
        this = ops.equal(ranks, k + 1)  # the k-th positive of each anchor
        query = ops.max(ops.where(this, d, -inf), axis=1, keepdims=True)  # d(a, p_k); -inf: no k-th positive
        nearest = ops.min(ops.where(to_negatives > query, to_negatives, inf), axis=1, keepdims=True)
        column = _first_column(ops.equal(to_negatives, nearest))
        return ops.where(this, ops.where(nearest < float("inf"), column, farthest), chosen)

    rows = ops.any(negatives, axis=1)
    return ops.fori_loop(0, most_positives(positives, rows), one_rank, ops.zeros_like(ranks))


def semi_hard(d, positives, negatives):
    """TF Addons' semi-hard selection (Schroff et al., CVPR 2015): one negative per positive pair."""
    has_negative = ops.any(negatives, axis=1, keepdims=True)
    return Mined(ops.logical_and(positives, has_negative), negatives,
                 semi_hard_negatives(d, positives, negatives))


BATCH_STRATEGIES = ("easy", "semihard", "hard")


def batch_easy_hard(d, positives, negatives, pos_strategy="easy", neg_strategy="semihard"):
    """One triplet per anchor: pytorch-metric-learning's ``BatchEasyHardMiner`` (Xuan et al., WACV 2020).

    The positive is the anchor's nearest (``"easy"``) or farthest
    (``"hard"``) positive; the negative its farthest (``"easy"``) or nearest
    (``"hard"``) negative; ``"semihard"`` is the hard one among those on the
    right side of the other pick (a negative farther than the chosen
    positive, a positive nearer than the chosen negative). Ties take the first
    column. An anchor without a positive or a negative (or without a
    semi-hard one) has no triplet. ``("hard", "hard")`` is batch-hard
    (Hermans et al. 2017, Eq. 5).
    """
    d = ops.stop_gradient(d)
    if pos_strategy == "semihard":
        negative, negative_value = _column_of(d, negatives, largest=neg_strategy == "easy")
        allowed = ops.logical_and(positives, d < negative_value)
        positive, _ = _column_of(d, allowed, largest=True)
        has = ops.logical_and(ops.any(allowed, axis=1), ops.any(negatives, axis=1))
    else:
        positive, positive_value = _column_of(d, positives, largest=pos_strategy == "hard")
        allowed = negatives
        if neg_strategy == "semihard":
            allowed = ops.logical_and(negatives, d > positive_value)
        negative, _ = _column_of(d, allowed, largest=neg_strategy == "easy")
        has = ops.logical_and(ops.any(positives, axis=1), ops.any(allowed, axis=1))
    columns = ops.arange(ops.shape(d)[1], dtype="int32")[None, :]
    chosen = ops.logical_and(ops.equal(columns, positive), has[:, None])
    return Mined(chosen, negatives, ops.broadcast_to(negative, ops.shape(d)))


TRIPLET_TYPES = ("all", "hard", "semihard", "easy")


def triplet_margin(positives, negatives, margin=0.2, type_of_triplets="all"):
    """pytorch-metric-learning's ``TripletMarginMiner``: triplets by their gap ``g = d(a, n) - d(a, p)``.

    ``"all"``: ``g <= margin`` (the triplets that violate the margin);
    ``"hard"``: ``g <= min(0, margin)``; ``"semihard"``: ``0 < g <= margin``;
    ``"easy"``: ``g > margin``.
    """
    def gap(g):
        if type_of_triplets == "easy":
            return g > margin
        keep = g <= margin
        if type_of_triplets == "hard":
            return ops.logical_and(keep, g <= 0.0)
        if type_of_triplets == "semihard":
            return ops.logical_and(keep, g > 0.0)
        return keep

    return Mined(positives, negatives, None, gap)


def multi_similarity(d, positives, negatives, epsilon=0.1):
    """The pair mining of multi-similarity loss (Wang et al., CVPR 2019, Eq. 9-10), on distances.

    In similarities ``S = -d``: a negative ``k`` is kept when ``S_ik + epsilon
    > min_{positives j} S_ij`` (Eq. 9) and a positive ``j`` when ``S_ij -
    epsilon < max_{negatives k} S_ik`` (Eq. 10); both strict. An anchor
    without positives keeps no negative and one without negatives keeps no
    positive.
    """
    d = ops.stop_gradient(d)
    hardest_positive = _extreme(d, positives, largest=True)
    hardest_negative = _extreme(d, negatives, largest=False)
    kept_negatives = ops.logical_and(negatives, d - epsilon < hardest_positive)
    kept_positives = ops.logical_and(positives, d + epsilon > hardest_negative)
    return Mined(kept_positives, kept_negatives)


def pair_margin(d, positives, negatives, pos_margin=0.2, neg_margin=0.8):
    """pytorch-metric-learning's ``PairMarginMiner``: positives with ``d > pos_margin``, negatives ``d < neg_margin``.

    ``d`` and the margins are in the distance's larger-is-farther order (a
    similarity and its margins negated).
    """
    d = ops.stop_gradient(d)
    return Mined(ops.logical_and(positives, d > pos_margin), ops.logical_and(negatives, d < neg_margin))


def _hardest_fraction(d, mask, fraction, largest):
    """The ``ceil(fraction * #mask)`` entries of the mask with the largest (smallest) ``d``, ties kept."""
    flat_mask = ops.reshape(mask, (-1,))
    values = ops.reshape(d, (-1,))
    values = ops.where(flat_mask, values if largest else -values, ops.full_like(values, -float("inf")))
    count = ops.sum(ops.cast(flat_mask, "float32"))
    k = ops.cast(ops.ceil(fraction * count), "int32")
    ordered = ops.flip(ops.sort(values), axis=0)  # descending
    threshold = ops.take(ordered, ops.maximum(k - 1, 0))
    keep = ops.logical_and(flat_mask, values >= threshold)
    return ops.reshape(ops.logical_and(keep, k > 0), ops.shape(mask))


def hdc(d, positives, negatives, fraction=0.5):
    """pytorch-metric-learning's ``HDCMiner`` (Yuan, Yang & Zhang, ICCV 2017, "Hard-Aware Deeply Cascaded Embedding").

    Keeps the hardest ``ceil(fraction * count)`` positive pairs (largest
    ``d``) and negative pairs (smallest ``d``) of the batch. Pairs tied with
    the last one kept are kept too (pytorch-metric-learning's ``topk`` keeps
    an arbitrary one of them).
    """
    d = ops.stop_gradient(d)
    return Mined(_hardest_fraction(d, positives, fraction, largest=True),
                 _hardest_fraction(d, negatives, fraction, largest=False))


def _negatives_of_columns(column, positives, negatives):
    """Bool ``(n, m)``: the negatives that a column selection uses (one pass per positive rank)."""
    ranks = positive_ranks(positives)
    columns = ops.arange(ops.shape(column)[1], dtype="int32")[None, :]

    def one_rank(k, used):
        chosen = ops.max(ops.where(ops.equal(ranks, k + 1), column, -1), axis=1, keepdims=True)
        return ops.logical_or(used, ops.equal(columns, chosen))

    rows = ops.any(positives, axis=1)
    used = ops.fori_loop(0, most_positives(positives, rows), one_rank, ops.zeros_like(negatives))
    return ops.logical_and(used, negatives)


def _pairs_of_gap(d, mined):
    """The positive and negative pairs that hold a triplet of a gap selection (one pass per positive rank)."""
    d = ops.stop_gradient(d)
    ranks = positive_ranks(mined.positives)

    def one_rank(k, found):
        has, used = found
        this = ops.equal(ranks, k + 1)
        query = ops.max(ops.where(this, d, -float("inf")), axis=1, keepdims=True)
        row = ops.any(this, axis=1, keepdims=True)  # the anchor has a k-th positive
        triplets = ops.logical_and(ops.logical_and(mined.negatives, row), mined.gap(d - query))
        has = ops.logical_or(has, ops.logical_and(this, ops.any(triplets, axis=1, keepdims=True)))
        return has, ops.logical_or(used, triplets)

    rows = ops.any(mined.negatives, axis=1)
    start = (ops.zeros_like(mined.positives), ops.zeros_like(mined.negatives))
    return ops.fori_loop(0, most_positives(mined.positives, rows), one_rank, start)


def pairs_of(d, mined):
    """``(positives, negatives)``: the pairs of a selection, for a pair loss."""
    if mined.gap is not None:
        return _pairs_of_gap(d, mined)
    if mined.column is not None:
        return mined.positives, _negatives_of_columns(mined.column, mined.positives, mined.negatives)
    return mined.positives, mined.negatives


__all__ = ["BATCH_STRATEGIES", "Mined", "TRIPLET_TYPES", "batch_easy_hard", "hdc", "most_positives",
           "multi_similarity", "pair_margin", "pairs_of", "positive_ranks", "semi_hard", "semi_hard_negatives",
           "triplet_margin"]
