"""The strategies over the term gradients themselves: GradVac, GradDrop, MoCo, DBMTL, GradNorm.

Their ``build_rows``/``aggregate_rows`` directly (state against the pure
functions and, for GradNorm, a float64 reference of Chen et al. 2018, Eq. 1-2
with the gradient of L_grad taken by finite differences), then ``fit`` on the
backend of this pass and save/load/continue against a run straight through.
"""

import keras
import numpy as np
import pytest

import lossweave as lw
from conftest import one_backend, to_numpy
from lossweave.ops import aggregators as agg
from lossweave.weighting.gradnorm import gradnorm_update, last_layer
from lossweave.weighting.gradvac import group_indices

RNG = np.random.default_rng(5)
CLASSES, FEATURES, BATCH = 4, 6, 16
ENTRIES = [("trunk_a/kernel", (3, 4)), ("trunk_a/bias", (4,)), ("trunk_b/kernel", (4, 2)), ("trunk_b/bias", (2,))]


def _rows(k, entries=ENTRIES, scale=1.0):
    rows = [(RNG.normal(size=(k, *shape)) * scale).astype("float32") for _, shape in entries]
    rows[0][1] = -0.6 * rows[0][0]  # a conflict
    return rows


def _ready(weighting, k, entries=ENTRIES):
    weighting.setup([f"t{i}" for i in range(k)])
    weighting.build_rows(entries)
    return weighting


# --- GradNorm -----------------------------------------------------------------


def np_gradnorm(w, norms, losses, initial, alpha, lr):
    """Chen et al. 2018, Eq. 1-2, Algorithm 1; d L_grad / d w by central differences, targets constant."""
    w, norms = np.asarray(w, "float64"), np.asarray(norms, "float64")
    ratio = np.asarray(losses, "float64") / np.asarray(initial, "float64")
    r = ratio / ratio.mean()
    target = (w * norms).mean() * r**alpha  # G_bar r_i^alpha, held constant

    def l_grad(v):
        return np.abs(v * norms - target).sum()  # Eq. 2

    h = 1e-7
    grad = np.array([(l_grad(w + h * e) - l_grad(w - h * e)) / (2 * h) for e in np.eye(len(w))])
    moved = np.maximum(w - lr * grad, 0.0)
    return len(w) * moved / moved.sum()


@pytest.mark.parametrize("k", [2, 3, 5])
def test_gradnorm_update_is_a_gradient_step_on_l_grad(k):
    for alpha in (0.0, 1.5, 3.0):
        w = RNG.uniform(0.5, 1.5, size=k)
        w = (k * w / w.sum()).astype("float32")
        norms = RNG.uniform(0.1, 3.0, size=k).astype("float32")
        losses, initial = RNG.uniform(0.5, 2.0, size=(2, k)).astype("float32")
        new, _ = gradnorm_update(w, norms, losses, initial, alpha, 0.05)
        np.testing.assert_allclose(to_numpy(new), np_gradnorm(w, norms, losses, initial, alpha, 0.05), atol=1e-5)
        assert abs(float(to_numpy(new).sum()) - k) < 1e-5


def test_gradnorm_strategy_records_initial_losses_and_reads_the_last_layer():
    k = 3
    weighting = _ready(lw.weighting.GradNorm(alpha=1.0, learning_rate=0.05), k)
    assert weighting.last == [2, 3] == last_layer(ENTRIES)
    w = np.ones(k)
    initial = None
    for step in range(3):
        rows = _rows(k)
        rows[0] *= 100.0  # the first layer's gradients do not enter the norms
        losses = RNG.uniform(0.5, 2.0, size=k).astype("float32")
        initial = losses if initial is None else initial
        updates, weights = weighting.aggregate_rows(rows, None, losses, step, True)
        np.testing.assert_allclose(to_numpy(weights), w, atol=1e-6)
        for got, r in zip(updates, rows):
            np.testing.assert_allclose(to_numpy(got), np.tensordot(w, r, axes=1), rtol=1e-5, atol=1e-4)
        norms = np.sqrt(sum((r.astype("float64") ** 2).reshape(k, -1).sum(axis=1) for r in rows[2:]))
        w = np_gradnorm(w, norms, losses, initial, 1.0, 0.05)
        np.testing.assert_allclose(to_numpy(weighting.loss_weights), w, atol=1e-5)
        np.testing.assert_allclose(to_numpy(weighting.initial_losses), initial, atol=0)
    assert np.abs(w - 1.0).max() > 1e-3


