"""Pair-based metric-learning losses as pure functions over ``keras.ops``.

=========================  ====================================================  ==========
loss                       paper                                                 function
=========================  ====================================================  ==========
contrastive                Hadsell, Chopra & LeCun, CVPR 2006, Eq. 4             ``contrastive_loss``, ``contrastive_pair_loss``
triplet, semi-hard         Schroff, Kalenichenko & Philbin, CVPR 2015 (FaceNet)  ``triplet_loss(mining="semi-hard")``
triplet, batch-hard / all  Hermans, Beyer & Leibe, arXiv 2017, Eq. 4-6           ``triplet_loss(mining="batch-hard" | "batch-all")``
lifted structure           Oh Song, Xiang, Jegelka & Savarese, CVPR 2016, Eq. 4  ``lifted_structure_loss``
N-pairs                    Sohn, NeurIPS 2016, Eq. 3 and Sec. 3.2.2              ``npairs_loss``
=========================  ====================================================  ==========

Conventions shared by every function:

- ``labels`` are class ids (non-negative integers, sparse); ``embeddings``
  are ``(batch, dim)``, computed in float32 whatever their dtype. Multi-hot
  rows ``(batch, classes)`` are taken where a loss forms pairs by label:
  ``min_jaccard`` is their positives rule
  (:func:`lossweave.ops.pair_structure.label_relation`; ``None``: sharing a label).
- **Which rows take part.** A row with an invalid label (negative,
  non-integer, NaN), with NaN/Inf features (they are zeroed first, so no
  NaN reaches a gradient) or with sample weight 0 takes part in no pair, as
  anchor or as partner. (``lossweave.terms`` terms raise on the first two;
  a weight of 0 is how a term leaves out the rows of a ``missing`` label.)
- **Sample weights are per anchor** (the library's one rule,
  ``docs/sample_weight.md``). The weight ``w_i`` of row ``i`` multiplies
  every pair (or triplet) term whose anchor is ``i``; the denominator of each
  mean counts pairs (triplets, anchors) among the rows of non-zero weight and
  not weights, as Keras's ``"sum_over_batch_size"`` counts samples. All
  weights 1 give the paper's value; weights ``c`` give ``c`` times it. Where a
  loss sums over unordered pairs (lifted structure) a pair's weight is the
  mean of its two rows' weights; the siamese ``contrastive_pair_loss`` has one
  term per row and is Keras's ``sum_i w_i l_i / batch``.
- **Empty cases are 0.** A mean over an empty set (no positive pair, no
  negative, no triplet) is 0, with finite (zero) gradients, never NaN.
- **A reference set** (``ref_embeddings, ref_labels, ref_mask``, used by
  ``lossweave.terms.CrossBatchMemory``): where a function accepts it, pairs
  are formed between the batch rows (anchors) and the reference rows
  (partners: positives and negatives) instead of the batch with itself; the
  batch is then not implicitly included. ``ref_mask`` is a bool ``(m,)``
  vector of the reference rows that exist (a memory's filled slots).
  ``exclude_self=True`` (the default) says the first ``batch`` reference
  rows are the batch itself, so the pair ``(i, j == i)`` is left out.
- Nothing bigger than ``batch x reference`` is built: batch-all and
  semi-hard mining loop over the positive ranks (the ``k``-th positive of
  every anchor at once, one ``(b, m)`` pass each: O(b m P) time for anchors
  of at most ``P`` positives, O(b m) memory), never with a ``(b, m, m)``
  tensor, and without sorts (a row sort costs several train steps on XLA's
  CPU backend).
"""

from keras import ops

from lossweave.ops import miners as miner_ops
from lossweave.ops import reducers as reducer_ops
from lossweave.ops.distances import closeness, float_mask, is_inverted, matrix, ordered, pair_labels, paired
from lossweave.ops.pair_structure import embedding_rows, pair_structure

CONTRASTIVE_HINGES = ("half_squared", "linear")  # Eq. 4's 1/2 max(.)^2; pytorch-metric-learning's max(.)

MININGS = ("semi-hard", "batch-hard", "batch-all")
AVERAGES = ("positive", "all")


# ------------------------------------------------------------------ helpers
def _count(mask, axis=None):
    return ops.sum(float_mask(mask), axis=axis)


def _mask(mask):
    """A bool mask as float32 0/1, to select finite values by a product (cheaper than ``where`` on PyTorch)."""
    return float_mask(mask)


