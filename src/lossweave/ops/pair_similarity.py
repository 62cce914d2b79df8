"""Similarity-based pair losses as pure functions: multi-similarity, circle, SupCon, NT-Xent.

Every loss here compares the cosine similarities ``S_ij`` of L2-normalised
embeddings (:func:`lossweave.ops.distances.pairwise_similarity`) of an anchor
``i`` with its *positives* (same class id) and *negatives* (another class id),
and is a mean of per-anchor losses:

==============  =========================================  ==========================================
loss            per anchor                                 paper
==============  =========================================  ==========================================
multi-sim.      mined pairs, soft max of both sides        Wang et al., CVPR 2019, Eq. 9-11
circle          self-paced weights on ``s_n - s_p``        Sun et al., CVPR 2020, Eq. 6
SupCon          mean log-likelihood of the positives       Khosla et al., NeurIPS 2020, Eq. 2
NT-Xent         each positive against the negatives        Chen et al., ICML 2020 (SimCLR), Eq. 1
==============  =========================================  ==========================================

Conventions shared by all of them:

- Labels are class ids (:func:`lossweave.ops.distances.pair_labels`): any
  non-negative integer, sparse ``(batch,)`` or ``(batch, 1)``. A row with an
  invalid id or NaN/Inf embeddings takes part in no pair (and its embedding is
  zeroed before the matmul, so that its gradient stays finite). Multi-hot rows
  ``(batch, classes)`` are taken too: ``min_jaccard`` is their positives rule
  (:func:`lossweave.ops.pair_structure.label_relation`; ``None``: sharing a label).
- ``sample_weight`` follows the library's one rule (``docs/sample_weight.md``):
  the weight ``w_i`` of anchor ``i`` multiplies its loss ``L_i``, and the mean
  divides by the *number* of anchors that count (which ones each loss says)
  among the samples of non-zero weight, ``sum_i w_i L_i / #anchors``: all
  weights 1 give the paper's value, all weights ``c`` give ``c`` times it. A
  sample of weight 0 is neither an anchor nor anyone's positive or negative,
  so partial labels (``Term(missing=...)``) leave unlabelled samples out
  entirely.
- No anchor that counts (no positive, or every weight 0): the loss is 0.0,
  with finite (zero) gradients; never NaN.
- A *reference set* (``ref_embeddings``, ``ref_labels``, optional bool
  ``ref_mask`` of the reference rows that are filled) replaces the batch as
  the other side of the pairs: anchors are the batch rows, pairs are (batch
  row) x (reference row), and the batch is not implicitly included.
  ``lossweave``'s cross-batch memory passes the batch first in the reference
  (batch + memory), so with ``exclude_self=True`` (the default) the pair
  ``(i, j)`` with ``j == i < batch`` is left out: a sample is not its own
  positive. Pass ``exclude_self=False`` for a reference that does not start
  with the batch. Reference rows are masked by ``ref_mask``, their ids and
  their finiteness only (sample weights apply to anchors).
- Everything is float32, whatever the inputs' dtype (mixed precision).
"""

from keras import ops

from lossweave.ops import miners as miner_ops
from lossweave.ops import reducers as reducer_ops
from lossweave.ops.distances import COSINE_SIMILARITY, closeness, float_mask, matrix
from lossweave.ops.pair_structure import class_ids, embedding_rows, pair_structure
from lossweave.ops.pairs import masked_logsumexp_and_any, mined_pairs

# Fills the left-out entries of a masked log-sum-exp: exp() of it is exactly 0
# in float32 and, unlike -inf, it gives no NaN gradients. Logits here are at
# most ~1e4 in magnitude (circle: scale (1 + m)^2 with the scale in the hundreds).
_EXCLUDED = -1.0e9


