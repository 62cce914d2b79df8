"""Train one Objective on one device and on 4 (virtual CPU) replicas; print the differences.

Run by tests/test_distribution.py in a subprocess, because the device setup must
happen before the backend initializes:

- JAX: ``XLA_FLAGS=--xla_force_host_platform_device_count=4`` (set by the caller)
  and ``keras.distribution.DataParallel``;
- TensorFlow: 4 logical CPU devices and ``tf.distribute.MirroredStrategy``.

The last line of stdout is a JSON dict: max absolute differences between the
single-device and the distributed run (centers, model weights, learned loss
weights, class weights of margin terms), plus sanity values.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPLICAS = 4

import keras  # noqa: E402

BACKEND = keras.backend.backend()
if BACKEND == "tensorflow":
    import tensorflow as tf

    tf.config.set_logical_device_configuration(
        tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * REPLICAS
    )

import numpy as np  # noqa: E402

import lossweave as lw  # noqa: E402

CLASSES, DIM, FEATURES, BATCH, STEPS = 5, 4, 10, 32, 4


ADAPTIVE = ("adaface", "curricular_face", "adacos")  # MagFace keeps no state: its gradients are ArcFace's path


def _term_factories():
    """Every stateful term trained here; a new stateful term joins this list."""
    factories = {
        "softmax": lambda: lw.terms.SoftmaxCrossEntropy(on="logits"),
        "center": lambda: lw.terms.CenterLoss(num_classes=CLASSES, alpha=0.5, update="paper", on="embedding"),
    }
    # The margin term (issue 6, part 1): included as soon as lossweave.terms has it.
    if hasattr(lw.terms, "ArcFace"):
        factories["arcface"] = lambda: lw.terms.ArcFace(CLASSES, on="embedding")
    # Partial FC sampling (issue 13): 7 of 64 classes a step; the replicas draw the
    # global batch's sample (the labels are in [0, CLASSES): 2+ negatives a step).
    factories["arcface_sampled"] = lambda: lw.terms.ArcFace(64, sample_rate=0.1, seed=5, on="embedding")
    # The adaptive margins with running statistics (issue 24), of the global batch (in the loss-level run
    # only: PCGrad's projections over 7 terms amplify float32 round-off past 1e-5 on TensorFlow).
    factories["adaface"] = lambda: lw.terms.AdaFace(CLASSES, update_rate=0.5, initial_mean=2.0, initial_std=1.0,
                                                    on="embedding")
    factories["curricular_face"] = lambda: lw.terms.CurricularFace(CLASSES, update_rate=0.5, on="embedding")
    # 8 classes, 5 in a batch: Partial FC keeps the positives only (its B_avg scaled by 7/4); s stays O(1).
    factories["adacos"] = lambda: lw.terms.AdaCos(8, sample_rate=0.5, seed=6, on="embedding")
    return factories


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH * STEPS, FEATURES)).astype("float32")
    y = rng.integers(0, CLASSES, BATCH * STEPS).astype("int32")
    return x, y


def _objective(weighting=None):
    keras.utils.set_random_seed(3)
    inputs = keras.Input((FEATURES,))
    hidden = keras.layers.Dense(16, activation="tanh")(inputs)
    emb = keras.layers.Dense(DIM)(hidden)
    model = keras.Model(inputs, {"embedding": emb, "logits": keras.layers.Dense(CLASSES)(emb)})
    terms = {name: make() for name, make in _term_factories().items() if weighting is None or name not in ADAPTIVE}
    weighting = weighting or lw.weighting.Uncertainty({"softmax": "classification"})
    objective = lw.Objective(model, terms, weighting=weighting)
    objective.compile(optimizer=keras.optimizers.SGD(0.02, momentum=0.5))
    return objective


def _state(objective):
    state = {"centers": np.array(keras.ops.convert_to_numpy(objective.terms["center"].centers))}
    for i, w in enumerate(objective.model.weights):
        state[f"model/{i}"] = np.array(keras.ops.convert_to_numpy(w))
    for name, var in getattr(objective.weighting, "log_variances", {}).items():
        state[f"log_var/{name}"] = np.array(keras.ops.convert_to_numpy(var))
    for name, term in objective.terms.items():
        if name not in ("softmax", "center"):  # margin terms: their class weights
            for i, w in enumerate(term.weights):
                state[f"{name}/{i}"] = np.array(keras.ops.convert_to_numpy(w))
    state["step"] = np.array(keras.ops.convert_to_numpy(objective.step_counter))
    return state


def _train(x, y, weighting=None):
    objective = _objective(weighting)
    history = objective.fit(x, {"label": y}, batch_size=BATCH, epochs=2, shuffle=False, verbose=0)
    return objective, history.history


def _bad_label_run(objective, x, y):
    """A bad label in the last replica's shard: InvalidInputError, and no center moves."""
    before = _state(objective)
    y_bad = y.copy()
    y_bad[BATCH - 1] = CLASSES + 7  # the last row of the first global batch: the last replica's shard
    try:
        objective.fit(x[:BATCH], {"label": y_bad[:BATCH]}, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    except lw.errors.InvalidInputError as error:
        message = str(error)
    else:
        message = None
    after = _state(objective)
    return message, float(np.abs(after["centers"] - before["centers"]).max())


def main():
    x, y = _data()
    single, single_logs = _train(x, y)
    reference = _state(single)
    # Gradient-level strategies (issue 10): the per-term gradients of the global batch.
    gradient_kinds = {"mgda": lambda: lw.weighting.MGDA(), "pcgrad": lambda: lw.weighting.PCGrad(seed=2)}
    gradient_reference = {n: _state(_train(x, y, make())[0]) for n, make in gradient_kinds.items()}
    if BACKEND == "jax":
        import jax

        devices = jax.devices()
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
        distributed, logs = _train(x, y)
        got = _state(distributed)
        bad_message, bad_moved = _bad_label_run(distributed, x, y)
        gradient_got = {n: _state(_train(x, y, make())[0]) for n, make in gradient_kinds.items()}
        replicas = len(devices)
    elif BACKEND == "tensorflow":
        strategy = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(REPLICAS)])
        with strategy.scope():
            distributed, logs = _train(x, y)
            got = _state(distributed)
            bad_message, bad_moved = _bad_label_run(distributed, x, y)
            gradient_got = {n: _state(_train(x, y, make())[0]) for n, make in gradient_kinds.items()}
        replicas = strategy.num_replicas_in_sync
    else:
        raise SystemExit(f"no multi-device run for backend {BACKEND}")
    diffs = {key: float(np.abs(got[key].astype("float64") - reference[key]).max()) for key in reference}
    gradient_diffs = {
        f"{n}/{key}": float(np.abs(gradient_got[n][key].astype("float64") - ref[key]).max())
        for n, ref in gradient_reference.items()
        for key in ref
    }
    print(
        json.dumps(
            {
                "backend": BACKEND,
                "replicas": replicas,
                "terms": sorted(single.terms),
                "diffs": diffs,
                "gradient_diffs": gradient_diffs,
                "gradient_moved": max(
                    float(np.abs(ref["model/0"] - reference["model/0"]).max()) for ref in gradient_reference.values()
                ),
                "centers_moved": float(np.abs(reference["centers"]).max()),
                "log_var_moved": max(float(np.abs(v).max()) for k, v in reference.items() if k.startswith("log_var/")),
                "loss_single": single_logs["loss"],
                "loss_distributed": logs["loss"],
                "center_loss_single": single_logs["loss/center"],
                "center_loss_distributed": logs["loss/center"],
                "bad_message": bad_message,
                "bad_moved": bad_moved,
            }
        )
    )


if __name__ == "__main__":
    sys.exit(main())
