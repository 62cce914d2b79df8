"""The one strategy protocol: levels as types, pure rules, combinators, GradDrop's sgn(A) in the step."""

import keras
import numpy as np
import pytest

import lossweave as lw
from conftest import one_backend, to_numpy
from lossweave.cli import registry

RNG = np.random.default_rng(21)


def _strategy_classes():
    found = [getattr(lw.weighting, n) for n in lw.weighting.__all__]
    return [c for c in found if isinstance(c, type) and issubclass(c, lw.weighting.Weighting)]


# ------------------------------------------------------------------- levels
@one_backend
def test_the_level_is_the_type_and_the_registry_reads_it():
    for cls in _strategy_classes():
        if cls in (lw.weighting.Scaled, lw.weighting.LogLosses):
            continue  # a combinator's level is its strategy's
        assert cls.level == ("gradient" if issubclass(cls, lw.weighting.GradientWeighting) else "loss"), cls
    for name, entry in registry.WEIGHTINGS.items():
        assert entry.level == type(entry.build(["a", "center"], 0.1, 4, 0)).level, name
    assert lw.weighting.Scaled(lw.weighting.MGDA()).level == "gradient"
    assert lw.weighting.LogLosses(lw.weighting.Fixed()).level == "loss"
    with pytest.raises(TypeError, match=r"level='both'.*\('loss', 'gradient'\)"):
        type("Both", (lw.weighting.Weighting,), {"level": "both"})


@one_backend
def test_update_is_pure_and_the_layer_assigns_its_state():
    w = lw.weighting.NashMTL(max_norm=0.0)
    w.setup(["a", "b"])
    g = np.array([[2.0, 0.0], [0.0, 1.0]], "float32")
    state = w.state_values()
    weights, new = w.update(state, None, 0, True, g @ g.T)
    np.testing.assert_allclose(to_numpy(weights), [0.5, 1.0], rtol=1e-5)
    np.testing.assert_allclose(to_numpy(new["alpha"]), [0.5, 1.0], rtol=1e-5)
    np.testing.assert_array_equal(to_numpy(w.alpha), [1.0, 1.0])  # the rule assigned nothing
    w.aggregate(g @ g.T, None, 0, True)  # the Layer does
    np.testing.assert_allclose(to_numpy(w.alpha), [0.5, 1.0], rtol=1e-5)
    assert [v.name for v in w.weights] == ["alpha"] and list(w.init(["a", "b"])) == ["alpha"]


@one_backend
def test_a_strategy_of_the_earlier_protocol_still_works():
    class Halves(lw.weighting.GradientWeighting):  # implements aggregate(), as before the protocol
        def aggregate(self, gramian, losses, step, training):
            return keras.ops.full((keras.ops.shape(gramian)[0],), 0.5)

    rows = [RNG.normal(size=(2, 3)).astype("float32")]
    updates, weights = Halves().aggregate_rows(rows, rows[0] @ rows[0].T, None, 0, True)
    np.testing.assert_allclose(to_numpy(updates[0]), 0.5 * rows[0].sum(axis=0), rtol=1e-6)


# -------------------------------------------------------------- combinators
def _rows(k=3):
    rows = [RNG.normal(size=(k, 4, 2)).astype("float32"), RNG.normal(size=(k, 3)).astype("float32")]
    gram = sum(r.reshape(k, -1) @ r.reshape(k, -1).T for r in rows)
    return rows, gram


