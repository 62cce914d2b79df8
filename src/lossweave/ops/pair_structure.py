"""The one pair structure every tuple loss starts from: values, positive and negative masks, anchor weights.

:func:`pair_structure` is what every pair, triplet and similarity loss of
:mod:`lossweave.ops.pairs` and :mod:`lossweave.ops.pair_similarity` (and the
miners of :mod:`lossweave.ops.miners`) reads; it replaces the two near-copies
the two modules had (which disagreed on ``exclude_self``). Its rules:

- **Which rows take part.** A row with an invalid label (negative,
  non-integer, NaN), NaN/Inf features or sample weight 0 takes part in no
  pair, as anchor or as partner; its features are zeroed before any matmul
  (its gradient is then exactly 0 and finite).
- **Anchors** are the batch rows; **partners** are the batch rows (the pair
  ``(i, i)`` is never a pair) or a *reference set* (``ref_embeddings``,
  ``ref_labels``, an optional bool ``ref_mask`` of the filled rows: a
  cross-batch memory). With a reference set, ``exclude_self=True`` says the
  first ``batch`` reference rows are the batch itself, so the pair ``(i, j ==
  i)`` is left out of the positives and the negatives.
- **Weights** are per anchor: ``w_i`` (1 without sample weights), 0 on rows
  that take part in nothing (``docs/sample_weight.md``).
- Labels are class ids, ``(batch,)`` or ``(batch, 1)``; a wider label tensor
  (one-hot rows) is refused.
"""

import collections

from keras import ops

from lossweave.ops.distances import is_inverted, label_masks, matrix, pair_labels
from lossweave.ops.labels import finite_rows

PairStructure = collections.namedtuple(
    "PairStructure", ["values", "positives", "negatives", "weights", "anchors", "ids", "embeddings", "inverted"]
)
PairStructure.__doc__ = """What :func:`pair_structure` returns.

Attributes:
    values: float32 ``(n, m)``: the distance's (or similarity's) values, or ``None`` without a metric.
    positives: bool ``(n, m)``: the positive pairs that take part.
    negatives: bool ``(n, m)``: the negative pairs that take part.
    weights: float32 ``(n,)``: the anchors' weights, 0 on rows that take no part.
    anchors: bool ``(n,)``: the rows that take part.
    ids: int32 ``(n,)``: the anchors' class ids (-1 where invalid).
    embeddings: float32 ``(n, dim)``: the anchors' rows, zeroed where they take no part.
    inverted: whether larger values mean closer (a similarity).
"""


def embedding_rows(embeddings, sample_weight, what):
    """float32 rows (non-finite rows and rows of weight 0 zeroed), per-row weights, and the usable rows."""
    x = ops.cast(ops.convert_to_tensor(embeddings), "float32")
    if len(x.shape) != 2:
        raise ValueError(
            f"{what}: received embeddings of shape {tuple(x.shape)}; expected a 2-D tensor "
            f"(batch, dim). Flatten the embedding first."
        )
    usable = finite_rows(x)
    if sample_weight is None:
        weights = ops.ones((ops.shape(x)[0],), "float32")
    else:
        weights = ops.reshape(ops.cast(ops.convert_to_tensor(sample_weight), "float32"), (-1,))
        usable = ops.logical_and(usable, ops.not_equal(weights, 0.0))
    # A row of weight 0 then changes no distance (not even by the rounding of a mean shift).
    return ops.where(usable[:, None], x, ops.zeros_like(x)), weights, usable


def class_ids(labels, what):
    """``(ids, valid)`` of sparse class ids; a label tensor that is not ``(batch,)``/``(batch, 1)`` is refused."""
    labels = ops.convert_to_tensor(labels)
    shape = tuple(labels.shape)
    if len(shape) not in (1, 2) or (len(shape) == 2 and shape[-1] not in (1, None)):
        raise ValueError(
            f"{what}: received labels of shape {shape}; expected class ids of shape (batch,) or "
            f"(batch, 1) (pair losses take sparse ids, not one-hot rows)."
        )
    return pair_labels(labels)


def pair_structure(embeddings, labels, sample_weight=None, metric=None, ref_embeddings=None, ref_labels=None,
                   ref_mask=None, exclude_self=True, what="pair loss"):
    """The pairs of a batch (against itself or a reference set) and their values under ``metric``.

    Args:
        embeddings: ``(n, dim)`` anchors.
        labels: ``(n,)`` or ``(n, 1)`` class ids.
        sample_weight: optional ``(n,)`` anchor weights.
        metric: a ``lossweave.ops.distances.METRICS`` name, a distance object
            (``lossweave.distances``) or ``None`` (no values: masks only).
        ref_embeddings, ref_labels, ref_mask, exclude_self: a reference set
            (see the module docstring).
        what: the loss's name, for errors.

    Returns:
        A :class:`PairStructure`.

    Example:
        >>> import numpy as np
        >>> x = np.array([[0., 0.], [3., 4.], [0., 1.]], "float32")
        >>> s = pair_structure(x, np.array([0, 0, 1]), metric="euclidean")
        >>> float(s.values[0, 1]), bool(s.positives[0, 1]), bool(s.negatives[0, 2]), bool(s.positives[0, 0])
        (5.0, True, True, False)
    """
    x, weights, usable = embedding_rows(embeddings, sample_weight, what)
    ids, valid = class_ids(labels, what)
    anchors = ops.logical_and(usable, valid)
    if ref_embeddings is None:
        if ref_labels is not None or ref_mask is not None:
            raise ValueError(
                f"{what}: received ref_labels/ref_mask without ref_embeddings; expected all of the "
                f"reference set or none of it."
            )
        x = ops.where(anchors[:, None], x, ops.zeros_like(x))
        values = None if metric is None else matrix(metric, x)
        positives, negatives = label_masks(labels)
        partners = anchors
    else:
        if ref_labels is None:
            raise ValueError(
                f"{what}: received ref_embeddings without ref_labels; expected the class ids of the "
                f"reference rows as ref_labels (and ref_mask)."
            )
        ref_x, _, partners = embedding_rows(ref_embeddings, None, what)
        _, ref_valid = class_ids(ref_labels, f"{what} ref_labels")
        partners = ops.logical_and(partners, ref_valid)
        if ref_mask is not None:
            partners = ops.logical_and(partners, ops.reshape(ops.cast(ref_mask, "bool"), (-1,)))
        x = ops.where(anchors[:, None], x, ops.zeros_like(x))
        ref_x = ops.where(partners[:, None], ref_x, ops.zeros_like(ref_x))
        values = None if metric is None else matrix(metric, x, ref_x)
        positives, negatives = label_masks(labels, ref_labels)
        if exclude_self:
            rows, columns = ops.arange(ops.shape(x)[0]), ops.arange(ops.shape(ref_x)[0])
            not_self = ops.not_equal(rows[:, None], columns[None, :])
            positives = ops.logical_and(positives, not_self)
            negatives = ops.logical_and(negatives, not_self)
    both = ops.logical_and(anchors[:, None], partners[None, :])
    weights = weights * ops.cast(anchors, "float32")
    return PairStructure(values, ops.logical_and(positives, both), ops.logical_and(negatives, both), weights,
                         anchors, ids, x, is_inverted(metric))


__all__ = ["PairStructure", "class_ids", "embedding_rows", "pair_structure"]
