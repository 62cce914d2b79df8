"""What every backend's gradient-level step shares: which variables are shared, the aggregation.

A gradient-level step computes, for each term k, the gradient ``g_k`` of its
loss (and, as one more row, the gradient of the model's own losses:
regularizers, ``add_loss``). ``combine_rows`` then:

- builds the Gramian ``G = J J^T`` of the rows of the **shared** variables
  only (a K x K matrix summed variable by variable; no (K, params) array is
  concatenated),
- asks the strategy for the update of each shared variable
  (``GradientWeighting.aggregate_rows``: by default ``sum_k w_k g_k`` with
  the weights ``w`` of ``aggregate``; a strategy may instead use the rows
  themselves),
- gives each shared variable its update and every other variable (a head,
  a term's own class weights) the sum of its rows, which is its own term's
  gradient unchanged; the regularizers' row is added once to all.

With ``Objective(gramian_blocks=True)`` (a strategy that needs only the
Gramian) the K rows are never all held: ``blocks`` groups the shared
variables, each block's K rows are computed, multiplied into G and freed,
and the update is one more backward pass of ``sum_k w_k L_k`` (each
backend's ``gradient_train_step``; ``check_gramian_blocks`` validates the
argument).

``Plan`` finds the shared variables once: from a functional model's graph
(a variable is shared when the outputs of two or more terms depend on it) or
from the Objective's ``shared=`` argument; in representation mode, the
variables upstream of the named output form the trunk.
"""

import keras
from keras import ops

from lossweave import _keras_compat as keras_compat
from lossweave import arguments

EPSILON = 1e-12
# The key under which a gated train step (JAX, TensorFlow) returns the sum of its checks' failure flags:
# ``guard_step`` reads this one output instead of one record per check, and the records only when it is > 0.
FAILED = "lossweave/failed"


class Plan:
    """The split of an Objective's trainable variables, found once per Objective.

    Attributes:
        shared: one bool per ``objective.trainable_variables``: the variable
            enters the Gramian and receives the aggregated gradient.
        representation: the name of the shared output in representation mode, else None.
        layer: the layer producing that output (representation mode).
        entries: ``(path, shape)`` of what the strategy's rows are gradients
            of: each shared variable, or the one representation (shape with
            a None batch); handed to ``GradientWeighting.build_rows``.
    """

    def __init__(self, objective):
        self.representation = objective.representation
        variables = objective.trainable_variables
        if self.representation is not None:
            self.layer, reached = _representation_trunk(objective)
        elif objective.shared is not None:
            self.layer, reached = None, _named_variables(objective, objective.shared)
        else:
            self.layer, reached = None, _shared_by_graph(objective)
        self.shared = [id(v) in reached for v in variables]
        if self.representation is not None:
            shape = tuple(_output_tensors(objective)[self.representation].shape)
            self.entries = [(f"representation/{self.representation}", shape)]
        else:
            self.entries = [(v.path, tuple(v.shape)) for v, s in zip(variables, self.shared) if s]
        if not any(self.shared) and len(objective.terms) > 1:
            raise ValueError(
                f"Objective: weighting={type(objective.weighting).__name__} combines the gradients of "
                f"the variables the terms share, but no trainable variable is shared by two terms "
                f"(terms read {_term_outputs(objective)}). Check the terms' `on`, or pass `shared=` "
                f"(layers or variable paths)."
            )


def _term_outputs(objective):
    return {name: term.on for name, term in objective.terms.items()}


def _output_tensors(objective):
    """Output name -> KerasTensor of a functional model, or None for a subclassed one."""
    try:
        structure = objective.model.output
    except (AttributeError, ValueError):
        return None
    if isinstance(structure, dict):
        return dict(structure)
    if isinstance(structure, (list, tuple)):
        return dict(zip(objective.model.output_names, structure))
    return {None: structure, **({objective.model.output_names[0]: structure} if objective.model.output_names else {})}


def _upstream_variables(tensor):
    """ids of the trainable variables that a KerasTensor of a functional graph depends on."""
    found, seen, stack = set(), set(), [tensor]
    while stack:
        t = stack.pop()
        history = keras_compat.keras_history(t)
        if history is None:
            continue
        operation, node_index, _ = history
        key = (id(operation), node_index)
        if key in seen:
            continue
        seen.add(key)
        found.update(id(v) for v in getattr(operation, "trainable_variables", []))
        node = keras_compat.inbound_nodes(operation)[node_index]
        stack.extend(node.input_tensors)
    return found


def _needs_graph(objective, what):
    return ValueError(
        f"Objective: {what} needs to know which variables the terms share, but the model "
        f"'{objective.model.name}' is not a functional model whose graph can be read. Pass "
        f"`shared=[layer names, layers or variable paths]` to the Objective (the trunk the terms share)."
    )


def _shared_by_graph(objective):
    outputs = _output_tensors(objective)
    if outputs is None:
        raise _needs_graph(objective, f"weighting={type(objective.weighting).__name__}")
    users = {}
    for term in objective.terms.values():
        names = term.on if isinstance(term.on, tuple) else (term.on,)
        reached = set()
        for name in names:
            reached |= _upstream_variables(outputs[name])
        for key in reached:
            users[key] = users.get(key, 0) + 1
    return {key for key, count in users.items() if count >= 2}


