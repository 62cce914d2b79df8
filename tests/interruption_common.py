"""The Objective, data and state read-out shared by test_interruption.py and interruption_run.py."""

import keras
import numpy as np

import lossweave as lw

CLASSES, FEATURES = 4, 8


def data():
    rng = np.random.default_rng(5)
    return rng.normal(size=(64, FEATURES)).astype("float32"), rng.integers(0, CLASSES, 64).astype("int32")


def objective():
    keras.utils.set_random_seed(21)
    inputs = keras.Input((FEATURES,))
    emb = keras.layers.Dense(3)(keras.layers.Dense(16, activation="relu")(inputs))
    model = keras.Model(inputs, {"embedding": emb, "logits": keras.layers.Dense(CLASSES)(emb)})
    terms = {
        "softmax": lw.terms.SoftmaxCrossEntropy(on="logits"),
        "center": lw.terms.CenterLoss(num_classes=CLASSES, alpha=0.5, on="embedding"),
    }
    if hasattr(lw.terms, "ArcFace"):  # the margin term, once it exists
        terms["arcface"] = lw.terms.ArcFace(CLASSES, on="embedding")
    weighting = lw.weighting.Fixed({"center": lw.schedules.LinearWarmup(0.01, steps=20)})
    result = lw.Objective(model, terms, weighting=weighting)
    result.compile(optimizer=keras.optimizers.Adam(0.01))
    return result


def state(objective):
    """Every variable of the Objective and its optimizer, by path, as NumPy arrays."""
    # Keyed by position (auto-generated layer names differ between objectives).
    out = {f"{i:02d} {v.path.split('/')[-1]}": np.array(keras.ops.convert_to_numpy(v)) for i, v in enumerate(objective.weights)}
    for i, v in enumerate(objective.optimizer.variables):
        out[f"optimizer {i:02d} {v.path.split('/')[-1].split('_')[-1]}"] = np.array(keras.ops.convert_to_numpy(v))
    return out
