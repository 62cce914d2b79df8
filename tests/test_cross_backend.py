"""The same inputs give the same loss and centers on TensorFlow, JAX and PyTorch.

Runs once per suite (under the torch pass of `make test`): it starts one
process per backend itself.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import BACKEND

SCRIPT = Path(__file__).with_name("cross_backend_run.py")
BACKENDS = ["tensorflow", "jax", "torch"]


def _run(backend):
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(BACKEND != "torch", reason="starts all three backends itself; run once per suite")
def test_ops_term_and_fit_agree_across_backends():
    results = {b: _run(b) for b in BACKENDS}
    ref = results["tensorflow"]
    for backend in ("jax", "torch"):
        got = results[backend]
        assert got["backend"] == backend
        assert abs(got["ops_loss"] - ref["ops_loss"]) < 1e-5
        assert abs(got["term_loss"] - ref["term_loss"]) < 1e-5
        np.testing.assert_allclose(got["ops_centers"], ref["ops_centers"], atol=1e-5)
        np.testing.assert_allclose(got["term_centers"], ref["term_centers"], atol=1e-5)
        np.testing.assert_allclose(got["fit_centers"], ref["fit_centers"], atol=1e-3)
    assert np.abs(np.array(ref["fit_centers"])).max() > 1e-2  # the fit really moved the centers
