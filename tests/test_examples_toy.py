"""``examples/toy_two_objectives.py``: the CAGrad paper's toy, through ``Objective.fit``.

The example is imported and run in this interpreter (it configures no device,
and a fresh one would spend most of the test importing the backends again).

* every backend: the toy's two objectives in ``keras.ops`` equal the paper's
  formulas written in NumPy, and a short ``fit`` is Adam (Kingma & Ba, ICLR
  2015, Algorithm 1 in the form of its Sec. 2 with ``epsilon-hat``, as Keras
  implements it) on the mean of the two gradients and on MGDA's two-term
  min-norm direction (Sener & Koltun, NeurIPS 2018, Algorithm 1), simulated
  here in float64 with central-difference gradients;
* the JAX pass only: ``--fast`` shows what Fig. 1 of the CAGrad paper shows at
  its horizon. Not on the other backends for time alone: a step of this tiny
  model costs ~0.1 ms on JAX, ~0.5 ms on TensorFlow and ~10 ms on PyTorch
  (Keras's PyTorch trainer runs one step per Python call), and the fast mode
  takes 10,000 steps from each of the three starts for each of its three methods.
"""

import json

import numpy as np
import pytest

from conftest import BACKEND, one_backend
from example_runs import load_example

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def toy():
    return load_example("toy_two_objectives.py")


# ------------------------------------------------------------------ references
def numpy_objectives(x1, x2, scale=1.0):
    """f1, f2 of the CAGrad toy (Liu et al. 2021, the authors' toy.py), float64, term by term."""
    lower = 5e-6
    c1 = np.maximum(np.tanh(0.5 * x2), 0.0)
    c2 = np.maximum(np.tanh(-0.5 * x2), 0.0)
    log1 = np.log(np.maximum(np.abs(0.5 * (-x1 - 7) - np.tanh(-x2)), lower)) + 6
    log2 = np.log(np.maximum(np.abs(0.5 * (-x1 + 3) + np.tanh(-x2) + 2), lower)) + 6
    quad1 = ((-x1 + 7) ** 2 + 0.1 * (-x2 - 8) ** 2) / 10 - 20
    quad2 = ((-x1 - 7) ** 2 + 0.1 * (-x2 - 8) ** 2) / 10 - 20
    return scale * (c1 * log1 + c2 * quad1), c1 * log2 + c2 * quad2


def numpy_gradients(x, scale=1.0, h=1e-6):
    """(2 objectives, 2 coordinates) central differences."""
    rows = []
    for k in range(2):
        row = []
        for i in range(2):
            step = np.zeros(2)
            step[i] = h
            plus, minus = numpy_objectives(*(x + step), scale)[k], numpy_objectives(*(x - step), scale)[k]
            row.append((plus - minus) / (2 * h))
        rows.append(row)
    return np.array(rows)


def mean_direction(g):
    return g.mean(axis=0)


def mgda_direction(g):
    """Sener & Koltun 2018, Algorithm 1: min over gamma of ||gamma g1 + (1 - gamma) g2||^2."""
    g1, g2 = g
    if g1 @ g2 >= g1 @ g1:
        gamma = 1.0
    elif g1 @ g2 >= g2 @ g2:
        gamma = 0.0
    else:
        gamma = (g2 - g1) @ g2 / ((g1 - g2) @ (g1 - g2))
    return gamma * g1 + (1 - gamma) * g2


def numpy_adam(start, direction, steps, lr=1e-3, beta1=0.9, beta2=0.999, epsilon=1e-7):
    """Kingma & Ba 2015, Algorithm 1 with the bias corrections folded into the step (Sec. 2)."""
    x, m, v = np.asarray(start, "float64"), np.zeros(2), np.zeros(2)
    points = []
    for t in range(1, steps + 1):
        g = direction(numpy_gradients(x))
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        x = x - lr * np.sqrt(1 - beta2**t) / (1 - beta1**t) * m / (np.sqrt(v) + epsilon)
        points.append(x.copy())
    return np.array(points)


# ----------------------------------------------------------------- every backend
def test_objectives_are_the_papers(toy):
    rng = np.random.default_rng(0)
    points = np.concatenate([rng.uniform(-10, 10, (200, 2)), [[-8.5, 7.5], [-8.5, -5], [9, 9], [0, -8.3552]]])
    for scale in (1.0, 0.1):
        got = [np.asarray(toy.ops.convert_to_numpy(f)) for f in toy.toy_objectives(points[:, 0], points[:, 1], scale)]
        want = numpy_objectives(points[:, 0], points[:, 1], scale)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-5)
    # The front's mean-optimal point is (0, -8.3552), both objectives -15.09 there.
    np.testing.assert_allclose(numpy_objectives(0.0, -8.3552), (-15.0912, -15.0912), atol=1e-3)
    assert toy.best_on_front(1.0) == (0.0, -8.3552)


