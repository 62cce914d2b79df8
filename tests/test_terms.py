"""CenterLoss and the plain-loss terms: the stateful shells over lossweave.ops."""

import keras
import numpy as np
import pytest

import lossweave as lw
from conftest import numpy_center_loss, numpy_center_update, to_numpy

RNG = np.random.default_rng(1)


def _data(n=24, dim=5, classes=4):
    x = RNG.normal(size=(n, dim)).astype("float32")
    y = RNG.integers(0, classes, n)
    return x, y


def _term(classes=4, dim=5, **kwargs):
    term = lw.terms.CenterLoss(num_classes=classes, centers_initializer="random_normal", **kwargs)
    term.build((None, dim))
    return term


def test_term_equals_ops_and_numpy_reference():
    x, y = _data()
    term = _term(alpha=0.6)
    c0 = to_numpy(term.centers).copy()
    loss = term(x, y, training=True)
    assert abs(float(loss) - numpy_center_loss(x, y, c0)) < 1e-5
    np.testing.assert_allclose(to_numpy(term.centers), numpy_center_update(x, y, c0, 0.6), atol=1e-5)
    loss_op, new_op = lw.ops.center_loss_and_update(x, y, c0, 0.6)
    assert abs(float(loss_op) - float(loss)) < 1e-6
    np.testing.assert_allclose(to_numpy(new_op), to_numpy(term.centers), atol=1e-6)


def test_one_hot_labels_in_term():
    x, y = _data()
    term_a, term_b = _term(), _term()
    term_b.centers.assign(term_a.centers)
    term_a(x, y, training=True)
    term_b(x, np.eye(4, dtype="float32")[y], training=True)
    np.testing.assert_allclose(to_numpy(term_a.centers), to_numpy(term_b.centers), atol=1e-6)


def test_centers_start_at_zero_and_are_not_trainable():
    term = lw.terms.CenterLoss(num_classes=7)
    term.build((None, 3))
    assert term.centers.shape == (7, 3) and not term.centers.trainable
    assert np.all(to_numpy(term.centers) == 0) and term.trainable_weights == []


def test_no_update_outside_training():
    x, y = _data()
    term = _term()
    before = to_numpy(term.centers).copy()
    term(x, y, training=False)
    np.testing.assert_array_equal(to_numpy(term.centers), before)


def test_gradient_mode_centers_follow_the_optimizer():
    """update="gradient": c_j <- c_j + lr * lambda / m * sum_{i: y_i=j} (x_i - c_j), no count term."""
    x, y = _data(n=16, dim=3, classes=4)
    inputs = keras.Input((3,))
    model = keras.Model(inputs, {"embedding": keras.layers.Identity()(inputs)})
    term = lw.terms.CenterLoss(num_classes=4, update="gradient", centers_initializer="random_normal")
    objective = lw.Objective(model, {"center": term})
    objective.compile(optimizer=keras.optimizers.SGD(0.5))
    objective.build((None, 3))
    c0 = to_numpy(term.centers).copy()
    assert term.centers.trainable
    objective.fit(x, {"label": y}, batch_size=16, epochs=1, shuffle=False, verbose=0)
    expected = c0.copy()
    for j in range(4):
        expected[j] += 0.5 / 16 * (x[y == j] - c0[j]).sum(axis=0)
    np.testing.assert_allclose(to_numpy(term.centers), expected, atol=1e-5)


def test_center_loss_config_round_trip():
    term = lw.terms.CenterLoss(num_classes=9, alpha=0.3, update="gradient", on="feat", target="id", name="c")
    clone = lw.terms.CenterLoss.from_config(term.get_config())
    assert clone.get_config() == term.get_config()
    assert (clone.num_classes, clone.alpha, clone.update, clone.on, clone.target) == (9, 0.3, "gradient", "feat", "id")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_classes": 0}, "num_classes"),
        ({"num_classes": 2.5}, "num_classes"),
        ({"num_classes": 3, "alpha": 1.5}, "alpha"),
        ({"num_classes": 3, "update": "sgd"}, "update"),
    ],
)
def test_constructor_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        lw.terms.CenterLoss(**kwargs)


def test_build_rejects_non_2d_features():
    with pytest.raises(ValueError, match=r"expected \(batch, dim\)"):
        lw.terms.CenterLoss(num_classes=3).build((None, 4, 4))


