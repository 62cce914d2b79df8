"""The one meaning of ``sample_weight``, checked on every public term (``docs/sample_weight.md``).

Every term listed in ``contract_cases.TERMS`` is built anew from its class
with small, simple arguments (``OVERRIDES``) and called as
``term(outputs, targets, sample_weight=w, training=False)`` (nothing moves):

(a) weights all ``c`` give ``c`` times the unweighted loss;
(b) a row of weight 0 is absent: changing its features and its label changes
    neither the loss nor the gradient with respect to the other rows'
    features or the term's trainable variables (and its own gradient is 0);
(c) per-sample terms (``PER_SAMPLE``): integer weights equal repeating each
    row that many times, up to Keras's denominator: the weighted loss divides
    by the batch ``N`` and the repeated batch by ``sum(w)``, so
    ``loss(w) = loss(repeated) * sum(w) / N``.

Repetition is not checked on tuple terms (``TUPLE``: pair, triplet, proxy
anchor, memory and two-view terms): the copies of a repeated row become each
other's positives (or join each other's sums: Proxy Anchor's ``S_p``), adding
tuples that a weight does not add; a weight scales the tuples a sample
anchors, and the denominators count the tuples formed among the rows of
non-zero weight.

A new term joins by being listed in ``contract_cases.TERMS`` and in one of
``PER_SAMPLE`` / ``TUPLE`` (a test fails until it is classified); its
required arguments go in ``OVERRIDES``.
"""

import re
from pathlib import Path

import keras
import numpy as np
import pytest

import lossweave as lw
from conftest import BACKEND, gradient, one_backend, to_numpy
from contract_cases import TERMS

BATCH, DIM, CLASSES = 8, 4, 3
LABELS = np.array([0, 1, 0, 2, 1, 0, 2, 1])  # every class at least twice
ROW = 2  # the row given weight 0 in (b); its class keeps two other rows
RTOL = 1e-5

# Bases that compute no loss of their own, and why (checked below: calling them raises).
ABSTRACT = {
    "term": "Term is the base protocol: its loss is the subclass's hook, it has none of its own",
    "pair_term": "PairTerm's pair_loss is the hook each pair term implements (raises NotImplementedError)",
}

# Small arguments per case; a case not listed is built with its class's defaults.
OVERRIDES = {
    "loss": {"loss": keras.losses.MeanSquaredError(), "on": "score", "target": "score"},
    "softmax": {"on": "logits"},
    "center": {"num_classes": CLASSES, "update": "gradient", "centers_initializer": "random_normal"},
    "margin_softmax": {"num_classes": CLASSES},
    "normface": {"num_classes": CLASSES},
    "cosface": {"num_classes": CLASSES},
    "arcface": {"num_classes": CLASSES},
    "combined_margin": {"num_classes": CLASSES},
    "subcenter_arcface": {"num_classes": CLASSES},
    "sphereface": {"num_classes": CLASSES},
    "large_margin_softmax": {"num_classes": CLASSES},
    "adaface": {"num_classes": CLASSES},
    "magface": {"num_classes": CLASSES},
    "curricular_face": {"num_classes": CLASSES},
    "adacos": {"num_classes": CLASSES},
    "elastic_arcface": {"num_classes": CLASSES, "plus": True, "seed": 1},
    "elastic_cosface": {"num_classes": CLASSES, "seed": 1},
    "proxy_anchor": {"num_classes": CLASSES},
    "proxy_nca": {"num_classes": CLASSES},
    "soft_triple": {"num_classes": CLASSES, "centers_per_class": 2},
    "contrastive_siamese": {"on": ("left", "right"), "target": "same"},
    "ntxent_views": {"on": ("view1", "view2")},
    "ntxent": {"on": "embedding"},
    "triplet": {"mining": "batch-hard"},  # semi-hard's eager loop costs seconds on JAX; same weights code
    "xbm": {"term": lambda: lw.terms.ContrastiveLoss(), "memory_size": 4},
    "self_supervised": {"loss": lambda: lw.terms.NTXentLoss(temperature=0.5)},
}

# One loss per row: Keras's sum_i w_i l_i / N.
PER_SAMPLE = {
    "loss", "softmax", "center", "margin_softmax", "normface", "cosface", "arcface", "combined_margin",
    "subcenter_arcface", "sphereface", "proxy_nca", "contrastive_siamese",
    "adaface", "magface", "curricular_face", "adacos",
    "elastic_arcface", "elastic_cosface",
    "soft_triple",
    "large_margin_softmax",
}
# Pair, triplet, anchor or proxy terms: w_i scales the tuples row i anchors; denominators count tuples.
TUPLE = {
    "contrastive", "triplet", "lifted", "npairs", "multi_similarity", "circle", "supcon", "ntxent_views",
    "ntxent", "xbm", "proxy_anchor",
    "self_supervised", "vicreg", "barlow_twins", "soft_nearest_neighbor", "histogram", "ranked_list", "pnp",
    "instance",
    "nca", "margin_loss", "tuplet_margin", "angular", "generalized_lifted", "intra_pair_variance", "snr_contrastive",
    "fast_ap",
}

