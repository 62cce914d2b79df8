"""Ranking and neighbourhood pair losses as pure functions: soft nearest neighbour, histogram, ranked list, PNP.

Every loss here starts from the one pair structure
(:func:`lossweave.ops.pair_structure.pair_structure`: positives, negatives,
anchors, the distance's values) and follows its conventions: class ids are
sparse non-negative integers; a row with an invalid id, NaN/Inf features or
sample weight 0 takes part in no pair, as anchor or as partner (its gradient
is 0); ``sample_weight`` follows ``docs/sample_weight.md`` (``w_a`` scales
the terms anchor ``a`` anchors, denominators count); a batch without the
tuples a loss needs gives 0, with a zero gradient. ``metric`` is a distance
object of :mod:`lossweave.distances` (or a name), ``reducer`` a
:mod:`lossweave.reducers` object (``None``: the loss's own mean), ``miner``
a :mod:`lossweave.miners` object (``None``: every pair). Multi-hot label rows
``(batch, classes)`` are taken where pairs are formed by label: ``min_jaccard``
is their positives rule (:func:`lossweave.ops.pair_structure.label_relation`).

==============  ===========================================  ============================================
loss            term                                         paper
==============  ===========================================  ============================================
soft NN         per anchor: -log(neighbour mass of class)    Frosst, Papernot & Hinton, ICML 2019, Eq. 1
histogram       per negative pair: CDF of positives at it    Ustinova & Lempitsky, NeurIPS 2016, Eq. 1-5
ranked list     per anchor: weighted hinge over mined sets   Wang et al., CVPR 2019 (RLL)
PNP             per anchor: negatives ranked before pos.     Li et al., AAAI 2022, Eq. 5, 7, 9, 12-13
instance        per row: softmax over the batch (PML's)      Zheng et al., ACM TOMM 2020 (PML's form)
==============  ===========================================  ============================================
"""

from keras import ops

from lossweave import _backend as backend
from lossweave.ops.distances import COSINE_SIMILARITY, float_mask, is_inverted, l2_normalize
from lossweave.ops.pair_similarity import masked_logsumexp_or_excluded, reduce_anchors, similarities, used_pairs
from lossweave.ops.pairs import mined_pairs

PNP_VARIANTS = ("O", "Ds", "Dq", "Iu", "Ib")


def require_kind(what, metric, want_similarity):
    """Refuse a metric of the wrong kind: a loss whose parameters have fixed units (bins in [-1, 1], distance margins)."""
    if is_inverted(metric) != want_similarity:
        kind, example = (("a similarity", "CosineSimilarity()") if want_similarity
                         else ("a distance", "EuclideanDistance(normalize_embeddings=True)"))
        raise ValueError(f"{what}: received distance={metric!r}; expected {kind} (e.g. {example}): its "
                         f"parameters are in its units.")


def soft_nearest_neighbor_loss(embeddings, labels, temperature=1.0, sample_weight=None, ref_embeddings=None,
                               ref_labels=None, ref_mask=None, exclude_self=True, metric="squared_euclidean",
                               reducer=None, miner=None, min_jaccard=None):
    """Soft nearest neighbour loss (Frosst, Papernot & Hinton, ICML 2019, Eq. 1).

    With ``d`` the squared Euclidean distance (the paper's) and ``T`` the
    temperature, anchor ``i``'s term is::

        l_i = -log( sum_{j != i, y_j = y_i} exp(-d_ij / T) / sum_{k != i} exp(-d_ik / T) )

    (a similarity ``s`` enters as ``exp(s / T)``), computed as a difference of
    two stable log-sum-exps. Eq. 1 averages over every point; an anchor
    without a positive has an infinite term there and is left out of the mean
    here (a batch without a positive pair gives 0). ``T`` defaults to 1 (the
    paper optimises it; TensorFlow Similarity's ``SoftNearestNeighborLoss``
    uses 1 with the squared Euclidean distance); pytorch-metric-learning has no
    such loss. With a miner, the positives and the denominator's rows are the
    selected pairs.

    Args:
        embeddings: ``(batch, dim)``.
        labels: ``(batch,)`` / ``(batch, 1)`` class ids.
        temperature: ``T`` (> 0).
        sample_weight: optional ``(batch,)`` anchor weights.
        ref_embeddings, ref_labels, ref_mask, exclude_self: a reference set
            (see :mod:`lossweave.ops.pair_similarity`).
        metric: the distance (paper: ``"squared_euclidean"``).
        reducer: how the anchors' terms become the loss (``None``: their mean).
        miner: a pair selection (``None``: every pair).

    Returns:
        A float32 scalar.

    Example:
        >>> import numpy as np
        >>> x = np.array([[0.], [1.], [2.]], "float32")
        >>> # anchor 0: log(1 + e^-3), anchor 1: log 2 (anchor 2 has no positive)
        >>> round(float(soft_nearest_neighbor_loss(x, np.array([0, 0, 1]))), 4)
        0.3709
    """
    s, similarity = similarities(embeddings, labels, sample_weight, metric, ref_embeddings, ref_labels, ref_mask,
                                 exclude_self, "soft nearest neighbour loss", min_jaccard)
    positives, negatives = used_pairs(similarity, s, miner)
    logits = similarity / temperature
    others = ops.logical_or(positives, negatives)
    per_anchor = masked_logsumexp_or_excluded(logits, others) - masked_logsumexp_or_excluded(logits, positives)
    has_positive = ops.any(positives, axis=-1)
    return reduce_anchors(reducer, ops.where(has_positive, per_anchor, ops.zeros_like(per_anchor)), s, has_positive)


