"""Partial FC class-center sampling as one hook shared by the margin terms and the proxy losses.

A term that owns a ``(num_classes * rows_per_class, dim)`` table and takes
``sample_rate < 1`` computes each training step's logits over the sampled
rows only (see :mod:`lossweave.ops.sampling`): ``draw_classes`` picks the
classes from the term's own ``keras.random.SeedGenerator`` (a Layer
attribute: its state travels with the compiled step, moves once per step
and is saved with the term), ``sampled_rows`` reads their rows of the table
(so only those rows get a gradient). Evaluation uses every class.
``sample_rate=1.0`` creates no generator and leaves the term's code path as
it was.
"""

import keras
from keras import ops

from lossweave import _backend as backend
from lossweave import arguments
from lossweave._seed_state import SavesSeedState
from lossweave.ops import sampling as sampling_ops



def replica_gather():
    """In a ``tf.distribute`` step of several replicas, a function giving a tensor's rows of every
    replica (concatenated along axis 0); else ``None`` (one device, JAX, PyTorch: nothing to gather).

    ``all_gather`` hands back its own argument when there is one replica.
    """
    probe = (None,)
    if backend.all_gather(probe) is probe:
        return None

    def gather(tensor):
        (rows,) = backend.all_gather((tensor,))
        return rows

    return gather


class ClassSampling(SavesSeedState):
    """Mixin of a term with a class table: ``sample_rate``, ``seed`` and ``negative_threshold``.

    The host class calls ``init_sampling`` in its constructor, asks
    ``samples(training)`` whether this call samples, and then
    ``draw_classes(labels)`` and ``sampled_rows(table, classes)``.
    ``sampling_config()`` holds the three arguments for ``get_config``.
    """

    def init_sampling(self, sample_rate=1.0, seed=None, negative_threshold=None):
        self.sample_rate = arguments.number(
            sample_rate, "sample_rate", self, low=0.0, low_open=True, high=1.0,
            hint="It is the fraction of the classes each training step computes logits for: use 1.0 for "
                 "every class (no sampling) or e.g. 0.1 as in Partial FC.",
        )
        self.seed = arguments.seed(seed, self)
        self.negative_threshold = arguments.optional(
            arguments.number, negative_threshold, "negative_threshold", self, low=0.0, high=1.0,
            low_open=True, high_open=True,
            hint="It is None (off) or the cosine above which a negative class's logit is set to 0 "
                 "(Partial FC, CVPR 2022: 0.4).",
        )
        self.sample_budget = sampling_ops.sample_budget(self.num_classes, self.sample_rate)
        # Only a sampling term owns a generator: at 1.0 the term's variables are as before.
        self.seed_generator = (
            keras.random.SeedGenerator(self.seed, name="class_sampling_seed") if self.sample_rate < 1.0 else None
        )

    def samples(self, training):
        """Whether a call with this ``training`` flag samples classes (a Python bool)."""
        return bool(training) and self.seed_generator is not None

    def filters(self, training):
        """Whether a call with this ``training`` flag filters negatives above the threshold."""
        return bool(training) and self.negative_threshold is not None

    def draw_classes(self, labels):
        """``(classes, remapped, mask)`` of one step (see :func:`lossweave.ops.sample_classes`).

        Advances the term's seed generator. Under ``tf.distribute`` the
        positives are those of the global batch, so every replica (whose
        generator state is the same) draws the same classes.
        """
        return sampling_ops.sample_classes(
            labels, self.num_classes, budget=self.sample_budget, seed=self.seed_generator, gather=replica_gather()
        )

    @staticmethod
    def sampled_rows(table, classes, rows_per_class=1):
        """Rows of ``table`` for ``classes``: all ``rows_per_class`` rows of each (sub-centers), in order."""
        classes = ops.cast(classes, "int32")
        if rows_per_class > 1:
            offsets = ops.arange(rows_per_class, dtype="int32")
            classes = ops.reshape(ops.expand_dims(classes, -1) * rows_per_class + offsets, (-1,))
        return backend.gather_rows(table, classes)

    def sampling_config(self):
        return {"sample_rate": self.sample_rate, "seed": self.seed, "negative_threshold": self.negative_threshold}
