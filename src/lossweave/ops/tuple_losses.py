"""More tuple losses as pure functions over ``keras.ops``: NCA, margin, tuplet margin, angular, ...

============================  =================================================  ======================================
loss                          paper                                              function
============================  =================================================  ======================================
NCA                           Goldberger et al., NeurIPS 2004, Eq. 1-2 (log)     ``nca_loss``
margin (learnable ``beta``)   Wu et al. ("Sampling Matters"), ICCV 2017, Eq. 3-4 ``margin_loss``
tuplet margin                 Yu & Tao, ICCV 2019, Eq. 5 and 7                   ``tuplet_margin_loss``
angular (N-pair form)         Wang et al., ICCV 2017, Eq. 8-9                    ``angular_loss``
generalized lifted structure  Hermans, Beyer & Leibe, arXiv 2017, p. 4           ``generalized_lifted_structure_loss``
intra-pair variance           Yu & Tao, ICCV 2019 (equation number unverified)   ``intra_pair_variance_loss``
signal-to-noise contrastive   Yuan et al., CVPR 2019, Eq. 10-11                  ``snr_contrastive_loss``
FastAP                        Cakir et al., CVPR 2019, Eq. 9-12                  ``fast_ap_loss``
SoftTriple                    Qian et al., ICCV 2019, Eq. 6-8 and 10-12          ``soft_triple_loss``
============================  =================================================  ======================================

Every function but SoftTriple (a loss over a class table of centers, with
the class-index labels of the margin and proxy losses) starts from the one
pair structure (:func:`lossweave.ops.pair_structure.pair_structure`) and shares the
conventions of :mod:`lossweave.ops.pairs`: class ids, rows with an invalid
label, NaN/Inf features or weight 0 take part in no tuple; ``sample_weight``
scales the terms a row anchors and the denominators count tuples
(``docs/sample_weight.md``); an empty mean is 0 with a finite (zero)
gradient; ``metric`` is a distance object (:mod:`lossweave.distances`) or a
metric name, ``min_jaccard`` the positives rule of multi-hot label rows
``(batch, classes)`` (:func:`lossweave.ops.pair_structure.label_relation`;
``None``: sharing a label), ``reducer`` a :mod:`lossweave.reducers` object (``None``: the
loss's default, each docstring says which), ``miner`` a
:mod:`lossweave.miners` object (``None``: every pair). Nothing bigger than
``batch x reference`` is built (the angular loss's sum over the negatives
of every positive pair is one matmul; FastAP loops over its bins).

Where the paper leaves a choice the default is pytorch-metric-learning's
(PML 2.9), named in each docstring with the arguments that reproduce it.
"""

import math

from keras import ops

from lossweave.ops import reducers as reducer_ops
from lossweave.ops.distances import (
    COSINE_SIMILARITY,
    SNR,
    gram,
    l2_normalize,
    ordered,
    safe_sqrt,
)
from lossweave.ops.margin import cosine_similarity, margin_cross_entropy, masked_target, target_mask
from lossweave.ops.pair_similarity import similarities, used_pairs
from lossweave.ops.pair_structure import pair_structure
from lossweave.ops.pairs import masked_logsumexp, mined_pairs
from lossweave.ops.ranking import require_kind
from lossweave.ops.sampling import exclude_unused, filter_negatives

# pytorch-metric-learning averages these losses over their non-zero terms by default.
_NON_ZERO = (0.0, None)


def _float(mask):
    return ops.cast(mask, "float32")


def _structure(embeddings, labels, sample_weight, metric, ref_embeddings, ref_labels, ref_mask, exclude_self, miner,
               what, min_jaccard):
    """The pair structure, the larger-is-farther values ``d`` and the (mined) positive / negative pairs."""
    s = pair_structure(embeddings, labels, sample_weight, metric, ref_embeddings, ref_labels, ref_mask,
                       exclude_self, what, min_jaccard)
    d = ordered(metric, s.values)
    positives, negatives = mined_pairs(d, s.positives, s.negatives, miner, s.inverted)
    return s, d, positives, negatives


