"""lossweave: multi-term training objectives for Keras 3 (TensorFlow, JAX, PyTorch).

Layers of the package, dependencies pointing down::

    Objective            a keras.Model that wraps the user's model and owns the terms
    trainer/             the train step per backend: per-term gradients, the failed-step gate
    weighting/           how term losses (or gradients) become one update
    schedules/           step -> value functions evaluated inside the compiled step
    terms/               stateful loss terms (Keras Layers: centers, class weights)
    data/                bundled and file-based datasets, class-balanced batches
    metrics/             metrics on logits
    ops/                 pure functions over keras.ops
    _backend/            in-place row updates and runtime checks, one file per backend (private;
                         the row update is public as lw.terms.add_to_rows)
"""

from lossweave import data, metrics, ops, schedules, sharding, terms, weighting
from lossweave.errors import InvalidInputError
from lossweave.objective import Objective

__version__ = "0.1.0"

__all__ = [
    "InvalidInputError",
    "Objective",
    "data",
    "metrics",
    "ops",
    "schedules",
    "sharding",
    "terms",
    "weighting",
]
