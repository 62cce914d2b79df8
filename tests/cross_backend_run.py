"""Run under one backend (KERAS_BACKEND) and print JSON: ops results and centers after a short fit.

Used by test_cross_backend.py, which runs it under all three backends and compares.
"""

import json
import sys

import keras
import numpy as np

import lossweave as lw

rng = np.random.default_rng(11)
x = rng.normal(size=(64, 10)).astype("float32")
y = rng.integers(0, 5, 64)
centers = rng.normal(size=(5, 3)).astype("float32")

loss, new_centers = lw.ops.center_loss_and_update(x[:, :3], y, centers, 0.5)
term = lw.terms.CenterLoss(num_classes=5, alpha=0.5)
term.build((None, 3))
term.centers.assign(centers)
term_loss = term(x[:, :3], y, training=True)

inputs = keras.Input((10,))
emb = keras.layers.Dense(3)(keras.layers.Dense(8, activation="tanh")(inputs))
model = keras.Model(inputs, {"embedding": emb, "logits": keras.layers.Dense(5)(emb)})
model.set_weights([rng.normal(scale=0.5, size=w.shape).astype("float32") for w in model.get_weights()])
objective = lw.Objective(
    model,
    {"softmax": lw.terms.SoftmaxCrossEntropy(on="logits"), "center": lw.terms.CenterLoss(num_classes=5, on="embedding")},
    weighting=lw.weighting.Fixed({"center": 0.1}),
)
objective.compile(optimizer=keras.optimizers.SGD(0.1))
objective.fit(x, {"label": y}, batch_size=16, epochs=3, shuffle=False, verbose=0)

json.dump(
    {
        "backend": keras.backend.backend(),
        "ops_loss": float(loss),
        "ops_centers": keras.ops.convert_to_numpy(new_centers).tolist(),
        "term_loss": float(term_loss),
        "term_centers": keras.ops.convert_to_numpy(term.centers).tolist(),
        "fit_centers": keras.ops.convert_to_numpy(objective.terms["center"].centers).tolist(),
    },
    sys.stdout,
)
