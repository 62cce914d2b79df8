"""The ``lossweave`` command line tool: ``train`` end to end, bad input, config precedence.

The end-to-end run is one short training (1 epoch) shared by the tests of
this module; everything else stops before training.
"""

import dataclasses
import json
import math
import os
import re
import subprocess
import sys
import time
import tomllib

import keras
import numpy as np
import pytest
from conftest import one_backend

from lossweave.cli import main
from lossweave.cli.options import OPTIONS, TrainConfig
from lossweave.report import class_distance_ratio

RUN_FILES = ("metrics.json", "history.json", "config.toml", "objective.keras", "model.keras",
             "features.png", "losses.png", "report.html")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _flatten(tree, prefix=""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}/")
        else:
            yield f"{prefix}{key}", value


def test_train_end_to_end(tmp_path, capsys):
    """One 1-epoch run checked from every side.

    A single test rather than a module fixture shared by several: under
    ``pytest -n 2`` a shared fixture would train once per worker. The config
    file asks for 3 epochs and a 3-D embedding, the command line for 1 epoch.
    """
    root = tmp_path
    config = root / "options.toml"
    config.write_text('epochs = 3\nembedding_dim = 3\nbatch-size = 360\nseed = 1\n'
                      'center-weight = 0.01\nalpha = 0.25\n')
    out = root / "run"
    argv = ["train", "--config", str(config), "--epochs", "1", "--out", str(out)]
    status = main(argv)
    run = {"status": status, "out": out, "argv": argv, "stdout": capsys.readouterr().out,
           "config_file": config}
    _check_files(run)
    _check_metrics(run)
    _check_report(run)
    _check_config(run, capsys)
    _check_saved_models(run)


def _check_files(run):
    assert run["status"] == 0
    for name in RUN_FILES:
        path = run["out"] / name
        assert path.is_file() and path.stat().st_size > 0, name
    for name in ("features.png", "losses.png"):
        assert (run["out"] / name).read_bytes()[:8] == PNG_SIGNATURE
    assert f"report: {run['out'] / 'report.html'}" in run["stdout"]
    summary = run["stdout"].split("\nsummary\n")[1]  # the summary table, grouped as the report
    headings = [line.strip() for line in summary.splitlines() if line.startswith("  ") and not line.startswith("    ")]
    assert headings[:2] == ["classification", "losses"] and "test accuracy" in summary


def _check_metrics(run):
    metrics = json.loads((run["out"] / "metrics.json").read_text())
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    assert metrics["test_accuracy"] > 0.2  # one epoch is far above chance (0.1) on digits
    assert set(metrics["test_losses"]) == set(metrics["final_losses"]) == {"softmax", "center"}
    for key, value in _flatten(metrics):
        assert isinstance(value, (int, float)) and math.isfinite(value), key
    # Loose: Keras averages `loss` over batches weighted by batch size, the Objective's
    # `loss/<term>` trackers unweighted, so they differ slightly when the last batch is partial.
    assert metrics["test_loss"] == pytest.approx(
        metrics["test_losses"]["softmax"] + 0.01 * metrics["test_losses"]["center"], rel=0.05)
    assert 0.0 < metrics["intra_inter_ratio"] < 10.0
    assert metrics["epochs"] == 1

    history = json.loads((run["out"] / "history.json").read_text())
    for key in ("loss", "loss/softmax", "loss/center", "val_loss/center", "accuracy"):
        assert len(history[key]) == 1, key
    assert history["loss/center"][-1] == pytest.approx(metrics["final_losses"]["center"])


def _check_report(run):
    metrics = json.loads((run["out"] / "metrics.json").read_text())
    page = (run["out"] / "report.html").read_text()
    shown = dict(re.findall(r'data-key="([^"]+)">([^<]*)<', page))
    for key, value in _flatten(metrics):
        assert key in shown, key
        assert float(shown[key]) == pytest.approx(value, rel=1e-3, abs=5e-5), key
    headings = re.findall(r'<tr class="group"><th colspan="2">([^<]+)</th></tr>', page)
    assert headings == ["classification", "losses", "embedding", "training"]
    options = dict(re.findall(r'data-option="([^"]+)">([^<]*)<', page))
    assert "mining" not in options and "scale" not in options  # softmax uses neither
    assert options["epochs"] == "1" and options["center-weight"] == "0.01"
    assert options["embedding-dim"] == "3" and options["backend"] == keras.backend.backend()
    images = re.findall(r'<img [^>]*src="([^"]+)"', page)
    assert len(images) == 4 and all(s.startswith("data:image/png;base64,") for s in images)  # + calibration, tiles
    assert "--epochs 1" in page and "lossweave train" in page


