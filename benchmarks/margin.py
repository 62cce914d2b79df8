"""Training-step time of each margin-softmax term against a dense softmax head, at 10k classes.

A face-recognition-style head: inputs 128 -> Dense(512, relu) -> embedding 128
(no activation), batch 256, 10,000 classes, Adam, float32. Every variant
starts from the same backbone weights and trains through ``fit``:

* ``keras``: the backbone + ``Dense(10000, use_bias=False)`` logits, plain
  ``compile(loss=SparseCategoricalCrossentropy(from_logits=True))`` (a second
  reference: what Keras alone costs);
* ``softmax``: the same model in an ``lw.Objective`` with
  ``SoftmaxCrossEntropy(on="logits")`` -- **the baseline**: same machinery as
  the margin terms, so ``term / softmax`` measures the margin term alone;
* ``NormFace``, ``CosFace``, ``ArcFace``, ``CombinedMargin``, ``SphereFace``:
  the backbone's embedding only, in an ``lw.Objective`` with the term, which
  owns a ``(10000, 128)`` class weight table: the same size as the dense head;
* ``ElasticArcFace``, ``ElasticCosFace``: ArcFace / CosFace with a margin
  drawn per sample from N(0.5, 0.05) / N(0.35, 0.05) (one ``(batch,)``
  normal draw per step);
* ``SubCenterArcFace`` (K=3): its table is ``(30000, 128)``, **3x** the dense
  head's, so it does 3x the matmul work; reported, but not comparable 1:1;
* ``AdaFace``, ``MagFace``, ``CurricularFace``, ``AdaCos`` (dynamic ``s``) and
  ``AdaCos-fixed``: the adaptive margins (issue 24), with their authors' defaults.

Each ``fit`` runs one epoch of a fixed number of steps on fixed random data; a
callback stamps ``on_train_batch_end`` (Keras then fetches the step's logs, so
every step is timed to completion on every backend) and the step time is the
median gap between consecutive stamps. Variants are interleaved
(``common.interleaved_rounds``: forward, then reverse order) for several
rounds after a warm-up epoch; the ratios are medians of per-round ratios.

Target: ``term / softmax <= 1.3`` for every term with a table of the dense
head's size.

    KERAS_BACKEND=jax .venv/bin/python benchmarks/run.py --only margin [--quick]
    KERAS_BACKEND=jax .venv/bin/python benchmarks/margin.py [--quick]     # the same

The terms of issue 24 (``NEW_VARIANTS``: the adaptive and elastic margins
beside the references) run on their own, one backend per process; each run
keeps its results in ``benchmarks/margin_new_terms.json`` (keyed by backend)
and rewrites the table of every stored backend in ``benchmarks/MARGIN.md``
(between its ``<!-- table: margin-new-terms -->`` markers):

    for b in jax tensorflow torch; do
      KERAS_BACKEND=$b .venv/bin/python benchmarks/margin.py --new-terms
    done
"""


if __name__ == "__main__":  # the thread limits must be set before keras is imported
    from common import configure_threads

    configure_threads(1)

import os  # noqa: E402
import re  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402

import lossweave as lw  # noqa: E402
from common import backend, fmt_ms, interleaved_rounds, median  # noqa: E402
from step_overhead import StepTimer  # noqa: E402

BATCH, INPUT_DIM, HIDDEN, EMBED_DIM, NUM_CLASSES = 256, 128, 512, 128, 10_000
TARGET = 1.3
REFERENCES = ("keras", "softmax")
NEW_TERMS = ("AdaFace", "MagFace", "CurricularFace", "AdaCos", "AdaCos-fixed", "ElasticArcFace", "ElasticCosFace")
TERMS = ("NormFace", "CosFace", "ArcFace", "CombinedMargin", "SphereFace", "SubCenterArcFace") + NEW_TERMS
NEW_VARIANTS = REFERENCES + ("ArcFace", "CosFace") + NEW_TERMS  # the issue-24 run: the new terms and their references
VARIANTS = REFERENCES + TERMS
NOT_SAME_SIZE = {"SubCenterArcFace": "K=3: class weight table 3x the dense head"}


