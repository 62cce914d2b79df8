"""Softmax + center loss in a pure-functional JAX loop (``jax.value_and_grad`` + ``jax.jit``).

Everything is a value passed in and returned: the model's weights (a Keras
model run with ``model.stateless_call``), the optimizer state (Keras ``Adam``
used through ``stateless_apply``; optax is not needed) and the centers, a plain
``(num_classes, dim)`` array. Per step:

* ``total = lw.ops.softmax_cross_entropy(logits, labels) + LAMBDA * lw.ops.center_loss(features, labels, centers)``,
  differentiated with ``jax.value_and_grad`` with respect to the model weights only;
* ``centers = lw.ops.center_update(features, labels, centers, ALPHA)``: the
  paper's Eq. 4 as a pure function returning the new table (it stops the
  gradient itself, and uses the centers from before the update for the loss).

The data is scikit-learn's bundled digits (no download).

Run (JAX only)::

    KERAS_BACKEND=jax python examples/custom_loop_jax.py
    KERAS_BACKEND=jax python examples/custom_loop_jax.py --fast
"""

import argparse
import sys

import keras

if keras.backend.backend() != "jax":
    sys.exit(
        f"custom_loop_jax.py needs KERAS_BACKEND=jax (the loop uses jax.value_and_grad on "
        f"jax arrays); the backend is {keras.backend.backend()!r}. "
        f"Run: KERAS_BACKEND=jax python {sys.argv[0]}"
    )

import jax
import jax.numpy as jnp
import numpy as np
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


def make_train_step(model, optimizer):
    def loss_fn(trainable, non_trainable, centers, x, labels):
        outputs, non_trainable = model.stateless_call(trainable, non_trainable, x, training=True)
        features, logits = outputs["embedding"], outputs["logits"]
        softmax_loss = lw.ops.softmax_cross_entropy(logits, labels)
        loss_c = lw.ops.center_loss(features, labels, centers)
        total = softmax_loss + LAMBDA * loss_c
        return total, (non_trainable, features, softmax_loss, loss_c)

    # Gradient with respect to the first argument only: centers get none.
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    @jax.jit
    def train_step(state, x, labels):
        trainable, non_trainable, opt_vars, centers = state
        (_, (non_trainable, features, softmax_loss, loss_c)), grads = grad_fn(
            trainable, non_trainable, centers, x, labels
        )
        trainable, opt_vars = optimizer.stateless_apply(opt_vars, grads, trainable)
        centers = lw.ops.center_update(features, labels, centers, ALPHA)  # pure: a new array
        return (trainable, non_trainable, opt_vars, centers), (softmax_loss, loss_c)

    return train_step


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fast", action="store_true", help="few steps on a subset (for tests)")
    parser.add_argument("--epochs", type=int, default=None, help="default: 30 (3 with --fast)")
    parser.add_argument("--embedding-dim", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    epochs = args.epochs or (3 if args.fast else 30)
    batch_size = 64

    keras.utils.set_random_seed(args.seed)
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, stratify=y,
                                                        random_state=args.seed)
    if args.fast:
        x_train, y_train = x_train[:600], y_train[:600]
    # Drop the last partial batch: one input shape, one jit compilation.
    steps = len(x_train) // batch_size

    model = build_model(args.embedding_dim)
    optimizer = keras.optimizers.Adam(1e-2 if args.fast else 3e-3)
    optimizer.build(model.trainable_variables)
    centers = jnp.zeros((NUM_CLASSES, args.embedding_dim), "float32")  # paper: zeros
    state = (
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
        [v.value for v in optimizer.variables],
        centers,
    )
    train_step = make_train_step(model, optimizer)

    rng = np.random.default_rng(args.seed)
    for epoch in range(epochs):
        order = rng.permutation(len(x_train))
        softmax_sum = center_sum = 0.0
        for step in range(steps):
            batch = order[step * batch_size:(step + 1) * batch_size]
            state, (softmax_loss, loss_c) = train_step(state, x_train[batch], y_train[batch].astype("int32"))
            softmax_sum += float(softmax_loss)
            center_sum += float(loss_c)
        print(f"epoch {epoch + 1}/{epochs}: softmax={softmax_sum / steps:.4f} center={center_sum / steps:.4f}")

    trainable, non_trainable, _, centers = state
    predict = jax.jit(lambda tv, ntv, x: model.stateless_call(tv, ntv, x)[0])
    outputs = {k: np.asarray(v) for k, v in predict(trainable, non_trainable, x_test).items()}
    centers = np.asarray(centers)
    test_accuracy = float(np.mean(np.argmax(outputs["logits"], axis=-1) == y_test))
    print(f"test accuracy: {test_accuracy:.3f} (chance: 0.100)")

    # Features of a class sit closer to their own center than to the others.
    dist = np.linalg.norm(outputs["embedding"][:, None, :] - centers[None], axis=-1)
    own_mask = np.eye(NUM_CLASSES, dtype=bool)[y_test]
    own, other = float(dist[own_mask].mean()), float(dist[~own_mask].mean())
    print(f"mean distance of test features: to own center {own:.3f}, to other centers {other:.3f}")

    # Write the trained weights back into the Keras model for ordinary use.
    for variable, value in zip(model.trainable_variables, trainable):
        variable.assign(value)
    predict_ok = np.allclose(model.predict(x_test, verbose=0)["logits"], outputs["logits"], atol=1e-5)
    print(f"model.predict after writing the weights back matches: {predict_ok}")

    failures = []
    if not np.abs(centers).sum() > 0:
        failures.append("the centers never moved from zero")
    if not test_accuracy > 0.3:
        failures.append(f"test accuracy {test_accuracy:.3f} is too low")
    if not own < other:
        failures.append("test features are not closer to their own center")
    if not predict_ok:
        failures.append("the Keras model does not reproduce the stateless outputs")
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
