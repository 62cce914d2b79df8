"""JAX: the failed-step gate and guard, and the gradient-level step (one VJP per term under ``jit``).

Keras's JAX trainer donates the state buffers to each compiled step and purges
the model's variables during an epoch, so an exception inside a step would
leave the model without its weights: checks are recorded during the step
(``backend.recording_checks``) and ``guard_step`` raises after it.
"""

import jax
import jax.numpy as jnp
import keras
import numpy as np

from lossweave import _backend as backend
from lossweave import _keras_compat as keras_compat
from lossweave._backend import _common as backend_common
from lossweave.errors import InvalidInputError
from lossweave.trainer import _common


def gate_train_step(model, train_step, records, state, data):
    """The train step, whose new state is the old one when a check of this step failed.

    A failed check makes the whole step a no-op (weights, optimizer slots and
    iterations, centers, weighting state, step counters, seed generators); only
    the metric variables, which carry the failure to ``guard_step``, move on.
    A loss-level step knows the checks' verdict before the optimizer runs: its
    update is applied inside an ``lax.cond`` (``_gated_loss_step``). A
    gradient-level step checks its gradients after the terms' updates: one
    select per state buffer.
    """
    if not records:
        return train_step(state, data)
    if not model.gradient_level:
        logs, new_state = _gated_loss_step(model, records, state, data)
        return _flagged(model, records, logs, new_state[3]), new_state
    logs, new_state = train_step(state, data)
    trainable, non_trainable, optimizer, metrics_variables = new_state
    ok = _passed(model, records, metrics_variables)
    keep = lambda new, old: [jnp.where(ok, n, o) for n, o in zip(new, old)]
    return _flagged(model, records, logs, metrics_variables), (
        keep(trainable, state[0]), keep(non_trainable, state[1]), keep(optimizer, state[2]), metrics_variables)


def _flagged(model, records, logs, metrics_variables):
    """The step's logs plus ``_common.FAILED``: the sum of the records' failure flags after the step.

    ``guard_step`` reads this one output (one host transfer) instead of one
    per record: every record's flag is 0 or 1, so the sum is positive exactly
    when one of them recorded a failure, and only then are the records read.
    """
    return {**logs, _common.FAILED: sum(metrics_variables[i][0] for i in _positions(model, records))}


def _gated_loss_step(model, records, state, data):
    """Keras's JAX train step with the optimizer's update applied only when the checks passed.

    A select of every new weight and slot against its old value makes XLA
    copy each donated buffer before the update (the old value is still read
    after it); under a ``cond`` the update is in place and the skipped branch
    passes the buffers through.
    """
    trainable, non_trainable, optimizer_variables, metrics_variables = state
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    grad_fn = jax.value_and_grad(model.compute_loss_and_updates, has_aux=True)
    (_, aux), grads = grad_fn(trainable, non_trainable, metrics_variables, x, y, sample_weight,
                              training=True, optimizer_variables=optimizer_variables)
    unscaled_loss, y_pred, new_non_trainable, metrics_variables = aux
    ok = _passed(model, records, metrics_variables)
    new_trainable, new_optimizer = jax.lax.cond(
        ok,
        lambda: tuple(model.optimizer.stateless_apply(optimizer_variables, grads, trainable)),
        lambda: (list(trainable), list(optimizer_variables)),
    )
    # Tables a term gates itself (the centers: O(batch x dim) row updates) are not
    # selected, which would read and write the whole table every step.
    new_non_trainable = [
        n if backend_common.self_gated(v) else jnp.where(ok, n, o)
        for n, o, v in zip(new_non_trainable, non_trainable, model.non_trainable_variables)
    ]
    logs, metrics_variables = keras_compat.update_metrics(
        model, metrics_variables, unscaled_loss, x, y, y_pred, sample_weight
    )
    return logs, (new_trainable, new_non_trainable, new_optimizer, metrics_variables)


def _passed(model, records, metrics_variables):
    return jnp.all(jnp.stack([metrics_variables[i][0] <= 0 for i in _positions(model, records)]))


def _positions(model, records):
    """The index of each record's variable in ``model.metrics_variables``."""
    index = {id(v): i for i, v in enumerate(model.metrics_variables)}
    return [index[id(r.record)] for r in records]