def masked_logsumexp(x, mask, axis=-1):
    """``log sum_{mask} exp(x)`` along ``axis``, stable; 0 where the mask is empty (finite gradients).

    Example:
        >>> import numpy as np
        >>> x = np.array([[0., 1000., 0.], [5., 5., 5.]], "float32")
        >>> mask = np.array([[True, True, False], [False, False, False]])
        >>> [round(float(v), 4) for v in masked_logsumexp(x, mask)]
        [1000.0, 0.0]
    """
    return masked_logsumexp_and_any(x, mask, axis=axis)[0]


def masked_logsumexp_and_any(x, mask, axis=-1, empty=0.0):
    """``(log sum_{mask} exp(x), any(mask))`` along ``axis``; ``empty`` where the mask is empty.

    :func:`masked_logsumexp` with the row test it needs anyway returned, so
    that a caller does not reduce the ``(n, m)`` mask again (on PyTorch's
    eager CPU every such pass is a kernel), and the value of empty rows an
    argument (the similarity losses want a large negative number there:
    ``softplus`` of it is 0). Left-out entries get a zero gradient, and so
    does an empty row.

    Args:
        x: float ``(..., m)`` values.
        mask: bool, the shape of ``x``: the entries that count.
        axis: the axis summed over.
        empty: the value where nothing along ``axis`` is in the mask.

    Returns:
        ``(lse, any)``: float32 and bool, ``x``'s shape without ``axis``.

    Example:
        >>> import numpy as np
        >>> x = np.array([[0., 0., 5.], [1., 2., 3.]], "float32")
        >>> lse, has = masked_logsumexp_and_any(x, np.array([[True, True, False], [False] * 3]), empty=-1.0)
        >>> [round(float(v), 4) for v in lse], [bool(v) for v in has]
        ([0.6931, -1.0], [True, False])
    """
    x = ops.cast(x, "float32")
    keep = float_mask(ops.convert_to_tensor(mask))  # products with a 0/1 mask, not selects (see float_mask)
    has = ops.max(keep, axis=axis, keepdims=True) > 0.0  # once: the (n, 1) answer serves every use below
    top = ops.max(x + (keep - 1.0) * 1e30, axis=axis, keepdims=True)
    top = ops.stop_gradient(ops.where(has, top, ops.zeros_like(top)))
    # In the mask x - top <= 0; outside it the exponent is 0 (no overflow, and no exp of a huge negative
    # number: that takes ~10x longer on PyTorch's CPU) and the term is multiplied by 0.
    sums = ops.sum(ops.exp((x - top) * keep) * keep, axis=axis, keepdims=True)
    sums = ops.where(has, sums, ops.ones_like(sums))
    lse = ops.where(has, top + ops.log(sums), ops.full_like(sums, empty))
    return ops.squeeze(lse, axis=axis), ops.squeeze(has, axis=axis)


def mined_pairs(d, positives, negatives, miner, inverted=False):
    """The pairs a pair loss uses: all of them, or those of ``miner``'s selection on the ordered values ``d``."""
    if miner is None:
        return positives, negatives
    return miner_ops.pairs_of(d, miner.mine(d, positives, negatives, inverted))


