"""lossweave._backend on the current backend, and the NumPy backend's eager checks (in a subprocess)."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from keras import ops

import lossweave as lw
from lossweave import _backend as backend
from lossweave._backend._common import Backend
from conftest import BACKEND, one_backend, to_numpy


def _table(values):
    return keras.Variable(np.asarray(values, "float32"), trainable=False, autocast=False)


class _Record:
    """Stands for an ``InputCheck``: what ``check`` records in it."""

    def __init__(self):
        self.message, self.calls = None, []

    def update_state(self, ok, values):
        self.calls.append((ok, values))


def test_the_instance_is_the_current_backends():
    assert backend._impl.name == BACKEND
    assert isinstance(backend._impl, Backend)


def test_a_backend_without_row_updates_is_refused_when_written():
    with pytest.raises(TypeError, match=r"NoRows \(a lossweave backend\) must define _add_rows"):
        type("NoRows", (Backend,), {"name": "none"})


@pytest.mark.parametrize("as_variable", [True, False])
def test_gather_rows_reads_the_rows_asked_for(as_variable):
    table = np.arange(12, dtype="float32").reshape(4, 3)
    source = _table(table) if as_variable else ops.convert_to_tensor(table)
    rows = backend.gather_rows(source, ops.convert_to_tensor(np.array([3, 0, 3], "int32")))
    np.testing.assert_array_equal(to_numpy(rows), table[[3, 0, 3]])


def test_add_to_rows_sums_duplicate_indices_and_leaves_other_rows():
    table = _table(np.ones((4, 2)))
    indices = ops.convert_to_tensor(np.array([2, 0, 2], "int32"))
    updates = ops.convert_to_tensor(np.array([[1.0, 2.0], [10.0, 20.0], [100.0, 200.0]], "float32"))
    backend.add_to_rows(table, indices, updates)
    np.testing.assert_array_equal(to_numpy(table), [[11, 21], [1, 1], [102, 203], [1, 1]])


def test_map_in_turn_equals_ops_map_over_a_tuple_of_blocks():
    xs = (np.arange(24, dtype="float32").reshape(3, 2, 4), np.ones((3, 2, 4), "float32"))
    fn = lambda block: ops.sum(block[0] * 2.0 + block[1], axis=-1)
    np.testing.assert_array_equal(to_numpy(backend.map_in_turn(fn, xs)), to_numpy(ops.map(fn, xs)))


def test_collectives_and_replicated_are_the_identity_off_a_distribution():
    x = ops.convert_to_tensor(np.arange(6, dtype="float32").reshape(3, 2))
    tensors = (x, None)
    assert backend.all_gather(tensors) is tensors  # terms.sampling tells "one program" by identity
    scalar = ops.convert_to_tensor(np.float32(4.0))
    for op in ("sum", "min", "max"):
        assert backend.all_reduce(scalar, op) is scalar
    np.testing.assert_array_equal(to_numpy(backend.replicated(x)), to_numpy(x))


def test_check_passes_ok_through_without_computing_the_values():
    calls = []
    ok = ops.convert_to_tensor(True)
    assert bool(to_numpy(backend.check(ok, "{} bad", lambda: calls.append(1) or (1,))))
    assert calls == []


@pytest.mark.parametrize("lazy", [False, True], ids=["values", "callable"])
def test_a_failed_check_raises_with_the_formatted_message(lazy):
    bad, batch = ops.convert_to_tensor(np.int32(3)), ops.convert_to_tensor(np.int32(8))
    labels = ops.convert_to_tensor(np.array([0.0, 7.5], "float32"))
    values = [lambda: (bad, batch, labels)] if lazy else [bad, batch, labels]
    with pytest.raises(lw.InvalidInputError) as raised:
        backend.check(ops.convert_to_tensor(False), "{} bad rows of {}; labels {}", *values, record=_Record())
    assert str(raised.value) == "3 bad rows of 8; labels [0.0, 7.5]"


def test_mark_self_gated_marks_only_that_variable():
    marked, other = _table([1.0]), _table([1.0])
    assert backend.mark_self_gated(marked) is marked
    assert backend.self_gated(marked) and not backend.self_gated(other)


def test_check_values_computes_one_callable_only():
    assert backend.check_values((lambda: [1, 2],)) == (1, 2)
    assert backend.check_values((1, 2)) == (1, 2)


def test_recording_checks_nests_and_closes():
    assert not backend._impl.recording
    with backend.recording_checks():
        with backend.recording_checks():
            assert backend._impl.recording
        assert backend._impl.recording
    assert not backend._impl.recording


@pytest.mark.skipif(BACKEND != "jax", reason="JAX records every check made inside recording_checks")
def test_jax_records_a_failed_check_inside_recording_checks():
    record, ok = _Record(), ops.convert_to_tensor(False)
    with backend.recording_checks():
        assert backend.check(ok, "{} bad", 3, record=record) is ok
    assert record.message == "{} bad" and len(record.calls) == 1 and record.calls[0][1] == (3,)


@pytest.mark.skipif(BACKEND == "jax", reason="eager checks raise at once on TensorFlow, PyTorch and NumPy")
def test_an_eager_check_raises_inside_recording_checks():
    record = _Record()
    with backend.recording_checks(), pytest.raises(lw.InvalidInputError, match="^3 bad$"):
        backend.check(ops.convert_to_tensor(False), "{} bad", 3, record=record)
    assert record.calls == []


def _signed_zero_table():
    return _table([[-0.0, 1.5], [float("nan"), -0.0], [2.0, 3.0]])


@pytest.mark.parametrize("ok", [False, True])
def test_deferred_rows_wait_for_apply_rows_and_keep_every_bit_when_not_ok(ok):
    gated, plain = backend.mark_self_gated(_signed_zero_table()), _table(np.zeros((3, 2)))
    before = to_numpy(gated).tobytes()
    indices = ops.convert_to_tensor(np.array([0, 1, 0], "int32"))
    updates = ops.convert_to_tensor(np.array([[1.0, 1.0], [2.0, 2.0], [4.0, 4.0]], "float32"))
    with backend.deferred_rows() as pending:
        backend.add_to_rows(gated, indices, updates)
        backend.add_to_rows(plain, indices, updates)  # not self-gated: added at once
        assert len(pending) == 1 and to_numpy(gated).tobytes() == before
        np.testing.assert_array_equal(to_numpy(plain), [[5, 5], [2, 2], [0, 0]])
    backend.add_to_rows(gated, indices, ops.zeros_like(updates))  # outside the block: at once (adds +0.0)
    assert not np.signbit(to_numpy(gated)[0, 0])
    gated.assign(_signed_zero_table().value)
    backend.apply_rows(pending, ops.convert_to_tensor(ok))
    if ok:
        np.testing.assert_array_equal(to_numpy(gated), [[5.0, 6.5], [np.nan, 2.0], [2.0, 3.0]])
    else:
        assert to_numpy(gated).tobytes() == before


_NUMPY_PROBE = """
import json
import numpy as np
import lossweave as lw

