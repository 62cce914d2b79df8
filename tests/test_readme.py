"""The README's quick start runs as written, on the backend under test.

The README's other examples moved to docs/ (margin softmax, pair losses,
gradient methods): tests/test_docs.py runs them, with the checks these tests
made, in the JAX pass.
"""

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


def test_every_readme_python_block_is_run():
    """A new Python block in the README needs a test here (or belongs in a docs/ page, which runs it)."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks == [_snippet("## Quick start")], (
        f"README.md has {len(blocks)} Python blocks; only the quick start is run by tests/test_readme.py: "
        f"move the example to a docs/ page or add a test for it"
    )
