"""PyTorch: the gradient-level step (``autograd.grad`` per term); checks raise eagerly.

Terms check their inputs, and the Objective their losses, eagerly: a check
raises before the optimizer runs, so the guard has nothing to do on this
backend and the gate only puts back what the forward pass moved.
"""

import keras
import torch

from lossweave import _keras_compat as keras_compat
from lossweave._backend import self_gated
from lossweave.errors import InvalidInputError
from lossweave.trainer import _common


def gate_train_step(model, train_step, records, data):
    """The train step: checks raise inside it, before the optimizer runs (eager).

    The forward pass may have moved state by then (a term's counters or seed,
    the model's moving statistics): that state is copied before the step and
    put back when a check raises. Tables that terms update row by row (marked
    ``mark_self_gated``) are not copied: the Objective applies their rows only
    after every check passed. A gradient-level step checks its gradients after
    the forward pass: there the tables and the optimizer slots are restored too.
    """
    variables = [v for v in model.non_trainable_variables if model.gradient_level or not self_gated(v)]
    if model.gradient_level and model.optimizer is not None:
        variables += model.optimizer.variables
    before = [v.value.detach().clone() for v in variables]
    try:
        return train_step(data)
    except InvalidInputError:
        with torch.no_grad():
            for variable, old in zip(variables, before):
                variable.value.copy_(old)
        raise


def guard_step(model, function, kind, records):
    """Checks raise inside the (eager) step on this backend: nothing to wrap."""
    return function


def gradient_train_step(model, data):
    """One forward pass, K (+1) ``autograd.grad`` calls on its graph, the strategy's update."""
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    k = len(model.terms)
    kwargs = keras_compat.training_kwargs(model)
    y_pred = model(x, **kwargs)
    # After the forward pass: a subclassed model creates its variables in its first call.
    plan, variables = model.gradient_plan(), model.trainable_variables
    params = [v.value for v in variables]
    model.zero_grad()
    terms, step = model.compute_term_vector(x, y, y_pred, sample_weight)
    regularization = sum((l.sum().float() for l in model.losses), torch.zeros((), device=terms[0].device))
    # One target per term, never entries of a stacked vector: the backward of an
    # entry would run every term's (0 * inf = NaN from another term's bad gradient).
    scaled = [*terms, regularization]
    if model.optimizer is not None:
        scaled = [model.optimizer.scale_loss(t) for t in scaled]
    losses = torch.stack(terms)
    scale = _scale(model, losses)
    if plan.representation is None:
        per_term = [_grads(scaled[i], params) for i in range(k + 1)]
        rows = [torch.stack([g[v] for g in per_term]) for v in range(len(params))]
        shared_rows = [r / scale for r, s in zip(rows, plan.shared) if s]
        checked = rows
    else:
        z = model.named_outputs(y_pred)[plan.representation]
        dz = torch.stack([_grads(scaled[i], [z])[0] for i in range(k)]) / scale
        shared_rows = checked = [dz]
    gram = _common.gramian(shared_rows, k)
    # GradDrop's sgn(A): the representation's value, when the strategy asks for it.
    wants = plan.representation is not None and model.weighting.wants_activations
    activations = {"activations": [z.detach()]} if wants else {}
    updates, weights = model.weighting.aggregate_rows(
        [r[:k] for r in shared_rows], gram, losses.detach(), step, True, **activations
    )
    model.record_aggregation(weights, gram, _common.finite_terms(checked, k), _batch(x))
    updates = [u.detach() * scale for u in updates]
    if plan.representation is None:
        grads = _common.combine_rows(plan, rows, updates, k)
    else:
        aggregated = updates[0].to(dz.dtype)
        trunk = [p for p, s in zip(params, plan.shared) if s]
        rest = [p for p, s in zip(params, plan.shared) if not s]
        found = dict(zip(map(id, trunk), _grads(z, trunk, aggregated)))
        found.update(zip(map(id, rest), _grads(sum(scaled[:k]), rest)))
        direct = _grads(scaled[k], params)
        grads = [found[id(p)] + d for p, d in zip(params, direct)]
    with torch.no_grad():
        model.optimizer.apply(grads, variables)
        total = model.gradient_total(losses.detach()) + regularization.detach()
    keras_compat.track_loss(model, total, _batch(x))
    return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)


def _grads(output, inputs, grad_output=None):
    if not inputs or not output.requires_grad:  # nothing here depends on a variable
        return [torch.zeros_like(p) for p in inputs]
    found = torch.autograd.grad(
        output, inputs, grad_outputs=grad_output, retain_graph=True, allow_unused=True
    )
    return [torch.zeros_like(p) if g is None else g for g, p in zip(found, inputs)]


def _scale(model, vector):
    if isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer):
        return model.optimizer.scale_loss(torch.ones((), device=vector.device)).detach()
    return torch.ones((), device=vector.device)


def _batch(x):
    return next(t for t in keras.tree.flatten(x) if t is not None).shape[0]