@one_backend
def test_scaled_equals_its_parts_composed_by_hand():
    losses = {"a": np.float32(2.0), "b": np.float32(3.0), "c": np.float32(0.5)}
    scaled = lw.weighting.Scaled(lw.weighting.Fixed({"a": 0.5}), {"a": 4.0, "c": 3.0})
    scaled.setup(list(losses))
    total, weights = scaled.combine(losses)
    by_hand = lw.weighting.Fixed({"a": 2.0, "c": 3.0})
    by_hand.setup(list(losses))
    want_total, want_weights = by_hand.combine(losses)
    np.testing.assert_allclose(float(to_numpy(total)), float(to_numpy(want_total)), rtol=1e-6)
    np.testing.assert_allclose([to_numpy(weights[n]) for n in losses], [to_numpy(want_weights[n]) for n in losses])
    # Gradient level: MGDA on the scaled rows, its weights applied to them.
    rows, gram = _rows()
    s = np.array([4.0, 1.0, 3.0], "float32")
    combined = lw.weighting.Scaled(lw.weighting.MGDA(), {"a": 4.0, "c": 3.0})
    combined.setup(list(losses))
    updates, weights = combined.aggregate_rows(rows, gram, np.ones(3, "float32"), 0, True)
    inner = to_numpy(lw.ops.aggregators.mgda_weights(gram * np.outer(s, s), losses=np.ones(3, "float32")))
    for got, r in zip(updates, rows):
        by_hand = np.tensordot(inner, s.reshape(3, *([1] * (r.ndim - 1))) * r, axes=1)
        np.testing.assert_allclose(to_numpy(got), by_hand, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(to_numpy(weights), inner * s, rtol=1e-5)


@one_backend
def test_log_losses_equals_its_parts_composed_by_hand():
    losses = np.array([2.0, 0.25, 5.0], "float32")
    names = ["a", "b", "c"]
    rows, gram = _rows()
    c = 1.0 / (losses.astype("float64") + 1e-8)
    # Nash-MTL after log-losses: Nash-MTL on the rows g_k / (L_k + eps), state and all.
    combined = lw.weighting.LogLosses(lw.weighting.NashMTL(max_norm=0.0))
    combined.setup(names)
    by_hand = lw.weighting.NashMTL(max_norm=0.0)
    by_hand.setup(names)
    for step in range(2):
        updates, weights = combined.aggregate_rows(rows, gram, losses, step, True)
        scaled = [r * c.reshape(3, *([1] * (r.ndim - 1))).astype("float32") for r in rows]
        want, want_weights = by_hand.aggregate_rows(scaled, gram * np.outer(c, c), np.log(losses + 1e-8), step, True)
        for got, w in zip(updates, want):
            np.testing.assert_allclose(to_numpy(got), to_numpy(w), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(to_numpy(weights), to_numpy(want_weights) * c, rtol=1e-4)
        np.testing.assert_allclose(to_numpy(combined.strategy.alpha), to_numpy(by_hand.alpha), rtol=1e-5)
    # Loss level: Fixed after log-losses minimises sum_k log(L_k + eps), weights 1 / (L_k + eps).
    fixed = lw.weighting.LogLosses(lw.weighting.Fixed())
    fixed.setup(names)
    total, weights = fixed.combine(dict(zip(names, losses)))
    np.testing.assert_allclose(float(to_numpy(total)), np.log(losses.astype("float64") + 1e-8).sum(), rtol=1e-6)
    np.testing.assert_allclose([to_numpy(weights[n]) for n in names], c, rtol=1e-6)


def test_a_combinator_trains_saves_and_continues(tmp_path):
    x = RNG.normal(size=(16, 6)).astype("float32")
    y = {"la": RNG.integers(0, 3, 16), "lb": RNG.normal(size=(16, 2)).astype("float32")}

    def objective():
        keras.utils.set_random_seed(1)
        inputs = keras.Input((6,))
        f = keras.layers.Dense(4, name="trunk")(inputs)
        model = keras.Model(inputs, {"a": keras.layers.Dense(3)(f), "b": keras.layers.Dense(2)(f)})
        terms = {"a": lw.terms.SoftmaxCrossEntropy(on="a", target="la"),
                 "b": lw.terms.Loss(keras.losses.MeanSquaredError(), on="b", target="lb")}
        o = lw.Objective(model, terms, weighting=lw.weighting.LogLosses(lw.weighting.NashMTL()))
        o.compile(optimizer=keras.optimizers.SGD(0.05))
        return o

    straight = objective()
    straight.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    resumed = objective()
    resumed.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    resumed.save(tmp_path / "log_nash.keras")
    resumed = keras.saving.load_model(tmp_path / "log_nash.keras")
    resumed.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(straight.weights, resumed.weights):
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), rtol=1e-5, atol=1e-6, err_msg=a.path)
    assert np.abs(to_numpy(resumed.weighting.strategy.alpha) - 1.0).max() > 1e-4


