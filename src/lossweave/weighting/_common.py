"""Small helpers shared by the weighting strategies (private)."""


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
