"""Proxy losses as pure functions: Proxy Anchor and ProxyNCA / ProxyNCA++.

A proxy loss compares each embedding with one learned vector per class (its
*proxy*) instead of with other embeddings, so a batch costs O(batch x
classes) and needs no pair or triplet mining. Both losses here L2-normalise
embeddings and proxies:

==============  ===================================================  =========================
loss            per batch                                            paper
==============  ===================================================  =========================
Proxy Anchor    each proxy is an anchor over the batch (Eq. 4)       Kim et al., CVPR 2020
ProxyNCA        NCA over proxies, positive not in the denominator    Movshovitz-Attias et al.,
                                                                     ICCV 2017
ProxyNCA++      softmax over *all* proxies, low temperature ``T``    Teh et al., ECCV 2020
==============  ===================================================  =========================

Labels are sparse or one-hot class indices (see
:func:`lossweave.ops.class_indices`); a row with an invalid label is left out.
Sample weights follow the library's one rule (``docs/sample_weight.md``):
ProxyNCA is a per-sample loss (``sum_i w_i l_i / batch``, as Keras); Proxy
Anchor has no per-sample term, and a weight scales its sample's share of each
proxy's term (see :func:`proxy_anchor_loss`).
Everything is computed in float32, whatever the inputs' dtype.
"""

from keras import ops

from lossweave.ops.distances import closeness, float_mask, matrix
from lossweave.ops.margin import cosine_similarity, margin_cross_entropy, masked_target, safe_sqrt, target_mask
from lossweave.ops.sampling import EXCLUDED as _EXCLUDED
from lossweave.ops.sampling import exclude_unused, filter_negatives


def _row_weights(valid, sample_weight):
    """``(batch,)`` float32 weights: the sample weights, 0 on invalid rows."""
    weight = ops.cast(valid, "float32")
    if sample_weight is not None:
        weight = weight * ops.reshape(ops.cast(sample_weight, "float32"), (-1,))
    return weight


def _over_replicas(local, gather, reduce):
    """``reduce`` ("sum" or "max") of a per-proxy ``(classes,)`` vector over the replicas; no gradient.

    ``gather`` maps a ``(1, classes)`` tensor to ``(replicas, classes)``; ``None`` means one replica.
    """
    if gather is None:
        return ops.stop_gradient(local)
    rows = ops.stop_gradient(gather(ops.expand_dims(local, 0)))
    return ops.sum(rows, axis=0) if reduce == "sum" else ops.max(rows, axis=0)


def _weighted_log1p_sum_exp(a, weight, axis, gather=None, binary=False):
    """``sum_i w_i (e_i / S) log(1 + S)`` along ``axis`` (0: over the batch), ``e_i = exp(a_i)``, stable.

    ``S = sum_{i: w_i != 0} e_i``: the entries of non-zero weight, each once.
    Each entry owns the share ``e_i / S`` of ``log(1 + S)`` and its weight
    scales that share, so weights all 1 give ``log(1 + S)`` itself (the same
    function of ``a``: same value, same gradient) and weights ``c`` give ``c``
    times it. Entries of weight 0 are left out exactly (their exponent is
    never evaluated where it could overflow, and their gradient is 0); with
    none left the result is 0. With ``gather`` (see :func:`proxy_anchor_loss`)
    both sums run over the global batch: the other replicas' sums enter as
    constants, so the gradient is that of the global value with respect to
    this replica's entries. ``binary=True`` says every weight is 0 or 1: the
    result is then ``log(1 + S)`` itself, without the shares' extra sum.
    """
    active = weight != 0
    if binary and gather is None:  # log(1 + S) = softplus(log S): two ops; an empty sum gives softplus(-1e30) = 0
        return ops.softplus(ops.logsumexp(ops.where(active, a, -1e30), axis=axis))
    a = ops.where(active, a, 0.0)  # a select: an excluded entry's exponent may overflow
    # The shift m >= 0 covers the "1 +"; the result does not depend on it (but the replicas share it).
    m = _over_replicas(ops.maximum(ops.max(a, axis=axis), 0.0), gather, "max")
    # 0/1 weights are their own mask (one cast fewer); otherwise the mask of the non-zero ones.
    e = ops.exp(a - ops.expand_dims(m, axis)) * (weight if binary else float_mask(active))
    total = ops.sum(e, axis=axis)  # S exp(-m)
    if binary:  # every share weighs 1: log(1 + S)
        if gather is not None:
            total = total + (_over_replicas(total, gather, "sum") - ops.stop_gradient(total))
        return ops.log(ops.exp(-m) + total) + m
    weighted = ops.sum(weight * e, axis=axis)  # sum_i w_i e_i exp(-m) (e is 0 where w_i is: no NaN from 0 * inf)
    if gather is not None:  # one gather for both sums
        local = ops.concatenate([total, weighted], axis=0)
        local = local + (_over_replicas(local, gather, "sum") - ops.stop_gradient(local))
        total, weighted = ops.unstack(ops.reshape(local, (2, -1)), 2, axis=0)
    has = total > 0
    share = ops.where(has, weighted / ops.where(has, total, ops.ones_like(total)), ops.zeros_like(total))
    return share * (ops.log(ops.exp(-m) + total) + m)