def _check_config(run, capsys):
    written = tomllib.loads((run["out"] / "config.toml").read_text())
    assert written["epochs"] == 1  # the command line won
    assert written["embedding-dim"] == 3 and written["seed"] == 1  # from the config file
    assert written["batch-size"] == 360 and written["alpha"] == 0.25
    assert written["center-weight"] == 0.01
    assert written["learning-rate"] == TrainConfig().learning_rate  # default
    assert written["backend"] == keras.backend.backend()
    assert written["out"] == str(run["out"])
    assert written["run"]["argv"] == run["argv"]
    assert written["run"]["command"].startswith("lossweave train --config ")
    assert written["run"]["config-file"] == str(run["config_file"])

    # Read back with --config (the [run] table is ignored): the same configuration.
    capsys.readouterr()
    assert main(["train", "--config", str(run["out"] / "config.toml"), "--print-config"]) == 0
    again = tomllib.loads(capsys.readouterr().out)
    assert again == {k: v for k, v in written.items() if k != "run"}


def _check_saved_models(run):
    model = keras.saving.load_model(run["out"] / "model.keras")
    outputs = model.predict(np.zeros((2, 64), "float32"), verbose=0)
    assert outputs["embedding"].shape == (2, 3) and outputs["logits"].shape == (2, 10)
    objective = keras.saving.load_model(run["out"] / "objective.keras")
    centers = keras.ops.convert_to_numpy(objective.terms["center"].centers)
    assert centers.shape == (10, 3) and np.all(np.isfinite(centers)) and np.any(centers != 0)


def _print_config(argv, capsys):
    assert main(["train", *argv, "--print-config"]) == 0
    return tomllib.loads(capsys.readouterr().out)


def test_config_precedence(tmp_path, capsys):
    config = tmp_path / "c.toml"
    config.write_text('epochs = 7\nlearning_rate = 0.002\nalpha = 0.25\nout = "from-file"\n'
                      'quiet = true\n')
    resolved = _print_config(["--config", str(config), "--epochs", "9", "--no-quiet"], capsys)
    assert resolved["epochs"] == 9  # command line beats file
    assert resolved["quiet"] is False
    assert resolved["learning-rate"] == 0.002 and resolved["alpha"] == 0.25  # file beats default
    assert resolved["out"] == "from-file"
    defaults = TrainConfig()
    assert resolved["center-weight"] == defaults.center_weight  # default
    assert resolved["embedding-dim"] == defaults.embedding_dim
    assert resolved["data"] == "digits" and resolved["model"] == "mlp"


def test_defaults(capsys):
    resolved = _print_config([], capsys)
    assert resolved["center-weight"] == 0.003 and resolved["alpha"] == 0.5
    assert resolved["embedding-dim"] == 2
    assert re.fullmatch(r"runs[/\\]\d{8}-\d{6}", resolved["out"])
    assert [f.name for f in dataclasses.fields(TrainConfig)] == [o.dest for o in OPTIONS]
    for option in OPTIONS:
        assert getattr(TrainConfig(), option.dest) == option.default, option.name


def _bad(argv, capsys):
    status = main(argv)
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert status == 2
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("lossweave: error: ")
    assert "Traceback" not in captured.err and captured.out == ""
    return lines[0]


