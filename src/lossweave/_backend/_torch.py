"""PyTorch: ``Tensor.index_add_`` on the parameter; the base's eager checks raise at once."""

import torch

from lossweave._backend._common import Backend


class TorchBackend(Backend):
    """Row updates in place on the ``torch.nn.Parameter``; everything else the base's."""

    name = "torch"

    def _add_rows(self, variable, indices, updates):
        table = variable.value  # the torch Parameter itself (autocast=False)
        with torch.no_grad():
            table.index_add_(0, indices.to(torch.long), updates.to(table.dtype))
