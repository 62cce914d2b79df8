"""PyTorch: ``Tensor.index_add_`` on the parameter, and an eager check."""

import torch

from lossweave.errors import InvalidInputError, format_message


def add_to_rows(variable, indices, updates):
    table = variable.value  # the torch Parameter itself (autocast=False)
    with torch.no_grad():
        table.index_add_(0, indices.to(torch.long), updates.to(table.dtype))


def check(ok, message, *values):
    if not bool(ok):
        values = [v.detach().cpu().numpy() if torch.is_tensor(v) else v for v in values]
        raise InvalidInputError(format_message(message, values))
    return ok


def guard_step(model, function, kind):
    """Checks raise inside the step on this backend: nothing to wrap."""
    return function
