"""The same inputs and weights give the same results on TensorFlow, JAX and PyTorch (to 1e-5).

Every term (loss, gradients with respect to its inputs and its own trainable
variables, the state its training calls update) and every weighting strategy
(totals, weights, updates and state over a few steps): see
``cross_backend_run.py`` for what is computed and for what seeded draws
decide, which is checked per backend instead. Runs once per suite (in the
torch pass of ``make test``): it starts one process per backend itself, all
three at once.
"""

import inspect
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import cross_backend_run as run
import lossweave as lw
from conftest import BACKEND

SCRIPT = Path(__file__).with_name("cross_backend_run.py")
BACKENDS = ["tensorflow", "jax", "torch"]
TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}

pytestmark = pytest.mark.skipif(BACKEND != "torch", reason="starts all three backends itself; run once per suite")


def _compute(folder):
    """Run the script under the three backends at once; the error of a failing one, or None."""
    started = {}
    for backend in BACKENDS:
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
        started[backend] = subprocess.Popen(
            [sys.executable, str(SCRIPT), str(folder / f"{backend}.npz")],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
    errors = []
    for backend, process in started.items():
        _, stderr = process.communicate(timeout=900)
        if process.returncode:
            errors.append(f"{backend}:\n{stderr[-3000:]}")
    return "\n".join(errors) or None


def _shared_folder(tmp_path_factory):
    """``(folder, computes)``: one folder per run, the same for every pytest-xdist worker.

    The first worker to create it runs the three backends; the others wait for
    its ``done`` file, so the subprocesses start once per run however the tests
    are spread over the workers.
    """
    run_id = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if run_id is None:
        return tmp_path_factory.mktemp("cross_backend"), True
    folder = tmp_path_factory.getbasetemp().parent / f"cross_backend_{run_id}"
    try:
        folder.mkdir()
    except FileExistsError:
        return folder, False
    return folder, True


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    folder, computes = _shared_folder(tmp_path_factory)
    done = folder / "done"
    if computes:
        (folder / "done.part").write_text(_compute(folder) or "")
        (folder / "done.part").rename(done)  # whole, for the waiting workers
    else:
        deadline = time.monotonic() + 900
        while not done.exists():
            assert time.monotonic() < deadline, "the worker running the backends never finished"
            time.sleep(1)
    error = done.read_text()
    assert not error, error
    loaded = {b: dict(np.load(folder / f"{b}.npz")) for b in BACKENDS}
    for backend, values in loaded.items():
        assert str(values.pop("backend")) == backend
    return loaded


# Public classes without a case of their own, and why.
NOT_RUN = {
    "Term": "abstract (no call)",
    "PairTerm": "abstract (no pair_loss)",
    "GradientWeighting": "abstract (no aggregate)",
    "MarginLogits": "a layer of the margin terms' inference logits, not a term",
    "Clip": "a constraint (Convex-trainable's alpha)",
}


@pytest.mark.parametrize("module", [lw.terms, lw.weighting], ids=["terms", "weighting"])
def test_every_public_term_and_strategy_has_a_case(module):
    names = {case.split("-")[0] for case in run.CASES}
    classes = [n for n in module.__all__ if inspect.isclass(getattr(module, n))]
    assert sorted(set(classes) - names - set(NOT_RUN)) == []


def _keys(values, case):
    return sorted(k for k in values if k.startswith(f"{case}|"))


def test_every_case_ran_on_every_backend(results):
    reference = results["tensorflow"]
    cases = {k.split("|")[0] for k in reference if not k.startswith(("drawn|", "fit|"))}
    assert cases == set(run.CASES)
    for backend in ("jax", "torch"):
        assert sorted(results[backend]) == sorted(reference), backend


@pytest.mark.parametrize("case", run.CASES)
def test_backends_agree(results, case):
    reference = results["tensorflow"]
    keys = _keys(reference, case)
    assert keys, f"{case}: nothing was computed"
    for key in keys:
        assert np.all(np.isfinite(reference[key])), key
        for backend in ("jax", "torch"):
            np.testing.assert_allclose(results[backend][key], reference[key], err_msg=f"{backend}: {key}", **TOLERANCE)


def test_rlw_training_weights_are_a_softmax_and_weight_the_total(results):
    """RLW's draws differ by backend; on each, w > 0, sum w = 1 and total = w . L."""
    for backend, values in results.items():
        for step, losses in enumerate(run.LOSS_STEPS):
            weights = values[f"drawn|RLW|weights{step}"]
            assert np.all(weights > 0) and abs(weights.sum() - 1.0) < 1e-5, backend
            assert abs(values[f"drawn|RLW|total{step}"] - weights @ losses) < 1e-5, backend
        assert np.ptp(values["drawn|RLW|weights0"]) > 1e-3  # drawn, not the uniform evaluation weights


def test_graddrop_keeps_one_sign_of_every_element(results):
    """GradDrop (Chen et al. 2020, Eq. 2-3) on mixed signs: each element of the update is one of
    its two choices, ``sum_k (l_k + (1 - l_k) [sign g_k = s]) g_k`` for s = +1 or -1 (the backend's
    draw picks which); elements whose gradients agree have one choice."""
    leak = np.array([0.2, 0.0, 0.5], "float32")[:, None]
    for step in range(3):
        jacobian = np.concatenate(
            [r.reshape(3, -1) for r in run.gradient_rows(3, "mixed", step)], axis=1
        ).astype("float64")
        keep = lambda s: leak + (1 - leak) * (np.sign(jacobian) == s)  # noqa: E731
        choices = np.stack([(keep(1) * jacobian).sum(0), (keep(-1) * jacobian).sum(0)])
        real = np.abs(choices[0] - choices[1]) > 1e-3  # elements whose gradients disagree in sign
        assert real.sum() >= 4
        picks = []
        for backend, values in results.items():
            update = values[f"drawn|GradDrop-mixed|update{step}"]
            distance = np.abs(choices - update[None])
            assert np.all(distance.min(axis=0) < 1e-5), backend
            picks.append(distance.argmin(axis=0)[real])
    assert all(0 < p.sum() < p.size for p in picks)  # both signs are drawn


def test_fit_centers_agree(results):
    reference = results["tensorflow"]["fit|centers"]
    assert np.abs(reference).max() > 1e-2  # the fit really moved the centers
    for backend in ("jax", "torch"):
        np.testing.assert_allclose(results[backend]["fit|centers"], reference, err_msg=backend, **TOLERANCE)
