"""Proxy Anchor and ProxyNCA / ProxyNCA++ against NumPy references written from the papers."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import lossweave as lw
from conftest import BACKEND, one_backend, to_numpy

RNG = np.random.default_rng(11)


# ------------------------------------------------------------ NumPy references
def _unit(v):
    v = np.asarray(v, dtype="float64")
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def np_proxy_anchor(x, p, y, delta, alpha, w=None):
    """Kim et al., CVPR 2020, Eq. 4, proxy by proxy; a weight scales its sample's share of a proxy's term.

    With ``S`` a proxy's sum over the samples of non-zero weight, the term is
    ``sum_i w_i (e_i / S) log(1 + S)`` (``docs/sample_weight.md``): ``log(1 + S)``
    when every weight is 1.
    """
    x, p = _unit(x), _unit(p)
    w = np.ones(len(x)) if w is None else np.asarray(w, dtype="float64")

    def term(terms):  # [(w_i, e_i)] of the samples of non-zero weight
        total = sum(e for _, e in terms)
        return sum(wi * e / total for wi, e in terms) * np.log1p(total) if terms else 0.0

    positive, with_positive, negative = 0.0, 0, 0.0
    for c in range(len(p)):
        pos, neg = [], []
        for i in range(len(x)):
            if w[i] == 0:
                continue
            s = float(x[i] @ p[c])
            if y[i] == c:
                pos.append((w[i], np.exp(-alpha * (s - delta))))
            else:
                neg.append((w[i], np.exp(alpha * (s + delta))))
        if pos:  # P+: the proxies with a positive (of non-zero weight) in the batch
            positive += term(pos)
            with_positive += 1
        negative += term(neg)
    return positive / max(with_positive, 1) + negative / len(p)


def np_proxy_nca(x, p, y, temperature=1.0, include_positive=False, squared=True, w=None):
    """Movshovitz-Attias et al. 2017 (positive not in the denominator) / Teh et al. 2020 (all proxies, 1/T)."""
    x, p = _unit(x), _unit(p)
    w = np.ones(len(x)) if w is None else np.asarray(w, dtype="float64")
    total = 0.0
    for i in range(len(x)):
        d = np.array([np.sum((x[i] - p[z]) ** 2) for z in range(len(p))])
        if not squared:
            d = np.sqrt(d)
        numerator = np.exp(-d[y[i]] / temperature)
        denominator = sum(np.exp(-d[z] / temperature) for z in range(len(p)) if include_positive or z != y[i])
        total += w[i] * -np.log(numerator / denominator)
    return total / len(x)


def _built(term, dim, seed=0):
    term.build((None, dim))
    proxies = np.random.default_rng(seed).normal(size=(term.num_classes, dim)).astype("float32")
    term.proxies.assign(proxies)
    return term, proxies


def _inputs(n=24, dim=5, classes=6, present=None):
    x = RNG.normal(size=(n, dim)).astype("float32")
    y = RNG.choice(np.arange(classes) if present is None else np.array(present), n)
    return x, y


def _loss(term, x, y, **kwargs):
    return float(to_numpy(term(x, y, **kwargs)))


# --------------------------------------------------------------- Proxy Anchor
ANCHOR_CASES = {
    "paper": ({}, {"delta": 0.1, "alpha": 32.0}),
    "other": ({"delta": 0.3, "scale": 8.0}, {"delta": 0.3, "alpha": 8.0}),
    "no_margin": ({"delta": 0.0, "scale": 16.0}, {"delta": 0.0, "alpha": 16.0}),
}


@pytest.mark.parametrize("name", sorted(ANCHOR_CASES))
def test_proxy_anchor_matches_eq4(name):
    kwargs, reference = ANCHOR_CASES[name]
    term, p = _built(lw.terms.ProxyAnchorLoss(num_classes=6, **kwargs), dim=5)
    x, y = _inputs(present=[0, 2, 3, 5])  # classes 1 and 4 absent
    expected = np_proxy_anchor(x, p, y, **reference)
    np.testing.assert_allclose(_loss(term, x, y), expected, rtol=1e-5, atol=1e-5)
    one_hot = np.eye(6, dtype="float32")[y]
    np.testing.assert_allclose(_loss(term, x, one_hot), expected, rtol=1e-5, atol=1e-5)


def test_proxy_anchor_positive_part_counts_present_classes_only():
    x, y = _inputs(n=10, classes=5, present=[1, 3])
    p = RNG.normal(size=(5, 5)).astype("float32")
    value = float(to_numpy(lw.ops.proxy_anchor_loss(x, p, y, delta=0.1, scale=32.0)))
    expected = np_proxy_anchor(x, p, y, 0.1, 32.0)
    np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-5)
    # Dividing the positive sums by |P| = 5 instead of |P+| = 2 would be far off.
    xs, ps = _unit(x), _unit(p)
    positive = sum(np.log1p(np.exp(-32.0 * (xs[y == c] @ ps[c] - 0.1)).sum()) for c in (1, 3))
    assert abs(value - (expected - positive / 2 + positive / 5)) > 1e-2


def test_proxy_anchor_sample_weights_scale_each_samples_share():
    term, p = _built(lw.terms.ProxyAnchorLoss(num_classes=4, scale=16.0), dim=3)
    x, y = _inputs(n=8, dim=3, classes=4)
    w = RNG.uniform(0.2, 3.0, size=8).astype("float32")
    expected = np_proxy_anchor(x, p, y, 0.1, 16.0, w)
    np.testing.assert_allclose(_loss(term, x, y, sample_weight=w), expected, rtol=1e-5, atol=1e-5)
    # Weight 0 drops a sample; weights all c give c times the loss.
    dropped = np.ones(8, "float32")
    dropped[3] = 0.0
    np.testing.assert_allclose(
        _loss(term, x, y, sample_weight=dropped), _loss(term, np.delete(x, 3, 0), np.delete(y, 3)), rtol=1e-5
    )
    np.testing.assert_allclose(
        _loss(term, x, y, sample_weight=np.full(8, 2.5, "float32")), 2.5 * _loss(term, x, y), rtol=1e-5
    )


# ---------------------------------------------------------- ProxyNCA / ++
NCA_CASES = {
    "proxynca": ({}, {}),
    "proxynca_pp": ({"temperature": 1 / 9, "include_positive": True}, {"temperature": 1 / 9, "include_positive": True}),
    "low_temperature_exclusive": ({"temperature": 1 / 9}, {"temperature": 1 / 9}),
    "euclidean": ({"squared": False, "include_positive": True, "temperature": 0.5},
                  {"squared": False, "include_positive": True, "temperature": 0.5}),
}


@pytest.mark.parametrize("name", sorted(NCA_CASES))
def test_proxy_nca_matches_the_papers(name):
    kwargs, reference = NCA_CASES[name]
    term, p = _built(lw.terms.ProxyNCALoss(num_classes=6, **kwargs), dim=5)
    x, y = _inputs(present=[0, 1, 3, 4])
    w = RNG.uniform(0.0, 2.0, size=len(y)).astype("float32")
    np.testing.assert_allclose(_loss(term, x, y), np_proxy_nca(x, p, y, **reference), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        _loss(term, x, np.eye(6, dtype="float32")[y], sample_weight=w),
        np_proxy_nca(x, p, y, w=w, **reference), rtol=1e-5, atol=1e-5,
    )


def test_proxynca_is_not_bounded_below_and_proxynca_pp_is():
    """An embedding on its proxy, opposite the other: ProxyNCA gives d_pos - d_neg = -4 (no lower bound at 0)."""
    p = np.array([[1.0, 0.0], [-1.0, 0.0]], "float32")
    x, y = np.array([[3.0, 0.0]], "float32"), np.array([0])
    np.testing.assert_allclose(float(to_numpy(lw.ops.proxy_nca_loss(x, p, y))), -4.0, atol=1e-6)
    plus = float(to_numpy(lw.ops.proxy_nca_loss(x, p, y, temperature=1 / 9, include_positive=True)))
    assert 0.0 <= plus < 1e-6  # log(1 + e^-36)
    x_rand, y_rand = _inputs(n=16, dim=2, classes=2)
    assert float(to_numpy(lw.ops.proxy_nca_loss(x_rand, p, y_rand, include_positive=True))) >= 0.0


# ------------------------------------------------------------------ both terms
TERMS = {
    "proxy_anchor": lambda c: lw.terms.ProxyAnchorLoss(num_classes=c),
    "proxynca": lambda c: lw.terms.ProxyNCALoss(num_classes=c),
    "proxynca_pp": lambda c: lw.terms.ProxyNCALoss(num_classes=c, temperature=1 / 9, include_positive=True),
    "proxynca_euclidean": lambda c: lw.terms.ProxyNCALoss(num_classes=c, squared=False),
}


def _reference(name, x, p, y):
    if name == "proxy_anchor":
        return np_proxy_anchor(x, p, y, 0.1, 32.0)
    kwargs = {"proxynca": {}, "proxynca_pp": {"temperature": 1 / 9, "include_positive": True},
              "proxynca_euclidean": {"squared": False}}[name]
    return np_proxy_nca(x, p, y, **kwargs)


@pytest.mark.parametrize("name", sorted(TERMS))
def test_batch_of_one_class_matches_the_reference(name):
    term, p = _built(TERMS[name](4), dim=3)
    x, _ = _inputs(n=6, dim=3, classes=4)
    y = np.full(6, 2)
    np.testing.assert_allclose(_loss(term, x, y), _reference(name, x, p, y), rtol=1e-5, atol=1e-5)


def _gradients(term, x, y):
    if BACKEND == "tensorflow":
        import tensorflow as tf

        xt = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            loss = term(xt, y)
        return [g.numpy() for g in tape.gradient(loss, [xt, term.proxies.value])]
    if BACKEND == "torch":
        import torch

        xt = torch.tensor(x, requires_grad=True)
        term(xt, y).backward()
        return [xt.grad.numpy(), term.proxies.value.grad.numpy()]
    import jax

    def f(xv, pv):
        return term.stateless_call([pv], [v.value for v in term.non_trainable_variables], xv, y)[0]

    # jit: one XLA compile, not one per primitive (the eager grad of the term costs seconds on JAX)
    return [np.asarray(g) for g in jax.jit(jax.grad(f, argnums=(0, 1)))(x, term.proxies.value)]


@pytest.mark.parametrize("name", sorted(TERMS))
def test_gradients_finite_at_exact_alignment(name):
    """Embeddings exactly on a proxy and exactly opposite one (distance 0 and 2, cosine +-1)."""
    term, p = _built(TERMS[name](3), dim=3)
    x = np.concatenate([p[:2] * 2.0, -p[:1], p[2:] * 0.5]).astype("float32")
    y = np.array([0, 1, 0, 2])
    grads = _gradients(term, x, y)
    assert all(np.all(np.isfinite(g)) for g in grads)
    assert np.any(grads[1] != 0)  # the proxies learn


@pytest.mark.parametrize("include_positive", [False, True])
def test_proxynca_with_one_class_has_nothing_to_contrast(include_positive):
    """No negative proxy: the 2017 denominator is empty (the loss is defined as 0), ++'s softmax is 1."""
    term, _ = _built(lw.terms.ProxyNCALoss(num_classes=1, include_positive=include_positive), dim=3)
    x, _ = _inputs(n=4, dim=3, classes=1)
    y = np.zeros(4, "int32")
    assert _loss(term, x, y) == 0.0
    assert all(np.all(np.isfinite(g)) for g in _gradients(term, x, y))


