"""Loss-level weighting strategies (GLS, RLW, DWA, FAMO) against NumPy references from the papers."""

import operator
import os

import keras
import numpy as np
import pytest

import lossweave as lw
from conftest import gradient, one_backend, to_numpy

NAMES = ["a", "b", "c"]
RNG = np.random.default_rng(11)
# A sequence of positive losses (steps x terms), float32 as the Objective gives them.
SEQUENCE = RNG.uniform(0.2, 3.0, size=(12, 3)).astype("float32")


def _losses(row):
    return {n: np.float32(v) for n, v in zip(NAMES, row)}


def _vector(weights):
    return np.array([float(to_numpy(weights[n])) for n in NAMES])


def _softmax(v):
    e = np.exp(v - v.max())
    return e / e.sum()


# --------------------------------------------------------------------------- GLS
def test_gls_matches_the_geometric_mean_and_its_gradient_weights():
    weighting = lw.weighting.GLS()
    weighting.setup(NAMES)
    for row in SEQUENCE:
        total, weights = weighting.combine(_losses(row), keras.ops.zeros((), "int32"), training=True)
        losses = row.astype("float64")
        expected = np.prod(losses) ** (1.0 / len(losses))  # Chennupati et al. 2019
        np.testing.assert_allclose(float(to_numpy(total)), expected, rtol=1e-5)
        # d total / d L_k = total / (K L_k)
        np.testing.assert_allclose(_vector(weights), expected / (len(losses) * losses), rtol=1e-5)


def test_gls_is_scale_invariant_per_term():
    weighting = lw.weighting.GLS()
    weighting.setup(["a", "b"])
    one, _ = weighting.combine({"a": np.float32(2.0), "b": np.float32(3.0)})
    two, _ = weighting.combine({"a": np.float32(200.0), "b": np.float32(3.0)})
    np.testing.assert_allclose(float(to_numpy(two)) / float(to_numpy(one)), 10.0, rtol=1e-5)


# --------------------------------------------------------------------------- RLW
def test_rlw_weights_are_random_softmax_weights_in_training_and_equal_in_eval():
    weighting = lw.weighting.RLW(seed=3)
    weighting.setup(NAMES)
    drawn = []
    for row in SEQUENCE[:5]:
        total, weights = weighting.combine(_losses(row), None, training=True)
        w = _vector(weights)
        assert np.all(w > 0)
        np.testing.assert_allclose(w.sum(), 1.0, rtol=1e-5)  # softmax, as in LibMTL
        np.testing.assert_allclose(float(to_numpy(total)), (w * row).sum(), rtol=1e-5)
        drawn.append(w)
    assert all(not np.allclose(drawn[i], drawn[i + 1]) for i in range(len(drawn) - 1))
    total, weights = weighting.combine(_losses(SEQUENCE[0]), None, training=False)
    np.testing.assert_allclose(_vector(weights), np.full(3, 1 / 3), rtol=1e-6)
    np.testing.assert_allclose(float(to_numpy(total)), SEQUENCE[0].mean(), rtol=1e-5)


def test_rlw_same_seed_same_weights():
    sequences = []
    for _ in range(2):
        weighting = lw.weighting.RLW(seed=5)
        weighting.setup(NAMES)
        sequences.append(
            [_vector(weighting.combine(_losses(row), None, training=True)[1]) for row in SEQUENCE[:3]]
        )
    np.testing.assert_allclose(np.array(sequences[0]), np.array(sequences[1]))