# --- GradVac ------------------------------------------------------------------


def test_gradvac_groupings():
    assert group_indices(ENTRIES, "whole") == ([0, 0, 0, 0], 1)
    assert group_indices(ENTRIES, "layer") == ([0, 0, 1, 1], 2)
    assert group_indices(ENTRIES, "variable") == ([0, 1, 2, 3], 4)
    assert group_indices([], "layer") == ([], 1)


@pytest.mark.parametrize("grouping", ["whole", "layer", "variable"])
def test_gradvac_strategy_is_the_aggregator_with_its_saved_state(grouping):
    k = 3
    weighting = _ready(lw.weighting.GradVac(beta=0.3, grouping=grouping, seed=9), k)
    groups, count = group_indices(ENTRIES, grouping)
    assert tuple(weighting.targets.shape) == (count, k, k)
    generator = keras.random.SeedGenerator(9)  # the strategy's draws, replayed
    targets = np.zeros((count, k, k), "float32")
    for step in range(2):
        rows = _rows(k)
        targets, want, want_weights = agg.gradvac(targets, rows, 0.3, groups, seed=generator)
        updates, weights = weighting.aggregate_rows(rows, None, None, step, True)
        for got, w in zip(updates, want):
            np.testing.assert_allclose(to_numpy(got), to_numpy(w), atol=1e-5)
        np.testing.assert_allclose(to_numpy(weights), to_numpy(want_weights).mean(axis=0), atol=1e-6)
        np.testing.assert_allclose(to_numpy(weighting.targets), to_numpy(targets), atol=1e-6)
    assert np.abs(to_numpy(weighting.targets)).max() > 1e-3


# --- GradDrop -----------------------------------------------------------------


def test_graddrop_strategy_modes_and_leak_per_term():
    k = 3
    with pytest.raises(ValueError, match=r"3 terms"):
        lw.weighting.GradDrop(leak=[0.1, 0.2]).setup(["a", "b", "c"])
    weighting = _ready(lw.weighting.GradDrop(leak=[0.0, 0.5, 1.0], seed=2), k)
    assert not weighting.batched
    rows = _rows(k)
    updates, kept = weighting.aggregate_rows(rows, None, None, 0, True)
    want, want_kept = agg.graddrop(rows, seed=keras.random.SeedGenerator(2), leak=[0.0, 0.5, 1.0])
    for got, w in zip(updates, want):
        np.testing.assert_allclose(to_numpy(got), to_numpy(w), atol=1e-6)
    kept = to_numpy(kept)
    np.testing.assert_allclose(kept, to_numpy(want_kept), atol=1e-6)
    assert kept[2] == 1.0 and 0.5 <= kept[1] <= 1.0 and kept[0] < 1.0
    # Representation mode: the batch is summed in the statistic, the activations' signs weigh it.
    weighting = _ready(lw.weighting.GradDrop(seed=2), k, [("representation/features", (None, 5))])
    assert weighting.batched
    dz = [RNG.normal(size=(k, 7, 5)).astype("float32")]
    activations = [RNG.normal(size=(7, 5)).astype("float32")]
    updates, _ = weighting.aggregate_rows(dz, None, None, 0, True, activations=activations)
    want, _ = agg.graddrop(dz, seed=keras.random.SeedGenerator(2), batched=True, activations=activations)
    np.testing.assert_allclose(to_numpy(updates[0]), to_numpy(want[0]), atol=1e-6)


