"""TensorFlow: the failed-step gate and guard, and the gradient-level step (one persistent tape).

Under ``tf.distribute.MirroredStrategy`` each replica computes its term
gradients of its share of the batch; they are all-reduced **before** the
Gramian is formed (the aggregation of each replica's local gradients would
give another answer), every replica then finds the same update from the
global rows and sends ``1 / replicas`` of it, summed over the replicas by
the optimizer as usual: the update equals the one of a single device on the
global batch. In representation mode the rows are the replica's own samples'
``dL_k/dz`` (only their Gramian is all-reduced).
"""

import keras
import tensorflow as tf

from lossweave import _backend as backend
from lossweave import _keras_compat as keras_compat
from lossweave._backend import _common as backend_common
from lossweave._keras_compat import scale_loss_for_distribution, unscale_loss_for_distribution
from lossweave._backend._tensorflow import _replicas, _table
from lossweave.errors import InvalidInputError
from lossweave.trainer import _common


def gate_train_step(model, train_step, records, data):
    """The train step, a no-op when a check of this step failed (see ``guard_step``).

    A loss-level step (``_gated_loss_step``) knows whether its checks passed
    before the optimizer runs: the update is applied only then, and the
    non-trainable state the forward pass moved (step counters, weighting
    state, moving statistics, seed generators; not the self-gated centers) is
    assigned back otherwise. A gradient-level step checks its gradients after
    the terms' updates: the whole state it may change (weights and optimizer
    slots too) is read before it and assigned back after it when a check
    failed. Metric variables, which carry the failure, move on either way.
    """
    if not records or _replicas() is not None or tf.distribute.has_strategy():
        # (A strategy of one replica too: its merge_calls are refused inside a cond.)
        # Under MirroredStrategy the step is not undone (assigning mirrored variables
        # in a replica context needs an aggregation that not every variable has):
        # the centers and the loss are still gated, the optimizer step is not.
        return train_step(data)
    if not model.gradient_level:
        return _flagged(_gated_loss_step(model, records, data), records)
    variables = _step_state(model, [*model.trainable_variables, *model.non_trainable_variables,
                                    *(model.optimizer.variables if model.optimizer else [])])
    before = [tf.identity(_table(v)) for v in variables]
    logs = train_step(data)
    _restore_unless(_passed(records), variables, before)
    return _flagged(logs, records)


def _flagged(logs, records):
    """The step's logs plus ``_common.FAILED``: the sum of the records' failure flags, read after the step's checks.

    ``guard_step`` reads this one output of the step (already on the host)
    instead of one variable per record (an eager read and copy each, ~0.1 ms
    per step on a sub-millisecond step): every record's flag is 0 or 1, so
    the sum is positive exactly when one of them recorded a failure, and
    only then are the records read for the message. (The read of each record
    comes after the step's writes to it: TensorFlow orders the operations on
    one variable as the program does.)
    """
    logs = dict(logs)
    logs[_common.FAILED] = tf.add_n([r.record[0] for r in records])
    return logs


def _gated_loss_step(model, records, data):
    """Keras's loss-level train step with the optimizer's update applied only when the checks passed.

    The copy of the state is O(non-trainable variables) instead of
    O(parameters x 3) (weights, two Adam slots), and nothing is assigned
    twice: on a sub-millisecond step the copy and restore of every variable
    were a third of the Objective's overhead over Keras's own step.
    """
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    moved = _step_state(model, model.non_trainable_variables)
    before = [tf.identity(_table(v)) for v in moved]
    with tf.GradientTape() as tape:
        y_pred = model(x, **keras_compat.training_kwargs(model))
        loss = keras_compat.compute_loss(model, x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True)
        keras_compat.track_loss(model, unscale_loss_for_distribution(loss), _batch(x))
        if model.optimizer is not None:
            loss = model.optimizer.scale_loss(loss)
    ok = _passed(records)
    if model.trainable_weights:
        variables = model.trainable_weights
        gradients = tape.gradient(loss, variables)

        def apply():
            model.optimizer.apply_gradients(zip(gradients, variables))
            return tf.constant(True)

        tf.cond(ok, apply, lambda: tf.constant(False))
    _restore_unless(ok, moved, before)
    return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)


def _passed(records):
    return tf.reduce_all(tf.stack([r.record[0] <= 0 for r in records]))


def _restore_unless(ok, variables, before):
    def restore():
        for variable, old in zip(variables, before):
            variable.assign(old)
        return tf.constant(False)

    tf.cond(ok, lambda: tf.constant(True), restore)  # writes only when a check failed