# --------------------------------------------------------------------------- DWA
def _dwa_reference(sequence, steps_per_epoch, temperature):
    """Liu et al. 2019, Eq. 1, written over whole epochs: weights of every step."""
    count = sequence.shape[1]
    means = [
        sequence[e * steps_per_epoch : (e + 1) * steps_per_epoch].astype("float64").mean(axis=0)
        for e in range(len(sequence) // steps_per_epoch)
    ]
    out = []
    for step in range(len(sequence)):
        epoch = step // steps_per_epoch
        if epoch < 2:
            out.append(np.ones(count))
        else:
            ratio = means[epoch - 1] / means[epoch - 2]
            out.append(count * _softmax(ratio / temperature))
    return out, means


@pytest.mark.parametrize("temperature", [2.0, 0.5])
def test_dwa_matches_equation_1_across_epoch_boundaries(temperature):
    steps_per_epoch = 3  # 12 steps: 4 epochs, dynamic weights in epochs 2 and 3
    weighting = lw.weighting.DWA(steps_per_epoch=steps_per_epoch, temperature=temperature)
    weighting.setup(NAMES)
    expected, means = _dwa_reference(SEQUENCE, steps_per_epoch, temperature)
    for step, row in enumerate(SEQUENCE):
        # Evaluation in between uses the current weights and changes no state.
        _, eval_weights = weighting.combine(_losses(row * 7), None, training=False)
        np.testing.assert_allclose(_vector(eval_weights), expected[step], rtol=1e-5)
        total, weights = weighting.combine(_losses(row), None, training=True)
        np.testing.assert_allclose(_vector(weights), expected[step], rtol=1e-5)
        np.testing.assert_allclose(float(to_numpy(total)), (expected[step] * row).sum(), rtol=1e-5)
        done = step + 1
        assert int(to_numpy(weighting.steps)) == done
        closed = done // steps_per_epoch
        if closed >= 1:
            np.testing.assert_allclose(to_numpy(weighting.mean_1), means[closed - 1], rtol=1e-5)
        if closed >= 2:
            np.testing.assert_allclose(to_numpy(weighting.mean_2), means[closed - 2], rtol=1e-5)
        partial = SEQUENCE[closed * steps_per_epoch : done].astype("float64").sum(axis=0)
        np.testing.assert_allclose(to_numpy(weighting.epoch_sum), partial, rtol=1e-5, atol=1e-6)
    assert not np.allclose(expected[-1], 1.0)


def test_dwa_argument_errors():
    with pytest.raises(ValueError, match="steps_per_epoch` is required"):
        lw.weighting.DWA()
    with pytest.raises(ValueError, match="DWA: `steps_per_epoch` must be an int >= 1; received 0"):
        lw.weighting.DWA(steps_per_epoch=0)
    with pytest.raises(ValueError, match="DWA: `temperature` must be a number > 0; received 0.0"):
        lw.weighting.DWA(steps_per_epoch=4, temperature=0.0)


# -------------------------------------------------------------------------- FAMO
def _famo_reference(sequence, beta, gamma, min_loss=0.0, eps=1e-8):
    """Liu et al. 2023, Algorithm 1, with L(t+1) taken from the next step."""
    xi = np.zeros(sequence.shape[1])
    previous = None
    out = []
    for row in sequence.astype("float64"):
        if previous is not None:
            delta = np.log(previous - min_loss + eps) - np.log(row - min_loss + eps)
            z = _softmax(xi)
            jacobian = np.diag(z) - np.outer(z, z)  # d softmax(xi) / d xi
            xi = xi - beta * (jacobian.T @ delta + gamma * xi)
        previous = row
        z = _softmax(xi)
        gap = row - min_loss + eps
        c = (z / gap).sum()
        out.append(((z * np.log(gap)).sum() / c, z / gap / c, xi.copy()))
    return out


@pytest.mark.parametrize("beta,gamma,min_loss", [(0.025, 0.001, 0.0), (0.5, 0.01, 0.1)])
def test_famo_matches_algorithm_1(beta, gamma, min_loss):
    weighting = lw.weighting.FAMO(beta=beta, gamma=gamma, min_loss=min_loss)
    weighting.setup(NAMES)
    expected = _famo_reference(SEQUENCE, beta, gamma, min_loss)
    for row, (total, weights, xi) in zip(SEQUENCE, expected):
        got_total, got_weights = weighting.combine(_losses(row), None, training=True)
        np.testing.assert_allclose(float(to_numpy(got_total)), total, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(_vector(got_weights), weights, rtol=1e-5)
        np.testing.assert_allclose(to_numpy(weighting.logits), xi, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(to_numpy(weighting.previous_losses), row, rtol=1e-6)
    assert np.abs(expected[-1][2]).max() > 1e-4  # the logits did move


def test_famo_evaluation_changes_no_state():
    weighting = lw.weighting.FAMO(beta=0.5)
    weighting.setup(NAMES)
    for row in SEQUENCE[:3]:
        weighting.combine(_losses(row), None, training=True)
    logits = to_numpy(weighting.logits).copy()
    _, weights = weighting.combine(_losses(SEQUENCE[5]), None, training=False)
    np.testing.assert_array_equal(to_numpy(weighting.logits), logits)
    np.testing.assert_array_equal(to_numpy(weighting.previous_losses), SEQUENCE[2])
    z = _softmax(logits.astype("float64"))
    gap = SEQUENCE[5].astype("float64") + 1e-8
    np.testing.assert_allclose(_vector(weights), (z / gap) / (z / gap).sum(), rtol=1e-5)


def test_famo_argument_errors():
    with pytest.raises(ValueError, match="FAMO: `beta` must be a number > 0; received 0.0"):
        lw.weighting.FAMO(beta=0.0)
    with pytest.raises(ValueError, match="FAMO: `gamma` must be a number >= 0; received -1.0"):
        lw.weighting.FAMO(gamma=-1.0)
    with pytest.raises(ValueError, match="FAMO: `epsilon` must be a number > 0; received 'small'"):
        lw.weighting.FAMO(epsilon="small")


STRATEGIES = {
    "gls": lambda: lw.weighting.GLS(),
    "rlw": lambda: lw.weighting.RLW(seed=1),
    "dwa": lambda: lw.weighting.DWA(steps_per_epoch=1, temperature=2.0),
    "famo": lambda: lw.weighting.FAMO(beta=0.1, gamma=0.001),
}
STATE = {"gls": [], "rlw": ["seed_generator.state"], "dwa": ["steps", "epoch_sum", "mean_1", "mean_2"],
         "famo": ["logits", "previous_losses", "has_previous"]}


@pytest.mark.parametrize("name", ["gls", "rlw", "dwa", "famo"])
def test_reported_weights_are_the_gradient_of_the_total(name):
    weighting = STRATEGIES[name]()
    weighting.setup(NAMES)
    for row in SEQUENCE[:4]:  # move the state away from its start
        weighting.combine(_losses(row), None, training=True)
    row = SEQUENCE[6]

    def total(vector):
        return weighting.combine({n: vector[i] for i, n in enumerate(NAMES)}, None, training=False)[0]

    _, weights = weighting.combine(_losses(row), None, training=False)
    np.testing.assert_allclose(gradient(total, row), _vector(weights), rtol=1e-5)


# ---------------------------------------------------------------- all strategies

def test_bad_arguments_and_protocol_errors():
    with pytest.raises(ValueError, match="seed` must be an int"):
        lw.weighting.RLW(seed=1.5)
    weighting = lw.weighting.GLS()
    with pytest.raises(ValueError, match=r"setup\(term_names\) was not called"):
        weighting.combine({"a": np.float32(1.0)})
    weighting.setup(["a", "b"])
    with pytest.raises(ValueError, match=r"received losses for \['a', 'x'\].*\['a', 'b'\]"):
        weighting.combine({"a": np.float32(1.0), "x": np.float32(1.0)})


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_serialization_round_trip(name):
    weighting = STRATEGIES[name]()
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(weighting))
    assert type(clone) is type(weighting) and clone.get_config() == weighting.get_config()


def _model():
    inputs = keras.Input((5,))
    return keras.Model(inputs, {"a": keras.layers.Dense(1)(inputs), "b": keras.layers.Dense(2)(inputs)})


def _objective(name):
    return lw.Objective(
        _model(),
        {
            "a": lw.terms.Loss(keras.losses.MeanSquaredError(), on="a", target="a"),
            "b": lw.terms.Loss(keras.losses.MeanAbsoluteError(), on="b", target="b"),
        },
        weighting=STRATEGIES[name](),
    )


def _data(n=32):
    rng = np.random.default_rng(6)
    x = rng.normal(size=(n, 5)).astype("float32")
    return x, {"a": rng.normal(size=(n, 1)).astype("float32"), "b": rng.normal(size=(n, 2)).astype("float32")}


def _state(objective, name):
    return {v: to_numpy(operator.attrgetter(v)(objective.weighting)).copy() for v in STATE[name]}


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_trains_inside_an_objective_and_saves_its_state(name, tmp_path):
    x, y = _data()
    objective = _objective(name)
    objective.compile(optimizer=keras.optimizers.Adam(0.01))
    history = objective.fit(x, y, epochs=2, batch_size=8, verbose=0)
    for key in ["loss", "loss/a", "loss/b", "weight/a", "weight/b"]:
        assert key in history.history and np.all(np.isfinite(history.history[key])), key
    for variable in objective.weighting.weights:
        assert np.all(np.isfinite(to_numpy(variable))), variable.path
    state = _state(objective, name)
    if name == "dwa":
        assert int(state["steps"]) == 8 and history.history["weight/a"][1] != 1.0
    if name == "famo":
        assert np.any(state["logits"] != 0)
    if name == "rlw":
        assert int(state["seed_generator.state"][-1]) == 8  # one draw per training step
        assert history.history["weight/a"][0] != history.history["weight/a"][1]
    # Evaluation changes no state.
    objective.evaluate(x, y, batch_size=8, verbose=0)
    for key, value in _state(objective, name).items():
        np.testing.assert_array_equal(value, state[key])

    path = os.fspath(tmp_path / f"{name}.keras")
    objective.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.weighting) is type(objective.weighting)
    assert loaded.weighting.get_config() == objective.weighting.get_config()
    for key, value in _state(loaded, name).items():
        np.testing.assert_array_equal(value, state[key])
    a = objective.evaluate(x, y, verbose=0, return_dict=True)
    b = loaded.evaluate(x, y, verbose=0, return_dict=True)
    assert a == pytest.approx(b, rel=1e-5)


# ------------------------------------------------------------ the pure rules
@one_backend
def test_pure_rules_match_the_references_without_a_layer():
    ops_rules = lw.ops.weighting
    expected, _ = _dwa_reference(SEQUENCE, 3, 2.0)
    state = ops_rules.dwa_init(3)
    famo_state, famo_expected = ops_rules.famo_init(3), _famo_reference(SEQUENCE, 0.5, 0.01, 0.1)
    for row, want, (famo_total, famo_weights, _) in zip(SEQUENCE, expected, famo_expected):
        (total, weights), state = ops_rules.dwa(state, row, steps_per_epoch=3, temperature=2.0)
        np.testing.assert_allclose(to_numpy(weights), want, rtol=1e-5)
        np.testing.assert_allclose(float(to_numpy(total)), (want * row).sum(), rtol=1e-5)
        (total, weights), famo_state = ops_rules.famo(famo_state, row, 0.5, 0.01, 0.1)
        np.testing.assert_allclose(float(to_numpy(total)), famo_total, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(to_numpy(weights), famo_weights, rtol=1e-5)
        total, weights = ops_rules.gls(row)
        geometric = np.prod(row.astype("float64")) ** (1 / 3)
        np.testing.assert_allclose([float(to_numpy(total)), *to_numpy(weights)],
                                   [geometric, *(geometric / (3 * row.astype("float64")))], rtol=1e-5)
    # Evaluation: this state's weights, the state returned as it was (the same objects).
    (_, weights), same = ops_rules.dwa(state, SEQUENCE[0], steps_per_epoch=3, training=False)
    assert all(a is b for a, b in zip(same, state))
    drawn = to_numpy(ops_rules.rlw_weights(3, seed=keras.random.SeedGenerator(3)))
    assert drawn.min() > 0 and abs(drawn.sum() - 1) < 1e-6
    np.testing.assert_allclose(to_numpy(ops_rules.rlw_weights(3, training=False)), [1 / 3] * 3, rtol=1e-6)
