"""One classifier, six objectives: softmax, softmax + center loss and the margin-softmax family.

What it shows:

* the same small network (64 pixels -> Dense(128, relu) -> 16-dim embedding)
  trained on the bundled digits (``lossweave.data.load("digits", seed=...)``,
  no download) with six objectives, from the same initial weights:

  - ``softmax``: a Dense(10) logits head + ``SoftmaxCrossEntropy``;
  - ``softmax+center``: the same + ``CenterLoss`` (Wen et al. 2016) weighted
    ``LAMBDA``;
  - ``NormFace``, ``CosFace``, ``ArcFace``, ``SphereFace``: no logits layer in
    the model; the term owns its (10, 16) class weights and reads the
    ``embedding`` output directly;

* how a margin term classifies after training: ``term.classifier(model)``
  adds the margin-free logits ``s cos(theta_j)`` as an output (a plain
  inference model, no labels), and test accuracy is their argmax;
* one table: test accuracy and the embedding figures of
  ``lossweave.metrics.evaluate_embeddings(..., metric="cosine")`` on the test
  embeddings (distance ratio = mean intra-class / mean inter-class distance,
  lower is better; 1-NN accuracy; MAP@R; LFW-style pair verification
  accuracy, ROC AUC and TAR at FAR 1e-3).

Scales and margins: the papers' ``s = 64`` with ArcFace ``m = 0.5`` are tuned for
~10k identities and 512-dim embeddings; on 10 classes with a 16-dim embedding
and 1,077 training images they train badly. This example uses ``s = 16``,
CosFace ``m = 0.2``, ArcFace ``m = 0.3`` rad, and SphereFace ``m = 4`` with its
annealed ``lambda`` decaying faster than the paper's (``gamma = 0.5``, down to
``lambda_min = 5`` after ~400 steps). They are printed in the table.

Run it with any backend::

    KERAS_BACKEND=jax python examples/margin_family.py
    KERAS_BACKEND=torch python examples/margin_family.py --epochs 60 --seed 1
    KERAS_BACKEND=tensorflow python examples/margin_family.py --fast
"""

import argparse
import math
import sys

import keras
import numpy as np

import lossweave as lw
from lossweave import data

EMBEDDING_DIM = 16
LAMBDA = 0.01  # weight of the center loss
SCALE = 16.0

# name -> (settings shown in the table, function making the term; None: softmax head)
OBJECTIVES = {
    "softmax": ("Dense(10) head", None),
    "softmax+center": (f"lambda={LAMBDA}, alpha=0.5", None),
    "NormFace": (f"s={SCALE:g}", lambda n: lw.terms.NormFace(n, scale=SCALE)),
    "CosFace": (f"s={SCALE:g}, m=0.2", lambda n: lw.terms.CosFace(n, scale=SCALE, cosine_margin=0.2)),
    "ArcFace": (f"s={SCALE:g}, m=0.3 rad", lambda n: lw.terms.ArcFace(n, scale=SCALE, angular_margin=0.3)),
    "SphereFace": ("m=4, s=||x||, lambda 1000->5",
                   lambda n: lw.terms.SphereFace(n, multiplicative_margin=4, gamma=0.5, lambda_min=5.0)),
}
FIGURES = (("distance_ratio", "dist ratio"), ("nn_top1", "1-NN"), ("map@r", "MAP@R"),
           ("verification_accuracy", "verif acc"), ("roc_auc", "ROC AUC"), ("tar@far=1e-3", "TAR@1e-3"))


def build_model(num_classes, with_logits, seed):
    keras.utils.set_random_seed(seed)  # the same backbone weights for every objective
    inputs = keras.Input((64,), name="pixels")
    hidden = keras.layers.Dense(128, activation="relu")(inputs)
    embedding = keras.layers.Dense(EMBEDDING_DIM, name="embedding")(hidden)
    outputs = {"embedding": embedding}
    if with_logits:
        outputs["logits"] = keras.layers.Dense(num_classes, name="logits")(embedding)
    return keras.Model(inputs, outputs, name="digits")