def _step_state(model, candidates):
    variables, seen = [], set()
    for v in candidates:
        # Tables a term gates itself (the centers) are left out: copying them would
        # cost O(classes x dim) per step instead of O(batch x dim). A gradient-level
        # step copies them: its gradient check fails after the terms' updates.
        if id(v) not in seen and (model.gradient_level or not backend_common.self_gated(v)):
            seen.add(id(v))
            variables.append(v)
    return variables


def guard_step(model, function, kind, records):
    """Trace and run the step with checks recorded; raise a recorded failure after it."""
    if not records:
        return function  # nothing is checked: no read-back after each step

    def guarded(*args, **kwargs):
        with backend.recording_checks():
            logs = function(*args, **kwargs)
        flag = logs.pop(_common.FAILED, None) if isinstance(logs, dict) else None
        if flag is not None and not flag.numpy() > 0:
            return logs  # the gated step's sum of the records' flags: nothing failed
        failures = [f for f in (r.failure() for r in records) if f is not None]
        if failures:
            for record in records:  # the next step starts clean (train_on_batch resets no metric)
                record.reset_state()
            raise InvalidInputError(failures[0])
        return logs

    return guarded


def gradient_train_step(model, data):
    """One forward pass, the K term gradients from one tape, the strategy's update."""
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    k = len(model.terms)
    with tf.GradientTape(persistent=True) as tape:
        kwargs = keras_compat.training_kwargs(model)
        y_pred = model(x, **kwargs)
        # After the forward pass: a subclassed model creates its variables in its first call.
        plan, variables = model.gradient_plan(), model.trainable_variables
        terms, step = model.compute_term_vector(x, y, y_pred, sample_weight)
        regularization = tf.add_n([tf.cast(tf.reduce_sum(l), tf.float32) for l in model.losses] or [tf.zeros(())])
        # Each replica's share of the global mean, as Keras's own compute_loss; one
        # target per term (computed while the tape records), never slices of a stack.
        shares = [scale_loss_for_distribution(t) for t in [*terms, regularization]]
        targets = [model.optimizer.scale_loss(t) for t in shares] if model.optimizer is not None else shares
        heads_target = tf.add_n(targets[:k])
    losses = tf.stack(terms)
    vector = tf.stack(shares)
    scale = tf.cast(model.optimizer.scale_loss(tf.ones(())), tf.float32) if _loss_scaled(model) else tf.ones(())
    context = _replicas()
    if context is not None:  # the strategy sees the losses of the global batch
        losses = context.all_reduce(tf.distribute.ReduceOp.SUM, vector[:k])
    if model.gramian_blocks:
        grads = _blockwise_grads(model, plan, tape, variables, targets, k, scale, losses, step, context, _batch(x))
        del tape
        model.optimizer.apply_gradients(zip(grads, variables))
        keras_compat.track_loss(model, model.gradient_total(terms) + regularization, _batch(x))
        return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)
    if plan.representation is None:
        per_term = [_dense(tape.gradient(t, variables), variables) for t in targets]
        rows = [tf.stack([g[v] for g in per_term]) for v in range(len(variables))]
        local = [r / tf.cast(scale, r.dtype) for r, s in zip(rows, plan.shared) if s]
        shared_rows = _all_reduce(context, local)
        checked = rows
    else:
        z = model.named_outputs(y_pred)[plan.representation]
        dz = tf.stack([_zeros_if_none(tape.gradient(t, z), z) for t in targets[:k]]) / tf.cast(scale, z.dtype)
        # Rows of different samples: the global Gramian is the sum of the replicas' ones.
        shared_rows = checked = [dz]
    gram = _common.gramian(shared_rows, k)
    if plan.representation is not None and context is not None:
        gram = context.all_reduce(tf.distribute.ReduceOp.SUM, gram)
    # GradDrop's sgn(A): the representation's value, when the strategy asks for it.
    wants = plan.representation is not None and model.weighting.wants_activations
    activations = {"activations": [z]} if wants else {}
    updates, weights = model.weighting.aggregate_rows(
        [r[:k] for r in shared_rows], gram, losses, step, True, **activations
    )
    finite = _common.finite_terms(checked, k)
    if context is not None:  # every replica fails the step if one has a bad gradient
        bad = context.all_reduce(tf.distribute.ReduceOp.SUM, tf.cast(tf.logical_not(finite), tf.float32))
        finite = tf.equal(bad, 0.0)
    model.record_aggregation(weights, gram, finite, _batch(x))
    if plan.representation is None:
        # The updates are of the global rows: each replica sends its share, the optimizer sums.
        replicas = 1 if context is None else context.num_replicas_in_sync
        updates = [u * tf.cast(scale / replicas, u.dtype) for u in updates]
        grads = _common.combine_rows(plan, rows, updates, k)
    else:
        aggregated = tf.cast(updates[0] * scale, dz.dtype)
        # The trunk: J^T aggregated (one backward from z); the rest: its own terms' gradients.
        trunk = [v for v, s in zip(variables, plan.shared) if s]
        rest = [v for v, s in zip(variables, plan.shared) if not s]
        found = dict(zip(map(id, trunk), tape.gradient(z, trunk, output_gradients=aggregated)))
        found.update(zip(map(id, rest), tape.gradient(heads_target, rest)))
        direct = tape.gradient(targets[k], variables)
        grads = [_add(found[id(v)], gr, v) for v, gr in zip(variables, direct)]
    del tape
    model.optimizer.apply_gradients(zip(grads, variables))
    total = model.gradient_total(terms) + regularization  # this replica's, as Keras logs
    keras_compat.track_loss(model, total, _batch(x))
    return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)


