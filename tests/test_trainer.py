"""The gradient-level train step (lossweave.trainer) on the backend of this pass.

A shared trunk ("features", an Identity layer) feeds K heads; the terms are
softmax cross-entropies on the heads and the paper's CenterLoss on one of
them, plus an L2 regularizer on one head (the model's own loss, added once).
"""

import keras
import numpy as np
import pytest

import lossweave as lw
from conftest import BACKEND, to_numpy

CLASSES, FEATURES, BATCH = 4, 6, 16


def _model(heads=2, seed=1):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((FEATURES,))
    hidden = keras.layers.Dense(8, activation="tanh", name="trunk")(inputs)
    features = keras.layers.Identity(name="features")(hidden)
    outputs = {"features": features, "embedding": keras.layers.Dense(3, name="embedding")(features)}
    for k in range(heads):
        regularizer = "l2" if k == 0 else None
        outputs[f"logits_{k}"] = keras.layers.Dense(CLASSES, name=f"head_{k}", kernel_regularizer=regularizer)(
            features
        )
    return keras.Model(inputs, outputs)


def _terms(heads=2, center=True):
    terms = {
        f"task_{k}": lw.terms.SoftmaxCrossEntropy(on=f"logits_{k}", target=f"label_{k}") for k in range(heads)
    }
    if center:
        terms["center"] = lw.terms.CenterLoss(CLASSES, alpha=0.5, on="embedding", target="label_0")
    return terms


def _objective(weighting, heads=2, center=True, optimizer=None, **kwargs):
    objective = lw.Objective(_model(heads), _terms(heads, center), weighting=weighting, **kwargs)
    objective.compile(optimizer=optimizer or keras.optimizers.SGD(0.1, momentum=0.5))
    return objective


def _data(heads=2, rows=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, FEATURES)).astype("float32")
    y = {f"label_{k}": rng.integers(0, CLASSES, rows) for k in range(heads)}
    return x, y


def _state(objective):
    return [to_numpy(v).copy() for v in objective.weights]


def _max_diff(a, b):
    return max(float(np.abs(u.astype("float64") - v).max()) for u, v in zip(a, b))


@pytest.mark.parametrize("representation", [None, "features"])
def test_sum_of_gradients_equals_fixed_weights_one(representation):
    x, y = _data()
    fixed = _objective(lw.weighting.Fixed({}))
    fixed.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0)
    summed = _objective(lw.weighting.Sum(), representation=representation)
    history = summed.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0)
    assert _max_diff(_state(summed), _state(fixed)) <= 1e-6
    assert {"cosine/task_0/task_1", "cosine/task_0/center", "weight/center"} <= set(history.history)


@pytest.mark.parametrize("heads", [2, 4])
@pytest.mark.parametrize("name", ["mgda", "pcgrad", "mean"])
def test_strategies_train_shared_trunk_with_center_loss(name, heads):
    weighting = {"mgda": lw.weighting.MGDA(), "pcgrad": lw.weighting.PCGrad(seed=3), "mean": lw.weighting.Mean()}[name]
    x, y = _data(heads)
    objective = _objective(weighting, heads)
    before = _state(objective.model)
    history = objective.fit(x, y, batch_size=BATCH, epochs=2, verbose=0).history
    for value in objective.weights:
        assert np.all(np.isfinite(to_numpy(value))), value.path
    assert _max_diff(_state(objective.model), before) > 1e-3
    weights = np.array([history[f"weight/{t}"][-1] for t in objective.terms])
    if name == "mgda":  # on the simplex
        assert np.all(weights >= -1e-6) and abs(weights.sum() - 1.0) <= 1e-4
    if name == "mean":
        np.testing.assert_allclose(weights, 1.0 / len(weights), atol=1e-6)
    cosines = [v[-1] for k, v in history.items() if k.startswith("cosine/")]
    assert len(cosines) == len(weights) * (len(weights) - 1) // 2
    assert all(-1.0 - 1e-5 <= c <= 1.0 + 1e-5 for c in cosines)


def _model_state_without_optimizer(objective):
    return [to_numpy(v).copy() for v in objective.model.weights]


def test_centers_move_once_per_step_as_in_the_loss_level_run():
    x, y = _data(rows=BATCH)
    loss_level = _objective(lw.weighting.Fixed({}))
    loss_level.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
    for weighting in (lw.weighting.MGDA(), lw.weighting.PCGrad(seed=0)):
        gradient_level = _objective(weighting)
        gradient_level.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
        np.testing.assert_allclose(
            to_numpy(gradient_level.terms["center"].centers),
            to_numpy(loss_level.terms["center"].centers),
            atol=1e-6,
        )
        assert int(to_numpy(gradient_level.step_counter)) == 1


