"""Objective: a keras.Model over terms, trained with plain compile/fit on every backend."""

import os

import keras
import numpy as np
import pytest

import lossweave as lw
from conftest import to_numpy

RNG = np.random.default_rng(2)
CLASSES, DIM, FEATURES = 4, 3, 10


def _model(regularizer=None):
    inputs = keras.Input((FEATURES,))
    hidden = keras.layers.Dense(16, activation="relu", kernel_regularizer=regularizer)(inputs)
    emb = keras.layers.Dense(DIM, name="emb_layer")(hidden)
    return keras.Model(inputs, {"embedding": emb, "logits": keras.layers.Dense(CLASSES)(emb)})


def _objective(model=None, center_weight=0.1, **center_kwargs):
    return lw.Objective(
        model or _model(),
        {
            "softmax": lw.terms.SoftmaxCrossEntropy(on="logits"),
            "center": lw.terms.CenterLoss(num_classes=CLASSES, alpha=0.5, on="embedding", **center_kwargs),
        },
        weighting=lw.weighting.Fixed({"center": center_weight}),
    )


def _data(n=64):
    x = RNG.normal(size=(n, FEATURES)).astype("float32")
    y = RNG.integers(0, CLASSES, n)
    return x, y


def test_fit_logs_every_term_and_weight():
    x, y = _data()
    objective = _objective()
    objective.compile(optimizer="adam", metrics={"logits": [lw.metrics.LogitsAccuracy()]})
    history = objective.fit(x, {"label": y}, epochs=2, batch_size=16, verbose=0)
    for key in ["loss", "loss/softmax", "loss/center", "weight/softmax", "weight/center", "accuracy"]:
        assert key in history.history and len(history.history[key]) == 2
    assert history.history["weight/center"][0] == pytest.approx(0.1)
    assert np.any(to_numpy(objective.terms["center"].centers) != 0)


def test_evaluate_total_is_the_weighted_sum_plus_regularization():
    x, y = _data()
    objective = _objective(_model(regularizer=keras.regularizers.L2(0.05)), center_weight=0.25)
    objective.compile(optimizer="sgd")
    logs = objective.evaluate(x, {"label": y}, batch_size=64, verbose=0, return_dict=True)
    reg = sum(float(to_numpy(loss)) for loss in objective.model.losses)
    assert reg > 0
    expected = logs["loss/softmax"] + 0.25 * logs["loss/center"] + reg
    assert logs["loss"] == pytest.approx(expected, rel=1e-5)


def test_evaluate_does_not_move_centers():
    x, y = _data()
    objective = _objective()
    objective.compile(optimizer="adam")
    objective.fit(x, {"label": y}, epochs=1, batch_size=16, verbose=0)
    before = to_numpy(objective.terms["center"].centers).copy()
    objective.evaluate(x, {"label": y}, verbose=0)
    np.testing.assert_array_equal(to_numpy(objective.terms["center"].centers), before)


def test_inference_model_needs_no_labels():
    x, y = _data()
    objective = _objective()
    objective.compile(optimizer="adam")
    objective.fit(x, {"label": y}, epochs=1, verbose=0)
    out = objective.model.predict(x, verbose=0)
    assert set(out) == {"embedding", "logits"} and out["embedding"].shape == (64, DIM)
    np.testing.assert_allclose(objective.predict(x, verbose=0)["logits"], out["logits"], atol=1e-6)


def test_one_hot_labels_and_plain_target_array():
    x, y = _data()
    objective = _objective()
    objective.compile(optimizer="adam", metrics={"logits": ["accuracy"]})
    history = objective.fit(x, np.eye(CLASSES, dtype="float32")[y], epochs=1, batch_size=16, verbose=0)
    assert np.isfinite(history.history["loss"][0]) and "accuracy" in history.history


def test_sample_weight_zero_rows_do_not_move_centers():
    x, y = _data(n=16)
    objective = _objective()
    objective.compile(optimizer="sgd")
    weights = np.zeros(16, "float32")
    objective.fit(x, {"label": y}, sample_weight=weights, batch_size=16, epochs=1, verbose=0)
    assert np.all(to_numpy(objective.terms["center"].centers) == 0)