def _blockwise_grads(model, plan, tape, variables, targets, k, scale, losses, step, context, batch):
    """``gramian_blocks=True``: the Gramian block by block, then one gradient of ``sum_k w_k L_k``.

    Each block of shared variables (``_common.blocks``) is differentiated
    alone from the persistent tape, K gradients; its rows (all-reduced over
    the replicas first, as the default step's) are multiplied into G and
    checked per term, and the next block waits for that product (a control
    dependency: the graph would otherwise be free to run every block at
    once). The update is one more gradient, of ``sum_k w_k L_k`` (the
    terms' losses weighted by the strategy's weights as output gradients);
    each replica sends the one of its share, summed by the optimizer.
    """
    shared = [v for v, s in zip(variables, plan.shared) if s]
    rest = [v for v, s in zip(variables, plan.shared) if not s]
    rest_rows = [_dense(tape.gradient(t, rest), rest) for t in targets[:k]]
    finite = _common.finite_terms([tf.stack(r) for r in zip(*rest_rows)], k) if rest else tf.ones((k,), tf.bool)
    gram = tf.zeros((k, k), tf.float32)
    for group in _common.blocks([int(_table(v).shape.num_elements()) for v in shared]):
        block = [shared[j] for j in group]
        with tf.control_dependencies([gram]):
            local = [tf.stack(r) for r in zip(*[_dense(tape.gradient(t, block), block) for t in targets[:k]])]
        finite = tf.logical_and(finite, _common.finite_terms(local, k))
        gram = gram + _common.gramian(_all_reduce(context, local), k)
    gram = gram / (scale * scale)
    weights = model.weighting.aggregate(gram, losses, step, True)
    if context is not None:  # every replica fails the step if one has a bad gradient
        bad = context.all_reduce(tf.distribute.ReduceOp.SUM, tf.cast(tf.logical_not(finite), tf.float32))
        finite = tf.equal(bad, 0.0)
    model.record_aggregation(weights, gram, finite, batch)
    w = tf.stop_gradient(tf.cast(weights, tf.float32))
    weighted = [w[i] for i in range(k)] + [tf.ones(())]
    found = dict(zip(map(id, shared), tape.gradient(targets, shared, output_gradients=weighted)))
    direct = tape.gradient(targets[k], rest)
    for v, d, *per_term in zip(rest, direct, *rest_rows):
        found[id(v)] = _add(tf.add_n(per_term), d, v)
    return [_dense([found[id(v)]], [v])[0] for v in variables]


def _loss_scaled(model):
    return isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)


def _dense(grads, variables):
    return [tf.zeros_like(_table(v)) if g is None else tf.convert_to_tensor(g) for g, v in zip(grads, variables)]


def _zeros_if_none(grad, like):
    return tf.zeros_like(like) if grad is None else grad


def _add(a, b, variable):
    parts = [tf.convert_to_tensor(g) for g in (a, b) if g is not None]
    return tf.add_n(parts) if parts else tf.zeros_like(_table(variable))


def _all_reduce(context, tensors):
    if context is None or not tensors:
        return tensors
    return context.all_reduce(tf.distribute.ReduceOp.SUM, tensors)


def _batch(x):
    return tf.shape(next(t for t in tf.nest.flatten(x) if t is not None))[0]