def similarities(embeddings, labels, sample_weight, metric, ref_embeddings, ref_labels, ref_mask, exclude_self,
                 what, min_jaccard=None):
    """The pair structure of a batch and its larger-is-closer pair values ``S``.

    The one entry point of the similarity-based losses (here and in
    :mod:`lossweave.ops.ranking`): :func:`lossweave.ops.pair_structure.pair_structure`
    under ``metric`` (``None``: the cosine similarity), and its values turned
    so that larger means closer: the similarity itself, or minus a distance.

    Args:
        embeddings: ``(n, dim)`` anchors.
        labels: ``(n,)`` / ``(n, 1)`` class ids, or ``(n, classes)`` multi-hot rows.
        sample_weight: optional ``(n,)`` anchor weights.
        metric: ``None`` (cosine similarity) or a distance object of ``lossweave.distances``.
        ref_embeddings, ref_labels, ref_mask, exclude_self: a reference set
            (see the module docstring).
        what: the loss's name, for errors.
        min_jaccard: the positives of multi-hot labels (:func:`lossweave.ops.pair_structure.label_relation`).

    Returns:
        ``(structure, S)``: the :class:`lossweave.ops.pair_structure.PairStructure`
        and the float32 ``(n, m)`` values ``S``.

    Example:
        >>> import numpy as np
        >>> x = np.array([[1., 0.], [1., 0.], [0., 1.]], "float32")
        >>> s, S = similarities(x, np.array([0, 0, 1]), None, None, None, None, None, True, "example")
        >>> float(S[0, 1]), float(S[0, 2]), bool(s.positives[0, 1]), bool(s.negatives[0, 2])
        (1.0, 0.0, True, True)
    """
    metric = COSINE_SIMILARITY if metric is None else metric
    s = pair_structure(embeddings, labels, sample_weight, metric, ref_embeddings, ref_labels, ref_mask,
                       exclude_self, what, min_jaccard=min_jaccard)
    return s, (s.values if s.inverted else -s.values)


def masked_logsumexp_or_excluded(logits, mask, axis=-1):
    """``log sum_{mask} exp(logits)`` along ``axis``; where nothing is in the mask, ``-1e9``.

    :func:`lossweave.ops.pairs.masked_logsumexp` (which gives 0 on an empty
    row; :func:`lossweave.ops.pairs.masked_logsumexp_and_any` also returns the
    row test) with the empty rows set to a large negative number instead, so that
    ``softplus`` of a sum of such terms is 0 and ``a - lse`` of an empty
    denominator drops out, rather than ``-inf`` and NaN gradients. Left-out
    entries never reach ``exp`` and get a zero gradient.

    Args:
        logits: ``(..., m)`` values.
        mask: bool, the shape of ``logits``: the entries that count.
        axis: the axis summed over.

    Returns:
        float32 ``logits``' shape without ``axis``.

    Example:
        >>> import numpy as np
        >>> x = np.array([[0., 0., 5.], [1., 2., 3.]], "float32")
        >>> mask = np.array([[True, True, False], [False, False, False]])
        >>> [round(float(v), 4) for v in masked_logsumexp_or_excluded(x, mask)]   # log 2; empty row
        [0.6931, -1000000000.0]
    """
    return masked_logsumexp_and_any(logits, mask, axis=axis, empty=_EXCLUDED)[0]