def _reduce_weighted(reducer, terms, mask, multiplicity, weights, ids, default_bounds=(None, None)):
    """``reduce`` of terms that each count ``multiplicity`` times (in the sum and in the count)."""
    low, high = default_bounds if reducer is None else reducer_ops.bounds(reducer)
    keep = _float(reducer_ops.kept(ops.cast(terms, "float32"), mask, low, high)) * multiplicity
    sums, counts = ops.sum(keep * terms, axis=1), ops.sum(keep, axis=1)
    return reducer_ops.reduce(reducer, sums, counts, weights, ids), counts


def _reduce_terms(reducer, terms, mask, s, default_bounds=(None, None)):
    """``reduce_terms`` with a default other than the mean when ``reducer`` is ``None``."""
    if reducer is None and default_bounds != (None, None):
        sums, counts = reducer_ops.statistics(terms, mask, *default_bounds)
        return reducer_ops.mean(sums, counts, s.weights)
    return reducer_ops.reduce_terms(reducer, terms, mask, s.weights, s.ids)


# -------------------------------------------------------------------- NCA
def nca_loss(embeddings, labels, scale=1.0, metric="squared_euclidean", sample_weight=None, ref_embeddings=None,
             ref_labels=None, ref_mask=None, exclude_self=True, reducer=None, miner=None, min_jaccard=None):
    """Neighbourhood components analysis as a loss (Goldberger et al., NeurIPS 2004, Eq. 1-2).

    With ``d`` the distances (paper: squared Euclidean of the mapped points)
    and ``C_i`` the positives of anchor ``i``::

        p_ij = exp(-scale d_ij) / sum_{k != i} exp(-scale d_ik)      (Eq. 1)
        p_i  = sum_{j in C_i} p_ij                                    (Eq. 2)
        L    = mean_i -log p_i

    the paper's log-likelihood objective (Sec. 2, ``sum_i log p_i``), as a
    mean over the anchors that have a positive (an anchor without one has
    ``p_i = 0``). Computed as ``LSE_{k}(-scale d_ik) - LSE_{j in C_i}(-scale
    d_ij)``: finite even where every ``p_ij`` underflows. A similarity
    ``s`` (``metric.is_inverted``) gives the logits ``scale s``.

    pytorch-metric-learning's ``NCALoss(softmax_scale)`` is
    ``metric=SquaredEuclideanDistance(normalize_embeddings=True)`` (its
    ``LpDistance(power=2)``) with the same mean; it leaves out anchors whose
    ``p_i`` underflows to 0 in float32, which this log-space form keeps.
    ``miner`` restricts ``C_i`` and the denominator to the selected pairs
    (PML reweights the anchors by how often the miner names them instead).

    Example:
        >>> import numpy as np
        >>> x = np.array([[0.], [1.], [3.]], "float32")
        >>> round(float(nca_loss(x, np.array([0, 0, 1]))), 4)   # anchors 0 and 1: log(1 + e^-8), log(1 + e^-3)
        0.0245
    """
    s, d, positives, negatives = _structure(embeddings, labels, sample_weight, metric, ref_embeddings, ref_labels,
                                            ref_mask, exclude_self, miner, "NCA loss", min_jaccard)
    logits = -scale * d
    has = ops.any(positives, axis=1)
    terms = masked_logsumexp(logits, ops.logical_or(positives, negatives)) - masked_logsumexp(logits, positives)
    return _reduce_terms(reducer, ops.where(has, terms, ops.zeros_like(terms)), has, s)