def _closeness(embeddings, proxies, metric):
    """Larger-is-closer values ``(batch, classes)`` of ``metric`` (a similarity, or minus a distance)."""
    return closeness(metric, matrix(metric, embeddings, proxies))


def proxy_anchor_loss(
    embeddings, proxies, labels, delta=0.1, scale=32.0, sample_weight=None, gather=None, mask=None,
    negative_threshold=None, metric=None,
):
    """Proxy Anchor loss (Kim, Kim, Cho & Kwak, CVPR 2020, Eq. 4).

    With ``s(x, p)`` the cosine similarity of L2-normalised vectors, ``P`` all
    proxies, ``P+`` the proxies of the classes present in the batch, and
    ``X_p+`` / ``X_p-`` the embeddings of the batch of / not of ``p``'s class::

        l(X) = 1/|P+| sum_{p in P+} log(1 + sum_{x in X_p+} exp(-alpha (s(x, p) - delta)))
             + 1/|P|  sum_{p in P}  log(1 + sum_{x in X_p-} exp( alpha (s(x, p) + delta)))

    The positive part is averaged over the proxies that have a positive in the
    batch only (a class absent from the batch adds nothing to it and does not
    count in ``|P+|``); the negative part over every proxy, as in the authors'
    code (``code/losses.py`` of ``tjddus9597/Proxy-Anchor-CVPR2020``).

    Sample weights (the library's rule, ``docs/sample_weight.md``): Eq. 4
    has no per-sample term, so a sample's weight scales its *share* of each
    proxy's term. With ``S_p`` the sum in the logarithm over the samples of
    non-zero weight, proxy ``p``'s term is
    ``sum_x w_x (exp(...)_x / S_p) log(1 + S_p)``: all weights 1 give Eq. 4
    exactly (the same function of the embeddings, so the same value and
    gradient), all weights ``c`` give ``c`` times it, and a sample of weight
    0 is left out of ``S_p`` (a proxy whose positives all have weight 0 is not
    in ``P+``). ``|P+|`` and ``|P|`` count proxies; weights do not enter them.
    (Before this rule weights were multiplicities inside the sums; the paper
    defines no sample weights.)

    Args:
        embeddings: ``(batch, dim)``.
        proxies: ``(classes, dim)``, one proxy per class.
        labels: sparse ``(batch,)``/``(batch, 1)`` or one-hot ``(batch, classes)``.
        delta: the margin ``delta`` (paper: 0.1).
        scale: the scale of the cosine logits, the paper's ``alpha`` (paper: 32).
        sample_weight: optional ``(batch,)`` weights, or a bool mask of the
            rows that take part (the same as 0/1 weights, computed as Eq. 4).
        gather: for a data-parallel step whose replicas each hold a part of
            the batch (``tf.distribute``): a function mapping a ``(1,
            classes)`` tensor to the ``(replicas, classes)`` rows of every
            replica (``lossweave._backend.all_gather``). The sums of Eq. 4 and
            ``P+`` are then those of the global batch, and the returned value
            (the global loss on every replica) has the gradient of the global
            loss with respect to this replica's samples times the number of
            replicas: the share that a per-sample mean's replica gives, so
            that ``Objective``'s ``1 / replicas`` and the sum of the replicas'
            gradients make the one-device update. ``None``: this batch is
            the whole batch.
        mask: optional bool ``(classes,)``: the proxies in use (a class-center
            sample, see :mod:`lossweave.ops.sampling`); the others are left out
            of both sums and of ``|P|``. Every positive must be in use.
        negative_threshold: optional cosine: negative similarities above it
            are set to 0 (the inter-class filtering of Partial FC, CVPR 2022,
            see :func:`lossweave.ops.sampling.filter_negatives`).
        metric: ``None`` for the paper's cosine similarity, or a distance
            object (``lossweave.distances``): ``s`` is then its similarity, or
            minus its distance (pytorch-metric-learning's rule); a
            ``negative_threshold`` then filters ``s``.

    Returns:
        A float32 scalar.

    Example:
        >>> import numpy as np
        >>> p = np.eye(3, dtype="float32")   # x_i = p_i: log(1 + e^-1) + log(1 + 2 e^0)
        >>> round(float(proxy_anchor_loss(p, p, np.array([0, 1, 2]), delta=0.0, scale=1.0)), 4)
        1.4119
    """
    num_classes = ops.shape(proxies)[0]
    if metric is None:
        cos = cosine_similarity(embeddings, proxies)  # (batch, classes)
    else:
        cos = _closeness(embeddings, proxies, metric)
    hit, valid = target_mask(labels, num_classes)
    if negative_threshold is not None:
        cos = filter_negatives(cos, hit, negative_threshold)
    weight = ops.expand_dims(_row_weights(valid, sample_weight), -1)
    # Products with the 0/1 target mask, not selects (PyTorch's CPU `where` is slower); weights are finite.
    positive_weight = float_mask(hit) * weight
    negative_weight = weight - positive_weight
    if mask is not None:  # proxies out of the sample: no negative sum, not counted in |P|
        negative_weight = negative_weight * float_mask(ops.expand_dims(mask, 0))
        num_classes = ops.sum(ops.cast(mask, "float32"))
    # No weights, or a bool mask of the rows that take part: every share weighs 1 (Eq. 4 as written).
    binary = sample_weight is None or "bool" in str(getattr(sample_weight, "dtype", ""))
    positive = _weighted_log1p_sum_exp(-scale * (cos - delta), positive_weight, 0, gather, binary)  # (classes,)
    negative = _weighted_log1p_sum_exp(scale * (cos + delta), negative_weight, 0, gather, binary)
    # 0/1 weights count themselves; other weights count where they are not 0.
    positives_per_proxy = ops.sum(positive_weight if binary else ops.cast(positive_weight != 0, "float32"), axis=0,
                                  keepdims=True)
    if gather is not None:  # every replica's row
        positives_per_proxy = ops.stop_gradient(gather(positives_per_proxy))
    with_positive = ops.sum(positives_per_proxy, axis=0) > 0  # P+
    count = ops.maximum(ops.sum(ops.cast(with_positive, "float32")), 1.0)
    # A proxy without a positive has a positive term of exactly 0 (no entry of its sum is active, and the shift
    # is 0): the sum over P+ is the sum over every proxy.
    positive_term = ops.sum(positive) / count
    loss = positive_term + ops.sum(negative) / ops.cast(num_classes, "float32")
    if gather is None:
        return loss
    # Value: the global loss; gradient: `replicas` times the global loss's (see `gather`).
    replicas = ops.cast(ops.shape(positives_per_proxy)[0], "float32")
    return loss + (replicas - 1.0) * (loss - ops.stop_gradient(loss))