@pytest.mark.parametrize(
    "labels, match",
    [
        (np.array([0, 1, 9, 2]), "invalid label"),
        (np.array([0, 1, -1, 2]), "invalid label"),
        (np.array([0.0, 1.0, 0.5, 2.0]), "invalid label"),
        (np.array([0.0, 1.0, np.nan, 2.0]), "invalid label"),
    ],
)
def test_term_call_raises_on_bad_labels_and_keeps_centers(labels, match):
    term = _term(dim=5)
    before = to_numpy(term.centers).copy()
    with pytest.raises(lw.InvalidInputError, match=match):
        term(RNG.normal(size=(4, 5)).astype("float32"), labels, training=True)
    np.testing.assert_array_equal(to_numpy(term.centers), before)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision_features_keep_float32_centers(dtype):
    x, y = _data()
    term = _term()
    loss = term(keras.ops.cast(x, dtype), y, training=True)
    assert term.centers.dtype == "float32"
    assert np.isfinite(float(loss))


def test_mixed_precision_policy_keeps_centers_float32():
    keras.config.set_dtype_policy("mixed_float16")
    term = lw.terms.CenterLoss(num_classes=4)
    term.build((None, 5))
    assert term.centers.dtype == "float32"
    x, y = _data()
    term(keras.ops.cast(x, "float16"), y, training=True)
    assert to_numpy(term.centers).dtype == np.float32


def test_softmax_term_matches_ops_and_rejects_bad_labels():
    logits = RNG.normal(size=(8, 3)).astype("float32")
    y = RNG.integers(0, 3, 8)
    term = lw.terms.SoftmaxCrossEntropy()
    assert abs(float(term(logits, y)) - float(lw.ops.softmax_cross_entropy(logits, y))) < 1e-6
    with pytest.raises(lw.InvalidInputError, match=r"in \[0, 3\)"):
        term(logits, np.array([0, 1, 2, 3, 0, 1, 2, 0]))


def test_loss_term_wraps_keras_loss_and_round_trips():
    term = lw.terms.Loss(keras.losses.MeanSquaredError(), on="score", target="score")
    y_true = RNG.normal(size=(6, 1)).astype("float32")
    y_pred = RNG.normal(size=(6, 1)).astype("float32")
    assert abs(float(term(y_pred, y_true)) - float(((y_true - y_pred) ** 2).mean())) < 1e-6
    clone = lw.terms.Loss.from_config(term.get_config())
    assert abs(float(clone(y_pred, y_true)) - float(term(y_pred, y_true))) < 1e-6
    with pytest.raises(ValueError):
        lw.terms.Loss(None)


def test_loss_term_from_a_name_takes_sample_weights_and_round_trips():
    term = lw.terms.Loss("mse", on="score", target="score")
    y_true, y_pred = np.zeros((4, 1), "float32"), np.arange(4, dtype="float32")[:, None]
    w = np.array([1, 0, 1, 0], "float32")
    assert float(term(y_pred, y_true, sample_weight=w)) == pytest.approx((0 + 4) / 4)
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(term))
    assert float(clone(y_pred, y_true, sample_weight=w)) == pytest.approx(1.0)


def test_row_update_is_public_in_terms_and_backend_is_private():
    # Custom loops apply Eq. 4 rows with lw.terms.add_to_rows (duplicates summed);
    # the backend package holds trainer internals and is not public.
    assert not hasattr(lw, "backend")
    assert callable(lw.data.load) and "digits" in lw.data.names()
    table = keras.Variable(np.zeros((5, 3), "float32"), trainable=False)
    updates = np.arange(9, dtype="float32").reshape(3, 3)
    lw.terms.add_to_rows(table, keras.ops.convert_to_tensor(np.array([1, 4, 1], "int32")),
                         keras.ops.convert_to_tensor(updates))
    expected = np.zeros((5, 3), "float32")
    np.add.at(expected, [1, 4, 1], updates)
    np.testing.assert_array_equal(to_numpy(table.value), expected)
    rows = lw.terms.gather_rows(table.value, keras.ops.convert_to_tensor(np.array([4, 1], "int32")))
    np.testing.assert_array_equal(to_numpy(rows), expected[[4, 1]])


def test_a_terms_declarations_are_checked_when_its_class_is_defined():
    with pytest.raises(TypeError, match=r"`input_checks` must be one of .*received 'class_row'"):
        type("Typo", (lw.terms.Term,), {"input_checks": "class_row"})
    with pytest.raises(TypeError, match=r"`weights_per` must be one of"):
        type("Typo", (lw.terms.Term,), {"weights_per": "pair"})
