"""Small helpers shared by the weighting strategies (private)."""

from keras import ops


def check_known_terms(owner, what, given, term_names):
    """A ValueError when ``given`` names terms the objective does not have."""
    unknown = sorted(set(given) - set(term_names))
    if unknown:
        raise ValueError(
            f"{owner}: received {what} for {unknown}, which are not terms of the "
            f"objective; the terms are {list(term_names)}."
        )


def term_names(weighting):
    """The names given to ``setup``, or a clear error when it was never called."""
    if weighting.term_names is None:
        raise ValueError(
            f"{type(weighting).__name__}: setup(term_names) was not called. An Objective "
            "calls it; standalone, call weighting.setup([...names...]) before combine."
        )
    return weighting.term_names


def stack_losses(weighting, losses):
    """The term losses as one float32 vector in ``setup`` order."""
    names = term_names(weighting)
    if set(losses) != set(names):
        raise ValueError(
            f"{type(weighting).__name__}: received losses for {sorted(losses)}, but setup "
            f"was given the terms {names}; they must be the same."
        )
    return ops.stack([ops.reshape(ops.cast(losses[n], "float32"), ()) for n in names])


def weighted_sum(losses, weights):
    """``sum_k w_k * L_k`` in float32 over the terms of ``losses``."""
    total = ops.zeros((), "float32")
    for name, loss in losses.items():
        total = total + ops.cast(weights[name], "float32") * ops.cast(loss, "float32")
    return total


def unstack_weights(weighting, vector):
    """A ``{term: scalar}`` dict from a weight vector in ``setup`` order."""
    return {name: vector[i] for i, name in enumerate(weighting.term_names)}
