"""GradDrop (Chen et al., NeurIPS 2020): keep, element by element, the gradients of one sign."""

from keras import ops
from keras import random

from lossweave import arguments


def check_leak(leak, k=None):
    """The leak as a float or a list of K floats in [0, 1], or a ValueError.

    The leak is the fraction of each term's gradient that passes whatever the
    sign chosen (0 in the paper's GradDrop).
    """
    if not isinstance(leak, (list, tuple)):
        return arguments.number(leak, "leak", "GradDrop", low=0.0, high=1.0)
    if k is not None and len(leak) != k:
        raise ValueError(
            f"GradDrop: received leak={leak!r}; expected a number in [0, 1] or a list of one "
            f"such number per term ({k} terms)."
        )
    return [arguments.number(v, f"leak[{i}]", "GradDrop", low=0.0, high=1.0) for i, v in enumerate(leak)]


def sign_purity(statistics):
    """Eq. 1: ``P = 1/2 (1 + sum_k G_k / sum_k |G_k|)`` elementwise (1/2 where every ``G_k`` is 0).

    Args:
        statistics: ``(K, *shape)`` per-term gradient statistics ``G_k``.

    Example:
        >>> [round(float(p), 4) for p in sign_purity([[1.0, -2.0, 0.0], [3.0, 1.0, 0.0]])]
        [1.0, 0.3333, 0.5]
    """
    statistics = ops.cast(ops.convert_to_tensor(statistics), "float32")
    total = ops.sum(statistics, axis=0)
    mass = ops.sum(ops.abs(statistics), axis=0)
    ratio = ops.where(mass > 0, total / ops.where(mass > 0, mass, ops.ones_like(mass)), ops.zeros_like(mass))
    return 0.5 * (1.0 + ratio)