def error(call):
    try:
        call()
    except Exception as e:
        return [type(e).__name__, str(e)]
    return None

x = np.zeros((2, 4), "float32")
print(json.dumps({
    "backend": __import__("keras").backend.backend(),
    "softmax_bad": error(lambda: lw.terms.SoftmaxCrossEntropy()(x, np.array([0, 7]))),
    "center_bad": error(lambda: lw.terms.CenterLoss(num_classes=3)(x[:, :2], np.array([0, 5]))),
    "softmax": float(lw.terms.SoftmaxCrossEntropy()(x, np.array([0, 3]))),
    "center": float(lw.terms.CenterLoss(num_classes=3)(np.ones((2, 2), "float32"), np.array([0, 2]))),
}))
"""


@one_backend
def test_numpy_backend_terms_raise_invalid_input_and_compute_good_batches():
    env = {**os.environ, "KERAS_BACKEND": "numpy"}
    done = subprocess.run([sys.executable, "-c", _NUMPY_PROBE], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["backend"] == "numpy"
    assert result["softmax_bad"][0] == "InvalidInputError", result["softmax_bad"]
    assert "1 row(s) with an invalid label (first: 7.0)" in result["softmax_bad"][1]
    assert result["center_bad"][0] == "InvalidInputError", result["center_bad"]
    assert "(first: 5.0)" in result["center_bad"][1]
    assert result["softmax"] == pytest.approx(np.log(4.0), rel=1e-6)  # uniform logits over 4 classes
    # Centers start at zero: half the mean squared distance per sample, 0.5 * ||(1, 1)||^2 = 1.
    assert result["center"] == pytest.approx(1.0, rel=1e-6)
