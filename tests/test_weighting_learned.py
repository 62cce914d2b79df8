"""Convex and Uncertainty weighting: NumPy references, one SGD step, collapse, saving."""

import math
import os

import keras
import numpy as np
import pytest

import lossweave as lw
from conftest import one_backend, to_numpy

N = 8
# An identity model: outputs are the inputs (zeros), so the term losses are fixed
# by the targets (MSE of zeros against a constant c is c^2) and only the
# weighting's variables train.
TARGET_A, TARGET_B = 2.0, 0.5  # L_a = 4, L_b = 0.25
L_A, L_B = TARGET_A**2, TARGET_B**2


def _identity_objective(weighting):
    inputs = keras.Input((1,))
    model = keras.Model(inputs, {"a": keras.layers.Identity()(inputs), "b": keras.layers.Identity()(inputs)})
    return lw.Objective(
        model,
        {
            "a": lw.terms.Loss(keras.losses.MeanSquaredError(), on="a", target="a"),
            "b": lw.terms.Loss(keras.losses.MeanSquaredError(), on="b", target="b"),
        },
        weighting=weighting,
    )


def _data(a=TARGET_A, b=TARGET_B):
    x = np.zeros((N, 1), "float32")
    return x, {"a": np.full((N, 1), a, "float32"), "b": np.full((N, 1), b, "float32")}


def _scalar(v):
    return float(to_numpy(v))


# ---------------------------------------------------------------- Uncertainty
def _ref_uncertainty(s, losses, kinds, nonnegative):
    total, grads, weights = 0.0, {}, {}
    for k, loss in losses.items():
        factor = 1.0 if kinds.get(k) == "classification" else 0.5
        w = factor * math.exp(-s[k])
        reg = math.log1p(math.exp(s[k])) if nonnegative else 0.5 * s[k]
        dreg = 1.0 / (1.0 + math.exp(-s[k])) if nonnegative else 0.5
        total += w * loss + reg
        grads[k] = -w * loss + dreg
        weights[k] = w
    return total, grads, weights


KINDS = {"a": "classification"}  # b: regression by default


@pytest.mark.parametrize("nonnegative", [False, True])
def test_uncertainty_combine_matches_numpy(nonnegative):
    w = lw.weighting.Uncertainty(KINDS, nonnegative=nonnegative)
    w.setup(["a", "b"])
    s = {"a": 0.3, "b": -0.7}
    for name, value in s.items():
        w.log_variances[name].assign(value)
    losses = {"a": 1.7, "b": 0.4}
    total, weights = w.combine({k: np.float32(v) for k, v in losses.items()}, step=None, training=True)
    ref_total, _, ref_weights = _ref_uncertainty(s, losses, KINDS, nonnegative)
    assert _scalar(total) == pytest.approx(ref_total, rel=1e-5)
    for k in losses:
        assert _scalar(weights[k]) == pytest.approx(ref_weights[k], rel=1e-5)


@pytest.mark.parametrize("nonnegative", [False, True])
def test_uncertainty_one_sgd_step_matches_numpy_gradient(nonnegative):
    lr = 0.1
    objective = _identity_objective(lw.weighting.Uncertainty(KINDS, nonnegative=nonnegative))
    s = {"a": 0.3, "b": -0.7}
    for name, value in s.items():
        objective.weighting.log_variances[name].assign(value)
    objective.compile(optimizer=keras.optimizers.SGD(lr))
    x, y = _data()
    losses = {"a": L_A, "b": L_B}
    ref_total, ref_grads, ref_weights = _ref_uncertainty(s, losses, KINDS, nonnegative)

    logs = objective.evaluate(x, y, batch_size=N, verbose=0, return_dict=True)
    assert logs["loss"] == pytest.approx(ref_total, rel=1e-5)

    history = objective.fit(x, y, batch_size=N, epochs=1, verbose=0)
    assert history.history["loss"][0] == pytest.approx(ref_total, rel=1e-5)
    # One step: the logged weights are those of the variables before it (evaluation logs none).
    assert history.history["weight/a"][0] == pytest.approx(ref_weights["a"], rel=1e-5)
    assert history.history["weight/b"][0] == pytest.approx(ref_weights["b"], rel=1e-5)
    for name in s:
        expected = s[name] - lr * ref_grads[name]
        assert _scalar(objective.weighting.log_variances[name]) == pytest.approx(expected, rel=1e-5)


def test_nonnegative_keeps_total_nonnegative_where_plain_goes_negative():
    # Small losses: training drives s_k towards log L_k < -1, where the plain
    # total 0.5 + 0.5 * log L_k (regression) is negative.
    x, y = _data(a=0.1, b=0.1)  # L = 0.01 each
    totals = {}
    for nonnegative in (False, True):
        objective = _identity_objective(lw.weighting.Uncertainty(nonnegative=nonnegative))
        objective.compile(optimizer=keras.optimizers.SGD(0.5))
        history = objective.fit(x, y, batch_size=2, epochs=4, verbose=0)
        totals[nonnegative] = history.history["loss"]
        s = _scalar(objective.weighting.log_variances["a"])
        assert s < -1.0  # the variances shrank with the losses
    assert totals[False][-1] < 0
    assert min(totals[True]) >= 0


def test_uncertainty_rejects_bad_kinds():
    with pytest.raises(ValueError, match="regression"):
        lw.weighting.Uncertainty({"a": "ranking"})
    with pytest.raises(ValueError, match="not terms"):
        lw.weighting.Uncertainty({"c": "regression"}).setup(["a", "b"])