@pytest.mark.parametrize(
    "argv, expected",
    [
        ([], "a command is required; choose from: train"),
        (["fit"], "invalid choice: 'fit'"),
        (["train", "--data", "cifar"],
         "--data: unknown data 'cifar'; choose from: digits, folder, idx, mnist, multitask, npz."),
        (["train", "--model", "resnet"],
         "--model: unknown model 'resnet'; choose from: mlp, lenet, or a .keras file."),
        (["train", "--loss", "hinge"], "--loss: unknown loss 'hinge'; choose from: softmax, normface,"),
        (["train", "--weighting", "uniform"], "--weighting: unknown weighting 'uniform'; choose from: fixed,"),
        (["train", "--scale", "0"], "--scale: expected a number > 0.0"),
        (["train", "--combined-margins", "1,0.3"], "--combined-margins: expected three numbers"),
        (["train", "--sub-centers", "0"], "--sub-centers: expected an integer >= 1"),
        (["train", "--data", "npz"], "--data npz reads a file or folder: give it with --data-path."),
        (["train", "--data-path", "x.npz"], "--data-path x.npz: --data digits is bundled and reads no file"),
        (["train", "--epochs", "0"], "--epochs: expected an integer >= 1; received '0'."),
        (["train", "--epochs", "two"], "--epochs: expected an integer >= 1; received 'two'."),
        (["train", "--embedding-dim", "2.5"], "--embedding-dim: expected an integer >= 1"),
        (["train", "--batch-size"], "argument --batch-size: expected one argument"),
        (["train", "--learning-rate", "-1"], "--learning-rate: expected a number > 0.0"),
        (["train", "--learning-rate", "0"], "--learning-rate: expected a number > 0.0"),
        (["train", "--center-weight", "nan"], "--center-weight: expected a number >= 0.0"),
        (["train", "--alpha", "1.5"], "--alpha: expected a number >= 0.0 and <= 1.0"),
        (["train", "--seed", "-3"], "--seed: expected an integer >= 0"),
        (["train", "--backend", "numpy"],
         "--backend: unknown backend 'numpy'; choose from: jax, tensorflow, torch."),
        (["train", "--bogus", "1"], "unrecognized option --bogus; `lossweave train --help` lists every option."),
        (["train", "--lr", "0.1"], "unrecognized option --lr; did you mean --learning-rate?"),
        (["train", "--bs=64"], "unrecognized option --bs; did you mean --batch-size?"),
        (["train", "--dim", "3"], "did you mean --embedding-dim?"),
        (["train", "--lambda", "0.1"], "did you mean --center-weight?"),
        (["train", "--seeds", "3"], "did you mean --seed?"),
        (["compare", "--learning_rate", "0.1"], "unrecognized option --learning_rate; did you mean --learning-rate?"),
        (["train", "stray"], "unrecognized arguments: stray"),
        (["train", "--config", "missing.toml"], "--config: no such file: 'missing.toml'."),
        (["train", "--config", "."], "--config: '.' is a folder"),
    ],
)
def test_bad_command_line(argv, expected, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert expected in _bad(argv, capsys)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("epochs = \n", "invalid TOML"),
        ("epoch = 3\n", "unknown key 'epoch'; the keys are: data, data-path, model,"),
        ("epoch = 3\n", "Did you mean 'epochs'?"),
        ("lr = 0.1\n", "unknown key 'lr'; the keys are: data,"),
        ("lr = 0.1\n", "Did you mean 'learning-rate'?"),
        ('epochs = "ten"\n', "c.toml: epochs: expected an integer >= 1; received 'ten'."),
        ("epochs = 2.0\n", "c.toml: epochs: expected an integer >= 1; received 2.0."),
        ("quiet = 1\n", "c.toml: quiet: expected true or false; received 1."),
        ('data = "cifar"\n', "c.toml: data: unknown data 'cifar'; choose from: digits, folder,"),
        ("alpha = true\n", "c.toml: alpha: expected a number >= 0.0 and <= 1.0; received True."),
        ("epochs = 2\nepochs_x = 1\n", "unknown key 'epochs_x'"),
        ("batch_size = 2\nbatch-size = 3\n", "is given twice"),
        ("[model]\nunits = 3\n", "c.toml: model: unknown model {'units': 3}"),
    ],
)
def test_bad_config_file(text, expected, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.toml").write_text(text)
    assert expected in _bad(["train", "--config", "c.toml"], capsys)


def test_out_is_a_file(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "taken").write_text("")
    assert "--out: 'taken' exists and is not a folder." in _bad(
        ["train", "--out", "taken"], capsys)


def test_backend_switch_in_process_is_a_usage_error(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    other = "torch" if keras.backend.backend() != "torch" else "jax"
    line = _bad(["train", "--backend", other], capsys)
    assert f"Keras is already loaded with the {keras.backend.backend()} backend" in line
    assert _print_config(["--backend", keras.backend.backend()], capsys)["backend"] == (
        keras.backend.backend())


def test_help(capsys):
    assert main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    for option in OPTIONS:
        assert f"--{option.name}" in out
    assert "--config" in out


class _Exec(Exception):
    pass


def test_the_program_restarts_with_the_requested_backend(monkeypatch, capsys):
    """``lossweave train --backend B`` re-executes itself with KERAS_BACKEND=B (lossweave imports Keras)."""
    target = "jax" if keras.backend.backend() != "jax" else "torch"
    calls = []

    def fake_execve(path, args, env):
        calls.append((path, args, env))
        raise _Exec

    monkeypatch.setattr(os, "execve", fake_execve)
    monkeypatch.setattr(sys, "argv", ["/venv/bin/lossweave", "train", "--backend", target, "--print-config"])
    with pytest.raises(_Exec):
        main()
    (path, args, env), = calls
    assert path == sys.executable
    assert args == [sys.executable, "-m", "lossweave", "train", "--backend", target, "--print-config"]
    assert env["KERAS_BACKEND"] == target
    # A restarted process that still has the wrong backend does not loop.
    monkeypatch.setenv("_LOSSWEAVE_REEXEC_BACKEND", target)
    assert main() == 2
    assert "already loaded" in capsys.readouterr().err


def test_python_m_lossweave(monkeypatch, capsys):
    import runpy

    import lossweave

    monkeypatch.setattr(sys, "argv", ["lossweave", "--version"])
    with pytest.raises(SystemExit) as exit_:  # run the file as `python -m lossweave` does
        runpy.run_path(os.path.join(os.path.dirname(lossweave.__file__), "__main__.py"),
                       run_name="__main__")
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith("lossweave ")


# ---------------------------------------------------------------------- report helpers
def test_class_distance_ratio_matches_numpy_reference():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(60, 3)), np.arange(60) % 4
    means = np.stack([x[y == c].mean(0) for c in range(4)])
    intra = np.mean([np.linalg.norm(x[i] - means[y[i]]) for i in range(60)])
    inter = np.mean([np.linalg.norm(means[j] - means[k]) for j in range(4) for k in range(j + 1, 4)])
    assert class_distance_ratio(x, y) == pytest.approx(intra / inter)
    # given centers; invariant to scale, rotation and shift
    centers = rng.normal(size=(4, 3))
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    assert class_distance_ratio(x, y, centers) == pytest.approx(
        class_distance_ratio(5 * x @ q + 1, y, 5 * centers @ q + 1))
    # tight clusters far apart -> small; one class -> error
    tight = np.repeat(np.eye(3) * 100, 10, axis=0) + rng.normal(size=(30, 3)) * 0.01
    assert class_distance_ratio(tight, np.repeat(np.arange(3), 10)) < 1e-3
    with pytest.raises(ValueError, match="at least two classes"):
        class_distance_ratio(x, np.zeros(60, int))
    with pytest.raises(ValueError, match="centers has 2 rows"):
        class_distance_ratio(x, y, centers[:2])


@pytest.mark.parametrize("dim", [1, 2, 5])
def test_plot_features_any_dim(dim, tmp_path):
    from lossweave.report import plot_features

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, dim)), np.arange(40) % 4
    centers = np.stack([x[y == c].mean(0) for c in range(4)])
    fig = plot_features(x, y, centers, class_names=list("abcd"), path=tmp_path / "f.png")
    assert (tmp_path / "f.png").read_bytes()[:8] == PNG_SIGNATURE
    ax = fig.axes[0]
    assert ax.get_xlabel() == ("PC 1" if dim > 2 else "feature 1")
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "b", "c", "d", "centers"]
    with pytest.raises(ValueError, match="centers of shape"):
        plot_features(x, y, centers[:, :1] if dim > 1 else np.zeros((4, 2)))