def reduce_anchors(reducer, per_anchor, structure, counts):
    """The anchors' terms ``L_i`` reduced to the loss; 0 when no anchor counts.

    An anchor counts when ``counts`` holds for it and its sample weight is
    not 0; the default reducer (``None``) gives ``sum_i w_i L_i / #{counting
    i}``, the library's one meaning of ``sample_weight``
    (``docs/sample_weight.md``); any ``lossweave.reducers`` object may replace it.

    Args:
        reducer: ``None`` or a reducer of ``lossweave.reducers``.
        per_anchor: ``(n,)`` float32 terms (their value where an anchor does not count is ignored).
        structure: the :class:`lossweave.ops.pair_structure.PairStructure` of the batch
            (its ``weights`` and class ``ids``).
        counts: ``(n,)`` bool: the anchors that have a term.

    Returns:
        A float32 scalar.

    Example:
        >>> import numpy as np
        >>> x = np.eye(3, dtype="float32")
        >>> s, _ = similarities(x, np.array([0, 0, 1]), np.array([1., 3., 1.]), None, None, None, None, True, "ex")
        >>> float(reduce_anchors(None, np.array([2., 1., 7.], "float32"), s, np.array([True, True, False])))
        2.5
    """
    counts = ops.logical_and(counts, structure.weights != 0)
    return reducer_ops.reduce_terms(reducer, per_anchor, counts, structure.weights, structure.ids)


def used_pairs(similarity, structure, miner):
    """The positive and negative masks a similarity loss uses: the structure's, or ``miner``'s selection.

    The miner mines on the ordered values ``-S`` (smaller is closer), computed
    only when there is a miner (an unused ``(n, m)`` negation still runs in
    PyTorch's eager mode).

    Args:
        similarity: ``(n, m)`` larger-is-closer values ``S`` (:func:`similarities`).
        structure: their :class:`lossweave.ops.pair_structure.PairStructure`.
        miner: ``None`` or a miner of ``lossweave.miners``.

    Returns:
        ``(positives, negatives)``: bool ``(n, m)`` masks.

    Example:
        >>> import numpy as np
        >>> x = np.eye(3, dtype="float32")
        >>> s, S = similarities(x, np.array([0, 0, 1]), None, None, None, None, None, True, "example")
        >>> [int(v) for v in np.sum(np.asarray(used_pairs(S, s, None)[0]), axis=1)]   # positives per anchor
        [1, 1, 0]
    """
    if miner is None:
        return structure.positives, structure.negatives
    return mined_pairs(-similarity, structure.positives, structure.negatives, miner, structure.inverted)


def multi_similarity_mining(similarity, positives, negatives, epsilon=0.1):
    """The pair mining of multi-similarity loss (Wang et al., CVPR 2019, Eq. 9-10).

    With ``S`` the similarities of anchor ``i``, a negative ``k`` is kept when
    ``S_ik + epsilon > min_{positives j} S_ij`` (Eq. 9) and a positive ``j``
    when ``S_ij - epsilon < max_{negatives k} S_ik`` (Eq. 10); both inequalities
    are strict. An anchor without positives keeps no negative and one without
    negatives keeps no positive (``min``/``max`` over an empty set are
    ``+inf``/``-inf``); for one that has both, either both kept sets are
    empty or neither is. Mining is a selection: no gradient flows through it
    (:func:`lossweave.ops.miners.multi_similarity` on ``-S``;
    :class:`lossweave.miners.MultiSimilarityMiner` is its object).

    Returns:
        ``(kept_positives, kept_negatives)``: bool ``(n, m)`` masks.
    """
    mined = miner_ops.multi_similarity(-ops.convert_to_tensor(similarity), positives, negatives, epsilon)
    return mined.positives, mined.negatives


