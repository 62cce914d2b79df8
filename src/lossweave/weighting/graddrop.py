"""GradDrop: per element, the term gradients of one randomly chosen sign pass, the others drop."""

import keras
from keras import ops

from lossweave import arguments
from lossweave.ops import aggregators
from lossweave.ops.aggregators.graddrop import check_leak
from lossweave._seed_state import SavesSeedState
from lossweave.weighting._common import term_names
from lossweave.weighting.gradient import GradientWeighting
from lossweave.weighting.gradient_state import is_representation, term_rows


@keras.saving.register_keras_serializable(package="lossweave")
class GradDrop(SavesSeedState, GradientWeighting):
    """GradDrop: Gradient Sign Dropout.

    Chen, Ngiam, Huang, Luong, Kretzschmar, Chai & Anguelov, "Just Pick a
    Sign: Optimizing Deep Multitask Models with Gradient Sign Dropout",
    NeurIPS 2020, Eq. 1-3 and Algorithm 1: per element, the positive sign
    purity ``P = 1/2 (1 + sum_k G_k / sum_k |G_k|)`` (Eq. 1) against a
    uniform draw ``U`` picks a sign; the term gradients of that sign pass
    and the others are dropped (Eq. 2), ``leak_k`` of each passing anyway
    (Eq. 3).

    With ``Objective(representation=...)`` this is the paper's GradDrop, on
    the gradients with respect to the shared activations: the statistic
    ``G_k`` sums term k's gradient over the batch and one mask element
    serves the whole batch (LibMTL's ``GradDrop.py``). The paper also
    multiplies by ``sgn(A)``, the signs of the activations, before that sum
    (Eq. 1): in representation mode the strategy asks for them
    (``wants_activations``) and every train step passes the
    representation's value as ``activations=``; called without them (a
    custom loop) the plain batch sum is used. In parameter mode (no
    ``representation``) ``G_k`` is term k's gradient of each shared
    parameter, as torchjd's ``GradDrop`` over a Jacobian. That mode is
    meaningful: the paper's ``sgn(A)``-weighted batch sum stands for the
    sign of the gradient of a weight that reads ``A``; a parameter's own
    gradient is that sign exactly.

    The uniform draws come from a seed generator inside the compiled step,
    saved with the Objective (save, load and continue draws what a run
    straight through would). Logged weights: the kept fraction of each
    term, ``sum |keep_k grad_k| / sum |grad_k|`` (1: nothing of that term
    was dropped). See ``lossweave.ops.aggregators.graddrop``.

    Args:
        leak: in [0, 1], or one per term in ``setup`` order: the share of
            each term's gradient that passes whatever the sign (0 in the paper).
        seed: seed of the draws (an int, or None for a random one).

    Example:
        >>> import numpy as np
        >>> w = GradDrop(leak=1.0, seed=0)                  # leak 1: nothing is dropped
        >>> w.setup(["a", "b"])
        >>> w.build_rows([("trunk/kernel", (2,))])
        >>> rows = [np.array([[1.0, -2.0], [3.0, 1.0]], "float32")]
        >>> updates, kept = w.aggregate_rows(rows, None, None, 0, True)
        >>> [float(v) for v in updates[0]], [float(v) for v in kept]
        ([4.0, -1.0], [1.0, 1.0])
    """

    def __init__(self, leak=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.leak = check_leak(leak)
        self.seed = arguments.seed(seed, "GradDrop")

    def setup(self, term_names):
        check_leak(self.leak, len(term_names))
        self.seed_generator = keras.random.SeedGenerator(self.seed, name="graddrop_seed")
        super().setup(term_names)

    def build_rows(self, entries):
        super().build_rows(entries)
        self.batched = is_representation(self.row_entries)

    @property
    def wants_activations(self):
        """Representation mode: the train step passes the representation ``A`` for ``sgn(A)``."""
        return bool(getattr(self, "batched", False))

    def update_rows(self, state, losses, step, training, rows, gramian, activations=None):
        rows = term_rows(self, rows)
        if not rows:  # no shared entry (a single term): nothing to drop
            return ([], ops.ones((len(term_names(self)),), "float32")), state
        out = aggregators.graddrop(
            rows, seed=self.seed_generator, leak=self.leak, batched=self.batched,
            activations=activations if self.batched else None,
        )
        return out, state

    def get_config(self):
        config = super().get_config()
        config.update({"leak": self.leak, "seed": self.seed})
        return config