# ------------------------------------------------------------- contrastive
def contrastive_loss(
    embeddings,
    labels,
    pos_margin=0.0,
    neg_margin=1.0,
    metric="euclidean",
    sample_weight=None,
    ref_embeddings=None,
    ref_labels=None,
    ref_mask=None,
    exclude_self=True,
    reducer=None,
    miner=None,
    hinge="half_squared",
    reduce_parts=False,
    min_jaccard=None,
):
    """Contrastive loss over all pairs of a labelled batch (Hadsell, Chopra & LeCun, CVPR 2006, Eq. 4).

    Eq. 4 with its factor 1/2, for a pair at distance ``d``::

        positive (same class):      1/2 * max(d - pos_margin, 0)^2
        negative (other class):     1/2 * max(neg_margin - d, 0)^2

    (``pos_margin=0`` is the paper's ``1/2 D^2``; ``neg_margin`` is its
    ``m``). The loss is the mean over every ordered pair ``(i, j)``, ``i != j``,
    positive or negative, of ``w_i`` times its term; each unordered pair thus
    counts twice, which leaves the mean unchanged (and weighs it by the mean
    of its two rows' weights). It is 0 only when the batch has no pair (one
    usable row); a batch of one class is a mean over positive pairs.
    pytorch-metric-learning's ``ContrastiveLoss`` takes the hinge itself
    (``hinge="linear"``: ``max(d - pos_margin, 0)`` and
    ``max(neg_margin - d, 0)``), reduces the positive and the negative pairs
    separately and adds the two (``reduce_parts=True``), each with its
    ``AvgNonZeroReducer``.

    With a similarity (``metric.is_inverted``) the margins are similarities:
    a positive pair pays ``1/2 max(pos_margin - s, 0)^2`` and a negative one
    ``1/2 max(s - neg_margin, 0)^2`` (pytorch-metric-learning's convention).

    Args:
        embeddings: ``(batch, dim)``.
        labels: ``(batch,)`` class ids.
        pos_margin: distance below which a positive pair costs nothing.
        neg_margin: distance above which a negative pair costs nothing (``m``).
        metric: a ``lossweave.ops.distances.METRICS`` name or a distance
            object (paper: Euclidean).
        sample_weight: ``(batch,)`` per-anchor weights.
        ref_embeddings, ref_labels, ref_mask, exclude_self: a reference set of
            partners (see the module docstring).
        reducer: how the pair terms become the loss (``lossweave.reducers``;
            ``None``: the mean over the pairs).
        miner: a pair selection (``lossweave.miners``; ``None``: every pair).
        hinge: ``"half_squared"`` (Eq. 4: ``1/2 max(.)^2``) or ``"linear"``
            (``max(.)``, pytorch-metric-learning's).
        reduce_parts: ``False``: one reduction over every pair; ``True``: the
            positive and the negative pairs reduced separately and summed
            (pytorch-metric-learning's).

    Returns:
        float32 scalar.

    Example:
        >>> import numpy as np
        >>> x = np.array([[0., 0.], [0.5, 0.], [0., 0.25]], "float32")
        >>> round(float(contrastive_loss(x, np.array([0, 0, 1]))), 6)
        0.167828
    """
    if hinge not in CONTRASTIVE_HINGES:
        raise ValueError(f"contrastive loss: hinge must be one of {CONTRASTIVE_HINGES}; received {hinge!r}.")
    s = pair_structure(embeddings, labels, sample_weight, metric, ref_embeddings, ref_labels, ref_mask,
                       exclude_self, "contrastive loss", min_jaccard)
    d = ordered(metric, s.values)
    if s.inverted:  # margins of a similarity, in the larger-is-farther order of d = -s
        pos_margin, neg_margin = -pos_margin, -neg_margin
    positives, negatives = mined_pairs(d, s.positives, s.negatives, miner, s.inverted)
    # One hinge per pair (0 outside the pairs): one relu and one square over the (b, m) matrix, and
    # products with 0/1 masks rather than selects (PyTorch's CPU `where` is ~15x slower than a product).
    excess = ops.relu(_mask(positives) * (d - pos_margin) + _mask(negatives) * (neg_margin - d))
    terms = 0.5 * ops.square(excess) if hinge == "half_squared" else excess
    if reduce_parts:
        return (reducer_ops.reduce_terms(reducer, terms, positives, s.weights, s.ids)
                + reducer_ops.reduce_terms(reducer, terms, negatives, s.weights, s.ids))
    return reducer_ops.reduce_terms(reducer, terms, ops.logical_or(positives, negatives), s.weights, s.ids)


def contrastive_pair_loss(left, right, same, pos_margin=0.0, neg_margin=1.0, metric="euclidean",
                          sample_weight=None):
    """Contrastive loss of siamese pairs: row ``i`` of ``left`` against row ``i`` of ``right`` (Eq. 4).

    ``same[i]`` is 1 for a similar pair and 0 for a dissimilar one (the
    paper's ``Y`` is the opposite: 0 for similar). Per pair
    ``same * 1/2 max(d - pos_margin, 0)^2 + (1 - same) * 1/2 max(neg_margin - d, 0)^2``;
    the loss is ``sum_i w_i l_i / batch`` (Keras's mean over the batch).
    Rows with NaN/Inf features are zeroed (their term is still counted).

    Example:
        >>> import numpy as np
        >>> left = np.array([[0., 0.], [0., 0.]], "float32")
        >>> right = np.array([[0.5, 0.], [0.5, 0.]], "float32")
        >>> round(float(contrastive_pair_loss(left, right, np.array([1, 0]))), 6)
        0.125
    """
    left, _, _ = embedding_rows(left, None, "contrastive pair loss left")
    right, _, _ = embedding_rows(right, None, "contrastive pair loss right")
    same = ops.reshape(ops.cast(ops.convert_to_tensor(same), "float32"), (-1,))
    same = ops.where(ops.isfinite(same), same, ops.zeros_like(same))
    distances = ordered(metric, paired(metric, left, right))
    if is_inverted(metric):  # margins of a similarity (see contrastive_loss)
        pos_margin, neg_margin = -pos_margin, -neg_margin
    pull = 0.5 * ops.square(ops.relu(distances - pos_margin))
    push = 0.5 * ops.square(ops.relu(neg_margin - distances))
    per = same * pull + (1.0 - same) * push
    if sample_weight is not None:
        per = per * ops.reshape(ops.cast(sample_weight, "float32"), (-1,))
    return ops.sum(per) / ops.cast(ops.shape(per)[0], "float32")


