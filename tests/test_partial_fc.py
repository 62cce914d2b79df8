"""Partial FC class-center sampling (issue 13, item 1): lossweave.ops.sampling and the terms' hook.

References: An et al., "Partial FC: Training 10 Million Identities on a Single
Machine" (ICCVW 2021, Sec. 3.2: positives plus uniform negatives up to
``sample_rate * num_classes``) and "Killing Two Birds with One Stone" (CVPR 2022,
Sec. 3.2: inter-class filtering); insightface's PartialFC_V2.sample and
CombinedMarginLoss (recognition/arcface_torch).
"""

import math
import os

import keras
import numpy as np
import pytest

import lossweave as lw
from conftest import BACKEND, one_backend, to_numpy
from lossweave.ops import sampling

DIM = 5


# ------------------------------------------------------------ NumPy references
def _unit(v):
    v = np.asarray(v, dtype="float64")
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def np_sampled_margin_loss(kind, x, w, y, classes, mask, scale, margin):
    """ArcFace (Deng et al. 2019, Eq. 3) / CosFace (Wang et al. 2018, Eq. 4) over the sampled classes.

    Softmax cross-entropy on ``s cos theta_j`` for the in-use sampled classes
    ``j`` (Partial FC: the softmax runs over the sample), the target's entry
    ``s cos(theta_y + m)`` (ArcFace; ``cos theta - m sin m`` past ``pi``) or
    ``s (cos theta_y - m)`` (CosFace).
    """
    classes, mask = np.asarray(classes), np.asarray(mask)
    cos = np.clip(_unit(x) @ _unit(w[classes]).T, -1.0, 1.0)   # (n, S)
    slot = {int(c): i for i, c in enumerate(classes) if mask[i]}
    t = np.array([slot[int(c)] for c in y])
    rows = np.arange(len(y))
    cos_y = cos[rows, t]
    if kind == "arcface":
        theta = np.arccos(cos_y)
        target = np.where(theta + margin <= np.pi, np.cos(theta + margin), cos_y - margin * np.sin(margin))
    else:
        target = cos_y - margin
    z = scale * cos
    z[rows, t] = scale * target
    z = z[:, mask]
    top = z.max(axis=1, keepdims=True)
    lse = np.log(np.exp(z - top).sum(axis=1)) + top[:, 0]
    return float(np.mean(lse - scale * target))


def np_remap(labels, classes):
    """The position of each label in the sample (-1 when it is not there)."""
    where = {int(c): i for i, c in enumerate(classes)}
    return np.array([where.get(int(c), -1) for c in labels])


# --------------------------------------------------------------------- helpers
def _as_numpy(values):
    return tuple(to_numpy(v) for v in values)


def _data(n=12, classes=40, seed=0, labels=None):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, DIM)).astype("float32")
    y = rng.integers(0, classes, n).astype("int32") if labels is None else np.asarray(labels, "int32")
    return x, y


def _built_like(term, values=None, seed=0):
    """``term`` built for DIM, its trainable variables set to ``values`` (or random ones)."""
    term.build((None, DIM))
    rng = np.random.default_rng(seed)
    values = values or [rng.normal(size=tuple(v.shape)).astype("float32") + (4.0 if v.shape == () else 0.0)
                        for v in term.trainable_variables]
    for v, value in zip(term.trainable_variables, values):
        v.assign(value)
    return term, values


def _loss_and_grads(term, x, y, training=True):
    """The loss and its gradients wrt the embeddings and each trainable variable (dense NumPy)."""
    variables = term.trainable_variables
    if BACKEND == "tensorflow":
        import tensorflow as tf

        xt = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            loss = term(xt, y, training=training)
        grads = tape.gradient(loss, [xt] + [v.value for v in variables])
        return float(loss), [tf.convert_to_tensor(g).numpy() for g in grads]  # IndexedSlices -> dense
    if BACKEND == "torch":
        import torch

        xt = torch.tensor(x, requires_grad=True)
        loss = term(xt, y, training=training)
        grads = torch.autograd.grad(loss, [xt] + [v.value for v in variables])
        return float(loss.detach()), [g.numpy() for g in grads]
    import jax

    state = [v.value for v in term.non_trainable_variables]

    def f(xv, weights):
        return term.stateless_call(weights, state, xv, y, training=training)[0]

    loss, (gx, gw) = jax.jit(jax.value_and_grad(f, argnums=(0, 1)))(x, [v.value for v in variables])
    return float(loss), [np.asarray(gx)] + [np.asarray(g) for g in gw]


