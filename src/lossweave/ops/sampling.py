"""Class-center sampling (Partial FC): the classes a training step computes logits for.

Partial FC (An et al., "Partial FC: Training 10 Million Identities on a
Single Machine", ICCVW 2021, Sec. 3.2; and "Killing Two Birds with One
Stone: Efficient and Robust Training of Face Recognition CNNs by Partial
FC", CVPR 2022, Sec. 3.1) computes the softmax of a step over a subset of
the class centers: every positive class of the (global) batch, plus
negatives drawn uniformly without replacement from the other classes, up to
``ceil(sample_rate * num_classes)`` classes in all. When the positives alone
exceed that budget, the positives only are used. This is what
insightface's ``PartialFC_V2.sample`` does (``recognition/arcface_torch/
partial_fc_v2.py``): a uniform key per class, key 2 for the positives, the
``num_sample`` largest keys.

Shapes are static, so that the step compiles once: the sample has ``S =
min(num_classes, max(budget, batch))`` slots (every positive fits), and a
boolean ``mask`` marks the ``max(budget, positives)`` slots in use; callers
take the others out of the softmax. Everything is O(num_classes) for the
keys and O(batch x S) for the logits: no ``(batch, num_classes)`` array.
"""

import math

from keras import ops, random

from lossweave.ops.labels import class_indices

# A logit no real one reaches: it takes an entry out of a log-sum-exp without
# the NaN gradients of -inf.
EXCLUDED = -3.0e38


def sample_budget(num_classes, sample_rate):
    """``ceil(sample_rate * num_classes)``: the classes a step keeps (insightface's ``num_sample``).

    Example:
        >>> sample_budget(1000, 0.1), sample_budget(10, 0.25)
        (100, 3)
    """
    # The small tolerance keeps 0.1 * 1000 (= 100.00000000000001) at 100.
    return max(1, min(int(num_classes), math.ceil(sample_rate * num_classes - 1e-9)))


def sample_slots(num_classes, budget, batch):
    """The static number of slots ``S = min(num_classes, max(budget, batch))``.

    ``batch`` is the (global) batch size: an int, or a scalar tensor where the
    batch size is known at run time only (TensorFlow); the result is then a
    tensor too.

    Example:
        >>> sample_slots(1000, 100, 256), sample_slots(1000, 100, 64), sample_slots(10, 5, 64)
        (256, 100, 10)
    """
    if isinstance(batch, int):
        return min(int(num_classes), max(int(budget), batch))
    return ops.minimum(int(num_classes), ops.maximum(int(budget), ops.cast(batch, "int32")))


def sample_classes(labels, num_classes, sample_size=None, budget=None, seed=None, gather=None):
    """Draw the classes of one training step: the positives plus uniform negatives.

    With ``P`` the distinct valid labels of the batch and ``B`` the budget,
    the sample holds the ``P`` positive classes and ``max(B - P, 0)``
    negatives drawn uniformly without replacement from the other
    ``num_classes - P`` classes (Partial FC, ICCVW 2021, Sec. 3.2). Slot ``i``
    is in use where ``mask[i]``; the positives come first.

    Args:
        labels: sparse ``(batch,)``/``(batch, 1)`` or one-hot labels of this
            replica's batch; invalid rows (see :func:`lossweave.ops.class_indices`)
            are no positives and are remapped to ``-1``.
        num_classes: the number of classes ``C``.
        sample_size: the number of slots ``S``, at least the budget and at
            most ``C``; ``None``: :func:`sample_slots` of the global batch
            (a tensor on TensorFlow where the batch size is known at run time only).
        budget: ``B`` (see :func:`sample_budget`); ``None`` means ``S``.
            Give ``sample_size`` or ``budget``.
        seed: an int or a ``keras.random.SeedGenerator`` drawing the keys.
        gather: for a ``tf.distribute`` replica: a function mapping a
            ``(batch,)`` tensor to the global batch's (``lossweave._backend``'s
            ``all_gather``), so that every replica draws the same classes
            from the positives of the global batch (give every replica the
            same seed state). ``None``: this batch is the whole batch.

    Returns:
        ``(classes, remapped, mask)``: int32 ``(S,)`` distinct class indices,
        int32 ``(batch,)`` labels as positions in ``classes`` (``-1`` for an
        invalid row), bool ``(S,)`` slots in use.

    Example:
        >>> import numpy as np
        >>> import keras
        >>> classes, remapped, mask = sample_classes(np.array([7, 2, 7]), 10, 4, budget=3, seed=0)
        >>> classes, remapped, mask = (keras.ops.convert_to_numpy(v) for v in (classes, remapped, mask))
        >>> sorted(int(c) for c in classes[:2]), int(mask.sum())   # the positives first; 3 slots in use
        ([2, 7], 3)
        >>> [int(classes[i]) for i in remapped]
        [7, 2, 7]
    """
    if sample_size is None and budget is None:
        raise ValueError("sample_classes: received neither sample_size nor budget; give one (or both).")
    indices, valid = class_indices(labels, num_classes, what="sample_classes labels")
    every_index, every_valid = (indices, valid) if gather is None else (gather(indices), gather(valid))
    if sample_size is None:
        batch = every_index.shape[0]
        sample_size = sample_slots(
            num_classes, budget, ops.shape(every_index)[0] if batch is None else int(batch)
        )
    # (C,) count of each class among the valid labels: O(batch) updates of an O(C) vector.
    present = ops.scatter(
        ops.expand_dims(every_index, -1), ops.cast(every_valid, "float32"), (int(num_classes),)
    ) > 0
    keys = random.uniform((int(num_classes),), dtype="float32", seed=seed)  # in [0, 1)
    keys = ops.where(present, ops.full_like(keys, 2.0), keys)  # every positive ranks above every negative
    _, classes = ops.top_k(keys, sample_size, sorted=True)
    classes = ops.cast(classes, "int32")
    positives = ops.sum(ops.cast(present, "int32"))
    in_use = ops.maximum(positives, sample_size if budget is None else int(budget))
    mask = ops.arange(ops.shape(classes)[0], dtype="int32") < in_use
    return classes, remap_labels(indices, valid, classes, num_classes), mask


