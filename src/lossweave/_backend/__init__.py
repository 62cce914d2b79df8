"""Row updates, collectives and checks: backend-specific code outside the train step (private).

One base (``_common.Backend``: one device, eager checks, the deferred row
queue) and one small subclass per backend that overrides what differs; the
instance for ``keras.backend.backend()`` serves the functions below. The train
step itself is ``lossweave.trainer``'s.

``gather_rows(table, indices)`` reads rows of a table (a Keras variable or a
tensor) without touching the rest of it.

``add_to_rows(variable, indices, updates)`` adds ``updates[i]`` to row
``indices[i]`` of a Keras variable (duplicates summed) in O(len(indices) x dim)
time and extra memory, whatever the number of rows: a plain
``variable.assign(new_table)`` would rewrite the whole table on TensorFlow and
PyTorch.

``all_gather(tensors)`` and ``all_reduce(value, op)`` give a replica of a
``tf.distribute`` step the global batch (or a scalar summed / min'd / max'd over
the replicas); on one device and on JAX (where ``keras.distribution`` shards
one global computation) they return their input.

``frank_wolfe(gramian, iterations, tolerance, relative_eps)`` gives MGDA's
Frank-Wolfe weights where a backend has a faster form than the caller's
``ops.while_loop`` (eager PyTorch: the same iterations on the host's
scalars), else None.

``replicated(tensor)`` lays a tensor out whole on every device of a JAX
``keras.distribution`` mesh (a sharding constraint; the tensor itself
elsewhere): an O(batch) vector built from a batch-sharded one before it is
scattered into an O(classes) table keeps XLA from all-reducing the table.

``check(ok, message, *values, record=None)`` makes a failed run-time check
(scalar ``ok`` false) raise ``lossweave.InvalidInputError`` with
``message.format(*values)``, and returns ``ok``: callers gate their loss and
state update on the returned flag. Inside ``recording_checks()`` (entered by
the guarded steps of ``lossweave.trainer``) the failure is recorded in
``record`` (an ``InputCheck``) and raised after the step; see
``lossweave.terms.check`` for why. Variables marked with ``mark_self_gated``
(the centers, whose term skips its own row update) are left out of the
trainer's failed-step gate, so that it costs nothing of size classes x dim.
Inside ``deferred_rows()`` (entered by the Objective around its terms) their
row updates are queued instead; ``apply_rows(pending, ok)`` then adds them
only where ``ok``, once every check of the step is known: a failed step moves
no row of them, whichever term failed.
"""


import importlib

import keras

from lossweave._backend._common import Backend, check_values, mark_self_gated, self_gated


def _backend(name):
    importlib.import_module(f"lossweave._backend._{name}")
    return {cls.name: cls for cls in Backend.__subclasses__()}[name]()


_impl = _backend(keras.backend.backend())

add_to_rows = _impl.add_to_rows
all_gather = _impl.all_gather
all_reduce = _impl.all_reduce
apply_rows = _impl.apply_rows
check = _impl.check
deferred_rows = _impl.deferred_rows
frank_wolfe = _impl.frank_wolfe
gather_rows = _impl.gather_rows
map_in_turn = _impl.map_in_turn
recording_checks = _impl.recording_checks
replicated = _impl.replicated

__all__ = [
    "add_to_rows",
    "all_gather",
    "apply_rows",
    "all_reduce",
    "check",
    "check_values",
    "deferred_rows",
    "frank_wolfe",
    "gather_rows",
    "map_in_turn",
    "mark_self_gated",
    "recording_checks",
    "replicated",
    "self_gated",
]
