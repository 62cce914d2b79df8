"""Fit step time of the gradient-level strategies against the loss-level step, on a multi-task MLP.

Model: one shared trunk and K heads (K = 2 and 4), batch 128, Adam, float32::

    x (64) -> Dense(256, relu) -> Dense(256, relu) -> "features" (Identity)
           -> for each k: Dense(32, relu) -> Dense(10) = "logits_k"

Each head k has the term ``SoftmaxCrossEntropy(on="logits_k",
target="label_k")``. Every variant of one K starts from the same initial
weights and trains through ``fit`` on the same fixed random data:

* ``keras``: the same model without the "features" output, plain
  ``compile(loss={logits_k: SparseCategoricalCrossentropy(from_logits=True)},
  loss_weights={logits_k: 1.0})`` (what Keras alone costs);
* ``Fixed``: ``lw.Objective`` with ``weighting=Fixed()`` (every weight 1):
  the loss-level step, **the reference**;
* ``Sum``, ``MGDA``, ``PCGrad``: the gradient-level step in parameter mode:
  the K per-term gradients of every trainable variable (the rows of a
  (K, params) Jacobian), their Gramian, the strategy's weights, the
  weighted sum. Target: ``<= 1.1 x (1 + 2K) / 3`` of the Fixed step. A
  backward pass costs about two forward passes, so one forward and one
  backward is 3 units and one forward and K backwards ``1 + 2K``: the floor
  for a full Jacobian, with 10 % slack;
* ``MGDA/features``: MGDA in representation mode (``representation=
  "features"``, Sener & Koltun 2018, MGDA-UB): the K gradients with respect
  to the trunk's output and one trunk backward. Target: ``<= 1.3x`` Fixed
  whatever K.

Timing as in ``step_overhead.py`` (its ``StepTimer``): each ``fit`` runs one
epoch, a callback stamps ``on_train_batch_end`` (Keras then fetches the
step's logs, so every step is timed to completion on every backend), the step
time is the median gap between stamps; the variants of one K are interleaved
(``common.interleaved_rounds``) for several rounds after a warm-up epoch and
the ratios are medians of per-round ratios. On JAX (full runs) each
variant's compiled train step is also lowered once more for XLA's flop count
(``cost_analysis``): a ratio free of the shared machine's noise, which shows
how many passes a step does, not what its small ops cost.

``python benchmarks/gradient.py --before REV`` times instead ``Fixed`` and
``Fixed@REV``: the same Fixed Objective built with lossweave as
it was at git revision ``REV`` (its ``src/lossweave`` read with ``git
archive`` into a temporary folder and imported as ``lossweave_<sha>`` beside
today's), in the same interleaved rounds (40 of them): whether the
loss-level step changed (target: within 2 %).

    KERAS_BACKEND=jax .venv/bin/python benchmarks/run.py --only gradient [--quick]
    KERAS_BACKEND=jax .venv/bin/python benchmarks/gradient.py [--quick] [--before e4d316c~1]
"""

if __name__ == "__main__":  # the thread limits must be set before keras is imported
    from common import configure_threads

    configure_threads(1)

import sys  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402

import lossweave as lw  # noqa: E402
from common import backend, fmt_ms, interleaved_rounds, load_library, median, xla_flops  # noqa: E402
from step_overhead import StepTimer  # noqa: E402

BATCH, INPUT_DIM, TRUNK, HEAD, NUM_CLASSES = 128, 64, (256, 256), 32, 10
KS = (2, 4)
REFERENCE = "Fixed"
PARAMETER_MODE = ("Sum", "MGDA", "PCGrad")
REPRESENTATION_MODE = ("MGDA/features",)
VARIANTS = ("keras", REFERENCE, *PARAMETER_MODE, *REPRESENTATION_MODE)
PARAMETER_SLACK, REPRESENTATION_TARGET, BEFORE_TARGET = 1.1, 1.3, 1.02


def parameter_target(k):
    """One forward (1) and K backward passes (2 each), with 10 % slack: ``1.1 (1 + 2K) / 3``."""
    return PARAMETER_SLACK * (1 + 2 * k) / 3


