"""Gradient-level strategies: the K term gradients (through their Gramian) become one update.

The protocol beside the loss-level ``Weighting``: a strategy with
``level = "gradient"`` implements ``aggregate(gramian, losses, step,
training) -> (K,) weights`` and the train step (``lossweave.trainer``) applies
``update = sum_k w_k g_k`` to the variables the terms share. ``gramian`` is
``G = J J^T`` of the (K, shared params) Jacobian, ``losses`` the (K,) term
losses, ``step`` the Objective's step counter. The weights are logged as
``weight/<term>`` and the gradient cosines as ``cosine/<a>/<b>``. Every
strategy here needs only the Gramian, as in torchjd: its cost does not grow
with the number of parameters beyond forming G.

The logged total, ``loss`` in training and ``val_loss`` in evaluation, is the
same quantity: the plain sum of the term losses (``Mean``: their mean) plus
the model's regularizers. The weights a strategy gives the gradients change
every step and are logged as ``weight/<term>``; their weighted sum of the
losses is not a quantity the step minimises, so it is not logged.

The math is in ``lossweave.ops.aggregators`` (pure functions over a Jacobian
or its Gramian, for custom training loops).
"""

import keras
from keras import ops

from lossweave import arguments
from lossweave.ops import aggregators
from lossweave._seed_state import SavesSeedState
from lossweave.weighting._common import weighted_sum
from lossweave.weighting.base import Weighting


