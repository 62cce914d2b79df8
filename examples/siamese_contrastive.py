"""A siamese network trained with the contrastive loss on pairs of digits, verified on held-out pairs.

What it shows:

* pairs of 8x8 digit images from the bundled digits (``lossweave.data.load(
  "digits", seed=...)``, no download), drawn by
  ``lossweave.metrics.verification_pairs``: half of them "same digit", the
  training pairs from the training images, the held-out pairs from the test
  images only;
* the siamese model of Hadsell, Chopra & LeCun (CVPR 2006): two images in,
  ONE shared feature extractor (64 -> Dense(128, relu) -> Dense(16)), and a
  ``distance`` output, the Euclidean distance ``D_W`` between the two
  embeddings: the pair is declared "same" when ``D_W`` is below a threshold;
* ``lw.terms.SiameseContrastiveLoss``, ``on=("left", "right"),
  target="same"`` (Eq. 4: ``1/2 D_W^2`` for a similar pair, ``1/2 max(0, m -
  D_W)^2`` for a dissimilar one, margin ``m = 1``), trained with plain
  ``fit(x=[img_1, img_2], y={"same": ...})``;
* the check that the loss ``evaluate`` reports is Eq. 4 computed with NumPy
  from the model's own ``distance`` output;
* verification on the held-out pairs with ``lossweave.metrics``: the LFW
  10-fold accuracy (the threshold on ``D_W`` learnt on the other folds), ROC
  AUC and TAR at FAR 1e-2, on the score ``-D_W`` (``pair_scores(...,
  metric="euclidean")``), against the same network untrained and the raw
  pixels.

Run it with any backend::

    KERAS_BACKEND=jax python examples/siamese_contrastive.py
    KERAS_BACKEND=torch python examples/siamese_contrastive.py --epochs 40 --margin 2
    KERAS_BACKEND=tensorflow python examples/siamese_contrastive.py --fast
"""

import argparse
import sys

import keras
import numpy as np
from keras import ops

import lossweave as lw
from lossweave import data

FAR = 1e-2  # 1,000 held-out pairs: 500 impostors, so FAR 1e-3 would rest on a single pair


class EuclideanDistance(keras.layers.Layer):
    """``||f1 - f2||_2`` of the raw embeddings, shape ``(batch, 1)``: the paper's ``D_W``."""

    def call(self, inputs):
        f1, f2 = inputs
        return ops.sqrt(ops.sum(ops.square(f1 - f2), axis=-1, keepdims=True))

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], 1)


def build_model(feature_dim, seed):
    keras.utils.set_random_seed(seed)
    img_1 = keras.Input((64,), name="img_1")
    img_2 = keras.Input((64,), name="img_2")
    extractor = keras.Sequential(  # ONE feature extractor, applied to both images
        [keras.layers.Dense(128, activation="relu"), keras.layers.Dense(feature_dim)], name="features"
    )
    left = keras.layers.Identity(name="left")(extractor(img_1))
    right = keras.layers.Identity(name="right")(extractor(img_2))
    distance = EuclideanDistance(name="distance")([left, right])
    return keras.Model([img_1, img_2], {"left": left, "right": right, "distance": distance}, name="siamese")


def pairs(x, y, num_pairs, seed):
    """``(x_a, x_b, same)``: balanced genuine / impostor pairs of rows of ``x`` (same: int 0/1)."""
    index_a, index_b, same = lw.metrics.verification_pairs(y, num_pairs=num_pairs, seed=seed)
    return x[index_a], x[index_b], same.astype("int32")


