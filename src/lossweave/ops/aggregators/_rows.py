"""What the aggregators over the term gradients themselves (rows, not a Gramian) share."""

from keras import ops


def as_rows(rows, k, what):
    """Each entry's rows as a float32 ``(K, *shape)`` tensor, or a ValueError naming the shape."""
    rows = [ops.cast(ops.convert_to_tensor(r), "float32") for r in rows]
    for r in rows:
        if len(r.shape) < 1 or r.shape[0] != k:
            raise ValueError(
                f"{what}: received rows of shape {tuple(r.shape)}; expected (K, *shape) with K = {k} "
                f"(row k: term k's gradient of the entry)."
            )
    return rows


def as_losses(losses, k, what):
    losses = ops.cast(ops.convert_to_tensor(losses), "float32")
    if tuple(losses.shape) != (k,):
        raise ValueError(f"{what}: received losses of shape {tuple(losses.shape)}; expected ({k},), one per term.")
    return losses


def as_state_like(state, rows, what, name):
    """One float32 state tensor per entry, shaped like that entry's rows."""
    state = [ops.cast(ops.convert_to_tensor(s), "float32") for s in state]
    if len(state) != len(rows) or any(tuple(s.shape) != tuple(r.shape) for s, r in zip(state, rows)):
        raise ValueError(
            f"{what}: received {name} of shapes {[tuple(s.shape) for s in state]} for rows of shapes "
            f"{[tuple(r.shape) for r in rows]}; expected one per entry, shaped like its rows."
        )
    return state


def per_term(vector, like):
    """A ``(K,)`` vector reshaped to broadcast against ``(K, *shape)`` rows."""
    return ops.reshape(vector, (vector.shape[0],) + (1,) * (len(like.shape) - 1))


def squared_norms(rows, k):
    """``(K,)``: each term's squared gradient norm over all the entries together."""
    total = ops.zeros((k,), "float32")
    for r in rows:
        total = total + ops.sum(ops.reshape(r * r, (k, -1)), axis=1)
    return total


def gramian_of(rows, k):
    """``(K, K)``: the Gramian of the rows, summed over the entries."""
    total = ops.zeros((k, k), "float32")
    for r in rows:
        flat = ops.reshape(r, (k, -1))
        total = total + ops.matmul(flat, ops.transpose(flat))
    return total