# ------------------------------------------------------------------ triplet
def _triplet_statistics(d, mined, margin, low=None, high=None):
    """Per-anchor ``(S_a, C_a)`` of the hinges ``[d(a, p) - d(a, n) + margin]_+`` of every selected triplet.

    The triplets are ``(a, p, n)`` with ``p`` in ``mined.positives[a]``, ``n``
    in ``mined.negatives[a]`` and, when the selection has one, its ``gap``
    condition on ``d(a, n) - d(a, p)``; a reducer's bounds keep those whose
    hinge ``l`` has ``low < l < high``. Computed without a ``(b, m, m)``
    tensor: with ``c(a, p)`` the number of kept triplets of ``(a, p)`` with a
    non-zero hinge and ``e(a, n)`` the number of positives with which ``n``
    forms one (one pass per positive rank), the sum of the hinges is ``sum_p
    c (d_ap + margin) - sum_n e d_an``, exact in value and gradient; ``C_a``
    counts the kept triplets, zero hinges included.
    """
    positives, negatives = mined.positives, mined.negatives
    stopped = ops.stop_gradient(d)
    inf = ops.full_like(stopped, float("inf"))
    to_negatives = ops.where(negatives, stopped, inf)
    shifted = stopped + margin
    ranks = miner_ops.positive_ranks(positives)
    empty = high is not None and high <= 0  # a hinge is >= 0: nothing is below a bound <= 0
    # Which counts the loop needs: with every triplet kept and no condition, C_a = #positives x #negatives;
    # with the non-zero hinges kept (low = 0), C_a = sum_p c(a, p).
    plain = mined.gap is None and high is None and (low is None or low < 0)
    active_only = mined.gap is None and high is None and low == 0

    def one_rank(k, counts):
        c, e, kept = counts
        this = ops.equal(ranks, k + 1)
        query = ops.max(ops.where(this, shifted, float("-inf")), axis=1, keepdims=True)  # d(a, p_k) + margin
        keep = negatives
        if mined.gap is not None:
            gap = stopped - ops.max(ops.where(this, stopped, float("-inf")), axis=1, keepdims=True)
            keep = ops.logical_and(keep, mined.gap(gap, this))
        if low is not None and low >= 0:  # low = 0 (AvgNonZeroReducer) keeps the non-zero hinges only
            keep = ops.logical_and(keep, to_negatives < query - low)
        if high is not None:
            keep = ops.logical_and(keep, to_negatives > query - high)
        if empty:
            keep = ops.zeros_like(keep)
        active = ops.logical_and(keep, to_negatives < query)  # the hinge is > 0
        below = ops.cast(active, "int32")
        c = ops.where(this, ops.sum(below, axis=1, keepdims=True), c)
        if not (plain or active_only):
            kept = ops.where(this, ops.sum(ops.cast(keep, "int32"), axis=1, keepdims=True), kept)
        return c, e + below, kept

    rows = ops.any(negatives, axis=1)
    zeros = ops.zeros_like(ranks)
    c, e, kept = ops.fori_loop(0, miner_ops.most_positives(positives, rows), one_rank, (zeros, zeros, zeros))
    c, e = ops.cast(c, "float32"), ops.cast(e, "float32")
    sums = ops.sum(c * (d + margin), axis=1) - ops.sum(e * d, axis=1)
    if plain:
        counts = _count(positives, axis=1) * _count(negatives, axis=1)
    elif active_only:
        counts = ops.sum(c, axis=1)
    else:
        counts = ops.sum(ops.cast(kept, "float32"), axis=1)
    return sums, counts