@pytest.mark.parametrize("name", ["proxy_anchor", "proxynca"])
def test_missing_labels_leave_their_samples_out(name):
    x, y = _inputs(n=10, dim=3, classes=4)
    term, p = _built(TERMS[name](4), dim=3)
    marked = lw.terms.ProxyAnchorLoss(4, missing=-1) if name == "proxy_anchor" else lw.terms.ProxyNCALoss(4, missing=-1)
    marked.build((None, 3))
    marked.proxies.assign(p)
    partial = y.copy()
    partial[[1, 6]] = -1
    keep = partial >= 0
    np.testing.assert_allclose(_loss(marked, x, partial), _loss(term, x[keep], y[keep]), rtol=1e-5, atol=1e-6)


def test_default_proxies_are_the_authors():
    anchor = lw.terms.ProxyAnchorLoss(num_classes=200)
    anchor.build((None, 64))
    values = to_numpy(anchor.proxies)
    # PyTorch kaiming_normal_(mode="fan_out") on (classes, dim): untruncated N(0, 2 / classes).
    assert abs(values.std() / np.sqrt(2 / 200) - 1) < 0.05 and np.abs(values).max() > 3.0 * np.sqrt(2 / 200)
    nca = lw.terms.ProxyNCALoss(num_classes=200)
    nca.build((None, 64))
    assert abs(to_numpy(nca.proxies).std() / 0.125 - 1) < 0.05
    assert anchor.proxies.trainable and anchor.proxies.dtype == "float32"


