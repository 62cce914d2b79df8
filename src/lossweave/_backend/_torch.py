"""PyTorch: ``Tensor.index_add_`` on the parameter; MGDA's Frank-Wolfe on scalars; the base's eager checks."""

import torch

from lossweave._backend._common import Backend, frank_wolfe_on_host


class TorchBackend(Backend):
    """Row updates in place on the ``torch.nn.Parameter``; everything else the base's."""

    name = "torch"

    def _add_rows(self, variable, indices, updates):
        table = variable.value  # the torch Parameter itself (autocast=False)
        with torch.no_grad():
            table.index_add_(0, indices.to(torch.long), updates.to(table.dtype))

    def frank_wolfe(self, gramian, iterations, tolerance, relative_eps):
        """The Frank-Wolfe loop on the host's scalars: one ``(K, K)`` read instead of a sync per step.

        Eager PyTorch runs ``ops.while_loop`` as a Python loop of ~30 tensor
        ops and one host sync per step; the same iterations on a float64 copy
        of the small Gramian (``frank_wolfe_on_host``) cost ~1/100 of that at
        K = 10, and on a GPU one transfer each way instead of 250 syncs. A
        Gramian on the ``meta`` device (Keras's shape inference) keeps the
        caller's loop.
        """
        if not isinstance(gramian, torch.Tensor) or gramian.device.type == "meta":
            return None
        host = gramian.detach().to("cpu", torch.float64).numpy()
        weights = frank_wolfe_on_host(host, iterations, tolerance, relative_eps)
        return torch.as_tensor(weights, dtype=torch.float32).to(gramian.device)
