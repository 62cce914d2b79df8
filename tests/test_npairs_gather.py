"""N-pairs on gathered pairs (``ops.pairs.npairs_loss``): the edges of its ``batch // 2`` slots, on every backend.

The loss gathers the anchors and their positives into ``max(batch // 2, 1)``
padded slots (``top_k`` of a row score, ``take``: engine-specific ops). Here:
every slot filled (each class exactly two rows), an odd batch, padding with
rows left out (weight 0, NaN), and the gradient of Eq. 3 against central
differences of the NumPy reference (``tests/test_pairs.py``).
"""
import numpy as np
import pytest

from conftest import BACKEND, gradient, to_numpy
from lossweave.ops import pairs as P
from test_pairs import TOL, np_npairs

CASES = {
    "every slot filled": (np.array([0, 1, 2, 3, 0, 1, 2, 3]), None),
    "odd batch": (np.array([4, 1, 4, 2, 1, 2, 9]), None),
    "left-out rows pad": (np.array([0, 0, 1, 1, 2, 2, 3, 3]), np.array([1.0, 1.0, 2.0, 1.0, 0.0, 1.0, 0.5, 1.0])),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_gathered_npairs_matches_eq3_value_and_gradient(case):
    y, w = CASES[case]
    x = np.random.default_rng(5).normal(size=(len(y), 3)).astype("float32")
    value = float(to_numpy(P.npairs_loss(x, y, 0.1, w)))
    np.testing.assert_allclose(value, np_npairs(x, y, 0.1, w), **TOL)
    grad = gradient(lambda v: P.npairs_loss(v, y, 0.1, w), x)
    numeric = np.zeros_like(grad)
    for index in np.ndindex(*x.shape):
        step = np.zeros(x.shape)
        step[index] = 1e-4
        numeric[index] = (np_npairs(x + step, y, 0.1, w) - np_npairs(x - step, y, 0.1, w)) / 2e-4
    np.testing.assert_allclose(grad, numeric, rtol=1e-3, atol=1e-4)


def test_a_nan_row_in_the_padding_leaves_no_nan():
    y = np.array([0, 0, 1, 1, 2])
    x = np.random.default_rng(6).normal(size=(5, 3)).astype("float32")
    x[4] = np.nan  # a row of its own class: never an anchor, it may sit in a padded slot
    grad = gradient(lambda v: P.npairs_loss(v, y), x)
    assert np.all(np.isfinite(grad)) and np.all(grad[4] == 0.0)
    np.testing.assert_allclose(float(to_numpy(P.npairs_loss(x, y))), np_npairs(x[:4], y[:4]), **TOL)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="a batch size unknown when traced: a TensorFlow graph only")
def test_a_batch_size_unknown_when_traced_gives_eq3_and_an_empty_batch_zero():
    import tensorflow as tf

    loss = tf.function(lambda e, l: P.npairs_loss(e, l, 0.1),
                       input_signature=[tf.TensorSpec((None, 3), tf.float32), tf.TensorSpec((None,), tf.int32)])
    y, _ = CASES["odd batch"]
    x = np.random.default_rng(7).normal(size=(len(y), 3)).astype("float32")
    np.testing.assert_allclose(float(loss(x, y.astype("int32"))), np_npairs(x, y, 0.1), **TOL)
    assert float(loss(np.zeros((0, 3), "float32"), np.zeros((0,), "int32"))) == 0.0  # no slot: no top_k of nothing