def _frozen_model(dim=3):
    inputs = keras.Input((6,))
    layer = keras.layers.Dense(dim, kernel_initializer=keras.initializers.GlorotNormal(seed=1), trainable=False)
    return keras.Model(inputs, {"embedding": layer(inputs)})


def _train_proxies(scale, learning_rate, p0, x, y):
    term = lw.terms.ProxyAnchorLoss(num_classes=4)
    objective = lw.Objective(_frozen_model(), {"anchor": term})
    objective.compile(optimizer=keras.optimizers.Adam(learning_rate))
    objective.build((None, 6))
    term.proxies.assign(p0 * scale)
    objective.fit(x, {"label": y}, epochs=2, batch_size=8, shuffle=False, verbose=0)
    return _unit(to_numpy(term.proxies))


def test_adam_with_smaller_initial_proxies_is_a_larger_proxy_learning_rate():
    """The module docstring's claim: Adam at lr from p0 / 100 == Adam at 100 lr from p0 (normalised)."""
    x, y = _inputs(n=16, dim=6, classes=4)
    p0 = RNG.normal(size=(4, 3)).astype("float32")
    fast = _train_proxies(1.0, 1e-1, p0, x, y)
    small = _train_proxies(1e-2, 1e-3, p0, x, y)
    slow = _train_proxies(1.0, 1e-3, p0, x, y)
    np.testing.assert_allclose(small, fast, atol=1e-4)
    assert np.abs(fast - _unit(p0)).max() > 0.05 and np.abs(slow - fast).max() > 0.05


