"""Softmax + center loss in a hand-written TensorFlow ``tf.GradientTape`` loop.

The TF1 center-loss snippet returned ``loss, centers, centers_update_op``; in
TF2 the same thing is two pure functions from ``lossweave.ops`` plus a
``tf.Variable`` you own:

* ``loss_c, new_centers = lw.ops.center_loss_and_update(features, labels, centers, ALPHA)``
  then ``centers.assign(new_centers)`` (``--update assign``, the default):
  simple, but rewrites the whole ``(num_classes, dim)`` table every step;
* ``idx, deltas = lw.ops.center_update_rows(features, labels, centers, ALPHA)``
  then ``centers.scatter_nd_add(idx[:, None], deltas)`` (``--update scatter``):
  touches only the batch's rows, O(batch x dim) whatever ``num_classes`` is.

The total loss is ``lw.ops.softmax_cross_entropy(logits, labels) + LAMBDA * loss_c``;
the loss uses the centers from before the update (the paper's Algorithm 1) and
the centers get no gradient (they are moved by Eq. 4 only). The data is
scikit-learn's bundled digits. At the end the script checks, on one batch, that
both update forms give the same centers.

Run (TensorFlow only)::

    KERAS_BACKEND=tensorflow python examples/custom_loop_tensorflow.py
    KERAS_BACKEND=tensorflow python examples/custom_loop_tensorflow.py --update scatter --fast
"""

import argparse
import sys

import keras

if keras.backend.backend() != "tensorflow":
    sys.exit(
        f"custom_loop_tensorflow.py needs KERAS_BACKEND=tensorflow (the loop uses tf.GradientTape "
        f"and tf.Variable); the backend is {keras.backend.backend()!r}. "
        f"Run: KERAS_BACKEND=tensorflow python {sys.argv[0]}"
    )

import tensorflow as tf
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import lossweave as lw

NUM_CLASSES = 10
ALPHA = 0.5  # center learning rate
LAMBDA = 0.003  # weight of the center loss


def build_model(embedding_dim):
    inputs = keras.Input((64,))
    hidden = keras.layers.Dense(128, activation="relu")(inputs)
    embedding = keras.layers.Dense(embedding_dim, name="embedding")(hidden)
    logits = keras.layers.Dense(NUM_CLASSES, name="logits")(embedding)  # no softmax layer
    return keras.Model(inputs, {"embedding": embedding, "logits": logits})


def make_train_step(model, optimizer, centers, update):
    @tf.function
    def train_step(x, labels):
        with tf.GradientTape() as tape:
            outputs = model(x, training=True)
            features, logits = outputs["embedding"], outputs["logits"]
            softmax_loss = lw.ops.softmax_cross_entropy(logits, labels)
            if update == "assign":
                loss_c, new_centers = lw.ops.center_loss_and_update(features, labels, centers, ALPHA)
            else:
                loss_c = lw.ops.center_loss(features, labels, centers)
            total = softmax_loss + LAMBDA * loss_c
        grads = tape.gradient(total, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        # The center update is not a gradient step: it runs after the loss has
        # read the old centers (tf.function keeps the program order of the reads
        # and writes of a variable).
        if update == "assign":
            centers.assign(new_centers)
        else:
            idx, deltas = lw.ops.center_update_rows(features, labels, centers, ALPHA)
            centers.scatter_nd_add(idx[:, None], deltas)
        return softmax_loss, loss_c

    return train_step


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fast", action="store_true", help="few steps on a subset (for tests)")
    parser.add_argument("--update", choices=("assign", "scatter"), default="assign",
                        help="assign the new table, or scatter-add the batch's row deltas")
    parser.add_argument("--epochs", type=int, default=None, help="default: 30 (3 with --fast)")
    parser.add_argument("--embedding-dim", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    epochs = args.epochs or (3 if args.fast else 30)

    keras.utils.set_random_seed(args.seed)
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, stratify=y,
                                                        random_state=args.seed)
    if args.fast:
        x_train, y_train = x_train[:600], y_train[:600]
    dataset = (tf.data.Dataset.from_tensor_slices((x_train, y_train.astype("int32")))
               .shuffle(len(x_train), seed=args.seed).batch(64))

    model = build_model(args.embedding_dim)
    optimizer = keras.optimizers.Adam(1e-2 if args.fast else 3e-3)
    # Centers start at zero as in the paper; not trainable: no optimizer touches them.
    centers = tf.Variable(tf.zeros((NUM_CLASSES, args.embedding_dim)), trainable=False, name="centers")
    train_step = make_train_step(model, optimizer, centers, args.update)

    for epoch in range(epochs):
        softmax_mean, center_mean = keras.metrics.Mean(), keras.metrics.Mean()
        for xb, yb in dataset:
            softmax_loss, loss_c = train_step(xb, yb)
            softmax_mean.update_state(softmax_loss)
            center_mean.update_state(loss_c)
        print(f"epoch {epoch + 1}/{epochs}: softmax={float(softmax_mean.result()):.4f} "
              f"center={float(center_mean.result()):.4f}")

    outputs = model(x_test, training=False)
    test_accuracy = float(tf.reduce_mean(lw.ops.logits_accuracy(outputs["logits"], y_test)))
    print(f"update={args.update} test accuracy: {test_accuracy:.3f} (chance: 0.100)")

    # Both update forms give the same centers (up to float rounding).
    features = outputs["embedding"][:64]
    labels = y_test[:64]
    _, assigned = lw.ops.center_loss_and_update(features, labels, centers, ALPHA)
    scattered = tf.Variable(centers)
    idx, deltas = lw.ops.center_update_rows(features, labels, scattered, ALPHA)
    scattered.scatter_nd_add(idx[:, None], deltas)
    gap = float(tf.reduce_max(tf.abs(assigned - scattered)))
    agree = gap < 1e-5
    print(f"assign and scatter_nd_add updates agree: {agree} (max difference {gap:.2e})")

    failures = []
    if not float(tf.reduce_sum(tf.abs(centers))) > 0:
        failures.append("the centers never moved from zero")
    if not agree:
        failures.append("the two center-update forms disagree")
    if not test_accuracy > 0.3:
        failures.append(f"test accuracy {test_accuracy:.3f} is too low")
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