def proxy_distances(embeddings, proxies, squared=True):
    """Distances ``||x/||x|| - p/||p||||`` between normalised embeddings and proxies.

    For unit vectors ``||x - p||^2 = 2 - 2 cos(x, p)``: one ``(batch, dim) x
    (dim, classes)`` matmul, no ``(batch, classes, dim)`` difference tensor.

    Args:
        embeddings: ``(batch, dim)``.
        proxies: ``(classes, dim)``.
        squared: squared Euclidean distances (ProxyNCA's ``d``) or Euclidean
            ones (gradient 0 where a distance is exactly 0).

    Returns:
        ``(batch, classes)`` float32 distances in ``[0, 4]`` (squared) or ``[0, 2]``.

    Example:
        >>> import numpy as np
        >>> p = np.array([[1., 0.], [0., 3.]], "float32")
        >>> [round(float(v), 4) for v in proxy_distances(np.array([[2., 0.]], "float32"), p)[0]]
        [0.0, 2.0]
    """
    return _cosine_distances(cosine_similarity(embeddings, proxies), squared)


def _cosine_distances(cos, squared):
    """Distances of unit vectors from their cosines: ``||x - p||^2 = 2 - 2 cos`` (or its root)."""
    squared_distance = ops.maximum(2.0 - 2.0 * cos, 0.0)
    return squared_distance if squared else safe_sqrt(squared_distance)