def _representation_gradients(model, x, y):
    """dL_k/dz of each softmax head at z = features, with this backend's autodiff."""
    z = to_numpy(model(x)["features"])
    heads = [model.get_layer(f"head_{k}") for k in range(2)]

    def loss(k, features):
        logits = heads[k](features)
        return lw.ops.softmax_cross_entropy(logits, y[f"label_{k}"])

    grads = []
    for k in range(2):
        if BACKEND == "jax":
            import jax

            grads.append(np.asarray(jax.grad(lambda f: loss(k, f))(z)))
        elif BACKEND == "tensorflow":
            import tensorflow as tf

            features = tf.constant(z)
            with tf.GradientTape() as tape:
                tape.watch(features)
                value = loss(k, features)
            grads.append(tape.gradient(value, features).numpy())
        else:
            import torch

            features = torch.tensor(z, requires_grad=True)
            (grad,) = torch.autograd.grad(loss(k, features), features)
            grads.append(grad.numpy())
    return [g.reshape(-1).astype("float64") for g in grads]


def test_representation_mode_weights_are_mgda_of_the_representation_gradients():
    x, y = _data(rows=BATCH)
    objective = _objective(lw.weighting.MGDA(), center=False, representation="features")
    g1, g2 = _representation_gradients(objective.model, x, y)
    # Sener & Koltun 2018, Algorithm 1: the min-norm point of the segment [g1, g2].
    gamma = np.clip(np.dot(g2 - g1, g2) / np.dot(g1 - g2, g1 - g2), 0.0, 1.0)
    logs = objective.train_on_batch(x, y, return_dict=True)
    np.testing.assert_allclose([logs["weight/task_0"], logs["weight/task_1"]], [gamma, 1 - gamma], atol=1e-4)
    assert 0.01 < gamma < 0.99  # the heads conflict: the weights are not a vertex
    cosine = np.dot(g1, g2) / np.linalg.norm(g1) / np.linalg.norm(g2)
    assert logs["cosine/task_0/task_1"] == pytest.approx(cosine, abs=1e-4)
    objective.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert all(np.all(np.isfinite(to_numpy(v))) for v in objective.weights)


def test_save_load_and_continue_keeps_pcgrad_seed_position(tmp_path):
    x, y = _data(heads=3)

    def make():
        return _objective(lw.weighting.PCGrad(seed=5), heads=3, optimizer=keras.optimizers.Adam(0.01))

    straight = make()
    straight.fit(x, y, batch_size=BATCH, epochs=4, shuffle=False, verbose=0)
    first = make()
    first.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0)
    path = str(tmp_path / "pcgrad.keras")
    first.save(path)
    resumed = keras.saving.load_model(path)
    assert isinstance(resumed.weighting, lw.weighting.PCGrad) and resumed.weighting.seed == 5
    resumed.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0)
    assert _max_diff(_state(resumed), _state(straight)) <= 1e-5
    # The comparison is not vacuous: the same point with another seed position ends elsewhere.
    moved = keras.saving.load_model(path)
    state = to_numpy(moved.weighting.seed_generator.state)
    moved.weighting.seed_generator.state.assign(state + np.array([0, 7919], state.dtype))
    moved.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0)
    assert _max_diff(_state(moved.model), _state(straight.model)) > 1e-6


def _nan_gradient(y_true, y_pred):
    """A finite loss (0) whose gradient is NaN: d sqrt(u)/du at u = 0 is inf, times 0."""
    return keras.ops.mean(keras.ops.sqrt(keras.ops.abs(y_pred) * 0.0))


def test_a_nan_gradient_names_the_term_and_moves_nothing():
    x, y = _data(rows=BATCH)
    terms = _terms()
    terms["broken"] = lw.terms.Loss(_nan_gradient, on="logits_1", target="label_1")
    objective = lw.Objective(_model(), terms, weighting=lw.weighting.MGDA())
    objective.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.5))
    objective.build((None, FEATURES))
    before = _state(objective)
    with pytest.raises(lw.InvalidInputError, match=r"the gradient of term 'broken' has NaN or Inf") as info:
        objective.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
    assert "task_0" not in str(info.value)  # only the failing term is named
    assert _max_diff(_state(objective), before) == 0.0


def test_bad_label_on_the_gradient_step_raises_and_moves_nothing():
    x, y = _data(rows=BATCH)
    objective = _objective(lw.weighting.PCGrad(seed=0))
    objective.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)  # momentum is non-zero now
    before = _state(objective)
    y["label_0"] = y["label_0"].copy()
    y["label_0"][3] = CLASSES + 2
    with pytest.raises(lw.InvalidInputError, match="invalid label"):
        objective.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
    assert _max_diff(_state(objective), before) == 0.0


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.trunk = keras.layers.Dense(8, activation="tanh", name="trunk")
        self.heads = [keras.layers.Dense(CLASSES, name=f"head_{k}") for k in range(2)]

    def call(self, x):
        h = self.trunk(x)
        return {f"logits_{k}": head(h) for k, head in enumerate(self.heads)}


def test_subclassed_model_needs_shared_and_trains_with_it():
    x, y = _data(rows=32)
    objective = lw.Objective(_Subclassed(), _terms(center=False), weighting=lw.weighting.MGDA())
    objective.compile(optimizer="sgd")
    with pytest.raises(ValueError, match="shared="):
        objective.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
    model = _Subclassed()
    objective = lw.Objective(model, _terms(center=False), weighting=lw.weighting.MGDA(), shared=["trunk"])
    objective.compile(optimizer="sgd")
    objective.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
    trunk = {id(v) for v in model.trunk.trainable_variables}
    assert objective.gradient_plan().shared == [id(v) in trunk for v in objective.trainable_variables]
    assert objective.get_config()["shared"] == ["trunk"]