def _model():
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    return keras.Model(inputs, {"embedding": keras.layers.Dense(3, name="embedding")(hidden)})


def test_proxy_terms_with_center_loss_save_reload_and_train_on(tmp_path):
    """Proxy Anchor and ProxyNCA++ beside center loss in one Objective: the proxies round-trip a .keras file."""
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(48, 6)).astype("float32"), rng.integers(0, 4, 48)
    made = {name: TERMS[name](4) for name in ("proxy_anchor", "proxynca_pp")}
    objective = lw.Objective(
        _model(), {**made, "center": lw.terms.CenterLoss(num_classes=4)},
        weighting=lw.weighting.Fixed({"proxy_anchor": 1.0, "proxynca_pp": 1.0, "center": 0.01}),
    )
    objective.compile(optimizer="adam")
    history = objective.fit(x, {"label": y}, epochs=2, batch_size=16, verbose=0)
    assert all(np.isfinite(history.history[f"loss/{name}"]).all() for name in made)
    path = os.path.join(tmp_path, "objective.keras")
    objective.save(path)
    loaded = keras.saving.load_model(path)
    for name, term in made.items():
        clone = loaded.terms[name]
        assert type(clone) is type(term) and clone.get_config() == term.get_config()
        np.testing.assert_array_equal(to_numpy(clone.proxies), to_numpy(term.proxies))
    for a, b in zip(objective.weights, loaded.weights):
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b), err_msg=a.path)
    a = objective.evaluate(x, {"label": y}, verbose=0, return_dict=True)
    b = loaded.evaluate(x, {"label": y}, verbose=0, return_dict=True)
    assert abs(a["loss"] - b["loss"]) < 1e-5
    before = {name: to_numpy(loaded.terms[name].proxies).copy() for name in made}
    more = loaded.fit(x, {"label": y}, epochs=1, batch_size=16, verbose=0)
    for name in made:
        assert np.isfinite(more.history[f"loss/{name}"]).all()
        assert np.any(to_numpy(loaded.terms[name].proxies) != before[name])