# --------------------------------------------------------------------- Convex
def test_convex_float_and_schedule_combine():
    w = lw.weighting.Convex("a", "b", alpha=0.25)
    w.setup(["a", "b", "c"])
    losses = {"a": np.float32(4.0), "b": np.float32(2.0), "c": np.float32(1.0)}
    total, weights = w.combine(losses, step=0)
    assert _scalar(total) == pytest.approx(0.25 * 4 + 0.75 * 2 + 1.0)
    assert _scalar(weights["c"]) == 1.0
    scheduled = lw.weighting.Convex("a", "b", alpha=lw.schedules.LinearWarmup(1.0, steps=10))
    scheduled.setup(["a", "b"])
    _, weights = scheduled.combine(losses, step=5)
    assert _scalar(weights["a"]) == pytest.approx(0.5) and _scalar(weights["b"]) == pytest.approx(0.5)


@pytest.mark.parametrize("smaller", ["a", "b"])
def test_learned_alpha_collapses_onto_the_smaller_loss(smaller):
    # d total / d alpha = L_a - L_b: constant, so SGD walks alpha to a bound and
    # the Clip constraint holds it there exactly.
    a, b = (TARGET_B, TARGET_A) if smaller == "a" else (TARGET_A, TARGET_B)
    objective = _identity_objective(lw.weighting.Convex("a", "b", alpha=0.5, learn_alpha=True))
    objective.compile(optimizer=keras.optimizers.SGD(0.1))
    x, y = _data(a=a, b=b)
    history = objective.fit(x, y, batch_size=2, epochs=2, verbose=0)
    alpha = _scalar(objective.weighting.alpha_variable)
    assert alpha == (1.0 if smaller == "a" else 0.0)
    assert history.history["weight/a"][-1] == pytest.approx(alpha)
    assert history.history["loss"][-1] == pytest.approx(min(a, b) ** 2, rel=1e-5)


def test_clip_constraint_and_convex_errors():
    assert [float(v) for v in to_numpy(lw.weighting.Clip(0.0, 1.0)(np.array([-1.0, 0.5, 2.0], "float32")))] == [
        0.0,
        0.5,
        1.0,
    ]
    with pytest.raises(ValueError, match="min_value <= max_value"):
        lw.weighting.Clip(1.0, 0.0)
    with pytest.raises(ValueError, match=r"Convex: `alpha` must be a number >= 0 and <= 1; received 1.5"):
        lw.weighting.Convex("a", "b", alpha=1.5)
    with pytest.raises(ValueError, match="not both"):
        lw.weighting.Convex("a", "b", alpha=lw.schedules.Constant(0.5), learn_alpha=True)
    with pytest.raises(ValueError, match="different"):
        lw.weighting.Convex("a", "a")
    with pytest.raises(ValueError, match="not terms"):
        lw.weighting.Convex("a", "z").setup(["a", "b"])


# ------------------------------------------------------------ serialization
CONFIGS = {
    "uncertainty": lambda: lw.weighting.Uncertainty({"a": "classification"}, nonnegative=True),
    "convex_float": lambda: lw.weighting.Convex("a", "b", alpha=0.3),
    "convex_schedule": lambda: lw.weighting.Convex("a", "b", alpha=lw.schedules.Cosine(1.0, 0.0, 10)),
    "convex_trainable": lambda: lw.weighting.Convex("a", "b", alpha=0.7, learn_alpha=True),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_config_round_trip(name):
    weighting = CONFIGS[name]()
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(weighting))
    assert type(clone) is type(weighting) and clone.get_config() == weighting.get_config()
    clone.setup(["a", "b"])
    weighting.setup(["a", "b"])
    assert [v.path for v in clone.trainable_variables] == [v.path for v in weighting.trainable_variables]
    clip = lw.weighting.Clip(0.1, 0.9)
    assert keras.constraints.deserialize(keras.constraints.serialize(clip)).get_config() == clip.get_config()


@pytest.mark.parametrize("name", ["uncertainty", "convex_trainable"])
def test_save_load_keeps_learned_variables(name, tmp_path):
    objective = _identity_objective(CONFIGS[name]())
    objective.compile(optimizer=keras.optimizers.SGD(0.05))
    x, y = _data()
    objective.fit(x, y, batch_size=4, epochs=1, verbose=0)
    learned = [to_numpy(v).copy() for v in objective.weighting.trainable_variables]
    assert learned and any(np.any(v != init) for v, init in zip(learned, [0.0, 0.0] if name == "uncertainty" else [0.7]))
    path = os.fspath(tmp_path / f"{name}.keras")
    objective.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.weighting) is type(objective.weighting)
    for a, b in zip(loaded.weighting.trainable_variables, learned):
        np.testing.assert_allclose(to_numpy(a), b, rtol=1e-6)
    a = objective.evaluate(x, y, verbose=0, return_dict=True)
    b = loaded.evaluate(x, y, verbose=0, return_dict=True)
    assert a == pytest.approx(b, rel=1e-5)


@one_backend
@pytest.mark.parametrize("nonnegative", [False, True])
def test_uncertainty_rule_matches_numpy_without_a_layer(nonnegative):
    s, losses = {"a": 0.3, "b": -0.7}, {"a": 1.7, "b": 0.4}
    total, weights = lw.ops.weighting.uncertainty([0.3, -0.7], [1.7, 0.4], [True, False], nonnegative)
    ref_total, _, ref_weights = _ref_uncertainty(s, losses, KINDS, nonnegative)
    assert _scalar(total) == pytest.approx(ref_total, rel=1e-5)
    assert [_scalar(w) for w in weights] == pytest.approx([ref_weights["a"], ref_weights["b"]], rel=1e-5)
