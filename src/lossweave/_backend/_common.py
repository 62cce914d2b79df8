"""The backend base: single-device, eager defaults; each backend's subclass overrides what differs.

``Backend`` also owns what no backend changes: the deferred row queue
(``deferred_rows`` / ``apply_rows``) and the ``recording_checks`` scope.
"""

import contextlib
import threading
import types

import numpy as np
from keras import ops

from lossweave.errors import InvalidInputError, format_message

_SELF_GATED = "_lossweave_self_gated"


def mark_self_gated(variable):
    """Mark a variable whose term already skips its update on a failed input check.

    ``gate_train_step`` undoes a failed step by selecting the old value of
    every other variable; a marked one (a centers table, updated row by row in
    O(batch x dim)) is left out so that the gate never touches the whole table.
    """
    setattr(variable, _SELF_GATED, True)
    return variable


def self_gated(variable):
    """Whether ``mark_self_gated`` marked ``variable``."""
    return bool(getattr(variable, _SELF_GATED, False))


def check_values(values):
    """The values of a check's message: as given, or computed by the one callable given.

    ``check_class_rows`` passes a callable so that a step pays for the values only
    where they are needed: when a check fails eagerly, or in a graph's assert.
    """
    if len(values) == 1 and callable(values[0]):
        return tuple(values[0]())
    return values


class Backend:
    """One device, eager checks; a subclass per backend (``name``) overrides what differs.

    A subclass must give ``_add_rows(variable, indices, updates)``: add
    ``updates[i]`` to row ``indices[i]`` of a Keras variable, duplicates summed,
    in O(len(indices) x dim) time and extra memory whatever the number of rows.
    """

    name = None  # keras.backend.backend() of the subclass

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if not callable(getattr(cls, "_add_rows", None)):  # said when the class is written, not at the first update
            raise TypeError(f"{cls.__name__} (a lossweave backend) must define _add_rows(variable, indices, updates).")

    def __init__(self):
        # The pending row updates of the enclosing deferred_rows() blocks, per thread:
        # tf.distribute's MirroredStrategy traces each replica's step in a thread of its own.
        self._queues = threading.local()
        # The depth of recording_checks() blocks; shared by threads unless a subclass says otherwise.
        self._recording = types.SimpleNamespace(depth=0)

    def gather_rows(self, table, indices):
        """Rows ``indices`` of ``table`` (a Keras variable or a tensor)."""
        return ops.take(table, indices, axis=0)

    def map_in_turn(self, fn, xs):
        """``ops.map(fn, xs)`` over the leading axis of the tuple ``xs``, one iteration live at a time.

        For a loop over blocks whose purpose is memory (each block's temporaries
        freed before the next is formed): ``ops.map`` is such a loop on JAX
        (``lax.map``) and PyTorch (a Python loop); TensorFlow overrides it.
        """
        return ops.map(fn, xs)

    def add_to_rows(self, variable, indices, updates):
        """Add ``updates[i]`` to row ``indices[i]`` of ``variable`` (queued inside ``deferred_rows``)."""
        queues = self._pending()
        if queues and self_gated(variable):
            queues[-1].append((variable, indices, updates))
        else:
            self._add_rows(variable, indices, updates)

    def _pending(self):
        if not hasattr(self._queues, "stack"):
            self._queues.stack = []
        return self._queues.stack

    @contextlib.contextmanager
    def deferred_rows(self):
        """Queue the row updates of self-gated variables made inside; yields the queue for ``apply_rows``."""
        pending = []
        self._pending().append(pending)
        try:
            yield pending
        finally:
            self._pending().pop()

    def apply_rows(self, pending, ok):
        """Apply queued row updates where the scalar ``ok`` is true, else add -0.0 (which keeps every bit)."""
        for variable, indices, updates in pending:
            self._add_rows(variable, indices, ops.where(ok, updates, ops.negative(ops.zeros_like(updates))))

    def all_gather(self, tensors):
        """The global batch: on one program (and on JAX, which shards it under ``jit``) ``tensors`` itself."""
        return tensors

    def all_reduce(self, value, op):
        """``op`` ("sum", "min" or "max") of a scalar over the replicas: ``value`` itself on one program."""
        return value

    def replicated(self, tensor):
        """``tensor`` whole on every device of a ``keras.distribution`` mesh: itself off JAX."""
        return tensor

    def frank_wolfe(self, gramian, iterations, tolerance, relative_eps):
        """MGDA's Frank-Wolfe weights in this backend's fastest form, or None: the caller's ``ops.while_loop``.

        Compiled backends (JAX, TensorFlow) run the caller's loop inside the
        step; eager PyTorch overrides this (``frank_wolfe_on_host``).
        """
        return None

    def check(self, ok, message, *values, record=None):
        """Eager: raise ``InvalidInputError`` at once, before any state moves, where ``ok`` is false."""
        self._raise(ok, message, values)
        return ok

    @staticmethod
    def _raise(ok, message, values):
        if not bool(ok):  # an eager scalar (a NumPy round trip costs ~25 us per check on PyTorch)
            shown = [ops.convert_to_numpy(v) for v in check_values(values)]
            raise InvalidInputError(format_message(message, shown))

    @property
    def recording(self):
        """Whether a ``recording_checks()`` block is open (only compiled checks consult it)."""
        return getattr(self._recording, "depth", 0) > 0

    @contextlib.contextmanager
    def recording_checks(self):
        """Compiled checks made inside are recorded in their ``InputCheck``; eager ones still raise at once."""
        self._recording.depth = getattr(self._recording, "depth", 0) + 1
        try:
            yield
        finally:
            self._recording.depth -= 1

    @staticmethod
    def _record(record, ok, message, values):
        """Record a check in its ``InputCheck`` (``values`` may be one callable, run only on a failure)."""
        record.message = message
        record.update_state(ok, values)


def frank_wolfe_on_host(gramian, iterations, tolerance, relative_eps):
    """Algorithm 2 of Sener & Koltun (2018) on a float64 NumPy ``(K, K)`` Gramian: the ``(K,)`` weights.

    The iterations of ``lossweave.ops.aggregators.mgda._frank_wolfe`` (start
    ``1/K``; ``t = argmin_r (G w)_r``; Algorithm 1's exact line search between
    ``d = w @ J`` and ``g_t`` with the same float32-rounding slack and tie
    rule; stop when a step's L1 change is below ``tolerance`` or after
    ``iterations`` steps), on scalars: for an eager backend, where each of
    that loop's ~30 tensor ops per step costs ~20 us of dispatch (~130 ms for
    250 steps at K = 10 on PyTorch), these cost ~1.5 ms, in float64.
    """
    k = gramian.shape[0]
    alpha = np.full((k,), 1.0 / k)
    for _ in range(iterations):
        ga = gramian @ alpha
        t = int(np.argmin(ga))
        aa, ab, bb = float(gramian[t, t]), float(ga[t]), float(alpha @ ga)
        slack = relative_eps * max(abs(aa), abs(bb))
        a_wins, b_wins = ab >= aa - slack, ab >= bb - slack
        if b_wins:  # g_t does not beat d (a tie included): stay
            gamma = 0.0
        elif a_wins:
            gamma = 1.0
        else:
            denominator = (aa - ab) + (bb - ab)
            gamma = min(max((bb - ab) / (denominator if denominator > 0 else 1.0), 0.0), 1.0)
        new = alpha * (1.0 - gamma)
        new[t] += gamma
        change = float(np.sum(np.abs(new - alpha)))
        alpha = new
        if change < tolerance:
            break
    return alpha / np.sum(alpha)