# ----------------------------------------------------------------- the sample
def test_sample_keeps_positives_and_draws_negatives_uniformly():
    """Positives always in the first slots; negatives distinct, uniform over the other classes."""
    classes, budget, labels = 30, 10, np.array([4, 0, 4, 17])
    positives = {0, 4, 17}
    generator = keras.random.SeedGenerator(5)
    draws, counts = 150, np.zeros(classes)
    for _ in range(draws):
        sample, remapped, mask = _as_numpy(
            sampling.sample_classes(labels, classes, sample_size=10, budget=budget, seed=generator)
        )
        assert sample.shape == (10,) and mask.sum() == budget
        assert len(set(sample.tolist())) == 10            # without replacement
        assert set(sample[:3].tolist()) == positives      # every positive, first
        np.testing.assert_array_equal(sample[remapped], labels)
        counts[sample[3:]] += 1
    negatives = np.array(sorted(set(range(classes)) - positives))
    p = (budget - len(positives)) / len(negatives)        # each negative's chance per draw
    sigma = math.sqrt(draws * p * (1 - p))
    assert np.all(counts[list(positives)] == 0)          # never drawn again as negatives
    assert np.all(np.abs(counts[negatives] - draws * p) < 5 * sigma), counts[negatives]
    assert counts.sum() == draws * (budget - len(positives))


def test_positives_beyond_the_budget_keep_the_positives_only():
    """insightface: when the positives exceed num_sample, the sample is the positives."""
    labels = np.array([3, 9, 1, 7, 3, 12, 5])              # 6 distinct positives, budget 2
    size = sampling.sample_slots(20, 2, len(labels))
    assert size == 7
    sample, remapped, mask = _as_numpy(sampling.sample_classes(labels, 20, size, budget=2, seed=1))
    assert mask.tolist() == [True] * 6 + [False]
    assert set(sample[:6].tolist()) == {1, 3, 5, 7, 9, 12}
    np.testing.assert_array_equal(sample[remapped], labels)


def test_remapping_matches_numpy_and_drops_invalid_rows():
    classes = np.array([8, 2, 5, 0], "int32")
    indices = np.array([5, 0, 8, 2, 2, 3])
    valid = np.array([True, True, True, False, True, True])
    expected = np_remap(indices, classes)
    expected[~valid] = -1
    np.testing.assert_array_equal(to_numpy(sampling.remap_labels(indices, valid, classes, 10)), expected)
    # Labels straight from data: invalid ones (out of range, negative) are no positives and map to -1.
    sample, remapped, mask = _as_numpy(sampling.sample_classes(np.array([2, 11, -1, 2]), 10, 4, seed=0))
    assert remapped.tolist()[1:3] == [-1, -1] and sample[remapped[0]] == 2 and mask.all()


@one_backend
def test_budget_and_slots():
    assert sampling.sample_budget(1000, 0.1) == 100 and sampling.sample_budget(7, 0.5) == 4
    assert sampling.sample_budget(10, 1e-6) == 1 and sampling.sample_budget(10, 1.0) == 10
    assert sampling.sample_slots(1000, 100, 256) == 256 and sampling.sample_slots(50, 40, 64) == 50


# ------------------------------------------------------------- sampled losses
@pytest.mark.parametrize("kind", ["arcface", "cosface"])
def test_sampled_loss_matches_the_paper_over_the_sampled_classes(kind):
    make = {
        "arcface": lambda: lw.terms.ArcFace(40, scale=8.0, angular_margin=0.5, sample_rate=0.2, seed=7),
        "cosface": lambda: lw.terms.CosFace(40, scale=8.0, cosine_margin=0.35, sample_rate=0.2, seed=7),
    }[kind]
    x, y = _data(n=6, classes=40, labels=[3, 3, 18, 22, 39, 18])
    term, values = _built_like(make())
    twin, _ = _built_like(make(), values)                  # same seed: draws the same classes
    loss = float(term(x, y, training=True))
    sample, _, mask = _as_numpy(twin.draw_classes(y))
    assert mask.sum() == 8 and sample.shape == (8,)        # budget ceil(0.2 * 40) = 8 >= the batch
    margin = term.angular_margin if kind == "arcface" else term.cosine_margin
    expected = np_sampled_margin_loss(kind, x, values[0], y, sample, mask, 8.0, margin)
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    # The logits of a sampling step are (batch, S), over the sampled rows.
    logits = to_numpy(twin.margin_logits(x, y, training=True))
    assert logits.shape == (6, 8)
    # Evaluation and inference use every class.
    full = make().__class__.from_config({**make().get_config(), "sample_rate": 1.0})
    _built_like(full, values)
    np.testing.assert_allclose(float(term(x, y, training=False)), float(full(x, y)), rtol=1e-6)
    assert tuple(term.logits(x).shape) == (6, 40)