def _named_variables(objective, shared):
    """ids of the variables named by ``shared``: layers, layer names, variables or variable paths."""
    found = set()
    by_path = {v.path: v for v in objective.model.variables}
    for entry in shared:
        if isinstance(entry, keras.layers.Layer):
            found.update(id(v) for v in entry.trainable_variables)
        elif isinstance(entry, keras.Variable):
            found.add(id(entry))
        elif isinstance(entry, str) and entry in by_path:
            found.add(id(by_path[entry]))
        elif isinstance(entry, str):
            try:
                layer = objective.model.get_layer(entry)
            except ValueError:
                raise ValueError(
                    f"Objective: shared={shared!r} names {entry!r}, which is neither a layer of the "
                    f"model nor a variable path; layers: {[l.name for l in objective.model.layers]}."
                ) from None
            found.update(id(v) for v in layer.trainable_variables)
        else:
            raise TypeError(
                f"Objective: `shared` entries must be layers, layer names, variables or variable "
                f"paths; received {type(entry).__name__}."
            )
    return found


def _representation_trunk(objective):
    outputs = _output_tensors(objective)
    name = objective.representation
    if outputs is None:
        raise _needs_graph(objective, f"representation={name!r}")
    if name not in outputs:
        raise ValueError(
            f"Objective: representation={name!r} is not an output of the model; its outputs are "
            f"{[k for k in outputs if k is not None]}. Expose the shared features as a named output."
        )
    layer = keras_compat.producing_layer(outputs[name])
    calls = len(keras_compat.inbound_nodes(layer))
    if calls != 1:
        raise ValueError(
            f"Objective: representation={name!r} is produced by layer '{layer.name}', which the model "
            f"calls {calls} times; give the representation a layer of its own "
            f"(e.g. a keras.layers.Identity) called once."
        )
    return layer, _upstream_variables(outputs[name])


def gramian(rows, k):
    """``sum_v R_v[:k] R_v[:k]^T`` over a list of per-variable rows ``(k or k+1, *shape)``."""
    total = ops.zeros((k, k), "float32")
    for r in rows:
        flat = ops.reshape(ops.cast(r[:k], "float32"), (k, -1))
        total = total + ops.matmul(flat, ops.transpose(flat))
    return total


def finite_terms(rows, k):
    """(k,) bool: term k's gradient rows are finite in every variable."""
    flags = ops.ones((k,), "bool")
    for r in rows:
        flat = ops.reshape(r[:k], (k, -1))
        flags = ops.logical_and(flags, ops.all(ops.isfinite(flat), axis=1))
    return flags


def combine_rows(plan, rows, updates, k):
    """The gradient of each trainable variable from its rows ``(K [+ 1], *shape)``.

    Shared variables get the strategy's ``updates`` (in order); the others
    the sum of their rows. A row K, when there is one, is the regularizers'
    gradient, added once.
    """
    updates = iter(updates)
    grads = []
    for r, shared in zip(rows, plan.shared):
        if shared:
            g = ops.cast(next(updates), r.dtype)
            grads.append(g + r[k] if r.shape[0] > k else g)
        else:
            grads.append(ops.sum(r, axis=0))
    return grads


def cosines(gram):
    """Cosine between each pair of term gradients from their Gramian (0 for a zero gradient)."""
    norms = ops.sqrt(ops.maximum(ops.diagonal(gram), 0.0))
    return gram / ops.maximum(norms[:, None] * norms[None, :], EPSILON)


def check_gramian_blocks(objective, value):
    """``Objective(gramian_blocks=)`` checked against the Objective's strategy and mode: the bool.

    The block-by-block Gramian serves a gradient-level strategy whose rule
    reads the Gramian only (``GradientWeighting.needs_rows`` false) in
    parameter mode; a strategy that reads the rows themselves (GradDrop,
    GradNorm, GradVac, MoCo, DB-MTL) needs all K of them at once.
    """
    value = arguments.boolean(value, "gramian_blocks", "Objective")
    if not value:
        return False
    weighting = type(objective.weighting).__name__
    if not objective.gradient_level:
        raise ValueError(
            f"Objective: gramian_blocks=True builds the Gramian of the term gradients, but weighting="
            f"{weighting} combines losses. Drop it, or pick a gradient-level strategy (UPGrad, MGDA, ...)."
        )
    if objective.representation is not None:
        raise ValueError(
            f"Objective: gramian_blocks=True applies to parameter mode; with representation="
            f"{objective.representation!r} the rows are the representation's gradients (batch x features "
            f"each), already small. Drop one of the two."
        )
    if objective.weighting.needs_rows:
        raise ValueError(
            f"Objective: gramian_blocks=True never holds the K term gradients at once, but weighting="
            f"{weighting} computes its update from the gradients themselves, not from their Gramian. "
            f"Drop gramian_blocks, or pick a strategy that needs only the Gramian (UPGrad, DualProj, MGDA, "
            f"PCGrad, CAGrad, IMTLG, AlignedMTL, ConFIG, NashMTL, Sum, Mean)."
        )
    return True


SMALL_FRACTION = 64  # a variable of at most 1/64 of the largest one never opens a block


def blocks(sizes):
    """Consecutive groups of the shared variables (their ``sizes``): the largest one's size, plus small ones.

    The K rows of one group are what a block-by-block Gramian holds at a
    time, and each group costs K backward passes: a group closes when the
    next variable would take it past the largest variable's size, unless
    that variable is small (at most 1/64 of the largest: a bias joins its
    kernel's group instead of costing K backward passes of its own). Memory:
    K x (largest variable + the small ones beside it).
    """
    budget, groups, current, filled = max(sizes, default=0), [], [], 0
    for index, size in enumerate(sizes):
        if current and filled + size > budget and size * SMALL_FRACTION > budget:
            groups.append(current)
            current, filled = [], 0
        current.append(index)
        filled += size
    return groups + ([current] if current else [])
