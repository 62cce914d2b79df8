"""AdaFace, MagFace, CurricularFace and AdaCos against NumPy references written from each paper and its authors' code.

The formula tests (logits, loss and the running state over several training
steps) run on one backend; agreement across backends is carried by
``tests/cross_backend_run.py``, the distributed equality by
``tests/distribution_run.py``, the contract, bad-input and sample-weight
properties by their listings. What depends on the engine (the gate of a bad
batch, evaluation keeping the state) runs on all three.
"""

import math

import keras
import numpy as np
import pytest

import lossweave as lw
from conftest import gradient, one_backend, to_numpy

RNG = np.random.default_rng(24)
CLASSES, DIM, BATCH, STEPS = 6, 5, 16, 3


# ------------------------------------------------------------ NumPy references
def np_cos(x, w):
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    w = w / np.linalg.norm(w, axis=1, keepdims=True)
    return np.clip(x @ w.T, -1.0, 1.0)


def np_cross_entropy(logits, y, extra=0.0):
    z = logits - logits.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(np.mean(-log_p[np.arange(len(y)), y] + extra))


def np_arcface(cos_y, m, easy=False):
    shifted = np.cos(np.arccos(cos_y) + m)
    if easy:
        return np.where(cos_y > 0, shifted, cos_y)
    return np.where(cos_y > np.cos(np.pi - m), shifted, cos_y - m * np.sin(m))


def np_adaface(x, w, y, state, training, m=0.4, h=0.333, s=64.0, rate=0.01, rows=None):
    """Kim et al. 2022, Eq. 9-11, with the authors' head.py: statistics moved before use, eps 1e-3."""
    rows = np.ones(len(y), bool) if rows is None else rows
    mean, std = state
    safe = np.clip(np.linalg.norm(x, axis=1), 0.001, 100.0)
    if training:
        mean = rate * safe[rows].mean() + (1 - rate) * mean
        std = rate * safe[rows].std(ddof=1) + (1 - rate) * std
    scaler = np.clip((safe - mean) / (std + 1e-3) * h, -1.0, 1.0)
    cos = np_cos(x, w)
    i = np.arange(len(y))
    c = np.clip(cos[i, y], -1 + 1e-3, 1 - 1e-3)
    theta = np.clip(np.arccos(c) - m * scaler, 1e-3, np.pi - 1e-3)
    logits = cos.copy()
    logits[i, y] = np.cos(theta) - (m + m * scaler)
    return logits * s, 0.0, (mean, std)


def np_curricular(x, w, y, state, training, m=0.5, s=64.0, rate=0.01):
    """Huang et al. 2020, Eq. 8-10, with the authors' metrics.py: t moved before use."""
    (t,) = state
    cos = np_cos(x, w)
    i = np.arange(len(y))
    cos_y = cos[i, y]
    if training:
        t = rate * cos_y.mean() + (1 - rate) * t
    boundary = np.cos(np.arccos(cos_y) + m)
    logits = np.where(cos > boundary[:, None], cos * (t + cos), cos)
    logits[i, y] = np_arcface(cos_y, m)
    return logits * s, 0.0, (t,)


def np_magface(x, w, y, state, training, s=64.0, la=10.0, ua=110.0, lm=0.45, um=0.8, lg=35.0, easy=True):
    """Meng et al. 2021: ArcFace with m(a) on the clipped norm, plus lambda_g g(a) (authors' MagLoss)."""
    a = np.clip(np.linalg.norm(x, axis=1), la, ua)
    margin = (um - lm) / (ua - la) * (a - la) + lm
    cos = np_cos(x, w)
    i = np.arange(len(y))
    cos_y = cos[i, y]
    shifted = np.cos(np.arccos(cos_y) + margin)
    if easy:
        target = np.where(cos_y > 0, shifted, cos_y)
    else:
        target = np.where(cos_y > np.cos(np.pi - margin), shifted, cos_y - margin * np.sin(margin))
    logits = cos.copy()
    logits[i, y] = target
    return logits * s, lg * (1.0 / a + a / ua**2), state


