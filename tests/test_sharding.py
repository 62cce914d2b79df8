"""Class tables sharded by class over devices (``lossweave.sharding``; docs/scale.md).

The layout entries are checked in-process; the multi-device runs are in a
subprocess (tests/sharding_run.py), because the devices must be set up before
the backend initializes: a (2 data x 2 model) ``ModelParallel`` mesh of 4
host-platform devices on JAX, 4 logical CPU devices on TensorFlow.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import lossweave as lw
from conftest import BACKEND, one_backend

SCRIPT = Path(__file__).with_name("sharding_run.py")
TOLERANCE = 1e-5
CLASSES, DIM = 40, 4  # as in sharding_run.py
TABLES = ("arcface/class_weights", "sampled/class_weights", "center/centers")


def _mesh(shape=(1, 2)):
    return keras.distribution.DeviceMesh(shape, ["data", "model"], [f"cpu:{i}" for i in range(int(np.prod(shape)))])


def _terms():
    return {
        "softmax": lw.terms.SoftmaxCrossEntropy(on="logits"),
        "arcface": lw.terms.SubCenterArcFace(10, sub_centers=3),
        "center": lw.terms.CenterLoss(10),
        "proxy": lw.terms.ProxyAnchorLoss(10),
    }


# --------------------------------------------------------------- layout entries
@one_backend
def test_table_layouts_name_every_class_table_and_only_those():
    layouts = lw.sharding.table_layouts(_terms(), model_axis="shards")
    assert layouts == {
        "(?:.*/)?arcface/class_weights": ("shards", None),
        "(?:.*/)?center/centers": ("shards", None),
        "(?:.*/)?proxy/proxies": ("shards", None),
    }
    # A list of terms, or one term, is named by the terms' own names.
    term = lw.terms.CosFace(4, name="cos")
    assert lw.sharding.table_layouts([term]) == lw.sharding.table_layouts(term) == {
        "(?:.*/)?cos/class_weights": ("model", None)
    }
    assert lw.sharding.table_layouts({"ce": lw.terms.SoftmaxCrossEntropy()}) == {}


def test_patterns_match_the_paths_of_the_built_objective_only():
    """Found before building, the patterns fullmatch (as LayoutMap does) the tables' real paths."""
    inputs = keras.Input((3,))
    emb = keras.layers.Dense(4, name="arcface_embedding")(inputs)  # a look-alike name that must not match
    model = keras.Model(inputs, {"embedding": emb, "logits": keras.layers.Dense(10)(emb)})
    terms = _terms()
    layouts = lw.sharding.table_layouts(terms)
    objective = lw.Objective(model, terms)
    objective.build((None, 3))
    matched = {v.path for v in objective.variables for p in layouts if re.fullmatch(p, v.path)}
    assert matched == {
        objective.terms["arcface"].class_weights.path,
        objective.terms["center"].centers.path,
        objective.terms["proxy"].proxies.path,
    }
    # Built, an objective gives the exact paths (e.g. for a map to load it under).
    built = lw.sharding.table_layouts(objective)
    assert sorted(built) == sorted(re.escape(p) for p in matched)


@one_backend
def test_fill_layout_map_writes_the_entries_checked_against_the_mesh():
    layout_map = keras.distribution.LayoutMap(_mesh((1, 2)))
    layout_map["dense.*kernel"] = (None, "model")  # the user's own entries stay
    assert lw.sharding.fill_layout_map(layout_map, _terms()) is layout_map
    assert layout_map["objective/center/centers"].axes == ("model", None)
    assert layout_map["objective/arcface/class_weights"].axes == ("model", None)
    assert layout_map["objective/proxy/proxies"].axes == ("model", None)
    assert layout_map["dense_3/kernel"].axes == (None, "model")
    with pytest.raises(ValueError, match="has an entry .* already"):
        lw.sharding.fill_layout_map(layout_map, _terms())


@one_backend
@pytest.mark.parametrize(
    "terms, kwargs, message",
    [
        ({"center": lw.terms.CenterLoss(9)}, {}, r"'center' \(centers\) has 9 rows, which the 2 devices"),
        ({"a": lw.terms.SubCenterArcFace(3, sub_centers=3)}, {}, r"has 9 rows"),  # rows = classes x K
        ({"center": lw.terms.CenterLoss(10)}, {"model_axis": "tensor"}, r"mesh has axes \['data', 'model'\]"),
        ({"center": lw.terms.CenterLoss(10)}, {"model_axis": ("data", "model")}, "name of one mesh axis"),
    ],
)
def test_fill_layout_map_rejects_what_cannot_be_sharded(terms, kwargs, message):
    with pytest.raises(ValueError, match=message):
        lw.sharding.fill_layout_map(keras.distribution.LayoutMap(_mesh((1, 2))), terms, **kwargs)


@one_backend
def test_bad_arguments_say_what_was_expected():
    with pytest.raises(TypeError, match="expected a keras.distribution.LayoutMap"):
        lw.sharding.fill_layout_map({}, _terms())
    with pytest.raises(TypeError, match="an Objective, a dict of name -> term"):
        lw.sharding.table_layouts("center")


@one_backend
def test_a_term_with_variables_before_the_distribution_is_refused():
    """A sampling term owns its seed from its constructor: made before the distribution, it stays on one device."""
    terms = {"arcface": lw.terms.ArcFace(10, sample_rate=0.5, seed=1)}
    with pytest.raises(ValueError, match=r"created variables .* before any keras.distribution was set"):
        lw.sharding.fill_layout_map(keras.distribution.LayoutMap(_mesh((1, 2))), terms)


