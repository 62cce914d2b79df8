"""The base of every loss term: a Keras Layer that reads one model output and one target."""

import threading

import keras
import numpy as np
from keras import ops

from lossweave import _backend as backend
from lossweave import arguments
from lossweave.terms.check import InputCheck, check_class_rows, check_pair_rows

# What a term may declare (see Term): the outputs it reads, its run-time checks, what its weights weigh.
READS = (None, "embedding", "views")
CHECKS = (None, "class_rows", "pair_rows", "pair_targets")
WEIGHTS = ("sample", "tuple")
# What the hooks of one Term.call share (Term.remember / recall), per thread and term.
_CALLS = threading.local()


def _as_tensor(x):
    if isinstance(x, (np.ndarray, np.generic, list, tuple, int, float)):
        return ops.convert_to_tensor(x)
    return x


@keras.saving.register_keras_serializable(package="lossweave")
class Term(keras.layers.Layer):
    """A loss term: ``term(outputs, targets, sample_weight=None, training=None) -> scalar``.

    A term is a Layer so that any state it has (centers, class weights) is a
    tracked, saved Keras variable updated the way ``BatchNormalization``
    updates its statistics. **One protocol**: ``call`` does, once for every
    term, in this order

    1. the missing-label mask (``missing``, in ``__call__``): unlabelled rows get weight 0;
    2. the input checks the term declares (``input_checks``, when ``validate``):
       labels in range and integer, finite features; a failed check raises
       ``InvalidInputError`` (eagerly, or after an ``Objective`` step);
    3. the loss, from the one hook ``compute_loss(outputs, targets,
       sample_weight, training)``, set to 0 on a failed batch;
    4. in training, the state update from the hook ``update_state(outputs,
       targets, sample_weight)``, gated: on a failed batch no state moves
       (row updates of ``add_to_rows`` are masked, other variables the hook
       assigns are put back).

    A subclass is its formula (``compute_loss``, optionally ``update_state``),
    its defaults and what it declares it needs, as class attributes:

    - ``reads``: ``"embedding"`` (one ``(batch, dim)`` output), ``"views"``
      (a tuple of two ``(batch, dim)`` outputs of one dim) or ``None`` (any);
      checked when the term is built;
    - ``input_checks``: ``"class_rows"`` (class indices in ``[0,
      num_classes)``, sparse or one-hot, the width of the outputs when the
      term has no ``num_classes``), ``"pair_rows"`` (class ids >= 0, sparse),
      ``"pair_targets"`` (0/1 same/different targets) or ``None``; plus finite
      features for each;
    - ``weights_per``: ``"sample"`` for a term with one loss per row (its
      ``missing`` rows are left out of a mean over the labelled rows, as
      Keras averages masked losses) or ``"tuple"`` for a term over pairs,
      triplets or proxies (a ``missing`` row gets weight 0 and the mean counts
      the tuples of the labelled rows).

    **Sample weights** have one meaning for every term (``docs/sample_weight.md``):
    Keras's ``sum_over_batch_size`` extended to tuples. A sample's weight
    scales every term it anchors (its own loss, or each pair, triplet or
    anchor term whose anchor it is); denominators count and do not weigh;
    weights all equal to ``c`` give ``c`` times the unweighted loss; weight 0
    removes the sample from every tuple, as anchor and as partner.

    Args:
        on: name of the model output the term reads; ``None`` for a model with
            a single output; a tuple of names for a term that reads several
            outputs (it then receives a tuple of tensors).
        target: name of the target (key of the ``y`` dict given to ``fit``).
        missing: the target value that marks a sample without a label for this
            term (partial labels), e.g. ``-1`` or ``float("nan")``; such samples
            get weight 0 in this term only (see ``weights_per`` above).
        validate: run the declared input checks (a bad row then raises
            ``InvalidInputError``); bad rows never move state either way.
        **kwargs: Layer arguments (``name``, ``dtype``). Terms compute in
            float32 by default, also under a mixed-precision policy.
    """

    reads = None
    input_checks = None
    weights_per = "sample"
    needs_dim = False  # a term that builds a (rows, dim) variable needs the dim when it is built
    two_output_form = None  # the class that takes the two-output form of this loss, if one does

    def __init_subclass__(cls, **kwargs):
        """A term's declarations are checked when its class is defined (a typo fails at once)."""
        super().__init_subclass__(**kwargs)
        for name, allowed in (("reads", READS), ("input_checks", CHECKS), ("weights_per", WEIGHTS)):
            if getattr(cls, name) not in allowed:
                raise TypeError(
                    f"{cls.__name__}: the class attribute `{name}` must be one of {allowed}; "
                    f"received {getattr(cls, name)!r}."
                )

    def __init__(self, on=None, target="label", missing=None, validate=True, **kwargs):
        arguments.check_keywords(self, kwargs)
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.on = tuple(on) if isinstance(on, list) else on
        self.target = target
        self.missing = None if missing is None else arguments.number(missing, "missing", self, finite=False)
        self.validate = arguments.boolean(validate, "validate", self)
        if self.reads == "views" and not (isinstance(self.on, tuple) and len(self.on) == 2):
            raise ValueError(
                f"{type(self).__name__}: reads two outputs, on=(first, second); received on={on!r}."
            )
        if self.reads == "embedding" and isinstance(self.on, tuple):
            raise ValueError(
                f"{type(self).__name__}: reads one embedding output; received on={on!r}. Give the name of "
                f"one output" + (f", or use {self.two_output_form} for two outputs." if self.two_output_form else ".")
            )
        self._outputs_shape = None
        self.input_check = InputCheck()  # records a failed check inside an Objective step
        # Labels must never be autocast (float16 cannot hold class ids > 2048).
        self._convert_input_args = False

    def __getattr__(self, name):
        # Reached when normal lookup fails. The PyTorch backend's Layer is a torch Module,
        # whose own __getattr__ finds sublayers and parameters: ask it first.
        parent = getattr(super(), "__getattr__", None)
        if parent is not None:
            try:
                return parent(name)
            except AttributeError:
                pass
        if name.startswith("_") or self.__dict__.get("built", True):
            raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")
        # Say why a state variable is not there yet.
        raise AttributeError(
            f"{type(self).__name__} '{self.name}' has no attribute '{name}' yet: a term's state "
            f"(centers, class weights, proxies, memory) is created when the term is built, which "
            f"an Objective does at its first fit/evaluate, or when you call objective.build(input_shape) "
            f"(or term.build(embedding_shape)) yourself."
        )

    def __call__(self, outputs, targets, **kwargs):
        outputs, targets, kwargs = self._prepare(outputs, targets, kwargs)
        return super().__call__(outputs, targets, **kwargs)

    def call_in_step(self, outputs, targets, **kwargs):
        """The term's loss inside a train or test step: ``__call__``, lighter once built.

        A built float32 term needs nothing of ``Layer.__call__`` but its name
        scope (TensorFlow refuses a root scope such as a loss's ``_name``): no
        build, no autocast, no masks. Its ``call`` runs directly, which saves
        ~0.25 ms of Python per term per step on eager PyTorch (and nothing on
        the compiled backends, where it runs once, when the step is traced).
        """
        if not self.built or self.compute_dtype != self.variable_dtype:
            return self(outputs, targets, **kwargs)
        outputs, targets, kwargs = self._prepare(outputs, targets, kwargs)
        with keras.name_scope(self.name, caller=self):
            return self.call(outputs, targets, **kwargs)

    def _prepare(self, outputs, targets, kwargs):
        # With input conversion off, Keras takes only tensors as positional args:
        # convert NumPy arrays here, keeping their dtype (labels stay integers).
        outputs = keras.tree.map_structure(_as_tensor, outputs)
        targets = keras.tree.map_structure(_as_tensor, targets)
        self._check_not_empty(targets)
        if self.missing is not None:
            targets, kwargs["sample_weight"] = self._mask_missing(targets, kwargs.get("sample_weight"))
        return outputs, targets, kwargs

    def _check_not_empty(self, targets):
        """An empty batch is a data bug (a mean over it is 0/0): say so when it is traced."""
        shapes = [getattr(t, "shape", None) for t in keras.tree.flatten(targets)]
        ranks = [None if s is None else (s.rank if hasattr(s, "rank") else len(s)) for s in shapes]
        rows = [s[0] for s, rank in zip(shapes, ranks) if rank]
        if any(r == 0 for r in rows):
            raise ValueError(
                f"{type(self).__name__} '{self.name}': received an empty batch (0 rows); expected "
                f"at least one row. Drop empty batches from the data pipeline."
            )

    def _mask_missing(self, targets, sample_weight):
        """Give unlabelled samples weight 0 and a harmless target.

        ``weights_per="sample"``: the weights of the labelled samples are
        multiplied by ``batch / n_labelled``, so that the mean over the batch
        becomes the mean over the labelled samples. ``"tuple"``: weights are
        kept (tuple means count the tuples of the samples of non-zero weight).
        """
        values = ops.convert_to_tensor(targets)
        if "float" in str(values.dtype):
            absent = ops.isnan(values) if np.isnan(self.missing) else ops.equal(values, self.missing)
        elif np.isnan(self.missing):
            return targets, sample_weight  # integer targets cannot hold NaN
        else:
            absent = ops.equal(values, ops.cast(self.missing, values.dtype))
        targets = ops.where(absent, ops.zeros_like(values), values)
        if len(absent.shape) > 1:
            absent = ops.any(ops.reshape(absent, (ops.shape(absent)[0], -1)), axis=-1)
        present = ops.cast(ops.logical_not(absent), "float32")
        if self.weights_per == "sample":
            batch = ops.cast(ops.shape(present)[0], "float32")
            present = present * batch / ops.maximum(ops.sum(present), 1.0)
        if sample_weight is not None:
            present = present * ops.reshape(ops.cast(sample_weight, "float32"), (-1,))
        return targets, present

    # ------------------------------------------------------------ the protocol
    def call(self, outputs, targets, sample_weight=None, training=None):
        try:
            clean = self.check_inputs(outputs, targets) if self.validate and self.input_checks else None
            loss, assignments = self.loss_and_state(outputs, targets, sample_weight, training)
            if clean is not None:
                loss = ops.where(clean, loss, ops.zeros_like(loss))
            if training:
                for variable, value in assignments:  # a failed batch keeps the saved value
                    variable.assign(
                        value if clean is None else ops.where(clean, value, ops.convert_to_tensor(variable))
                    )
                self._gated_update(outputs, targets, sample_weight, clean)
            return loss
        finally:  # what this call's hooks shared lives for this call only
            _CALLS.__dict__.get("values", {}).pop(id(self), None)

    def remember(self, name, value):
        """Keep ``value`` for the other hooks of this call (and this thread) only: see ``recall``."""
        if not hasattr(_CALLS, "values"):
            _CALLS.values = {}
        _CALLS.values.setdefault(id(self), {})[name] = value

    def recall(self, name):
        """What a hook of this call ``remember``-ed under ``name``, or None.

        Per thread: tf.distribute traces every replica's step in a thread of
        its own, on the same term, and each replica must take the same path
        (the same collectives) as the others.
        """
        return _CALLS.__dict__.get("values", {}).get(id(self), {}).get(name)

    def checked_rows(self, outputs, targets):
        """What this call's class-row check computed (``terms.check.CheckedRows``) from these very inputs, or None.

        ``None`` when the check did not run (``validate=False``, another
        check) or ran on other tensors. A hook that would compute class
        indices, label validity or finite rows again reads them here.
        """
        rows = self.recall("checked_rows")
        if rows is None or rows.features is not outputs or rows.labels is not targets:
            return None
        return rows

    def compute_loss(self, outputs, targets, sample_weight, training):
        """The term's loss (a float32 scalar): the one hook every term implements."""
        raise NotImplementedError(f"{type(self).__name__} must implement compute_loss.")

    def loss_and_state(self, outputs, targets, sample_weight, training):
        """``(loss, ((variable, value), ...))``: the loss and the state values the same computation gave.

        A term whose state is a by-product of its loss (running statistics of
        the batch the loss used) returns them here instead of recomputing them
        in ``update_state``; the base assigns them in training, under the gate.
        By default: ``compute_loss`` and no values.
        """
        return self.compute_loss(outputs, targets, sample_weight, training), ()

    def update_state(self, outputs, targets, sample_weight):
        """Move the term's state after a training batch (the base gates it on the checks); no state by default."""

    def check_inputs(self, outputs, targets):
        """The declared run-time checks; returns the "batch is clean" flag (see ``lossweave.terms.check``)."""
        if self.input_checks == "class_rows":
            num_classes = getattr(self, "num_classes", None) or outputs.shape[-1]
            return check_class_rows(self, outputs, targets, num_classes)
        if targets is None:  # a term whose labels are optional (two views): check the features
            first = outputs[0] if isinstance(outputs, (tuple, list)) else outputs
            targets = ops.zeros((ops.shape(first)[0],), "int32")
        return check_pair_rows(self, outputs, targets, binary=self.input_checks == "pair_targets")

    def _gated_update(self, outputs, targets, sample_weight, clean):
        """``update_state`` that moves nothing when ``clean`` is false.

        Row updates (``add_to_rows`` of a table, O(batch x dim)) are masked
        (-0.0 keeps every bit); inside an ``Objective`` step they are queued
        again, for the step's own gate. Any other variable the hook assigns is
        put back to its value from before (a select of a small variable).
        """
        if type(self).update_state is Term.update_state:
            return  # a term without state
        if clean is None:
            self.update_state(outputs, targets, sample_weight)
            return
        plain = [v for v in self.non_trainable_weights if not backend.self_gated(v)]
        before = [ops.convert_to_tensor(v) for v in plain]
        with backend.deferred_rows() as pending:
            self.update_state(outputs, targets, sample_weight)
        for variable, indices, updates in pending:
            backend.add_to_rows(variable, indices, ops.where(clean, updates, -0.0))  # (-0.0 + x is x, bit for bit)
        for variable, old in zip(plain, before):
            variable.assign(ops.where(clean, ops.convert_to_tensor(variable), old))

    def build(self, outputs_shape):
        self._outputs_shape = tuple(outputs_shape)
        if self.reads == "embedding":
            self._check_embedding_shape("embeddings", outputs_shape)
        elif self.reads == "views":
            shapes = [tuple(s) for s in outputs_shape]
            for name, shape in zip(self.on, shapes):
                self._check_embedding_shape(f"output '{name}'", shape)
            if len(shapes) != 2 or shapes[0][-1] != shapes[1][-1]:
                raise ValueError(
                    f"{type(self).__name__} '{self.name}': received outputs of shapes {shapes}; expected two "
                    f"(batch, dim) outputs of the same dim for on={self.on!r}."
                )

    def _check_embedding_shape(self, what, shape):
        shape = tuple(shape)
        if len(shape) != 2 or (self.needs_dim and shape[-1] is None):
            raise ValueError(
                f"{type(self).__name__} '{self.name}': received {what} of shape {shape}; expected (batch, dim)"
                f"{' with a known dim' if self.needs_dim else ''}. Point `on` at the embedding output."
            )

    def get_build_config(self):
        if self._outputs_shape is None:
            return {}
        return {"outputs_shape": list(self._outputs_shape)}

    def build_from_config(self, config):
        if config and not self.built:
            self.build(tuple(config["outputs_shape"]))

    def get_config(self):
        config = super().get_config()
        config.update({"on": self.on, "target": self.target, "missing": self.missing, "validate": self.validate})
        return config