@keras.saving.register_keras_serializable(package="lossweave")
class GradientWeighting(Weighting):
    """Base of the gradient-level strategies.

    Most strategies implement ``aggregate`` only (the Gramian to the weights).
    A strategy that needs the term gradients themselves (per-layer groups,
    elementwise masks, running averages of the gradients) overrides
    ``aggregate_rows`` instead, and ``build_rows`` to create state shaped
    like the shared variables.
    """

    level = "gradient"

    def aggregate(self, gramian, losses, step, training):
        """``(K,)`` float32 weights of the term gradients; see the module docstring."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement aggregate() (or aggregate_rows())."
        )

    def build_rows(self, entries):
        """Called once, before the first step, with the shared entries the rows will have.

        ``entries`` is a list of ``(path, shape)``: one per shared variable
        (parameter mode, in ``objective.trainable_variables`` order) or one
        ``("representation/<name>", shape with a None batch)`` in
        representation mode. State created here must be non-trainable (the
        strategy's own rule moves it, not the optimizer).
        """
        self.row_entries = list(entries)

    def aggregate_rows(self, rows, gramian, losses, step, training):
        """``(updates, weights)``: the update of each shared entry from its term gradients.

        Args:
            rows: one float32 ``(K, *shape)`` tensor per entry of ``build_rows``
                (row k: term k's gradient of the entry, or of the
                representation: ``dL_k/dz``).
            gramian: ``(K, K)`` Gramian of the rows, summed over the entries.
            losses: ``(K,)`` term losses; ``step``: the step counter.

        Returns:
            One ``(*shape)`` update per entry (in representation mode the
            cotangent sent back through the trunk), and ``(K,)`` weights
            logged as ``weight/<term>``. Here: ``aggregate``'s weights applied
            to every entry, ``sum_k w_k rows[k]``.
        """
        weights = self.aggregate(gramian, losses, step, training)
        w = ops.cast(weights, "float32")
        return [ops.tensordot(w, ops.cast(r, "float32"), axes=1) for r in rows], weights

    def combine(self, losses, step=None, training=False):
        """The logged total (training and evaluation): the plain sum, every weight 1."""
        return super().combine(losses, step, training)


@keras.saving.register_keras_serializable(package="lossweave")
class Sum(GradientWeighting):
    """The sum of the term gradients (every weight 1): the same update as ``Fixed`` weights 1.

    The baseline of the gradient-level strategies, through the same train step.

    Example:
        >>> import numpy as np
        >>> [float(w) for w in Sum().aggregate(np.eye(3, dtype="float32"), None, 0, True)]
        [1.0, 1.0, 1.0]
    """

    def aggregate(self, gramian, losses, step, training):
        return ops.ones((ops.shape(gramian)[0],), "float32")


@keras.saving.register_keras_serializable(package="lossweave")
class Mean(GradientWeighting):
    """The mean of the term gradients (every weight 1/K); the evaluation total is the mean loss.

    Example:
        >>> import numpy as np
        >>> [float(w) for w in Mean().aggregate(np.eye(4, dtype="float32"), None, 0, True)]
        [0.25, 0.25, 0.25, 0.25]
    """

    def aggregate(self, gramian, losses, step, training):
        k = ops.shape(gramian)[0]
        return ops.ones((k,), "float32") / k

    def combine(self, losses, step=None, training=False):
        weights = {name: ops.ones((), "float32") / len(losses) for name in losses}
        return weighted_sum(losses, weights), weights


@keras.saving.register_keras_serializable(package="lossweave")
class MGDA(GradientWeighting):
    """MGDA: the min-norm point of the convex hull of the term gradients.

    Sener & Koltun, "Multi-Task Learning as Multi-Objective Optimization",
    NeurIPS 2018: the weights solve Eq. 3, ``min_w ||sum_k w_k g_k||^2`` over
    the simplex (closed form for two terms, Algorithm 1; exactly over the
    simplex's faces for 3 to 8 terms, one batched solve; Frank-Wolfe for more,
    Algorithm 2), after the gradient normalisation of the authors' code. The
    update ``d`` is a common descent direction: ``d . g_k >= ||d||^2`` for
    every k (0 at a Pareto-stationary point). With ``representation=`` on the
    Objective this is MGDA-UB (Sec. 3.3). See
    ``lossweave.ops.aggregators.mgda_weights`` for the solver's budget and
    tolerance.

    Args:
        normalization: ``"none"``, ``"l2"``, ``"loss"`` or ``"loss+"`` (the
            authors' ``gradient_normalizers``).
        iterations: Frank-Wolfe iterations (fixed budget inside the compiled
            step), used above 8 terms only.

    Example:
        >>> import numpy as np
        >>> g = np.array([[1.0, 0.0], [0.0, 1.0]], "float32")
        >>> [round(float(w), 3) for w in MGDA().aggregate(g @ g.T, np.ones(2, "float32"), 0, True)]
        [0.5, 0.5]
    """

    def __init__(self, normalization="none", iterations=250, **kwargs):
        super().__init__(**kwargs)
        self.normalization = arguments.choice(normalization, aggregators.NORMALIZATIONS, "normalization", "MGDA")
        self.iterations = arguments.positive_int(iterations, "iterations", "MGDA")

    def aggregate(self, gramian, losses, step, training):
        return aggregators.mgda_weights(
            gramian, losses=losses, normalization=self.normalization, iterations=self.iterations
        )

    def get_config(self):
        config = super().get_config()
        config.update({"normalization": self.normalization, "iterations": self.iterations})
        return config


@keras.saving.register_keras_serializable(package="lossweave")
class PCGrad(SavesSeedState, GradientWeighting):
    """PCGrad: project each term gradient off the ones it conflicts with, then sum.

    Yu et al., "Gradient Surgery for Multi-Task Learning", NeurIPS 2020,
    Algorithm 1: for each term, in a random order of the other terms, a
    conflicting component (``g_i . g_j < 0``) is removed; the projected
    gradients are summed. The projected gradients are linear combinations of
    the originals, so the weights come from the Gramian alone
    (``lossweave.ops.aggregators.pcgrad_weights``). The random orders are
    drawn inside the compiled step from a seed generator that is saved with
    the Objective: save, load and continue draws the orders a run straight
    through would have drawn.

    Args:
        seed: seed of the orders (an int, or None for a random one).

    Example:
        >>> import numpy as np
        >>> g = np.array([[1.0, 0.0], [-1.0, 1.0]], "float32")
        >>> w = PCGrad(seed=0)
        >>> w.setup(["a", "b"])
        >>> [round(float(v), 3) for v in w.aggregate(g @ g.T, None, 0, True)]
        [2.0, 1.5]
    """

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed = arguments.seed(seed, "PCGrad")

    def setup(self, term_names):
        self.seed_generator = keras.random.SeedGenerator(self.seed, name="pcgrad_seed")
        super().setup(term_names)

    def aggregate(self, gramian, losses, step, training):
        return aggregators.pcgrad_weights(gramian, seed=self.seed_generator)

    def get_config(self):
        config = super().get_config()
        config["seed"] = self.seed
        return config