def histogram_loss(embeddings, labels, n_bins=100, sample_weight=None, metric=None, reducer=None, miner=None,
                   min_jaccard=None):
    """Histogram loss (Ustinova & Lempitsky, NeurIPS 2016, Eq. 1-5).

    The similarities ``s`` (cosine, in ``[-1, 1]``) of the positive and of the
    negative pairs are spread over ``R = n_bins + 1`` nodes ``t_r = -1 + r
    Delta``, ``Delta = 2 / n_bins``, by linear interpolation (each pair gives
    ``1 - |s - t_r| / Delta`` to its two nearest nodes): the histograms
    ``h^+`` and ``h^-``. The loss is the estimated probability that a random
    positive pair is less similar than a random negative one::

        L = sum_r h^-_r phi^+_r,   phi^+_r = sum_{q <= r} h^+_q

    which is the mean over the negative pairs of each pair's term
    ``sum_r delta_r(s) phi^+_r`` (its interpolated positive CDF): that term is
    what ``sample_weight`` (the weight of the pair's anchor) scales and what
    ``reducer`` reduces, over the ordered negative pairs; ``h^+`` is the plain
    histogram of the positive pairs among the rows of non-zero weight.
    Ordered pairs give the histograms of the unordered ones (each counted
    twice). 0 without a positive or a negative pair.

    ``n_bins`` defaults to pytorch-metric-learning's 100 (``HistogramLoss()``:
    ``delta = 2 / n_bins``). PML takes its pairs from the batch's triplets: the
    positive pairs of anchors that have a negative and the negative pairs of
    anchors that have a positive; here every pair counts (the same on batches
    where every anchor has both).

    Args:
        embeddings: ``(batch, dim)``.
        labels: ``(batch,)`` / ``(batch, 1)`` class ids.
        n_bins: the number of bins of ``[-1, 1]``.
        sample_weight: optional ``(batch,)`` anchor weights.
        metric: a similarity in ``[-1, 1]`` (``None``: the paper's cosine similarity); a distance is refused.
        reducer: how the negative pairs' terms become the loss (``None``: their mean).
        miner: a pair selection (``None``: every pair).

    Returns:
        A float32 scalar.

    Example:
        >>> import numpy as np
        >>> x = np.array([[1., 0.], [1., 0.], [0., 1.], [0., 1.]], "float32")
        >>> float(histogram_loss(x, np.array([0, 0, 1, 1]), n_bins=4))   # positives at 1, negatives at 0
        0.0
        >>> float(histogram_loss(x, np.array([0, 1, 0, 1]), n_bins=4))   # the reverse
        1.0
    """
    metric = COSINE_SIMILARITY if metric is None else metric
    require_kind("histogram loss", metric, want_similarity=True)
    s, similarity = similarities(embeddings, labels, sample_weight, metric, None, None, None, True,
                                 "histogram loss", min_jaccard)
    positives, negatives = used_pairs(similarity, s, miner)
    delta = 2.0 / n_bins
    nodes = ops.cast(ops.arange(n_bins + 1), "float32") * delta - 1.0
    # (n, m, R) interpolation weights of each pair on the nodes.
    spread = ops.relu(1.0 - ops.abs(similarity[:, :, None] - nodes) / delta)
    keep_positive = float_mask(positives)
    n_positive = ops.sum(keep_positive)
    positive_histogram = ops.sum(spread * keep_positive[:, :, None], axis=(0, 1)) / ops.maximum(n_positive, 1.0)
    cdf = ops.cumsum(positive_histogram)
    per_pair = ops.sum(spread * cdf, axis=-1)
    negatives = ops.logical_and(negatives, n_positive > 0)
    return reduce_anchors(reducer, per_pair, s, negatives)