FULL = {
    "normface": lambda **k: lw.terms.NormFace(10, learn_scale=True, **k),
    "cosface": lambda **k: lw.terms.CosFace(10, scale=8.0, **k),
    "arcface": lambda **k: lw.terms.ArcFace(10, scale=8.0, **k),
    "combined": lambda **k: lw.terms.CombinedMargin(10, scale=8.0, **k),
    "subcenter": lambda **k: lw.terms.SubCenterArcFace(10, sub_centers=2, scale=8.0, **k),
    "sphereface": lambda **k: lw.terms.SphereFace(10, **k),
    "proxy_anchor": lambda **k: lw.terms.ProxyAnchorLoss(10, scale=8.0, **k),
    "proxy_nca": lambda **k: lw.terms.ProxyNCALoss(10, **k),
}


# The sampled path differs between terms only in what the hook feeds the shared code
# (rows per class, a row scale, the proxy losses): gradients for one of each kind.
GRADIENTS = ("arcface", "subcenter", "sphereface", "proxy_nca")


@pytest.mark.parametrize("name", sorted(FULL))
def test_a_sample_of_every_class_equals_the_full_term(name):
    """Loss (and gradients wrt embeddings and class weights) of the sampled path equal the full term's.

    ``sample_rate=0.95`` of 10 classes is a budget of 10: the sampled code path
    (permuted rows, remapped labels) over every class, to 1e-6. ``sample_rate=1.0``
    is the full term's own code path, with no generator.
    """
    x, y = _data(n=8, classes=10, seed=1)
    # Each term is called in training once from the same state (SphereFace counts its steps).
    terms = [FULL[name](), FULL[name](sample_rate=1.0, seed=2), FULL[name](sample_rate=0.95, seed=2)]
    full, values = _built_like(terms[0])
    at_one, sampled = (_built_like(t, values)[0] for t in terms[1:])
    assert full.seed_generator is None and at_one.seed_generator is None
    if name not in GRADIENTS:
        loss = float(full(x, y, training=True))
        assert float(at_one(x, y, training=True)) == loss
        np.testing.assert_allclose(float(sampled(x, y, training=True)), loss, rtol=1e-6, atol=1e-6)
        return
    fresh, _ = _built_like(FULL[name](), values)
    assert float(at_one(x, y, training=True)) == float(fresh(x, y, training=True))
    loss, grads = _loss_and_grads(full, x, y)
    sampled_loss, sampled_grads = _loss_and_grads(sampled, x, y)
    np.testing.assert_allclose(sampled_loss, loss, rtol=1e-6, atol=1e-6)
    for got, want in zip(sampled_grads, grads):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["subcenter"])
def test_only_sampled_rows_get_a_gradient(name):
    x, y = _data(n=4, classes=10, seed=3, labels=[1, 1, 6, 8])
    term, values = _built_like(FULL[name](sample_rate=0.5, seed=4))
    twin, _ = _built_like(FULL[name](sample_rate=0.5, seed=4), values)
    sample, _, mask = _as_numpy(twin.draw_classes(y))
    assert mask.sum() == 5 and {1, 6, 8} <= set(sample[mask].tolist())
    _, grads = _loss_and_grads(term, x, y)
    table = grads[1]
    k = table.shape[0] // 10                                   # rows per class (sub-centers)
    touched = np.abs(table).reshape(10, k, DIM).sum(axis=(1, 2)) > 0
    assert set(np.flatnonzero(touched).tolist()) <= set(sample[mask].tolist())
    assert touched[[1, 6, 8]].all()


def test_negative_threshold_filters_negatives_in_training_only():
    """CVPR 2022 / insightface: a negative cosine above the threshold counts as 0 (no gradient)."""
    x, y = _data(n=6, classes=5, seed=5)
    term, (w,) = _built_like(lw.terms.CosFace(5, scale=4.0, cosine_margin=0.2, negative_threshold=0.3))
    plain, _ = _built_like(lw.terms.CosFace(5, scale=4.0, cosine_margin=0.2), [w])
    cos = np.clip(_unit(x) @ _unit(w).T, -1.0, 1.0)
    rows = np.arange(len(y))
    cos_y = cos[rows, y]
    filtered = np.where(cos > 0.3, 0.0, cos)
    filtered[rows, y] = cos_y - 0.2
    z = 4.0 * filtered
    expected = np.mean(np.log(np.exp(z).sum(axis=1)) - 4.0 * (cos_y - 0.2))
    negatives = np.ones_like(cos, dtype=bool)
    negatives[rows, y] = False
    assert np.sum((cos > 0.3) & negatives) >= 2                # some negatives are filtered
    np.testing.assert_allclose(float(term(x, y, training=True)), expected, rtol=1e-5)
    np.testing.assert_allclose(float(term(x, y, training=False)), float(plain(x, y)), rtol=1e-6)


