"""Class tables sharded over devices: train on one device and on a mesh; print what was found.

Run by tests/test_sharding.py in a subprocess, because the devices must be set
up before the backend initializes:

- JAX (``XLA_FLAGS=--xla_force_host_platform_device_count=4``, set by the
  caller): a (2 data x 2 model) ``keras.distribution.ModelParallel`` mesh whose
  ``LayoutMap`` comes from ``lossweave.sharding.fill_layout_map``; the run is
  compared with one device, the shards and the compiled step's collectives are
  read, and the sharded objective is saved and loaded on one device.
- TensorFlow (4 logical CPU devices): what ``tf.distribute`` does with the
  table: ``MirroredStrategy`` replicates it (and equals one device),
  ``keras.distribution`` does not shard on TensorFlow, and a
  ``ParameterServerStrategy`` partitioner splits it into a ``ShardedVariable``
  that Keras 3's ``fit`` cannot train.

The last line of stdout is a JSON dict.
"""

import json
import os
import re
import socket
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
DEVICES = 4

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))

import keras  # noqa: E402

BACKEND = keras.backend.backend()
if BACKEND == "tensorflow":
    import tensorflow as tf

    tf.config.set_logical_device_configuration(
        tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * DEVICES
    )

import numpy as np  # noqa: E402

import lossweave as lw  # noqa: E402

# CLASSES rows and CLASSES / 2 per shard appear in no other array of the step
# (batch 16 or 8 per data shard, dims 4, 10 and 16, 12 sampled classes), so a
# collective on a table is recognised by its row count.
CLASSES, DIM, FEATURES, BATCH, STEPS = 40, 4, 10, 16, 4
SAMPLE_RATE, SEED = 0.3, 7
TABLES = {"arcface": "class_weights", "sampled": "class_weights", "center": "centers"}


def _terms():
    terms = {
        "arcface": lw.terms.ArcFace(CLASSES, scale=16.0, on="embedding"),
        "center": lw.terms.CenterLoss(num_classes=CLASSES, alpha=0.5, on="embedding"),
    }
    terms["sampled"] = lw.terms.ArcFace(CLASSES, scale=16.0, sample_rate=SAMPLE_RATE, seed=SEED, on="embedding")
    return terms


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH * STEPS, FEATURES)).astype("float32")
    y = rng.integers(0, CLASSES, BATCH * STEPS).astype("int32")
    return x, y


def _objective(terms):
    keras.utils.set_random_seed(3)
    inputs = keras.Input((FEATURES,))
    hidden = keras.layers.Dense(16, activation="tanh")(inputs)
    model = keras.Model(inputs, {"embedding": keras.layers.Dense(DIM)(hidden)})
    objective = lw.Objective(model, terms, weighting=lw.weighting.Fixed({"center": 0.1}))
    objective.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.5))
    return objective


def _initial_state():
    objective = _objective(_terms())
    objective.build((None, FEATURES))
    return _state(objective)


def _moved(reference, initial):
    """How far training moved each table (the comparisons are not vacuous)."""
    return {k: float(np.abs(reference[k] - initial[k]).max()) for k in TABLES_KEYS}


def _numpy(value):
    return np.array(keras.ops.convert_to_numpy(value), dtype="float64")


def _state(objective):
    state = {f"{name}/{attr}": _numpy(getattr(objective.terms[name], attr)) for name, attr in TABLES.items()}
    for i, w in enumerate(objective.model.weights):
        state[f"model/{i}"] = _numpy(w)
    state["sampled/seed"] = _numpy(objective.terms["sampled"].seed_generator.state)
    return state


def _train(objective, x, y):
    history = objective.fit(x, {"label": y}, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    return history.history


def _diffs(got, reference):
    return {key: float(np.abs(got[key] - reference[key]).max()) for key in reference}


# ----------------------------------------------------------------------------- JAX
INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%(?P<name>[\w.-]+)\s*=\s*(?P<type>\(.*?\)|\S+)\s+(?P<op>[\w-]+)\((?P<args>[^)]*)\)")
COLLECTIVES = ("all-gather", "all-reduce", "reduce-scatter", "all-to-all", "collective-permute")
SHAPE = re.compile(r"[a-z]+\d*\[([\d,]*)\]")


def _source(line):
    match = re.search(r'op_name="([^"]*)"', line)
    return match and match.group(1)