def ranked_list_loss(embeddings, labels, margin=0.4, negative_temperature=10.0, imbalance=0.5, boundary=None,
                     positive_temperature=0.0, sample_weight=None, metric=None, reducer=None, miner=None,
                     min_jaccard=None):
    """Ranked list loss (Wang, Hua, Kodirov, Hu, Garnier & Robertson, CVPR 2019), its RLL-Simpler by default.

    For anchor ``i`` with distances ``d`` (Euclidean, of L2-normalised
    embeddings, as the paper and pytorch-metric-learning's ``LpDistance()``),
    negative boundary ``alpha`` and margin ``m``, the mined sets are the
    positives beyond ``alpha - m``, ``P*_i = {j : d_ij > alpha - m}``, and the
    negatives inside ``alpha``, ``N*_i = {k : d_ik < alpha}``; each set's
    hinges are averaged with the weights ``w = exp(T_p (d - (alpha - m)))``
    and ``w = exp(T_n (alpha - d))``::

        L_P = sum_{P*} w (d - (alpha - m)) / sum_{P*} w,   L_N = sum_{N*} w (alpha - d) / sum_{N*} w
        l_i = (1 - lambda) L_P + lambda L_N

    (an empty set gives 0), and the loss is the mean over the anchors. As in
    pytorch-metric-learning (``RankedListLoss(margin, Tn, imbalance=0.5,
    alpha=None, Tp=0)``), ``alpha`` defaults to ``1 + m / 2``, ``T_p = 0`` is
    RLL-Simpler (equal weights on the positives), ``lambda`` balances the two
    sets as ``(1 - lambda, lambda)`` and the weights are not detached. PML has
    no defaults for ``m`` and ``T_n``: 0.4 and 10 are the paper's (Sec. 4).
    PML adds ``1e-5`` per row to the weights' sums; the means here are exact.

    Args:
        embeddings: ``(batch, dim)``.
        labels: ``(batch,)`` / ``(batch, 1)`` class ids.
        margin: ``m``, between the positive and the negative boundary.
        negative_temperature: ``T_n``.
        imbalance: ``lambda`` in ``[0, 1]``.
        boundary: ``alpha``, the negatives' boundary; ``None``: ``1 + m / 2``.
        positive_temperature: ``T_p`` (0: RLL-Simpler).
        sample_weight: optional ``(batch,)`` anchor weights.
        metric: a distance (``None``: ``EuclideanDistance(normalize_embeddings=True)``); a similarity is refused.
        reducer: how the anchors' terms become the loss (``None``: their mean).
        miner: a pair selection applied before the loss's own (``None``: every pair).

    Returns:
        A float32 scalar.

    Example:
        >>> import numpy as np
        >>> x = np.array([[1., 0.], [0., 1.], [1., 0.]], "float32")   # positives sqrt(2) apart, negatives 0
        >>> # anchors: (0.5 (1.4142 - 0.8) + 0.5 (1.2 - 0)), 0.5 (1.4142 - 0.8), 0.5 (1.2 - 0); their mean
        >>> round(float(ranked_list_loss(x, np.array([0, 0, 1]))), 4)
        0.6047
    """
    if metric is None:  # PML's LpDistance(): the Euclidean distance of L2-normalised rows
        embeddings, metric = l2_normalize(ops.cast(embeddings, "float32")), "euclidean"
    require_kind("ranked list loss", metric, want_similarity=False)
    alpha = 1.0 + margin / 2.0 if boundary is None else boundary
    s = similarities(embeddings, labels, sample_weight, metric, None, None, None, True, "ranked list loss",
                     min_jaccard)[0]
    d = s.values
    positives, negatives = mined_pairs(d, s.positives, s.negatives, miner, False)
    hard_positives = ops.logical_and(positives, d > alpha - margin)
    hard_negatives = ops.logical_and(negatives, d < alpha)

    def weighted_hinge(hinge, logits, mask):
        keep = float_mask(mask)
        top = ops.stop_gradient(ops.max(logits + (keep - 1.0) * 1e30, axis=-1, keepdims=True))
        top = ops.where(ops.any(mask, axis=-1, keepdims=True), top, ops.zeros_like(top))
        # A select (not a minimum: its gradient at 0 differs across backends) keeps exp() of left-out entries at 1.
        weights = ops.exp(ops.where(mask, logits - top, ops.zeros_like(logits))) * keep
        # The largest kept weight is exp(0) = 1: a non-empty set's sum is >= 1; an empty one gives 0 / 1. (A select:
        # maximum(sum, 1) would split its gradient at the tie sum = 1 differently on each backend.)
        total = ops.sum(weights, axis=-1)
        return ops.sum(weights * hinge, axis=-1) / ops.where(ops.any(mask, axis=-1), total, ops.ones_like(total))

    loss_p = weighted_hinge(d - (alpha - margin), positive_temperature * (d - (alpha - margin)), hard_positives)
    loss_n = weighted_hinge(alpha - d, negative_temperature * (alpha - d), hard_negatives)
    per_anchor = (1.0 - imbalance) * loss_p + imbalance * loss_n
    return reduce_anchors(reducer, per_anchor, s, s.anchors)