# ----------------------------------------------------- determinism, save/load
def test_same_seed_same_classes_and_a_reloaded_objective_continues_the_sequence(tmp_path):
    ds = lw.data.load("digits")
    from lossweave.cli.models import build_mlp

    keras.utils.set_random_seed(0)
    arcface = lw.terms.ArcFace(10, scale=16.0, angular_margin=0.3, sample_rate=0.5, seed=1)
    objective = lw.Objective(
        build_mlp((64,), 10, 16, logits=False),
        {"arcface": arcface, "center": lw.terms.CenterLoss(num_classes=10, alpha=0.5)},
        weighting=lw.weighting.Fixed({"arcface": 1.0, "center": 0.01}),
    )
    objective.compile(optimizer=keras.optimizers.Adam(3e-3))
    # Batches of 16 hold ~8 of the 10 classes, the budget is 5: the positives only (most steps).
    objective.fit(ds.x_train, {"label": ds.y_train}, batch_size=16, epochs=2, verbose=0)
    start = to_numpy(lw.terms.ArcFace(10, sample_rate=0.5, seed=1).seed_generator.state)
    state = to_numpy(arcface.seed_generator.state)
    assert not np.array_equal(state, start)                   # it moved with the steps
    embedding = objective.model.predict(ds.x_test, verbose=0, batch_size=512)["embedding"]
    accuracy = np.mean(np.argmax(to_numpy(arcface.logits(embedding)), axis=-1) == ds.y_test)
    assert accuracy > 0.8, accuracy                           # full term: ~0.95; broken remapping: ~0.1
    path = os.path.join(tmp_path, "objective.keras")
    objective.save(path)
    loaded = keras.saving.load_model(path).terms["arcface"]
    np.testing.assert_array_equal(to_numpy(loaded.seed_generator.state), state)
    assert loaded.get_config() == arcface.get_config()
    labels = ds.y_train[:16]
    np.testing.assert_array_equal(to_numpy(loaded.draw_classes(labels)[0]), to_numpy(arcface.draw_classes(labels)[0]))
    # A fresh term of the same seed draws the same sequence from the start.
    one, two = (lw.terms.ArcFace(10, sample_rate=0.5, seed=1) for _ in range(2))
    for _ in range(2):
        np.testing.assert_array_equal(to_numpy(one.draw_classes(labels)[0]), to_numpy(two.draw_classes(labels)[0]))


# ------------------------------------------------------------------ bad input
@one_backend
@pytest.mark.parametrize("value", [0, 0.0, 1.5, -1, "a", True, float("nan")])
@pytest.mark.parametrize("cls", [lw.terms.ArcFace, lw.terms.SphereFace, lw.terms.ProxyAnchorLoss])
def test_bad_sample_rate_says_what_was_received_and_expected(cls, value):
    with pytest.raises(ValueError, match=r"`sample_rate` must be a (finite )?number > 0 and <= 1; received") as error:
        cls(10, sample_rate=value)
    assert repr(value) in str(error.value) and "use 1.0" in str(error.value)


@one_backend
def test_bad_seed_and_threshold_are_refused():
    with pytest.raises(ValueError, match="`seed` must be an int or None; received 'x'"):
        lw.terms.CosFace(10, sample_rate=0.5, seed="x")
    for value in (0.0, 1.0, -0.2, "high"):
        with pytest.raises(ValueError, match=r"`negative_threshold` must be a number > 0 and < 1; received .*None \(off\)"):
            lw.terms.ProxyNCALoss(10, negative_threshold=value)
    with pytest.raises(ValueError, match="neither sample_size nor budget"):
        sampling.sample_classes(np.array([1]), 4)


@one_backend
def test_config_holds_the_three_arguments():
    term = lw.terms.SubCenterArcFace(12, sample_rate=0.25, seed=3, negative_threshold=0.4)
    config = term.get_config()
    assert (config["sample_rate"], config["seed"], config["negative_threshold"]) == (0.25, 3, 0.4)
    clone = lw.terms.SubCenterArcFace.from_config(config)
    assert (clone.sample_rate, clone.seed, clone.negative_threshold, clone.sample_budget) == (0.25, 3, 0.4, 3)


@one_backend
def test_the_seed_state_is_saved_under_the_librarys_one_key_and_the_old_key_still_loads():
    term = lw.terms.ArcFace(10, sample_rate=0.5, seed=3)
    term.build((None, 4))
    term.draw_classes(np.array([1, 2]))  # move the generator off its start
    store = {}
    term.save_own_variables(store)
    assert "seed_generator_state" in store  # the key the strategies use too (lossweave._seed_state)
    store["class_sampling_seed_state"] = store.pop("seed_generator_state")  # a file written before
    other = lw.terms.ArcFace(10, sample_rate=0.5, seed=99)
    other.build((None, 4))
    other.load_own_variables(store)
    np.testing.assert_array_equal(to_numpy(other.seed_generator.state), to_numpy(term.seed_generator.state))