def _table_collectives(hlo):
    """Collectives of the compiled step that move an array with CLASSES or CLASSES / 2 rows.

    XLA combines several all-reduces into one of a tuple: each element is then
    named by the ``get-tuple-element`` that reads it (its own op_name).
    """
    collectives, found = {}, []
    for line in hlo.splitlines():
        match = INSTRUCTION.match(line)
        if not match:
            continue
        op = match.group("op").removesuffix("-start")
        if op in COLLECTIVES:
            if match.group("type").startswith("("):
                collectives[match.group("name")] = op
                continue
            parts = [(match.group("type"), op)]
        elif op == "get-tuple-element" and match.group("args").lstrip("%") in collectives:
            parts = [(match.group("type"), collectives[match.group("args").lstrip("%")])]
        else:
            continue
        for kind, collective in parts:
            for dims in SHAPE.findall(kind):
                shape = tuple(int(d) for d in dims.split(",") if d)
                if shape and shape[0] in (CLASSES, CLASSES // 2):
                    found.append({"op": collective, "shape": list(shape), "source": _source(line)})
    return found


def _compiled_step_hlo(objective, x, y, mesh):
    """The HLO of the objective's train step, compiled as Keras's JAX trainer compiles it."""
    import jax

    from classes import compiled_train_step  # benchmarks/classes.py

    batch = jax.sharding.NamedSharding(mesh.backend_mesh, jax.sharding.PartitionSpec("data"))
    return compiled_train_step(objective, x[:BATCH], y[:BATCH], batch).as_text()


def _shards(objective):
    """Per table (and its optimizer slot): the shapes of the shards on each device."""
    shards = {}
    for name, attr in TABLES.items():
        value = getattr(objective.terms[name], attr).value
        shards[f"{name}/{attr}"] = sorted({tuple(s.data.shape) for s in value.addressable_shards})
        shards[f"{name}/{attr}:devices"] = len(value.addressable_shards)
        for slot in objective.optimizer.variables:  # SGD's momentum of a trainable table
            if slot.path.endswith(f"_{name}_{attr}_momentum"):
                shards[f"{name}/{attr}:momentum"] = sorted({tuple(s.data.shape) for s in slot.value.addressable_shards})
    return shards


def _sharded_objective(devices):
    """The objective under a (2 data x 2 model) ModelParallel: distribution first, then terms, map, build."""
    mesh = keras.distribution.DeviceMesh((2, 2), ["data", "model"], devices)
    layout_map = keras.distribution.LayoutMap(mesh)
    keras.distribution.set_distribution(keras.distribution.ModelParallel(layout_map=layout_map, batch_dim_name="data"))
    terms = _terms()  # the sampled term's seed is a variable from its constructor: under the distribution
    lw.sharding.fill_layout_map(layout_map, terms)
    return _objective(terms), mesh


def _run_jax(x, y):
    import jax

    initial = _initial_state()
    single = _objective(_terms())
    single_logs = _train(single, x, y)
    reference = _state(single)

    sharded, mesh = _sharded_objective(jax.devices())
    logs = _train(sharded, x, y)
    got = _state(sharded)
    shards = _shards(sharded)
    collectives = _table_collectives(_compiled_step_hlo(sharded, x, y, mesh))

    path = os.path.join(tempfile.mkdtemp(), "sharded.keras")
    sharded.save(path)
    keras.distribution.set_distribution(None)
    restored = keras.saving.load_model(path)
    restored_state = _state(restored)
    restored_devices = {
        f"{name}/{attr}": len(getattr(restored.terms[name], attr).value.addressable_shards)
        for name, attr in TABLES.items()
    }
    # Loaded under the mesh again, with a map filled from the built objective (exact paths).
    layout_map = keras.distribution.LayoutMap(mesh)
    keras.distribution.set_distribution(keras.distribution.ModelParallel(layout_map=layout_map, batch_dim_name="data"))
    lw.sharding.fill_layout_map(layout_map, restored)
    resharded = keras.saving.load_model(path)
    resharded_shards = _shards(resharded)
    resharded_diffs = _diffs(_state(resharded), got)
    keras.distribution.set_distribution(None)
    return {
        "devices": len(jax.devices()),
        "diffs": _diffs(got, reference),
        "moved": _moved(reference, initial),
        "loss_single": single_logs["loss"],
        "loss_sharded": logs["loss"],
        "table_shapes": {k: list(reference[k].shape) for k in TABLES_KEYS},
        "shards": {k: [list(s) for s in v] if isinstance(v, list) else v for k, v in shards.items()},
        "table_collectives": collectives,
        "restored_vs_single": _diffs(restored_state, reference),
        "restored_vs_sharded": _diffs(restored_state, got),
        "restored_shapes": {k: list(restored_state[k].shape) for k in TABLES_KEYS},
        "restored_devices": restored_devices,
        "resharded_shards": {k: [list(x) for x in v] if isinstance(v, list) else v for k, v in resharded_shards.items()},
        "resharded_vs_sharded": resharded_diffs,
    }


TABLES_KEYS = [f"{name}/{attr}" for name, attr in TABLES.items()]


# ---------------------------------------------------------------------- TensorFlow
def _mirrored(x, y):
    initial = _initial_state()
    single = _objective(_terms())
    single_logs = _train(single, x, y)
    reference = _state(single)
    strategy = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(DEVICES)])
    with strategy.scope():
        mirrored = _objective(_terms())
        logs = _train(mirrored, x, y)
        got = _state(mirrored)
    copies = {
        key: [list(v.shape) for v in getattr(mirrored.terms[name], attr).value.values]
        for key, (name, attr) in zip(TABLES_KEYS, TABLES.items())
    }
    return {
        "replicas": strategy.num_replicas_in_sync,
        "diffs": _diffs(got, reference),
        "moved": _moved(reference, initial),
        "loss_single": single_logs["loss"],
        "loss_mirrored": logs["loss"],
        "copies": copies,
    }