_STATE_KEYS = {
    "train": ("trainable_variables", "non_trainable_variables", "optimizer_variables", "metrics_variables"),
    "test": ("trainable_variables", "non_trainable_variables", "metrics_variables"),
}


def guard_step(model, function, kind, records):
    """Trace and run the step with checks recorded; raise a recorded failure after it."""
    keys = _STATE_KEYS[kind]
    slot = keys.index("metrics_variables")

    def write_back(state):
        # Keras purged the variables at the start of the epoch: give them the state.
        keras_compat.write_jax_state(model, keys, state)

    positions = []  # where the records are in the step's metric state: found once

    def guarded(state, data):
        try:
            with backend.recording_checks():
                logs, new_state = function(state, data)
        except Exception:
            # A trace-time error (bad shape): nothing ran, the input state is intact.
            if not any(getattr(a, "is_deleted", lambda: False)() for a in jax.tree.leaves(state)):
                write_back(state)
            raise
        flag = logs.pop(_common.FAILED, None) if isinstance(logs, dict) else None
        if flag is not None and not np.asarray(flag) > 0:
            return logs, new_state  # the gated step's sum of the records' flags: nothing failed
        if not positions:
            positions.extend(_positions(model, records))
        # A failure, or a step without the flag: one host read per record (np.asarray, no Keras conversion).
        recorded = [new_state[slot][i] for i in positions]
        if not any(np.asarray(r)[0] > 0 for r in recorded):
            return logs, new_state
        failures = [r.failure(value) for r, value in zip(records, recorded)]
        failures = [f for f in failures if f is not None]
        if failures:
            write_back(new_state)
            for record in records:  # the next step starts clean (train_on_batch resets no metric)
                record.reset_state()
            raise InvalidInputError(failures[0])
        return logs, new_state

    return guarded


class _Tap:
    """Representation mode: the layer's output ``z`` is used as ``stop_gradient(z) + delta``.

    The gradient of the losses with respect to ``delta`` is then ``dL_k/dz``
    (through the heads only), and the trunk receives its gradient only through
    the raw ``z``, returned as a second output of the forward function, whose
    cotangent is the aggregated ``sum_k w_k dL_k/dz``.
    """

    def __init__(self, layer, delta):
        self.layer, self.delta, self.raw = layer, delta, None

    def __enter__(self):
        original = self.layer.call

        def call(*args, **kwargs):
            self.raw = original(*args, **kwargs)
            return jax.lax.stop_gradient(self.raw) + self.delta.astype(self.raw.dtype)

        self.layer.call = call
        return self

    def __exit__(self, *exc):
        del self.layer.call  # the instance attribute: the class's call is seen again


def _scope(model, trainable, non_trainable, metrics):
    mapping = [
        *zip(model.trainable_variables, trainable),
        *zip(model.non_trainable_variables, non_trainable),
        *zip(model.metrics_variables, metrics),
    ]
    return keras.StatelessScope(state_mapping=mapping)


def _read(scope, variables):
    return [scope.get_current_value(v) for v in variables]


def _loss_scale(model, optimizer_variables):
    if model.optimizer is None:
        return jnp.ones((), "float32")
    mapping = list(zip(model.optimizer.variables, optimizer_variables))
    with keras.StatelessScope(state_mapping=mapping):
        return jnp.asarray(model.optimizer.scale_loss(jnp.ones((), "float32")), "float32")


