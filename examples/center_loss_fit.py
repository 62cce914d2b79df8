"""Softmax + center loss with plain ``Objective.fit`` (Wen et al., ECCV 2016).

What it shows:

* a small classifier on scikit-learn's bundled digits (8x8 images, 10 classes,
  no download) whose model returns two outputs: the ``embedding`` (the deep
  features) and the ``logits`` of the last dense layer (no softmax layer);
* the objective ``softmax cross-entropy(logits) + LAMBDA * center loss(embedding)``
  with the paper's center update (ALPHA is the center learning rate), trained
  with ``fit`` and an accuracy metric computed on the logits;
* sparse labels by default, one-hot labels with ``--one-hot`` (same code);
* how compact the classes are: mean distance of test features to their own
  class center vs to the other centers (compare with ``--lambda 0``: the
  centers are still tracked, but nothing pulls the features towards them);
* ``objective.model.predict(x)``: the plain inference model, no labels;
* ``objective.save(path)`` / ``keras.saving.load_model(path)``: the centers,
  which are not trainable weights, survive the round trip.

Run it with any backend::

    KERAS_BACKEND=jax python examples/center_loss_fit.py
    KERAS_BACKEND=torch python examples/center_loss_fit.py --one-hot
    KERAS_BACKEND=tensorflow python examples/center_loss_fit.py --fast

This replaces the TF1 snippet ``loss, centers, centers_update_op =
get_center_loss(features, labels, ALPHA, NUM_CLASSES)`` plus the
``tf.control_dependencies([centers_update_op])`` around the train op: the
centers are a non-trainable variable of the ``CenterLoss`` term, updated
inside each training step.
"""

import argparse
import os
import sys
import tempfile

import keras
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import lossweave as lw

NUM_CLASSES = 10
ALPHA = 0.5  # center learning rate (paper: 0.5)
LAMBDA = 0.003  # weight of the center loss (usual range 0.0005-0.003)


def load_data(one_hot, fast, seed):
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")  # pixel values are 0..16
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.25, stratify=y, random_state=seed
    )
    if fast:
        x_train, y_train = x_train[:600], y_train[:600]
    if one_hot:  # float32 rows of width NUM_CLASSES; the terms and the metric accept both
        y_train = keras.utils.to_categorical(y_train, NUM_CLASSES)
        y_test = keras.utils.to_categorical(y_test, NUM_CLASSES)
    return x_train, y_train, x_test, y_test


def build_model(embedding_dim):
    inputs = keras.Input((64,), name="pixels")
    hidden = keras.layers.Dense(128, activation="relu")(inputs)
    embedding = keras.layers.Dense(embedding_dim, name="embedding")(hidden)
    # The softmax loss reads the logits of the last dense layer: no softmax layer.
    logits = keras.layers.Dense(NUM_CLASSES, name="logits")(embedding)
    return keras.Model(inputs, {"embedding": embedding, "logits": logits}, name="digits")


def center_distances(features, labels, centers):
    """Mean distance of each feature to its own class center and to the other centers."""
    dist = np.linalg.norm(features[:, None, :] - centers[None, :, :], axis=-1)  # (n, classes)
    own = dist[np.arange(len(labels)), labels]
    mask = np.ones_like(dist, dtype=bool)
    mask[np.arange(len(labels)), labels] = False
    return float(own.mean()), float(dist[mask].mean())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fast", action="store_true", help="few epochs on a subset (for tests)")
    parser.add_argument("--one-hot", action="store_true", help="give one-hot labels instead of sparse")
    parser.add_argument("--epochs", type=int, default=None, help="default: 30 (3 with --fast)")
    parser.add_argument("--embedding-dim", type=int, default=16)
    parser.add_argument("--lambda", dest="lambda_", type=float, default=LAMBDA,
                        help=f"weight of the center loss (default {LAMBDA}); 0 for a softmax-only baseline")
    parser.add_argument("--out", default=None, help="directory for the saved .keras file (default: a temp dir)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    epochs = args.epochs or (3 if args.fast else 30)

    keras.utils.set_random_seed(args.seed)
    x_train, y_train, x_test, y_test = load_data(args.one_hot, args.fast, args.seed)
    y_test_sparse = np.argmax(y_test, axis=-1) if args.one_hot else y_test

    objective = lw.Objective(
        build_model(args.embedding_dim),
        terms={
            "softmax": lw.terms.SoftmaxCrossEntropy(on="logits", target="label"),
            "center": lw.terms.CenterLoss(
                num_classes=NUM_CLASSES, alpha=ALPHA, on="embedding", target="label"
            ),
        },
        weighting=lw.weighting.Fixed({"center": args.lambda_}),  # softmax keeps weight 1
    )
    objective.compile(
        optimizer=keras.optimizers.Adam(1e-2 if args.fast else 3e-3),
        metrics={"logits": [lw.metrics.LogitsAccuracy()]},
    )
    history = objective.fit(
        x_train, {"label": y_train}, epochs=epochs, batch_size=64, verbose=0 if args.fast else 2
    )
    logs = {k: v[-1] for k, v in history.history.items()}
    print(
        f"backend={keras.backend.backend()} labels={'one-hot' if args.one_hot else 'sparse'} "
        f"lambda={args.lambda_} "
        f"epochs={epochs} last epoch: loss={logs['loss']:.4f} "
        f"loss/softmax={logs['loss/softmax']:.4f} loss/center={logs['loss/center']:.4f} "
        f"accuracy={logs['accuracy']:.3f}"
    )

    # Evaluate with labels (the objective), then predict without (the plain model).
    scores = objective.evaluate(x_test, {"label": y_test}, verbose=0, return_dict=True)
    outputs = objective.model.predict(x_test, verbose=0)  # {"embedding": ..., "logits": ...}
    test_accuracy = float(np.mean(np.argmax(outputs["logits"], axis=-1) == y_test_sparse))
    print(f"test accuracy: {test_accuracy:.3f} (evaluate: {scores['accuracy']:.3f}, chance: 0.100)")

    centers = keras.ops.convert_to_numpy(objective.terms["center"].centers)
    own, other = center_distances(outputs["embedding"], y_test_sparse, centers)
    print(f"mean distance of test features: to own center {own:.3f}, to other centers {other:.3f} "
          f"(ratio {own / other:.2f})")

    # Save the whole objective (model + centers + optimizer) in one file and reload it.
    out_dir = args.out or tempfile.mkdtemp(prefix="lossweave-")
    path = os.path.join(out_dir, "center_loss_digits.keras")
    objective.save(path)
    reloaded = keras.saving.load_model(path)  # lossweave classes are registered on import
    reloaded_centers = keras.ops.convert_to_numpy(reloaded.terms["center"].centers)
    reloaded_logits = reloaded.model.predict(x_test, verbose=0)["logits"]
    centers_ok = np.allclose(reloaded_centers, centers)
    predict_ok = np.allclose(reloaded_logits, outputs["logits"], atol=1e-5)
    print(f"saved to {path}; reloaded centers equal: {centers_ok} "
          f"(|centers| = {np.abs(centers).sum():.3f}); reloaded predictions equal: {predict_ok}")

    failures = []
    if not np.abs(centers).sum() > 0:
        failures.append("the centers never moved from zero")
    if not (centers_ok and predict_ok):
        failures.append("the reloaded objective differs from the saved one")
    if not test_accuracy > 0.3:  # 3x chance, even after the --fast run
        failures.append(f"test accuracy {test_accuracy:.3f} is too low")
    if not own < other:
        failures.append("test features are not closer to their own center")
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
