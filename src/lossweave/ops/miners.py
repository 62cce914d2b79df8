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
import math

from keras import ops, random

Mined = collections.namedtuple("Mined", ["positives", "negatives", "column", "gap"], defaults=(None, None))
Mined.__doc__ = """A selection of tuples.

Attributes:
    positives: bool ``(n, m)``: the selected positive pairs (of a triplet selection: those with a triplet).
    negatives: bool ``(n, m)``: the selected negative pairs (of a column selection: the negatives a
        triplet may use; the columns name them).
    column: ``None``, or int32 ``(n, m)``: for each selected positive pair ``(a, p)``, the column of
        its one negative (the triplet ``(a, p, column[a, p])``).
    gap: ``None``, or a function ``gap(g, positive)`` of the float ``(n, m)`` gaps ``d(a, n) - d(a, p)``
        of one positive rank and of the bool ``(n, m)`` mask of that rank's positive ``p`` (one column
        per anchor at most) to the bool mask of the triplets ``(a, p, n)`` kept
        (pytorch-metric-learning's ``TripletMarginMiner`` reads ``g`` only; ``AngularMiner`` reads
        ``d(p, n)`` through ``positive``). A caller evaluates it once per positive rank.
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
    def gap(g, positive=None):
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


def _unit_sphere_squared(d, inverted):
    """Squared Euclidean distances from ordered values: ``d^2``, or ``2 + 2 d`` for ``d = -cos`` (unit rows)."""
    if inverted:
        return ops.maximum(2.0 + 2.0 * d, 0.0)
    return ops.square(d)


def angular(d, positives, negatives, angle=20.0, inverted=False):
    """pytorch-metric-learning's ``AngularMiner``: the triplets whose angle at ``n`` exceeds ``angle`` (degrees).

    Wang, Zhou, Wen, Liu & Lin, "Deep Metric Learning with Angular Loss",
    ICCV 2017, Sec. 3.2 (Eq. 4-5): with ``c = (a + p) / 2`` the angle at the
    negative is ``atan(|a - p| / (2 |n - c|))``. ``|n - c|`` is the median of
    the triangle ``(a, p, n)``: ``|n - c|^2 = (2 d_an^2 + 2 d_pn^2 - d_ap^2) / 4``,
    so the selection reads the Euclidean distances ``d`` of the batch
    against itself (``d(p, n)`` is row ``p`` of it) and keeps ``(a, p, n)``
    when ``d_ap^2 > 4 tan^2(angle) |n - c|^2``, the same test without a
    division (``d_ap = |n - c| = 0`` is kept by neither). With a similarity
    (``inverted``: ``d = -cos`` of unit rows) the distances are
    ``sqrt(2 - 2 cos)``, pytorch-metric-learning's normalised Euclidean ones.
    The batch against a reference set is refused (the partners' distances
    to each other are not in ``d``).
    """
    shape = tuple(d.shape)
    if shape[0] is not None and shape[1] is not None and shape[0] != shape[1]:
        raise ValueError(
            f"AngularMiner: received a ({shape[0]}, {shape[1]}) distance matrix (a batch against a reference "
            f"set); expected the batch against itself (the angle needs d(p, n) between two partners). "
            f"Use it without CrossBatchMemory / ref_embeddings."
        )
    squared = _unit_sphere_squared(ops.stop_gradient(ops.convert_to_tensor(d)), inverted)
    tan2 = math.tan(math.radians(angle)) ** 2

    def gap(g, positive=None):
        if positive is None:
            raise ValueError(
                "AngularMiner: received a call gap(g) without the positive of the rank; expected "
                "gap(g, positive) (lossweave.ops.miners.Mined: the angle reads d(p, n)). A loss that calls "
                "gap(g) cannot use this miner's triplets yet: use it with a pair loss (ContrastiveLoss, "
                "MultiSimilarityLoss, ...), which takes the pairs of its triplets."
            )
        column = _first_column(positive)[:, 0]
        ap = ops.max(ops.where(positive, squared, -float("inf")), axis=1, keepdims=True)
        pn = ops.take(squared, column, axis=0)  # d(p, n)^2: row p of the batch's distances
        median = ops.maximum((2.0 * squared + 2.0 * pn - ap) / 4.0, 0.0)
        return ap > 4.0 * tan2 * median

    return Mined(positives, negatives, None, gap)


def distance_weights(d, negatives, dimension, cutoff=0.5, nonzero_loss_cutoff=1.4, inverted=False):
    """The negatives' sampling probabilities of distance weighted sampling (Wu et al., ICCV 2017, Sec. 4).

    On the unit sphere of ``R^n`` (``n = dimension``) the pairwise distances
    of uniform points have the density ``q(d) ~ d^(n-2) (1 - d^2/4)^((n-3)/2)``;
    a negative is drawn with probability ``~ q(max(d, cutoff))^-1`` (the
    cutoff bounds the weights, the paper's ``min(lambda, q(d)^-1)``), and a
    negative at ``d >= nonzero_loss_cutoff`` (no loss under the margin loss)
    or with a non-finite weight gets 0 (pytorch-metric-learning's and the
    authors' code). ``d`` are Euclidean distances of unit rows, or ``-cos``
    (``inverted``), turned into them. Rows are normalised by their own
    largest log-weight (the same probabilities as the authors' global
    maximum; no row underflows to all zeros).

    Returns:
        float32 ``(n, m)``: each row's probabilities (0 outside the eligible
        negatives; a row without one is all 0).
    """
    d = ops.stop_gradient(ops.convert_to_tensor(d))
    distances = ops.sqrt(_unit_sphere_squared(d, inverted)) if inverted else d
    clipped = ops.maximum(distances, cutoff)
    inside = 1.0 - 0.25 * ops.square(clipped)
    safe = ops.where(inside > 0.0, inside, ops.ones_like(inside))
    log_weights = (2.0 - dimension) * ops.log(clipped) - ((dimension - 3.0) / 2.0) * ops.log(safe)
    eligible = ops.logical_and(negatives, clipped < nonzero_loss_cutoff)
    eligible = ops.logical_and(eligible, ops.logical_and(inside > 0.0, ops.isfinite(log_weights)))
    log_weights = ops.where(eligible, log_weights, ops.zeros_like(log_weights))  # no inf outside (d = 0)
    top = _extreme(log_weights, eligible, largest=True)
    weights = ops.where(eligible, ops.exp(ops.minimum(log_weights - top, 0.0)), ops.zeros_like(log_weights))
    total = ops.sum(weights, axis=1, keepdims=True)
    return weights / ops.maximum(total, 1e-30)


def distance_weighted(d, positives, negatives, dimension, cutoff=0.5, nonzero_loss_cutoff=1.4, seed=None,
                      inverted=False):
    """Distance weighted sampling (Wu et al., ICCV 2017, Sec. 4): one drawn negative per positive pair.

    As the authors' ``DistanceWeightedSampling``: every (anchor, positive)
    pair gets one negative drawn from the anchor's row of
    :func:`distance_weights` (with replacement across the anchor's pairs);
    an anchor without an eligible negative has no triplet. Each draw
    inverts the row's cumulative weights at one uniform number (one pass per
    positive rank, as the semi-hard selection: no ``(n, m, m)`` Gumbel
    tensor). ``seed``: an int or a ``keras.random.SeedGenerator``.
    """
    probabilities = distance_weights(d, negatives, dimension, cutoff, nonzero_loss_cutoff, inverted)
    eligible = probabilities > 0.0
    kept = ops.logical_and(positives, ops.any(eligible, axis=1, keepdims=True))
    uniform = random.uniform(ops.shape(probabilities), dtype="float32", seed=seed)
    cumulative = ops.cumsum(probabilities, axis=1)
    columns = ops.arange(ops.shape(d)[1], dtype="int32")[None, :]
    last = ops.max(ops.where(eligible, columns, 0), axis=1, keepdims=True)  # rounding guard
    ranks = positive_ranks(kept)

    def one_rank(k, chosen):
        this = ops.equal(ranks, k + 1)
        u = ops.max(ops.where(this, uniform, -1.0), axis=1, keepdims=True)  # the pair's own number
        target = u * cumulative[:, -1:]
        column = ops.sum(ops.cast(cumulative <= target, "int32"), axis=1, keepdims=True)
        return ops.where(this, ops.minimum(column, last), chosen)

    rows = ops.any(eligible, axis=1)
    column = ops.fori_loop(0, most_positives(kept, rows), one_rank, ops.zeros_like(ranks))
    return Mined(kept, eligible, column)


def _uniform_per_bin(d, mask, num_bins, per_bin, seed):
    """The pairs of ``mask`` kept by a uniform draw of ``per_bin`` of them (without replacement) per bin of ``d``.

    ``num_bins`` equal bins between the smallest and the largest ``d`` in
    the mask (pytorch-metric-learning's ``torch.linspace`` edges; the last
    bin closed). Each pair gets a random integer key; one sort of ``bin x
    2^k + key`` orders the pairs by bin and key, and a pair is kept when
    fewer than ``per_bin`` pairs of its bin come before it.
    """
    flat = ops.reshape(d, (-1,))
    flat_mask = ops.reshape(mask, (-1,))
    low = ops.min(ops.where(flat_mask, flat, float("inf")))
    high = ops.max(ops.where(flat_mask, flat, -float("inf")))
    width = ops.where(high > low, high - low, 1.0)
    position = ops.where(flat_mask, (flat - low) / width * num_bins, 0.0)
    bins = ops.clip(ops.cast(ops.floor(position), "int32"), 0, num_bins - 1)
    bins = ops.where(flat_mask, bins, num_bins)  # pairs outside the mask sort last
    span = (2 ** 31 - 1) // (num_bins + 1)
    keys = random.randint(ops.shape(flat), 0, span, dtype="int32", seed=seed)
    order = ops.argsort(bins * span + keys)
    sorted_bins = ops.take(bins, order)
    start = ops.searchsorted(sorted_bins, sorted_bins, side="left")
    keep = ops.logical_and(ops.arange(ops.shape(flat)[0], dtype="int32") - ops.cast(start, "int32") < per_bin,
                           sorted_bins < num_bins)
    back = ops.scatter(ops.expand_dims(order, -1), ops.cast(keep, "int32"), ops.shape(flat))
    return ops.reshape(back > 0, ops.shape(mask))


def uniform_histogram(d, positives, negatives, num_bins=100, pos_per_bin=10, neg_per_bin=10, seed=None):
    """pytorch-metric-learning's ``UniformHistogramMiner``: pairs drawn uniformly across distance bins.

    The positive pairs' values are cut into ``num_bins`` equal bins between
    their smallest and largest; from each bin ``pos_per_bin`` pairs are
    drawn uniformly; the negative pairs the same with ``neg_per_bin``. A
    selection is a mask, so a pair is drawn at most once: a bin with fewer
    pairs keeps all of them (pytorch-metric-learning draws with replacement
    and may repeat a pair). ``seed``: an int or a ``keras.random.SeedGenerator``.
    """
    d = ops.stop_gradient(ops.convert_to_tensor(d))
    return Mined(_uniform_per_bin(d, positives, num_bins, pos_per_bin, seed),
                 _uniform_per_bin(d, negatives, num_bins, neg_per_bin, seed))


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
        triplets = ops.logical_and(ops.logical_and(mined.negatives, row), mined.gap(d - query, this))
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


__all__ = ["BATCH_STRATEGIES", "Mined", "TRIPLET_TYPES", "angular", "batch_easy_hard", "distance_weighted",
           "distance_weights", "hdc", "most_positives", "multi_similarity", "pair_margin", "pairs_of",
           "positive_ranks", "semi_hard", "semi_hard_negatives", "triplet_margin", "uniform_histogram"]