# ------------------------------------------------------------------ margin
def margin_loss(embeddings, labels, beta, margin=0.2, nu=0.0, metric="euclidean", triplets=False,
                sample_weight=None, ref_embeddings=None, ref_labels=None, ref_mask=None, exclude_self=True,
                reducer=None, miner=None, min_jaccard=None):
    """Margin-based loss with a learnable boundary ``beta`` (Wu et al., "Sampling Matters", ICCV 2017, Eq. 3-4).

    For a pair at distance ``D_ij`` with ``y_ij = 1`` (positive) or ``-1``
    (negative)::

        l(i, j) = [margin + y_ij (D_ij - beta_i)]_+                               (Eq. 3)
        L       = reduce_{(i, j)} l(i, j) + nu * reduce_{tuples} beta_i            (Eq. 4)

    ``beta`` is a ``(1,)`` tensor (the paper's ``beta^(0)``) or one entry per
    class (``beta^(class)``; anchor ``i`` reads the entry of its class); the
    regulariser ``nu beta`` is counted once per (anchor, positive) tuple
    (per triplet with ``triplets=True``) and reduced like the pair terms, so
    its gradient moves ``beta`` as Eq. 4 does. The default reduction is the
    mean over the non-zero terms: the authors' code (``loss / pair_cnt`` with
    ``pair_cnt`` the non-zero pairs) and pytorch-metric-learning
    (``DivisorReducer`` with that count).

    ``triplets=True`` counts each pair as often as pytorch-metric-learning's
    ``MarginLoss`` counts it when it forms every triplet of the batch (a
    positive pair of anchor ``a`` once per negative of ``a``, a negative
    pair once per positive): with ``beta`` one value and ``nu=0``, or one per
    class, it reproduces PML's value without a miner
    (``distance=EuclideanDistance(normalize_embeddings=True)`` for its
    default ``LpDistance()``). With ``triplets=True`` and a single ``beta``
    and ``nu > 0`` PML adds ``nu beta`` once; here it is reduced with the
    tuples (the same for one anchor; ``docs/sample_weight.md`` needs
    weights ``c`` to give ``c`` times the loss).

    Example:
        >>> import numpy as np
        >>> x = np.array([[0.], [1.], [1.5]], "float32")
        >>> beta = np.array([1.2], "float32")   # non-zero: the negative pairs {1, 2}, 0.2 + 1.2 - 0.5
        >>> round(float(margin_loss(x, np.array([0, 0, 1]), beta)), 4)
        0.9
    """
    s, d, positives, negatives = _structure(embeddings, labels, sample_weight, metric, ref_embeddings, ref_labels,
                                            ref_mask, exclude_self, miner, "margin loss", min_jaccard)
    beta = ops.reshape(ops.cast(beta, "float32"), (-1,))
    if beta.shape[0] == 1:
        beta_a = ops.broadcast_to(beta, ops.shape(s.weights))
    else:
        beta_a = ops.take(beta, ops.clip(s.ids, 0, beta.shape[0] - 1))
    if s.inverted:  # a similarity: d = -s, and beta is a similarity too
        beta_a = -beta_a
    pos, neg = _float(positives), _float(negatives)
    terms = ops.relu(margin + pos * (d - beta_a[:, None]) + neg * (beta_a[:, None] - d))
    n_pos, n_neg = ops.sum(pos, axis=1, keepdims=True), ops.sum(neg, axis=1, keepdims=True)
    if triplets:
        multiplicity = pos * n_neg + neg * n_pos
    else:
        multiplicity = pos + neg
    mask = ops.logical_or(positives, negatives)
    loss, counts = _reduce_weighted(reducer, terms, mask, multiplicity, s.weights, s.ids, _NON_ZERO)
    if nu == 0.0:
        return loss
    tuples = ops.sum(pos * n_neg, axis=1) if triplets else n_pos[:, 0]
    beta_terms = nu * (-beta_a if s.inverted else beta_a) * tuples
    return loss + reducer_ops.reduce(reducer, beta_terms, counts, s.weights, s.ids)