def exclude_unused(logits, mask):
    """``logits`` ``(batch, S)`` with the slots not in use (``mask`` ``(S,)`` false) out of the softmax.

    They become :data:`EXCLUDED`, so they add nothing to a log-sum-exp and get no gradient.

    Example:
        >>> import numpy as np
        >>> z = exclude_unused(np.zeros((1, 3), "float32"), np.array([True, True, False]))
        >>> round(float(np.log(np.sum(np.exp(np.asarray(z))))), 4)   # log 2: two classes left
        0.6931
    """
    logits = ops.cast(logits, "float32")
    return ops.where(ops.expand_dims(ops.convert_to_tensor(mask), 0), logits, ops.full_like(logits, EXCLUDED))


def remap_labels(indices, valid, classes, num_classes):
    """Positions of class ``indices`` in ``classes`` (``-1`` where absent or not ``valid``).

    One scatter of ``S`` positions into an int ``(num_classes,)`` vector and one
    gather: O(num_classes + batch), no ``(batch, S)`` comparison.

    Example:
        >>> import numpy as np
        >>> [int(v) for v in remap_labels(np.array([5, 1, 3]), np.array([True, True, False]),
        ...                                np.array([1, 5], "int32"), 8)]
        [1, 0, -1]
    """
    classes = ops.cast(classes, "int32")
    slots = ops.shape(classes)[0]
    # position + 1 at each sampled class (0 elsewhere): the classes are distinct, so nothing adds up.
    position = ops.scatter(
        ops.expand_dims(classes, -1), ops.arange(1, slots + 1, dtype="int32"), (int(num_classes),)
    ) - 1
    remapped = ops.take(position, ops.cast(indices, "int32"), axis=0)
    return ops.where(ops.convert_to_tensor(valid), remapped, -ops.ones_like(remapped))


def filter_negatives(logits, hit, threshold, scale=1.0):
    """Inter-class filtering (Partial FC, CVPR 2022, Sec. 3.2): negatives above a threshold set to 0.

    A negative class whose cosine to a sample exceeds ``threshold`` is likely
    the same identity under another label (an inter-class conflict); its
    entry is set to 0 and gets no gradient, as insightface's
    ``CombinedMarginLoss`` does with ``interclass_filtering_threshold`` (0.4
    in its WebFace12M-Conflict configs). Target entries are kept.

    Args:
        logits: ``(batch, classes)`` ``scale * cos``.
        hit: ``(batch, classes)`` bool, true at each row's target.
        threshold: the cosine threshold.
        scale: what multiplies the cosines, a positive float or a
            ``()``/``(batch,)``/``(batch, 1)`` tensor: ``cos > threshold`` is
            ``logits > threshold * scale``.

    Example:
        >>> import numpy as np
        >>> z = np.array([[0.9, 0.5, 0.2]], "float32") * 10.0
        >>> hit = np.array([[True, False, False]])
        >>> [round(float(v), 4) for v in filter_negatives(z, hit, 0.4, 10.0)[0]]
        [9.0, 0.0, 2.0]
    """
    logits = ops.cast(logits, "float32")
    if isinstance(scale, (int, float)):
        bound = threshold * float(scale)
    else:
        scale = ops.cast(scale, "float32")
        bound = threshold * (ops.reshape(scale, (-1, 1)) if len(scale.shape) else scale)
    dirty = ops.logical_and(ops.logical_not(hit), logits > bound)
    return ops.where(dirty, ops.zeros_like(logits), logits)
