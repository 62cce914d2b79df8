"""EmbeddingEvaluation with a reference (gallery) set and the optional figures.

The callback's logic is NumPy after ``model.predict``; its fit on every
backend is tested in test_metrics_embedding.py.
"""

import keras
import numpy as np
import pytest
from conftest import one_backend

from lossweave.metrics import EmbeddingEvaluation, evaluate_embeddings

pytestmark = one_backend


def test_callback_with_a_reference_set_logs_the_gallery_figures():
    rng = np.random.default_rng(7)
    y, y_ref = np.arange(24) % 3, np.repeat([0, 1, 2, 5], 6)
    x = (rng.normal(size=(24, 6)) + 1.5 * np.eye(3, 6)[y]).astype("float32")
    x_ref = (rng.normal(size=(24, 6)) + 1.5 * np.eye(6, 6)[y_ref]).astype("float32")
    inputs = keras.Input((6,))
    model = keras.Model(inputs, {"embedding": keras.layers.Dense(4)(inputs)})
    callback = EmbeddingEvaluation(x, y, reference_x=x_ref, reference_labels=y_ref, pairs=False,
                                   ks=(1, 3), r_precision=True, clustering=True, seed=2)
    callback.set_model(model)
    logs = {}
    callback.on_epoch_end(0, logs)
    embedding = model.predict(x, verbose=0)["embedding"]
    expected = evaluate_embeddings(
        embedding, y, ks=(1, 3), pairs=False, seed=2, r_precision=True, clustering=True,
        reference_embeddings=model.predict(x_ref, verbose=0)["embedding"], reference_labels=y_ref,
    )
    assert logs == pytest.approx({f"val_{k}": v for k, v in expected.items()})
    assert logs["val_queries_without_reference"] == 0.0 and "val_nmi" in logs
    config = callback.get_config()
    assert config["reference_x"] is x_ref and config["r_precision"] and config["clustering"]
    assert EmbeddingEvaluation(**config).get_config().keys() == config.keys()

    with pytest.raises(ValueError, match="reference_x and reference_labels together"):
        EmbeddingEvaluation(x, y, reference_x=x_ref)
    with pytest.raises(ValueError, match="no class of `labels` appears in `reference_labels`"):
        EmbeddingEvaluation(x, y, reference_x=x_ref, reference_labels=y_ref + 10, pairs=False)
