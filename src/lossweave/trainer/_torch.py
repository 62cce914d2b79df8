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
    the forward pass: there the tables are restored too. The optimizer's slots
    are not copied (two copies of the parameters per step with Adam): the
    gradient check raises before ``optimizer.apply`` (``gradient_train_step``),
    so a failed step never reaches them.
    """
    variables = [v for v in model.non_trainable_variables if model.gradient_level or not self_gated(v)]
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
    """One forward pass, K (+1) ``autograd.grad`` calls on its graph, the strategy's update.

    The same update as ``_common.combine_rows`` over stacked rows, in fewer
    eager ops (issue 21): a term's gradient of a variable it does not reach
    stays ``None`` (no zero tensor is made, stacked or summed); the
    regularizers' row is taken only when the model has losses that depend on
    a variable; the loss scale is applied only under a
    ``LossScaleOptimizer``; the K x K Gramian and each term's finiteness
    (its gradients' largest magnitude: NaN or Inf exactly when one entry is)
    are computed here in torch, one matmul per shared variable and one fused
    reduction per term.
    """
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
    if model.gramian_blocks:
        grads = _blockwise_grads(model, plan, params, scaled, k, scale, losses.detach(), step, _batch(x))
    else:
        grads = _rows_grads(model, plan, params, scaled, k, scale, losses, step, x, y_pred)
    with torch.no_grad():
        model.optimizer.apply(grads, variables)
        total = model.gradient_total(losses.detach()) + regularization.detach()
    keras_compat.track_loss(model, total, _batch(x))
    return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)


def _rows_grads(model, plan, params, scaled, k, scale, losses, step, x, y_pred):
    """Each variable's gradient from the K rows of every shared entry, all held at once."""
    if plan.representation is None:
        per_term = [_grads(scaled[i], params, zeros=False) for i in range(k)]
        # The regularizers' row: only where a model loss depends on a variable (else zeros, left out).
        direct = _grads(scaled[k], params, zeros=False) if scaled[k].requires_grad else [None] * len(params)
        stacked = []
        for v, (p, s) in enumerate(zip(params, plan.shared)):
            if s:  # stacked, and the terms' own tensors dropped: K gradients held once, not twice
                stacked.append(_stack([g[v] for g in per_term], p))
                for g in per_term:
                    g[v] = None
        # The shared rows' magnitudes from the stacked rows, the other variables' per term.
        finite = _finite(per_term, k, stacked)
        shared_rows = stacked if scale is None else [row / scale for row in stacked]
        del stacked
    else:
        z = model.named_outputs(y_pred)[plan.representation]
        dz = torch.stack([_grads(scaled[i], [z])[0] for i in range(k)])
        finite = _finite([], k, [dz])
        if scale is not None:
            dz = dz / scale
        shared_rows = [dz]
    gram = _gramian(shared_rows, k, losses.device)
    # GradDrop's sgn(A): the representation's value, when the strategy asks for it.
    wants = plan.representation is not None and model.weighting.wants_activations
    activations = {"activations": [z.detach()]} if wants else {}
    updates, weights = model.weighting.aggregate_rows(shared_rows, gram, losses.detach(), step, True, **activations)
    model.record_aggregation(weights, gram, finite, _batch(x))
    updates = [u.detach() if scale is None else u.detach() * scale for u in updates]
    if plan.representation is None:
        updates, grads = iter(updates), []
        for v, (p, shared) in enumerate(zip(params, plan.shared)):
            g = next(updates).to(p.dtype) if shared else _sum([row[v] for row in per_term], p)
            grads.append(g if direct[v] is None else g + direct[v])
    else:
        aggregated = updates[0].to(dz.dtype)
        trunk = [p for p, s in zip(params, plan.shared) if s]
        rest = [p for p, s in zip(params, plan.shared) if not s]
        found = dict(zip(map(id, trunk), _grads(z, trunk, aggregated)))
        found.update(zip(map(id, rest), _grads(sum(scaled[:k]), rest)))
        direct = _grads(scaled[k], params)
        grads = [found[id(p)] + d for p, d in zip(params, direct)]
    return grads  # the K rows are not held through the optimizer's update


def _blockwise_grads(model, plan, params, scaled, k, scale, losses, step, batch):
    """``gramian_blocks=True``: the Gramian block by block, then one backward pass of ``sum_k w_k L_k``.

    Each block of shared variables (``_common.blocks``) gets the K terms'
    gradients one term at a time, copied into one float32 ``(K, block)``
    buffer (the term's own tensors dropped at once), multiplied into G and
    checked for NaN/Inf per term; the buffer is reused for the next block.
    The other variables (heads) get their terms' own gradients, each term's
    checked too, so that a bad gradient still names its term.
    """
    shared = [p for p, s in zip(params, plan.shared) if s]
    rest = [p for p, s in zip(params, plan.shared) if not s]
    rest_rows = [_grads(scaled[i], rest, zeros=False) for i in range(k)]
    finite = _finite(rest_rows, k)
    device = losses.device
    gram = torch.zeros((k, k), dtype=torch.float32, device=device)
    groups = _common.blocks([p.numel() for p in shared])
    width = max((sum(shared[j].numel() for j in g) for g in groups), default=0)
    buffer = rows = torch.empty((k, width), dtype=torch.float32, device=device)
    for group in groups:
        block = [shared[j] for j in group]
        n = sum(p.numel() for p in block)
        for i in range(k):
            offset = 0
            for g, p in zip(_grads(scaled[i], block, zeros=False), block):
                target = buffer[i, offset:offset + p.numel()]
                if g is None:  # term i does not reach this variable
                    target.zero_()
                else:
                    target.copy_(g.reshape(-1))
                offset += p.numel()
        rows = buffer[:, :n]
        finite = finite & torch.isfinite(torch.amax(rows.abs(), dim=1))
        gram = gram + rows @ rows.T
    del buffer, rows  # (rows is a view of the buffer) not held through the update's backward pass
    if scale is not None:
        gram = gram / (scale * scale)
    weights = model.weighting.aggregate(gram, losses, step, True)
    model.record_aggregation(weights, gram, finite, batch)
    w = weights.detach().to(torch.float32)
    regularized = scaled[k].requires_grad
    combined = sum((w[i] * scaled[i] for i in range(k)), scaled[k] if regularized else torch.zeros((), device=device))
    grads = dict(zip(map(id, shared), _grads(combined, shared)))
    direct = _grads(scaled[k], rest, zeros=False) if regularized else [None] * len(rest)
    for p, d, *per_term in zip(rest, direct, *rest_rows):
        total = _sum(per_term, p)
        grads[id(p)] = total if d is None else total + d
    return [grads[id(p)] for p in params]


def _grads(output, inputs, grad_output=None, zeros=True):
    """``d output / d inputs``; an input it does not reach: zeros, or None with ``zeros=False``."""
    if not inputs or not output.requires_grad:  # nothing here depends on a variable
        return [torch.zeros_like(p) if zeros else None for p in inputs]
    found = torch.autograd.grad(
        output, inputs, grad_outputs=grad_output, retain_graph=True, allow_unused=True
    )
    if not zeros:
        return list(found)
    return [torch.zeros_like(p) if g is None else g for g, p in zip(found, inputs)]


def _stack(grads, like):
    """``(K, *shape)`` float32 rows of one variable; a term that does not reach it: a zero row."""
    return torch.stack([torch.zeros_like(like) if g is None else g for g in grads]).float()


def _sum(grads, like):
    """The sum of the terms' gradients of a variable (zeros when none reaches it)."""
    present = [g for g in grads if g is not None]
    if not present:
        return torch.zeros_like(like)
    total = present[0]
    for g in present[1:]:
        total = total + g
    return total


def _finite(per_term, k, rows=()):
    """(K,) bool: every gradient of term k is finite.

    ``rows``: ``(K, *shape)`` stacked rows (row k: term k's gradient);
    ``per_term``: each term's other gradients (None where it reaches none).
    A row's maximum and minimum are both finite exactly when all its
    entries are (NaN propagates, +-Inf is one of them), and they never
    overflow as a sum of squares would: two ``(K,)`` reductions per stacked
    variable (no ``abs`` copy of the K rows) and one scalar per other
    gradient (``abs().amax()``: these are small), then a count of the
    non-finite ones per term. (``torch._foreach_norm(inf)``, the same
    magnitudes, is a slow kernel on CPU: ~1.1 ms against ~0.14 ms for the
    four shared variables and sixteen head tensors of the K = 4 benchmark,
    issue 21.)
    """
    bad = torch.zeros((k,), dtype=torch.int32)
    # amax and amin rather than abs().amax(): no (K, n) copy of the rows (NaN shows in both, +-Inf in one).
    peaks = [f(r.reshape(k, -1), 1) for r in rows if r.numel() for f in (torch.amax, torch.amin)]
    if peaks:
        bad = bad.to(peaks[0].device) + (~torch.isfinite(torch.stack(peaks))).sum(0, dtype=torch.int32)
    present, owner = [], []
    for term, grads in enumerate(per_term[:k]):
        for g in grads:
            if g is not None and g.numel():
                present.append(g.abs().amax())
                owner.append(term)
    if present:
        flags = ~torch.isfinite(torch.stack(present))
        owner = torch.as_tensor(owner, device=flags.device)
        bad = bad.to(flags.device).index_add_(0, owner, flags.to(torch.int32))
    return bad == 0


def _gramian(rows, k, device):
    """``sum_v R_v R_v^T`` of the per-variable ``(K, *shape)`` rows, float32 (``_common.gramian``'s value).

    No shared variable (no rows): the zero ``(K, K)`` Gramian, as ``_common.gramian`` gives.
    """
    total = torch.zeros((k, k), dtype=torch.float32, device=device)
    for r in rows:
        flat = r[:k].reshape(k, -1).float()
        total = total + flat @ flat.T
    return total


def _scale(model, vector):
    """The loss scale of a ``LossScaleOptimizer`` (a tensor), else None: the rows are not rescaled."""
    if isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer):
        return model.optimizer.scale_loss(torch.ones((), device=vector.device)).detach()
    return None


def _batch(x):
    return next(t for t in keras.tree.flatten(x) if t is not None).shape[0]