def test_save_load_round_trip(tmp_path):
    x, y = _data()
    objective = _objective()
    objective.compile(optimizer="adam", metrics={"logits": [lw.metrics.LogitsAccuracy()]})
    objective.fit(x, {"label": y}, epochs=1, batch_size=16, verbose=0)
    path = os.fspath(tmp_path / "objective.keras")
    objective.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, lw.Objective)
    np.testing.assert_array_equal(
        to_numpy(loaded.terms["center"].centers), to_numpy(objective.terms["center"].centers)
    )
    assert loaded.weighting.get_config()["weights"] == {"center": 0.1}
    a = objective.evaluate(x, {"label": y}, verbose=0, return_dict=True)
    b = loaded.evaluate(x, {"label": y}, verbose=0, return_dict=True)
    assert a == pytest.approx(b, rel=1e-5)


def test_save_load_continue_equals_straight_through(tmp_path):
    x, y = _data()

    def fresh():
        keras.utils.set_random_seed(7)
        objective = _objective()
        objective.compile(optimizer=keras.optimizers.Adam(0.01))
        return objective

    straight = fresh()
    straight.fit(x, {"label": y}, epochs=2, batch_size=16, shuffle=False, verbose=0)

    first = fresh()
    first.fit(x, {"label": y}, epochs=1, batch_size=16, shuffle=False, verbose=0)
    path = os.fspath(tmp_path / "half.keras")
    first.save(path)
    resumed = keras.saving.load_model(path)
    resumed.fit(x, {"label": y}, epochs=1, batch_size=16, shuffle=False, verbose=0)

    np.testing.assert_allclose(
        to_numpy(resumed.terms["center"].centers), to_numpy(straight.terms["center"].centers), atol=1e-5
    )
    for a, b in zip(resumed.model.weights, straight.model.weights):
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), atol=1e-5)


def test_objective_config_round_trip():
    objective = _objective()
    clone = lw.Objective.from_config(objective.get_config())
    assert list(clone.terms) == ["softmax", "center"]
    assert clone.terms["center"].get_config() == objective.terms["center"].get_config()
    assert clone.weighting.get_config()["weights"] == {"center": 0.1}


def test_single_output_model_with_default_on():
    inputs = keras.Input((FEATURES,))
    model = keras.Model(inputs, keras.layers.Dense(DIM)(inputs))
    objective = lw.Objective(model, {"center": lw.terms.CenterLoss(num_classes=CLASSES, on=None)})
    objective.compile(optimizer="sgd")
    x, y = _data()
    history = objective.fit(x, y, epochs=1, verbose=0)
    assert "loss/center" in history.history


def test_unknown_output_is_a_clear_error():
    with pytest.raises(ValueError, match=r"reads output 'features'.*outputs are \['embedding', 'logits'\]"):
        lw.Objective(_model(), {"center": lw.terms.CenterLoss(num_classes=CLASSES, on="features")})


def test_unknown_target_is_a_clear_error():
    x, y = _data()
    objective = _objective()
    objective.compile(optimizer="sgd")
    with pytest.raises(ValueError, match=r"needs target 'label'.*\['identity'\]"):
        objective.fit(x, {"identity": y}, epochs=1, verbose=0)


def test_compile_rejects_loss_and_loss_weights():
    objective = _objective()
    with pytest.raises(ValueError, match="terms"):
        objective.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match="Fixed"):
        objective.compile(optimizer="sgd", loss_weights={"center": 1.0})


def test_constructor_errors():
    with pytest.raises(TypeError, match="keras.Model"):
        lw.Objective("not a model", {"c": lw.terms.CenterLoss(num_classes=2)})
    with pytest.raises(ValueError, match="non-empty dict"):
        lw.Objective(_model(), {})
    with pytest.raises(TypeError, match="lossweave.terms.Loss"):
        lw.Objective(_model(), {"mse": keras.losses.MeanSquaredError()})
    with pytest.raises(ValueError, match=r"not terms of the objective"):
        lw.Objective(
            _model(),
            {"center": lw.terms.CenterLoss(num_classes=2)},
            weighting=lw.weighting.Fixed({"centre": 1.0}),
        )