# --- MoCo, DBMTL ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["moco", "dbmtl"])
def test_running_average_strategies_keep_their_state(name):
    k = 3
    make = {
        "moco": lambda: lw.weighting.MoCo(beta=0.4, gamma=0.2, rho=0.1),
        "dbmtl": lambda: lw.weighting.DBMTL(beta=0.7, beta_sigma=0.5),
    }[name]
    weighting = _ready(make(), k)
    assert [tuple(v.shape) for v in weighting.row_variables] == [(k, *shape) for _, shape in ENTRIES]
    state = [np.zeros((k, *shape), "float32") for _, shape in ENTRIES]
    lam = np.full(k, 1 / k, "float32")
    for step in range(3):
        rows = _rows(k)
        losses = RNG.uniform(0.2, 2.0, size=k).astype("float32")
        if name == "moco":
            (state, lam), want, want_weights = agg.moco((state, lam), rows, losses, step, beta=0.4, gamma=0.2, rho=0.1)
        else:
            state, want, want_weights = agg.dbmtl(state, rows, losses, step, beta=0.7, beta_sigma=0.5)
        updates, weights = weighting.aggregate_rows(rows, None, losses, step, True)
        for got, w in zip(updates, want):
            np.testing.assert_allclose(to_numpy(got), to_numpy(w), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(to_numpy(weights), to_numpy(want_weights), atol=1e-6)
        for variable, value in zip(weighting.row_variables, state):
            np.testing.assert_allclose(to_numpy(variable), to_numpy(value), rtol=1e-5, atol=1e-7)
    if name == "moco":
        np.testing.assert_allclose(to_numpy(weighting.simplex_weights), to_numpy(lam), atol=1e-6)


@pytest.mark.parametrize("weighting", [lw.weighting.MoCo, lw.weighting.DBMTL])
def test_running_average_strategies_refuse_representation_mode(weighting):
    strategy = weighting()
    strategy.setup(["a", "b"])
    with pytest.raises(ValueError, match=r"received the entry 'representation/features'.*Drop `representation=`"):
        strategy.build_rows([("representation/features", (None, 8))])


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: lw.weighting.GradVac(beta=-0.1), "GradVac: `beta` must be a number >= 0 and <= 1; received -0.1"),
        (lambda: lw.weighting.GradVac(grouping="layers"), r"`grouping` must be one of \('whole', 'layer', 'variable'\); received 'layers'"),
        (lambda: lw.weighting.GradVac(seed=1.5), "`seed` must be an int or None; received 1.5"),
        (lambda: lw.weighting.GradDrop(leak=1.5), "GradDrop: `leak` must be a number >= 0 and <= 1; received 1.5"),
        (lambda: lw.weighting.MoCo(beta=2.0), "MoCo: `beta` must be a number > 0 and <= 1; received 2.0"),
        (lambda: lw.weighting.MoCo(gamma=0.0), "MoCo: `gamma` must be a number > 0; received 0.0"),
        (lambda: lw.weighting.MoCo(normalize="yes"), "`normalize` must be True or False"),
        (lambda: lw.weighting.DBMTL(beta=1.0), "DBMTL: `beta` must be a number >= 0 and < 1; received 1.0"),
        (lambda: lw.weighting.DBMTL(epsilon=0.0), "DBMTL: `epsilon` must be a number > 0; received 0.0"),
        (lambda: lw.weighting.GradNorm(alpha=-1.0), "GradNorm: `alpha` must be a number >= 0; received -1.0"),
        (lambda: lw.weighting.GradNorm(learning_rate=0.0), "GradNorm: `learning_rate` must be a number > 0; received 0.0"),
    ],
)
def test_errors_say_what_was_received_and_expected(make, message):
    with pytest.raises(ValueError, match=message):
        make()


# --- fit, save, load and continue ----------------------------------------------


def _model(heads):
    keras.utils.set_random_seed(1)
    inputs = keras.Input((FEATURES,))
    hidden = keras.layers.Dense(8, activation="tanh", name="trunk_a")(inputs)
    hidden = keras.layers.Dense(8, activation="tanh", name="trunk_b")(hidden)
    features = keras.layers.Identity(name="features")(hidden)
    outputs = {"features": features}
    for k in range(heads):
        outputs[f"logits_{k}"] = keras.layers.Dense(CLASSES, name=f"head_{k}")(features)
    return keras.Model(inputs, outputs)


