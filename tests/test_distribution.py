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


def _run():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    if BACKEND == "jax":
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()
    done = subprocess.run([sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=300)
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
    # Gradient-level steps (MGDA, PCGrad): per-term gradients of the global batch,
    # all-reduced before aggregation on TensorFlow; equal to one device.
    assert {k.split("/")[0] for k in result["gradient_diffs"]} == {"mgda", "pcgrad"}
    for key, diff in result["gradient_diffs"].items():
        assert diff <= TOLERANCE, (key, diff)
    assert result["gradient_moved"] > 1e-3  # they trained otherwise than the loss-level run


@pytest.mark.skipif(BACKEND != "torch", reason="documents the PyTorch backend")
def test_torch_has_no_keras_distribution():
    """docs/distributed.md says Keras 3.15 has no keras.distribution on torch: keep it true."""
    import keras

    with pytest.raises(AttributeError):
        keras.distribution.list_devices()
