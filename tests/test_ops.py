"""NumPy references for every formula in lossweave.ops (Wen et al., ECCV 2016)."""

import keras
import numpy as np
import pytest

from conftest import numpy_center_loss, numpy_center_update, to_numpy
from lossweave import ops as lw_ops

RNG = np.random.default_rng(0)


def _batch(n=32, dim=8, classes=6, duplicates=True):
    x = RNG.normal(size=(n, dim)).astype("float32")
    y = RNG.integers(0, 3 if duplicates else classes, n)
    c = RNG.normal(size=(classes, dim)).astype("float32")
    return x, y, c


def test_center_loss_matches_reference():
    x, y, c = _batch()
    assert abs(float(lw_ops.center_loss(x, y, c)) - numpy_center_loss(x, y, c)) < 1e-5


def test_center_loss_sample_weight():
    x, y, c = _batch()
    w = RNG.uniform(size=len(x)).astype("float32")
    assert abs(float(lw_ops.center_loss(x, y, c, w)) - numpy_center_loss(x, y, c, w)) < 1e-5


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_center_update_with_duplicates_matches_eq4(alpha):
    x, y, c = _batch()
    assert len(np.unique(y)) < len(y)  # duplicate labels: the count normalisation matters
    got = to_numpy(lw_ops.center_update(x, y, c, alpha))
    np.testing.assert_allclose(got, numpy_center_update(x, y, c, alpha), atol=1e-5)


@pytest.mark.parametrize("classes", [6, 40])
def test_center_update_both_class_count_forms_match_eq4(classes):
    # n_j of Eq. 3 is counted one-hot when classes <= batch (6 <= 16), else from the batch x batch equalities
    x, y, c = _batch(n=16, classes=classes)
    got = to_numpy(lw_ops.center_update(x, y, c, 0.5))
    np.testing.assert_allclose(got, numpy_center_update(x, y, c, 0.5), atol=1e-5)


def test_alpha_zero_leaves_centers():
    x, y, c = _batch()
    np.testing.assert_array_equal(to_numpy(lw_ops.center_update(x, y, c, 0.0)), c)


def test_alpha_one_single_sample_goes_halfway():
    c = np.zeros((3, 2), "float32")
    got = to_numpy(lw_ops.center_update(np.array([[4.0, -2.0]], "float32"), np.array([2]), c, 1.0))
    np.testing.assert_allclose(got[2], [2.0, -1.0])  # 1 / (1 + n_j) with n_j = 1
    np.testing.assert_array_equal(got[:2], 0.0)


def test_count_normalisation_uses_per_class_counts():
    # Class 0 seen three times, class 1 once: different 1 / (1 + n_j).
    x = np.array([[3.0], [3.0], [3.0], [8.0]], "float32")
    y = np.array([0, 0, 0, 1])
    got = to_numpy(lw_ops.center_update(x, y, np.zeros((2, 1), "float32"), 1.0))
    np.testing.assert_allclose(got[:, 0], [9.0 / 4.0, 8.0 / 2.0])


def test_absent_classes_do_not_move():
    x, y, c = _batch()
    got = to_numpy(lw_ops.center_update(x, y, c, 0.7))
    absent = np.setdiff1d(np.arange(len(c)), y)
    np.testing.assert_array_equal(got[absent], c[absent])


def test_one_hot_labels_equal_sparse():
    x, y, c = _batch()
    one_hot = np.eye(len(c), dtype="float32")[y]
    assert abs(float(lw_ops.center_loss(x, one_hot, c)) - float(lw_ops.center_loss(x, y, c))) < 1e-6
    np.testing.assert_allclose(
        to_numpy(lw_ops.center_update(x, one_hot, c, 0.5)),
        to_numpy(lw_ops.center_update(x, y, c, 0.5)),
        atol=1e-6,
    )


def test_float_and_column_labels_accepted():
    x, y, c = _batch()
    ref = numpy_center_loss(x, y, c)
    assert abs(float(lw_ops.center_loss(x, y.astype("float32"), c)) - ref) < 1e-5
    assert abs(float(lw_ops.center_loss(x, y[:, None], c)) - ref) < 1e-5


def test_update_rows_scatter_to_the_same_result():
    x, y, c = _batch()
    idx, deltas = lw_ops.center_update_rows(x, y, c, 0.5)
    table = c.astype("float64").copy()
    np.add.at(table, to_numpy(idx), to_numpy(deltas))
    np.testing.assert_allclose(table, numpy_center_update(x, y, c, 0.5), atol=1e-5)