# ------------------------------------------------------------ multi-device runs
def _run():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    if BACKEND == "jax":
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()
    done = subprocess.run([sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def run():
    if BACKEND not in ("jax", "tensorflow"):
        pytest.skip("keras.distribution (JAX) and tf.distribute (TensorFlow) only")
    return _run()


def _assert_equal_to_one_device(result, loss_key):
    for key, diff in result["diffs"].items():  # tables, model weights, the sampling seed state
        assert diff <= TOLERANCE, (key, diff)
    assert set(TABLES) | {"sampled/seed", "model/0"} <= set(result["diffs"])
    for key in TABLES:  # training moved every table: the comparison is not vacuous
        assert result["moved"][key] > 0.05, (key, result["moved"])
    assert result[loss_key] == pytest.approx(result["loss_single"], rel=1e-5)


@pytest.mark.skipif(BACKEND != "jax", reason="keras.distribution.ModelParallel: JAX")
def test_mesh_run_equals_one_device(run):
    """ArcFace (full and sampled with the same seed) + CenterLoss on a 2 x 2 mesh: one device's result."""
    assert run["devices"] == 4
    _assert_equal_to_one_device(run, "loss_sharded")


@pytest.mark.skipif(BACKEND != "jax", reason="keras.distribution.ModelParallel: JAX")
def test_each_device_holds_half_of_each_table(run):
    for key in TABLES:
        assert run["table_shapes"][key] == [CLASSES, DIM]
        assert run["shards"][key] == [[CLASSES // 2, DIM]], key
        assert run["shards"][f"{key}:devices"] == 4
    for key in ("arcface/class_weights", "sampled/class_weights"):  # the optimizer's slot follows its table
        assert run["shards"][f"{key}:momentum"] == [[CLASSES // 2, DIM]], key


@pytest.mark.skipif(BACKEND != "jax", reason="keras.distribution.ModelParallel: JAX")
def test_compiled_step_gathers_no_table(run):
    """The HLO of the train step: no table (or table shard) is gathered; the center update moves O(batch x dim).

    What moves an array with a table's row count: the full term's class-weight
    gradient, all-reduced over the data axis (each data shard's batch adds to
    every row of its model shard: data parallelism over a table replicated on
    that axis), and the sampled term's ``(classes,)`` mask of positives.
    """
    collectives = run["table_collectives"]
    assert not [c for c in collectives if c["op"] == "all-gather"], collectives
    tables = [c for c in collectives if len(c["shape"]) == 2]
    # One (the full term's): the sampled term's gradient is all-reduced as its (sampled, dim) rows, and
    # the center update (a scatter of replicated rows) and the row reads (gathers) add none.
    assert len(tables) == 1, collectives
    assert tables[0]["op"] == "all-reduce" and tables[0]["shape"] == [CLASSES // 2, DIM], tables
    assert tables[0]["source"].endswith("dot_general"), tables  # the matmul's gradient
    for c in collectives:
        if len(c["shape"]) == 1:  # the sampled term's mask of positives: O(classes), not O(classes x dim)
            assert c["shape"] == [CLASSES] and "scatter" in c["source"], c


@pytest.mark.skipif(BACKEND != "jax", reason="keras.distribution.ModelParallel: JAX")
def test_sharded_save_loads_the_whole_table(run):
    for key, diff in run["restored_vs_sharded"].items():
        assert diff == 0.0, key
    for key, diff in run["restored_vs_single"].items():
        assert diff <= TOLERANCE, key
    for key in TABLES:
        assert run["restored_shapes"][key] == [CLASSES, DIM]
        assert run["restored_devices"][key] == 1  # loaded without a distribution: one whole array
    # Loaded under the mesh with a map filled from the loaded objective: sharded again, same values.
    for key in TABLES:
        assert run["resharded_shards"][key] == [[CLASSES // 2, DIM]], key
    for key, diff in run["resharded_vs_sharded"].items():
        assert diff == 0.0, key


@pytest.mark.skipif(BACKEND != "tensorflow", reason="tf.distribute")
def test_tensorflow_replicates_the_table_and_does_not_shard_it_under_fit(run):
    # MirroredStrategy: every replica holds the whole table; the sampled term equals one device.
    assert run["replicas"] == 4
    _assert_equal_to_one_device(run, "loss_mirrored")
    for key in TABLES:
        assert run["copies"][key] == [[CLASSES, DIM]] * 4, key
    # keras.distribution on TensorFlow places nothing: the layouts are ignored.
    plain = run["keras_distribution"]
    assert plain["shape"] == [CLASSES, DIM] and plain["device"].endswith("CPU:0"), plain
    # A ParameterServerStrategy partitioner does split the table (and the row update
    # reaches the shards), but Keras 3's fit cannot train under it.
    servers = run["parameter_servers"]
    assert servers["type"] == "ShardedVariable"
    assert servers["shard_shapes"] == [[CLASSES // 2, DIM]] * 2
    assert servers["center_rows_moved"] == [0.5, 0.5, 0.0]  # alpha / (1 + 1) * 2 on the two labelled rows
    assert servers["fit_error"] is not None and "ClusterCoordinator" in servers["fit_error"]
