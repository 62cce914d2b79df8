"""A siamese network with three heads: ``compile(loss_weights=...)`` as an Objective.

What it shows:

* two 8x8 digit images (scikit-learn's bundled digits, no download; the pairs
  are drawn with a seed, half of them "same digit") go through ONE shared
  feature extractor;
* three heads: ``ctg_out_1`` and ``ctg_out_2`` (10-way logits, one per image,
  from one shared classifier layer) and ``bin_out`` ("same digit or not",
  2-way logits) computed from the Euclidean distance of the two features;
* the Keras recipe ``compile(loss={...}, loss_weights={'ctg_out_1': 1.,
  'ctg_out_2': 1., 'bin_out': 0.5})`` written as an ``lw.Objective`` with one
  ``SoftmaxCrossEntropy`` term per head and ``lw.weighting.Fixed({"same": 0.5})``,
  trained with plain ``fit(x=[img1, img2], y={"label_1": ..., "label_2": ...,
  "same": ...})``; the per-head accuracies come from ``compile(metrics={...})``
  (each output's metrics compare with the target of the term reading it);
* the check that the Objective's total loss is Keras's own ``loss_weights``
  total: a plain Keras model on the same layers, compiled with dict losses and
  ``loss_weights``, gives the same ``evaluate`` loss on the same data;
* ``objective.model.predict([a, b])``: the plain inference model, no labels.

Run it with any backend::

    KERAS_BACKEND=jax python examples/siamese_three_heads.py
    KERAS_BACKEND=torch python examples/siamese_three_heads.py --fast
    KERAS_BACKEND=tensorflow python examples/siamese_three_heads.py --fast
"""

import argparse
import sys

import keras
import numpy as np
from keras import ops
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import lossweave as lw

NUM_CLASSES = 10
LOSS_WEIGHTS = {"ctg_out_1": 1.0, "ctg_out_2": 1.0, "bin_out": 0.5}  # the Keras recipe


class EuclideanDistance(keras.layers.Layer):
    """``||f1 - f2||_2`` of the L2-normalised features, shape ``(batch, 1)``, in ``[0, 2]``.

    Normalising keeps the distance on a fixed scale for the ``Dense(2)`` on top
    (raw feature norms grow during training); eps keeps the gradient finite at 0.
    """

    def call(self, inputs):
        f1, f2 = (ops.normalize(f, axis=-1) for f in inputs)
        return ops.sqrt(ops.sum(ops.square(f1 - f2), axis=-1, keepdims=True) + 1e-9)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], 1)


def make_pairs(x, y, n_pairs, rng):
    """``n_pairs`` pairs of images, half of them of the same digit (seeded)."""
    by_class = [np.flatnonzero(y == c) for c in range(NUM_CLASSES)]
    first = rng.integers(0, len(x), n_pairs)
    same = (np.arange(n_pairs) % 2 == 0)
    rng.shuffle(same)
    second = np.empty(n_pairs, dtype=int)
    for i, (j, is_same) in enumerate(zip(first, same)):
        if is_same:
            second[i] = rng.choice(by_class[y[j]])
        else:
            other = rng.choice([c for c in range(NUM_CLASSES) if c != y[j]])
            second[i] = rng.choice(by_class[other])
    return x[first], x[second], y[first], y[second], same.astype("int32")


