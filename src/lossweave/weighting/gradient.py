"""Gradient-level strategies: the K term gradients (through their Gramian) become one update.

The protocol is ``lossweave.weighting.base``'s at the level ``"gradient"``:
a pure ``update(state, losses, step, training, gramian) -> (weights,
new_state)`` gives the ``(K,)`` weights of the term gradients and the train
step (``lossweave.trainer``) applies ``update = sum_k w_k g_k`` to the
variables the terms share. ``gramian`` is ``G = J J^T`` of the (K, shared
params) Jacobian, ``losses`` the (K,) term losses, ``step`` the Objective's
step counter. The weights are logged as ``weight/<term>`` and the gradient
cosines as ``cosine/<a>/<b>``. Every strategy in this module needs only the
Gramian, as in torchjd: its cost does not grow with the number of
parameters beyond forming G.

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
from lossweave.ops import weighting as rules
from lossweave._seed_state import SavesSeedState
from lossweave.weighting.base import Weighting


@keras.saving.register_keras_serializable(package="lossweave")
class GradientWeighting(Weighting):
    """Base of the gradient-level strategies (``level = "gradient"``).

    Most strategies implement ``update(state, losses, step, training,
    gramian) -> (weights, new_state)`` only (the Gramian to the weights). A
    strategy that needs the term gradients themselves (per-layer groups,
    elementwise masks, running averages of the gradients) implements
    ``update_rows`` instead, and ``init_rows`` for state shaped like the
    shared entries. The Layer's entry points ``aggregate`` and
    ``aggregate_rows`` read the state, call the rule and assign the state it
    returns; the train step calls ``aggregate_rows``.

    Attributes:
        wants_activations: whether the train step passes the
            representation's value to ``aggregate_rows`` (``activations=``):
            GradDrop's ``sgn(A)`` in representation mode.
        needs_rows: whether the rule reads the term gradients themselves
            (it implements ``update_rows``), not only their Gramian; a
            strategy that needs only the Gramian can run in
            ``Objective(gramian_blocks=True)``, which never holds the K
            gradients at once.
    """

    level = "gradient"
    setup_optional = True
    wants_activations = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "aggregate" in vars(cls) and "update" not in vars(cls):
            # A strategy written for the protocol of earlier releases (its own aggregate):
            # the rule is that method, its state its own business.
            def update(self, state, losses, step, training, gramian, _aggregate=vars(cls)["aggregate"]):
                return _aggregate(self, gramian, losses, step, training), state

            cls.update = update

    @property
    def needs_rows(self):
        return type(self).update_rows is not GradientWeighting.update_rows

    # ------------------------------------------------------------- protocol
    def update(self, state, losses, step, training, gramian):
        """``((K,) weights, new_state)`` from the Gramian (pure); see the module docstring."""
        raise NotImplementedError(f"{type(self).__name__} must implement update() (or update_rows()).")

    def init_rows(self, term_names, entries):
        """``{variable name: initial value}`` of state shaped like the shared entries (pure; here none)."""
        return {}

    def update_rows(self, state, losses, step, training, rows, gramian, activations=None):
        """``((updates, weights), new_state)``: the update of each shared entry from its term gradients (pure).

        Args:
            state: the strategy's state (``init`` and ``init_rows``).
            losses: ``(K,)`` term losses; ``step``: the step counter.
            rows: one float32 ``(K, *shape)`` tensor per entry of
                ``build_rows`` (row k: term k's gradient of the entry, or of
                the representation: ``dL_k/dz``).
            gramian: ``(K, K)`` Gramian of the rows, summed over the entries.
            activations: the representation's value, one ``(batch,
                *features)`` tensor per entry, when ``wants_activations``.

        Returns:
            One ``(*shape)`` update per entry (in representation mode the
            cotangent sent back through the trunk), ``(K,)`` weights logged
            as ``weight/<term>``, and the new state. Here: ``update``'s
            weights applied to every entry, ``sum_k w_k rows[k]``.
        """
        weights, state = self.update(state, losses, step, training, gramian)
        w = ops.cast(weights, "float32")
        return ([ops.tensordot(w, ops.cast(r, "float32"), axes=1) for r in rows], weights), state

    # ---------------------------------------------------------------- Layer
    def build_rows(self, entries):
        """Called once, before the first step, with the shared entries the rows will have.

        ``entries`` is a list of ``(path, shape)``: one per shared variable
        (parameter mode, in ``objective.trainable_variables`` order) or one
        ``("representation/<name>", shape with a None batch)`` in
        representation mode. ``init_rows``'s state is created here
        (non-trainable: the strategy's rule moves it, not the optimizer);
        built again with the same entries, the state is kept.
        """
        entries = list(entries)
        if getattr(self, "row_entries", None) == entries and self._row_state:
            return
        initial = self.init_rows(self.term_names, entries)
        self.row_entries = entries
        self._create_state(initial, rows=True)

    def aggregate(self, gramian, losses, step, training):
        """The ``(K,)`` float32 weights of the term gradients (the rule, its new state assigned)."""
        before = self.state_values()
        weights, state = self.update(before, losses, step, training, gramian)
        self.assign_state(state, before)
        return weights

    def aggregate_rows(self, rows, gramian, losses, step, training, activations=None):
        """``(updates, weights)`` of ``update_rows`` (its new state assigned): what the train step calls."""
        before = self.state_values()
        (updates, weights), state = self.update_rows(before, losses, step, training, rows, gramian, activations)
        self.assign_state(state, before)
        return updates, weights

    def total_weights(self, k):
        """The weights of the logged total (training and evaluation): the plain sum, every weight 1."""
        return [ops.ones((), "float32")] * k

    def combine(self, losses, step=None, training=False):
        """The logged total and its weights: ``sum_k L_k`` (``Mean``: the mean); no state moves."""
        names = self.names_of(losses)
        weights = self.total_weights(len(names))
        return rules.weighted_total([losses[n] for n in names], weights), dict(zip(names, weights))


@keras.saving.register_keras_serializable(package="lossweave")
class Sum(GradientWeighting):
    """The sum of the term gradients (every weight 1): the same update as ``Fixed`` weights 1.

    The baseline of the gradient-level strategies, through the same train step.

    Example:
        >>> import numpy as np
        >>> [float(w) for w in Sum().aggregate(np.eye(3, dtype="float32"), None, 0, True)]
        [1.0, 1.0, 1.0]
    """

    setup_optional = True

    def update(self, state, losses, step, training, gramian):
        return ops.ones((ops.shape(gramian)[0],), "float32"), state


@keras.saving.register_keras_serializable(package="lossweave")
class Mean(GradientWeighting):
    """The mean of the term gradients (every weight 1/K); the evaluation total is the mean loss.

    Example:
        >>> import numpy as np
        >>> [float(w) for w in Mean().aggregate(np.eye(4, dtype="float32"), None, 0, True)]
        [0.25, 0.25, 0.25, 0.25]
    """

    setup_optional = True

    def update(self, state, losses, step, training, gramian):
        k = ops.shape(gramian)[0]
        return ops.ones((k,), "float32") / k, state

    def total_weights(self, k):
        return [ops.ones((), "float32") / k] * k


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

    def update(self, state, losses, step, training, gramian):
        weights = aggregators.mgda_weights(
            gramian, losses=losses, normalization=self.normalization, iterations=self.iterations
        )
        return weights, state

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

    def update(self, state, losses, step, training, gramian):
        return aggregators.pcgrad_weights(gramian, seed=self.seed_generator), state

    def get_config(self):
        config = super().get_config()
        config["seed"] = self.seed
        return config
