"""Outputs of any shape: terms reading several outputs, partial labels, per-term sample weights."""

import os

import keras
import numpy as np
import pytest

import lossweave as lw
from conftest import to_numpy

RNG = np.random.default_rng(5)


@keras.saving.register_keras_serializable(package="lossweave_tests")
class PairDistance(lw.terms.Term):
    """Contrastive loss on two feature outputs (Hadsell, Chopra & LeCun, CVPR 2006, Eq. 4)."""

    def __init__(self, margin=1.0, **kwargs):
        super().__init__(**kwargs)
        self.margin = margin

    def compute_loss(self, outputs, targets, sample_weight, training):
        first, second = outputs
        distance = keras.ops.sqrt(keras.ops.sum(keras.ops.square(first - second), axis=-1) + 1e-12)
        same = keras.ops.cast(keras.ops.reshape(targets, (-1,)), "float32")
        per = same * distance**2 + (1 - same) * keras.ops.relu(self.margin - distance) ** 2
        return 0.5 * keras.ops.mean(per)

    def get_config(self):
        return {**super().get_config(), "margin": self.margin}


def _siamese():
    left, right = keras.Input((6,)), keras.Input((6,))
    trunk = keras.layers.Dense(3)
    f1, f2 = trunk(left), trunk(right)
    head = keras.layers.Dense(4)
    return keras.Model([left, right], {"feat_1": f1, "feat_2": f2, "ctg_1": head(f1), "score": keras.layers.Dense(1)(f1)})


def test_term_reading_two_outputs_matches_numpy_and_round_trips(tmp_path):
    model = _siamese()
    objective = lw.Objective(model, {"pair": PairDistance(on=("feat_1", "feat_2"), target="same")})
    objective.compile(optimizer="sgd")
    a, b = RNG.normal(size=(16, 6)).astype("float32"), RNG.normal(size=(16, 6)).astype("float32")
    same = RNG.integers(0, 2, 16)
    logs = objective.evaluate([a, b], {"same": same}, batch_size=16, verbose=0, return_dict=True)
    out = model.predict([a, b], verbose=0)
    d = np.sqrt(((out["feat_1"] - out["feat_2"]) ** 2).sum(-1) + 1e-12)
    ref = 0.5 * np.mean(same * d**2 + (1 - same) * np.maximum(1.0 - d, 0) ** 2)
    assert logs["loss/pair"] == pytest.approx(ref, rel=1e-5)
    objective.fit([a, b], {"same": same}, epochs=1, verbose=0)
    path = os.fspath(tmp_path / "pair.keras")
    objective.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.terms["pair"].on == ("feat_1", "feat_2")


def test_unknown_output_in_a_tuple_is_a_clear_error():
    with pytest.raises(ValueError, match="reads output 'feat_3'"):
        lw.Objective(_siamese(), {"pair": PairDistance(on=("feat_1", "feat_3"), target="same")})


def test_partial_labels_are_masked_out_of_that_term_only():
    model = _siamese()
    terms = {
        "ctg": lw.terms.SoftmaxCrossEntropy(on="ctg_1", target="label", missing=-1),
        "score": lw.terms.Loss(keras.losses.MeanSquaredError(), on="score", target="score", missing=float("nan")),
        "center": lw.terms.CenterLoss(num_classes=4, on="feat_1", target="label", missing=-1),
    }
    objective = lw.Objective(model, terms)
    objective.compile(optimizer="sgd")
    a, b = RNG.normal(size=(16, 6)).astype("float32"), RNG.normal(size=(16, 6)).astype("float32")
    label = RNG.integers(0, 4, 16)
    label[::3] = -1  # 6 of 16 unlabelled for the classification terms
    score = RNG.normal(size=(16, 1)).astype("float32")
    score[1::4] = np.nan  # 4 of 16 unlabelled for the regression term
    logs = objective.evaluate([a, b], {"label": label, "score": score}, batch_size=16, verbose=0, return_dict=True)
    out = model.predict([a, b], verbose=0)
    has = label >= 0
    z = out["ctg_1"][has] - out["ctg_1"][has].max(axis=1, keepdims=True)
    ce = -(z[np.arange(has.sum()), label[has]] - np.log(np.exp(z).sum(axis=1))).mean()
    assert logs["loss/ctg"] == pytest.approx(ce, rel=1e-5)
    ok = ~np.isnan(score[:, 0])
    assert logs["loss/score"] == pytest.approx(((out["score"][ok] - score[ok]) ** 2).mean(), rel=1e-5)
    objective.fit([a, b], {"label": label, "score": score}, batch_size=16, epochs=1, shuffle=False, verbose=0)
    centers = to_numpy(objective.terms["center"].centers)
    expected = np.zeros((4, 3))
    for j in range(4):  # Eq. 4 from zero centers over the labelled rows only
        members = label == j
        expected[j] = 0.5 * out["feat_1"][members].sum(axis=0) / (1 + members.sum())
    np.testing.assert_allclose(centers, expected, atol=1e-5)