def make_term(name, num_classes=NUM_CLASSES):
    """The term with the papers' settings (and the library's defaults)."""
    terms = lw.terms
    return {
        "NormFace": lambda: terms.NormFace(num_classes, scale=16.0),
        "CosFace": lambda: terms.CosFace(num_classes, scale=64.0, cosine_margin=0.35),
        "ArcFace": lambda: terms.ArcFace(num_classes, scale=64.0, angular_margin=0.5),
        "CombinedMargin": lambda: terms.CombinedMargin(num_classes, scale=64.0, multiplicative_margin=1.0, angular_margin=0.3, cosine_margin=0.2),
        "SphereFace": lambda: terms.SphereFace(num_classes, multiplicative_margin=4),
        "SubCenterArcFace": lambda: terms.SubCenterArcFace(num_classes, sub_centers=3, scale=64.0, angular_margin=0.5),
        "AdaFace": lambda: terms.AdaFace(num_classes, scale=64.0, margin=0.4, h=0.333),
        "MagFace": lambda: terms.MagFace(num_classes, scale=64.0),
        "CurricularFace": lambda: terms.CurricularFace(num_classes, scale=64.0, angular_margin=0.5),
        "AdaCos": lambda: terms.AdaCos(num_classes),  # dynamic s
        "AdaCos-fixed": lambda: terms.AdaCos(num_classes, dynamic=False),
        "ElasticArcFace": lambda: terms.ElasticArcFace(num_classes, scale=64.0, angular_margin=0.5, sigma=0.05),
        "ElasticCosFace": lambda: terms.ElasticCosFace(num_classes, scale=64.0, cosine_margin=0.35, sigma=0.05),
    }[name]()


def build_backbone(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((INPUT_DIM,), name="x")
    hidden = keras.layers.Dense(HIDDEN, activation="relu")(inputs)
    embedding = keras.layers.Dense(EMBED_DIM, name="embedding")(hidden)
    return inputs, embedding


def build(variant, num_classes=NUM_CLASSES):
    """``(trainable, y_key)``: a compiled model to ``fit`` and the key of its target."""
    inputs, embedding = build_backbone()
    if variant in REFERENCES:
        keras.utils.set_random_seed(1)
        logits = keras.layers.Dense(num_classes, use_bias=False, name="logits")(embedding)
        model = keras.Model(inputs, {"embedding": embedding, "logits": logits})
        if variant == "keras":
            model.compile(optimizer="adam",
                          loss={"logits": keras.losses.SparseCategoricalCrossentropy(from_logits=True)})
            return model, "logits"
        objective = lw.Objective(model, {"softmax": lw.terms.SoftmaxCrossEntropy(on="logits")})
    else:
        model = keras.Model(inputs, {"embedding": embedding})
        keras.utils.set_random_seed(1)
        objective = lw.Objective(model, {"margin": make_term(variant, num_classes)})
    objective.compile(optimizer="adam")
    return objective, "label"


def run(quick=False, variants=VARIANTS):
    steps, rounds = (6, 2) if quick else (12, 7)
    num_classes = 2_000 if quick else NUM_CLASSES
    rng = np.random.default_rng(0)
    x = rng.normal(size=(steps * BATCH, INPUT_DIM)).astype("float32")
    y = rng.integers(0, num_classes, size=steps * BATCH).astype("int32")
    runs = {v: build(v, num_classes) for v in variants}
    timer = StepTimer()

    def epoch(variant):
        trainable, key = runs[variant]
        trainable.fit(x, {key: y}, batch_size=BATCH, epochs=1, shuffle=False, verbose=0, callbacks=[timer])
        return timer.step_times()

    for variant in variants:  # warm-up: trace and compile
        epoch(variant)
    times, per_round = interleaved_rounds(epoch, variants, rounds)

    def ratios(a, b):
        return [p / q for p, q in zip(per_round[a], per_round[b])]

    def ratio(a, b):
        return float(median(ratios(a, b)))

    rows = []
    for variant in variants:
        rows.append({
            "variant": variant,
            "step_s": float(median(times[variant])),
            "over_softmax": ratio(variant, "softmax"),
            "over_softmax_rounds": [float(r) for r in ratios(variant, "softmax")],
            "over_keras": ratio(variant, "keras"),
            "table_rows": num_classes * (3 if variant == "SubCenterArcFace" else 1),
            "note": NOT_SAME_SIZE.get(variant, ""),
        })
    results = {
        "backend": backend(), "batch": BATCH, "input_dim": INPUT_DIM, "hidden": HIDDEN,
        "embed_dim": EMBED_DIM, "num_classes": num_classes, "steps_per_epoch": steps,
        "rounds": rounds, "rows": rows,
    }
    results["targets"] = {
        f"{row['variant']} / softmax step <= {TARGET} ({num_classes} classes)": bool(row["over_softmax"] <= TARGET)
        for row in rows if row["variant"] in TERMS and not row["note"]
    }
    return results


def markdown(results):
    lines = [
        f"Margin terms, {results['backend']}: {results['input_dim']} -> {results['hidden']} (relu) -> "
        f"embedding {results['embed_dim']}, {results['num_classes']:,} classes, batch {results['batch']}, "
        f"Adam; median ms per step over {results['rounds']} interleaved one-epoch rounds of "
        f"{results['steps_per_epoch']} steps; ratios are medians of per-round ratios",
        "",
        "| head | class table | ms / step | / softmax (Objective) | / keras (compile) |",
        "|:---|---:|---:|---:|---:|",
    ]
    for row in results["rows"]:
        name = {"keras": "Dense + Keras SCCE", "softmax": "Dense + SoftmaxCrossEntropy"}.get(
            row["variant"], row["variant"])
        table = f"{row['table_rows']:,} x {results['embed_dim']}"
        note = f" ({row['note']})" if row["note"] else ""
        lines.append(
            f"| {name}{note} | {table} | {fmt_ms(row['step_s'])} | {row['over_softmax']:.3f}x | "
            f"{row['over_keras']:.3f}x |"
        )
    lines.append("")
    lines.append(f"- target: margin term / softmax <= {TARGET}x (same-size class table)")
    return "\n".join(lines)


NEW_TERMS_JSON = os.path.join(os.path.dirname(os.path.abspath(__file__)), "margin_new_terms.json")
NEW_TERMS_MD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "MARGIN.md")
BLOCK = re.compile(r"(<!-- table: margin-new-terms \(written by benchmarks/margin\.py --new-terms; do not edit\) -->\n)"
                   r".*?(<!-- /table: margin-new-terms -->)", re.S)
