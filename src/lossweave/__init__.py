"""lossweave: multi-term training objectives for Keras 3 (TensorFlow, JAX, PyTorch).

Layers of the package, dependencies pointing down::

    Objective            a keras.Model that wraps the user's model and owns the terms
    trainer/             the train step per backend: per-term gradients, the failed-step gate
    weighting/           how term losses (or gradients) become one update
    schedules/           step -> value functions evaluated inside the compiled step
    terms/               stateful loss terms (Keras Layers: centers, class weights)
    data/                bundled and file-based datasets, class-balanced batches
    retrieval/           an index searched on the device, threshold calibration, open-set matching
    metrics/             metrics on logits
    ops/                 pure functions over keras.ops
    _backend/            in-place row updates and runtime checks, one file per backend (private;
                         the row update is public as lw.terms.add_to_rows)

The names below are imported on first use (the command line's help then needs
no Keras): ``import keras`` before ``import lossweave``, or use any ``lw.*``
name, before ``keras.saving.load_model`` reads a lossweave file.
"""

import importlib as _importlib
import sys as _sys

__version__ = "0.1.0"

# Public name -> module, imported on first use, so that `lossweave --help` (lossweave.cli)
# imports neither Keras nor a backend. When Keras is already loaded everything is imported
# at once, so that `import keras, lossweave` registers every class for keras.saving.load_model
# (`import lossweave` alone registers them at the first use of a name below).
_LAZY = {
    "arguments": "lossweave.arguments",
    "data": "lossweave.data",
    "distances": "lossweave.distances",
    "miners": "lossweave.miners",
    "reducers": "lossweave.reducers",
    "metrics": "lossweave.metrics",
    "ops": "lossweave.ops",
    "retrieval": "lossweave.retrieval",
    "schedules": "lossweave.schedules",
    "sharding": "lossweave.sharding",
    "terms": "lossweave.terms",
    "weighting": "lossweave.weighting",
    "InvalidInputError": "lossweave.errors",
    "Objective": "lossweave.objective",
}


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'lossweave' has no attribute {name!r}")
    module = _importlib.import_module(_LAZY[name])
    value = module if _LAZY[name] == f"lossweave.{name}" else getattr(module, name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


if "keras" in _sys.modules:
    for _name in _LAZY:
        __getattr__(_name)

__all__ = [
    "InvalidInputError",
    "Objective",
    "arguments",
    "data",
    "distances",
    "metrics",
    "miners",
    "ops",
    "reducers",
    "retrieval",
    "schedules",
    "sharding",
    "terms",
    "weighting",
]