def test_plot_loss_curves_panels():
    from lossweave.report import plot_loss_curves

    history = {"loss": [2.0, 1.0], "loss/center": [5.0, 4.0], "loss/softmax": [2.0, 1.0],
               "val_loss/center": [6.0, 5.0], "weight/center": [0.01, 0.01]}
    fig = plot_loss_curves(history, terms=["softmax", "center"])
    assert [ax.get_title() for ax in fig.axes] == [
        "total (weighted)", "softmax", "center (weight 0.01)"]
    with pytest.raises(ValueError, match=r"terms \['margin'\] are not in the history"):
        plot_loss_curves(history, terms=["margin"])


def test_center_weight_zero_trains_softmax_only():
    from lossweave.cli.models import build_mlp
    from lossweave.cli.objectives import build_objective

    objective = build_objective(build_mlp((64,), 10, 2), 10, center_weight=0.0, alpha=0.5)
    assert list(objective.terms) == ["softmax"]
    objective = build_objective(build_mlp((64,), 10, 2), 10, center_weight=0.1, alpha=0.3)
    assert list(objective.terms) == ["softmax", "center"]
    assert objective.terms["center"].alpha == 0.3
    assert objective.weighting.weights_by_term == {"center": 0.1}


@one_backend
def test_the_command_line_page_lists_every_option_with_its_default():
    """docs/command_line.md's options table has a row per option of train and compare, defaults as the table's."""
    from pathlib import Path

    from lossweave.cli import compare

    page = (Path(__file__).resolve().parents[1] / "docs" / "command_line.md").read_text()
    rows = {}
    for line in page.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        match = re.match(r"`--([a-z-]+)(?: [^`]*)?`", cells[0]) if line.startswith("|") else None
        if match:
            rows[match.group(1)] = cells[1]
    for option in OPTIONS:
        assert option.name in rows, f"docs/command_line.md has no row for --{option.name}"
        default = str(option.default).lower() if isinstance(option.default, bool) else option.default
        assert rows[option.name] == ("" if default is None else f"`{default}`"), option.name
    for name in ("config", "print-config", "resume"):
        assert name in rows, name
    assert "--objectives LIST" in page and all(o.name in rows or o.name == "objectives" for o in compare.OPTIONS)


