"""PyTorch: ``Tensor.index_add_`` on the parameter, and eager checks that raise at once."""

import contextlib

import torch
from keras import ops

from lossweave._backend._common import check_values
from lossweave.errors import InvalidInputError, format_message


def gather_rows(table, indices):
    return ops.take(table, indices, axis=0)


def add_to_rows(variable, indices, updates):
    table = variable.value  # the torch Parameter itself (autocast=False)
    with torch.no_grad():
        table.index_add_(0, indices.to(torch.long), updates.to(table.dtype))


def all_gather(tensors):
    """One program sees the global batch (JAX shards it under ``jit``): nothing to gather."""
    return tensors


def all_reduce(value, op):
    return value


def check(ok, message, *values, record=None):
    if not bool(ok):  # eager: raise before anything is updated
        values = [v.detach().cpu().numpy() if torch.is_tensor(v) else v for v in check_values(values)]
        raise InvalidInputError(format_message(message, values))
    return ok


def recording_checks():
    """Eager checks raise at once, before any state moves: nothing to record."""
    return contextlib.nullcontext()