def gradient_train_step(model, state, data):
    """One forward pass, the K term gradients (one VJP each under ``jit``), the strategy's update.

    Each term's gradient is taken of that term's loss alone, not of an entry
    of a stacked vector: then XLA prunes the other heads' backward passes,
    which a vmapped VJP over one-hot cotangents computes with zeros (2.5x ->
    1.6x of the loss-level step at K = 2, ``benchmarks/GRADIENT.md``). The
    forward pass traced for each is the same computation and is shared.
    """
    trainable, non_trainable, optimizer_variables, metrics = state
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    plan = model.gradient_plan()
    k = len(model.terms)
    scale = _loss_scale(model, optimizer_variables)
    traced = {}

    def forward(trainable_values, delta):
        """The K scaled term losses and the scaled regularization, the raw representation, aux."""
        kwargs = keras_compat.training_kwargs(model)
        with _Tap(plan.layer, delta) if plan.representation is not None else _NoTap() as tap:
            y_pred, new_nt, model_losses = model.stateless_call(
                trainable_values, non_trainable, x, return_losses=True, **kwargs
            )
        with _scope(model, trainable_values, new_nt, metrics) as scope:
            losses, step = model.compute_term_vector(x, y, y_pred, sample_weight)
        traced["regularized"] = bool(model_losses)
        regularization = sum((jnp.sum(l).astype("float32") for l in model_losses), jnp.zeros((), "float32"))
        parts = [l * scale for l in [*losses, regularization]]
        aux = (jnp.stack(losses), regularization, step, y_pred, _read(scope, model.non_trainable_variables),
               _read(scope, model.metrics_variables), tap.raw)
        return parts, tap.raw, aux

    if model.gramian_blocks:
        return _blockwise_step(model, plan, forward, state, x, y, sample_weight, scale, traced)
    if plan.representation is None:
        rows, aux = _term_rows(lambda t, i: _pick(forward(t, None), i), trainable, k, traced)
        rows = [r / scale.astype(r.dtype) for r in rows]  # per variable: (K [+ 1], *shape)
        shared_rows = [r for r, s in zip(rows, plan.shared) if s]
        checked_rows = rows
    else:
        shape = _representation_shape(model, plan, trainable, non_trainable, x)
        delta = jnp.zeros(shape, "float32")
        # dL_k/dz through the heads only (the trunk's variables are constants here).
        per_term = [jax.grad(lambda d, i=i: _pick(forward(trainable, d), i), has_aux=True)(delta) for i in range(k)]
        aux = per_term[0][1]
        representation_rows = jnp.stack([g for g, _ in per_term]) / scale
        shared_rows = checked_rows = [representation_rows]
    losses, regularization, step, y_pred, non_trainable_new, metrics_new, raw = aux
    wants = raw is not None and model.weighting.wants_activations
    activations = {"activations": [raw]} if wants else {}  # GradDrop's sgn(A): the representation

    with _scope(model, trainable, non_trainable_new, metrics_new) as scope:
        gram = _common.gramian(shared_rows, k)
        updates, weights = model.weighting.aggregate_rows(
            [r[:k] for r in shared_rows], gram, losses, step, True, **activations
        )
        model.record_aggregation(weights, gram, _common.finite_terms(checked_rows, k), _batch(x))
    non_trainable_new = _read(scope, model.non_trainable_variables)
    metrics_new = _read(scope, model.metrics_variables)

    if plan.representation is None:
        grads = [g * scale.astype(g.dtype) for g in _common.combine_rows(plan, rows, updates, k)]
    else:
        aggregated = updates[0] * scale

        def total_and_raw(t):
            parts, raw, _ = forward(t, delta)
            return sum(parts), raw

        (_, raw), vjp = jax.vjp(total_and_raw, trainable)
        # The losses are scaled already: heads get sum_k dL_k; the trunk, through the
        # raw representation only (the tap stops the rest), J^T aggregated.
        grads = vjp((jnp.ones((), "float32"), aggregated.astype(raw.dtype)))[0]
    total = model.gradient_total(losses) + regularization
    trainable, optimizer_variables = model.optimizer.stateless_apply(optimizer_variables, grads, trainable)
    logs, metrics_new = keras_compat.update_metrics(model, metrics_new, total, x, y, y_pred, sample_weight)
    return logs, (trainable, non_trainable_new, optimizer_variables, metrics_new)