@one_backend
def test_help_imports_no_backend_and_takes_under_a_second():
    """``lossweave --help`` and ``train --help``: no Keras, no backend; the least of 3 runs under 1 s."""
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}  # Keras's configured one, maybe TF
    probe = ("import contextlib, io, sys\nfrom lossweave.cli import main\n"
             "with contextlib.redirect_stdout(io.StringIO()):\n    main(['train', '--help'])\n"
             "print(sorted(m for m in ('keras', 'jax', 'tensorflow', 'torch') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]", loaded.stdout
    for argv in (["--help"], ["train", "--help"]):
        times = []
        for _ in range(3):  # the least of three: the machine's other load only adds time
            started = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "lossweave", *argv], env=env, capture_output=True)
            times.append(time.perf_counter() - started)
            assert done.returncode == 0 and b"usage: lossweave" in done.stdout, done.stderr
        assert min(times) < 1.0, (argv, times)


@one_backend
def test_help_and_the_docs_list_every_data_set(capsys):
    from pathlib import Path

    from lossweave import data

    assert main(["train", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    section = text[text.index("--data NAME dataset:"):text.index("--data-path PATH file")]
    page = (Path(__file__).resolve().parents[1] / "docs" / "command_line.md").read_text()
    row = next(line for line in page.splitlines() if line.startswith("| `--data NAME`"))
    for name in data.names():
        assert re.search(rf"\b{name}\b", section), name
        assert f"`{name}`" in row, name


@one_backend
def test_the_total_loss_is_labelled_by_the_weighting_level():
    """Loss level: the weighted total; gradient level: the plain sum of the terms (Mean: their mean)."""
    from lossweave.cli.fitting import metric_rows

    metrics = {"test_loss": 1.5, "kept_epoch": 3}
    labels = {weighting: dict((k, label) for k, label, _ in metric_rows(metrics, TrainConfig(weighting=weighting)))
              for weighting in ("fixed", "uncertainty", "mgda", "gradient-sum", "gradient-mean")}
    assert labels["fixed"]["test_loss"] == labels["uncertainty"]["test_loss"] == "test loss (weighted total)"
    assert labels["mgda"]["test_loss"] == labels["gradient-sum"]["test_loss"] == "test loss (sum of the terms)"
    assert labels["gradient-mean"]["test_loss"] == "test loss (mean of the terms)"
    assert labels["fixed"]["kept_epoch"] == "epoch kept (lowest validation loss)"
    assert dict((k, label) for k, label, _ in metric_rows(metrics, TrainConfig(keep_best=False)))[
        "kept_epoch"] == "epoch kept (the last)"