# ------------------------------------------------------------- tuplet margin
def tuplet_margin_loss(embeddings, labels, angular_margin=0.1, scale=64.0, metric=None, sample_weight=None,
                       ref_embeddings=None, ref_labels=None, ref_mask=None, exclude_self=True, reducer=None,
                       miner=None, min_jaccard=None):
    """Tuplet margin loss (Yu & Tao, ICCV 2019, Eq. 5 with the slack margin of Eq. 7).

    For every positive pair ``(a, p)`` at angle ``theta_ap`` and the
    negatives ``n`` of ``a``::

        l(a, p) = log(1 + sum_n exp(s (cos theta_an - cos(theta_ap - beta))))

    with ``s`` the scale and ``beta`` the angular margin (radians); the loss
    is the mean over the positive pairs (a pair whose anchor has no negative
    counts 0). ``cos(theta - beta)`` is computed as ``cos theta cos beta +
    sin theta sin beta`` with ``sin theta = sqrt(1 - cos^2)`` exactly 0 (and
    of gradient 0) at ``cos theta = 1``, where ``acos`` has an infinite
    derivative. Defaults are pytorch-metric-learning's ``TupletMarginLoss``
    (``margin=5.73`` degrees, 0.1 rad; ``scale=64``; its ``MeanReducer`` over
    the positive pairs); ``metric`` must be a similarity (``None``: cosine).

    Example:
        >>> import numpy as np
        >>> x = np.array([[1., 0.], [1., 0.], [0., 1.]], "float32")
        >>> round(float(tuplet_margin_loss(x, np.array([0, 0, 1]), angular_margin=0.0, scale=1.0)), 4)   # log(1 + e^-1)
        0.3133
    """
    metric = COSINE_SIMILARITY if metric is None else metric
    require_kind("tuplet margin loss", metric, want_similarity=True)  # it reads angles, cos(theta) = s
    s, similarity = similarities(embeddings, labels, sample_weight, metric, ref_embeddings, ref_labels, ref_mask,
                                 exclude_self, "tuplet margin loss", min_jaccard)
    positives, negatives = used_pairs(similarity, s, miner)
    cosine = ops.clip(similarity, -1.0, 1.0)
    sine = safe_sqrt(1.0 - ops.square(cosine))
    shifted = cosine * math.cos(angular_margin) + sine * math.sin(angular_margin)  # cos(theta_ap - beta)
    spread = masked_logsumexp(scale * cosine, negatives)  # log sum_n exp(s cos theta_an)
    has_negative = ops.any(negatives, axis=1, keepdims=True)
    terms = ops.softplus(spread[:, None] - scale * shifted) * _float(has_negative)
    return _reduce_terms(reducer, terms, positives, s)


# ------------------------------------------------------------------ angular
def angular_loss(embeddings, labels, angle=40.0, sample_weight=None, reducer=None, miner=None, min_jaccard=None):
    """Angular loss in its N-pair form (Wang et al., ICCV 2017, Eq. 8-9).

    On L2-normalised rows ``x``, for every positive pair ``(a, p)`` and the
    negatives ``n`` of ``a``, with ``t = tan^2(angle)``::

        f_{a,p,n} = 4 t (x_a + x_p)^T x_n - 2 (1 + t) x_a^T x_p                 (Eq. 8)
        l(a, p)   = log(1 + sum_n exp(f_{a,p,n}))                               (Eq. 9)

    the mean over the positive pairs (a pair whose anchor has no negative
    counts 0): pytorch-metric-learning's ``AngularLoss`` (``alpha=40``
    degrees, its ``MeanReducer``), which forms every positive pair of the
    batch as ``(anchor, positive)``. PML normalises the anchors and
    positives but not the negatives; here all three are normalised (the
    paper's unit-sphere features): the two agree on normalised inputs. The
    sum over the negatives of every pair is one matmul, ``sum_n
    e^{4t x_a.x_n} e^{4t x_p.x_n} = (A B^T)_{ap}`` with row-shifted
    exponents (no ``(pairs, batch)`` tensor). The geometry is fixed (inner
    products of unit vectors): no ``distance`` argument; a ``miner`` mines on
    the cosine similarity.

    Example:
        >>> import numpy as np
        >>> x = np.array([[1., 0.], [1., 0.], [0., 1.]], "float32")
        >>> round(float(angular_loss(x, np.array([0, 0, 1]), angle=45.0)), 4)   # log(1 + e^-4)
        0.0181
    """
    if not 0.0 < angle < 90.0:
        raise ValueError(f"angular loss: received angle={angle!r}; expected degrees in (0, 90).")
    s = pair_structure(embeddings, labels, sample_weight, None, what="angular loss", min_jaccard=min_jaccard)
    x = l2_normalize(s.embeddings)
    g = ops.clip(gram(x), -1.0, 1.0)
    positives, negatives = mined_pairs(-g, s.positives, s.negatives, miner, COSINE_SIMILARITY.is_inverted)
    t = math.tan(math.radians(angle)) ** 2
    logits = 4.0 * t * g
    keep = _float(negatives)
    # A_an = exp(4t x_a.x_n) on a's negatives, B_pn = exp(4t x_p.x_n), each row shifted by its max.
    shift_a = ops.stop_gradient(ops.max(logits + (keep - 1.0) * 1e30, axis=1, keepdims=True))
    shift_a = ops.where(ops.any(negatives, axis=1, keepdims=True), shift_a, ops.zeros_like(shift_a))
    shift_b = ops.stop_gradient(ops.max(logits, axis=1, keepdims=True))
    a = ops.exp((logits - shift_a) * keep) * keep
    b = ops.exp(logits - shift_b)
    sums = ops.matmul(a, ops.transpose(b))
    has_negative = ops.any(negatives, axis=1, keepdims=True)
    log_sums = ops.log(ops.maximum(sums, 1e-30)) + shift_a + ops.transpose(shift_b)
    terms = ops.softplus(log_sums - 2.0 * (1.0 + t) * g) * _float(has_negative) * _float(positives)
    return _reduce_terms(reducer, terms, positives, s)


