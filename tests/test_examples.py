"""Run every script in examples/ with ``--fast`` on the current backend.

Each example runs in a fresh interpreter (``sys.executable``) with the same
``KERAS_BACKEND`` as this test session, so the suite run once per backend runs
the examples once per backend. Examples tied to one backend are skipped on the
others (and one of them is checked to refuse the wrong backend clearly).
"""

import ast
import json
import math
import re

import keras
import pytest
from conftest import one_backend
from example_runs import EXAMPLES, check_ok, run_example

BACKEND = keras.backend.backend()
SCRIPTS = sorted(p.name for p in EXAMPLES.glob("*.py"))
BACKEND_ONLY = {"custom_loop_tensorflow.py": "tensorflow", "custom_loop_jax.py": "jax"}

pytestmark = pytest.mark.slow


def require_backend(script):
    needed = BACKEND_ONLY.get(script)
    if needed is not None and needed != BACKEND:
        pytest.skip(f"{script} runs on the {needed} backend only (this run: {BACKEND})")


def accuracy(stdout):
    match = re.search(r"test accuracy: ([0-9.]+)", stdout)
    assert match, stdout
    return float(match.group(1))


@pytest.mark.parametrize("script", SCRIPTS)
def test_example_has_docstring_and_fast_flag(script):
    source = (EXAMPLES / script).read_text()
    docstring = ast.get_docstring(ast.parse(source))
    assert docstring and "KERAS_BACKEND=" in docstring, f"{script}: the docstring must say how to run it"
    assert '"--fast"' in source and "set_random_seed" in source


@pytest.mark.parametrize("labels", ["sparse", "one-hot"])
def test_center_loss_fit(labels, tmp_path):
    args = ["--fast", "--out", str(tmp_path)] + (["--one-hot"] if labels == "one-hot" else [])
    out = check_ok(run_example("center_loss_fit.py", *args, tmp_path=tmp_path))
    assert f"labels={labels}" in out
    assert accuracy(out) > 0.5  # 10 classes: chance is 0.1
    assert "reloaded centers equal: True" in out
    assert "reloaded predictions equal: True" in out
    assert (tmp_path / "center_loss_digits.keras").is_file()


def test_custom_loop_tensorflow():
    require_backend("custom_loop_tensorflow.py")
    # Train with the scatter_nd_add form; the script checks it against assign.
    out = check_ok(run_example("custom_loop_tensorflow.py", "--fast", "--update", "scatter"))
    assert accuracy(out) > 0.5
    assert "assign and scatter_nd_add updates agree: True" in out


def test_custom_loop_jax():
    require_backend("custom_loop_jax.py")
    out = check_ok(run_example("custom_loop_jax.py", "--fast"))
    assert accuracy(out) > 0.5
    assert "model.predict after writing the weights back matches: True" in out


def test_random_check():
    out = check_ok(run_example("random_check.py", "--fast"))
    assert f"backend={BACKEND}" in out
    assert "op, layer and TF1 reference agree: True" in out
    assert "CenterLoss layer agree on all 2 steps: True" in out


def test_backend_specific_example_refuses_other_backends():
    script = "custom_loop_jax.py" if BACKEND == "tensorflow" else "custom_loop_tensorflow.py"
    needed = BACKEND_ONLY[script]
    proc = run_example(script, "--fast")
    assert proc.returncode != 0
    assert f"needs KERAS_BACKEND={needed}" in proc.stderr


def test_margin_family():
    out = check_ok(run_example("margin_family.py", "--fast"))
    assert f"backend={BACKEND}" in out
    rows = {}
    for line in out.splitlines():
        name = line.split("  ")[0].strip()
        if name in ("softmax", "softmax+center", "NormFace", "CosFace", "ArcFace", "SphereFace"):
            numbers = [float(v) for v in re.findall(r"(?<![\w=.])-?\d+\.\d+(?![\w.])", line)]
            rows[name] = numbers[-8:]  # train loss, test acc and six embedding figures
    assert sorted(rows) == sorted(["softmax", "softmax+center", "NormFace", "CosFace", "ArcFace", "SphereFace"])
    for name, numbers in rows.items():
        assert len(numbers) == 8 and all(v == v and abs(v) != float("inf") for v in numbers), (name, numbers)
    assert rows["softmax"][1] > 0.5  # test accuracy; 10 classes: chance is 0.1
    for name in ("NormFace", "CosFace", "ArcFace"):  # argmax of term.classifier's logits
        assert rows[name][1] > 0.5, (name, rows[name])


