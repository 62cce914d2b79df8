"""Load a saved Objective in a fresh process, train M more epochs, save its state.

Run by tests/test_interruption.py: ``python interruption_run.py SAVED.keras EPOCHS OUT.npz``.
"""

import sys

import keras
import numpy as np

import lossweave as lw  # noqa: F401  (registers the serializable classes)
from interruption_common import data, state


def main(path, epochs, out):
    objective = keras.saving.load_model(path)
    x, y = data()
    history = objective.fit(x, {"label": y}, batch_size=16, epochs=epochs, shuffle=False, verbose=0)
    np.savez(out, **state(objective), **{f"history/{k}": np.array(v) for k, v in history.history.items()})


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
