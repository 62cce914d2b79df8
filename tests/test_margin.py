"""The margin-softmax terms against NumPy references written from each paper's formula."""

import math
import os

import keras
import numpy as np
import pytest

import lossweave as lw
from conftest import one_backend, to_numpy

RNG = np.random.default_rng(7)


# ------------------------------------------------------------ NumPy references
def np_cos(x, w):
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    w = w / np.linalg.norm(w, axis=1, keepdims=True)
    return np.clip(x @ w.T, -1.0, 1.0)


def np_cross_entropy(logits, y):
    z = logits - logits.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return -log_p[np.arange(len(y)), y].mean()


def np_arcface_target(cos_y, m):
    """Deng et al. 2019, Eq. 3: cos(theta + m); past theta + m > pi, cos theta - m sin m."""
    theta = np.arccos(cos_y)
    return np.where(theta + m <= np.pi, np.cos(theta + m), cos_y - m * np.sin(m))


def np_combined_target(cos_y, m1, m2, m3):
    """Deng et al. 2019, Eq. 4: cos(m1 theta + m2) - m3 (ArcFace's rule past pi)."""
    theta = np.arccos(cos_y)
    angle = m1 * theta + m2
    return np.where(angle <= np.pi, np.cos(angle), cos_y - m2 * np.sin(m2)) - m3


def np_psi(theta, m):
    """Liu et al. 2017, Eq. 6: (-1)^k cos(m theta) - 2k for theta in [k pi/m, (k+1) pi/m]."""
    k = np.minimum(np.floor(m * theta / np.pi), m - 1)
    return (-1.0) ** k * np.cos(m * theta) - 2.0 * k


def np_margin_logits(kind, x, w, y, **p):
    x = x.astype("float64")
    w = w.astype("float64")
    if kind == "subcenter":
        k = p["sub_centers"]
        cos = np_cos(x, w).reshape(len(x), -1, k).max(axis=2)
    else:
        cos = np_cos(x, w)
    rows = np.arange(len(y))
    cos_y = cos[rows, y]
    scale = p.get("scale", 1.0)
    if kind == "normface":
        target = cos_y
    elif kind == "cosface":
        target = cos_y - p["margin"]
    elif kind in ("arcface", "subcenter"):
        target = np_arcface_target(cos_y, p["margin"])
    elif kind == "combined":
        target = np_combined_target(cos_y, p["m1"], p["m2"], p["m3"])
    elif kind == "sphereface":
        lam = max(p["lambda_min"], p["base"] * (1 + p["gamma"] * p["step"]) ** (-p["power"]))
        target = (lam * cos_y + np_psi(np.arccos(cos_y), p["margin"])) / (1 + lam)
        scale = np.linalg.norm(x, axis=1, keepdims=True)
    logits = cos.copy()
    logits[rows, y] = target
    return logits * scale, cos * scale


CASES = {
    "normface": (lambda: lw.terms.NormFace(num_classes=6, scale=16.0), {"scale": 16.0}),
    "cosface": (lambda: lw.terms.CosFace(num_classes=6), {"scale": 64.0, "margin": 0.35}),
    "arcface": (lambda: lw.terms.ArcFace(num_classes=6), {"scale": 64.0, "margin": 0.5}),
    "arcface_wide": (lambda: lw.terms.ArcFace(num_classes=6, angular_margin=1.2, scale=8.0), {"scale": 8.0, "margin": 1.2}),
    "combined": (lambda: lw.terms.CombinedMargin(num_classes=6), {"scale": 64.0, "m1": 1.0, "m2": 0.3, "m3": 0.2}),
    "combined_m1": (lambda: lw.terms.CombinedMargin(num_classes=6, scale=10.0, multiplicative_margin=1.5, angular_margin=0.2, cosine_margin=0.1),
                    {"scale": 10.0, "m1": 1.5, "m2": 0.2, "m3": 0.1}),
    "subcenter": (lambda: lw.terms.SubCenterArcFace(num_classes=6), {"scale": 64.0, "margin": 0.5, "sub_centers": 3}),
    "sphereface": (lambda: lw.terms.SphereFace(num_classes=6),
                   {"margin": 4, "base": 1000.0, "gamma": 0.12, "power": 1.0, "lambda_min": 5.0, "step": 0}),
    "sphereface_pure": (lambda: lw.terms.SphereFace(num_classes=6, base=0.0, lambda_min=0.0),
                        {"margin": 4, "base": 0.0, "gamma": 0.12, "power": 1.0, "lambda_min": 0.0, "step": 0}),
}