def test_epoch_logs_add_up_with_a_partial_last_batch():
    x, y = _data(n=40)  # batches of 16, 16, 8
    objective = _objective(center_weight=0.5)
    objective.compile(optimizer="sgd")
    logs = objective.evaluate(x, {"label": y}, batch_size=16, verbose=0, return_dict=True)
    assert logs["loss"] == pytest.approx(logs["loss/softmax"] + 0.5 * logs["loss/center"], rel=1e-5)


class _StepAsWeight(lw.weighting.Weighting):
    """Weight of every term = the step counter it is given (to observe the counter)."""

    def combine(self, losses, step=None, training=False):
        weights = {name: keras.ops.cast(step, "float32") for name in losses}
        return sum(weights[n] * losses[n] for n in losses), weights


def test_step_counter_advances_inside_compiled_steps_and_is_saved(tmp_path):
    x, y = _data(n=64)
    objective = lw.Objective(
        _model(), {"center": lw.terms.CenterLoss(num_classes=CLASSES, on="embedding")}, weighting=_StepAsWeight()
    )
    objective.compile(optimizer="sgd")
    history = objective.fit(x, {"label": y}, batch_size=16, epochs=2, shuffle=False, verbose=0)
    # Steps 0..3 in epoch 1 and 4..7 in epoch 2: the epoch means of the logged weight.
    assert history.history["weight/center"] == pytest.approx([1.5, 5.5])
    assert int(to_numpy(objective.step_counter)) == 8
    objective.evaluate(x, {"label": y}, verbose=0)
    assert int(to_numpy(objective.step_counter)) == 8
    path = os.fspath(tmp_path / "steps.keras")
    objective.save(path)
    loaded = keras.saving.load_model(path, custom_objects={"_StepAsWeight": _StepAsWeight})
    assert int(to_numpy(loaded.step_counter)) == 8


def test_named_means_equal_one_mean_per_scalar_under_weights_and_reset():
    from lossweave.metrics.means import NamedMeans

    values = RNG.normal(size=(5, 3)).astype("float32")
    weights = np.array([16.0, 16.0, 8.0, 0.0, 3.0], "float32")
    means = NamedMeans(["a", "b", "c"])
    separate = [keras.metrics.Mean() for _ in range(3)]
    for row, weight in zip(values, weights):
        means.update_state(list(row), sample_weight=weight)
        for mean, value in zip(separate, row):
            mean.update_state(value, sample_weight=weight)
    got = {k: float(to_numpy(v)) for k, v in means.result().items()}
    assert got == pytest.approx({n: float(to_numpy(m.result())) for n, m in zip("abc", separate)}, rel=1e-6)
    assert got["a"] == pytest.approx(float((values[:, 0] * weights).sum() / weights.sum()), rel=1e-6)
    means.reset_state()
    assert [float(to_numpy(v)) for v in means.result().values()] == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="2 values for the 3 names"):
        means.update_state([1.0, 2.0])
    assert NamedMeans.from_config(means.get_config()).names == ["a", "b", "c"]