def test_shared_and_representation_are_refused_with_a_loss_level_weighting():
    with pytest.raises(ValueError, match="gradient-level"):
        lw.Objective(_model(), _terms(), weighting=lw.weighting.Fixed({}), representation="features")


def test_unknown_representation_says_which_outputs_exist():
    objective = _objective(lw.weighting.MGDA(), representation="nope")
    x, y = _data(rows=BATCH)
    with pytest.raises(ValueError, match=r"representation='nope' is not an output.*features"):
        objective.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)


def test_gradient_level_objective_round_trips_through_keras_file(tmp_path):
    objective = _objective(lw.weighting.MGDA(normalization="l2"), representation="features")
    x, y = _data(rows=BATCH)
    objective.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
    path = str(tmp_path / "mgda.keras")
    objective.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.representation == "features" and loaded.weighting.normalization == "l2"
    assert _max_diff(_state(loaded), _state(objective)) == 0.0
    loaded.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)


@pytest.mark.parametrize("representation", [None, "features"])
def test_mixed_float16_unscales_term_gradients_and_skips_overflow(representation):
    """Under mixed_float16 (a LossScaleOptimizer starting at 2^15) the weights and cosines
    are those of the unscaled gradients: the same as in float32 on the first step."""
    x, y = _data(rows=BATCH)
    logs = {}
    for policy in ("float32", "mixed_float16"):
        keras.config.set_dtype_policy(policy)
        objective = _objective(lw.weighting.MGDA(normalization="loss+"), representation=representation)
        logs[policy] = objective.train_on_batch(x, y, return_dict=True)
        objective.fit(x, y, batch_size=8, epochs=2, verbose=0)  # overflowing steps are skipped, not errors
        assert all(np.all(np.isfinite(to_numpy(v))) for v in objective.weights)
    assert isinstance(objective.optimizer, keras.optimizers.LossScaleOptimizer)
    for key in ("weight/task_0", "weight/task_1", "weight/center", "cosine/task_0/task_1"):
        assert logs["mixed_float16"][key] == pytest.approx(logs["float32"][key], abs=0.05), key


@keras.saving.register_keras_serializable(package="lossweave_tests")
class _FirstTermRows(lw.weighting.GradientWeighting):
    """A rows strategy: each shared entry gets a running mean of term 0's rows (state from build_rows)."""

    def build_rows(self, entries):
        super().build_rows(entries)
        self.means = [self.add_weight(shape=shape[1:] if path.startswith("representation/") else shape,
                                      initializer="zeros", trainable=False, name=f"mean_{i}")
                      for i, (path, shape) in enumerate(entries)]
        self.count = self.add_weight(shape=(), initializer="zeros", trainable=False, name="count")

    def aggregate_rows(self, rows, gramian, losses, step, training):
        count = self.count + 1.0
        self.count.assign(count)
        updates = []
        for mean, r in zip(self.means, rows):
            row = r[0] if len(mean.shape) == len(r.shape) - 1 else keras.ops.mean(r[0], axis=0)
            mean.assign(mean + (row - mean) / count)
            updates.append(r[0])
        k = rows[0].shape[0]
        return updates, keras.ops.one_hot(0, k)


class _FirstTermWeights(lw.weighting.GradientWeighting):
    def aggregate(self, gramian, losses, step, training):
        return keras.ops.one_hot(0, gramian.shape[0])


@pytest.mark.parametrize("representation", [None, "features"])
def test_aggregate_rows_updates_reach_the_shared_variables(representation, tmp_path):
    """A strategy's own updates (here: term 0's rows) give the same run as the weights (1, 0, 0)
    through ``aggregate``; its state, created in build_rows, is shaped from the entries and saved."""
    x, y = _data()
    runs = {}
    for name, weighting in (("rows", _FirstTermRows()), ("weights", _FirstTermWeights())):
        runs[name] = _objective(weighting, representation=representation)
        runs[name].fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0)
    rows = runs["rows"]
    assert _max_diff(_state(rows)[: len(_state(runs["weights"]))], _state(runs["weights"])) <= 1e-6
    plan = rows.gradient_plan()
    if representation is None:
        shared = [v for v, s in zip(rows.trainable_variables, plan.shared) if s]
        assert [p for p, _ in rows.weighting.row_entries] == [v.path for v in shared]
        assert [tuple(m.shape) for m in rows.weighting.means] == [tuple(v.shape) for v in shared]
    else:
        assert rows.weighting.row_entries == [("representation/features", (None, 8))]
    assert float(to_numpy(rows.weighting.count)) == 2 * len(x) // BATCH
    path = str(tmp_path / "rows.keras")
    rows.save(path)
    loaded = keras.saving.load_model(path)
    assert _max_diff(_state(loaded), _state(rows)) == 0.0
