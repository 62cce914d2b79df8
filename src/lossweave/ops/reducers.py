"""How the terms of a tuple loss become one number: the reductions behind :mod:`lossweave.reducers`.

A tuple loss has one term per tuple (pair, triplet or anchor). A reduction
reads, per anchor ``a``, the sum ``S_a`` and the count ``C_a`` of the terms
it keeps (a term ``l`` is kept when ``low < l < high``; ``None`` leaves a
side open), and the anchor weights ``w_a`` (``docs/sample_weight.md``: a
weight scales the terms its row anchors, denominators count):

- mean: ``sum_a w_a S_a / sum_a C_a`` (with every term kept: the mean over all
  tuples, the papers' value and every loss's default);
- per anchor: ``sum_a w_a (S_a / C_a) / #{a : C_a > 0}``;
- divisor: ``sum_a w_a S_a / divisor``.

Where nothing is kept the result is 0 (with a zero gradient), never NaN. The
per-anchor statistics of a loss whose terms are an array come from
:func:`statistics`; losses that never build their tuples (batch-all
triplets) count them in their own loop. Per-sample terms (center, softmax)
use :func:`batch_mean`.
"""

from keras import ops


def batch_mean(per_sample):
    """``sum / batch`` over per-sample values (Keras's ``sum_over_batch_size``: the per-sample terms' reduction).

    A batch size known when traced stays a Python number (one op fewer than a cast of the traced size).
    """
    batch = ops.shape(per_sample)[0]
    if isinstance(batch, int):
        return ops.sum(per_sample) / float(max(batch, 1))
    return ops.sum(per_sample) / ops.maximum(ops.cast(batch, "float32"), 1.0)


def safe_mean(total, count):
    """``total / count``, and 0 (with a zero gradient) when ``count`` is 0."""
    count = ops.cast(count, "float32")
    return ops.where(count > 0, total / ops.maximum(count, 1.0), ops.zeros_like(total))


def kept(terms, mask, low=None, high=None):
    """Bool mask of the terms in ``mask`` with ``low < term < high`` (no gradient)."""
    keep = mask
    if low is not None:
        keep = ops.logical_and(keep, ops.stop_gradient(terms) > low)
    if high is not None:
        keep = ops.logical_and(keep, ops.stop_gradient(terms) < high)
    return keep


def statistics(terms, mask, low=None, high=None):
    """Per-anchor ``(S_a, C_a)``: the sum and the count of the kept terms of ``(batch, ...)`` arrays.

    Example:
        >>> import numpy as np
        >>> terms = np.array([[0., 1., 2.], [3., 0., 0.]], "float32")
        >>> sums, counts = statistics(terms, terms >= 0, low=0.0)
        >>> [float(v) for v in sums], [float(v) for v in counts]
        ([3.0, 3.0], [2.0, 1.0])
    """
    terms = ops.cast(terms, "float32")  # a tensor first: stop_gradient takes no NumPy array on PyTorch
    keep = ops.cast(kept(terms, ops.convert_to_tensor(mask), low, high), "float32")
    if len(terms.shape) == 1:
        return keep * terms, keep
    axes = tuple(range(1, len(terms.shape)))
    # A product with the 0/1 mask, not a select: terms outside the mask are finite (0 or real values).
    return ops.sum(keep * terms, axis=axes), ops.sum(keep, axis=axes)


def mean(sums, counts, weights):
    """``sum_a w_a S_a / sum_a C_a``; 0 when nothing is kept."""
    return safe_mean(ops.sum(weights * sums), ops.sum(counts))


def per_anchor_mean(sums, counts, weights):
    """``sum_a w_a (S_a / C_a) / #{a : C_a > 0}``: each anchor's mean, then their mean; 0 when none has a term."""
    has = counts > 0
    per_anchor = ops.where(has, sums / ops.maximum(counts, 1.0), ops.zeros_like(sums))
    return safe_mean(ops.sum(weights * per_anchor), ops.sum(ops.cast(has, "float32")))


def divided(sums, weights, divisor):
    """``sum_a w_a S_a / divisor``."""
    return ops.sum(weights * sums) / divisor


def bounds(reducer):
    """``(low, high)``: which terms ``reducer`` keeps (``None``: the default mean keeps every term)."""
    return (None, None) if reducer is None else (reducer.low, reducer.high)


def reduce(reducer, sums, counts, weights, ids):
    """The loss from per-anchor statistics: ``reducer.reduce(...)``, or the mean when ``reducer`` is ``None``."""
    if reducer is None:
        return mean(sums, counts, weights)
    return reducer.reduce(sums, counts, weights, ids)


def reduce_terms(reducer, terms, mask, weights, ids):
    """``reduce`` of the terms of an array (``(batch,)`` per anchor, ``(batch, m)`` per pair)."""
    sums, counts = statistics(terms, mask, *bounds(reducer))
    return reduce(reducer, sums, counts, weights, ids)


__all__ = ["bounds", "divided", "kept", "mean", "per_anchor_mean", "reduce", "reduce_terms", "safe_mean",
           "statistics"]