def test_loss_and_update_uses_old_centers():
    x, y, c = _batch()
    loss, new = lw_ops.center_loss_and_update(x, y, c, 0.5)
    assert abs(float(loss) - numpy_center_loss(x, y, c)) < 1e-5
    np.testing.assert_allclose(to_numpy(new), numpy_center_update(x, y, c, 0.5), atol=1e-5)


def test_bad_rows_are_skipped_by_update_and_loss():
    x, y, c = _batch()
    y = y.astype("float32")
    y[0], y[1], y[2] = -1, len(c), 1.5
    x[3, 0] = np.nan
    y[4] = np.nan
    good = np.ones(len(x), bool)
    good[:5] = False
    new = to_numpy(lw_ops.center_update(x, y, c, 0.5))
    np.testing.assert_allclose(new, numpy_center_update(x[good], y[good].astype(int), c, 0.5), atol=1e-5)
    loss = float(lw_ops.center_loss(x, y, c))
    ref = numpy_center_loss(x[good], y[good].astype(int), c) * good.sum() / len(x)
    assert np.isfinite(loss) and abs(loss - ref) < 1e-5


def test_zero_sample_weight_rows_do_not_count():
    x, y, c = _batch()
    w = np.ones(len(x), "float32")
    w[::2] = 0
    new = to_numpy(lw_ops.center_update(x, y, c, 0.5, sample_weight=w))
    keep = w > 0
    np.testing.assert_allclose(new, numpy_center_update(x[keep], y[keep], c, 0.5), atol=1e-5)
    # Eq. 4 reads weights as a selection only: other non-zero values move the centers the same way.
    w[1::2] = RNG.uniform(0.5, 3.0, size=len(w[1::2]))
    np.testing.assert_allclose(to_numpy(lw_ops.center_update(x, y, c, 0.5, sample_weight=w)), new, atol=1e-6)


def test_softmax_cross_entropy_matches_reference():
    logits = RNG.normal(size=(16, 5)).astype("float32") * 3
    y = RNG.integers(0, 5, 16)
    z = logits - logits.max(axis=1, keepdims=True)
    ref = -(z[np.arange(16), y] - np.log(np.exp(z).sum(axis=1))).mean()
    assert abs(float(lw_ops.softmax_cross_entropy(logits, y)) - ref) < 1e-5
    one_hot = np.eye(5, dtype="float32")[y]
    assert abs(float(lw_ops.softmax_cross_entropy(logits, one_hot)) - ref) < 1e-5


def test_logits_accuracy_is_argmax_of_softmax():
    logits = RNG.normal(size=(64, 7)).astype("float32")
    y = RNG.integers(0, 7, 64)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    ref = (probs.argmax(axis=1) == y).astype("float32")
    np.testing.assert_array_equal(to_numpy(lw_ops.logits_accuracy(logits, y)), ref)


@pytest.mark.parametrize(
    "labels, expected_valid",
    [
        (np.array([0, 2, 3, -1]), [True, True, False, False]),
        (np.array([0.0, 2.0, 1.5, np.nan]), [True, True, False, False]),
        (np.array([[1.0, 0, 0], [0, 0, 0], [0, np.nan, 1], [0, 0, 1]]), [True, False, False, True]),
    ],
)
def test_class_indices_validity(labels, expected_valid):
    idx, valid = lw_ops.class_indices(labels, num_classes=3)
    assert to_numpy(valid).tolist() == expected_valid
    assert to_numpy(idx).min() >= 0 and to_numpy(idx).max() < 3


@pytest.mark.parametrize("shape", [(4, 5), (4, 2, 1), (2, 2, 3)])
def test_label_shape_errors_name_what_was_received(shape):
    with pytest.raises(ValueError, match=r"received"):
        lw_ops.class_indices(np.zeros(shape, "float32"), num_classes=3)


def test_feature_dim_mismatch_is_an_error():
    with pytest.raises(ValueError, match="centers have shape"):
        lw_ops.center_loss(np.zeros((2, 4), "float32"), np.array([0, 1]), np.zeros((3, 5), "float32"))


def test_centers_may_be_a_native_variable():
    """Custom loops pass their own tf.Variable / array as the centers table."""
    x, y, c = _batch()
    native = to_numpy(c)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        native = tf.Variable(c)
    assert abs(float(lw_ops.center_loss(x, y, native)) - numpy_center_loss(x, y, c)) < 1e-5
    np.testing.assert_allclose(to_numpy(lw_ops.center_update(x, y, native, 0.5)), numpy_center_update(x, y, c, 0.5), atol=1e-5)