def test_siamese_contrastive():
    out = check_ok(run_example("siamese_contrastive.py", "--fast"))
    assert f"backend={BACKEND}" in out
    assert "Eq. 4 from the distance output" in out and "equal: True" in out  # evaluate's loss is Eq. 4
    assert "pair_scores(left, right, 'euclidean') equals -distance: True" in out
    rows = {}
    for match in re.finditer(r"^  (\S.*?) +verification accuracy ([0-9.]+) \+- [0-9.]+  ROC AUC ([0-9.]+)", out, re.M):
        rows[match.group(1)] = (float(match.group(2)), float(match.group(3)))
    assert sorted(rows) == ["contrastive", "raw pixels", "untrained network"], out
    accuracy, auc = rows["contrastive"]
    assert accuracy > 0.75 and auc > rows["untrained network"][1], rows  # held-out pairs; chance is 0.5


ML_FIGURES = ("recall@1", "map@r", "r_precision", "nmi")


def _metric_learning_run(tmp_path, *args):
    """Run metric_learning_mnist.py; return ``{title: [recall@1, MAP@R, R-precision, NMI]}`` and results.json."""
    out = check_ok(run_example("metric_learning_mnist.py", "--fast", "--out", str(tmp_path), *args,
                               tmp_path=tmp_path))
    table = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and cells[0] != "loss":
            table[cells[0]] = [float(c) for c in cells[-4:]]
    results = json.loads((tmp_path / "results.json").read_text())
    assert (tmp_path / "features_unseen.png").stat().st_size > 10_000
    for row in results["rows"]:  # the printed table is the mean of the runs in results.json
        assert table[row["title"]] == pytest.approx([row[k] for k in ML_FIGURES], abs=6e-4)
        for run in row["runs"]:
            assert all(0.0 <= run[k] <= 1.0 for k in ML_FIGURES), (row["title"], run)
    return table, results


@one_backend  # an application of terms tested on every backend
def test_metric_learning_mnist_fast(tmp_path):
    table, results = _metric_learning_run(tmp_path)
    assert results["data"] == "mnist" and results["model"] == "lenet" and results["seeds"] == [0]
    assert (results["train_images"], results["unseen_images"]) == (7 * 100, 3 * 100)  # digits 0-6; 7-9 unseen
    trained = ["TripletLoss, semi-hard", "Softmax + center"]
    assert sorted(table) == sorted(["raw pixels (no training)", "untrained network", *trained])
    for row in results["rows"][2:]:  # each loss trained: its running mean over the 25 steps went down
        curve = row["runs"][0]["train_curve"]
        assert len(curve) == 700 // (7 * 4) and all(math.isfinite(v) for v in curve), (row["title"], curve)
        assert curve[-1] < curve[0], (row["title"], curve)


@one_backend
def test_metric_learning_other_losses_on_digits_in_2d(tmp_path):
    losses = "triplet-batchhard,contrastive,circle,supcon,lifted,npairs,proxynca,arcface"
    table, results = _metric_learning_run(tmp_path, "--data", "digits", "--losses", losses, "--epochs", "1",
                                          "--embedding-dim", "2", "--normalize")
    assert results["data"] == "digits" and results["embedding_dim"] == 2 and results["normalize"]
    assert [row["name"] for row in results["rows"]] == ["pixels", "untrained", *losses.split(",")]
    assert all(math.isfinite(run["train_loss"]) for row in results["rows"][2:] for run in row["runs"])