CASES = sorted(name for name in TERMS if name not in ABSTRACT)
_made = [0]


def make(case):
    """A fresh term of ``case``'s class with the small arguments of ``OVERRIDES``, named uniquely."""
    cls = TERMS[case][0]
    kwargs = {k: v() if callable(v) and not isinstance(v, keras.losses.Loss) else v
              for k, v in OVERRIDES.get(case, {}).items()}
    _made[0] += 1
    return cls(name=f"sample_weight_{case}_{_made[0]}", **kwargs)


# Cases whose inputs are not (batch, dim) embeddings with class ids.
LOGITS = {"softmax"}  # (batch, classes) logits
REGRESSION = {"loss"}  # float targets of the outputs' shape
BINARY_TARGETS = {"contrastive_siamese"}  # 0/1 same/different targets


def inputs(case, term, seed=0):
    """``(outputs, targets)`` as NumPy: a tuple of two outputs for a term whose ``on`` is a tuple."""
    rng = np.random.default_rng(seed)

    def features():
        return rng.normal(size=(BATCH, CLASSES if case in LOGITS else DIM)).astype("float32")

    outputs = (features(), features()) if isinstance(term.on, tuple) else features()
    if case in REGRESSION:
        return outputs, features()
    if case in BINARY_TARGETS:
        return outputs, np.array([1, 0, 1, 1, 0, 0, 1, 0])
    return outputs, LABELS


def changed(case, outputs, targets, row=ROW):
    """The inputs with row ``row``'s features and label replaced (another valid label)."""
    rng = np.random.default_rng(99)
    outputs = keras.tree.map_structure(lambda x: x.copy(), outputs)
    for x in keras.tree.flatten(outputs):
        x[row] = rng.normal(size=x.shape[1:]) * 3.0
    targets = targets.copy()
    if case in REGRESSION:
        targets[row] = rng.normal(size=targets.shape[1:])
    elif case in BINARY_TARGETS:
        targets[row] = 1 - targets[row]
    else:
        targets[row] = (targets[row] + 1) % CLASSES
    return outputs, targets


def _value(term, outputs, targets, w=None):
    return float(to_numpy(term(outputs, targets, sample_weight=w, training=False)))


