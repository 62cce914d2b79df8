"""Cross-batch memory: a pair term whose partners are the batch and the last M embeddings.

Wang, Zhang, Huang & Scott, "Cross-Batch Memory for Embedding Learning",
CVPR 2020 (XBM): embeddings drift slowly once training has warmed up, so the
embeddings of past batches, kept in a queue, are valid partners for the
current batch's anchors: the pairs grow from ``b^2`` to ``b (b + M)`` at the
cost of a forward pass already made.
"""

import keras
from keras import ops

from lossweave import _backend as backend
from lossweave import arguments
from lossweave.ops.distances import pair_labels
from lossweave.ops.labels import finite_rows, multi_hot_rows
from lossweave.ops.pair_structure import is_multi_hot
from lossweave.terms.pairs import PairTerm, global_batch


@keras.saving.register_keras_serializable(package="lossweave")
class CrossBatchMemory(PairTerm):
    """XBM (Wang et al., CVPR 2020) around a pair term: pairs against the batch and a memory.

    The memory is a ring buffer of the last ``memory_size`` embeddings and
    labels, non-trainable float32 / int32 variables of this term (saved with
    the model), plus a write position and a filled count. Each training step:

    1. the wrapped term's ``pair_loss`` runs with the batch rows as anchors
       and, as reference set, the batch followed by the filled part of the
       memory (``exclude_self=True`` leaves out each anchor's pair with
       itself): the paper's loss between the batch and the memory, which
       includes the current batch (Algorithm 1 enqueues it first);
    2. the batch (without gradient) is written over the oldest slots in
       place, O(batch x dim): ``add_to_rows`` of (new - old) at the slots; a
       batch larger than the memory writes its last ``memory_size`` rows.

    Rows of weight 0 (``missing`` labels) are written with label -1 and never
    become partners. A batch whose check fails writes nothing (and its loss
    is 0). Outside training (``training`` not true) the memory is read, not
    written. Under ``tf.distribute`` the anchors are the global batch (as for
    every pair term) and every replica writes the global batch into its copy
    of the memory, so the copies stay equal. The paper starts the memory
    after a warm-up of the model (1k iterations for its retrieval
    benchmarks): wrap the term after a warm-up phase, or give this term a
    scheduled weight.

    Multi-hot labels ``(batch, classes)`` (the wrapped term's rule makes the
    positives: sharing a label, or its ``min_jaccard``): give
    ``multi_hot_classes=classes``; the label memory then holds
    ``(memory_size, classes)`` int32 rows (an unfilled slot, or a row of
    weight 0 or without a valid label, is all -1: no partner).

    Args:
        term: a pair term that accepts a reference set
            (``supports_reference``): ``ContrastiveLoss``, ``TripletLoss``, or a
            term whose ``pair_loss`` takes ``ref_embeddings``, ``ref_labels``,
            ``ref_mask`` and ``exclude_self``.
        memory_size: number of past embeddings kept (``M``).
        on: model output holding the embeddings (default: the term's).
        target: target holding the class ids (default: the term's).
        multi_hot_classes: ``None`` for class-id labels ``(batch,)``; the
            number of columns of multi-hot label rows ``(batch, classes)``.
        **kwargs: ``validate``, ``missing`` and Layer arguments (see :class:`~lossweave.terms.Term`).

    Example:
        >>> import numpy as np
        >>> from lossweave.terms.pairs import ContrastiveLoss
        >>> xbm = CrossBatchMemory(ContrastiveLoss(), memory_size=4)
        >>> x = np.array([[0., 0.], [1., 0.], [0., 1.]], "float32")
        >>> _ = xbm(x, np.array([0, 1, 2]), training=True)
        >>> int(xbm.filled.numpy()), int(xbm.position.numpy())
        (3, 3)
        >>> _ = xbm(x, np.array([0, 1, 2]), training=True)
        >>> int(xbm.filled.numpy()), int(xbm.position.numpy()), [int(v) for v in xbm.memory_labels.numpy()]
        (4, 2, [1, 2, 2, 0])
    """

    def __init__(self, term, memory_size, on=None, target=None, multi_hot_classes=None, **kwargs):
        if isinstance(term, dict):
            term = keras.saving.deserialize_keras_object(term)
        if not getattr(term, "supports_reference", False) or not hasattr(term, "pair_loss"):
            raise ValueError(
                f"CrossBatchMemory: received term {term!r}, which does not take a reference set; expected a "
                f"pair term with supports_reference=True (ContrastiveLoss on one output, TripletLoss)."
            )
        super().__init__(on=term.on if on is None else on, target=term.target if target is None else target,
                         **kwargs)
        self.term = term
        self.memory_size = arguments.positive_int(memory_size, "memory_size", self)
        self.multi_hot_classes = arguments.optional(arguments.positive_int, multi_hot_classes, "multi_hot_classes",
                                                    self)

    def build(self, outputs_shape):
        super().build(outputs_shape)
        dim = tuple(outputs_shape)[-1]
        if dim is None:
            raise ValueError(f"CrossBatchMemory '{self.name}': the embedding dim must be known; received "
                             f"shape {tuple(outputs_shape)}.")
        if not self.term.built:
            self.term.build(outputs_shape)
        variable = dict(trainable=False, autocast=False)
        self.memory_embeddings = self.add_weight(name="memory_embeddings", shape=(self.memory_size, dim),
                                                 initializer="zeros", dtype="float32", **variable)
        label_shape = (self.memory_size,) if self.multi_hot_classes is None else (self.memory_size,
                                                                                   self.multi_hot_classes)
        self.memory_labels = self.add_weight(name="memory_labels", shape=label_shape,
                                             initializer=keras.initializers.Constant(-1), dtype="int32",
                                             **variable)
        self.position = self.add_weight(name="position", shape=(), initializer="zeros", dtype="int32", **variable)
        self.filled = self.add_weight(name="filled", shape=(), initializer="zeros", dtype="int32", **variable)
        # Written row by row, gated by the term (Term._gated_update): the failed-step
        # gate need not copy or select the (memory_size, dim) buffers.
        backend.mark_self_gated(self.memory_embeddings)
        backend.mark_self_gated(self.memory_labels)

    def _label_rows(self, labels):
        """``(rows, valid)``: int32 class ids ``(batch,)`` or multi-hot rows ``(batch, classes)`` (-1 where invalid)."""
        multi_hot = is_multi_hot(labels)
        if multi_hot != (self.multi_hot_classes is not None) or (
                multi_hot and tuple(labels.shape)[-1] != self.multi_hot_classes):
            expected = ("class ids of shape (batch,) or (batch, 1)" if self.multi_hot_classes is None
                        else f"multi-hot rows of shape (batch, {self.multi_hot_classes})")
            raise ValueError(
                f"CrossBatchMemory '{self.name}': received labels of shape {tuple(labels.shape)}; expected "
                f"{expected}, the layout of its label memory. Give multi_hot_classes=<number of classes> for "
                f"multi-hot rows, None for class ids."
            )
        if not multi_hot:
            return pair_labels(labels)
        present, valid = multi_hot_rows(labels)
        rows = ops.cast(present, "int32")
        return ops.where(valid[:, None], rows, -ops.ones_like(rows)), valid

    def _per_row(self, mask):
        """A ``(batch,)`` mask shaped to select label rows: itself, or ``(batch, 1)`` for multi-hot rows."""
        return mask if self.multi_hot_classes is None else mask[:, None]

    def reference(self, embeddings, labels, sample_weight=None):
        """``(ref_embeddings, ref_labels, ref_mask)``: the batch, then the filled part of the memory."""
        x = ops.cast(embeddings, "float32")
        rows, _ = self._label_rows(ops.convert_to_tensor(labels))
        keep = ops.ones((ops.shape(x)[0],), dtype="bool")
        if sample_weight is not None:
            keep = ops.not_equal(ops.reshape(ops.cast(sample_weight, "float32"), (-1,)), 0.0)
        stored_labels = ops.convert_to_tensor(self.memory_labels)
        stored = stored_labels >= 0 if self.multi_hot_classes is None else ops.all(stored_labels >= 0, axis=1)
        filled = ops.arange(self.memory_size) < ops.convert_to_tensor(self.filled)
        ref_embeddings = ops.concatenate([x, ops.convert_to_tensor(self.memory_embeddings)], axis=0)
        ref_labels = ops.concatenate([rows, stored_labels], axis=0)
        ref_mask = ops.concatenate([keep, ops.logical_and(filled, stored)], axis=0)
        return ref_embeddings, ref_labels, ref_mask

    def pair_loss(self, embeddings, labels, sample_weight=None, ref_embeddings=None, ref_labels=None,
                  ref_mask=None, exclude_self=True):
        if ref_embeddings is not None:
            raise ValueError("CrossBatchMemory builds its own reference set (the batch and the memory).")
        ref_embeddings, ref_labels, ref_mask = self.reference(embeddings, labels, sample_weight)
        return self.term.pair_loss(embeddings, labels, sample_weight, ref_embeddings=ref_embeddings,
                                   ref_labels=ref_labels, ref_mask=ref_mask, exclude_self=True)

    def update_state(self, outputs, targets, sample_weight):
        """Enqueue the batch over the oldest slots (in place, O(batch x dim)); the base gates it on the checks."""
        # Under tf.distribute every replica writes the global batch into its copy.
        embeddings, labels, sample_weight = global_batch(outputs, targets, sample_weight)
        x = ops.stop_gradient(ops.cast(embeddings, "float32"))
        ids, valid = self._label_rows(ops.convert_to_tensor(labels))
        keep = ops.logical_and(valid, finite_rows(x))
        if sample_weight is not None:
            keep = ops.logical_and(keep, ops.not_equal(ops.reshape(ops.cast(sample_weight, "float32"), (-1,)), 0.0))
        x = ops.where(keep[:, None], x, ops.zeros_like(x))
        ids = ops.where(self._per_row(keep), ids, -ops.ones_like(ids))
        size = self.memory_size
        batch = ops.shape(x)[0]
        rows = ops.arange(batch, dtype="int32")
        position = ops.convert_to_tensor(self.position)
        slots = ops.mod(position + rows, size)
        # With more rows than slots only the last `size` are written: one writer per slot.
        written = rows >= ops.cast(batch, "int32") - size
        old_x = backend.gather_rows(self.memory_embeddings, slots)
        old_ids = backend.gather_rows(self.memory_labels, slots)
        delta_x = ops.where(written[:, None], x - old_x, ops.zeros_like(x))
        delta_ids = ops.where(self._per_row(written), ids - old_ids, ops.zeros_like(ids))
        backend.add_to_rows(self.memory_embeddings, slots, delta_x)
        backend.add_to_rows(self.memory_labels, slots, delta_ids)
        moved = ops.cast(batch, "int32")
        self.position.assign(ops.mod(position + moved, size))
        self.filled.assign(ops.minimum(ops.convert_to_tensor(self.filled) + moved, size))

    def get_config(self):
        config = super().get_config()
        config.update({"term": keras.saving.serialize_keras_object(self.term), "memory_size": self.memory_size})
        if self.multi_hot_classes is not None:  # absent for class ids: configs saved before it still match
            config["multi_hot_classes"] = self.multi_hot_classes
        return config