def train(name, ds, epochs, learning_rate, seed):
    """Train one objective; return ``(test logits, test embeddings, last training loss)``."""
    settings, make_term = OBJECTIVES[name]
    n = ds.num_classes
    model = build_model(n, with_logits=make_term is None, seed=seed)
    if make_term is None:
        terms = {"softmax": lw.terms.SoftmaxCrossEntropy(on="logits")}
        weighting = None
        if name == "softmax+center":
            terms["center"] = lw.terms.CenterLoss(num_classes=n, alpha=0.5, on="embedding")
            weighting = lw.weighting.Fixed({"center": LAMBDA})
    else:
        keras.utils.set_random_seed(seed + 1)  # the class weights' initial values
        terms = {"margin": make_term(n)}
        weighting = None
    objective = lw.Objective(model, terms, weighting=weighting)
    objective.compile(optimizer=keras.optimizers.Adam(learning_rate))
    history = objective.fit(ds.x_train, {"label": ds.y_train}, epochs=epochs, batch_size=64, verbose=0)
    if make_term is None:
        outputs = objective.model.predict(ds.x_test, verbose=0)
    else:
        # A label-free model: the embedding plus the term's margin-free logits s * cos(theta_j).
        outputs = terms["margin"].classifier(objective.model).predict(ds.x_test, verbose=0)
    return outputs["logits"], outputs["embedding"], float(history.history["loss"][-1])


def format_table(rows):
    header = ["objective", "settings", "train loss", "test acc", *(label for _, label in FIGURES)]
    cells = [header] + [
        [r["objective"], r["settings"], f"{r['train_loss']:.3f}", f"{r['test_accuracy']:.3f}",
         *(f"{r[key]:.3f}" for key, _ in FIGURES)]
        for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = []
    for i, row in enumerate(cells):
        lines.append("  ".join(c.ljust(w) if j < 2 else c.rjust(w) for j, (c, w) in enumerate(zip(row, widths))))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fast", action="store_true", help="few epochs (for tests)")
    parser.add_argument("--epochs", type=int, default=None, help="default: 40 (6 with --fast)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data split and the initial weights")
    args = parser.parse_args(argv)
    epochs = args.epochs or (6 if args.fast else 40)
    learning_rate = 1e-2 if args.fast else 3e-3

    keras.utils.set_random_seed(args.seed)
    ds = data.load("digits", seed=args.seed)
    print(f"backend={keras.backend.backend()} data=digits train={len(ds.y_train)} test={len(ds.y_test)} "
          f"embedding_dim={EMBEDDING_DIM} epochs={epochs} seed={args.seed}")

    rows = []
    for name in OBJECTIVES:
        logits, embedding, train_loss = train(name, ds, epochs, learning_rate, args.seed)
        accuracy = float(np.mean(np.argmax(logits, axis=-1) == ds.y_test))
        figures = lw.metrics.evaluate_embeddings(embedding, ds.y_test, metric="cosine", seed=args.seed)
        rows.append({"objective": name, "settings": OBJECTIVES[name][0], "train_loss": train_loss,
                     "test_accuracy": accuracy, **figures})

    print(f"\nTest set ({len(ds.y_test)} digits), cosine embedding figures (dist ratio: lower is better)\n")
    print(format_table(rows))

    failures = []
    for row in rows:
        values = [row["train_loss"], row["test_accuracy"], *(row[key] for key, _ in FIGURES)]
        if not all(math.isfinite(v) for v in values):
            failures.append(f"{row['objective']}: a figure is not finite")
    if not rows[0]["test_accuracy"] > 0.5:  # 10 classes: chance is 0.1
        failures.append(f"softmax test accuracy {rows[0]['test_accuracy']:.3f} is too low")
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