def _kind(name):
    return name.split("_")[0]


def _inputs(n=32, dim=5, classes=6, spread=False):
    x = RNG.normal(size=(n, dim)).astype("float32")
    y = RNG.integers(0, classes, n)
    if spread:  # angles to the target class all over [0, pi], with both ends
        x[: n // 4] *= -1.0
    return x, y


def _built(name, dim=5):
    term = CASES[name][0]()
    term.build((None, dim))
    term.class_weights.assign(RNG.normal(size=term.class_weights.shape).astype("float32"))
    return term


@pytest.mark.parametrize("name", sorted(CASES))
def test_logits_and_loss_match_the_paper(name):
    term = _built(name)
    params = CASES[name][1]
    w = to_numpy(term.class_weights)
    x, y = _inputs()
    # Put some targets past theta + m > pi: x opposite its class weight (sub-centers: all of them).
    x[:6] = -w.reshape(6, term.sub_centers, -1).sum(axis=1)[y[:6]] + 0.01 * RNG.normal(size=(6, 5))
    expected, expected_free = np_margin_logits(_kind(name), x, w, y, **params)
    scale = params.get("scale", 1.0)
    got = to_numpy(term.margin_logits(x, y))
    np.testing.assert_allclose(got / scale, expected / scale, atol=1e-5)
    np.testing.assert_allclose(to_numpy(term.logits(x)) / scale, expected_free / scale, atol=1e-5)
    loss = float(to_numpy(term(x, y)))
    assert abs(loss - np_cross_entropy(expected, y)) <= 1e-5 * max(1.0, abs(loss))


def test_arcface_branch_past_pi_is_taken():
    """Targets with theta > pi - m use cos theta - m sin m, and the logit keeps falling in theta."""
    term = lw.terms.ArcFace(num_classes=2, scale=1.0, angular_margin=0.5, class_weights_initializer="identity")
    thetas = np.linspace(0.0, np.pi, 64).astype("float32")
    x = np.stack([np.cos(thetas), np.sin(thetas)], axis=1)
    target = to_numpy(term.margin_logits(x, np.zeros(64, "int32")))[:, 0]
    past = thetas > np.pi - 0.5
    assert past.sum() >= 8
    np.testing.assert_allclose(target[past], np.cos(thetas[past]) - 0.5 * np.sin(0.5), atol=1e-5)
    # Near theta = 0 acos is ill-conditioned (a float32 cosine of 1 - 1e-7 is theta 4.5e-4): skip it.
    before = np.logical_and(~past, thetas > 1e-2)
    np.testing.assert_allclose(target[before], np.cos(thetas[before] + 0.5), atol=1e-5)
    assert np.all(np.diff(target) < 0)  # monotonic: a larger angle is never rewarded


def test_sphereface_psi_is_piecewise_and_monotonic():
    thetas = np.linspace(0.0, np.pi, 181)
    for m in (1, 2, 3, 4):
        got = to_numpy(lw.ops.margin.sphereface_psi(np.cos(thetas).astype("float32"), m))
        np.testing.assert_allclose(got, np_psi(thetas, m), atol=2e-5)
        assert np.all(np.diff(got) <= 1e-6), m
    # Every piece k = 0..3 of m = 4 is visited, and psi(pi) = -2m + 1... = (-1)^3 cos(4 pi) - 6 = -7.
    assert abs(float(to_numpy(lw.ops.margin.sphereface_psi(np.float32(-1.0), 4))) + 7.0) < 1e-5


def test_sphereface_lambda_anneals_with_training_steps():
    term = lw.terms.SphereFace(num_classes=3)
    x, y = _inputs(n=8, dim=4, classes=3)
    for _ in range(3):
        term(x, y, training=True)
    term(x, y, training=False)
    assert int(to_numpy(term.iterations)) == 3
    assert abs(float(to_numpy(term.annealing())) - 1000.0 / (1 + 0.12 * 3)) < 1e-3
    term.iterations.assign(10**6)
    assert abs(float(to_numpy(term.annealing())) - 5.0) < 1e-6  # lambda_min


@pytest.mark.parametrize("name", sorted(CASES))
def test_gradients_finite_at_exact_alignment(name):
    """cos theta = +-1 exactly (sqrt and arccos have infinite slopes there)."""
    term = _built(name, dim=3)
    w = to_numpy(term.class_weights)
    x = np.concatenate([w[:2] * 3.0, -w[:2]]).astype("float32")
    y = np.array([0, 0, 0, 0]) if term.sub_centers > 1 else np.array([0, 1, 0, 1])
    grads = _gradients(term, x, y)
    assert all(np.all(np.isfinite(g)) for g in grads)



@one_backend
def test_sphereface_gradient_is_finite_at_a_zero_embedding_row():
    """SphereFace's logits are ||x|| psi(theta): d||x||/dx at x = 0 is finite (0), not NaN, with the weights'."""
    term = _built("sphereface", dim=3)
    x = np.array([[0.0, 0.0, 0.0], [0.5, -1.0, 2.0], [1.0, 0.2, -0.3]], "float32")
    grads = _gradients(term, x, np.array([0, 1, 2]))
    assert all(np.all(np.isfinite(g)) for g in grads)
    assert np.any(grads[0][1:] != 0.0)  # the other rows still learn

def _gradients(term, x, y):
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        xt = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            loss = term(xt, y)
        return [g.numpy() for g in tape.gradient(loss, [xt, term.class_weights.value])]
    if backend == "torch":
        import torch

        xt = torch.tensor(x, requires_grad=True)
        loss = term(xt, y)
        loss.backward()
        return [xt.grad.numpy(), term.class_weights.value.grad.numpy()]
    import jax

    def f(xv, wv):
        values, _ = term.stateless_call([wv], [v.value for v in term.non_trainable_variables], xv, y)
        return values

    return [np.asarray(g) for g in jax.grad(f, argnums=(0, 1))(x, term.class_weights.value)]


def test_one_hot_equals_sparse():
    term = _built("arcface")
    x, y = _inputs()
    sparse = float(to_numpy(term(x, y)))
    one_hot = float(to_numpy(term(x, np.eye(6, dtype="float32")[y])))
    assert abs(sparse - one_hot) < 1e-6


def test_bad_label_raises_and_leaves_state():
    term = _built("cosface")
    before = to_numpy(term.class_weights).copy()
    x, y = _inputs()
    y[3] = 6
    with pytest.raises(lw.InvalidInputError, match=r"\[0, 6\)"):
        term(x, y, training=True)
    np.testing.assert_array_equal(to_numpy(term.class_weights), before)


def test_constructor_errors_name_the_argument():
    with pytest.raises(ValueError, match="num_classes"):
        lw.terms.ArcFace(num_classes=0)
    with pytest.raises(ValueError, match="radians"):
        lw.terms.ArcFace(num_classes=3, angular_margin=30)
    with pytest.raises(ValueError, match="scale"):
        lw.terms.CosFace(num_classes=3, scale=-1)
    with pytest.raises(ValueError, match="`multiplicative_margin` must be an int"):
        lw.terms.SphereFace(num_classes=3, multiplicative_margin=1.5)
    with pytest.raises(TypeError, match="SphereFace takes no `scale`"):
        lw.terms.SphereFace(num_classes=3, scale=30.0)
    with pytest.raises(TypeError, match=r"unknown keyword argument\(s\) \['margin'\].*'angular_margin'"):
        lw.terms.ArcFace(num_classes=3, margin=0.5)
    with pytest.raises(ValueError, match="sub_centers"):
        lw.terms.SubCenterArcFace(num_classes=3, sub_centers=0)
    with pytest.raises(ValueError, match=r"\(batch, dim\)"):
        lw.terms.NormFace(num_classes=3).build((None, 4, 4))


def test_subcenter_noisy_samples_hand_case():
    """Class 0 has sub-centers along +x (most samples) and +y; a sample at 90 degrees is noisy."""
    term = lw.terms.SubCenterArcFace(num_classes=2, sub_centers=2)
    term.build((None, 2))
    term.class_weights.assign(np.array([[1, 0], [0, 1], [-1, 0], [0, -1]], "float32"))
    x = np.array([[1, 0.1], [1, -0.1], [1, 0], [0.05, 1], [-1, 0], [-1, 0.2]], "float32")
    y = np.array([0, 0, 0, 0, 1, 1])
    angles, dominant = term.dominant_angles(x, y)
    assert list(dominant) == [0, 0]
    np.testing.assert_allclose(angles[3], np.arccos(0.05 / np.hypot(0.05, 1)), atol=1e-9)
    indices, shown = term.noisy_samples(x, y, threshold=math.radians(75))
    assert list(indices) == [3] and shown[0] > math.radians(75)
    assert list(term.noisy_samples(x, y, threshold=0.15)[0]) == [3, 5]
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        term.dominant_angles(x, np.array([0, 0, 0, 0, 1, 2]))


def _model(classes=4):
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    return keras.Model(inputs, {"embedding": keras.layers.Dense(3, name="embedding")(hidden)})


MARGIN_TERMS = {
    "normface": lambda: lw.terms.NormFace(num_classes=4, learn_scale=True),
    "cosface": lambda: lw.terms.CosFace(num_classes=4, scale=8.0),
    "arcface": lambda: lw.terms.ArcFace(num_classes=4, scale=8.0),
    "combined": lambda: lw.terms.CombinedMargin(num_classes=4, scale=8.0),
    "subcenter": lambda: lw.terms.SubCenterArcFace(num_classes=4, scale=8.0, sub_centers=2),
    "sphereface": lambda: lw.terms.SphereFace(num_classes=4),
}


@pytest.mark.parametrize("name", sorted(MARGIN_TERMS))
def test_margin_term_with_center_loss_trains_saves_and_reloads(name, tmp_path):
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(64, 6)).astype("float32"), rng.integers(0, 4, 64)
    margin = MARGIN_TERMS[name]()
    objective = lw.Objective(
        _model(), {"margin": margin, "center": lw.terms.CenterLoss(num_classes=4)},
        weighting=lw.weighting.Fixed({"margin": 1.0, "center": 0.01}),
    )
    objective.compile(optimizer="adam")
    history = objective.fit(x, {"label": y}, epochs=3, batch_size=16, verbose=0)
    losses = history.history["loss/margin"]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    assert np.any(to_numpy(objective.terms["center"].centers) != 0)
    path = os.path.join(tmp_path, "objective.keras")
    objective.save(path)
    loaded = keras.saving.load_model(path)
    for a, b in zip(objective.weights, loaded.weights):
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b), err_msg=a.path)
    term = loaded.terms["margin"]
    assert type(term) is type(margin) and term.get_config() == margin.get_config()
    a = objective.evaluate(x, {"label": y}, verbose=0, return_dict=True)
    b = loaded.evaluate(x, {"label": y}, verbose=0, return_dict=True)
    assert abs(a["loss"] - b["loss"]) < 1e-5
    # The plain model needs no labels; the term adds margin-free logits.
    classifier = term.classifier(loaded.model)
    out = classifier.predict(x, verbose=0)
    np.testing.assert_allclose(out["logits"], to_numpy(term.logits(out["embedding"])), atol=1e-5)


def test_classifier_model_saves_with_the_term_weights(tmp_path):
    term = lw.terms.CosFace(num_classes=4, scale=4.0)
    classifier = term.classifier(_model())
    x = np.random.default_rng(0).normal(size=(5, 6)).astype("float32")
    before = classifier.predict(x, verbose=0)["logits"]
    path = os.path.join(tmp_path, "classifier.keras")
    classifier.save(path)
    after = keras.saving.load_model(path).predict(x, verbose=0)["logits"]
    np.testing.assert_allclose(after, before, atol=1e-6)
    with pytest.raises(ValueError, match="no output 'features'"):
        term.classifier(_model(), on="features")