def graddrop(rows, seed=None, uniforms=None, leak=0.0, batched=False, activations=None):
    """GradDrop's update of each entry: ``(updates, kept)``.

    Chen, Ngiam, Huang, Luong, Kretzschmar, Chai & Anguelov, "Just Pick a
    Sign: Optimizing Deep Multitask Models with Gradient Sign Dropout",
    NeurIPS 2020, Eq. 1-3 and Algorithm 1. Elementwise, with ``G_k`` term
    k's gradient statistic::

        P = 1/2 (1 + sum_k G_k / sum_k |G_k|)                  # Eq. 1: positive sign purity
        U ~ Uniform(0, 1), one draw per element of P
        M_k = [P > U] [G_k > 0] + [P < U] [G_k < 0]              # Eq. 2: keep one sign
        update = sum_k (leak_k + (1 - leak_k) M_k) grad_k       # Eq. 3

    with the identity as the paper's monotone ``f(P)``. Where P is high the
    positive gradients survive, where it is low the negative ones; an
    element whose gradients all agree keeps them all.

    ``batched=True`` is the paper's setting, gradients with respect to
    shared activations ``A`` of shape ``(batch, *features)``: the statistic
    sums over the batch, ``G_k = sum_batch sgn(A) grad_k`` (as LibMTL's
    ``GradDrop.py``; without ``activations`` the ``sgn(A)`` factor is left
    out), and each mask element is shared by the whole batch. The
    ``sgn(A)``-weighted batch sum is the sign of the gradient of a weight
    that reads ``A``; with ``batched=False`` (gradients of the shared
    variables themselves) ``G_k = grad_k``, that sign itself, as in
    torchjd's ``GradDrop`` over a Jacobian. Elementwise, no loop over
    elements or budget; given the draws ``U`` it is exact (matches an
    element-by-element float64 reference to 1e-5 relative).

    Args:
        rows: one float ``(K, *shape)`` tensor per entry (``(K, batch,
            *features)`` when ``batched``); row k is term k's gradient.
        seed: an int or ``keras.random.SeedGenerator`` drawing ``U``; or
            ``uniforms``: one explicit ``U`` per entry shaped like ``P``
            (tests). Give exactly one.
        leak: a number in [0, 1], or one per term (the paper's ``l_i``).
        batched: the rows carry a batch axis (axis 1), summed in ``G_k``.
        activations: with ``batched``, one ``(batch, *features)`` tensor per
            entry whose signs weight the batch sum (or None).

    Returns:
        One float32 ``(*shape)`` update per entry, and the ``(K,)`` kept
        fraction of each term: ``sum |keep_k grad_k| / sum |grad_k|`` over
        every entry (1 for a zero gradient: nothing was dropped).

    Example:
        >>> rows = [[[1.0, -2.0], [3.0, 1.0]]]            # P = (1, 1/3)
        >>> updates, kept = graddrop(rows, uniforms=[[0.5, 0.5]])
        >>> [float(v) for v in updates[0]]                 # element 1: U > P keeps the negative -2
        [4.0, -2.0]
        >>> [round(float(v), 4) for v in kept]
        [1.0, 0.75]
    """
    rows = [ops.cast(ops.convert_to_tensor(r), "float32") for r in rows]
    if not rows:
        raise ValueError("GradDrop: received no rows; expected one (K, *shape) tensor per shared entry.")
    if (seed is None) == (uniforms is None):
        raise ValueError(
            f"GradDrop: received seed={seed!r} and uniforms={'None' if uniforms is None else 'given'}; "
            f"expected exactly one: a seed (an int or a keras.random.SeedGenerator) drawing the "
            f"uniform U of each element, or explicit uniforms, one per entry shaped like P (tests)."
        )
    if activations is not None and (not batched or len(activations) != len(rows)):
        raise ValueError(
            f"GradDrop: received {len(activations)} activations for {len(rows)} entries with "
            f"batched={batched}; activations weight the batch sum of batched rows, one "
            f"(batch, *features) tensor per entry."
        )
    if uniforms is not None and len(uniforms) != len(rows):
        raise ValueError(f"GradDrop: received {len(uniforms)} uniforms for {len(rows)} entries; expected one each.")
    k = rows[0].shape[0]
    leak = check_leak(leak, k)
    updates, kept_mass, mass = [], None, None
    for index, r in enumerate(rows):
        if len(r.shape) < (3 if batched else 2):
            raise ValueError(
                f"GradDrop: received rows of shape {tuple(r.shape)}; expected (K, {'batch, ' if batched else ''}"
                f"*shape) with at least one element axis."
            )
        statistics = r
        if batched:
            if activations is not None:
                signs = ops.sign(ops.cast(ops.convert_to_tensor(activations[index]), "float32"))
                statistics = statistics * signs[None]
            statistics = ops.sum(statistics, axis=1)
        purity = sign_purity(statistics)
        if uniforms is None:
            draw = random.uniform(tuple(purity.shape), dtype="float32", seed=seed)
        else:
            draw = ops.cast(ops.convert_to_tensor(uniforms[index]), "float32")
            if tuple(draw.shape) != tuple(purity.shape):
                raise ValueError(
                    f"GradDrop: received uniforms[{index}] of shape {tuple(draw.shape)}; expected the "
                    f"shape of P, {tuple(purity.shape)}."
                )
        positive = ops.logical_and(purity[None] > draw[None], statistics > 0)
        negative = ops.logical_and(purity[None] < draw[None], statistics < 0)
        mask = ops.cast(ops.logical_or(positive, negative), "float32")  # (K, *shape of P)
        if isinstance(leak, list):
            share = ops.reshape(ops.convert_to_tensor(leak, "float32"), (k,) + (1,) * (len(mask.shape) - 1))
        else:
            share = leak
        keep = share + (1.0 - share) * mask
        if batched:
            keep = keep[:, None]
        kept = keep * r
        updates.append(ops.sum(kept, axis=0))
        flat_kept = ops.sum(ops.reshape(ops.abs(kept), (k, -1)), axis=1)
        flat_all = ops.sum(ops.reshape(ops.abs(r), (k, -1)), axis=1)
        kept_mass = flat_kept if kept_mass is None else kept_mass + flat_kept
        mass = flat_all if mass is None else mass + flat_all
    fraction = ops.where(mass > 0, kept_mass / ops.where(mass > 0, mass, ops.ones_like(mass)), ops.ones_like(mass))
    return updates, fraction