def triplet_loss(
    embeddings,
    labels,
    margin=1.0,
    mining="semi-hard",
    metric="euclidean",
    soft=False,
    average="positive",
    sample_weight=None,
    ref_embeddings=None,
    ref_labels=None,
    ref_mask=None,
    exclude_self=True,
    reducer=None,
    miner=None,
    min_jaccard=None,
):
    """Triplet loss ``[d(a, p) - d(a, n) + margin]_+`` with in-batch mining.

    ``mining``:

    - ``"semi-hard"``: TensorFlow Addons' ``TripletSemiHardLoss`` (after
      Schroff et al., CVPR 2015, Sec. 3.2): for every (anchor, positive) pair
      the negative with the smallest ``d(a, n) > d(a, p)``, else the negative
      farthest from the anchor; the loss is the mean over the (a, p) pairs.
      TF Addons' defaults: ``margin=1.0``, Euclidean distance (its ``"L2"``;
      FaceNet's Eq. 1 uses squared distances: ``metric="squared_euclidean"``).
      One difference: an anchor without any negative forms no triplet and its
      pairs are left out (TF Addons counts them with ``d(a, n) = 0``).
    - ``"batch-hard"``: Hermans, Beyer & Leibe 2017, "In Defense of the
      Triplet Loss for Person Re-Identification", Eq. 5: per anchor, the
      farthest positive and the nearest negative; the mean over the anchors
      that have both. TF Addons' ``TripletHardLoss`` averages over every
      anchor instead (an anchor without a positive counts with a
      hardest-positive distance of 0; one without a negative adds the
      margin): the two agree on P x K batches. ``soft=True`` is their soft margin, Eq. 6:
      ``log(1 + exp(d(a, p) - d(a, n)))`` (``margin`` is then not used).
    - ``"batch-all"``: Hermans et al., Eq. 4 ("BA"): every triplet of the
      batch; ``average="positive"`` is the mean over the triplets with a
      non-zero loss (their "BA≠0"), ``average="all"`` the plain mean.
      Computed without a ``(b, m, m)`` tensor: with ``c(a, p)`` the number of
      negatives with ``d(a, n) < d(a, p) + margin`` and ``e(a, n)`` the
      number of positives with ``d(a, p) + margin > d(a, n)`` (one pass per positive rank),
      the sum of hinges is ``sum c (d_ap + margin) - sum e d_an``, exact in value
      and gradient.

    ``miner`` (a :mod:`lossweave.miners` object) replaces ``mining``: a
    triplet selection gives its triplets, a pair selection every triplet of
    an anchor's selected positives and negatives. ``reducer`` (a
    :mod:`lossweave.reducers` object) replaces the mean: the default is the
    mean over the tuples each mining defines above (batch-all: ``average``).
    With a similarity (``metric.is_inverted``) the hinge is
    ``[s(a, n) - s(a, p) + margin]_+``.

    Args:
        embeddings: ``(batch, dim)``.
        labels: ``(batch,)`` class ids.
        margin: the margin ``alpha``.
        mining: one of ``MININGS``.
        metric: a ``lossweave.ops.distances.METRICS`` name or a distance object.
        soft: Hermans et al.'s soft margin (``mining="batch-hard"``, or a
            miner that picks one negative per positive pair).
        average: ``"positive"`` or ``"all"`` (``mining="batch-all"`` without
            a reducer only).
        sample_weight: ``(batch,)`` per-anchor weights (scale the anchor's
            pairs, anchors or triplets).
        ref_embeddings, ref_labels, ref_mask, exclude_self: a reference set of
            positives and negatives (see the module docstring).
        reducer: how the triplets' terms become the loss (``None``: above).
        miner: the triplets (``None``: ``mining``).

    Returns:
        float32 scalar; 0 when no triplet exists (no positive pair, or no
        negative).

    Example:
        >>> import numpy as np
        >>> x = np.array([[0.], [1.], [1.5], [3.]], "float32")
        >>> y = np.array([0, 0, 1, 1])
        >>> [round(float(triplet_loss(x, y, mining=m)), 4) for m in MININGS]
        [0.5, 1.125, 1.1]
    """
    if mining not in MININGS:
        raise ValueError(f"triplet loss: received mining={mining!r}; expected one of {MININGS}.")
    if average not in AVERAGES:
        raise ValueError(f"triplet loss: received average={average!r}; expected one of {AVERAGES}.")
    s = pair_structure(embeddings, labels, sample_weight, metric, ref_embeddings, ref_labels, ref_mask,
                       exclude_self, "triplet loss", min_jaccard)
    d = ordered(metric, s.values)
    if miner is not None:
        mined = miner.mine(d, s.positives, s.negatives, s.inverted)
    elif mining == "semi-hard":
        mined = miner_ops.semi_hard(d, s.positives, s.negatives)
    elif mining == "batch-hard":
        mined = miner_ops.batch_easy_hard(d, s.positives, s.negatives, "hard", "hard")
    else:
        mined = miner_ops.Mined(s.positives, s.negatives)
    if soft and mined.column is None:
        raise ValueError(
            f"triplet loss: received soft=True with mining={mining!r} and miner={miner!r}; the soft margin "
            f"(Hermans et al. 2017, Eq. 6) is defined here for one negative per positive pair: "
            f"mining='batch-hard' or a miner such as BatchHardMiner."
        )
    if mined.column is not None:  # one triplet per selected positive pair: its terms are a (b, m) array
        gap = d - ops.take_along_axis(d, mined.column, axis=1)
        terms = ops.softplus(gap) if soft else ops.relu(gap + margin)
        return reducer_ops.reduce_terms(reducer, terms, mined.positives, s.weights, s.ids)
    low, high = reducer_ops.bounds(reducer)
    if reducer is None and miner is None and average == "positive":  # batch-all's mean over non-zero terms
        low = 0.0
    sums, counts = _triplet_statistics(d, mined, margin, low, high)
    return reducer_ops.reduce(reducer, sums, counts, s.weights, s.ids)


