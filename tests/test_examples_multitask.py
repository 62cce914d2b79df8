"""Run the multi-output examples with ``--fast`` on the current backend.

``examples/siamese_three_heads.py`` (three heads, ``Fixed`` weights equal to
Keras's ``loss_weights``) and ``examples/two_heads_weighting.py`` (a convex
combination of two heads of different shapes: scheduled, trained and
uncertainty weighting). Each runs in a fresh interpreter with the same
``KERAS_BACKEND`` as this test session, so the suite run once per backend runs
them once per backend; the check that ``--weighting`` picks one variant runs
in this interpreter, in the JAX pass only.
"""

import re

import keras
import pytest

from conftest import one_backend
from example_runs import check_ok, load_example, run_example

BACKEND = keras.backend.backend()

pytestmark = pytest.mark.slow


def number(pattern, text):
    match = re.search(pattern, text)
    assert match, f"{pattern!r} not found in:\n{text}"
    return float(match.group(1))


def test_siamese_three_heads():
    out = check_ok(run_example("siamese_three_heads.py", "--fast"))
    assert f"backend={BACKEND}" in out
    # The Objective's total is Keras's loss_weights total on the same model and data.
    assert "equal within 1e-5: True" in out
    objective_loss = number(r"test loss: Objective ([0-9.]+)", out)
    keras_loss = number(r"Keras loss_weights ([0-9.]+)", out)
    assert abs(objective_loss - keras_loss) <= 1e-5
    # Every term and weight is logged; the per-head metrics are named by output.
    for key in ("loss/ctg_1", "loss/ctg_2", "loss/same", "weight/same",
                "ctg_out_1_accuracy", "ctg_out_2_accuracy", "bin_out_accuracy"):
        assert key in out
    assert "weight/same=0.50" in out
    # Accuracies from objective.model.predict, well above chance (0.1 and 0.5).
    assert number(r"ctg_out_1 ([0-9.]+),", out) > 0.5
    assert number(r"ctg_out_2 ([0-9.]+) \(chance", out) > 0.5
    assert number(r"bin_out ([0-9.]+) \(chance", out) > 0.6


def test_two_heads_weighting_all():
    out = check_ok(run_example("two_heads_weighting.py", "--fast"))
    assert f"backend={BACKEND} weighting=all" in out

    # Scheduled: alpha follows the cosine from 0.9 down to 0.1 (epoch means).
    trajectory = re.search(r"\[scheduled\] weight/value per epoch \(epoch mean\): \[([^\]]+)\]", out)
    assert trajectory, out
    alphas = [float(v) for v in trajectory.group(1).split(",")]
    assert alphas == sorted(alphas, reverse=True) and alphas[0] > 0.8 and alphas[-1] < 0.2
    assert number(r"\[scheduled\] test \(predict\):.*parity accuracy ([0-9.]+)", out) > 0.7

    # Trained convex alpha: collapses to one end of [0, 1].
    alpha = number(r"\[trained\] final alpha = ([0-9.]+)", out)
    assert alpha in (0.0, 1.0)
    assert "collapsed: True" in out
    # It favours the smaller loss (the regression, here).
    favoured = re.search(r"all the weight on '(\w+)', the smaller loss: '(\w+)'", out)
    assert favoured and favoured.group(1) == favoured.group(2), out

    # Uncertainty: both learned weights stay positive; both heads learn.
    assert "no collapse (both weights > 0.05): True" in out
    assert number(r"\[uncertainty\] test \(predict\):.*parity accuracy ([0-9.]+)", out) > 0.7
    mae = number(r"\[uncertainty\] test \(predict\): value MAE ([0-9.]+)", out)
    baseline = number(r"\[uncertainty\] test \(predict\): value MAE [0-9.]+ \(predicting the mean: ([0-9.]+)\)", out)
    assert mae < baseline


@one_backend  # choosing the variant is argument parsing; every variant runs on every backend above
def test_two_heads_weighting_one_variant(capsys):
    # In this interpreter: a fresh one would spend most of the test importing the backends again.
    assert load_example("two_heads_weighting.py").main(["--fast", "--weighting", "trained"]) == 0
    out = capsys.readouterr().out
    assert "[trained]" in out and "[scheduled]" not in out and "[uncertainty]" not in out
    assert "collapsed: True" in out