def verification(scores, same):
    """Figures of one set of pair scores (higher = more alike)."""
    result = lw.metrics.verification_accuracy(scores, same.astype(bool), folds=10)
    return {"accuracy": result.accuracy, "std": result.std,
            "roc_auc": lw.metrics.roc_auc(scores, same.astype(bool)),
            "tar": lw.metrics.tar_at_far(scores, same.astype(bool), far=FAR)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fast", action="store_true", help="few epochs on fewer pairs (for tests)")
    parser.add_argument("--epochs", type=int, default=None, help="default: 30 (4 with --fast)")
    parser.add_argument("--pairs", type=int, default=None, help="training pairs (default 6000, 2000 with --fast)")
    parser.add_argument("--margin", type=float, default=1.0, help="the margin m of the dissimilar pairs")
    parser.add_argument("--feature-dim", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0, help="seed of the split, the pairs and the weights")
    args = parser.parse_args(argv)
    epochs = args.epochs or (4 if args.fast else 30)
    n_pairs = args.pairs or (2000 if args.fast else 6000)

    keras.utils.set_random_seed(args.seed)
    ds = data.load("digits", seed=args.seed)
    a, b, same = pairs(ds.x_train, ds.y_train, n_pairs, args.seed)
    ta, tb, t_same = pairs(ds.x_test, ds.y_test, 1000, args.seed + 1)  # test images only

    untrained = build_model(args.feature_dim, args.seed)
    before = untrained.predict([ta, tb], batch_size=500, verbose=0)["distance"][:, 0]
    model = build_model(args.feature_dim, args.seed)  # the same initial weights
    objective = lw.Objective(
        model,
        {"contrastive": lw.terms.SiameseContrastiveLoss(pos_margin=0.0, neg_margin=args.margin,
                                                         on=("left", "right"), target="same")},
    )
    objective.compile(optimizer=keras.optimizers.Adam(3e-3))
    history = objective.fit(x=[a, b], y={"same": same}, epochs=epochs, batch_size=64,
                            verbose=0 if args.fast else 2)
    print(f"backend={keras.backend.backend()} train pairs={n_pairs} ({int(same.sum())} same) from "
          f"{len(ds.y_train)} images; held-out pairs={len(t_same)} from {len(ds.y_test)} test images; "
          f"margin={args.margin:g} epochs={epochs}; first/last epoch loss "
          f"{history.history['loss'][0]:.4f} -> {history.history['loss'][-1]:.4f}")

    # The loss evaluate reports is Eq. 4 on the model's own distance output.
    loss = objective.evaluate([ta, tb], {"same": t_same}, batch_size=1000, verbose=0, return_dict=True)["loss"]
    outputs = objective.model.predict([ta, tb], batch_size=500, verbose=0)  # plain model, no labels
    distance = outputs["distance"][:, 0].astype("float64")
    eq4 = float(np.mean(t_same * 0.5 * distance ** 2
                        + (1 - t_same) * 0.5 * np.maximum(args.margin - distance, 0.0) ** 2))
    loss_ok = abs(loss - eq4) <= 1e-4 * max(1.0, eq4)
    print(f"held-out loss: evaluate {loss:.6f}, Eq. 4 from the distance output {eq4:.6f}; equal: {loss_ok}")
    scores = lw.metrics.pair_scores(outputs["left"], outputs["right"], metric="euclidean")  # -||left - right||
    scores_ok = bool(np.allclose(scores, -distance, atol=1e-4))
    print(f"pair_scores(left, right, 'euclidean') equals -distance: {scores_ok}")
    print(f"mean distance of held-out pairs: same {distance[t_same == 1].mean():.3f}, "
          f"different {distance[t_same == 0].mean():.3f} (margin {args.margin:g})")

    rows = {
        "raw pixels": verification(lw.metrics.pair_scores(ta, tb, metric="euclidean"), t_same),
        "untrained network": verification(-before, t_same),
        "contrastive": verification(-distance, t_same),
    }
    print(f"\nHeld-out pairs, score -D_W: LFW 10-fold accuracy, ROC AUC, TAR at FAR {FAR:g}")
    for name, r in rows.items():
        print(f"  {name:18s} verification accuracy {r['accuracy']:.3f} +- {r['std']:.3f}  "
              f"ROC AUC {r['roc_auc']:.3f}  TAR@FAR={FAR:g} {r['tar']:.3f}")

    failures = []
    trained = rows["contrastive"]
    if not loss_ok:
        failures.append(f"evaluate's loss {loss} differs from Eq. 4 on the distance output {eq4}")
    if not scores_ok:
        failures.append("pair_scores disagrees with the distance output")
    if not trained["roc_auc"] > rows["untrained network"]["roc_auc"]:
        failures.append("training did not improve the ROC AUC over the untrained network")
    if not trained["accuracy"] > 0.75:  # chance is 0.5
        failures.append(f"verification accuracy {trained['accuracy']:.3f} is too low")
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