# ------------------------------------------------------------- GradDrop sgn(A)
class _Recording(lw.weighting.GradDrop):
    """GradDrop that keeps what the step gave it (the step runs eagerly here)."""

    def aggregate_rows(self, rows, gramian, losses, step, training, activations=None):
        self.seen = (to_numpy(rows[0]), None if activations is None else to_numpy(activations[0]))
        return super().aggregate_rows(rows, gramian, losses, step, training, activations=activations)


def test_graddrop_gets_the_representation_in_representation_mode():
    keras.utils.set_random_seed(2)
    inputs = keras.Input((5,))
    features = keras.layers.Identity(name="features")(keras.layers.Dense(4, name="trunk")(inputs))
    model = keras.Model(inputs, {"features": features, "a": keras.layers.Dense(3)(features),
                                 "b": keras.layers.Dense(2)(features)})
    terms = {"a": lw.terms.SoftmaxCrossEntropy(on="a", target="la"),
             "b": lw.terms.Loss(keras.losses.MeanSquaredError(), on="b", target="lb")}
    objective = lw.Objective(model, terms, weighting=_Recording(seed=0), representation="features")
    objective.compile(optimizer=keras.optimizers.SGD(0.0), run_eagerly=True)
    x = RNG.normal(size=(8, 5)).astype("float32")
    y = {"la": RNG.integers(0, 3, 8), "lb": RNG.normal(size=(8, 2)).astype("float32")}
    objective.train_on_batch(x, y)
    assert objective.weighting.wants_activations
    rows, activations = objective.weighting.seen
    np.testing.assert_allclose(activations, to_numpy(model(x)["features"]), rtol=1e-5, atol=1e-6)
    assert rows.shape == (2, 8, 4)
    # Parameter mode: no activations asked for, none given.
    plain = lw.weighting.GradDrop(seed=0)
    plain.setup(["a", "b"])
    plain.build_rows([("trunk/kernel", (5, 4))])
    assert not plain.wants_activations


@one_backend
def test_graddrop_with_the_activations_is_the_papers_sgn_a_form():
    """Chen et al. 2020, Eq. 1 with G_k = sum_batch sgn(A) dL_k/dA, against a NumPy reference."""
    k, batch, width = 3, 6, 4
    rows = [RNG.normal(size=(k, batch, width)).astype("float32")]
    activations = [RNG.normal(size=(batch, width)).astype("float32")]
    w = lw.weighting.GradDrop(seed=5)
    w.setup(["a", "b", "c"])
    w.build_rows([("representation/features", (None, width))])
    state = to_numpy(w.seed_generator.state).copy()
    updates, kept = w.aggregate_rows(rows, None, None, 0, True, activations=activations)
    w.seed_generator.state.assign(state)  # the step's draw U again
    u = to_numpy(keras.random.uniform((width,), dtype="float32", seed=w.seed_generator))
    statistic = (rows[0] * np.sign(activations[0])[None]).sum(axis=1)  # sum_batch sgn(A) G
    purity = 0.5 * (1 + statistic.sum(0) / np.abs(statistic).sum(0))  # Eq. 1
    mask = ((purity > u) & (statistic > 0)) | ((purity < u) & (statistic < 0))  # Eq. 2
    want = (mask[:, None, :] * rows[0]).sum(axis=0)
    np.testing.assert_allclose(to_numpy(updates[0]), want, rtol=1e-5, atol=1e-6)
    plain = (rows[0].sum(axis=1) > 0)  # the statistic without sgn(A) picks other signs here
    assert (np.sign(statistic) != np.where(plain, 1, -1)).any()
