"""One contract for every term and weighting strategy: new ones join by being listed here.

Each must: round-trip through its config and through keras serialization,
train inside an Objective with finite gradients, and accept float16/bfloat16
outputs.
"""

import keras
import numpy as np
import pytest

import lossweave as lw
from conftest import to_numpy

CLASSES, DIM = 4, 3

TERMS = {
    "center_paper": lambda: lw.terms.CenterLoss(num_classes=CLASSES, on="embedding"),
    "center_gradient": lambda: lw.terms.CenterLoss(num_classes=CLASSES, update="gradient", on="embedding"),
    "softmax": lambda: lw.terms.SoftmaxCrossEntropy(on="logits"),
    "keras_loss": lambda: lw.terms.Loss(
        keras.losses.SparseCategoricalCrossentropy(from_logits=True), on="logits"
    ),
    "normface": lambda: lw.terms.NormFace(num_classes=CLASSES, learn_scale=True),
    "cosface": lambda: lw.terms.CosFace(num_classes=CLASSES),
    "arcface": lambda: lw.terms.ArcFace(num_classes=CLASSES),
    "combined_margin": lambda: lw.terms.CombinedMargin(num_classes=CLASSES),
    "subcenter_arcface": lambda: lw.terms.SubCenterArcFace(num_classes=CLASSES),
    "sphereface": lambda: lw.terms.SphereFace(num_classes=CLASSES),
    "proxy_anchor": lambda: lw.terms.ProxyAnchorLoss(num_classes=CLASSES, margin=0.2, alpha=16.0),
    "proxynca_pp": lambda: lw.terms.ProxyNCALoss(num_classes=CLASSES, temperature=1 / 9, include_positive=True),
    "multi_similarity": lambda: lw.terms.MultiSimilarityLoss(alpha=3.0, beta=40.0, base=0.5, margin=0.2),
    "circle": lambda: lw.terms.CircleLoss(margin=0.4, gamma=80.0),
    "supcon": lambda: lw.terms.SupConLoss(temperature=0.2),
    "ntxent": lambda: lw.terms.NTXentLoss(temperature=0.5, on="embedding"),
    # Two views read as a tuple of outputs (here one output twice: the model has no second view).
    "ntxent_views": lambda: lw.terms.NTXentLoss(temperature=0.5, on=("embedding", "embedding")),
    "contrastive": lambda: lw.terms.ContrastiveLoss(pos_margin=0.1, neg_margin=2.0, distance="squared_euclidean"),
    "triplet_semi_hard": lambda: lw.terms.TripletLoss(margin=0.5, distance="cosine"),
    "triplet_batch_all": lambda: lw.terms.TripletLoss(margin=0.3, mining="batch-all", average="all"),
    "lifted": lambda: lw.terms.LiftedStructureLoss(margin=0.5),
    "npairs": lambda: lw.terms.NPairsLoss(l2_reg=0.01),
    "xbm": lambda: lw.terms.CrossBatchMemory(lw.terms.TripletLoss(mining="batch-hard", soft=True), memory_size=24),
}
WEIGHTINGS = {
    "sum": lambda: lw.weighting.Weighting(),
    "fixed": lambda: lw.weighting.Fixed({"term": 0.5}),
    "scheduled": lambda: lw.weighting.Fixed({"term": lw.schedules.LinearWarmup(0.5, steps=2)}),
    "uncertainty": lambda: lw.weighting.Uncertainty(),
    "dwa": lambda: lw.weighting.DWA(steps_per_epoch=1),
    "rlw": lambda: lw.weighting.RLW(seed=1),
    "gls": lambda: lw.weighting.GLS(),
    "famo": lambda: lw.weighting.FAMO(),
    # Gradient-level strategies (lossweave.trainer's own step), non-default arguments.
    "mgda": lambda: lw.weighting.MGDA(normalization="loss+", iterations=20),
    "pcgrad": lambda: lw.weighting.PCGrad(seed=4),
    "cagrad": lambda: lw.weighting.CAGrad(c=0.3, rescale=1),
    "nash_mtl": lambda: lw.weighting.NashMTL(update_weights_every=2, max_norm=2.0, iterations=10),
    "gradient_mean": lambda: lw.weighting.Mean(),
    "upgrad": lambda: lw.weighting.UPGrad(preference={"term": 2.0}, norm_eps=1e-6, reg_eps=1e-3),
    "dualproj": lambda: lw.weighting.DualProj(preference={"term": 0.5}, norm_eps=0.0, reg_eps=2e-4),
    "imtlg": lambda: lw.weighting.IMTLG(),
    "aligned_mtl": lambda: lw.weighting.AlignedMTL(scale_mode="median", preference={"term": 2.0}),
    "config": lambda: lw.weighting.ConFIG(preference={"term": 0.5}, length="harmonic"),
    "gradvac": lambda: lw.weighting.GradVac(beta=0.2, grouping="layer", seed=2),
    "graddrop": lambda: lw.weighting.GradDrop(leak=0.2, seed=2),
    "moco": lambda: lw.weighting.MoCo(beta=0.4, gamma=0.2, rho=0.1, normalize=False),
    "dbmtl": lambda: lw.weighting.DBMTL(beta=0.8, beta_sigma=0.5),
    "gradnorm": lambda: lw.weighting.GradNorm(alpha=1.0, learning_rate=0.05),
}


