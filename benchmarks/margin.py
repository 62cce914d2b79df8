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
* ``ElasticArcFace``: ArcFace with a margin drawn per sample from N(0.5, 0.05)
  (one ``(batch,)`` normal draw per step);
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
"""


if __name__ == "__main__":  # the thread limits must be set before keras is imported
    from common import configure_threads

    configure_threads(1)

import keras  # noqa: E402
import numpy as np  # noqa: E402

import lossweave as lw  # noqa: E402
from common import backend, fmt_ms, interleaved_rounds, median  # noqa: E402
from step_overhead import StepTimer  # noqa: E402

BATCH, INPUT_DIM, HIDDEN, EMBED_DIM, NUM_CLASSES = 256, 128, 512, 128, 10_000
TARGET = 1.3
REFERENCES = ("keras", "softmax")
TERMS = ("NormFace", "CosFace", "ArcFace", "CombinedMargin", "SphereFace", "SubCenterArcFace", "ElasticArcFace",
         "AdaFace", "MagFace", "CurricularFace", "AdaCos", "AdaCos-fixed")
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

    def ratio(a, b):
        return float(median([p / q for p, q in zip(per_round[a], per_round[b])]))

    rows = []
    for variant in variants:
        rows.append({
            "variant": variant,
            "step_s": float(median(times[variant])),
            "over_softmax": ratio(variant, "softmax"),
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


if __name__ == "__main__":
    import sys

    from common import main_alone

    sys.exit(main_alone("margin", run, markdown))
