"""The README's quick start runs as written, on the backend under test."""

import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import BACKEND

README = Path(__file__).resolve().parents[1] / "README.md"


def test_quick_start_runs(tmp_path):
    text = README.read_text()
    section = text[text.index("## Quick start") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    code += "\nprint('KEYS', sorted(history.history))\nprint('CENTERS', restored.terms['center'].centers.shape)\n"
    script = tmp_path / "quick_start.py"
    script.write_text(code)
    env = dict(os.environ, KERAS_BACKEND=BACKEND, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "'loss/center'" in done.stdout and "'weight/center'" in done.stdout
    assert "CENTERS (10, 2)" in done.stdout


def test_margin_snippet_runs_after_the_quick_start(tmp_path):
    """The margin-softmax snippet, run on the quick start's model pieces and data."""
    text = README.read_text()
    quick = re.search(r"```python\n(.*?)```", text[text.index("## Quick start") :], re.S).group(1)
    margin = re.search(r"```python\n(.*?)```", text[text.index("## Margin-softmax terms") :], re.S).group(1)
    code = quick + margin.replace("epochs=10", "epochs=2") + (
        "\nprint('FIGURES', sorted(figures))\n"
        "print('LOGITS', classifier.predict(x[:3], verbose=0)['logits'].shape)\n"
    )
    script = tmp_path / "margin.py"
    script.write_text(code)
    env = dict(os.environ, KERAS_BACKEND=BACKEND, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "'verification_accuracy'" in done.stdout and "'recall@1'" in done.stdout
    assert "LOGITS (3, 10)" in done.stdout
