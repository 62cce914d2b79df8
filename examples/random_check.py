"""The TF1 center-loss snippet's sanity check, on any Keras backend.

The widely copied TF1 code ran ``get_center_loss(features, labels, alpha,
num_classes)`` on 32 random features with one-hot labels over 240 classes and
printed the loss and the updated centers. This script does the same three ways
and checks they agree, step after step:

1. the pure op ``loss, new_centers = lw.ops.center_loss_and_update(features, labels, centers, ALPHA)``
   (for custom training loops: you own the centers);
2. the ``lw.terms.CenterLoss`` layer: ``term(features, labels, training=True)``
   updates its own non-trainable ``term.centers`` in place (what ``Objective.fit`` uses);
3. a NumPy transcription of the TF1 snippet (``tf.nn.l2_loss``,
   ``tf.unique_with_counts``, ``tf.scatter_sub``).

lossweave's loss is the batch *mean* ``1/2 mean_i ||x_i - c_{y_i}||^2``; the TF1
snippet's ``tf.nn.l2_loss`` is the *sum*, i.e. ``batch_size`` times larger (see
``lossweave.ops.center`` for how LAMBDA maps between the two). The center
update (Eq. 4, with the ``1 / (1 + n_j)`` count) is the same.

Run with any backend::

    KERAS_BACKEND=torch python examples/random_check.py
    KERAS_BACKEND=jax python examples/random_check.py --fast
"""

import argparse
import sys

import keras
import numpy as np

import lossweave as lw

BATCH = 32
NUM_CLASSES = 240
ALPHA = 0.5


def tf1_reference(features, labels_one_hot, centers, alpha):
    """NumPy transcription of the TF1 ``get_center_loss``: (l2_loss sum, new centers)."""
    labels = np.argmax(labels_one_hot, axis=-1)
    centers_batch = centers[labels]
    loss = np.sum((features - centers_batch) ** 2) / 2  # tf.nn.l2_loss
    _, unique_idx, unique_count = np.unique(labels, return_inverse=True, return_counts=True)
    appear_times = unique_count[unique_idx][:, None]
    diff = alpha * (centers_batch - features) / (1 + appear_times)
    new_centers = centers.copy()
    np.subtract.at(new_centers, labels, diff)  # tf.scatter_sub sums duplicate indices
    return loss, new_centers


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fast", action="store_true", help="2 steps, print fewer rows (for tests)")
    parser.add_argument("--steps", type=int, default=None, help="updates to run (default 3, 2 with --fast)")
    parser.add_argument("--dim", type=int, default=2, help="feature dimension")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    steps = args.steps or (2 if args.fast else 3)
    rows_shown = 4 if args.fast else 8

    keras.utils.set_random_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    print(f"backend={keras.backend.backend()} batch={BATCH} classes={NUM_CLASSES} dim={args.dim} alpha={ALPHA}")

    centers_op = np.zeros((NUM_CLASSES, args.dim), "float32")  # the op's centers: ours to keep
    centers_ref = centers_op.copy()
    term = lw.terms.CenterLoss(num_classes=NUM_CLASSES, alpha=ALPHA)  # centers built at first call
    all_agree = True
    for step in range(1, steps + 1):
        features = rng.normal(size=(BATCH, args.dim)).astype("float32")
        labels = keras.utils.to_categorical(rng.integers(0, NUM_CLASSES, BATCH), NUM_CLASSES)
        before = centers_op.copy()

        loss_op, new_centers = lw.ops.center_loss_and_update(
            keras.ops.convert_to_tensor(features), keras.ops.convert_to_tensor(labels), centers_op, ALPHA
        )
        loss_op, centers_op = float(loss_op), keras.ops.convert_to_numpy(new_centers)
        loss_layer = float(term(keras.ops.convert_to_tensor(features), keras.ops.convert_to_tensor(labels),
                                training=True))
        centers_layer = keras.ops.convert_to_numpy(term.centers)
        loss_ref, centers_ref = tf1_reference(features, labels, centers_ref, ALPHA)

        changed = np.flatnonzero(np.any(centers_op != before, axis=-1))
        counts = np.bincount(np.argmax(labels, axis=-1), minlength=NUM_CLASSES)
        print(f"step {step}: loss (mean) op={loss_op:.6f} layer={loss_layer:.6f} | "
              f"TF1 l2_loss (sum)={loss_ref:.6f} = {BATCH} x {loss_ref / BATCH:.6f}")
        print(f"  {len(changed)} center rows changed (classes seen more than once: {int(np.sum(counts > 1))}):")
        for j in changed[:rows_shown]:
            print(f"    class {j:3d} (n={counts[j]}): {np.round(before[j], 4)} -> {np.round(centers_op[j], 4)}")
        if len(changed) > rows_shown:
            print(f"    ... {len(changed) - rows_shown} more")

        agree = (
            np.isclose(loss_op, loss_layer, rtol=1e-5)
            and np.isclose(loss_op * BATCH, loss_ref, rtol=1e-4)
            and np.allclose(centers_op, centers_layer, atol=1e-6)
            and np.allclose(centers_op, centers_ref, atol=1e-5)
        )
        all_agree = all_agree and bool(agree)
        print(f"  op, layer and TF1 reference agree: {bool(agree)}")

    print(f"RESULT: center_loss_and_update and CenterLoss layer agree on all {steps} steps: {all_agree}")
    if not all_agree:
        print("FAILED: the op, the layer and the TF1 reference disagree", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