# ------------------------------------------------------------ lifted structure
def lifted_structure_loss(embeddings, labels, margin=1.0, sample_weight=None, metric="euclidean", reducer=None,
                          miner=None, min_jaccard=None):
    """Lifted structured loss, the smooth bound of Oh Song et al., CVPR 2016, Eq. 4.

    With ``D`` the Euclidean distances, ``N`` the negative and ``P`` the
    positive pairs of the batch::

        J_ij = log( sum_{(i,k) in N} exp(margin - D_ik) + sum_{(j,l) in N} exp(margin - D_jl) ) + D_ij
        J    = 1 / (2 |P|) * sum_{(i,j) in P} max(0, J_ij)^2

    computed as ``logaddexp`` of two masked log-sum-exps (stable for any
    distances). The sum runs over ordered pairs (each unordered pair twice,
    ``|P|`` counted the same way): the paper's value. ``w_i`` scales the
    ordered pair ``(i, j)``, so an unordered pair ``{i, j}`` weighs the mean
    ``(w_i + w_j) / 2`` of its rows' weights (Eq. 4 defines no weights; see
    ``docs/sample_weight.md``). 0 when the batch has no positive pair or no
    negative. ``metric`` (the paper's: Euclidean) may be any distance object
    (a similarity enters as ``-s``), ``miner`` restricts the positive pairs
    and the negatives, ``reducer`` reduces the terms ``1/2 max(0, J_ij)^2``
    of the ordered positive pairs (default: their mean, Eq. 4).

    Example:
        >>> import numpy as np
        >>> x = np.array([[0., 0.], [2., 0.], [0., 1.]], "float32")
        >>> round(float(lifted_structure_loss(x, np.array([0, 0, 1]))), 4)
        2.5426
    """
    s = pair_structure(embeddings, labels, sample_weight, metric, what="lifted structure loss", min_jaccard=min_jaccard)
    distances = ordered(metric, s.values)
    positives, negatives = mined_pairs(distances, s.positives, s.negatives, miner, s.inverted)
    spread = masked_logsumexp(margin - distances, negatives, axis=1)  # log sum_k exp(margin - D_ik)
    has_negative = ops.any(negatives, axis=1)
    pairs = ops.logical_and(positives, ops.logical_and(has_negative[:, None], has_negative[None, :]))
    inner = ops.logaddexp(spread[:, None], spread[None, :]) + distances
    terms = 0.5 * ops.square(ops.relu(_mask(pairs) * inner))
    return reducer_ops.reduce_terms(reducer, terms, pairs, s.weights, s.ids)