def build_model(feature_dim):
    img_1 = keras.Input((64,), name="img_1")
    img_2 = keras.Input((64,), name="img_2")
    extractor = keras.Sequential(  # ONE feature extractor, applied to both images
        [keras.layers.Dense(128, activation="relu"), keras.layers.Dense(feature_dim)],
        name="features",
    )
    f1, f2 = extractor(img_1), extractor(img_2)
    classifier = keras.layers.Dense(NUM_CLASSES, name="classifier")  # shared: same digits on both sides
    ctg_1 = keras.layers.Identity(name="ctg_out_1")(classifier(f1))
    ctg_2 = keras.layers.Identity(name="ctg_out_2")(classifier(f2))
    distance = EuclideanDistance(name="distance")([f1, f2])
    same = keras.layers.Dense(2, name="bin_out")(distance)
    return keras.Model(
        [img_1, img_2], {"ctg_out_1": ctg_1, "ctg_out_2": ctg_2, "bin_out": same}, name="siamese"
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fast", action="store_true", help="few epochs on fewer pairs (for tests)")
    parser.add_argument("--epochs", type=int, default=None, help="default: 20 (4 with --fast)")
    parser.add_argument("--pairs", type=int, default=None, help="training pairs (default 6000, 1500 with --fast)")
    parser.add_argument("--feature-dim", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    epochs = args.epochs or (4 if args.fast else 20)
    n_pairs = args.pairs or (1500 if args.fast else 6000)

    keras.utils.set_random_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, stratify=y, random_state=args.seed)
    a, b, y_a, y_b, same = make_pairs(x_train, y_train, n_pairs, rng)
    ta, tb, ty_a, ty_b, t_same = make_pairs(x_test, y_test, 1000, rng)

    model = build_model(args.feature_dim)
    objective = lw.Objective(
        model,
        {
            "ctg_1": lw.terms.SoftmaxCrossEntropy(on="ctg_out_1", target="label_1"),
            "ctg_2": lw.terms.SoftmaxCrossEntropy(on="ctg_out_2", target="label_2"),
            "same": lw.terms.SoftmaxCrossEntropy(on="bin_out", target="same"),
        },
        weighting=lw.weighting.Fixed({"same": LOSS_WEIGHTS["bin_out"]}),  # ctg_1, ctg_2 keep weight 1
    )
    objective.compile(
        optimizer=keras.optimizers.Adam(1e-2 if args.fast else 3e-3),
        metrics={"ctg_out_1": ["accuracy"], "ctg_out_2": ["accuracy"], "bin_out": ["accuracy"]},
    )
    history = objective.fit(
        x=[a, b],
        y={"label_1": y_a, "label_2": y_b, "same": same},
        epochs=epochs,
        batch_size=64,
        verbose=0 if args.fast else 2,
    )
    logs = {k: v[-1] for k, v in history.history.items()}
    print(
        f"backend={keras.backend.backend()} pairs={n_pairs} epochs={epochs} last epoch: "
        f"loss={logs['loss']:.4f} loss/ctg_1={logs['loss/ctg_1']:.4f} loss/ctg_2={logs['loss/ctg_2']:.4f} "
        f"loss/same={logs['loss/same']:.4f} weight/same={logs['weight/same']:.2f}"
    )
    print("history keys: " + ", ".join(sorted(history.history)))

    # The same total as Keras's loss_weights: a plain Keras model on the same layers.
    test_x, test_y = [ta, tb], {"label_1": ty_a, "label_2": ty_b, "same": t_same}
    scores = objective.evaluate(test_x, test_y, batch_size=250, verbose=0, return_dict=True)
    reference = keras.Model(model.inputs, model.output, name="siamese_keras")  # shares the weights
    reference.compile(
        loss={name: keras.losses.SparseCategoricalCrossentropy(from_logits=True) for name in LOSS_WEIGHTS},
        loss_weights=LOSS_WEIGHTS,
    )
    keras_loss = reference.evaluate(
        test_x, {"ctg_out_1": ty_a, "ctg_out_2": ty_b, "bin_out": t_same},
        batch_size=250, verbose=0, return_dict=True,
    )["loss"]
    equal = abs(scores["loss"] - keras_loss) <= 1e-5
    print(
        f"test loss: Objective {scores['loss']:.6f}, Keras loss_weights {keras_loss:.6f}, "
        f"|diff| {abs(scores['loss'] - keras_loss):.2e}; equal within 1e-5: {equal}"
    )

    # Inference: the plain model, no labels.
    outputs = objective.model.predict([ta, tb], batch_size=250, verbose=0)
    acc_1 = float(np.mean(np.argmax(outputs["ctg_out_1"], -1) == ty_a))
    acc_2 = float(np.mean(np.argmax(outputs["ctg_out_2"], -1) == ty_b))
    acc_same = float(np.mean(np.argmax(outputs["bin_out"], -1) == t_same))
    print(
        f"test accuracy (predict): ctg_out_1 {acc_1:.3f}, ctg_out_2 {acc_2:.3f} (chance 0.100), "
        f"bin_out {acc_same:.3f} (chance 0.500)"
    )
    print(
        "test accuracy (evaluate metrics): "
        + ", ".join(f"{k} {v:.3f}" for k, v in sorted(scores.items()) if k.endswith("accuracy"))
    )

    failures = []
    if not equal:
        failures.append(f"Objective loss {scores['loss']} differs from Keras's loss_weights total {keras_loss}")
    if not (acc_1 > 0.5 and acc_2 > 0.5):
        failures.append(f"digit accuracies {acc_1:.3f}, {acc_2:.3f} are too low")
    if not acc_same > 0.6:
        failures.append(f"same-digit accuracy {acc_same:.3f} is too low")
    if not abs(scores.get("ctg_out_1_accuracy", -1.0) - acc_1) < 1e-6:
        failures.append("the ctg_out_1 accuracy metric disagrees with predict")
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