# Anchors per block of negatives_before: its (block, batch, batch) sigmoids are the largest temporary.
PNP_CHUNK = 32


def _anchor_blocks(fn, *rows):
    """``fn`` over blocks of ``PNP_CHUNK`` rows of the ``(n, m)`` arrays ``rows``, results joined by row.

    One block after the other (``backend.map_in_turn``: a loop in the compiled
    step that runs one block at a time, so that neither XLA nor TensorFlow's
    executor holds every block's temporaries at once); the rows
    are padded with zeros to whole blocks. The batch size is static in every
    backend's traced step here; an unknown one (a TensorFlow graph traced
    without it) takes one block.
    """
    n = rows[0].shape[0]
    if n is None or n <= PNP_CHUNK:
        return fn(*rows)
    blocks = -(-n // PNP_CHUNK)
    pad = blocks * PNP_CHUNK - n
    stacked = tuple(ops.reshape(ops.pad(r, [[0, pad], [0, 0]]) if pad else r, (blocks, PNP_CHUNK, r.shape[1]))
                    for r in rows)
    out = backend.map_in_turn(lambda block: fn(*block), stacked)
    return ops.reshape(out, (blocks * PNP_CHUNK, out.shape[-1]))[:n]


def negatives_before(similarity, negatives, anneal):
    """``R[q, i] = sum_j N[q, j] sigmoid((s_qj - s_qi) / anneal)``: the smoothed rank of :func:`pnp_loss`.

    ``(n, m)`` from the similarities ``s`` and the 0/1 negatives ``N``, with
    memory ``O(PNP_CHUNK n m)`` instead of the ``(n, m, m)`` tensor of the
    sigmoids: they are formed for blocks of anchors in the forward pass, and
    formed again in the gradient (a custom gradient, so that no backend keeps
    them for the backward pass). With ``t = (s_qj - s_qi) / anneal`` and
    ``D = sigmoid'(t) / anneal``, the gradient of ``L`` with upstream
    ``G = dL/dR`` is::

        dL/ds_qk = N[q, k] sum_i G[q, i] D[q, i, k] - G[q, k] sum_j N[q, j] D[q, k, j]

    (``k`` as a negative ``j``, then as the ranked positive ``i``); ``N``
    takes no gradient.

    Example:
        >>> import numpy as np
        >>> s = np.array([[0., 1., 0.]], "float32")   # R of column 0: one negative (column 1) ahead of it
        >>> [round(float(v), 4) for v in negatives_before(s, np.array([[0., 1., 0.]], "float32"), 0.01)[0]]
        [1.0, 0.5, 1.0]
    """
    similarity = ops.convert_to_tensor(similarity, "float32")
    negatives = ops.stop_gradient(ops.convert_to_tensor(negatives, "float32"))

    def sigmoids(s):  # [q, i, j] = sigmoid((s_qj - s_qi) / anneal)
        return ops.sigmoid((s[:, None, :] - s[:, :, None]) / anneal)

    @ops.custom_gradient
    def ranks(s):
        def grad(*args, upstream=None):  # JAX and TensorFlow pass the upstream gradient alone, PyTorch by name
            if upstream is None:
                (upstream,) = args

            def block(s_block, n_block, g_block):
                sig = sigmoids(s_block)
                slope = sig * (1.0 - sig) / anneal
                as_negative = n_block * ops.sum(g_block[:, :, None] * slope, axis=1)
                as_positive = g_block * ops.sum(n_block[:, None, :] * slope, axis=2)
                return as_negative - as_positive

            return _anchor_blocks(block, ops.stop_gradient(s), negatives, upstream)

        value = _anchor_blocks(lambda s_block, n_block: ops.sum(sigmoids(s_block) * n_block[:, None, :], axis=-1),
                               ops.stop_gradient(s), negatives)
        return value, grad

    return ranks(similarity)


def pnp_loss(embeddings, labels, variant="O", anneal=0.01, alpha=1.0, b=2.0, count_self=False, sample_weight=None,
             metric=None, reducer=None, miner=None, min_jaccard=None):
    """PNP loss: penalise the negatives ranked before each positive (Li et al., AAAI 2022, Eq. 5-13).

    For anchor ``q`` and its positive ``i``, the (smoothed) number of
    negatives ranked before ``i`` is
    ``R_i = sum_{j in N(q)} sigmoid((s_qj - s_qi) / anneal)``, and the
    variants take, over the positives, the mean of::

        "O"  (PNP-O, Eq. 5):     R
        "Ds" (PNP-D_s, Eq. 12):  log(1 + R)
        "Dq" (PNP-D_q, Eq. 13):  1 - 1 / (1 + R)^alpha     (the loss is 1 minus the mean of 1 / (1 + R)^alpha)
        "Iu" (PNP-I_u, Eq. 7):   (1 + R) log(1 + R)
        "Ib" (PNP-I_b, Eq. 9):   (b R - log(1 + b R)) / b^2

    the loss being the mean over the anchors that have a positive. Defaults
    are pytorch-metric-learning's (``PNPLoss(b=2, alpha=1, anneal=0.01,
    variant="O")``), whose variants these are. PML also counts each anchor as
    one of its own positives (``R`` of ``s_qq``); ``count_self=True`` does
    that. Memory: ``O(batch^2)``: the ``(batch, batch, batch)`` sigmoids of
    ``R`` are formed :data:`PNP_CHUNK` anchors at a time, in the forward pass
    and again in the gradient (:func:`negatives_before`); PML forms them all
    at once.

    Args:
        embeddings: ``(batch, dim)``.
        labels: ``(batch,)`` / ``(batch, 1)`` class ids.
        variant: one of ``PNP_VARIANTS``.
        anneal: the sigmoid's temperature.
        alpha: the exponent of ``"Dq"``.
        b: the constant of ``"Ib"``.
        count_self: count the anchor among its positives (pytorch-metric-learning).
        sample_weight: optional ``(batch,)`` anchor weights.
        metric: the similarity (``None``: the cosine similarity, PML's only one); a distance ``d`` enters as ``-d``.
        reducer: how the anchors' terms become the loss (``None``: their mean).
        miner: a pair selection (``None``: every pair).

    Returns:
        A float32 scalar.

    Example:
        >>> import numpy as np
        >>> x = np.array([[1., 0.], [0., 1.], [1., 0.], [0., 1.]], "float32")
        >>> float(pnp_loss(x, np.array([0, 1, 1, 0])))   # one negative before each positive, one tied (1/2)
        1.5
    """
    s, similarity = similarities(embeddings, labels, sample_weight, metric, None, None, None, True, "PNP loss",
                                 min_jaccard)
    positives, negatives = used_pairs(similarity, s, miner)
    if count_self:
        eye = ops.cast(ops.eye(ops.shape(similarity)[0]), "bool")
        positives = ops.logical_or(positives, ops.logical_and(eye, ops.any(positives, axis=-1, keepdims=True)))
    ranks = negatives_before(similarity, float_mask(negatives), anneal)
    if variant == "Ds":
        ranks = ops.log1p(ranks)
    elif variant == "Dq":
        ranks = 1.0 - 1.0 / ops.power(1.0 + ranks, alpha)
    elif variant == "Iu":
        ranks = (1.0 + ranks) * ops.log1p(ranks)
    elif variant == "Ib":
        ranks = (b * ranks - ops.log1p(b * ranks)) / (b * b)
    elif variant != "O":
        raise ValueError(f"PNP loss: received variant={variant!r}; expected one of {PNP_VARIANTS}.")
    keep = float_mask(positives)
    count = ops.sum(keep, axis=-1)
    per_anchor = ops.sum(ranks * keep, axis=-1) / ops.maximum(count, 1.0)
    return reduce_anchors(reducer, per_anchor, s, count > 0)


def instance_loss(embeddings, labels, scale=64.0, sample_weight=None, metric=None, reducer=None):
    """pytorch-metric-learning's ``InstanceLoss`` (after Zheng et al., "Dual-path convolutional image-text embeddings
    with instance loss", ACM TOMM 2020, Eq. 1-3).

    The paper's instance loss is a softmax classification in which every
    training image is its own class, through a learned ``(dim, images)``
    classifier shared by the image and text branches. pytorch-metric-learning
    implements, under that name, a classifier-free form over the batch, matched
    here: row ``i``'s logits are ``scale`` times its cosine similarities to
    every row of the batch (itself included), and its target is the column
    ``r_i``, the rank of its label among the batch's distinct labels (PML's
    ``torch.unique(labels, return_inverse=True)``)::

        l_i = LSE_j(scale s_ij) - scale s_{i, r_i}

    With every sample its own label (``labels = arange``, PML's use) ``r_i =
    i`` and the target is the row itself: each row is told apart from the
    rest of the batch. With other labels the target column is a row picked by
    the label's rank, not a row of the same class: use it with instance ids.
    The loss is the mean over the rows; ``scale`` (PML's ``gamma``) defaults to
    PML's 64. Sample weights: ``w_i`` scales row ``i``'s term and the mean counts
    the rows; a row of weight 0 is neither a logit column nor counted in the
    ranks, and the columns are those of the rows present, in order.

    Args:
        embeddings: ``(batch, dim)``.
        labels: ``(batch,)`` / ``(batch, 1)`` ids (instance ids: one per sample).
        scale: ``gamma``, the scale of the logits.
        sample_weight: optional ``(batch,)`` row weights.
        metric: the similarity (``None``: the cosine similarity, PML's only one); a distance ``d`` enters as ``-d``.
        reducer: how the rows' terms become the loss (``None``: their mean).

    Returns:
        A float32 scalar.

    Example:
        >>> import numpy as np
        >>> x = np.array([[1., 0.], [0., 1.]], "float32")
        >>> round(float(instance_loss(x, np.array([0, 1]), scale=1.0)), 4)   # log(1 + e^-1)
        0.3133
    """
    s, similarity = similarities(embeddings, labels, sample_weight, metric, None, None, None, True, "instance loss")
    present, ids = s.anchors, s.ids
    n = ops.shape(similarity)[0]
    # Rows that take no part get keys of their own (-1 - row): each is a class of one row, never a first label.
    keys = ops.where(present, ids, -1 - ops.arange(n, dtype=ids.dtype))
    rows = ops.arange(n)
    earlier = ops.logical_and(ops.equal(keys[:, None], keys[None, :]), rows[None, :] < rows[:, None])  # [k, j]
    # The first present row of each label: no earlier row of its label (a (b, b) cumsum is slow on XLA's CPU).
    first = ops.logical_and(present, ops.logical_not(ops.any(earlier, axis=-1)))
    below = ops.logical_and(first[None, :], ids[None, :] < ids[:, None])  # [i, k]: a distinct label below y_i
    rank = ops.sum(ops.cast(below, "int32"), axis=-1)
    compact = ops.cumsum(ops.cast(present, "int32")) - 1
    target = float_mask(ops.logical_and(present[None, :], ops.equal(compact[None, :], rank[:, None])))
    # Softmax cross-entropy over the present columns: the others get -1e30 (an exponent of 0, a zero
    # gradient); a row that is not present has a finite term, which the reduction multiplies by 0.
    columns = ops.where(present, 0.0, -1e30)[None, :]
    per_row = -ops.sum(target * ops.log_softmax(scale * similarity + columns, axis=-1), axis=-1)
    return reduce_anchors(reducer, per_row, s, present)


__all__ = [
    "PNP_CHUNK", "PNP_VARIANTS", "histogram_loss", "instance_loss", "negatives_before", "pnp_loss", "ranked_list_loss",
    "require_kind", "soft_nearest_neighbor_loss",
]