def multi_similarity_loss(
    embeddings, labels, alpha=2.0, beta=50.0, base=1.0, epsilon=0.1, mining=True, sample_weight=None,
    ref_embeddings=None, ref_labels=None, ref_mask=None, exclude_self=True, metric=None, reducer=None, miner=None,
    min_jaccard=None,
):
    """Multi-similarity loss (Wang, Han, Huang, Dong & Scott, CVPR 2019, Eq. 9-11).

    With ``S_ij`` cosine similarities, ``P_i`` / ``N_i`` the positives and
    negatives of anchor ``i`` kept by the mining of Eq. 9-10
    (:func:`multi_similarity_mining`, margin ``epsilon``) and ``m`` the
    anchors::

        L = 1/m sum_i [ 1/alpha log(1 + sum_{j in P_i} exp(-alpha (S_ij - lambda)))
                      + 1/beta  log(1 + sum_{k in N_i} exp( beta  (S_ik - lambda))) ]   (Eq. 11)

    Defaults are the paper's: ``alpha=2, beta=50, lambda=1,
    epsilon=0.1``. The authors' code (``msight-tech/research-ms-loss``) uses
    ``lambda`` (``thresh``) 0.5 and ``beta`` (``scale_neg``) 40 in its
    configs, and pytorch-metric-learning's ``MultiSimilarityLoss`` defaults to
    ``base=0.5`` with its miner's ``epsilon=0.1``: pass those to match them.
    ``mining=False`` uses every pair (pytorch-metric-learning's loss without
    its miner). Unlike the authors' code, which drops positives with
    ``S > 1 - 1e-5`` to remove each anchor's own pair, the diagonal is left
    out by index: a distinct sample identical to the anchor stays a positive.

    The mean is over every anchor (the paper's ``1/m``; an anchor without a
    mined pair adds 0); ``sample_weight`` scales each anchor's term, ``m``
    counts the anchors of non-zero weight (``docs/sample_weight.md``).

    Args:
        embeddings: ``(batch, dim)``.
        labels: ``(batch,)`` / ``(batch, 1)`` class ids.
        alpha: scale of the positive pairs.
        beta: scale of the negative pairs.
        base: ``lambda``, the similarity the exponents are shifted by.
        epsilon: the mining margin ``epsilon`` (Eq. 9-10; paper: 0.1).
        mining: apply the mining of Eq. 9-10.
        sample_weight: optional ``(batch,)`` anchor weights.
        ref_embeddings, ref_labels, ref_mask, exclude_self: a reference set
            (see the module docstring).
        metric: the pair values: ``None`` for the cosine similarity (the
            paper's), or a distance object of ``lossweave.distances`` (a
            distance ``d`` enters as ``S = -d``).
        reducer: how the anchors' terms become the loss
            (``lossweave.reducers``; ``None``: the mean described above).
        miner: a pair selection (``lossweave.miners``) used instead of every
            pair (for multi-similarity: instead of ``mining``).

    Returns:
        A float32 scalar.

    Example:
        >>> import numpy as np
        >>> x = np.array([[1., 0.], [1., 0.], [0., 1.], [0., 1.]], "float32")
        >>> y = np.array([0, 0, 1, 1])   # separated classes: mining keeps no pair
        >>> float(multi_similarity_loss(x, y)), round(float(multi_similarity_loss(x, y, mining=False)), 4)
        (0.0, 0.3466)
    """
    s, similarity = similarities(embeddings, labels, sample_weight, metric, ref_embeddings, ref_labels, ref_mask,
                                 exclude_self, "multi-similarity loss", min_jaccard)
    if not s.inverted:  # a distance: pytorch-metric-learning's exp(alpha (d - base)) for the positives
        base = -base
    positives, negatives = s.positives, s.negatives
    if miner is None and mining:  # the miner of Eq. 9-10 (MultiSimilarityMiner(epsilon))
        mined = miner_ops.multi_similarity(-similarity, positives, negatives, epsilon)
        positives, negatives = mined.positives, mined.negatives
    else:
        positives, negatives = used_pairs(similarity, s, miner)
    shifted = similarity - base
    # An anchor without positives (negatives) has the excluded log-sum-exp there: softplus of it is exactly 0.
    positive = ops.softplus(masked_logsumexp_or_excluded(shifted * -alpha, positives)) / alpha
    negative = ops.softplus(masked_logsumexp_or_excluded(shifted * beta, negatives)) / beta
    per_anchor = positive + negative
    return reduce_anchors(reducer, per_anchor, s, s.anchors)