def _keras_distribution_on_tf():
    """``keras.distribution.ModelParallel`` with the table layouts, on TensorFlow: what the variable becomes."""
    try:
        objective, _ = _sharded_objective([f"cpu:{i}" for i in range(DEVICES)])
        objective.build((None, FEATURES))
        table = objective.terms["arcface"].class_weights.value
        return {"type": type(table).__name__, "shape": list(table.shape), "device": table.device}
    finally:
        keras.distribution.set_distribution(None)


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _parameter_servers(x, y):
    """An in-process cluster (1 worker, 2 parameter servers on localhost) and a 2-shard partitioner."""
    spec = {"worker": [f"localhost:{_free_port()}"], "ps": [f"localhost:{_free_port()}" for _ in range(2)]}
    cluster = tf.train.ClusterSpec(spec)
    servers = [  # kept alive until the process ends
        tf.distribute.Server(cluster, job_name=kind, task_index=i, protocol="grpc", start=True)
        for kind in spec
        for i in range(len(spec[kind]))
    ]
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(cluster, rpc_layer="grpc")
    strategy = tf.distribute.experimental.ParameterServerStrategy(
        resolver, variable_partitioner=tf.distribute.experimental.partitioners.FixedShardsPartitioner(2)
    )
    with strategy.scope():
        objective = _objective(_terms())
        objective.build((None, FEATURES))
    table = objective.terms["arcface"].class_weights.value
    centers = objective.terms["center"]
    # The row update on the partitioned centers, outside fit (the coordinator runs it eagerly).
    features = np.full((2, DIM), 2.0, "float32")
    centers(features, np.array([1, CLASSES - 1]), training=True)
    rows = np.concatenate([v.numpy() for v in centers.centers.value.variables])  # the shards, in order
    try:
        _train(objective, x, y)
        fit_error = None
    except Exception as error:  # Keras 3's fit has no ClusterCoordinator path
        fit_error = f"{type(error).__name__}: {error}"
    return {
        "servers": len(servers),
        "type": type(table).__name__,
        "shard_shapes": [list(v.shape) for v in getattr(table, "variables", [])],
        "center_rows_moved": [float(rows[1, 0]), float(rows[CLASSES - 1, 0]), float(np.abs(rows[2:-1]).max())],
        "fit_error": fit_error,
    }


def _run_tensorflow(x, y):
    result = _mirrored(x, y)
    result["keras_distribution"] = _keras_distribution_on_tf()
    result["parameter_servers"] = _parameter_servers(x, y)
    return result


def main():
    x, y = _data()
    if BACKEND == "jax":
        result = _run_jax(x, y)
    elif BACKEND == "tensorflow":
        result = _run_tensorflow(x, y)
    else:
        raise SystemExit(f"no sharded run for backend {BACKEND}")
    print(json.dumps({"backend": BACKEND, **result}))


if __name__ == "__main__":
    sys.exit(main())