_TWO_REPLICAS = r"""
import json, os
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import tensorflow as tf

tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2)
import keras, numpy as np
import lossweave as lw

rng = np.random.default_rng(0)
x = rng.normal(size=(48, 6)).astype("float32")
# Each batch of 16: its first half (replica 0) of classes 0-2, its second half (replica 1) of classes 2-4.
y = np.concatenate([np.concatenate([rng.integers(0, 3, 8), rng.integers(2, 5, 8)]) for _ in range(3)])


def trained(strategy):
    with strategy.scope():
        keras.utils.set_random_seed(0)
        inputs = keras.Input((6,))
        model = keras.Model(inputs, {"embedding": keras.layers.Dense(4)(inputs)})
        objective = lw.Objective(model, {"proxy": lw.terms.ProxyAnchorLoss(5, scale=8.0)})
        objective.compile(optimizer=keras.optimizers.SGD(0.5))  # not Adam: a scaled gradient would show
        objective.build((None, 6))
        start = [v.numpy().copy() for v in objective.trainable_weights]
    objective.fit(x, {"label": y}, batch_size=16, epochs=1, shuffle=False, verbose=0)
    return start, [v.numpy() for v in objective.trainable_weights]


start, one = trained(tf.distribute.get_strategy())
_, two = trained(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
print(json.dumps({"diff": max(float(np.abs(a - b).max()) for a, b in zip(one, two)),
                  "moved": max(float(np.abs(a - b).max()) for a, b in zip(one, start))}))
"""


@pytest.mark.skipif(BACKEND != "tensorflow", reason="tf.distribute; JAX's DataParallel is one global program")
def test_proxy_anchor_on_two_replicas_trains_as_on_one_device():
    """Eq. 4's sums and P+ over the global batch: proxies and weights equal one device's (SGD, 3 steps)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow")
    done = subprocess.run([sys.executable, "-c", _TWO_REPLICAS], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["moved"] > 0.1  # each replica's own Eq. 4 (the replicas' classes differ) is 1.6 off
    assert result["diff"] < 1e-5, result


@one_backend
def test_constructor_errors_name_the_argument():
    with pytest.raises(ValueError, match="`num_classes` must be an int >= 1"):
        lw.terms.ProxyAnchorLoss(num_classes=0)
    with pytest.raises(ValueError, match=r"`scale` must be a number > 0; received -1"):
        lw.terms.ProxyAnchorLoss(num_classes=3, scale=-1)
    with pytest.raises(ValueError, match=r"`delta` must be a number >= 0"):
        lw.terms.ProxyAnchorLoss(num_classes=3, delta=-0.1)
    with pytest.raises(ValueError, match="`temperature` must be a number > 0"):
        lw.terms.ProxyNCALoss(num_classes=3, temperature=0)
    with pytest.raises(ValueError, match=r"\(batch, dim\)"):
        lw.terms.ProxyNCALoss(num_classes=3).build((None, 4, 4))
