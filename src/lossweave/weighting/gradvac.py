"""GradVac: the term gradients' cosines raised to running targets, per model, layer or variable."""

import keras
import numpy as np
from keras import ops

from lossweave import arguments
from lossweave.ops import aggregators
from lossweave.ops.aggregators.gradvac import check_beta
from lossweave._seed_state import SavesSeedState
from lossweave.weighting.gradient import GradientWeighting
from lossweave.weighting.gradient_state import term_rows

GROUPINGS = ("whole", "layer", "variable")


def group_indices(entries, grouping):
    """``(groups, count)``: the group index of each entry and the number of groups.

    ``"whole"``: one group; ``"variable"``: one per entry; ``"layer"``: one
    per layer, the entries whose paths share the prefix before the last
    ``"/"`` (``"trunk/kernel"`` and ``"trunk/bias"``), in order of first
    appearance. Without entries there is one (empty) group.

    Example:
        >>> group_indices([("a/kernel", (2, 2)), ("a/bias", (2,)), ("b/kernel", (2, 1))], "layer")
        ([0, 0, 1], 2)
    """
    if grouping == "whole" or not entries:
        return [0] * len(entries), 1
    if grouping == "variable":
        return list(range(len(entries))), len(entries)
    layers = {}
    groups = [layers.setdefault(path.rsplit("/", 1)[0], len(layers)) for path, _ in entries]
    return groups, len(layers)


@keras.saving.register_keras_serializable(package="lossweave")
class GradVac(SavesSeedState, GradientWeighting):
    """GradVac: each pair's gradient cosine raised to a running target (Gradient Vaccine).

    Wang, Tsvetkov, Firat & Cao, "Gradient Vaccine: Investigating and
    Improving Multi-task Optimization in Massively Multilingual Models",
    ICLR 2021, the GradVac update rule (Algorithm 1, Eq. 2-3): for each term
    i and each other term j in a random order, when the cosine of
    ``g_i^PC`` and ``g_j`` is below the target ``phi_hat_ij``, a multiple of
    ``g_j`` is added that brings it to the target (Eq. 2); every target
    follows its pair's cosines by an EMA with rate ``beta`` (Eq. 3); the
    update is ``sum_i g_i^PC``. PCGrad is the case of targets 0.

    The targets are per group (the paper's model components): ``grouping``
    ``"whole"`` (one group: LibMTL's ``whole_model``), ``"layer"`` (the
    shared variables of one layer: their paths' prefix before the last
    ``"/"``) or ``"variable"`` (LibMTL's ``all_matrix``). They live in one
    non-trainable ``(groups, K, K)`` variable created in ``build_rows`` and
    saved with the Objective; the random orders are drawn inside the
    compiled step from a seed generator that is saved too, so save, load and
    continue is the run straight through. Logged weights: each term's
    combination weight, averaged over the groups. In representation mode
    there is one group (the representation). See
    ``lossweave.ops.aggregators.gradvac_weights``.

    Args:
        beta: EMA rate of the targets, in [0, 1]. The default 0.5 is
            LibMTL's and torchjd's; the paper's experiments use 1e-2
            (slower targets, for runs of hundreds of thousands of steps).
        grouping: ``"whole"``, ``"layer"`` or ``"variable"``.
        seed: seed of the orders (an int, or None for a random one).

    Example:
        >>> import numpy as np
        >>> w = GradVac(seed=0)
        >>> w.setup(["a", "b"])
        >>> w.build_rows([("trunk/kernel", (2,))])
        >>> rows = [np.array([[1.0, 0.0], [-1.0, 1.0]], "float32")]   # targets 0: PCGrad
        >>> updates, weights = w.aggregate_rows(rows, None, None, 0, True)
        >>> [round(float(v), 4) for v in updates[0]], [round(float(v), 4) for v in weights]
        ([0.5, 1.5], [2.0, 1.5])
        >>> [round(float(v), 4) for v in w.targets[0, 0]]         # half way to cos = -1/sqrt(2)
        [0.0, -0.3536]
    """

    def __init__(self, beta=0.5, grouping="whole", seed=None, **kwargs):
        super().__init__(**kwargs)
        self.beta = check_beta(beta)
        self.grouping = arguments.choice(grouping, GROUPINGS, "grouping", "GradVac")
        self.seed = arguments.seed(seed, "GradVac")

    def setup(self, term_names):
        self.seed_generator = keras.random.SeedGenerator(self.seed, name="gradvac_seed")
        super().setup(term_names)

    def init_rows(self, term_names, entries):
        self.groups, count = group_indices(entries, self.grouping)
        k = len(term_names)
        return {"targets": np.zeros((count, k, k), "float32")}

    def update_rows(self, state, losses, step, training, rows, gramian, activations=None):
        targets, updates, weights = aggregators.gradvac(
            state["targets"], term_rows(self, rows), self.beta, self.groups, seed=self.seed_generator
        )
        return (updates, ops.mean(weights, axis=0)), {"targets": targets}

    def get_config(self):
        config = super().get_config()
        config.update({"beta": self.beta, "grouping": self.grouping, "seed": self.seed})
        return config