def _model():
    inputs = keras.Input((6,))
    emb = keras.layers.Dense(DIM)(inputs)
    return keras.Model(inputs, {"embedding": emb, "logits": keras.layers.Dense(CLASSES)(emb)})


def _data():
    rng = np.random.default_rng(4)
    return rng.normal(size=(32, 6)).astype("float32"), rng.integers(0, CLASSES, 32)


@pytest.mark.parametrize("name", sorted(TERMS))
def test_term_serialization_round_trip(name):
    term = TERMS[name]()
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(term))
    assert type(clone) is type(term) and clone.get_config() == term.get_config()


@pytest.mark.parametrize("name", sorted(WEIGHTINGS))
def test_weighting_serialization_round_trip(name):
    weighting = WEIGHTINGS[name]()
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(weighting))
    assert type(clone) is type(weighting) and clone.get_config() == weighting.get_config()


# Every term under the plain sum, and every weighting over the paper's center loss.
TRAINING_CASES = [(name, "sum") for name in sorted(TERMS)] + [
    ("center_paper", weighting) for weighting in sorted(WEIGHTINGS) if weighting != "sum"
]


@pytest.mark.parametrize("name, weighting", TRAINING_CASES)
def test_trains_with_finite_state(name, weighting):
    x, y = _data()
    objective = lw.Objective(_model(), {"term": TERMS[name]()}, weighting=WEIGHTINGS[weighting]())
    objective.compile(optimizer="adam")
    objective.build((None, 6))
    before = [to_numpy(w).copy() for w in objective.model.trainable_weights]
    history = objective.fit(x, {"label": y}, epochs=1, batch_size=16, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    for weight in objective.weights:
        assert np.all(np.isfinite(to_numpy(weight))), weight.path
    assert any(np.any(to_numpy(a) != b) for a, b in zip(objective.model.trainable_weights, before))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("name", sorted(TERMS))
def test_low_precision_outputs(name, dtype):
    x, y = _data()
    term = TERMS[name]()
    outputs = _model()(x)
    read = tuple(outputs[on] for on in term.on) if isinstance(term.on, tuple) else outputs[term.on]
    value = term(keras.tree.map_structure(lambda t: keras.ops.cast(t, dtype), read), y, training=True)
    assert np.isfinite(float(to_numpy(value)))
    for weight in term.weights:  # state stays float32 (step counters, XBM's labels and positions are int32)
        integer = "iterations" in weight.path or (
            isinstance(term, lw.terms.CrossBatchMemory) and not weight.path.endswith("memory_embeddings")
        )
        assert weight.dtype == ("int32" if integer else "float32"), weight.path