# ------------------------------------------------------------------ N-pairs
def npairs_pairs(labels, usable=None):
    """The (anchor, positive) rows an N-pair loss reads from a labelled batch.

    Sohn's N-pair batch is one (anchor, positive) pair per class. From a
    labelled batch: for every class with at least two usable rows, the
    first row of that class (in batch order) is the anchor and the second is
    its positive; later rows of the class and classes with one row are not
    used (pytorch-metric-learning's choice too).

    Args:
        labels: ``(batch,)`` class ids.
        usable: optional bool ``(batch,)`` of the rows that may be used.

    Returns:
        ``(anchor, positive, partner)``: bool ``(batch,)`` anchor rows and
        positive rows, and bool ``(batch, batch)`` with ``[a, q]`` true where
        ``q`` is the positive of anchor ``a``.

    Example:
        >>> import numpy as np
        >>> anchor, positive, _ = npairs_pairs(np.array([3, 1, 3, 3, 2, 1]))
        >>> [int(i) for i in np.flatnonzero(anchor)], [int(i) for i in np.flatnonzero(positive)]
        ([0, 1], [2, 5])
    """
    ids, valid = pair_labels(labels)
    return _npairs_of_ids(ids, valid if usable is None else ops.logical_and(valid, usable))


def _npairs_of_ids(ids, valid):
    """:func:`npairs_pairs` of class ids and the rows that may be used."""
    same, anchor, positive = _npairs_rows(ids, valid)
    partner = ops.logical_and(ops.cast(same, "bool"),
                              ops.logical_and(anchor[:, None], ops.cast(positive, "bool")[None, :]))
    return anchor, ops.cast(positive, "bool"), partner


def npairs_loss(embeddings, labels, l2_reg=0.002, sample_weight=None, metric=None, reducer=None):
    """Multi-class N-pair loss (Sohn, NeurIPS 2016, Eq. 3) with the embedding L2 regulariser (Sec. 3.2.2).

    With (anchor ``f_i``, positive ``f_i+``) pairs of ``N`` classes picked by
    ``npairs_pairs`` and inner-product similarities::

        L = 1/N sum_i log(1 + sum_{j != i} exp(f_i . f_j+ - f_i . f_i+))      (Eq. 3)
            + l2_reg / 4 * (mean_i ||f_i||^2 + mean_i ||f_i+||^2)

    i.e. softmax cross-entropy of each anchor over the ``N`` positives. The
    regulariser and its default ``l2_reg=0.002`` (with the factor 1/4) are
    those of TensorFlow's ``tf.contrib.losses.metric_learning.npairs_loss``;
    pytorch-metric-learning's ``NPairsLoss`` has no regulariser by default
    (``l2_reg=0`` gives its loss). ``w_i`` scales anchor ``i``'s
    cross-entropy and its pair's share of the regulariser (the positive's own
    weight only decides whether it takes part); the mean divides by the
    number ``N`` of pairs (``reducer`` reduces the anchors' terms, cross-entropy
    plus their pair's regulariser, otherwise). ``metric=None`` is the inner
    product of the paper; a distance object gives the logits ``s`` of a
    similarity or ``-d`` of a distance (pytorch-metric-learning's rule). The loss is 0
    (regulariser included) when fewer than two classes have a pair: no
    negative exists.

    At most ``b // 2`` classes of a batch of ``b`` rows have a pair, so the
    anchors and their positives are gathered into ``max(b // 2, 1)`` padded
    slots (static shapes) and the similarities are a ``(b/2, b/2)`` matrix,
    not ``(b, b)``: pytorch-metric-learning's ``NPairsLoss`` indexes its ``N``
    anchors and positives the same way (an ``N x N`` matrix, ``N`` known
    there because it runs eagerly).

    Example:
        >>> import numpy as np
        >>> x = np.array([[1., 0.], [0., 1.], [1., 0.], [0., 1.]], "float32")
        >>> round(float(npairs_loss(x, np.array([0, 1, 0, 1]), l2_reg=0.0)), 4)
        0.3133
    """
    x, weights, usable = embedding_rows(embeddings, sample_weight, "N-pairs loss")
    ids, valid = pair_labels(labels)
    same, anchor, positive = _npairs_rows(ids, ops.logical_and(valid, usable))
    batch = ops.shape(x)[0]

    def gathered_terms():
        # At most b // 2 classes have a pair: their anchors and positives are gathered into static (b // 2)-row
        # tensors (padded, ``filled`` marks the real slots) and the similarities and the cross-entropy are formed
        # there, a (b/2, b/2) matrix instead of (b, b).
        rows, filled, rank, slots = _npairs_gather(anchor, batch)
        # Each gathered anchor's positive: the positive row of its class (one per anchor, by construction).
        partners = ops.argmax(ops.take(same, rows, axis=0) * positive[None, :], axis=1)
        pair_rows = ops.take(x, ops.concatenate([rows, ops.cast(partners, rows.dtype)]), axis=0)
        left, right = pair_rows[:slots], pair_rows[slots:]
        similarities = (ops.matmul(left, ops.transpose(right)) if metric is None
                        else closeness(metric, matrix(metric, left, right)))
        # Softmax cross-entropy of each anchor over the real positives: the padded columns get -1e30 (an
        # exponent of 0, a zero gradient), the padded rows a factor 0 (their terms are finite).
        columns = ops.where(filled, 0.0, -1e30)[None, :]
        terms = -ops.diagonal(ops.log_softmax(similarities + columns, axis=1))
        if not (isinstance(l2_reg, (int, float)) and l2_reg == 0):
            terms = terms + 0.25 * l2_reg * ops.sum(ops.square(left) + ops.square(right), axis=1)
        # Back to one term per batch row (0 off the anchors): reducers see the batch's rows, ids and weights.
        terms = ops.take(terms * ops.cast(filled, "float32"), ops.clip(rank, 0, slots - 1))
        return terms * ops.cast(anchor, "float32")

    def no_terms():
        return ops.zeros_like(ops.cast(anchor, "float32"))

    # An empty batch has no slot to gather into (top_k and argmax take nothing): its terms are none. Where the
    # batch size is unknown when traced (a TensorFlow step traced for any size) that is decided at run time.
    if isinstance(batch, int):
        terms = gathered_terms() if batch > 0 else no_terms()
    else:
        terms = ops.cond(batch > 0, gathered_terms, no_terms)
    loss = reducer_ops.reduce_terms(reducer, terms, anchor, weights, ids)
    return ops.where(_count(anchor) >= 2, loss, ops.zeros_like(loss))


