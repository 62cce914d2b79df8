"""Schedules: NumPy references, errors, serialization, and Fixed(schedule) inside fit."""

import math
import os

import keras
import numpy as np
import pytest

import lossweave as lw
from conftest import to_numpy
from lossweave import schedules

STEPS = [0, 1, 4, 5, 9, 10, 11, 25, 100]


def _ref_warmup(t, value, steps, start):
    return value if steps == 0 else start + (value - start) * min(max(t / steps, 0.0), 1.0)


def _ref_cosine(t, initial, final, steps):
    f = min(max(t / steps, 0.0), 1.0)
    return final + (initial - final) * 0.5 * (1 + math.cos(math.pi * f))


def _ref_piecewise(t, boundaries, values):
    return values[int(np.searchsorted(boundaries, t, side="right"))]


def _ref_exponential(t, initial, rate, steps):
    return initial * rate ** (t / steps)


CASES = {
    "constant": (lambda **u: schedules.Constant(0.7, **u), lambda t: 0.7),
    "warmup": (lambda **u: schedules.LinearWarmup(2.0, steps=10, start=0.5, **u),
               lambda t: _ref_warmup(t, 2.0, 10, 0.5)),
    "warmup_zero": (lambda **u: schedules.LinearWarmup(3.0, steps=0, **u), lambda t: 3.0),
    "cosine": (lambda **u: schedules.Cosine(1.0, 0.1, steps=10, **u), lambda t: _ref_cosine(t, 1.0, 0.1, 10)),
    "cosine_up": (lambda **u: schedules.Cosine(0.0, 2.0, steps=8, **u), lambda t: _ref_cosine(t, 0.0, 2.0, 8)),
    "piecewise": (lambda **u: schedules.Piecewise([5, 10, 25], [1.0, 0.5, 0.25, 0.0], **u),
                  lambda t: _ref_piecewise(t, [5, 10, 25], [1.0, 0.5, 0.25, 0.0])),
    "exponential": (lambda **u: schedules.Exponential(2.0, rate=0.5, steps=10, **u),
                    lambda t: _ref_exponential(t, 2.0, 0.5, 10)),
    "exponential_growth": (lambda **u: schedules.Exponential(0.1, rate=3.0, steps=25, **u),
                           lambda t: _ref_exponential(t, 0.1, 3.0, 25)),
    "lambda": (lambda **u: schedules.Lambda(lambda t: keras.ops.sqrt(t), **u), lambda t: math.sqrt(t)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_schedule_matches_numpy_reference_per_step(name):
    make, ref = CASES[name]
    schedule = make()
    for step in STEPS:
        got = schedule(step)
        assert got.dtype == "float32" or str(got.dtype).endswith("float32")
        assert float(to_numpy(got)) == pytest.approx(ref(step), rel=1e-5, abs=1e-6), step


@pytest.mark.parametrize("name", sorted(CASES))
def test_schedule_epoch_unit_uses_epoch_index(name):
    make, ref = CASES[name]
    schedule = make(unit="epoch", steps_per_epoch=3)
    for step in [0, 2, 3, 5, 6, 29, 30, 31, 299, 300]:
        assert float(to_numpy(schedule(step))) == pytest.approx(ref(step // 3), rel=1e-5, abs=1e-6), step


@pytest.mark.parametrize("name", sorted(CASES))
def test_schedule_accepts_step_tensor_variable_and_none(name):
    make, ref = CASES[name]
    schedule = make()
    variable = keras.Variable(11, dtype="int32", trainable=False)
    assert float(to_numpy(schedule(variable))) == pytest.approx(ref(11), rel=1e-5, abs=1e-6)
    tensor = keras.ops.convert_to_tensor(np.int32(25))
    assert float(to_numpy(schedule(tensor))) == pytest.approx(ref(25), rel=1e-5, abs=1e-6)
    assert float(to_numpy(schedule(None))) == pytest.approx(ref(0), rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("name", sorted(set(CASES) - {"lambda"}))
def test_schedule_serialization_round_trip(name):
    schedule = CASES[name][0](unit="epoch", steps_per_epoch=4)
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
    assert type(clone) is type(schedule) and clone.get_config() == schedule.get_config()
    assert type(schedule).from_config(schedule.get_config()).get_config() == schedule.get_config()
    for step in [0, 7, 40]:
        assert float(to_numpy(clone(step))) == pytest.approx(float(to_numpy(schedule(step))))


@keras.saving.register_keras_serializable(package="lossweave_tests")
def half_step(t):
    return 0.5 * t


def test_lambda_with_registered_function_round_trips():
    schedule = schedules.Lambda(half_step)
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
    assert isinstance(clone, schedules.Lambda) and clone.fn is half_step
    assert float(to_numpy(clone(8))) == 4.0


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: schedules.LinearWarmup(1.0, steps=10, unit="epoch"), "steps_per_epoch"),
        (lambda: schedules.Cosine(1.0, 0.0, 10, unit="epochs", steps_per_epoch=3), "unit"),
        (lambda: schedules.Constant(1.0, steps_per_epoch=3), "only used with unit='epoch'"),
        (lambda: schedules.Constant(1.0, unit="epoch", steps_per_epoch=0), "`steps_per_epoch` must be an int >= 1; received 0"),
        (lambda: schedules.Constant("a"), "Constant: `value` must be a number; received 'a'"),
        (lambda: schedules.LinearWarmup(1.0, steps=-1), ">= 0"),
        (lambda: schedules.Cosine(1.0, 0.0, steps=0), "> 0"),
        (lambda: schedules.Exponential(1.0, rate=0.0, steps=10), "> 0"),
        (lambda: schedules.Exponential(1.0, rate=float("nan"), steps=10), "finite"),
        (lambda: schedules.Piecewise([10, 5], [1.0, 2.0, 3.0]), "strictly increasing"),
        (lambda: schedules.Piecewise([10], [1.0]), "len\\(values\\)"),
        (lambda: schedules.Piecewise(10, [1.0, 2.0]), "must be lists"),
        (lambda: schedules.Lambda(3.0), "callable"),
    ],
)
def test_bad_arguments_raise_clear_errors(make, match):
    with pytest.raises(ValueError, match=match):
        make()


# ----------------------------------------------------------- Fixed(schedule)
def _two_output_objective(weighting):
    inputs = keras.Input((3,))
    model = keras.Model(inputs, {"a": keras.layers.Dense(1)(inputs), "b": keras.layers.Dense(2)(inputs)})
    return lw.Objective(
        model,
        {
            "a": lw.terms.Loss(keras.losses.MeanSquaredError(), on="a", target="a"),
            "b": lw.terms.Loss(keras.losses.MeanSquaredError(), on="b", target="b"),
        },
        weighting=weighting,
    )


def _data(n=16):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(n, 3)).astype("float32")
    return x, {"a": rng.normal(size=(n, 1)).astype("float32"), "b": rng.normal(size=(n, 2)).astype("float32")}


def test_fixed_with_schedules_combines_at_step():
    w = lw.weighting.Fixed({"b": schedules.Piecewise([3], [0.0, 2.0])}, default=schedules.Constant(0.5))
    w.setup(["a", "b"])
    losses = {"a": np.float32(4.0), "b": np.float32(3.0)}
    assert float(to_numpy(w.combine(losses, step=2)[0])) == pytest.approx(2.0)
    assert float(to_numpy(w.combine(losses, step=3)[0])) == pytest.approx(8.0)
    assert float(to_numpy(w.combine(losses)[0])) == pytest.approx(2.0)  # no step: step 0


def test_fixed_wraps_callables_and_rejects_other_things():
    w = lw.weighting.Fixed({"b": lambda t: keras.ops.minimum(t, 2.0)})
    assert isinstance(w.weights_by_term["b"], schedules.Lambda)
    w.setup(["a", "b"])
    assert float(to_numpy(w.combine({"a": 1.0, "b": 1.0}, 5, True)[1]["b"])) == 2.0
    with pytest.raises(ValueError, match="Schedule"):
        lw.weighting.Fixed({"b": "linear"})


def test_linear_warmup_weight_moves_inside_fit_every_backend():
    # 16 samples, batch 4: steps 0..3 in epoch 0, 4..7 in epoch 1, ... The
    # schedule must move within and across epochs on every backend (on JAX a
    # Python float rebound from a callback would stay frozen in the compiled step).
    x, y = _data()
    objective = _two_output_objective(lw.weighting.Fixed({"b": schedules.LinearWarmup(1.0, steps=10)}))
    objective.compile(optimizer=keras.optimizers.SGD(0.01))
    history = objective.fit(x, y, batch_size=4, epochs=4, shuffle=False, validation_data=(x, y), verbose=0)
    expected = [np.mean([min(s / 10, 1.0) for s in range(4 * e, 4 * e + 4)]) for e in range(4)]
    np.testing.assert_allclose(history.history["weight/b"], expected, rtol=1e-5)
    np.testing.assert_allclose(history.history["weight/a"], [1.0] * 4)
    # The test step is compiled once; the weight of its total must still follow the
    # optimizer's counter (4 steps an epoch: 0.4, 0.8, then 1 from step 10). An
    # evaluation logs no weights (no gradients there): read it from the total.
    h = history.history
    assert not [k for k in h if k.startswith("val_weight/")]
    np.testing.assert_allclose(h["val_loss"], np.array(h["val_loss/a"]) + np.array([0.4, 0.8, 1.0, 1.0])
                               * np.array(h["val_loss/b"]), rtol=1e-5)
    # The evaluate after training uses the final weight.
    logs = objective.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
    assert "weight/b" not in logs
    assert logs["loss"] == pytest.approx(logs["loss/a"] + logs["loss/b"], rel=1e-5)


def test_piecewise_weight_switches_mid_epoch_and_epoch_unit_holds_within_epoch():
    x, y = _data()
    weighting = lw.weighting.Fixed(
        {
            "a": schedules.Piecewise([2], [0.0, 1.0]),  # switches at step 2: within epoch 0
            "b": schedules.Cosine(1.0, 0.0, steps=2, unit="epoch", steps_per_epoch=4),
        }
    )
    objective = _two_output_objective(weighting)
    objective.compile(optimizer=keras.optimizers.SGD(0.01))
    history = objective.fit(x, y, batch_size=4, epochs=3, shuffle=False, verbose=0)
    np.testing.assert_allclose(history.history["weight/a"], [0.5, 1.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(history.history["weight/b"], [1.0, 0.5, 0.0], atol=1e-6)


def test_fixed_schedule_config_and_save_load(tmp_path):
    weighting = lw.weighting.Fixed({"b": schedules.LinearWarmup(1.0, steps=10, start=0.2)}, default=0.5)
    config = weighting.get_config()
    assert config["default"] == 0.5 and config["weights"]["b"]["class_name"] == "LinearWarmup"
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(weighting))
    assert clone.get_config() == config and isinstance(clone.weights_by_term["b"], schedules.LinearWarmup)

    x, y = _data()
    objective = _two_output_objective(weighting)
    objective.compile(optimizer=keras.optimizers.SGD(0.01))
    objective.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
    path = os.fspath(tmp_path / "scheduled.keras")
    objective.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.weighting.get_config() == config
    assert int(to_numpy(loaded.optimizer.iterations)) == 4
    history = loaded.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
    expected = np.mean([0.2 + 0.8 * min(s / 10, 1.0) for s in range(4, 8)])  # continues at step 4
    assert history.history["weight/b"][0] == pytest.approx(expected, rel=1e-5)


def test_plain_float_weights_unchanged():
    weighting = lw.weighting.Fixed({"b": 0.25})
    assert weighting.get_config()["weights"] == {"b": 0.25} and weighting.get_config()["default"] == 1.0
    assert weighting.weights_by_term == {"b": 0.25} and isinstance(weighting.default, float)


def test_lambda_of_a_python_lambda_needs_safe_mode_off_to_load():
    schedule = schedules.Lambda(lambda t: 2.0 * t)
    with pytest.warns(UserWarning, match="lambda"):
        config = keras.saving.serialize_keras_object(schedule)
    with pytest.raises(ValueError, match="lambda"):
        keras.saving.deserialize_keras_object(config)
    clone = keras.saving.deserialize_keras_object(config, safe_mode=False)
    assert float(to_numpy(clone(3))) == 6.0
