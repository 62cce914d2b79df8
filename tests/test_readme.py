"""The README's Python snippets run as written, on the backend under test."""

import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import BACKEND

README = Path(__file__).resolve().parents[1] / "README.md"


def _snippet(heading):
    """The first Python block after ``heading`` in the README."""
    text = README.read_text()
    return re.search(r"```python\n(.*?)```", text[text.index(heading) :], re.S).group(1)


def _run(code, tmp_path):
    """Run ``code`` as a script in a fresh process; returns its stdout."""
    script = tmp_path / "snippet.py"
    script.write_text(code)
    env = dict(os.environ, KERAS_BACKEND=BACKEND, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_quick_start_runs(tmp_path):
    code = _snippet("## Quick start")
    code += "\nprint('KEYS', sorted(history.history))\nprint('CENTERS', restored.terms['center'].centers.shape)\n"
    out = _run(code, tmp_path)
    assert "'loss/center'" in out and "'weight/center'" in out
    assert "CENTERS (10, 2)" in out


def test_margin_snippet_runs_after_the_quick_start(tmp_path):
    """The margin-softmax snippet, run on the quick start's model pieces and data."""
    code = _snippet("## Quick start") + _snippet("## Margin-softmax terms").replace("epochs=10", "epochs=2") + (
        "\nprint('FIGURES', sorted(figures))\n"
        "print('LOGITS', classifier.predict(x[:3], verbose=0)['logits'].shape)\n"
    )
    out = _run(code, tmp_path)
    assert "'verification_accuracy'" in out and "'recall@1'" in out
    assert "LOGITS (3, 10)" in out


def test_gradient_level_snippet_runs(tmp_path):
    out = _run(_snippet("## Gradient-level strategies"), tmp_path)
    assert "'cosine/digit/score'" in out and "'weight/digit'" in out


def test_metric_learning_snippet_runs(tmp_path):
    code = _snippet("## Metric learning").replace("epochs=5", "epochs=2") + (
        "\nprint('CLASSES', sorted(set(ds.y_train.tolist())), sorted(set(ds.y_test.tolist())))\n"
        "print('PK', [len(set(row)) for row in batches[0][1]['label'].reshape(5, 8).tolist()])\n"
        "print('RANGE', all(0.0 <= figures[k] <= 1.0 for k in ('recall@1', 'map@r', 'r_precision', 'nmi')))\n"
    )
    out = _run(code, tmp_path)
    assert "'map@r'" in out and "'r_precision'" in out and "'nmi'" in out
    assert "CLASSES [0, 1, 2, 3, 4] [5, 6, 7, 8, 9]" in out  # retrieval on digits never trained on
    assert "PK [1, 1, 1, 1, 1]" in out and "RANGE True" in out