# ---------------------------------------------------- generalized lifted structure
def generalized_lifted_structure_loss(embeddings, labels, pos_margin=0.0, neg_margin=1.0, metric="euclidean",
                                      sample_weight=None, ref_embeddings=None, ref_labels=None, ref_mask=None,
                                      exclude_self=True, reducer=None, miner=None, min_jaccard=None):
    """Generalized lifted structure loss (Hermans, Beyer & Leibe, arXiv 2017, p. 4).

    One term per anchor ``a``, over all its positives ``p`` and negatives ``n``::

        l(a) = [ log sum_p exp(D_ap - pos_margin) + log sum_n exp(neg_margin - D_an) ]_+

    (Hermans et al.'s generalisation of Oh Song et al.'s lifted loss to
    every anchor, ``pos_margin = 0``). An empty side contributes 0 (its
    log-sum-exp), and the loss is the mean over the anchors that have a
    positive or a negative: pytorch-metric-learning's
    ``GeneralizedLiftedStructureLoss`` (``neg_margin=1, pos_margin=0``, its
    ``MeanReducer`` over the rows; its default distance is
    ``EuclideanDistance(normalize_embeddings=True)``). With a similarity the
    margins are similarities (``pos_margin - s`` and ``s - neg_margin``).

    Example:
        >>> import numpy as np
        >>> x = np.array([[0.], [2.], [2.5]], "float32")   # anchors: 2 - 1.5, 2 + 0.5, log(e^-1.5 + e^0.5)
        >>> round(float(generalized_lifted_structure_loss(x, np.array([0, 0, 1]))), 4)
        1.209
    """
    s, d, positives, negatives = _structure(embeddings, labels, sample_weight, metric, ref_embeddings, ref_labels,
                                            ref_mask, exclude_self, miner, "generalized lifted structure loss",
                                            min_jaccard)
    if s.inverted:
        pos_margin, neg_margin = -pos_margin, -neg_margin
    terms = ops.relu(masked_logsumexp(d - pos_margin, positives) + masked_logsumexp(neg_margin - d, negatives))
    counts = ops.logical_or(ops.any(positives, axis=1), ops.any(negatives, axis=1))
    return _reduce_terms(reducer, terms, counts, s)


# ------------------------------------------------------------- intra-pair variance
def intra_pair_variance_loss(embeddings, labels, pos_eps=0.01, neg_eps=0.01, metric=None, sample_weight=None,
                             ref_embeddings=None, ref_labels=None, ref_mask=None, exclude_self=True, reducer=None,
                             miner=None, min_jaccard=None):
    """Intra-pair variance loss (Yu & Tao, ICCV 2019: its ``L_pos + L_neg``; equation number unverified).

    With ``S`` the similarities and ``E[S_p]``, ``E[S_n]`` their means over
    the batch's positive and negative pairs::

        L = mean_p [(1 - pos_eps) E[S_p] - S_p]_+^2 + mean_n [S_n - (1 + neg_eps) E[S_n]]_+^2

    a positive pair far below the positives' mean, or a negative far above
    the negatives', pays. The means are computed with their gradient, over
    the pairs that take part (unweighted: a weight scales its anchor's
    terms, not the statistics). pytorch-metric-learning's
    ``IntraPairVarianceLoss`` (``pos_eps=neg_eps=0.01``, cosine similarity,
    each part averaged by its ``MeanReducer``, the two added); ``reducer``
    reduces each part. With a distance the roles flip: a positive pays above
    ``(1 + pos_eps)`` times the positives' mean distance, a negative below
    ``(1 - neg_eps)`` times the negatives'.

    Example:
        >>> import numpy as np
        >>> x = np.array([[1., 0.], [0.6, 0.8], [1., 0.], [0., 1.]], "float32")
        >>> round(float(intra_pair_variance_loss(x, np.array([0, 0, 0, 1]), pos_eps=0.0)), 4)
        0.1057
    """
    metric = COSINE_SIMILARITY if metric is None else metric
    s, d, positives, negatives = _structure(embeddings, labels, sample_weight, metric, ref_embeddings, ref_labels,
                                            ref_mask, exclude_self, miner, "intra-pair variance loss", min_jaccard)
    values = s.values  # similarity or distance, as given
    pos, neg = _float(positives), _float(negatives)
    mean_pos = reducer_ops.safe_mean(ops.sum(pos * values), ops.sum(pos))
    mean_neg = reducer_ops.safe_mean(ops.sum(neg * values), ops.sum(neg))
    if s.inverted:
        pos_terms = ops.square(ops.relu((1.0 - pos_eps) * mean_pos - values))
        neg_terms = ops.square(ops.relu(values - (1.0 + neg_eps) * mean_neg))
    else:
        pos_terms = ops.square(ops.relu(values - (1.0 + pos_eps) * mean_pos))
        neg_terms = ops.square(ops.relu((1.0 - neg_eps) * mean_neg - values))
    return (_reduce_terms(reducer, pos * pos_terms, positives, s)
            + _reduce_terms(reducer, neg * neg_terms, negatives, s))


