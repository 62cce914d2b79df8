"""``--split unseen-classes`` with embeddings over 2-D: ``train``, ``--resume`` and ``compare`` write their report.

The test classes were never trained, so the class means of the training
classes have no test rows (NaN). The report drew them through the PCA of a
16-D or 32-D embedding and crashed after training ("Input X contains NaN"),
leaving no ``report.html``. One epoch on the digits is enough to reach it.
"""

import json

import pytest
from conftest import one_backend
from test_cli_registry import _train

from lossweave.cli import main
from lossweave.cli import train as train_cli

UNSEEN = ["--split", "unseen-classes", "--center-weight", "0"]
# The run, on the digits: batch-hard triplets on 5 classes x 8 samples per batch.
TRIPLET = ["--loss", "triplet", "--mining", "batch-hard", "--margin", "0.2", "--classes-per-batch", "5",
           "--samples-per-class", "8"]


class _Crash(Exception):
    pass


def _check_report(out, tuple_loss=False):
    page = (out / "report.html").read_text()
    # features, losses, calibration, neighbour tiles; and the tuple statistics of a tuple loss
    assert page.count("data:image/png;base64,") == 4 + tuple_loss
    assert not (out / "backup").exists()  # the run finished


@one_backend
@pytest.mark.parametrize("dim, loss", [(16, []), (32, TRIPLET)])
def test_train(dim, loss, tmp_path, capsys):
    metrics = _train([*UNSEEN, *loss, "--embedding-dim", str(dim), "--batch-size", "256"], capsys, tmp_path)
    assert metrics["test_accuracy"] is None and metrics["intra_inter_ratio"] is not None
    _check_report(tmp_path, tuple_loss=bool(loss))


@one_backend
def test_resume_after_a_crash_past_the_last_epoch(tmp_path, capsys, monkeypatch):
    """A run stopped after its last epoch, before its files: ``--resume`` writes them."""

    def crash(*args, **kwargs):
        raise _Crash

    with monkeypatch.context() as patch:
        patch.setattr(train_cli, "write_run", crash)
        with pytest.raises(_Crash):
            main(["train", *UNSEEN, "--embedding-dim", "16", "--epochs", "1", "--batch-size", "256",
                  "--quiet", "--out", str(tmp_path)])
    assert (tmp_path / "backup").is_dir() and not (tmp_path / "report.html").exists()
    assert main(["train", "--resume", str(tmp_path), "--quiet"]) == 0, capsys.readouterr().err
    _check_report(tmp_path)


@one_backend
def test_compare(tmp_path, capsys):
    out = tmp_path / "cmp"
    status = main(["compare", *UNSEEN[:2], "--embedding-dim", "16", "--objectives", "softmax",
                   "--epochs", "1", "--batch-size", "256", "--out", str(out)])
    assert status == 0, capsys.readouterr().err
    summary = json.loads((out / "compare.json").read_text())
    assert summary["metrics"]["softmax"]["test_accuracy"] is None
    assert (out / "features_grid.png").is_file() and (out / "report.html").is_file()
    _check_report(out / summary["runs"]["softmax"].split("/")[-1])  # the objective's own run folder