def test_missing_must_be_a_number():
    with pytest.raises(ValueError, match="missing"):
        lw.terms.SoftmaxCrossEntropy(missing="none")


def test_fixed_weights_equal_keras_loss_weights():
    inputs = keras.Input((6,))
    trunk = keras.layers.Dense(8, activation="tanh")(inputs)
    model = keras.Model(inputs, {"cls": keras.layers.Dense(3, name="cls")(trunk), "reg": keras.layers.Dense(2, name="reg")(trunk)})
    x = RNG.normal(size=(40, 6)).astype("float32")
    y_cls, y_reg = RNG.integers(0, 3, 40), RNG.normal(size=(40, 2)).astype("float32")

    plain = keras.Model.from_config(model.get_config())
    plain.set_weights(model.get_weights())
    plain.compile(
        loss={"cls": keras.losses.SparseCategoricalCrossentropy(from_logits=True), "reg": "mse"},
        loss_weights={"cls": 1.0, "reg": 0.5},
    )
    keras_total = plain.evaluate(x, {"cls": y_cls, "reg": y_reg}, batch_size=40, verbose=0, return_dict=True)["loss"]

    objective = lw.Objective(
        model,
        {
            "cls": lw.terms.SoftmaxCrossEntropy(on="cls", target="cls"),
            "reg": lw.terms.Loss("mse", on="reg", target="reg"),
        },
        weighting=lw.weighting.Fixed({"reg": 0.5}),
    )
    objective.compile(optimizer="sgd")
    ours = objective.evaluate(x, {"cls": y_cls, "reg": y_reg}, batch_size=40, verbose=0, return_dict=True)
    assert ours["loss"] == pytest.approx(keras_total, rel=1e-6)


def test_per_term_sample_weights():
    inputs = keras.Input((6,))
    model = keras.Model(inputs, {"a": keras.layers.Dense(1)(inputs), "b": keras.layers.Dense(1)(inputs)})
    objective = lw.Objective(
        model,
        {"a": lw.terms.Loss("mse", on="a", target="a"), "b": lw.terms.Loss("mse", on="b", target="b")},
    )
    objective.compile(optimizer="sgd")
    x = RNG.normal(size=(8, 6)).astype("float32")
    ya, yb = RNG.normal(size=(8, 1)).astype("float32"), RNG.normal(size=(8, 1)).astype("float32")
    wa = np.array([1, 1, 1, 1, 0, 0, 0, 0], "float32")
    logs = objective.evaluate(
        x, {"a": ya, "b": yb}, sample_weight={"a": wa, "b": np.ones(8, "float32")}, batch_size=8, verbose=0, return_dict=True
    )
    out = model.predict(x, verbose=0)
    assert logs["loss/a"] == pytest.approx((((out["a"] - ya) ** 2)[:, 0] * wa).sum() / 8, rel=1e-5)
    assert logs["loss/b"] == pytest.approx(((out["b"] - yb) ** 2).mean(), rel=1e-5)