def circle_loss(
    embeddings, labels, relaxation=0.25, scale=256.0, sample_weight=None,
    ref_embeddings=None, ref_labels=None, ref_mask=None, exclude_self=True, metric=None, reducer=None, miner=None,
    min_jaccard=None,
):
    """Circle loss with class-level labels (Sun et al., CVPR 2020, Eq. 6).

    For an anchor with within-class similarities ``s_p`` and between-class
    similarities ``s_n``::

        L = log(1 + sum_n exp(gamma a_n (s_n - D_n)) * sum_p exp(-gamma a_p (s_p - D_p)))

    with the self-paced weights ``a_p = [O_p - s_p]_+`` and ``a_n = [s_n -
    O_n]_+`` and the paper's ``O_p = 1 + m``, ``O_n = -m``, ``D_p = 1 - m``,
    ``D_n = m``. The weights are constants of the gradient (detached, as in
    pytorch-metric-learning's ``CircleLoss``). Computed as ``softplus(LSE_n +
    LSE_p)``, stable at a scale in the hundreds.

    Defaults are the paper's face-recognition setting ``m=0.25, gamma=256``
    (``relaxation=0.25, scale=256``); pytorch-metric-learning defaults to
    ``m=0.4, gamma=80``, the paper's
    fine-grained retrieval setting. The mean is over the anchors with
    at least one positive and one negative (those for which Eq. 6 is defined,
    as pytorch-metric-learning averages over anchors with pairs);
    ``sample_weight`` scales each anchor's term and the denominator counts
    anchors (``docs/sample_weight.md``).

    Args:
        embeddings: ``(batch, dim)``.
        labels: ``(batch,)`` / ``(batch, 1)`` class ids.
        relaxation: the relaxation margin, the paper's ``m``.
        scale: the scale of the logits, the paper's ``gamma``.
        sample_weight: optional ``(batch,)`` anchor weights.
        ref_embeddings, ref_labels, ref_mask, exclude_self: a reference set
            (see the module docstring).
        metric: the pair values: ``None`` for the cosine similarity (the
            paper's), or a distance object of ``lossweave.distances`` (a
            distance ``d`` enters as ``S = -d``).
        reducer: how the anchors' terms become the loss
            (``lossweave.reducers``; ``None``: the mean described above).
        miner: a pair selection (``lossweave.miners``) used instead of every
            pair (for multi-similarity: instead of ``mining``).

    Returns:
        A float32 scalar.

    Example:
        >>> import numpy as np
        >>> x = np.array([[1., 0.], [1., 0.], [0., 1.], [0., 1.]], "float32")
        >>> round(float(circle_loss(x, np.array([0, 0, 1, 1]), scale=1.0)), 4)   # log(1 + 2 e^-0.125)
        1.017
    """
    structure, similarity = similarities(embeddings, labels, sample_weight, metric, ref_embeddings, ref_labels,
                                         ref_mask, exclude_self, "circle loss", min_jaccard)
    positives, negatives = used_pairs(similarity, structure, miner)
    s = ops.stop_gradient(similarity)
    m, gamma = relaxation, scale
    alpha_p = ops.relu(1.0 + m - s)
    alpha_n = ops.relu(s + m)
    logit_p = -gamma * alpha_p * (similarity - (1.0 - m))
    logit_n = gamma * alpha_n * (similarity - m)
    lse_n, has_negative = masked_logsumexp_and_any(logit_n, negatives, empty=_EXCLUDED)
    lse_p, has_positive = masked_logsumexp_and_any(logit_p, positives, empty=_EXCLUDED)
    per_anchor = ops.softplus(lse_n + lse_p)
    counts = ops.logical_and(has_positive, has_negative)
    return reduce_anchors(reducer, per_anchor, structure, counts)