BACKEND_ORDER = ("jax", "tensorflow", "torch")


def new_terms_markdown(records):
    """The table of the issue-24 terms over every stored backend: ms/step, ratio to softmax, its round range."""
    backends = [b for b in BACKEND_ORDER if b in records]
    names = {"jax": "JAX", "tensorflow": "TensorFlow", "torch": "PyTorch"}
    head = "| head (10k classes, dim 128) | " + " | ".join(
        f"{names[b]} ms | {names[b]} / softmax | {names[b]} rounds" for b in backends) + " |"
    lines = [head, "|:---|" + "---:|---:|:---|" * len(backends)]
    rows = {b: {row["variant"]: row for row in records[b]["results"]["rows"]} for b in backends}
    for variant in NEW_VARIANTS:
        label = {"keras": "Dense + Keras SCCE (compile)", "softmax": "Dense + SoftmaxCrossEntropy (baseline)"}.get(
            variant, variant + (" (reference)" if variant in ("ArcFace", "CosFace") else ""))
        cells = []
        for b in backends:
            row = rows[b].get(variant)
            if row is None:
                cells += ["-", "-", "-"]
                continue
            spread = row.get("over_softmax_rounds") or [row["over_softmax"]]
            cells += [fmt_ms(row["step_s"]), f"{row['over_softmax']:.2f}x",
                      f"{min(spread):.2f}-{max(spread):.2f}x"]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("")
    for b in backends:
        record = records[b]
        results = record["results"]
        missed = [r["variant"] for r in results["rows"] if r["variant"] in NEW_TERMS and r["over_softmax"] > TARGET]
        lines.append(
            f"- {names[b]}: {record['date']}, {record['versions']}, load average {record['load_average']}; "
            f"{results['rounds']} interleaved rounds of {results['steps_per_epoch']} steps, "
            f"{results['num_classes']:,} classes; target <= {TARGET}x "
            + ("met by every new term." if not missed else f"missed by {', '.join(missed)}."))
    return "\n".join(lines)


def store_new_terms(results, json_path=NEW_TERMS_JSON, md_path=NEW_TERMS_MD):
    """Keep ``results`` under its backend in ``json_path`` and rewrite the table block of ``md_path``."""
    import datetime
    import importlib
    import json

    records = {}
    if os.path.exists(json_path):
        with open(json_path) as f:
            records = json.load(f)
    name = results["backend"]
    module = {"jax": "jax", "tensorflow": "tensorflow", "torch": "torch"}[name]
    records[name] = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "versions": f"keras {keras.__version__}, {module} {importlib.import_module(module).__version__}",
        "load_average": ", ".join(f"{v:.1f}" for v in os.getloadavg()),
        "results": results,
    }
    with open(json_path, "w") as f:
        json.dump(records, f, indent=1, default=float)
    with open(md_path) as f:
        text = f.read()
    if not BLOCK.search(text):
        raise SystemExit(f"{md_path}: no <!-- table: margin-new-terms ... --> block to write into.")
    text = BLOCK.sub(lambda m: m.group(1) + new_terms_markdown(records) + "\n" + m.group(2), text)
    with open(md_path, "w") as f:
        f.write(text)
    print(f"results: {json_path}; table: {md_path}")


if __name__ == "__main__":
    import sys

    from common import main_alone

    if "--new-terms" in sys.argv[1:]:
        quick = "--quick" in sys.argv[1:]
        outcome = run(quick=quick, variants=NEW_VARIANTS)
        print(markdown(outcome))
        if not quick:
            store_new_terms(outcome)
        sys.exit(0)
    sys.exit(main_alone("margin", run, markdown))
