"""lossweave._keras_compat: the private Keras pieces, refused outside the Keras range they were tested with."""

import importlib
import re
from pathlib import Path

import keras
import pytest

from conftest import one_backend
from lossweave import _keras_compat


@one_backend
@pytest.mark.parametrize("version", ["3.14.0", "3.16.0", "4.0.1"])
def test_an_untested_keras_is_refused_with_what_to_install(monkeypatch, version):
    monkeypatch.setattr(keras, "__version__", version)
    with pytest.raises(ImportError, match=rf"received Keras {version}.*pip install 'keras>=3\.15,<3\.16'"):
        importlib.reload(_keras_compat)
    monkeypatch.undo()
    importlib.reload(_keras_compat)  # the installed Keras is in range


@one_backend
def test_pyproject_declares_the_tested_range():
    text = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    low, high = (".".join(map(str, v)) for v in _keras_compat.TESTED)
    assert f'"keras>={low},<{high}"' in text


PRIVATE = re.compile(r"\b(model|layer|optimizer|operation)\._[a-z]|_keras_history|_inbound_nodes")


@one_backend
def test_no_private_keras_outside_the_compatibility_module():
    """``keras.src`` imports and private ``keras.Model`` attributes (``model._x``) live in ``_keras_compat`` only."""
    package = Path(_keras_compat.__file__).parent
    found = []
    for path in sorted(package.rglob("*.py")):
        if path.name == "_keras_compat.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if "keras.src" in line or PRIVATE.search(line):
                found.append(f"{path.relative_to(package)}:{number}: {line.strip()}")
    assert not found, "private Keras outside lossweave._keras_compat:\n" + "\n".join(found)