def _npairs_rows(ids, valid):
    """``(same, anchor, positive)`` of :func:`npairs_pairs`: int32 0/1 ``(b, b)`` same class, and the rows.

    ``same[i, j]`` is 1 where rows ``i`` and ``j`` are both valid and of one
    class, and on the diagonal; ``anchor`` is bool ``(b,)``, ``positive``
    int32 0/1 ``(b,)`` (a factor of the partner search).
    """
    # Invalid rows get keys of their own (-1 - row): they match only themselves, a class of one row.
    keys = ops.where(valid, ids, -1 - ops.arange(ops.shape(ids)[0], dtype=ids.dtype))
    same = ops.cast(ops.equal(keys[:, None], keys[None, :]), "int32")
    # Rows of i's class up to i itself: 1 for the first, 2 for the second (a (b, b) cumsum is slow on XLA's CPU).
    rows = ops.arange(ops.shape(ids)[0])
    order = ops.sum(same * ops.cast(rows[None, :] <= rows[:, None], "int32"), axis=1)
    anchor = ops.logical_and(ops.equal(order, 1), ops.sum(same, axis=1) >= 2)
    return same, anchor, ops.cast(ops.equal(order, 2), "int32")


def _npairs_gather(anchor, batch):
    """The anchor rows in batch order, padded to ``max(batch // 2, 1)`` slots.

    Returns ``(rows, filled, rank, slots)``: int ``(slots,)`` row indices (the
    padding holds other rows), bool ``(slots,)`` real slots, int ``(batch,)``
    the slot of each anchor row, and the number of slots (a Python int when
    the batch size is known when traced).
    """
    slots = max(batch // 2, 1) if isinstance(batch, int) else ops.maximum(batch // 2, 1)
    flags = ops.cast(anchor, "int32")
    # Earlier anchors score higher; rows that are no anchor score 0 and fill the padding (no scatter: Keras's
    # PyTorch scatter is a Python loop over the indices; no sort of the batch).
    _, rows = ops.top_k(flags * (batch - ops.arange(batch, dtype="int32")), slots)
    filled = ops.arange(slots, dtype="int32") < ops.sum(flags)
    return rows, filled, ops.cumsum(flags) - 1, slots


__all__ = [
    "AVERAGES",
    "MININGS",
    "contrastive_loss",
    "contrastive_pair_loss",
    "lifted_structure_loss",
    "masked_logsumexp",
    "masked_logsumexp_and_any",
    "mined_pairs",
    "npairs_loss",
    "npairs_pairs",
    "triplet_loss",
]