def supcon_loss(
    embeddings, labels, temperature=0.1, sample_weight=None,
    ref_embeddings=None, ref_labels=None, ref_mask=None, exclude_self=True, metric=None, reducer=None, miner=None,
    min_jaccard=None,
):
    """Supervised contrastive loss ``L^sup_out`` (Khosla et al., NeurIPS 2020, Eq. 2).

    With ``z`` the L2-normalised embeddings, ``P(i)`` the positives of anchor
    ``i`` and ``A(i)`` every other sample (positives and negatives)::

        L_i = -1/|P(i)| sum_{p in P(i)} log( exp(z_i.z_p / tau) / sum_{a in A(i)} exp(z_i.z_a / tau) )

    The paper's multi-view batch (each sample augmented twice) is a batch whose
    views share their label: concatenate the views and repeat the labels.
    Eq. 2 sums over anchors; here the loss is their mean (the authors' code
    takes the mean) over the anchors *that have a positive* (``|P(i)| > 0``):
    an anchor alone in its class is left out of the mean (the authors' code
    counts it with a loss of 0 since its later versions, or NaN before), and a
    batch in which no anchor has a positive gives 0. With no negative the
    formula is still defined (a positive's share of the softmax over
    ``A(i)``), and used.

    ``temperature`` defaults to the paper's 0.1; the authors'
    code (``HobbitLong/SupContrast``) defaults to 0.07 and multiplies the loss
    by ``temperature / base_temperature`` (1 at its defaults), which is left
    out here.

    Args:
        embeddings: ``(batch, dim)``.
        labels: ``(batch,)`` / ``(batch, 1)`` class ids.
        temperature: ``tau``.
        sample_weight: optional ``(batch,)`` anchor weights.
        ref_embeddings, ref_labels, ref_mask, exclude_self: a reference set
            (see the module docstring); ``A(i)`` is then the valid reference rows.
        metric: the pair values: ``None`` for the cosine similarity (the
            paper's), or a distance object of ``lossweave.distances`` (a
            distance ``d`` enters as ``S = -d``).
        reducer: how the anchors' terms become the loss
            (``lossweave.reducers``; ``None``: the mean described above).

        miner: a pair selection (``lossweave.miners``): ``P(i)`` and ``A(i)``
            are then the selected pairs.
    Returns:
        A float32 scalar.

    Example:
        >>> import numpy as np
        >>> x = np.array([[1., 0.], [1., 0.], [0., 1.]], "float32")
        >>> round(float(supcon_loss(x, np.array([0, 0, 1]), temperature=1.0)), 4)   # log(1 + e^-1)
        0.3133
    """
    s, similarity = similarities(embeddings, labels, sample_weight, metric, ref_embeddings, ref_labels, ref_mask,
                                 exclude_self, "SupCon loss", min_jaccard)
    positives, negatives = used_pairs(similarity, s, miner)
    logits = similarity / temperature
    keep = float_mask(positives)
    n_positives = ops.sum(keep, axis=-1)
    lse = masked_logsumexp_or_excluded(logits, ops.logical_or(positives, negatives))
    # sum_p (l_ip - LSE_i) / |P(i)| = (sum_p l_ip - |P(i)| LSE_i) / |P(i)|: no (n, m) log-probabilities
    mean_log_prob = (ops.sum(keep * logits, axis=-1) - n_positives * lse) / ops.maximum(n_positives, 1.0)
    return reduce_anchors(reducer, -mean_log_prob, s, n_positives > 0)


def _nt_xent_per_anchor(logits, positives, negatives):
    """Per-anchor mean over positives ``p`` of ``-log(e^{z_p} / (e^{z_p} + sum_{n} e^{z_n}))``.

    ``-log(e^a / (e^a + sum_n e^b_n)) = softplus(LSE_n(b) - a)``: stable, and 0
    exactly when there is no negative.
    """
    negative_lse = masked_logsumexp_or_excluded(logits, negatives)[:, None]
    per_pair = ops.softplus(negative_lse - logits)
    keep = float_mask(positives)
    n_positives = ops.sum(keep, axis=-1)
    per_anchor = ops.sum(keep * per_pair, axis=-1) / ops.maximum(n_positives, 1.0)
    return per_anchor, n_positives > 0


