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
- **Labels** are class ids, ``(batch,)`` or ``(batch, 1)`` (a positive pair
  has the same id, a negative pair different ids), or **multi-hot rows**
  ``(batch, classes)`` with ``classes > 1`` (:func:`label_relation`): a
  positive pair *shares a label* (default) or, with ``min_jaccard=t``, has
  ``|Y_i & Y_j| / |Y_i | Y_j| >= t``; a negative pair shares no label. With
  a threshold, pairs that share some labels but fewer than ``t`` are in
  neither mask. One-hot rows give exactly the pairs of their class ids. An
  all-zero row (no class), or one with an entry other than 0 and 1, is not
  valid: it takes part in no pair, as an invalid class id
  (pytorch-metric-learning refuses 2-D labels altogether: its losses and
  miners take ``(batch,)`` ids only). To keep unlabelled samples as
  negatives of every row, give them a class of their own (a "background"
  column). A row's ``ids`` entry (what ``ClassWeightedReducer`` reads) is
  its first class.
"""

import collections

from keras import ops

from lossweave import arguments
from lossweave.ops.distances import id_pair_masks, is_inverted, matrix, pair_labels
from lossweave.ops.labels import finite_rows, multi_hot_rows

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


def _float_rows(embeddings, sample_weight, what):
    """float32 rows as given, per-row weights (``None`` without ``sample_weight``), and the usable rows."""
    x = ops.cast(ops.convert_to_tensor(embeddings), "float32")
    if len(x.shape) != 2:
        raise ValueError(
            f"{what}: received embeddings of shape {tuple(x.shape)}; expected a 2-D tensor "
            f"(batch, dim). Flatten the embedding first."
        )
    usable = finite_rows(x)
    if sample_weight is None:
        return x, None, usable
    weights = ops.reshape(ops.cast(ops.convert_to_tensor(sample_weight), "float32"), (-1,))
    return x, weights, ops.logical_and(usable, ops.not_equal(weights, 0.0))


def _zeroed(x, rows):
    """``x`` with the rows outside ``rows`` zeroed (a select: a product would keep a non-finite row's NaN)."""
    return ops.where(rows[:, None], x, 0.0)


def embedding_rows(embeddings, sample_weight, what):
    """float32 rows (non-finite rows and rows of weight 0 zeroed), per-row weights, and the usable rows."""
    x, weights, usable = _float_rows(embeddings, sample_weight, what)
    if weights is None:
        weights = ops.ones((ops.shape(x)[0],), "float32")
    # A row of weight 0 then changes no distance (not even by the rounding of a mean shift).
    return _zeroed(x, usable), weights, usable


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


def is_multi_hot(labels):
    """Whether a label tensor is multi-hot rows ``(batch, classes)``, ``classes > 1`` (known when traced)."""
    shape = tuple(ops.convert_to_tensor(labels).shape)
    return len(shape) == 2 and shape[-1] not in (1, None)


LabelRelation = collections.namedtuple("LabelRelation", ["positives", "negatives", "ids", "valid", "other_valid"])
LabelRelation.__doc__ = """What :func:`label_relation` returns.

Attributes:
    positives, negatives: bool ``(n, m)``: the positive and negative pairs of valid rows (the pair
        ``(i, i)`` of a batch against itself is never a positive).
    ids: int32 ``(n,)``: class ids (multi-hot: the first class), -1 on invalid rows.
    valid, other_valid: bool ``(n,)`` and ``(m,)``: the rows whose labels are valid.
"""


def _label_rows(labels, what):
    """``(ids, valid, present)`` of class ids (``present`` ``None``) or of multi-hot rows."""
    labels = ops.convert_to_tensor(labels)
    if len(labels.shape) not in (1, 2):
        raise ValueError(
            f"{what}: received labels of shape {tuple(labels.shape)}; expected class ids of shape "
            f"(batch,) or (batch, 1), or multi-hot rows of shape (batch, classes)."
        )
    if not is_multi_hot(labels):
        ids, valid = class_ids(labels, what)
        return ids, valid, None
    present, valid = multi_hot_rows(labels)
    classes = ops.shape(present)[1]
    columns = ops.arange(classes, dtype="int32")[None, :]
    first = ops.min(ops.where(present, columns, classes), axis=1)
    return ops.where(valid, first, -ops.ones_like(first)), valid, present


def checked_min_jaccard(value, owner):
    """``min_jaccard`` checked once: ``None`` or a number in ``(0, 1]`` (``ValueError`` otherwise)."""
    return arguments.optional(arguments.number, value, "min_jaccard", owner, low=0.0, high=1.0, low_open=True,
                              hint="It is the smallest Jaccard index |Y_i & Y_j| / |Y_i | Y_j| of a positive "
                                   "pair of multi-hot rows; None: sharing any label.")


def label_relation(labels, other_labels=None, min_jaccard=None, what="pair loss"):
    """Positive and negative pairs from class ids or multi-hot rows (the rule in the module docstring).

    Args:
        labels: ``(n,)`` / ``(n, 1)`` class ids or ``(n, classes)`` multi-hot rows.
        other_labels: the partners' labels in the same layout (``None``: ``labels`` against itself).
        min_jaccard: ``None``: a multi-hot pair is positive when it shares a label; a number in
            ``(0, 1]``: when its Jaccard index
            ``|Y_i & Y_j| / |Y_i | Y_j|`` is at least it. Class ids (one label a row) give the same
            pairs for every value (it is ignored).
        what: the loss's name, for errors.

    Returns:
        A :class:`LabelRelation`.

    Example:
        >>> import numpy as np
        >>> y = np.array([[1, 1, 0], [1, 0, 0], [0, 0, 1], [0, 0, 0]])
        >>> r = label_relation(y, min_jaccard=0.5)
        >>> [[int(p) - int(n) for p, n in zip(*rows)] for rows in zip(r.positives, r.negatives)]
        [[0, 1, -1, 0], [1, 0, -1, 0], [-1, -1, 0, 0], [0, 0, 0, 0]]
    """
    min_jaccard = checked_min_jaccard(min_jaccard, what)
    ids, valid, present = _label_rows(labels, what)
    if other_labels is None:
        other_valid, other_present = valid, present
    else:
        other_ids, other_valid, other_present = _label_rows(other_labels, f"{what} ref_labels")
        if (present is None) != (other_present is None) or (
                present is not None and present.shape[1] != other_present.shape[1]):
            shapes = tuple(ops.convert_to_tensor(labels).shape), tuple(ops.convert_to_tensor(other_labels).shape)
            raise ValueError(
                f"{what}: received labels of shape {shapes[0]} and reference labels of shape "
                f"{shapes[1]}; expected both class ids or both multi-hot rows of the same "
                f"number of classes."
            )
    if present is None:
        positives, negatives = (id_pair_masks(ids, valid) if other_labels is None
                                else id_pair_masks(ids, valid, other_ids, other_valid))
        return LabelRelation(positives, negatives, ids, valid, other_valid)
    left, right = ops.cast(present, "float32"), ops.cast(other_present, "float32")
    shared = ops.matmul(left, ops.transpose(right))  # |Y_i & Y_j|, exact small integers
    both = ops.logical_and(valid[:, None], other_valid[None, :])
    if min_jaccard is None:
        positives = shared > 0.0
    else:
        union = ops.sum(left, axis=1)[:, None] + ops.sum(right, axis=1)[None, :] - shared
        positives = shared / ops.maximum(union, 1.0) >= min_jaccard
    positives = ops.logical_and(positives, both)
    negatives = ops.logical_and(ops.equal(shared, 0.0), both)
    if other_labels is None:
        rows = ops.arange(ops.shape(left)[0])
        positives = ops.logical_and(positives, ops.not_equal(rows[:, None], rows[None, :]))
    return LabelRelation(positives, negatives, ids, valid, other_valid)


def pair_structure(embeddings, labels, sample_weight=None, metric=None, ref_embeddings=None, ref_labels=None,
                   ref_mask=None, exclude_self=True, what="pair loss", min_jaccard=None):
    """The pairs of a batch (against itself or a reference set) and their values under ``metric``.

    Args:
        embeddings: ``(n, dim)`` anchors.
        labels: ``(n,)`` or ``(n, 1)`` class ids, or ``(n, classes)`` multi-hot rows.
        sample_weight: optional ``(n,)`` anchor weights.
        metric: a ``lossweave.ops.distances.METRICS`` name, a distance object
            (``lossweave.distances``) or ``None`` (no values: masks only).
        ref_embeddings, ref_labels, ref_mask, exclude_self: a reference set
            (see the module docstring).
        what: the loss's name, for errors.
        min_jaccard: the positives of multi-hot rows (:func:`label_relation`;
            ``None``: sharing a label).

    Returns:
        A :class:`PairStructure`.

    Example:
        >>> import numpy as np
        >>> x = np.array([[0., 0.], [3., 4.], [0., 1.]], "float32")
        >>> s = pair_structure(x, np.array([0, 0, 1]), metric="euclidean")
        >>> float(s.values[0, 1]), bool(s.positives[0, 1]), bool(s.negatives[0, 2]), bool(s.positives[0, 0])
        (5.0, True, True, False)
    """
    if ref_embeddings is None and (ref_labels is not None or ref_mask is not None):
        raise ValueError(
            f"{what}: received ref_labels/ref_mask without ref_embeddings; expected all of the "
            f"reference set or none of it."
        )
    if ref_embeddings is not None and ref_labels is None:
        raise ValueError(
            f"{what}: received ref_embeddings without ref_labels; expected the class ids of the "
            f"reference rows as ref_labels (and ref_mask)."
        )
    x, weights, usable = _float_rows(embeddings, sample_weight, what)
    if is_multi_hot(labels):
        relation = label_relation(labels, None if ref_embeddings is None else ref_labels, min_jaccard, what)
        ids, valid, other_valid = relation.ids, relation.valid, relation.other_valid
    else:  # class ids: the masks are built once below from the rows that take part (id_pair_masks)
        checked_min_jaccard(min_jaccard, what)
        ids, valid = _label_rows(labels, what)[:2]
        if ref_embeddings is not None:
            other_ids, other_valid, other_present = _label_rows(ref_labels, f"{what} ref_labels")
            if other_present is not None:
                raise ValueError(
                    f"{what}: received labels of shape {tuple(ops.convert_to_tensor(labels).shape)} and "
                    f"reference labels of shape {tuple(ops.convert_to_tensor(ref_labels).shape)}; expected both "
                    f"class ids or both multi-hot rows of the same number of classes."
                )
        relation = None
    anchors = ops.logical_and(usable, valid)
    x = _zeroed(x, anchors)
    if ref_embeddings is None:
        values = None if metric is None else matrix(metric, x)
        partners = anchors
    else:
        ref_x, _, partners = _float_rows(ref_embeddings, None, what)
        partners = ops.logical_and(partners, other_valid)
        if ref_mask is not None:
            partners = ops.logical_and(partners, ops.reshape(ops.cast(ref_mask, "bool"), (-1,)))
        ref_x = _zeroed(ref_x, partners)
        values = None if metric is None else matrix(metric, x, ref_x)
    if relation is None:
        positives, negatives = id_pair_masks(ids, anchors, None if ref_embeddings is None else other_ids,
                                             None if ref_embeddings is None else partners,
                                             exclude_diagonal=ref_embeddings is None or exclude_self)
    else:
        positives, negatives = relation.positives, relation.negatives
        if ref_embeddings is not None and exclude_self:
            rows, columns = ops.arange(ops.shape(x)[0]), ops.arange(ops.shape(ref_x)[0])
            not_self = ops.not_equal(rows[:, None], columns[None, :])
            positives = ops.logical_and(positives, not_self)
            negatives = ops.logical_and(negatives, not_self)
        both = ops.logical_and(anchors[:, None], partners[None, :])
        positives, negatives = ops.logical_and(positives, both), ops.logical_and(negatives, both)
    anchor_weights = ops.cast(anchors, "float32")
    weights = anchor_weights if weights is None else weights * anchor_weights
    return PairStructure(values, positives, negatives, weights, anchors, ids, x, is_inverted(metric))


__all__ = ["LabelRelation", "PairStructure", "checked_min_jaccard", "class_ids", "embedding_rows", "is_multi_hot",
           "label_relation", "pair_structure"]
