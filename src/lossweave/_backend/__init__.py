"""Row updates, collectives and checks: backend-specific code outside the train step (private).

One small file per backend; the train step itself is ``lossweave.trainer``'s.

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

import contextlib
import importlib
import threading

import keras
from keras import ops

from lossweave._backend import _common
from lossweave._backend._common import check_values, mark_self_gated, self_gated

_impl = importlib.import_module(f"lossweave._backend._{keras.backend.backend()}")
# The pending row updates of the enclosing deferred_rows() blocks, per thread:
# tf.distribute's MirroredStrategy traces each replica's step in a thread of its own.
_local = threading.local()


def _queues():
    if not hasattr(_local, "queues"):
        _local.queues = []
    return _local.queues


def add_to_rows(variable, indices, updates):
    """Add ``updates[i]`` to row ``indices[i]`` of ``variable`` (queued inside ``deferred_rows``)."""
    queues = _queues()
    if queues and self_gated(variable):
        queues[-1].append((variable, indices, updates))
    else:
        _impl.add_to_rows(variable, indices, updates)


@contextlib.contextmanager
def deferred_rows():
    """Queue the row updates of self-gated variables made inside; yields the queue for ``apply_rows``."""
    pending = []
    _queues().append(pending)
    try:
        yield pending
    finally:
        _queues().pop()


def apply_rows(pending, ok):
    """Apply queued row updates where the scalar ``ok`` is true, else add -0.0 (which keeps every bit)."""
    for variable, indices, updates in pending:
        _impl.add_to_rows(variable, indices, ops.where(ok, updates, ops.negative(ops.zeros_like(updates))))

all_gather = _impl.all_gather
all_reduce = _impl.all_reduce
check = _impl.check
gather_rows = _impl.gather_rows
recording_checks = _impl.recording_checks
replicated = getattr(_impl, "replicated", _common.replicated)

__all__ = [
    "add_to_rows",
    "all_gather",
    "apply_rows",
    "all_reduce",
    "check",
    "check_values",
    "deferred_rows",
    "gather_rows",
    "mark_self_gated",
    "recording_checks",
    "replicated",
    "self_gated",
]
