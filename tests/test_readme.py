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

import pytest

from conftest import BACKEND, one_backend

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


@pytest.mark.parametrize("jit_compile", [False, True], ids=["no-jit", "jit"])
def test_bad_label_raises_invalid_input_error_itself(jit_compile):
    """The README's promise: ``lw.InvalidInputError`` itself, not a backend's error around it, on every backend."""
    if BACKEND == "torch" and jit_compile:
        pytest.skip("Keras does not XLA-compile PyTorch steps")
    import keras
    import numpy as np

    import lossweave as lw

    inputs = keras.Input((4,))
    embedding = keras.layers.Dense(2)(inputs)
    model = keras.Model(inputs, {"embedding": embedding, "logits": keras.layers.Dense(3)(embedding)})
    objective = lw.Objective(model, terms={
        "softmax": lw.terms.SoftmaxCrossEntropy(on="logits", target="label"),
        "center": lw.terms.CenterLoss(num_classes=3, on="embedding", target="label"),
    })
    objective.compile(optimizer="sgd", jit_compile=jit_compile)
    x, y = np.ones((8, 4), "float32"), np.array([0, 1, 2, 0, 1, 2, 0, 7])
    for call in (lambda: objective.fit(x, {"label": y}, batch_size=8, epochs=1, verbose=0),
                 lambda: objective.train_on_batch(x, {"label": y})):
        with pytest.raises(lw.InvalidInputError, match="invalid label") as info:
            call()
        assert type(info.value) is lw.InvalidInputError


@one_backend
def test_no_page_says_the_error_arrives_wrapped():
    """``lw.InvalidInputError`` leaves ``fit`` as it is on TensorFlow and JAX: no text may say otherwise."""
    root = README.parent
    files = [README, *sorted((root / "docs").glob("*.md")), *sorted((root / "src").rglob("*.py"))]
    wrapped = re.compile(r"wrap\w*\W+(?:\w+\W+){0,3}`?InvalidArgumentError|backend wraps it", re.I)
    found = [f"{f.relative_to(root)}: {m.group(0)!r}" for f in files for m in wrapped.finditer(f.read_text())]
    assert not found, f"these say InvalidInputError arrives wrapped; it is raised itself: {found}"
