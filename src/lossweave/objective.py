"""``Objective``: a ``keras.Model`` that wraps the user's model and owns the loss terms."""

import functools

import keras
from keras import ops

from lossweave import _backend as backend
from lossweave import arguments
from lossweave import trainer
from lossweave._keras_compat import scale_loss_for_distribution
from lossweave.metrics.means import NamedMeans
from lossweave.terms.base import Term
from lossweave.terms.check import TermsFiniteCheck
from lossweave.weighting.base import Weighting
from lossweave.weighting.fixed import Fixed

SINGLE_OUTPUT = None  # the `on` of a term reading a single-output model


def _batch_size(x):
    return ops.shape(next(t for t in keras.tree.flatten(x) if t is not None))[0]


def _resolve_metric(metric):
    if isinstance(metric, str) and metric.lower() in ("accuracy", "acc"):
        from lossweave.metrics.logits import LogitsAccuracy

        return LogitsAccuracy()
    resolved = keras.metrics.get(metric)
    if not isinstance(resolved, keras.metrics.Metric):
        resolved = keras.metrics.MeanMetricWrapper(resolved, name=getattr(resolved, "__name__", None))
    return resolved


@keras.saving.register_keras_serializable(package="lossweave")
class Objective(keras.Model):
    """Train a model on a sum of loss terms with plain ``compile``/``fit``.

    The Objective holds the user's model as a sub-layer and computes its loss
    from ``terms`` (Layers that may own state, such as centers) combined by a
    ``weighting`` strategy, plus the model's own losses (regularizers). Each
    term reads one model output (``term.on``) and one target (``term.target``,
    a key of the ``y`` dict given to ``fit``). Every term's loss and weight is
    logged as ``loss/<term>`` and ``weight/<term>`` (with a gradient-level
    strategy also ``cosine/<a>/<b>``, the cosine of two terms' gradients); an
    evaluation logs the losses only (``val_loss/<term>``): it has no gradients,
    and its weights would say nothing new. ``loss`` and ``val_loss`` are the
    same quantity: with a loss-level strategy the weighted sum it minimises,
    with a gradient-level one the plain sum of the term losses (``Mean``: their
    mean); both plus the model's own losses.

    A step fails, raising ``lossweave.InvalidInputError`` after it and
    changing no state (weights, optimizer slots, centers, the strategy's
    state), when a term's input check fails (bad labels, NaN/Inf features)
    or when any term's loss is NaN or Inf (a NaN regression target, an
    overflow); the message names the term.

    ``objective.model`` stays the plain inference model: it takes no labels.
    Saving the Objective saves the model, the terms' state, the weighting's
    state and the optimizer in one ``.keras`` file.

    Args:
        model: a Keras model whose outputs the terms read (a dict of named
            outputs, a list in ``model.output_names`` order, or one tensor).
        terms: dict of term name -> ``lossweave.terms.Term``.
        weighting: a ``lossweave.weighting.Weighting``; default: every weight 1.
            A gradient-level strategy (``MGDA``, ``PCGrad``, ``Mean``, ``Sum``)
            combines the terms' gradients instead of their losses: see
            ``lossweave.trainer``.
        shared: for gradient-level strategies, the variables the terms share
            (layers, layer names, variables or variable paths). Default: found
            from a functional model's graph (a variable is shared when the
            outputs of two or more terms depend on it); required for a
            subclassed model.
        representation: for gradient-level strategies, the name of a model
            output holding the shared features: the term gradients are taken
            with respect to it (MGDA-UB, Sener & Koltun 2018) and one backward
            pass carries their combination through the trunk.
        gramian_blocks: for gradient-level strategies that need only the
            Gramian (UPGrad, MGDA, PCGrad, ...), in parameter mode: form the
            Gramian block by block of the shared variables and apply one
            more backward pass of ``sum_k w_k L_k``, so that the K term
            gradients are never all held (memory K x the largest shared
            variable instead of K x all of them; more backward work). Same
            update. See ``lossweave.trainer`` and docs/gradient_methods.md.

    Example:
        >>> import keras, numpy as np, lossweave as lw
        >>> inputs = keras.Input((4,))
        >>> emb = keras.layers.Dense(2)(inputs)
        >>> model = keras.Model(inputs, {"embedding": emb, "logits": keras.layers.Dense(3)(emb)})
        >>> objective = lw.Objective(model, {
        ...     "softmax": lw.terms.SoftmaxCrossEntropy(on="logits"),
        ...     "center": lw.terms.CenterLoss(num_classes=3, alpha=0.5, on="embedding")},
        ...     weighting=lw.weighting.Fixed({"center": 0.003}))
        >>> objective.compile(optimizer="adam", metrics={"logits": ["accuracy"]})
        >>> x, y = np.random.rand(32, 4).astype("float32"), np.arange(32) % 3
        >>> history = objective.fit(x, {"label": y}, epochs=1, verbose=0)
        >>> sorted(k for k in history.history if "/" in k)
        ['loss/center', 'loss/softmax', 'weight/center', 'weight/softmax']
    """

    def __init__(self, model, terms, weighting=None, shared=None, representation=None, gramian_blocks=False,
                 **kwargs):
        arguments.check_keywords(self, kwargs)
        super().__init__(**kwargs)
        if not isinstance(model, keras.Model):
            raise TypeError(f"Objective: `model` must be a keras.Model; received {type(model).__name__}.")
        if not isinstance(terms, dict) or not terms:
            raise ValueError(
                "Objective: `terms` must be a non-empty dict of name -> lossweave term; "
                f"received {terms!r}."
            )
        for name, term in terms.items():
            if not isinstance(name, str) or not name or "/" in name:
                raise ValueError(f"Objective: term names must be non-empty strings without '/'; received {name!r}.")
            if not isinstance(term, Term):
                raise TypeError(
                    f"Objective: term '{name}' is a {type(term).__name__}; expected a "
                    f"lossweave.terms.Term (wrap a Keras loss in lossweave.terms.Loss)."
                )
        for name, term in terms.items():
            if not term.built:
                term.name = name  # errors and variable paths then say "center", not "center_loss_3"
        self.model = model
        self.terms = dict(terms)
        self.weighting = weighting if weighting is not None else Weighting()
        if not isinstance(self.weighting, Weighting):
            raise TypeError(
                f"Objective: `weighting` must be a lossweave.weighting.Weighting; received "
                f"{type(weighting).__name__}. For constant weights use lossweave.weighting.Fixed(dict)."
            )
        self.weighting.setup(list(self.terms))
        self.shared = None if shared is None else list(shared)
        self.representation = representation
        if (shared is not None or representation is not None) and not self.gradient_level:
            raise ValueError(
                f"Objective: `shared` and `representation` apply to gradient-level strategies "
                f"(lossweave.weighting.MGDA, PCGrad, Mean, Sum); weighting="
                f"{type(self.weighting).__name__} combines losses. Drop them or pick such a strategy."
            )
        self.gramian_blocks = trainer.check_gramian_blocks(self, gramian_blocks)
        self._check_outputs()
        self.step_counter = self.add_weight(
            name="step", shape=(), dtype="int32", initializer="zeros", trainable=False
        )
        names = list(self.terms)
        # The pairs (i, j) whose gradient cosine a gradient-level step logs.
        self.cosine_pairs = []
        # A NaN or Inf loss (or, gradient level, gradient) of any term fails the step.
        self.loss_check = TermsFiniteCheck(names, "loss")
        self.gradient_check = None
        self._gradient_plan = None
        if self.gradient_level:
            self.cosine_pairs = [(i, j) for i in range(len(names)) for j in range(i + 1, len(names))]
            self.gradient_check = TermsFiniteCheck(names, "gradient")
        # Two metrics of vector state for all the logs (two variable updates each per
        # step), not one Mean per logged scalar. Weights and cosines are logged in
        # training only: an evaluation has no gradients and its weights say nothing new.
        self.loss_means = NamedMeans([f"loss/{n}" for n in names], name="term_losses")
        self.weight_means = NamedMeans(
            [f"weight/{n}" for n in names] + [f"cosine/{names[i]}/{names[j]}" for i, j in self.cosine_pairs],
            name="term_weights",
        )
        self._evaluating = False

    @property
    def gradient_level(self):
        """Whether the weighting combines term gradients: its type's level (``Weighting.level``)."""
        return self.weighting.level == "gradient"

    def gradient_plan(self):
        """The shared/specific split of the trainable variables (``lossweave.trainer.Plan``), found once."""
        if self._gradient_plan is None:
            self._gradient_plan = trainer.Plan(self)
            self.weighting.build_rows(self._gradient_plan.entries)
        return self._gradient_plan

    # ---------------------------------------------------------------- structure
    def _output_names(self):
        """Names the terms can read: dict keys, else ``model.output_names``; None if unknown."""
        try:
            structure = self.model.output
        except (AttributeError, ValueError):
            return None  # a subclassed model: outputs are checked at the first call
        if isinstance(structure, dict):
            return list(structure)
        return list(getattr(self.model, "output_names", None) or [])

    def _check_outputs(self):
        names = self._output_names()
        if names is None:
            return
        for term_name, term in self.terms.items():
            if term.on is SINGLE_OUTPUT:
                if len(names) != 1:
                    raise ValueError(
                        f"Objective: term '{term_name}' has on=None, but the model has "
                        f"{len(names)} outputs {names}; set `on` to one of them."
                    )
                continue
            for on in term.on if isinstance(term.on, tuple) else (term.on,):
                if on not in names:
                    raise ValueError(
                        f"Objective: term '{term_name}' reads output '{on}', which the model "
                        f"does not have; its outputs are {names}."
                    )

    def named_outputs(self, y_pred):
        """The model's outputs as ``{name: tensor}`` (a single output also under ``SINGLE_OUTPUT``)."""
        if isinstance(y_pred, dict):
            return dict(y_pred)
        names = self._output_names() or []
        if isinstance(y_pred, (list, tuple)):
            return dict(zip(names, y_pred))
        outputs = {SINGLE_OUTPUT: y_pred}
        if len(names) == 1:
            outputs[names[0]] = y_pred
        return outputs

    def _output(self, outputs, term_name, on):
        if isinstance(on, tuple):  # a term reading several outputs
            return tuple(self._output(outputs, term_name, name) for name in on)
        if on in outputs:
            return outputs[on]
        named = [k for k in outputs if k is not SINGLE_OUTPUT]
        if on is SINGLE_OUTPUT and len(named) == 1:
            return outputs[named[0]]
        raise ValueError(
            f"Objective: term '{term_name}' reads output {on!r}, but the model returned "
            f"outputs {named or 'as a single tensor'}."
        )

    def _targets_dict(self, y):
        if isinstance(y, dict):
            return dict(y)
        names = {t.target for t in self.terms.values()}
        if y is None:
            raise ValueError(
                f"Objective: no targets were given; the terms need {sorted(names)}. "
                "Pass them as fit(x, {name: array})."
            )
        if len(names) == 1:
            return {names.pop(): y}
        raise ValueError(
            f"Objective: received a single target array, but the terms read several "
            f"targets {sorted(names)}; pass a dict {{name: array}} as y."
        )

    @staticmethod
    def _target(targets, term_name, target):
        if target not in targets:
            raise ValueError(
                f"Objective: term '{term_name}' needs target '{target}', but y has "
                f"{sorted(targets)}. Pass it in the y dict or change the term's `target`."
            )
        return targets[target]

    # -------------------------------------------------------------------- build
    def build(self, input_shape=None):
        spec = keras.tree.map_shape_structure(lambda s: keras.KerasTensor(s), input_shape)
        symbolic = None
        if not self.model.built and type(self.model).build is keras.Model.build:
            # A subclassed model without a build(): tracing its call builds its layers
            # (keras.Model.build would only mark it built, with a warning).
            symbolic = self.model.compute_output_spec(spec)
            self.model.built = True
        elif not self.model.built:
            self.model.build(input_shape)
        if not all(term.built for term in self.terms.values()):
            outputs = self.named_outputs(self.model.compute_output_spec(spec) if symbolic is None else symbolic)
            for name, term in self.terms.items():
                if not term.built:
                    read = self._output(outputs, name, term.on)
                    term.build(keras.tree.map_structure(lambda t: tuple(t.shape), read))
        if self.gradient_level and self.model.variables:
            # The strategy's state shaped like the shared variables must exist
            # before the first step is traced and before a saved file is loaded
            # (a subclassed model without variables yet: its first step plans).
            self.gradient_plan()

    def fit(self, *args, **kwargs):
        # Callbacks such as BackupAndRestore need a built model at on_train_begin,
        # before the TensorFlow trainer builds it: build from the model's inputs.
        if not self.built:
            try:
                inputs = self.model.input
            except (AttributeError, ValueError):
                inputs = None  # a subclassed model: built by the first batch
            if inputs is not None:
                self.build(keras.tree.map_structure(lambda t: tuple(t.shape), inputs))
        return super().fit(*args, **kwargs)

    def call(self, inputs, training=None):
        return self.model(inputs, training=training)

    # --------------------------------------------------------------------- loss
    def _next_step(self, training):
        """The training step counter, advanced once per training step.

        The Objective keeps its own counter rather than reading
        ``optimizer.iterations``: on JAX, optimizer variables are not part of
        the state that ``compute_loss`` sees, so a schedule would read a
        constant frozen at trace time. The counter is saved with the model.
        """
        step = ops.copy(self.step_counter)  # a value read now, not an alias of the variable
        if training:
            self.step_counter.assign(step + 1)
        return step

    def compute_term_losses(self, y, y_pred, sample_weight=None, training=False):
        """Dict of term name -> scalar loss (running each term's state update when training).

        Every loss is checked to be finite (``loss_check``: a NaN or Inf loss
        fails the step, naming the term). The row updates of the tables that
        the trainer's gate leaves out (centers, memories) are applied only
        once every check of the step has passed.
        """
        outputs = self.named_outputs(y_pred)
        targets = self._targets_dict(y)
        losses = {}
        with backend.deferred_rows() as pending:
            for name, term in self.terms.items():
                losses[name] = term.call_in_step(
                    self._output(outputs, name, term.on),
                    self._target(targets, name, term.target),
                    sample_weight=self._sample_weight(sample_weight, name, term.target),
                    training=training,
                )
        values = [losses[name] for name in self.terms]
        if all(len(v.shape) == 0 for v in values):  # scalars (every term's contract): two ops, not 2K + 1
            finite = ops.isfinite(ops.stack(values))
        else:
            finite = ops.stack([ops.all(ops.isfinite(v)) for v in values])
        ok = self.loss_check.check(finite)
        if pending:  # no check of the step recorded a failure (one sum of their flags)
            failed = [ops.convert_to_tensor(record.record)[0] for record in self._input_checks("test")]
            ok = ops.logical_and(ok, functools.reduce(ops.add, failed) <= 0)
            backend.apply_rows(pending, ok)
        return losses

    @staticmethod
    def _sample_weight(sample_weight, term_name, target):
        """Keras gives sample weights in the structure of y: pick this term's."""
        if not isinstance(sample_weight, dict):
            return sample_weight
        if term_name in sample_weight:
            return sample_weight[term_name]
        return sample_weight.get(target)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        losses = self.compute_term_losses(y, y_pred, sample_weight, training)
        total, weights = self.weighting.combine(losses, self._next_step(training), training)
        # Weighted by batch size, as Keras weights `loss`: epoch means then add up.
        batch = _batch_size(x)
        self.loss_means.update_state([losses[name] for name in self.terms], batch)
        if training:
            self.weight_means.update_state([weights[name] for name in self.terms], batch)
        for extra in self.losses:  # the model's own losses: regularizers, add_loss
            total = total + ops.cast(ops.sum(extra), "float32")
        # Under tf.distribute each replica returns total / replicas (gradients are
        # summed over replicas), as Keras's own compute_loss does; a no-op elsewhere.
        return scale_loss_for_distribution(total)

    def compute_term_vector(self, x, y, y_pred, sample_weight=None):
        """The training losses of the terms as a list of float32 scalars (in term order), and the step.

        Used by the gradient-level train step (``lossweave.trainer``): runs each
        term's state update once, advances the step counter and logs
        ``loss/<term>``.
        """
        losses = self.compute_term_losses(y, y_pred, sample_weight, training=True)
        step = self._next_step(True)
        self.loss_means.update_state([losses[name] for name in self.terms], _batch_size(x))
        # A list, not a stacked vector: differentiating one entry of a stack would run
        # the backward of every term (0 * inf = NaN from another term's bad gradient).
        return [ops.cast(losses[name], "float32") for name in self.terms], step

    def gradient_total(self, losses):
        """The ``loss`` a gradient-level step logs, from its (K,) term losses.

        The strategy's evaluation total (``weighting.combine`` outside
        training: the plain sum of the losses; ``Mean``: their mean), so that
        ``loss`` and ``val_loss`` are the same quantity. The weights the
        strategy gave the gradients are logged as ``weight/<term>``; their
        weighted sum of losses is not a quantity the step minimises.
        """
        total, _ = self.weighting.combine({name: losses[k] for k, name in enumerate(self.terms)}, None, False)
        return total

    def record_aggregation(self, weights, gram, finite, batch):
        """Log a gradient-level step: ``weight/<term>``, ``cosine/<a>/<b>``; check the gradients.

        ``finite`` (K,) says which terms' gradients are finite; a NaN or Inf
        gradient fails the step (``InvalidInputError`` naming the terms, and
        nothing moves) unless a loss-scale optimizer is there to skip it.
        """
        values = [weights[k] for k in range(len(self.terms))]
        if self.cosine_pairs:
            cos = trainer.cosines(gram)
            values += [cos[i, j] for i, j in self.cosine_pairs]
        self.weight_means.update_state(values, batch)
        if not isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
            self.gradient_check.check(finite)

    # ------------------------------------------------------------------- steps
    def _input_checks(self, kind="train"):
        """The records of the checks of a step (read after every step)."""
        # A term records into its input_check only when it runs the checks it declares.
        records = [term.input_check for term in self.terms.values()
                   if getattr(term, "validate", False) and getattr(term, "input_checks", None)]
        records.append(self.loss_check)
        if kind == "train" and self.gradient_check is not None:
            records.append(self.gradient_check)
        return records

    def train_step(self, *args):
        # A step whose input check failed changes no state (it raises after the step).
        if self.gradient_level:
            step = functools.partial(trainer.gradient_train_step, self)
        else:
            step = super().train_step
        return trainer.gate_train_step(self, step, self._input_checks(), *args)

    def test_step(self, *args):
        # Traced (or, on PyTorch, run) once per call: compute_metrics then drops the
        # training-only logs (weights, cosines) from the evaluation's logs.
        self._evaluating = True
        try:
            return super().test_step(*args)
        finally:
            self._evaluating = False

    def make_train_function(self, force=False):
        if self.train_function is not None and not force:
            return self.train_function
        super().make_train_function(force=force)
        self.train_function = trainer.guard_step(self, self.train_function, "train", self._input_checks())
        return self.train_function

    def make_test_function(self, force=False):
        if self.test_function is not None and not force:
            return self.test_function
        super().make_test_function(force=force)
        self.test_function = trainer.guard_step(self, self.test_function, "test", self._input_checks("test"))
        return self.test_function

    # ------------------------------------------------------------------ metrics
    def compile(self, optimizer="rmsprop", loss=None, loss_weights=None, metrics=None, **kwargs):
        """Like ``keras.Model.compile``; the loss comes from the terms.

        ``metrics`` is a dict of output name -> list of metrics (or a list, for a
        model with one output). A metric compares its output with the target of
        the term reading that output (or the only target there is). The string
        ``"accuracy"`` means ``lossweave.metrics.LogitsAccuracy``.
        """
        if loss is not None:
            raise ValueError(
                "Objective.compile: received `loss`; an Objective's loss is its terms. "
                "Wrap a Keras loss as lossweave.terms.Loss(loss, on=..., target=...)."
            )
        if loss_weights is not None:
            raise ValueError(
                "Objective.compile: received `loss_weights`; pass "
                "weighting=lossweave.weighting.Fixed({term: weight}) to the Objective."
            )
        super().compile(optimizer=optimizer, **kwargs)
        # Bypass Layer tracking (the model may be built already); `metrics` lists them.
        object.__setattr__(self, "_output_metrics", self._resolve_output_metrics(metrics))
        self._compile_config = keras.saving.serialize_keras_object(
            {"optimizer": self.optimizer, "metrics": metrics, **kwargs}
        )

    def get_compile_config(self):
        if self.compiled and hasattr(self, "_compile_config"):
            return self._compile_config
        return {}

    def compile_from_config(self, config):
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def _resolve_output_metrics(self, metrics):
        if metrics is None:
            return []
        if isinstance(metrics, (list, tuple)):
            names = self._output_names() or []
            if len(names) > 1:
                raise ValueError(
                    f"Objective.compile: received a list of metrics, but the model has outputs "
                    f"{names}; pass a dict {{output name: [metrics]}}."
                )
            metrics = {names[0] if names else SINGLE_OUTPUT: metrics}
        resolved = []
        for on, entries in metrics.items():
            entries = entries if isinstance(entries, (list, tuple)) else [entries]
            target = self._metric_target(on)
            for entry in entries:
                resolved.append((_resolve_metric(entry), on, target))
        seen = {}
        for metric, on, _ in resolved:
            seen[metric.name] = seen.get(metric.name, 0) + 1
        for metric, on, _ in resolved:
            if seen[metric.name] > 1 and on is not SINGLE_OUTPUT:
                metric.name = f"{on}_{metric.name}"
        return resolved

    def _metric_target(self, on):
        all_targets = sorted({t.target for t in self.terms.values()})
        if len(all_targets) == 1:
            return all_targets[0]
        readers = sorted({t.target for t in self.terms.values() if t.on == on})
        if len(readers) == 1:
            return readers[0]
        raise ValueError(
            f"Objective.compile: cannot tell which target the metrics of output {on!r} compare "
            f"with: the terms read targets {all_targets}. Add a term on {on!r} or use one target."
        )

    @property
    def metrics(self):
        metrics = list(super().metrics)
        known = {id(m) for m in metrics}
        for metric, _, _ in getattr(self, "_output_metrics", []):
            if id(metric) not in known:
                metrics.append(metric)
        return metrics

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        if getattr(self, "_output_metrics", None):
            outputs = self.named_outputs(y_pred)
            targets = self._targets_dict(y)
            for metric, on, target in self._output_metrics:
                metric.update_state(
                    self._target(targets, metric.name, target),
                    self._output(outputs, metric.name, on),
                    sample_weight=self._sample_weight(sample_weight, metric.name, target),
                )
        logs = super().compute_metrics(x, y, y_pred, sample_weight)
        if self._evaluating:
            logs = {k: v for k, v in logs.items() if k not in self.weight_means.names}
        return logs

    # ------------------------------------------------------------ serialization
    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "model": keras.saving.serialize_keras_object(self.model),
            "terms": {n: keras.saving.serialize_keras_object(t) for n, t in self.terms.items()},
            "weighting": keras.saving.serialize_keras_object(self.weighting),
            "shared": None if self.shared is None else [_shared_name(e) for e in self.shared],
            "representation": self.representation,
            "gramian_blocks": self.gramian_blocks,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        model = keras.saving.deserialize_keras_object(config.pop("model"), custom_objects=custom_objects)
        terms = {
            n: keras.saving.deserialize_keras_object(t, custom_objects=custom_objects)
            for n, t in config.pop("terms").items()
        }
        weighting = keras.saving.deserialize_keras_object(config.pop("weighting"), custom_objects=custom_objects)
        return cls(model, terms, weighting=weighting, **config)


def _shared_name(entry):
    """A ``shared=`` entry as it is saved: a layer by its name, a variable by its path."""
    if isinstance(entry, keras.layers.Layer):
        return entry.name
    if isinstance(entry, keras.Variable):
        return entry.path
    return entry