def np_adacos(x, w, y, state, training, dynamic=True):
    """Zhang et al. 2019, Eq. 12, 15-16 and Algorithm 1 (s moved before use; torch.median's lower middle)."""
    (scale,) = state
    cos = np_cos(x, w)
    i = np.arange(len(y))
    if training and dynamic:
        negatives = np.ones_like(cos, bool)
        negatives[i, y] = False
        b_avg = np.exp(scale * cos[negatives]).sum() / len(y)
        theta = np.sort(np.arccos(np.clip(cos[i, y], -1 + 1e-7, 1 - 1e-7)))
        median = theta[(len(theta) - 1) // 2]
        scale = np.log(b_avg) / np.cos(min(np.pi / 4, median))
    return cos * scale, 0.0, (scale,)


def _adaface(**kw):
    return lw.terms.AdaFace(CLASSES, **kw)


CASES = {
    # name: (term factory, reference, initial state, state variables, reference keywords)
    "adaface": (lambda: _adaface(), np_adaface, (20.0, 100.0), ("norm_mean", "norm_std"), {}),
    "adaface_paper": (lambda: _adaface(update_rate=0.99, margin=0.3, h=0.5, scale=32.0), np_adaface, (20.0, 100.0),
                      ("norm_mean", "norm_std"), {"rate": 0.99, "m": 0.3, "h": 0.5, "s": 32.0}),
    "curricular": (lambda: lw.terms.CurricularFace(CLASSES), np_curricular, (0.0,), ("t",), {}),
    "curricular_paper": (lambda: lw.terms.CurricularFace(CLASSES, update_rate=0.99, angular_margin=0.4, scale=16.0),
                         np_curricular, (0.0,), ("t",), {"rate": 0.99, "m": 0.4, "s": 16.0}),
    "magface": (lambda: lw.terms.MagFace(CLASSES), np_magface, (), (), {}),
    "magface_hard": (lambda: lw.terms.MagFace(CLASSES, easy_margin=False, lambda_g=50.0), np_magface, (), (),
                     {"easy": False, "lg": 50.0}),
    "adacos": (lambda: lw.terms.AdaCos(CLASSES), np_adacos, (math.sqrt(2) * math.log(CLASSES - 1),),
               ("adaptive_scale",), {}),
    "adacos_fixed": (lambda: lw.terms.AdaCos(CLASSES, dynamic=False), np_adacos,
                     (math.sqrt(2) * math.log(CLASSES - 1),), (), {"dynamic": False}),
}


def _batch(step, norm_low=2.0, norm_high=120.0):
    """A batch whose norms spread over [norm_low, norm_high] and whose targets span [0, pi]."""
    rng = np.random.default_rng(100 + step)
    x = rng.normal(size=(BATCH, DIM))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    x *= rng.uniform(norm_low, norm_high, size=(BATCH, 1))
    y = rng.integers(0, CLASSES, BATCH)
    return x.astype("float32"), y


def _built(name):
    term = CASES[name][0]()
    term.build((None, DIM))
    term.class_weights.assign(RNG.normal(size=term.class_weights.shape).astype("float32"))
    return term


def _state(term, names):
    return tuple(float(to_numpy(getattr(term, n))) for n in names)


def _scale_of(logits):
    return max(1.0, float(np.abs(logits).max()))


@one_backend
@pytest.mark.parametrize("name", sorted(CASES))
def test_steps_match_the_reference(name):
    """Over STEPS training steps: the training logits and loss, then the state each step leaves."""
    _, reference, state, names, kw = CASES[name]
    term = _built(name)
    w = to_numpy(term.class_weights).astype("float64")
    assert _state(term, names) == pytest.approx(state[:len(names)], rel=1e-6)
    for step in range(STEPS):
        x, y = _batch(step)
        logits, penalty, new_state = reference(x.astype("float64"), w, y, state, True, **kw)
        got = to_numpy(term.margin_logits(x, y, training=True))
        scale = _scale_of(logits)
        np.testing.assert_allclose(got / scale, logits / scale, atol=1e-5)
        loss = float(to_numpy(term(x, y, training=True)))
        expected = np_cross_entropy(logits, y, penalty)
        assert loss == pytest.approx(expected, rel=1e-5, abs=1e-5), (step, loss, expected)
        state = new_state
        np.testing.assert_allclose(_state(term, names), state[:len(names)], rtol=1e-5)
    # Evaluation: the saved state, nothing moves.
    x, y = _batch(STEPS)
    logits, penalty, same = reference(x.astype("float64"), w, y, state, False, **kw)
    loss = float(to_numpy(term(x, y, training=False)))
    assert loss == pytest.approx(np_cross_entropy(logits, y, penalty), rel=1e-5, abs=1e-5)
    assert same == state
    np.testing.assert_allclose(_state(term, names), state[:len(names)], rtol=1e-6)
    # Inference logits: s cos theta, no margin.
    free = to_numpy(term.logits(x))
    expected_scale = state[0] if name.startswith("adacos") else term.scale
    np.testing.assert_allclose(free / expected_scale, np_cos(x, w), atol=1e-5)


@one_backend
def test_statistics_count_only_rows_that_count():
    """A row of weight 0 or with an invalid label takes no part in AdaFace's norm statistics."""
    term = _built("adaface")
    w = to_numpy(term.class_weights).astype("float64")
    x, y = _batch(0)
    weight = np.ones(BATCH, "float32")
    weight[[1, 4]] = 0.0
    x[1] *= 50.0  # an outlier norm that would move the statistics
    term(x, y, sample_weight=weight, training=True)
    _, _, state = np_adaface(x.astype("float64"), w, y, (20.0, 100.0), True, rows=weight > 0)
    np.testing.assert_allclose(_state(term, ("norm_mean", "norm_std")), state, rtol=1e-5)


@one_backend
def test_a_batch_too_small_keeps_the_statistics():
    """One counted row: no std (torch.std gives NaN there); AdaFace keeps mu and sigma, and its loss is finite."""
    term = _built("adaface")
    x, y = _batch(0)
    loss = term(x[:1], y[:1], training=True)
    assert np.isfinite(float(to_numpy(loss)))
    assert _state(term, ("norm_mean", "norm_std")) == (20.0, 100.0)


@one_backend
def test_magface_gradient_flows_through_the_norm():
    """d loss / d x of MagFace (margin and g(a) through the clipped norm) against central differences."""
    term = _built("magface")
    w = to_numpy(term.class_weights).astype("float64")
    x, y = _batch(1, norm_low=15.0, norm_high=100.0)  # inside [l_a, u_a]: the norm has a gradient

    def np_loss(v):
        logits, penalty, _ = np_magface(v, w, y, (), True)
        return np_cross_entropy(logits, y, penalty)

    got = gradient(lambda v: term(v, y), x)
    x64, step = x.astype("float64"), 1e-4
    expected = np.zeros_like(x64)
    for index in np.ndindex(*x64.shape):
        up, down = x64.copy(), x64.copy()
        up[index] += step
        down[index] -= step
        expected[index] = (np_loss(up) - np_loss(down)) / (2 * step)
    np.testing.assert_allclose(got, expected, atol=2e-4)
    assert np.abs(expected).max() > 1e-3


@one_backend
def test_sampling_every_class_equals_the_full_term():
    """Partial FC with every class positive samples them all: the loss and the state of the full term."""
    x, y = _batch(2)
    y[:CLASSES] = np.arange(CLASSES)
    for name, make in (("adaface", lambda **k: lw.terms.AdaFace(CLASSES, **k)),
                       ("curricular", lambda **k: lw.terms.CurricularFace(CLASSES, **k)),
                       ("adacos", lambda **k: lw.terms.AdaCos(CLASSES, **k))):
        names = CASES[name][3]
        full, sampled = make(), make(sample_rate=0.5, seed=3)
        full.build((None, DIM))
        sampled.build((None, DIM))
        sampled.class_weights.assign(full.class_weights)
        expected = float(to_numpy(full(x, y, training=True)))
        assert float(to_numpy(sampled(x, y, training=True))) == pytest.approx(expected, rel=1e-5), name
        np.testing.assert_allclose(_state(sampled, names), _state(full, names), rtol=1e-5)


@one_backend
def test_mixed_precision_computes_in_float32():
    """Under mixed_float16 the terms take float16 embeddings and return the float32 loss of float32 inputs."""
    x, y = _batch(3, norm_low=5.0, norm_high=60.0)
    x16 = x.astype("float16")
    for name in ("adaface", "curricular", "magface", "adacos"):
        plain = _built(name)
        mixed = CASES[name][0]()
        mixed_term = type(mixed).from_config({**mixed.get_config(), "dtype": "mixed_float16"})
        mixed_term.build((None, DIM))
        mixed_term.class_weights.assign(plain.class_weights)
        expected = float(to_numpy(plain(x16.astype("float32"), y, training=True)))
        loss = mixed_term(x16, y, training=True)
        assert str(loss.dtype).endswith("float32"), name
        assert float(to_numpy(loss)) == pytest.approx(expected, rel=1e-5), name


def test_bad_batch_and_evaluation_move_no_statistic():
    """A NaN feature raises and moves nothing; evaluation moves nothing; a clean training step moves the state."""
    for name in ("adaface", "curricular", "adacos"):
        term = _built(name)
        names = CASES[name][3]
        x, y = _batch(4)
        before = _state(term, names)
        bad = x.copy()
        bad[3, 1] = np.nan
        with pytest.raises(lw.InvalidInputError):
            term(bad, y, training=True)
        assert _state(term, names) == before, name
        term(x, y, training=False)
        assert _state(term, names) == before, name
        term(x, y, training=True)
        assert _state(term, names) != before, name


def test_fit_moves_the_state_once_per_step_and_saves_it(tmp_path):
    """In an Objective's fit the state moves once per step (equal to the term called step by step) and saves."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(32, 4)).astype("float32")
    y = rng.integers(0, CLASSES, 32)
    keras.utils.set_random_seed(1)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, {"embedding": keras.layers.Dense(DIM, name="emb")(inputs)})
    term = lw.terms.CurricularFace(CLASSES, scale=16.0)
    objective = lw.Objective(model, {"curricular": term})
    objective.compile(optimizer=keras.optimizers.SGD(0.0))  # nothing but the state moves
    objective.fit(x, {"label": y}, batch_size=8, epochs=1, shuffle=False, verbose=0)
    reference = lw.terms.CurricularFace(CLASSES, scale=16.0)
    reference.build((None, DIM))
    reference.class_weights.assign(term.class_weights)
    embeddings = to_numpy(model(x)["embedding"])
    for start in range(0, 32, 8):
        reference(embeddings[start:start + 8], y[start:start + 8], training=True)
    assert float(to_numpy(term.t)) == pytest.approx(float(to_numpy(reference.t)), rel=1e-5)
    assert float(to_numpy(term.t)) != 0.0
    path = tmp_path / "curricular.keras"
    objective.save(path)
    loaded = keras.saving.load_model(path)
    assert float(to_numpy(loaded.terms["curricular"].t)) == pytest.approx(float(to_numpy(term.t)))


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="update_rate"):
        lw.terms.AdaFace(4, update_rate=0.0)
    with pytest.raises(ValueError, match="num_classes=2 and scale=None"):
        lw.terms.AdaCos(2)
    with pytest.raises(ValueError, match="lambda_g=1.0"):
        lw.terms.MagFace(4, lambda_g=1.0)
    with pytest.raises(ValueError, match="upper_norm"):
        lw.terms.MagFace(4, lower_norm=20.0, upper_norm=10.0)
    assert lw.terms.MagFace(4).minimum_lambda_g() == pytest.approx(
        64 * (0.35 / 100) * 110**2 * 10**2 / (110**2 - 10**2))


@one_backend
def test_the_step_values_come_back_with_the_loss_and_nothing_moves_before_the_gate():
    """``loss_and_observed``: the step's statistics come back as values (the reference's), the variables stay put."""
    for name in ("adaface", "curricular", "adacos"):
        _, reference, state, names, kw = CASES[name]
        term = _built(name)
        w = to_numpy(term.class_weights).astype("float64")
        x, y = _batch(5)
        loss, observed = term.loss_and_observed(x, y, None, True)
        logits, penalty, new_state = reference(x.astype("float64"), w, y, state, True, **kw)
        assert float(to_numpy(loss)) == pytest.approx(np_cross_entropy(logits, y, penalty), rel=1e-5), name
        assert [variable.name for variable, _ in observed] == list(names), name
        np.testing.assert_allclose([float(to_numpy(v)) for _, v in observed], new_state[:len(names)], rtol=1e-5)
        assert _state(term, names) == pytest.approx(state[:len(names)], rel=1e-6), name  # not assigned yet
        _, nothing = term.loss_and_observed(x, y, None, False)
        assert nothing == (), name  # evaluation observes nothing
