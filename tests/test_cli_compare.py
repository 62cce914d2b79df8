"""``lossweave compare``: several objectives, one table, the feature pictures side by side."""

import json
import re

import pytest

from lossweave.cli import main
from lossweave.cli.compare import DEFAULT_OBJECTIVES, TABLE_COLUMNS, table_row
from lossweave.report import format_value

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_compare_end_to_end(tmp_path, capsys):
    out = tmp_path / "cmp"
    objectives = "softmax,cosface+center:0.01"
    status = main(["compare", "--objectives", objectives, "--epochs", "1", "--embedding-dim", "3",
                   "--out", str(out)])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert f"report: {out / 'report.html'}" in captured.out
    assert "[2/2] cosface+center:0.01" in captured.out  # progress, one line per objective

    summary = json.loads((out / "compare.json").read_text())
    assert summary["objectives"] == ["softmax", "cosface+center:0.01"]
    softmax, cosface = summary["metrics"]["softmax"], summary["metrics"]["cosface+center:0.01"]
    assert set(softmax["final_losses"]) == {"softmax"}
    assert set(cosface["final_losses"]) == {"cosface", "center"}
    assert 0.0 <= cosface["val_accuracy"] <= 1.0  # a margin run has a validation accuracy (no "-")
    for spec, folder in summary["runs"].items():  # each objective has its own run folder
        metrics = json.loads((out / folder.split("/")[-1] / "metrics.json").read_text())
        assert metrics == summary["metrics"][spec]
    assert (out / "features_grid.png").read_bytes()[:8] == PNG_SIGNATURE

    # The report's table shows exactly compare.json's numbers.
    page = (out / "report.html").read_text()
    cells = dict(re.findall(r'data-key="([^"]+)">([^<]*)<', page))
    for spec, metrics in summary["metrics"].items():
        row = table_row(spec, metrics)
        for key, _ in TABLE_COLUMNS[1:]:
            assert cells[f"{spec}/{key}"] == format_value(row[key]), (spec, key)
        assert row["verification_accuracy"] == metrics["embedding"]["verification_accuracy"]
    assert page.count("data:image/png;base64,") == 1 and "http://" not in page and "https://" not in page

    # One training time per objective: the progress line, the summary and the table show train_seconds.
    for spec, metrics in summary["metrics"].items():
        seconds = f"{metrics['train_seconds']:.1f}"
        progress = next(line for line in captured.out.splitlines() if f"] {spec} ..." in line)
        assert progress.endswith(f"epoch {metrics['kept_epoch']} kept, training time {seconds} s"), progress
        row = next(line.split() for line in captured.out.splitlines() if line.split()[:1] == [spec])
        assert row[-1] == seconds, row
        assert cells[f"{spec}/train_seconds"] == format_value(metrics["train_seconds"])
    assert "train (s)" in captured.out


@pytest.mark.parametrize(
    "value, expected",
    [
        ("softmax,hinge", "unknown part 'hinge'"),
        ("softmax+arcface", "two classification losses"),
        ("softmax+center:abc", "expected center:LAMBDA with a number"),
        ("softmax+center:0", "the center weight must be > 0"),
        ("center:0.1", "needs a classification loss"),
        ("softmax,softmax", "listed twice"),
        (",", "expected a comma-separated list"),
    ],
)
def test_bad_objectives(value, expected, capsys):
    assert main(["compare", "--objectives", value]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lossweave: error: --objectives:") and expected in err[0]


def test_compare_options_and_config(tmp_path, capsys):
    config = tmp_path / "c.toml"
    config.write_text('objectives = ["softmax", "arcface"]\nepochs = 4\n')
    assert main(["compare", "--config", str(config), "--print-config"]) == 0
    printed = capsys.readouterr().out
    assert 'objectives = ["softmax", "arcface"]' in printed and "epochs = 4" in printed
    assert "loss =" not in printed and "center-weight" not in printed
    assert main(["compare", "--print-config"]) == 0
    assert json.dumps(list(DEFAULT_OBJECTIVES)) in capsys.readouterr().out
    for flag, hint in (("--loss", "each objective names its loss: --objectives softmax,arcface"),
                       ("--center-weight", "an objective sets the center weight: --objectives softmax,softmax+center:"),
                       ("--tensorboard", "TensorBoard logs are one run's: lossweave train --tensorboard DIR")):
        assert main(["compare", flag, "1"]) == 2  # per-objective and train-only options are not compare's
        assert capsys.readouterr().err.startswith(f"lossweave: error: {flag}: {hint}")