# ---------------------------------------------------- signal-to-noise contrastive
def snr_contrastive_loss(embeddings, labels, pos_margin=0.0, neg_margin=1.0, zero_mean_weight=0.0, metric=None,
                         sample_weight=None, ref_embeddings=None, ref_labels=None, ref_mask=None, exclude_self=True,
                         reducer=None, miner=None, min_jaccard=None):
    """Signal-to-noise-ratio contrastive loss (Yuan, Chen, Chen & Ma, CVPR 2019, Eq. 10-11).

    With ``d_S(h_i, h_j) = var(h_j - h_i) / var(h_i)`` (the SNR distance,
    :class:`lossweave.distances.SNRDistance`)::

        L_S = mean_{positives} [d_S - pos_margin]_+ + mean_{negatives} [neg_margin - d_S]_+      (Eq. 10)
        L   = L_S + lambda * mean_i |sum_k h_ik|                                               (Eq. 11)

    the contrastive loss with the SNR distance (hinge, not squared) and the
    zero-mean regulariser ``L_R`` of the features (``zero_mean_weight`` is
    ``lambda``). Each part is averaged over its non-zero terms by default:
    pytorch-metric-learning's ``SignalToNoiseRatioContrastiveLoss``
    (``pos_margin=0, neg_margin=1``, ``AvgNonZeroReducer`` per part; its
    ``SNRDistance()`` normalises the embeddings: pass
    ``metric=SNRDistance(normalize_embeddings=True)``; PML 2.x has no
    regulariser in the loss: its ``ZeroMeanRegularizer`` is an
    ``embedding_regularizer``, ``zero_mean_weight=0`` here). ``reducer``
    reduces each part (``MeanReducer()``: the paper's means over all pairs).
    The regulariser is a per-sample mean over the rows that take part
    (weighted by their sample weights).

    Example:
        >>> import numpy as np
        >>> x = np.array([[1., -1.], [2., -2.], [1., 1.]], "float32")
        >>> # positives: 1 and 1/4 (mean 5/8); negatives: 3 - 1 twice, and 0 from the zero-variance row
        >>> round(float(snr_contrastive_loss(x, np.array([0, 0, 1]), neg_margin=3.0)), 4)
        2.625
    """
    metric = SNR if metric is None else metric
    s, d, positives, negatives = _structure(embeddings, labels, sample_weight, metric, ref_embeddings, ref_labels,
                                            ref_mask, exclude_self, miner, "SNR contrastive loss", min_jaccard)
    if s.inverted:
        pos_margin, neg_margin = -pos_margin, -neg_margin
    pos_terms = _float(positives) * ops.relu(d - pos_margin)
    neg_terms = _float(negatives) * ops.relu(neg_margin - d)
    loss = (_reduce_terms(reducer, pos_terms, positives, s, _NON_ZERO)
            + _reduce_terms(reducer, neg_terms, negatives, s, _NON_ZERO))
    if zero_mean_weight == 0.0:
        return loss
    sums = ops.abs(ops.sum(s.embeddings, axis=1))
    regulariser = reducer_ops.safe_mean(ops.sum(s.weights * sums), ops.sum(_float(s.anchors)))
    return loss + zero_mean_weight * regulariser