def proxy_nca_loss(
    embeddings, proxies, labels, temperature=1.0, include_positive=False, squared=True, sample_weight=None,
    mask=None, negative_threshold=None, metric=None,
):
    """ProxyNCA (Movshovitz-Attias et al., ICCV 2017) and ProxyNCA++ (Teh et al., ECCV 2020).

    With ``d`` the squared Euclidean distance of L2-normalised vectors and
    ``p(y)`` the proxy of ``x``'s class, ProxyNCA is the NCA loss evaluated
    on proxies, ``L_NCA(x, p(y), p(Z))`` with ``Z`` the other classes::

        L(x) = -log( exp(-d(x, p(y))) / sum_{z != y} exp(-d(x, p(z))) )

    whose denominator holds the *negative* proxies only, so the loss is not
    bounded below by 0. ProxyNCA++ (its sections on the proxy assignment
    probability and on low temperature scaling) puts every proxy, the
    positive included, in the denominator and divides the distances by a
    temperature ``T`` (the paper's best ``T = 1/9``; the authors' code,
    ``loss.py`` of ``euwern/proxynca_pp``, scales both unit vectors by
    ``sqrt(1/T) = 3``)::

        L(x) = -log( exp(-d(x, p(y)) / T) / sum_z exp(-d(x, p(z)) / T) )

    i.e. softmax cross-entropy on the logits ``-d / T``. The loss is the mean
    over the batch of ``w_i L(x_i)`` (rows with invalid labels count 0; the
    batch counts every row), as a Keras loss with sample weights
    (``docs/sample_weight.md``). With one class and
    ``include_positive=False`` there is no negative to contrast with: the
    loss is 0.

    Args:
        embeddings: ``(batch, dim)``.
        proxies: ``(classes, dim)``, one proxy per class.
        labels: sparse ``(batch,)``/``(batch, 1)`` or one-hot ``(batch, classes)``.
        temperature: ``T`` (1 for ProxyNCA, 1/9 for ProxyNCA++).
        include_positive: the positive proxy in the denominator (ProxyNCA++).
        squared: squared Euclidean distances (both papers) or Euclidean ones.
        sample_weight: optional ``(batch,)`` weights.
        mask: optional bool ``(classes,)``: the proxies in use (a class-center
            sample, see :mod:`lossweave.ops.sampling`); the others are left out
            of the denominator.
        negative_threshold: optional cosine: a negative proxy whose cosine
            exceeds it counts at cosine 0, i.e. at squared distance 2 (the
            inter-class filtering of Partial FC, CVPR 2022).
        metric: ``None``: the normalised (squared) Euclidean distance of
            ``squared``; or a distance object (``lossweave.distances``), whose
            distance ``d`` gives the logits ``-d / T`` (a similarity ``s``:
            ``s / T``); ``squared`` is then not used, and a
            ``negative_threshold`` filters ``-d`` (``s``), setting it to 0.

    Returns:
        A float32 scalar.

    Example:
        >>> import numpy as np
        >>> p = np.eye(3, dtype="float32")   # x = p_0: d = 0 to its proxy, 2 to the others
        >>> round(float(proxy_nca_loss(p[:1], p, np.array([0]))), 4)   # log(2 e^-2)
        -1.3069
        >>> round(float(proxy_nca_loss(p[:1], p, np.array([0]), include_positive=True)), 4)
        0.2395
    """
    num_classes = proxies.shape[0]
    if num_classes is None:  # a class sample whose size TensorFlow knows at run time only
        num_classes = ops.shape(proxies)[0]
    hit, valid = target_mask(labels, num_classes)
    if metric is None:
        cos = cosine_similarity(embeddings, proxies)
        if negative_threshold is not None:
            cos = filter_negatives(cos, hit, negative_threshold)
        # Squared: -(2 - 2 cos) / T, the clipped cosine keeping 2 - 2 cos >= 0 (no clamp needed), in two ops.
        logits = ((cos - 1.0) * (2.0 / float(temperature)) if squared
                  else -_cosine_distances(cos, squared) / float(temperature))
    else:
        closeness = _closeness(embeddings, proxies, metric)
        if negative_threshold is not None:
            closeness = filter_negatives(closeness, hit, negative_threshold)
        logits = closeness / float(temperature)
    target = masked_target(logits, hit)
    if not include_positive:
        if isinstance(num_classes, int) and num_classes == 1:
            valid = ops.zeros_like(valid)
        elif mask is not None:  # a sample of one class in use has no negative either
            valid = ops.logical_and(valid, ops.sum(ops.cast(mask, "int32")) > 1)
        logits = ops.where(hit, ops.full_like(logits, _EXCLUDED), logits)
    if mask is not None:
        logits = exclude_unused(logits, mask)
    return margin_cross_entropy(logits, target, valid, sample_weight)
