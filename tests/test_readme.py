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