def loss_and_gradients(term, outputs, targets, w):
    """The loss and its gradients wrt each output (a list, in ``outputs``' order) and each trainable variable."""
    flat = [np.asarray(x, "float32") for x in keras.tree.flatten(outputs)]
    variables = term.trainable_variables

    def rebuild(tensors):
        return keras.tree.pack_sequence_as(outputs, list(tensors))

    if BACKEND == "tensorflow":
        import tensorflow as tf

        xs = [tf.constant(x) for x in flat]
        with tf.GradientTape() as tape:
            tape.watch(xs)
            loss = term(rebuild(xs), targets, sample_weight=w, training=False)
        grads = tape.gradient(loss, xs + [v.value for v in variables],
                              unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return float(loss), [tf.convert_to_tensor(g).numpy() for g in grads]
    if BACKEND == "torch":
        import torch

        xs = [torch.tensor(x, requires_grad=True) for x in flat]
        loss = term(rebuild(xs), targets, sample_weight=w, training=False)
        tensors = xs + [v.value for v in variables]
        grads = torch.autograd.grad(loss, tensors, allow_unused=True)
        return float(loss.detach()), [np.zeros(tuple(t.shape), "float32") if g is None else g.cpu().numpy()
                                      for g, t in zip(grads, tensors)]
    import jax

    fixed = [v.value for v in term.non_trainable_variables]

    def f(xs, values, labels, weights):
        mapping = list(zip(variables, values)) + list(zip(term.non_trainable_variables, fixed))
        with keras.StatelessScope(state_mapping=mapping):
            return term(rebuild(xs), labels, sample_weight=weights, training=False)

    loss, (gx, gv) = jax.value_and_grad(f, argnums=(0, 1))(flat, [v.value for v in variables], targets, w)
    return float(loss), [np.asarray(g) for g in gx] + [np.asarray(g) for g in gv]


# ------------------------------------------------------------------ the cases themselves
def test_every_case_is_classified():
    """A term listed in the contract cases must say whether it is per-sample or a tuple term."""
    unclassified = sorted(set(CASES) - PER_SAMPLE - TUPLE)
    assert not unclassified, f"add {unclassified} to PER_SAMPLE or TUPLE in tests/test_sample_weight.py"
    assert not PER_SAMPLE & TUPLE
    assert (PER_SAMPLE | TUPLE) <= set(CASES), sorted((PER_SAMPLE | TUPLE) - set(CASES))


def test_declared_weighting_agrees():
    """Where a term class declares ``weights_per`` ("sample" or "tuple"), it matches this file's classification."""
    for case in CASES:
        declared = getattr(make(case), "weights_per", None)
        if declared is not None:
            assert declared == ("sample" if case in PER_SAMPLE else "tuple"), (case, declared)


@pytest.mark.parametrize("case", sorted(ABSTRACT))
def test_abstract_bases_compute_no_loss(case):
    cls, kwargs = TERMS[case]
    term = cls(on=kwargs.get("on"), name=f"abstract_{case}")
    with pytest.raises((NotImplementedError, TypeError)):
        term(np.zeros((BATCH, DIM), "float32"), LABELS, training=False)


# ------------------------------------------------------------------ (a) uniform weights
@pytest.mark.parametrize("case", CASES)
def test_uniform_weights_scale_the_loss(case):
    term = make(case)
    outputs, targets = inputs(case, term)
    plain = _value(term, outputs, targets)
    assert plain != 0.0, "a zero loss would make the check empty: change the inputs"
    np.testing.assert_allclose(_value(term, outputs, targets, np.full(BATCH, 2.5, "float32")), 2.5 * plain,
                               rtol=RTOL, err_msg=case)
    np.testing.assert_allclose(_value(term, outputs, targets, np.ones(BATCH, "float32")), plain, rtol=1e-6,
                               err_msg=case)


# ------------------------------------------------------------------ (b) weight 0 is absence
@pytest.mark.parametrize("case", CASES)
def test_a_zero_weight_row_changes_neither_loss_nor_gradients(case):
    term = make(case)
    outputs, targets = inputs(case, term)
    w = np.random.default_rng(1).uniform(0.5, 2.0, BATCH).astype("float32")
    w[ROW] = 0.0
    loss, grads = loss_and_gradients(term, outputs, targets, w)
    other_outputs, other_targets = changed(case, outputs, targets)
    other_loss, other_grads = loss_and_gradients(term, other_outputs, other_targets, w)
    assert loss != 0.0, case
    np.testing.assert_allclose(other_loss, loss, rtol=RTOL, atol=1e-7, err_msg=case)
    n_outputs = len(keras.tree.flatten(outputs))
    keep = np.arange(BATCH) != ROW
    for k, (g, h) in enumerate(zip(grads, other_grads)):
        if k < n_outputs:  # an output: the other rows' gradients agree, the row's own is 0
            np.testing.assert_allclose(h[keep], g[keep], rtol=RTOL, atol=1e-6, err_msg=f"{case}: output {k}")
            assert np.all(g[ROW] == 0) and np.all(h[ROW] == 0), f"{case}: row {ROW} has a gradient"
        else:
            variable = term.trainable_variables[k - n_outputs]
            np.testing.assert_allclose(h, g, rtol=RTOL, atol=1e-6, err_msg=f"{case}: {variable.path}")
    assert any(np.any(g != 0) for g in grads[:n_outputs]), case


# ------------------------------------------------------------------ (c) per-sample terms: repetition
@pytest.mark.parametrize("case", sorted(PER_SAMPLE))
def test_integer_weights_are_repetition_up_to_the_batch_size(case):
    term = make(case)
    outputs, targets = inputs(case, term)
    w = np.array([1, 2, 0, 3, 1, 1, 2, 1], "float32")
    rows = np.repeat(np.arange(BATCH), w.astype(int))
    repeated = keras.tree.map_structure(lambda x: x[rows], outputs)
    expected = _value(term, repeated, targets[rows]) * w.sum() / BATCH
    np.testing.assert_allclose(_value(term, outputs, targets, w), expected, rtol=RTOL, err_msg=case)


# ------------------------------------------------------------------ Proxy Anchor's replica sums
def test_proxy_anchor_weights_over_replicas_are_the_global_batchs():
    """The ``gather`` path (tf.distribute) with weights: two replicas holding the same rows = the doubled batch.

    Value: the loss of the concatenated batch. Gradient wrt the replica's rows:
    ``replicas`` times the global loss's wrt that copy, i.e. the gradient of
    the doubled batch's loss wrt the shared rows.
    """
    rng = np.random.default_rng(5)
    x = rng.normal(size=(BATCH, DIM)).astype("float32")
    p = rng.normal(size=(CLASSES, DIM)).astype("float32")
    w = rng.uniform(0.5, 2.0, BATCH).astype("float32")
    w[ROW] = 0.0

    def twice(t):
        return keras.ops.concatenate([t, t], axis=0)

    def replica(v):
        return lw.ops.proxy_anchor_loss(v, p, LABELS, sample_weight=w, gather=twice)

    def doubled(v):
        return lw.ops.proxy_anchor_loss(twice(v), p, np.concatenate([LABELS, LABELS]),
                                        sample_weight=np.concatenate([w, w]))

    np.testing.assert_allclose(float(to_numpy(replica(x))), float(to_numpy(doubled(x))), rtol=RTOL)
    np.testing.assert_allclose(gradient(replica, x), gradient(doubled, x), rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------ the page's example
@one_backend
def test_the_pages_example_prints_what_the_page_says(capsys):
    """docs/sample_weight.md: its Python block prints the numbers of the text block after it."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "sample_weight.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    printed = re.search(r"```text\n(.*?)```", text, re.S).group(1)
    exec(compile(code, "sample_weight.md", "exec"), {})
    assert capsys.readouterr().out == printed