@pytest.mark.parametrize("name, direction", [("Mean", mean_direction), ("MGDA", mgda_direction)])
def test_fit_is_adam_on_the_strategys_direction(toy, name, direction):
    method = next(m for m in toy.METHODS if m.class_name == name)
    start, steps, every = (-8.5, -5.0), 120, 40
    (run,) = toy.run_method(method, [start], steps, every, 1.0)
    reference = numpy_adam(start, direction, steps)[every - 1 :: every]
    got = np.asarray(run["trajectory"])
    assert got.shape == (steps // every + 1, 2)
    np.testing.assert_array_equal(got[0], start)
    # Moved ~0.1 in each coordinate; float32 steps against the float64 simulation agree
    # to ~5e-6, while the Mean and MGDA runs from this start differ by 1.5e-3.
    assert np.abs(reference[-1] - start).min() > 0.05
    np.testing.assert_allclose(got[1:], reference, atol=3e-5)


def test_a_second_start_begins_from_a_fresh_state(toy):
    """Adam's moments and the step counter are restored: the same start twice gives the same run."""
    method = next(m for m in toy.METHODS if m.class_name == "Mean")
    first, second = toy.run_method(method, [(9.0, 9.0), (9.0, 9.0)], 60, 30, 1.0)
    np.testing.assert_array_equal(first["trajectory"], second["trajectory"])


@one_backend
def test_pareto_set_is_where_the_gradients_are_opposite(toy):
    """x2*(x1): the two gradients anti-parallel (Pareto-stationary), 0.05 above it not."""
    x1 = np.linspace(-6.9, 6.9, 9)
    x2 = toy.pareto_x2(x1)
    assert abs(x2[4] - (-8.3551)) < 1e-4 and np.all(x2 <= x2[4]) and abs(toy.pareto_x2(7.0) - (-8.4345)) < 1e-4

    def sine_and_cosine(point):
        g1, g2 = numpy_gradients(np.asarray(point))
        norms = np.linalg.norm(g1) * np.linalg.norm(g2)
        return abs(g1[0] * g2[1] - g1[1] * g2[0]) / norms, g1 @ g2 / norms

    for a, b in zip(x1, x2):
        sine, cosine = sine_and_cosine((a, b))
        assert sine < 1e-6 and cosine < -0.99, (a, b)
        assert sine_and_cosine((a, b + 0.05))[0] > 1e-4, (a, b)
    assert toy.pareto_gap((0.0, -8.284)) == pytest.approx(0.0711, abs=1e-3) and toy.pareto_gap((7.5, -8.4)) is None


@one_backend
def test_on_front(toy):
    assert toy.on_front((0.0, -8.3552)) and toy.on_front((-6.99, -8.434)) and toy.on_front((7.05, -8.40))
    assert not toy.on_front((0.0, -8.2)) and not toy.on_front((7.2, -8.4)) and not toy.on_front((-5.0, 3.0))


# ------------------------------------------------------------------- JAX only
@pytest.mark.skipif(BACKEND != "jax", reason="90,000 steps: ~0.1 ms a step on JAX, 5-100x more elsewhere")
def test_fast_mode_shows_the_papers_figure(toy, tmp_path, capsys):
    png, results_json = tmp_path / "toy.png", tmp_path / "toy.json"
    assert toy.main(["--fast", "--out", str(png), "--json", str(results_json)]) == 0
    out = capsys.readouterr().out
    assert "| method | start | end (x1, x2) |" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    saved = json.loads(results_json.read_text())
    assert saved["backend"] == "jax" and saved["steps"] == toy.FAST_STEPS
    runs = {(label, tuple(run["start"])): run for label, entries in saved["results"].items()
            if isinstance(entries, list) for run in entries}
    top_left, bottom_left, top_right = toy.STARTS

    # Mean (Adam on the average loss): stuck in the log valleys from the two top starts.
    for start in (top_left, top_right):
        end = runs[("Mean", start)]["end"]
        assert not runs[("Mean", start)]["reached"] and end[1] > 2.5, end
    # From the bottom start it reaches the front and slides to its mean-optimal middle.
    mean_bottom = runs[("Mean", bottom_left)]
    assert mean_bottom["reached"] and mean_bottom["end"][0] > -1.5, mean_bottom["end"]

    # MGDA stops at the first Pareto-stationary point it meets: from the bottom start the
    # front's end x1 = -7, where x1 no longer moves (over the last half of the run: it
    # never slides towards the middle, as Mean does).
    mgda_bottom = runs[("MGDA", bottom_left)]
    trajectory = np.asarray(mgda_bottom["trajectory"])
    assert mgda_bottom["reached"] and mgda_bottom["end"][0] < -6.5, mgda_bottom["end"]
    assert np.abs(trajectory[len(trajectory) // 2 :, 0] - trajectory[-1, 0]).max() < 0.01
    # From the top starts it leaves the valleys where Mean stays, along its own side
    # (it reaches the front there at ~25,000 steps, at x1 = -3.3 and 3.3).
    for start, side in ((top_left, -1), (top_right, 1)):
        end = runs[("MGDA", start)]["end"]
        assert end[1] < 0.5 and side * end[0] > 6.0, end

    # CAGrad (c = 0.5) descends the valleys that hold Mean (it reaches the front from
    # there at ~50,000 steps) and, from the bottom, moves along the front to the middle.
    for start in (top_left, top_right):
        assert runs[("CAGrad", start)]["end"][1] < runs[("Mean", start)]["end"][1] - 1.0, start
    cagrad_bottom = runs[("CAGrad", bottom_left)]
    assert cagrad_bottom["reached"] and cagrad_bottom["end"][0] > -3.0, cagrad_bottom["end"]
