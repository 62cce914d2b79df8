"""Backend-independent helpers of the per-backend files."""

_SELF_GATED = "_lossweave_self_gated"


def mark_self_gated(variable):
    """Mark a variable whose term already skips its update on a failed input check.

    ``gate_train_step`` undoes a failed step by selecting the old value of
    every other variable; a marked one (a centers table, updated row by row in
    O(batch x dim)) is left out so that the gate never touches the whole table.
    """
    setattr(variable, _SELF_GATED, True)
    return variable


def check_values(values):
    """The values of a check's message: as given, or computed by the one callable given.

    ``check_class_rows`` passes a callable so that a step pays for the values only
    where they are needed: when a check fails eagerly, or in a graph's assert.
    """
    if len(values) == 1 and callable(values[0]):
        return tuple(values[0]())
    return values


def self_gated(variable):
    """Whether ``mark_self_gated`` marked ``variable``."""
    return bool(getattr(variable, _SELF_GATED, False))


def replicated(tensor):
    """``tensor`` whole on every device of a ``keras.distribution`` mesh: itself off JAX (see ``_jax``)."""
    return tensor
