"""Running the scripts in examples/ from the tests (tests/test_examples*.py). Not a test module."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import keras

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TIMEOUT_S = 300  # generous: a --fast run takes ~10-25 s, most of it imports and compiling


def run_example(script, *args, tmp_path=None):
    """Run ``examples/<script>`` in a fresh interpreter on this session's backend; the CompletedProcess."""
    env = dict(os.environ, KERAS_BACKEND=keras.backend.backend())
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # One intra-op thread per example: the suite may run under pytest-xdist on
    # a small machine, and oversubscribed BLAS/OpenMP threads slow tiny models
    # down by orders of magnitude (PyTorch above all).
    env.setdefault("OMP_NUM_THREADS", "1")
    return subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        cwd=tmp_path or EXAMPLES,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )


def check_ok(proc):
    """The run's stdout; fails with its exit code and output tails unless it exited 0."""
    assert proc.returncode == 0, (
        f"exit code {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}"
    )
    return proc.stdout


def load_example(script):
    """Import ``examples/<script>`` into this interpreter (for examples that configure no device)."""
    name = Path(script).stem
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