def _blockwise_step(model, plan, forward, state, x, y, sample_weight, scale, traced):
    """``gramian_blocks=True``: the Gramian block by block, then one VJP of ``sum_k w_k L_k``.

    Each block of shared variables (``_common.blocks``) is differentiated
    alone, one ``jax.grad`` per term of that block's variables (XLA prunes
    the rest), its K rows multiplied into G and checked per term. The
    block's variables pass an ``optimization_barrier`` with G so far, so
    that its rows exist only after the previous block's are multiplied in:
    unordered, XLA ran the blocks side by side (K = 10: 529 of the default's
    560 MiB; ordered: 393 MiB, ``benchmarks/GRADIENT.md``). The other
    variables (heads) get their terms' own gradients, checked per term.
    """
    trainable, non_trainable, optimizer_variables, metrics = state
    k = len(model.terms)
    shared = [i for i, s in enumerate(plan.shared) if s]
    rest = [i for i, s in enumerate(plan.shared) if not s]

    def loss_of(indices, i, weights=None):
        def loss(values):
            t = list(trainable)
            for j, v in zip(indices, values):
                t[j] = v
            parts, _, aux = forward(t, None)
            if weights is None:
                return parts[i], aux
            return sum(w * p for w, p in zip(weights, parts[:k])) + parts[k], aux
        return loss

    def grad(indices, i, weights=None, values=None):
        values = [trainable[j] for j in indices] if values is None else values
        return jax.grad(loss_of(indices, i, weights), has_aux=True)(values)

    first, aux = grad(rest, 0)
    rest_rows = [first] + [grad(rest, i)[0] for i in range(1, k)]
    finite = _common.finite_terms([jnp.stack(r) for r in zip(*rest_rows)], k) if rest else jnp.ones((k,), "bool")
    gram = jnp.zeros((k, k), "float32")
    for group in _common.blocks([int(np.prod(trainable[j].shape)) for j in shared]):
        indices = [shared[j] for j in group]
        # The barrier orders the blocks (see the docstring).
        gram, values = jax.lax.optimization_barrier((gram, [trainable[j] for j in indices]))
        rows = [jnp.stack(r) for r in zip(*[grad(indices, i, values=values)[0] for i in range(k)])]
        finite = jnp.logical_and(finite, _common.finite_terms(rows, k))
        gram = gram + _common.gramian(rows, k)
    gram = gram / (scale * scale)
    losses, regularization, step, y_pred, non_trainable_new, metrics_new, _ = aux
    with _scope(model, trainable, non_trainable_new, metrics_new) as scope:
        weights = model.weighting.aggregate(gram, losses, step, True)
        model.record_aggregation(weights, gram, finite, _batch(x))
    non_trainable_new = _read(scope, model.non_trainable_variables)
    metrics_new = _read(scope, model.metrics_variables)
    fixed = jax.lax.stop_gradient(jnp.asarray(weights, "float32"))
    found = dict(zip(shared, grad(shared, 0, [fixed[i] for i in range(k)])[0]))
    if traced["regularized"]:
        rest_rows.append(grad(rest, k)[0])
    found.update((j, sum(r[n] for r in rest_rows)) for n, j in enumerate(rest))
    grads = [found[j] for j in range(len(trainable))]
    total = model.gradient_total(losses) + regularization
    trainable, optimizer_variables = model.optimizer.stateless_apply(optimizer_variables, grads, trainable)
    logs, metrics_new = keras_compat.update_metrics(model, metrics_new, total, x, y, y_pred, sample_weight)
    return logs, (trainable, non_trainable_new, optimizer_variables, metrics_new)


class _NoTap:
    raw = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _pick(outputs, i):
    parts, _, aux = outputs
    return parts[i], aux


def _term_rows(loss_i, trainable, k, traced):
    """Per variable, the stacked gradients of the K terms (and of the regularizers, if any)."""
    first, aux = jax.grad(lambda t: loss_i(t, 0), has_aux=True)(trainable)
    grads = [first] + [jax.grad(lambda t, i=i: loss_i(t, i), has_aux=True)(trainable)[0] for i in range(1, k)]
    if traced["regularized"]:  # known once the forward pass is traced
        grads.append(jax.grad(lambda t: loss_i(t, k), has_aux=True)(trainable)[0])
    return [jnp.stack(per_variable) for per_variable in zip(*grads)], aux


def _representation_shape(model, plan, trainable, non_trainable, x):
    """The representation's shape for this batch (traced once, no computation)."""
    outputs = jax.eval_shape(
        lambda t, n: model.stateless_call(t, n, x, training=False)[0], trainable, non_trainable
    )
    return model.named_outputs(outputs)[plan.representation].shape


def _batch(x):
    return next(t for t in jax.tree.leaves(x) if t is not None).shape[0]