# ------------------------------------------------------------------- FastAP
def fast_ap_loss(embeddings, labels, num_bins=10, sample_weight=None, reducer=None, min_jaccard=None):
    """FastAP: average precision from distance histograms (Cakir et al., CVPR 2019, Eq. 9-12).

    Each anchor ranks the rest of the batch by the squared Euclidean
    distance of L2-normalised rows, ``d in [0, 4]``, quantised into
    ``num_bins + 1`` bins centred at ``c_k = 4k / num_bins`` with the
    triangular kernel ``delta(d, k) = [1 - |d - c_k| / Delta]_+``, ``Delta =
    4 / num_bins`` (Eq. 12). With ``h+_k`` / ``h_k`` the positives' / all
    pairs' soft counts and ``H+``, ``H`` their cumulative sums::

        FastAP_a = 1 / N+_a sum_k h+_k H+_k / H_k                       (Eq. 9-11)
        L        = mean_a (1 - FastAP_a)

    over the anchors that have a positive (bins where ``h+_k H+_k = 0`` or
    ``H_k = 0`` add 0). The authors' code (``kunhe/FastAP-metric-learning``)
    and pytorch-metric-learning's ``FastAPLoss(num_bins=10)`` (its
    ``LpDistance(power=2)``, normalised) compute the same. The histogram needs
    the distance's range, so the distance is fixed (no ``distance``), and the
    loss ranks the whole batch (no ``miner``: a selection would change what
    the precision counts).

    Example:
        >>> import numpy as np
        >>> x = np.array([[1., 0.], [1., 0.], [0., 1.]], "float32")
        >>> float(fast_ap_loss(x, np.array([0, 0, 1])))   # each positive ranks first: AP 1
        0.0
    """
    s = pair_structure(embeddings, labels, sample_weight, None, what="FastAP loss", min_jaccard=min_jaccard)
    x = l2_normalize(s.embeddings)
    d = ops.maximum(2.0 - 2.0 * gram(x), 0.0)
    pos, neg = _float(s.positives), _float(s.negatives)
    delta = 4.0 / num_bins
    h_pos, h_all = [], []
    for k in range(num_bins + 1):
        pulse = ops.relu(1.0 - ops.abs(d - k * delta) / delta)
        h_pos.append(ops.sum(pos * pulse, axis=1))
        h_all.append(ops.sum((pos + neg) * pulse, axis=1))
    h_pos, h_all = ops.stack(h_pos, axis=1), ops.stack(h_all, axis=1)
    cum_pos, cum_all = ops.cumsum(h_pos, axis=1), ops.cumsum(h_all, axis=1)
    product = h_pos * cum_pos
    safe = ops.logical_and(product > 0, cum_all > 0)
    ratio = ops.where(safe, product / ops.where(safe, cum_all, ops.ones_like(cum_all)), ops.zeros_like(product))
    n_pos = ops.sum(pos, axis=1)
    has = n_pos > 0
    ap = ops.sum(ratio, axis=1) / ops.maximum(n_pos, 1.0)
    terms = ops.where(has, 1.0 - ap, ops.zeros_like(ap))
    return _reduce_terms(reducer, terms, has, s)


