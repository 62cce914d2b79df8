"""The class-table base: every term with a per-class table (margin terms, proxy terms, CenterLoss).

One base owns what those terms share: the ``(num_classes * rows_per_class,
dim)`` float32 table and its initializer, the class-row input check, zeroing
the rows of non-finite embeddings (so that their gradients stay finite), the
O(batch x dim) row update, Partial FC class sampling where it applies
(:class:`SampledClassTable`), and the answer to "which of your variables are
class tables" that :mod:`lossweave.sharding` asks (``class_tables()``).
"""

import keras
from keras import ops

from lossweave import _backend as backend
from lossweave import arguments
from lossweave.ops.labels import finite_rows
from lossweave.terms.base import Term
from lossweave.terms.sampling import ClassSampling


class ClassTable(Term):
    """Base of a term that owns a per-class table.

    A subclass names its table (``table_name``, the attribute and the
    variable's name: ``"class_weights"``, ``"proxies"``, ``"centers"``) and takes
    the table's initializer as ``<table_name>_initializer``; it calls
    ``super().__init__(num_classes, ...)``. ``rows_per_class`` (1, or
    sub-centers) and ``table_trainable`` (the optimizer moves it, else the
    term's own row update does) are properties it may override. A table that
    is not trainable is moved by ``add_to_table`` rows only, so the failed-step
    gate leaves it out (``backend.mark_self_gated``) and the term's gated
    ``update_state`` masks its rows instead.

    Args:
        num_classes: number of classes (a positive int; NumPy ints accepted).
        **kwargs: see :class:`~lossweave.terms.Term`.
    """

    reads = "embedding"
    input_checks = "class_rows"
    needs_dim = True
    table_name = None

    def __init__(self, num_classes, on="embedding", target="label", **kwargs):
        super().__init__(on=on, target=target, **kwargs)
        self.num_classes = arguments.positive_int(num_classes, "num_classes", self)

    @property
    def rows_per_class(self):
        return 1

    @property
    def table_trainable(self):
        return True

    @property
    def table(self):
        """The table variable."""
        return getattr(self, self.table_name)

    def class_tables(self):
        """``[(attribute, rows)]`` of this term's class tables (what ``lw.sharding`` splits by class)."""
        return [(self.table_name, self.num_classes * self.rows_per_class)]

    def build(self, outputs_shape):
        super().build(outputs_shape)
        table = self.add_weight(
            name=self.table_name,
            shape=(self.num_classes * self.rows_per_class, tuple(outputs_shape)[-1]),
            initializer=getattr(self, f"{self.table_name}_initializer"),
            trainable=self.table_trainable,
            dtype="float32",
            autocast=False,
        )
        setattr(self, self.table_name, table)
        if not self.table_trainable:  # moved by gated row updates only
            backend.mark_self_gated(table)

    def ensure_built(self, embeddings):
        """Build from the embeddings' shape when called before the term was built (e.g. ``logits``)."""
        if not self.built:
            self.build(tuple(ops.shape(embeddings)))

    @staticmethod
    def finite_embeddings(embeddings):
        """``(float32 embeddings with non-finite rows zeroed, finite-row flags)``."""
        embeddings = ops.cast(embeddings, "float32")
        finite = finite_rows(embeddings)
        return ops.where(finite[:, None], embeddings, ops.zeros_like(embeddings)), finite

    def add_to_table(self, indices, deltas):
        """Add ``deltas[i]`` to row ``indices[i]`` of the table in O(batch x dim) (gated by the base)."""
        backend.add_to_rows(self.table, indices, deltas)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_classes": self.num_classes,
                f"{self.table_name}_initializer": keras.initializers.serialize(
                    getattr(self, f"{self.table_name}_initializer")
                ),
            }
        )
        return config


class SampledClassTable(ClassSampling, ClassTable):
    """A class table with Partial FC class-center sampling and inter-class filtering.

    Args:
        num_classes: number of classes.
        sample_rate: fraction of the classes a training step computes logits
            for, in ``(0, 1]``; 1.0 (every class) is the plain term.
        seed: int seed of the class sampling (``None``: a random one).
        negative_threshold: ``None`` (off) or a cosine in ``(0, 1)`` above
            which a negative class's logit is set to 0 in training.
        **kwargs: see :class:`ClassTable`.
    """

    def __init__(self, num_classes, sample_rate=1.0, seed=None, negative_threshold=None, **kwargs):
        super().__init__(num_classes, **kwargs)
        self.init_sampling(sample_rate, seed, negative_threshold)

    def training_rows(self, labels, training):
        """``(table rows, labels, slots in use, classes)`` of one step: the sample when sampling, else all."""
        if not self.samples(training):
            return self.table, labels, None, self.num_classes
        classes, labels, in_use = self.draw_classes(labels)
        return self.sampled_rows(self.table, classes, self.rows_per_class), labels, in_use, ops.shape(classes)[0]

    def get_config(self):
        return {**super().get_config(), **self.sampling_config()}