def nt_xent_loss(
    embeddings, labels, temperature=0.1, sample_weight=None,
    ref_embeddings=None, ref_labels=None, ref_mask=None, exclude_self=True, metric=None, reducer=None, miner=None,
    min_jaccard=None,
):
    """NT-Xent with positives given by labels (Chen et al., ICML 2020, SimCLR, Eq. 1).

    Each positive pair ``(i, p)`` is scored against the negatives of ``i``
    only (other positives are not in the denominator)::

        l(i, p) = -log( exp(s_ip / tau) / (exp(s_ip / tau) + sum_{n in N(i)} exp(s_in / tau)) )

    and an anchor's loss is the mean of ``l(i, p)`` over its positives. With
    one positive per anchor (a batch of two views per sample, labelled by
    sample) this is exactly SimCLR's Eq. 1 averaged over the ``2N`` anchors
    (see :func:`nt_xent_views_loss`), and it equals
    :func:`supcon_loss`; with more positives it differs from SupCon, whose
    denominator holds every other sample. pytorch-metric-learning's
    ``NTXentLoss`` scores the same pairs but averages over pairs rather than
    anchors (equal when every anchor has the same number of positives).

    The mean is over the anchors that have a positive (``sample_weight``
    scales each anchor's term, the denominator counts anchors:
    ``docs/sample_weight.md``); a batch without positive pairs gives 0, and an
    anchor without negatives has loss 0.

    ``temperature`` defaults to 0.1, the paper's default setting (ImageNet,
    batch 4096: what the authors' README, ``google-research/simclr``, calls
    "the default hyperparameters in our paper"); the paper's CIFAR-10 runs use
    0.5, a better choice for small batches.

    Args:
        embeddings: ``(batch, dim)``.
        labels: ``(batch,)`` / ``(batch, 1)`` class (or sample) ids.
        temperature: ``tau``.
        sample_weight: optional ``(batch,)`` anchor weights.
        ref_embeddings, ref_labels, ref_mask, exclude_self: a reference set
            (see the module docstring).
        metric: the pair values: ``None`` for the cosine similarity (the
            paper's), or a distance object of ``lossweave.distances`` (a
            distance ``d`` enters as ``S = -d``).
        reducer: how the anchors' terms become the loss
            (``lossweave.reducers``; ``None``: the mean described above).
        miner: a pair selection (``lossweave.miners``) used instead of every
            pair (for multi-similarity: instead of ``mining``).

    Returns:
        A float32 scalar.

    Example:
        >>> import numpy as np
        >>> x = np.array([[1., 0.], [1., 0.], [0., 1.]], "float32")
        >>> round(float(nt_xent_loss(x, np.array([0, 0, 1]), temperature=1.0)), 4)   # log(1 + e^-1)
        0.3133
    """
    s, similarity = similarities(embeddings, labels, sample_weight, metric, ref_embeddings, ref_labels, ref_mask,
                                 exclude_self, "NT-Xent loss", min_jaccard)
    positives, negatives = used_pairs(similarity, s, miner)
    per_anchor, counts = _nt_xent_per_anchor(similarity / temperature, positives, negatives)
    return reduce_anchors(reducer, per_anchor, s, counts)


