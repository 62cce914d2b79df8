"""``lossweave train`` on every kind of input: the loaders, the models, each term and strategy.

Runs are 1 epoch on small generated files; each bad input exits 2 with one line.
"""

import gzip
import json
import struct

import keras
import numpy as np
import pytest

from lossweave.cli import main
from lossweave.cli import objectives as cli_objectives
from lossweave.cli.models import build_lenet, build_mlp

RNG = np.random.default_rng(5)


def _blobs(n=120, classes=3, shape=(6, 6)):
    """Class-dependent images: class c lights up row c."""
    y = np.arange(n) % classes
    x = RNG.uniform(0, 60, size=(n, *shape))
    for c in range(classes):
        x[y == c, c, :] += 180
    return x.astype("uint8"), y.astype("uint8")


def _write_idx(path, array, gz=False):
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + np.ascontiguousarray(array, dtype="uint8").tobytes()
    path.write_bytes(gzip.compress(payload) if gz else payload)


def _train(argv, capsys, out):
    status = main(["train", "--epochs", "1", "--batch-size", "32", "--quiet", "--out", str(out), *argv])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    return json.loads((out / "metrics.json").read_text())


def _bad(argv, capsys):
    assert main(["train", "--epochs", "1", "--quiet", *argv]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    return lines[0]


def test_npz_idx_and_folder_data(tmp_path, capsys):
    x, y = _blobs()
    np.savez(tmp_path / "d.npz", x=x, y=y)
    metrics = _train(["--data", "npz", "--data-path", str(tmp_path / "d.npz")], capsys, tmp_path / "npz")
    assert metrics["test_accuracy"] is not None and len(metrics["test_losses"]) == 2

    idx = tmp_path / "idx"
    idx.mkdir()
    _write_idx(idx / "train-images-idx3-ubyte.gz", x, gz=True)
    _write_idx(idx / "train-labels-idx1-ubyte", y)
    _train(["--data", "idx", "--data-path", str(idx), "--model", "lenet"], capsys, tmp_path / "idx_run")
    config = (tmp_path / "idx_run" / "config.toml").read_text()
    assert 'model = "lenet"' in config and f'data-path = "{idx}"' in config

    folder = tmp_path / "images"
    for c in range(3):
        (folder / f"class_{c}").mkdir(parents=True)
    for i, (image, label) in enumerate(zip(x[:60], y[:60])):
        keras.utils.save_img(folder / f"class_{label}" / f"{i}.png", image[..., None], scale=False)
    metrics = _train(["--data", "folder", "--data-path", str(folder)], capsys, tmp_path / "folder_run")
    assert metrics["epochs"] == 1


def test_bad_data_files_name_the_file(tmp_path, capsys):
    np.savez(tmp_path / "bad.npz", features=np.zeros((4, 2)))
    line = _bad(["--data", "npz", "--data-path", str(tmp_path / "bad.npz")], capsys)
    assert f"data: {tmp_path / 'bad.npz'}:" in line and "features" in line
    line = _bad(["--data", "idx", "--data-path", str(tmp_path / "nothing")], capsys)
    assert str(tmp_path / "nothing") in line
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03junk")
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x02\x00\x01")
    assert "data: " in _bad(["--data", "idx", "--data-path", str(tmp_path)], capsys)


def _user_model(path, logits_units=10):
    inputs = keras.Input((64,))
    hidden = keras.layers.Dense(16, activation="relu")(inputs)
    features = keras.layers.Dense(4, name="feat")(hidden)
    scores = keras.layers.Dense(logits_units, name="cls")(features)
    keras.Model(inputs, [features, scores]).save(path)


def test_user_keras_model(tmp_path, capsys):
    _user_model(tmp_path / "mine.keras")
    argv = ["--model", str(tmp_path / "mine.keras"), "--embedding-output", "feat", "--logits-output", "cls"]
    metrics = _train(argv, capsys, tmp_path / "run")
    assert metrics["test_accuracy"] > 0.15
    model = keras.saving.load_model(tmp_path / "run" / "model.keras")
    out = model.predict(np.zeros((2, 64), "float32"), verbose=0)
    assert out["embedding"].shape == (2, 4) and out["logits"].shape == (2, 10)

    line = _bad([*argv[:2], "--embedding-output", "nope"], capsys)
    assert "--embedding-output 'nope'" in line and "has no output or layer" in line
    assert "no such file" in _bad(["--model", str(tmp_path / "missing.keras")], capsys)
    _user_model(tmp_path / "narrow.keras", logits_units=3)
    line = _bad(["--model", str(tmp_path / "narrow.keras"), "--embedding-output", "feat",
                 "--logits-output", "cls"], capsys)
    assert "has 3 units; the data has 10 classes" in line
    (tmp_path / "junk.keras").write_text("not a zip")
    assert "cannot load it as a Keras model" in _bad(["--model", str(tmp_path / "junk.keras")], capsys)
    x, y = _blobs()
    np.savez(tmp_path / "d.npz", x=x, y=y)
    line = _bad([*argv, "--data", "npz", "--data-path", str(tmp_path / "d.npz")], capsys)
    assert "expected one input of shape (batch, 6, 6)" in line


@pytest.mark.parametrize("loss", sorted(cli_objectives.LOSSES))
def test_every_loss_builds_its_term(loss):
    """Every classification term from its name (each trains in tests/test_contract.py)."""
    import lossweave as lw

    objective = cli_objectives.build_objective(
        build_mlp((64,), 10, 2, logits=loss == "softmax"), 10, loss=loss, center_weight=0.01)
    name = cli_objectives.classifier_name(loss)
    assert list(objective.terms) == [name, "center"]
    class_name = cli_objectives.LOSSES[loss][0] or "SoftmaxCrossEntropy"
    assert type(objective.terms[name]) is getattr(lw.terms, class_name)


@pytest.mark.parametrize("loss, option", [("arcface", ["--scale", "8"]), ("sphereface", ["--margin", "2"])])
def test_margin_loss_end_to_end(loss, option, tmp_path, capsys):  # softmax: tests/test_cli.py
    metrics = _train(["--loss", loss, "--embedding-dim", "3", "--center-weight", "0.01", *option,
                      "--epochs", "2"], capsys, tmp_path)
    name = cli_objectives.classifier_name(loss)
    assert set(metrics["final_losses"]) == {name, "center"}
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and metrics["embedding"]["recall@1"] > 0.1
    saved = keras.saving.load_model(tmp_path / "model.keras")
    assert saved.predict(np.zeros((1, 64), "float32"), verbose=0)["logits"].shape == (1, 10)


@pytest.mark.parametrize("weighting", cli_objectives.WEIGHTINGS)
def test_every_weighting_is_reachable(weighting):
    """Every strategy from its name (each trains in tests/test_contract.py)."""
    import lossweave as lw

    objective = cli_objectives.build_objective(
        build_mlp((64,), 10, 2), 10, center_weight=0.01, weighting=weighting, steps_per_epoch=2)
    assert list(objective.terms) == ["softmax", "center"]
    expected = {"fixed": "Fixed", "convex": "Convex", "uncertainty": "Uncertainty", "dwa": "DWA",
                "rlw": "RLW", "gls": "GLS", "famo": "FAMO", "mgda": "MGDA", "pcgrad": "PCGrad",
                "cagrad": "CAGrad", "nashmtl": "NashMTL",
                "gradient-mean": "Mean", "gradient-sum": "Sum", "imtlg": "IMTLG", "aligned-mtl": "AlignedMTL",
                "config": "ConFIG", "gradvac": "GradVac", "graddrop": "GradDrop", "moco": "MoCo",
                "db-mtl": "DBMTL", "gradnorm": "GradNorm", "upgrad": "UPGrad", "dualproj": "DualProj"}[weighting]
    assert type(objective.weighting) is getattr(lw.weighting, expected)


@pytest.mark.parametrize("argv", [["--weighting", "uncertainty"], ["--center-warmup", "20"]])
def test_weights_figure_for_learned_and_scheduled_weights(argv, tmp_path, capsys):
    _train([*argv, "--epochs", "3"], capsys, tmp_path)
    page = (tmp_path / "report.html").read_text()
    assert (tmp_path / "weights.png").is_file() and "Weight of each term per epoch" in page
    history = json.loads((tmp_path / "history.json").read_text())
    assert history["weight/center"][0] != history["weight/center"][-1]


def test_margin_options_reach_the_term():
    objective = cli_objectives.build_objective(
        build_mlp((64,), 10, 2, logits=False), 10, loss="combined", combined_margins=(1.2, 0.1, 0.05), scale=9.0)
    term = objective.terms["combined"]
    assert (term.multiplicative_margin, term.angular_margin, term.cosine_margin, term.scale) == (1.2, 0.1, 0.05, 9.0)
    term = cli_objectives.classification_term("sphereface", 10, margin=2.0)
    assert term.multiplicative_margin == 2
    with pytest.raises(ValueError, match="integer multiplier"):
        cli_objectives.classification_term("sphereface", 10, margin=2.5)
    with pytest.raises(ValueError, match="convex needs two terms"):
        cli_objectives.build_objective(build_mlp((64,), 10, 2), 10, weighting="convex")


def test_lenet_shapes():
    assert build_lenet((64,), 10, 2).outputs[0].shape[-1] == 2
    model = build_lenet((28, 28, 1), 5, 3, logits=False)
    assert set(model.output) == {"embedding"}
    with pytest.raises(ValueError, match="flat square images"):
        build_lenet((10,), 3, 2)
