"""Train one Objective on one device and on 4 (virtual CPU) replicas; print the differences.

Run by tests/test_distribution.py in a subprocess, because the device setup must
happen before the backend initializes:

- JAX: ``XLA_FLAGS=--xla_force_host_platform_device_count=4`` (set by the caller)
  and ``keras.distribution.DataParallel``;
- TensorFlow: 4 logical CPU devices and ``tf.distribute.MirroredStrategy``.

The last line of stdout is a JSON dict: max absolute differences between the
single-device and the distributed run (centers, model weights, learned loss
weights, class weights of margin terms), plus sanity values.

``distribution_run.py pairs``: the tuple losses (issue 23), whose tuples span
the replicas, on one device and on 2 and 4 replicas (loss and tuple-statistics
differences, relative above 1; absolute weight differences), and how far the mean of the replicas' shares'
losses is from the global batch's loss (what the test would miss otherwise).
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


def _objective(weighting=None, **options):
    keras.utils.set_random_seed(3)
    inputs = keras.Input((FEATURES,))
    hidden = keras.layers.Dense(16, activation="tanh")(inputs)
    emb = keras.layers.Dense(DIM)(hidden)
    model = keras.Model(inputs, {"embedding": emb, "logits": keras.layers.Dense(CLASSES)(emb)})
    terms = {name: make() for name, make in _term_factories().items() if weighting is None or name not in ADAPTIVE}
    weighting = weighting or lw.weighting.Uncertainty({"softmax": "classification"})
    objective = lw.Objective(model, terms, weighting=weighting, **options)
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


def _train(x, y, weighting=None, **options):
    objective = _objective(weighting, **options)
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
    # mgda_blocks: Objective(gramian_blocks=True), the Gramian block by block (rows all-reduced per block).
    gradient_kinds = {"mgda": lambda: lw.weighting.MGDA(), "pcgrad": lambda: lw.weighting.PCGrad(seed=2),
                      "mgda_blocks": lambda: lw.weighting.MGDA()}
    blocks = {n: {"gramian_blocks": n.endswith("_blocks")} for n in gradient_kinds}
    gradient_reference = {n: _state(_train(x, y, make(), **blocks[n])[0]) for n, make in gradient_kinds.items()}
    if BACKEND == "jax":
        import jax

        devices = jax.devices()
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
        distributed, logs = _train(x, y)
        got = _state(distributed)
        bad_message, bad_moved = _bad_label_run(distributed, x, y)
        gradient_got = {n: _state(_train(x, y, make(), **blocks[n])[0]) for n, make in gradient_kinds.items()}
        replicas = len(devices)
    elif BACKEND == "tensorflow":
        strategy = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(REPLICAS)])
        with strategy.scope():
            distributed, logs = _train(x, y)
            got = _state(distributed)
            bad_message, bad_moved = _bad_label_run(distributed, x, y)
            gradient_got = {n: _state(_train(x, y, make(), **blocks[n])[0]) for n, make in gradient_kinds.items()}
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


# ------------------------------------------------------------------ pair losses (issue 23, item 5)
PAIR_CLASSES = 4  # 8 rows of 4 classes per replica of 4: every replica's share has positives


def _pair_terms():
    """The tuple losses whose tuples span the replicas: a reducer, a miner, similarity losses, a memory."""
    return {
        "contrastive": lw.terms.ContrastiveLoss(neg_margin=1.5, reducer=lw.reducers.AvgNonZeroReducer()),
        "triplet": lw.terms.TripletLoss(margin=0.5, miner=lw.miners.BatchHardMiner()),
        "multi_similarity": lw.terms.MultiSimilarityLoss(),
        "supcon": lw.terms.SupConLoss(temperature=0.5),
        "memory": lw.terms.CrossBatchMemory(lw.terms.ContrastiveLoss(), memory_size=48),
    }


def _pair_objective():
    keras.utils.set_random_seed(3)
    inputs = keras.Input((FEATURES,))
    hidden = keras.layers.Dense(16, activation="tanh")(inputs)
    model = keras.Model(inputs, {"embedding": keras.layers.Dense(DIM)(hidden)})
    terms = _pair_terms()
    objective = lw.Objective(model, terms)
    # The tuple statistics (issue 23, item 7) of the global batch: every replica logs one device's values.
    objective.compile(optimizer=keras.optimizers.SGD(0.05),
                      metrics={"embedding": [lw.metrics.TupleStatistics(terms["triplet"])]})
    return objective


def _pair_train(x, y, w):
    objective = _pair_objective()
    history = objective.fit(x, {"label": y}, sample_weight=w, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    weights = [np.array(keras.ops.convert_to_numpy(v)) for v in objective.model.weights]
    memory = np.array(keras.ops.convert_to_numpy(objective.terms["memory"].memory_embeddings))
    return history.history, weights, memory


def _shard_losses(x, y, w, replicas):
    """Each term's loss of the first global batch as the mean of its replicas' shares' losses (the old way)."""
    objective = _pair_objective()
    embedding = objective.model(x[:BATCH])["embedding"]
    share = BATCH // replicas
    found = {}
    for name, term in objective.terms.items():
        whole = float(term(embedding, y[:BATCH], sample_weight=w[:BATCH]))
        parts = [float(term(embedding[i * share:(i + 1) * share], y[i * share:(i + 1) * share],
                            sample_weight=w[i * share:(i + 1) * share])) for i in range(replicas)]
        found[name] = abs(whole - float(np.mean(parts)))
    return found


def pairs_main():
    """One device, then 2 and 4 replicas: every pair term's loss and the weights after 4 steps."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(BATCH * STEPS, FEATURES)).astype("float32")
    y = rng.integers(0, PAIR_CLASSES, BATCH * STEPS).astype("int32")
    w = rng.uniform(0.5, 1.5, BATCH * STEPS).astype("float32")
    w[::7] = 0.0  # rows left out of every tuple, on every replica
    single = _pair_train(x, y, w)
    runs = {}
    for replicas in (2, REPLICAS):
        if BACKEND == "jax":
            import jax

            keras.distribution.set_distribution(keras.distribution.DataParallel(devices=jax.devices()[:replicas]))
            runs[replicas] = _pair_train(x, y, w)
            keras.distribution.set_distribution(None)
        elif BACKEND == "tensorflow":
            # A second strategy in one process needs its own collective group keys (TensorFlow's test hook).
            tf.distribute.MirroredStrategy._collective_key_base = 1000 * replicas
            strategy = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(replicas)])
            with strategy.scope():
                runs[replicas] = _pair_train(x, y, w)
        else:
            raise SystemExit(f"no multi-device run for backend {BACKEND}")
    result = {"backend": BACKEND, "terms": sorted(_pair_terms()), "shard_gap": _shard_losses(x, y, w, REPLICAS),
              "moved": max(float(np.abs(a - b).max()) for a, b in zip(single[1], _pair_objective().model.weights))}
    for replicas, (logs, weights, memory) in runs.items():
        result[str(replicas)] = {
            # relative above 1, absolute below (an active fraction or a similarity near 0)
            "loss": {k: abs(logs[k][0] - single[0][k][0]) / max(abs(single[0][k][0]), 1.0) for k in single[0]},
            "weights": max(float(np.abs(a - b).max()) for a, b in zip(weights, single[1])),
            "memory": float(np.abs(memory - single[2]).max()),
        }
    print(json.dumps(result))


if __name__ == "__main__":
    sys.exit(pairs_main() if sys.argv[1:] == ["pairs"] else main())
