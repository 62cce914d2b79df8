"""Multi-device training equals the single-device run on the same global batches.

Each backend's check runs in a subprocess (tests/distribution_run.py), because
the virtual devices must be configured before the backend initializes:
4 host-platform devices for JAX (``keras.distribution.DataParallel``), 4 logical
CPU devices for TensorFlow (``tf.distribute.MirroredStrategy``). See
docs/distributed.md.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import BACKEND

SCRIPT = Path(__file__).with_name("distribution_run.py")
TOLERANCE = 1e-5


def _run(*args, timeout=300):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    if BACKEND == "jax":
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()
    done = subprocess.run([sys.executable, str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(BACKEND not in ("jax", "tensorflow"), reason="keras.distribution / tf.distribute only")
def test_four_replicas_equal_one_device():
    result = _run()
    assert result["backend"] == BACKEND and result["replicas"] == 4
    # Centers, model weights, learned loss weights, margin class weights, step counter.
    for key, diff in result["diffs"].items():
        assert diff <= TOLERANCE, (key, diff, result)
    expected = {"centers", "log_var/softmax", "log_var/center", "step"}
    assert expected <= set(result["diffs"])
    for name in result["terms"]:
        if name not in ("softmax", "center"):  # a margin term: its class weights were compared
            assert any(key.startswith(f"{name}/") for key in result["diffs"]), name
    # The comparison is not vacuous: training moved the centers and the learned weights.
    assert result["centers_moved"] > 0.05 and result["log_var_moved"] > 0.01
    assert result["loss_distributed"] == pytest.approx(result["loss_single"], rel=1e-5)
    assert result["center_loss_distributed"] == pytest.approx(result["center_loss_single"], rel=1e-5)
    # A bad label in one replica's shard is reported with global counts and moves nothing.
    assert result["bad_message"] is not None and "1 row(s) with an invalid label" in result["bad_message"]
    assert "in a batch of 32" in result["bad_message"] and "[0, 12]" in result["bad_message"]
    assert result["bad_moved"] == 0.0
    # Gradient-level steps (MGDA, PCGrad, MGDA with gramian_blocks=True): per-term gradients
    # of the global batch, all-reduced before aggregation on TensorFlow; equal to one device.
    assert {k.split("/")[0] for k in result["gradient_diffs"]} == {"mgda", "pcgrad", "mgda_blocks"}
    for key, diff in result["gradient_diffs"].items():
        assert diff <= TOLERANCE, (key, diff)
    assert result["gradient_moved"] > 1e-3  # they trained otherwise than the loss-level run


@pytest.mark.skipif(BACKEND not in ("jax", "tensorflow"), reason="keras.distribution / tf.distribute only")
def test_pair_losses_form_their_tuples_over_the_global_batch():
    """Contrastive (AvgNonZeroReducer), triplet (BatchHardMiner), multi-similarity, SupCon and a memory.

    On 2 and 4 replicas every term's loss, the tuple statistics of the
    triplet term and the weights after 4 SGD steps equal one device's; rows
    of weight 0 sit in every replica's share.
    """
    result = _run("pairs", timeout=600)  # ~50 s of CPU; minutes of wall time on a loaded machine
    assert result["backend"] == BACKEND
    terms = {"contrastive", "triplet", "multi_similarity", "supcon", "memory"}
    assert set(result["terms"]) == terms
    # Not vacuous: the replicas' shares alone give other losses, and training moved the weights.
    for name, gap in result["shard_gap"].items():
        assert gap > 1e-3, (name, result["shard_gap"])
    assert result["moved"] > 1e-2
    for replicas in ("2", "4"):
        run = result[replicas]
        assert {f"loss/{n}" for n in terms} | {"tuples/hardest_negative", "tuples/active_fraction"} <= set(run["loss"])
        for key, diff in run["loss"].items():
            assert diff <= TOLERANCE, (replicas, key, diff)
        assert run["weights"] <= TOLERANCE and run["memory"] <= TOLERANCE, (replicas, run)


@pytest.mark.skipif(BACKEND != "torch", reason="documents the PyTorch backend")
def test_torch_has_no_keras_distribution():
    """docs/distributed.md says Keras 3.15 has no keras.distribution on torch: keep it true."""
    import keras

    with pytest.raises(AttributeError):
        keras.distribution.list_devices()