def nt_xent_views_loss(view1, view2, temperature=0.1, labels=None, sample_weight=None, metric=None, reducer=None):
    """SimCLR's NT-Xent on two views of each sample (Chen et al., ICML 2020, Eq. 1).

    The ``2N`` rows ``[view1; view2]`` are the anchors; the positive of row
    ``i`` of ``view1`` is row ``i`` of ``view2`` and vice versa, and the other
    ``2N - 2`` rows are its negatives::

        l(i, j) = -log( exp(s_ij / tau) / sum_{k != i} exp(s_ik / tau) ),   L = 1/(2N) sum_i l(i, j(i))

    With ``labels`` (class ids of the ``N`` samples), the views of *other*
    samples of the same class are left out of the denominator: they are not
    negatives (nor positives). Without labels this is SimCLR's loss as
    published. ``sample_weight`` scales the terms of each sample's two
    anchors, and the mean divides by the number of anchors (``2N`` for ``N``
    samples of non-zero weight; ``docs/sample_weight.md``); a sample of
    weight 0, an invalid label or NaN/Inf in either view takes part in no pair.

    Args:
        view1: ``(N, dim)`` embeddings of the first views.
        view2: ``(N, dim)`` embeddings of the second views (same samples, same order).
        temperature: ``tau`` (default 0.1; see :func:`nt_xent_loss`).
        labels: optional ``(N,)`` / ``(N, 1)`` class ids.
        sample_weight: optional ``(N,)`` sample weights.
        metric: the pair values: ``None`` for the cosine similarity (the
            paper's), or a distance object of ``lossweave.distances`` (a
            distance ``d`` enters as ``S = -d``).
        reducer: how the anchors' terms become the loss
            (``lossweave.reducers``; ``None``: the mean described above).

    Returns:
        A float32 scalar.

    Example:
        >>> import numpy as np
        >>> v = np.array([[1., 0.], [0., 1.]], "float32")   # each view's partner: s = 1, negatives: s = 0
        >>> round(float(nt_xent_views_loss(v, v, temperature=1.0)), 4)   # log(1 + 2 e^-1)
        0.5514
    """
    a, _, usable_a = embedding_rows(view1, None, "NT-Xent view1")
    b, _, usable_b = embedding_rows(view2, None, "NT-Xent view2")
    if a.shape[0] is not None and b.shape[0] is not None and a.shape[0] != b.shape[0]:
        raise ValueError(
            f"NT-Xent: received views with {a.shape[0]} and {b.shape[0]} rows; expected the two "
            f"views of the same samples, in the same order."
        )
    n = ops.shape(a)[0]
    valid = ops.logical_and(usable_a, usable_b)
    if labels is not None:
        ids, valid_ids = class_ids(labels, "NT-Xent")
        valid = ops.logical_and(valid, valid_ids)
    else:
        ids = ops.arange(n)
    weight = ops.cast(valid, "float32")
    if sample_weight is not None:
        sample_weight = ops.reshape(ops.cast(sample_weight, "float32"), (-1,))
        valid = ops.logical_and(valid, sample_weight != 0)
        weight = weight * sample_weight
    z = ops.concatenate([a, b], axis=0)
    z = ops.where(ops.concatenate([valid, valid], axis=0)[:, None], z, ops.zeros_like(z))
    metric = COSINE_SIMILARITY if metric is None else metric
    similarity = closeness(metric, matrix(metric, z))
    sample = ops.concatenate([ops.arange(n), ops.arange(n)], axis=0)  # row -> sample index
    row = ops.arange(2 * n)
    partner = ops.equal(sample[:, None], sample[None, :])  # the two views of one sample (and self)
    positives = ops.logical_and(partner, ops.not_equal(row[:, None], row[None, :]))
    negatives = ops.logical_not(partner)
    ids = ops.concatenate([ids, ids], axis=0)
    if labels is not None:
        negatives = ops.logical_and(negatives, ops.not_equal(ids[:, None], ids[None, :]))
    both = ops.concatenate([valid, valid], axis=0)
    both = ops.logical_and(both[:, None], both[None, :])
    per_anchor, counts = _nt_xent_per_anchor(
        similarity / temperature, ops.logical_and(positives, both), ops.logical_and(negatives, both)
    )
    weights = ops.concatenate([weight, weight], axis=0)
    counts = ops.logical_and(counts, weights != 0)
    return reducer_ops.reduce_terms(reducer, per_anchor, counts, weights, ids)