def test_epoch_means_weigh_batches_by_size_with_sample_weights():
    """loss/<term>: the mean over the epoch's batches weighted by batch size, each batch's term
    loss computed with its sample weights (what one Mean per term logged)."""
    x, y = _data(n=40)  # batches of 16, 16, 8
    sample_weight = RNG.uniform(0.0, 2.0, size=40).astype("float32")
    objective = lw.Objective(
        _model(),
        {"softmax": lw.terms.SoftmaxCrossEntropy(on="logits"),
         "mse": lw.terms.Loss(keras.losses.MeanSquaredError(), on="embedding", target="emb")},
        weighting=lw.weighting.Fixed({"mse": 0.25}),
    )
    objective.compile(optimizer=keras.optimizers.SGD(0.0))  # weights stay: every batch's loss is known
    target = RNG.normal(size=(40, DIM)).astype("float32")
    history = objective.fit(x, {"label": y, "emb": target}, sample_weight=sample_weight, batch_size=16,
                            epochs=1, shuffle=False, verbose=0)
    out = objective.model(x, training=False)
    expected = {"softmax": 0.0, "mse": 0.0}
    for start, stop in ((0, 16), (16, 32), (32, 40)):
        w = sample_weight[start:stop]
        logits, emb = to_numpy(out["logits"])[start:stop], to_numpy(out["embedding"])[start:stop]
        log_p = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True)) - logits.max(1, keepdims=True)
        expected["softmax"] += (stop - start) * float((-log_p[np.arange(stop - start), y[start:stop]] * w).sum() / (stop - start))
        per = ((emb - target[start:stop]) ** 2).mean(axis=1)
        expected["mse"] += (stop - start) * float((per * w).sum() / (stop - start))
    for name in expected:
        assert history.history[f"loss/{name}"][0] == pytest.approx(expected[name] / 40, rel=1e-4)
    assert history.history["weight/mse"][0] == pytest.approx(0.25)
    assert history.history["weight/softmax"][0] == pytest.approx(1.0)


@pytest.mark.parametrize("weighting", ["fixed", "mgda"])
def test_evaluation_logs_losses_but_no_weights_or_cosines(weighting):
    """A validation pass has no gradients: val_weight/* and val_cosine/* would say nothing."""
    x, y = _data(n=32)
    strategy = lw.weighting.Fixed({"center": 0.1}) if weighting == "fixed" else lw.weighting.MGDA()
    objective = lw.Objective(_model(), {
        "softmax": lw.terms.SoftmaxCrossEntropy(on="logits"),
        "center": lw.terms.CenterLoss(num_classes=CLASSES, alpha=0.5, on="embedding")}, weighting=strategy)
    objective.compile(optimizer="adam")
    history = objective.fit(x, {"label": y}, batch_size=16, epochs=1, verbose=0,
                            validation_data=(x, {"label": y}))
    keys = set(history.history)
    assert {"loss/softmax", "loss/center", "weight/softmax", "weight/center",
            "val_loss/softmax", "val_loss/center"} <= keys
    assert (weighting == "mgda") == ("cosine/softmax/center" in keys)
    assert not [k for k in keys if k.startswith(("val_weight/", "val_cosine/"))], sorted(keys)
    logs = objective.evaluate(x, {"label": y}, batch_size=16, verbose=0, return_dict=True)
    assert sorted(logs) == ["loss", "loss/center", "loss/softmax"]


@pytest.mark.parametrize("strategy, reduce", [("NashMTL", np.sum), ("MGDA", np.sum), ("Mean", np.mean)])
def test_training_and_evaluation_log_the_same_total(strategy, reduce):
    """Under a gradient-level strategy ``loss`` is the strategy's evaluation total in training too.

    Terms of very different scales (the strategy's weights far from 1) and no update
    (learning rate 0): ``loss`` and ``val_loss`` are then equal, and both are the plain
    sum (``Mean``: the mean) of the logged term losses, not ``sum_k w_k L_k``.
    """
    x, y = _data(n=32)
    objective = lw.Objective(_model(), {
        "softmax": lw.terms.SoftmaxCrossEntropy(on="logits"),
        "big": lw.terms.Loss("mse", on="embedding", target="big")}, weighting=getattr(lw.weighting, strategy)())
    objective.compile(optimizer=keras.optimizers.SGD(0.0))
    targets = {"label": y, "big": np.full((32, DIM), 30.0, "float32")}
    history = objective.fit(x, targets, batch_size=32, epochs=1, verbose=0, validation_data=(x, targets)).history
    terms = [history["loss/softmax"][0], history["loss/big"][0]]
    assert abs(history["weight/big"][0] - 1.0) > 1e-2 or strategy != "NashMTL"  # weights are not all 1
    assert history["loss"][0] == pytest.approx(reduce(terms), rel=1e-5)
    assert history["val_loss"][0] == pytest.approx(history["loss"][0], rel=1e-5)