# --------------------------------------------------------------- SoftTriple
def soft_triple_loss(embeddings, centers, labels, centers_per_class=10, scale=20.0, gamma=0.1, cosine_margin=0.01,
                     tau=0.2, sample_weight=None, mask=None, negative_threshold=None):
    """SoftTriple loss with its center regulariser (Qian et al., ICCV 2019, Eq. 6-8 and 10-12).

    ``K = centers_per_class`` centers ``w_c^k`` per class; with ``s_k``
    the cosines of a sample to its class's centers::

        S'_c  = sum_k softmax_k(s_k / gamma) s_k                                (Eq. 6-7, relaxed similarity)
        l(x)  = -log( e^{lambda (S'_y - delta)} / (e^{lambda (S'_y - delta)} + sum_{j != y} e^{lambda S'_j}) )   (Eq. 8)
        R     = sum_c sum_{s < t} ||w_c^s - w_c^t|| / (C K (K - 1))            (Eq. 10-11, unit centers)
        L     = mean_i l(x_i) + tau R                                           (Eq. 12)

    ``||w^s - w^t|| = sqrt(2 + 1e-5 - 2 w^s.w^t)`` of L2-normalised centers
    (the authors' ``idstcv/SoftTriple``, whose ``1e-5`` keeps the gradient
    finite for equal centers). Defaults are the paper's and the authors'
    (``lambda=20, gamma=0.1, delta=0.01, tau=0.2, K=10``);
    pytorch-metric-learning's ``SoftTripleLoss`` has no regulariser
    (``tau=0``; its ``weight_regularizer`` is separate). ``tau R`` is added
    to every sample's loss, so the weighted loss is Keras's ``sum_i w_i (l_i
    + tau R) / batch``: with all weights 1 exactly Eq. 12, weights ``c`` give
    ``c`` times it (``docs/sample_weight.md``).

    Args:
        embeddings: ``(batch, dim)``.
        centers: ``(classes * K, dim)``: class ``c``'s centers are rows ``c K`` to ``c K + K - 1``.
        labels: sparse ``(batch,)``/``(batch, 1)`` or one-hot ``(batch, classes)`` class indices.
        centers_per_class: ``K``.
        scale: ``lambda``, the scale of the relaxed similarities.
        gamma: the temperature of the softmax over a class's centers.
        cosine_margin: ``delta``, subtracted from the target's relaxed similarity.
        tau: the weight of the regulariser (0: none; then also for ``K = 1``).
        sample_weight: optional ``(batch,)`` weights.
        mask: optional bool ``(classes,)``: the classes in use (a class-center
            sample, :mod:`lossweave.ops.sampling`); the others are out of the
            softmax and of the regulariser.
        negative_threshold: optional similarity above which a negative class's
            relaxed similarity is set to 0 (Partial FC's inter-class filtering).

    Example:
        >>> import numpy as np
        >>> centers = np.eye(2, dtype="float32")              # one center per class (K = 1)
        >>> x = np.array([[1., 0.]], "float32")
        >>> round(float(soft_triple_loss(x, centers, np.array([0]), 1, scale=1.0, cosine_margin=0.0)), 4)
        0.3133
    """
    k = int(centers_per_class)
    cos = cosine_similarity(embeddings, centers)
    cos = ops.reshape(cos, (ops.shape(cos)[0], -1, k))
    relaxed = ops.sum(ops.softmax(cos / gamma, axis=-1) * cos, axis=-1)  # (batch, classes)
    hit, valid = target_mask(labels, ops.shape(relaxed)[1])
    if negative_threshold is not None:
        relaxed = filter_negatives(relaxed, hit, negative_threshold)
    logits = scale * (relaxed - cosine_margin * _float(hit))
    if mask is not None:
        logits = exclude_unused(logits, mask)
    penalty = None
    if tau > 0 and k > 1:
        unit = ops.reshape(l2_normalize(ops.cast(centers, "float32")), (-1, k, ops.shape(centers)[-1]))
        inner = ops.matmul(unit, ops.transpose(unit, (0, 2, 1)))  # (classes, K, K)
        upper = _float(ops.arange(k)[:, None] < ops.arange(k)[None, :])
        per_class = ops.sum(ops.sqrt(ops.maximum(2.0 + 1e-5 - 2.0 * inner, 1e-5)) * upper, axis=(1, 2))
        classes = ops.cast(ops.shape(unit)[0], "float32")
        if mask is not None:
            per_class = per_class * _float(mask)
            classes = ops.sum(_float(mask))
        regulariser = ops.sum(per_class) / (classes * k * (k - 1))
        penalty = tau * ops.ones_like(valid, dtype="float32") * regulariser
    return margin_cross_entropy(logits, masked_target(logits, hit), valid, sample_weight, penalty)


__all__ = [
    "angular_loss",
    "fast_ap_loss",
    "generalized_lifted_structure_loss",
    "intra_pair_variance_loss",
    "margin_loss",
    "nca_loss",
    "snr_contrastive_loss",
    "soft_triple_loss",
    "tuplet_margin_loss",
]