def target(variant, k):
    if variant in PARAMETER_MODE:
        return parameter_target(k)
    if variant in REPRESENTATION_MODE:
        return REPRESENTATION_TARGET
    if variant.startswith(REFERENCE + "@"):
        return BEFORE_TARGET
    return None


def build_model(k, features=True, seed=0):
    """The trunk and K heads; outputs ``logits_0 .. logits_{K-1}`` (and ``features``)."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((INPUT_DIM,), name="x")
    h = inputs
    for width in TRUNK:
        h = keras.layers.Dense(width, activation="relu")(h)
    shared = keras.layers.Identity(name="features")(h)
    outputs = {"features": shared} if features else {}
    for i in range(k):
        head = keras.layers.Dense(HEAD, activation="relu", name=f"head_{i}")(shared)
        outputs[f"logits_{i}"] = keras.layers.Dense(NUM_CLASSES, name=f"logits_{i}")(head)
    return keras.Model(inputs, outputs)


def make_weighting(variant, library=lw):
    name = variant.split("/")[0]
    if name == "PCGrad":
        return library.weighting.PCGrad(seed=0)
    return getattr(library.weighting, name)()


def build(variant, k, library=None):
    """``(trainable, key)``: a compiled model to ``fit`` and its target keys (``key.format(k)``).

    ``library`` is the lossweave package to build a ``Fixed@REV`` variant with.
    """
    if variant == "keras":
        model = build_model(k, features=False)
        names = [f"logits_{i}" for i in range(k)]
        loss = {n: keras.losses.SparseCategoricalCrossentropy(from_logits=True) for n in names}
        model.compile(optimizer="adam", loss=loss, loss_weights={n: 1.0 for n in names})
        return model, "logits_{}"
    library = library or lw
    terms = {
        f"task_{i}": library.terms.SoftmaxCrossEntropy(on=f"logits_{i}", target=f"label_{i}")
        for i in range(k)
    }
    kwargs = {"representation": "features"} if variant in REPRESENTATION_MODE else {}
    objective = library.Objective(
        build_model(k), terms, weighting=make_weighting(variant.split("@")[0], library), **kwargs
    )
    objective.compile(optimizer="adam")
    return objective, "label_{}"


def run(quick=False, ks=KS, variants=None, before=None, rounds=None):
    """Step times of ``variants`` for each K in ``ks`` (``rounds``: instead of the default count).

    ``before`` (a git revision, ``--before``): time ``Fixed`` and
    ``Fixed@REV`` only (unless ``variants`` says otherwise), over 40 rounds:
    a 2 % question needs more repeats than the gradient ratios (18 rounds of
    three variants still moved by +-5 % between runs on PyTorch here).
    """
    steps, default_rounds = (8, 3) if quick else (24, 9)
    library = None
    if before:
        sha, library = load_library(before)
        variants = (*(variants or (REFERENCE,)), f"{REFERENCE}@{sha}")
        default_rounds = 6 if quick else 40
    rounds = rounds or default_rounds
    variants = variants or VARIANTS
    rng = np.random.default_rng(0)
    x = rng.normal(size=(steps * BATCH, INPUT_DIM)).astype("float32")
    labels = rng.integers(0, NUM_CLASSES, size=(max(ks), steps * BATCH)).astype("int32")
    results = {
        "backend": backend(), "batch": BATCH, "input_dim": INPUT_DIM, "trunk": list(TRUNK), "head": HEAD,
        "num_classes": NUM_CLASSES, "steps_per_epoch": steps, "rounds": rounds, "before": before,
        "tables": [],
    }
    for k in ks:
        runs = {v: build(v, k, library if "@" in v else None) for v in variants}
        timer = StepTimer()

        def epoch(variant):
            trainable, key = runs[variant]
            y = {key.format(i): labels[i] for i in range(k)}
            trainable.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0, callbacks=[timer])
            return timer.step_times()

        for variant in variants:  # warm-up: trace and compile
            epoch(variant)
        flops = {}
        if backend() == "jax" and not quick:  # one more compile per variant
            for variant, (trainable, key) in runs.items():
                batch = {key.format(i): labels[i][:BATCH] for i in range(k)}
                flops[variant] = xla_flops(trainable, (x[:BATCH], batch))
        times, per_round = interleaved_rounds(epoch, variants, rounds)

        def ratio(a, b):
            return float(median([p / q for p, q in zip(per_round[a], per_round[b])]))

        rows = []
        for variant in variants:
            limit = target(variant, k)
            # The target's ratio: variant / Fixed; for the older library, today's Fixed / its Fixed.
            a, b = (REFERENCE, variant) if "@" in variant else (variant, REFERENCE)
            checked = ratio(a, b)
            rows.append({
                "variant": variant,
                "step_s": float(median(times[variant])),
                "over_fixed": ratio(variant, REFERENCE),
                "over_keras": ratio(variant, "keras") if "keras" in variants else None,
                "target": limit,
                "target_ratio": f"{a} / {b}",
                "flops_over_fixed": flops[variant] / flops[REFERENCE] if flops else None,
                "checked": checked,
                "met": None if limit is None else bool(checked <= limit),
            })
        params = sum(int(np.prod(v.shape)) for v in runs[REFERENCE][0].trainable_variables)
        results["tables"].append({"k": k, "params": params, "rows": rows})
    results["targets"] = {
        f"{row['target_ratio']} step <= {row['target']:.2f}x (K={table['k']})": row["met"]
        for table in results["tables"] for row in table["rows"] if row["target"] is not None
    }
    return results


MODES = {"keras": "Keras compile(loss=dict, loss_weights=dict)", REFERENCE: "loss level (reference)",
         **{v: "gradient, parameters" for v in PARAMETER_MODE},
         **{v: "gradient, representation" for v in REPRESENTATION_MODE}}


def markdown(results):
    lines = [
        f"Gradient-level step, {results['backend']}: MLP {results['input_dim']} -> "
        f"{' -> '.join(map(str, results['trunk']))} (relu, shared) -> K heads {results['head']} -> "
        f"{results['num_classes']}, one SoftmaxCrossEntropy per head, batch {results['batch']}, Adam; "
        f"median ms per step over {results['rounds']} interleaved one-epoch rounds of "
        f"{results['steps_per_epoch']} steps; ratios are medians of per-round ratios",
    ]
    for table in results["tables"]:
        has_flops = table["rows"][0]["flops_over_fixed"] is not None
        lines += [
            "",
            f"K = {table['k']} ({table['params']:,} parameters)",
            "",
            "| variant | step | ms / step | / Fixed | target | | / keras |"
            + (" XLA flops / Fixed |" if has_flops else ""),
            "|:---|:---|---:|---:|---:|:---|---:|" + ("---:|" if has_flops else ""),
        ]
        for row in table["rows"]:
            mode = MODES.get(row["variant"], "loss level, lossweave at " + row["variant"].split("@")[-1])
            limit = "" if row["target"] is None else f"{row['target_ratio']} <= {row['target']:.2f}x"
            verdict = {None: "", True: "met", False: "**missed**"}[row["met"]]
            if "@" in row["variant"]:  # the target's ratio is not the / Fixed column: show it
                verdict += f" ({row['checked']:.3f}x)"
            keras_ratio = "" if row["over_keras"] is None else f"{row['over_keras']:.3f}x"
            lines.append(
                f"| {row['variant']} | {mode} | {fmt_ms(row['step_s'])} | {row['over_fixed']:.3f}x | {limit} "
                f"| {verdict} | {keras_ratio} |" + (f" {row['flops_over_fixed']:.2f}x |" if has_flops else "")
            )
    lines.append("")
    if any(t["rows"][0]["flops_over_fixed"] is not None for t in results["tables"]):
        lines.append("- XLA flops: the compiled train step's flop count (`cost_analysis`), a noise-free ratio")
    lines.append(
        f"- targets: parameter mode <= {PARAMETER_SLACK} x (1 + 2K) / 3 of Fixed (one forward, K backward "
        f"passes); representation mode <= {REPRESENTATION_TARGET}x Fixed"
        + (f"; today's Fixed / Fixed of lossweave at {results['before']} <= {BEFORE_TARGET}x"
           if results["before"] else "")
    )
    return "\n".join(lines)


if __name__ == "__main__":
    import argparse

    from common import main_alone

    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--before", metavar="REV", help="also time the Fixed step of lossweave at git REV")
    known, rest = parser.parse_known_args()
    sys.exit(main_alone("gradient", run, markdown, rest, before=known.before))