STRATEGIES = {
    "gradvac": (lambda: lw.weighting.GradVac(beta=0.2, grouping="layer", seed=3), None),
    "graddrop": (lambda: lw.weighting.GradDrop(leak=0.1, seed=3), "features"),
    "moco": (lambda: lw.weighting.MoCo(gamma=0.5), None),
    "dbmtl": (lambda: lw.weighting.DBMTL(), None),
    "gradnorm": (lambda: lw.weighting.GradNorm(learning_rate=0.1), None),
}


def _objective(name, heads=2):
    make, representation = STRATEGIES[name]
    terms = {f"task_{k}": lw.terms.SoftmaxCrossEntropy(on=f"logits_{k}", target=f"label_{k}") for k in range(heads)}
    objective = lw.Objective(_model(heads), terms, weighting=make(), representation=representation)
    objective.compile(optimizer=keras.optimizers.Adam(0.01))
    return objective


def _data(heads=2, rows=32):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, FEATURES)).astype("float32")
    return x, {f"label_{k}": rng.integers(0, CLASSES, rows) for k in range(heads)}


def _strategy_state(weighting):
    """The strategy's variables and, where it draws, its seed generator's position."""
    variables = list(weighting.weights)
    if hasattr(weighting, "seed_generator"):
        variables.append(weighting.seed_generator.state)
    return [to_numpy(v).copy() for v in variables]


def _state(objective):
    return [to_numpy(v).copy() for v in objective.weights] + _strategy_state(objective.weighting)


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_fit_then_save_load_and_continue_is_straight_through(name, tmp_path):
    x, y = _data()
    straight = _objective(name)
    straight.build((None, FEATURES))  # creates the state shaped like the shared variables
    fresh = _strategy_state(straight.weighting)
    straight.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    path = str(tmp_path / f"{name}.keras")
    straight.save(path)
    # Straight through: the same objective goes on; the reloaded one must end where it does.
    history = straight.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0).history
    resumed = keras.saving.load_model(path)
    assert type(resumed.weighting) is type(straight.weighting)
    configs = [{k: v for k, v in o.weighting.get_config().items() if k != "name"} for o in (resumed, straight)]
    assert configs[0] == configs[1]
    resumed.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    for got, want in zip(_state(resumed), _state(straight)):
        np.testing.assert_allclose(got, want, atol=1e-5)

    weights = np.array([history[f"weight/task_{k}"][-1] for k in range(2)])
    assert np.all(np.isfinite(weights))
    if name == "moco":
        assert np.all(weights >= 0) and abs(weights.sum() - 1.0) < 1e-5
    if name == "gradnorm":
        assert abs(weights.sum() - 2.0) < 1e-4 and np.abs(weights - 1.0).max() > 1e-4
    if name == "graddrop":
        assert np.all((0 <= weights) & (weights <= 1)) and weights.min() < 1.0
    if name == "dbmtl":
        assert weights.min() >= 1.0 - 1e-6
    now = _strategy_state(straight.weighting)
    assert len(now) == len(fresh) > (0 if name == "graddrop" else 1)
    assert all(np.abs(a.astype("float64") - b).max() > 1e-6 for a, b in zip(now, fresh)), "a state never moved"
    for value in _state(straight):
        assert np.all(np.isfinite(value))


@one_backend
def test_gradnorm_rule_matches_numpy_without_a_layer():
    k = 3
    state, w, initial = agg.gradnorm_init(k), np.ones(k), None
    for step in range(3):
        rows = _rows(k)
        losses = RNG.uniform(0.5, 2.0, size=k).astype("float32")
        initial = losses if initial is None else initial
        state, updates, weights = agg.gradnorm(state, rows, losses, last=[2, 3], alpha=1.0, learning_rate=0.05)
        np.testing.assert_allclose(to_numpy(weights), w, atol=1e-6)
        np.testing.assert_allclose(to_numpy(updates[1]), np.tensordot(w, rows[1], axes=1), rtol=1e-5, atol=1e-4)
        norms = np.sqrt(sum((r.astype("float64") ** 2).reshape(k, -1).sum(axis=1) for r in rows[2:]))
        w = np_gradnorm(w, norms, losses, initial, 1.0, 0.05)
        np.testing.assert_allclose(to_numpy(state.loss_weights), w, atol=1e-5)
        np.testing.assert_allclose(to_numpy(state.initial_losses), initial, atol=0)
