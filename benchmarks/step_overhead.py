"""Training-step time of softmax + center loss against softmax alone, through ``fit``.

Three ways to train the same MLP (64-dim inputs like sklearn digits ->
Dense(64, relu) -> embedding (2 or 32) -> Dense(10) logits, and a wider
64 -> 1024 -> 1024 -> 32 -> 10; batch 256, Adam), each from identical initial
weights:

* ``keras``: the plain model, ``compile(loss={"logits":
  SparseCategoricalCrossentropy(from_logits=True)})``;
* ``softmax``: ``lw.Objective`` with ``SoftmaxCrossEntropy(on="logits")``;
* ``softmax+center``: that plus ``CenterLoss(num_classes=10, alpha=0.5,
  on="embedding")``, ``weighting=lw.weighting.Fixed({"center": 0.003})``.

Each ``fit`` runs one epoch; a callback stamps ``on_train_batch_end`` (which
makes Keras fetch the step's logs, so every step is timed to completion on
all backends) on the wall clock and the process CPU clock at once, and the
step time is the median gap between consecutive stamps, on each clock (both
are reported side by side, with the load average before and after the run).
The variants are interleaved (forward, then reverse order) for
several rounds after a warm-up epoch; ratios are medians of per-round ratios.

Target: ``softmax+center / softmax <= 1.10``. The ``softmax / keras`` ratio
shows what the Objective itself costs. The center term adds a fixed cost per
step (a few dozen ops on batch x dim), so the ratio depends on the model: the
tiny MLPs are the worst case, the wide one a modest real model. Each row is
also run with the terms' run-time checks off (``validate=False``) to show
what the checks cost.
"""

if __name__ == "__main__":  # the thread limits must be set before keras is imported (as multitask.py)
    from common import configure_threads

    configure_threads(1)

import os  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import keras  # noqa: E402

import lossweave as lw  # noqa: E402
from common import backend, fmt_ms, interleaved_rounds, median  # noqa: E402

BATCH, INPUT_DIM, NUM_CLASSES = 256, 64, 10
# (hidden layer widths, embedding dim, steps per timed epoch)
CONFIGS = (((64,), 2, 40), ((64,), 32, 40), ((1024, 1024), 32, 16))
TARGET = 1.10
VARIANTS = ("keras", "softmax", "softmax+center", "softmax/nocheck", "softmax+center/nocheck")


CLOCKS = {
    "wall": time.perf_counter,
    # CPU seconds of this process (all its threads): the work of a step. On a shared
    # machine other processes' load lengthens the wall-clock gaps (a step waits for a
    # core) but not these, with one thread per backend pool.
    "cpu": time.process_time,
}


class StepTimer(keras.callbacks.Callback):
    """Gaps between consecutive ``on_train_batch_end`` calls of the last epoch, on both clocks.

    Every stamp reads the wall clock and the process CPU clock together;
    ``step_times()`` gives the gaps on ``clock`` (the constructor's), and
    ``step_times(other)`` those of the other clock of the same steps.
    """

    def __init__(self, clock="wall"):
        super().__init__()
        if clock not in CLOCKS:
            raise ValueError(f"StepTimer: clock must be one of {sorted(CLOCKS)}; received {clock!r}.")
        self.clock = clock

    def on_epoch_begin(self, epoch, logs=None):
        self.stamps = []

    def on_train_batch_end(self, batch, logs=None):
        self.stamps.append((CLOCKS["wall"](), CLOCKS["cpu"]()))

    def step_times(self, clock=None):
        column = tuple(CLOCKS).index(clock or self.clock)
        return list(np.diff([stamp[column] for stamp in self.stamps]))


def load():
    """The 1-minute load average (``uptime``'s first number): how busy the shared machine was."""
    return os.getloadavg()[0]


def timed_rounds(fit_epoch, variants, rounds, timer):
    """``interleaved_rounds`` of ``fit_epoch(variant)`` (one epoch through ``timer``), on both clocks at once.

    Returns ``{clock: (times, per_round)}`` for ``"wall"`` and ``"cpu"``, each
    as ``common.interleaved_rounds`` gives them, from the same steps.
    """
    cpu = {v: [] for v in variants}

    def run(variant):
        fit_epoch(variant)
        cpu[variant].append(timer.step_times("cpu"))
        return timer.step_times("wall")

    times, per_round = interleaved_rounds(run, variants, rounds)
    return {
        "wall": (times, per_round),
        "cpu": ({v: [t for steps in cpu[v] for t in steps] for v in variants},
                {v: [median(steps) for steps in cpu[v]] for v in variants}),
    }


def build_model(hidden, embed_dim, seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((INPUT_DIM,), name="x")
    h = inputs
    for width in hidden:
        h = keras.layers.Dense(width, activation="relu")(h)
    embedding = keras.layers.Dense(embed_dim)(h)
    logits = keras.layers.Dense(NUM_CLASSES)(embedding)
    return keras.Model(inputs, {"embedding": embedding, "logits": logits})


def build(variant, hidden, embed_dim):
    """``(trainable, y_key)``: a compiled model to ``fit`` and the key of its target.

    ``/nocheck`` variants build the terms with ``validate=False`` (no run-time
    label/feature check), to show what the checks cost.
    """
    model = build_model(hidden, embed_dim)
    if variant == "keras":
        loss = {"logits": keras.losses.SparseCategoricalCrossentropy(from_logits=True)}
        model.compile(optimizer="adam", loss=loss)
        return model, "logits"
    validate = not variant.endswith("/nocheck")
    terms = {"softmax": lw.terms.SoftmaxCrossEntropy(on="logits", validate=validate)}
    weighting = None
    if variant.startswith("softmax+center"):
        terms["center"] = lw.terms.CenterLoss(
            num_classes=NUM_CLASSES, alpha=0.5, on="embedding", validate=validate
        )
        weighting = lw.weighting.Fixed({"center": 0.003})
    objective = lw.Objective(model, terms, weighting=weighting)
    objective.compile(optimizer="adam")
    return objective, "label"


def run(quick=False, clock="wall", configs=None):
    """Both clocks side by side; ``clock`` is the one the target's verdict reads."""
    configs, rounds = (CONFIGS[:1], 3) if quick else (configs or CONFIGS, 8)
    rng = np.random.default_rng(0)
    results = {"backend": backend(), "batch": BATCH, "rounds": rounds, "clock": clock, "rows": [],
               "load": [load()]}
    for hidden, embed_dim, steps in configs:
        steps = 12 if quick else steps
        x = rng.normal(size=(steps * BATCH, INPUT_DIM)).astype("float32")
        y = rng.integers(0, NUM_CLASSES, size=steps * BATCH).astype("int32")
        runs = {v: build(v, hidden, embed_dim) for v in VARIANTS}
        timer = StepTimer(clock)

        def epoch(variant):
            trainable, key = runs[variant]
            trainable.fit(x, {key: y}, batch_size=BATCH, epochs=1, shuffle=False, verbose=0, callbacks=[timer])

        for variant in VARIANTS:  # warm-up: trace and compile
            epoch(variant)
        clocks = timed_rounds(epoch, VARIANTS, rounds, timer)
        model = "-".join(str(w) for w in (INPUT_DIM, *hidden, embed_dim, NUM_CLASSES))
        for suffix in ("", "/nocheck"):
            row = {"model": model, "validate": not suffix, "steps_per_epoch": steps}
            row.update({c: _row(suffix, *clocks[c]) for c in CLOCKS})
            results["rows"].append(row)
        results["load"].append(load())
    results["targets"] = {
        f"softmax+center / softmax <= {TARGET} ({row['model']}, {clock} clock)":
            bool(row[clock]["center_over_softmax"] <= TARGET)
        for row in results["rows"] if row["validate"]
    }
    return results


def _row(suffix, times, per_round):
    """Step times (pooled medians) and per-round medians of differences and ratios, on one clock."""
    softmax, center = "softmax" + suffix, "softmax+center" + suffix

    def per_round_median(op, a, b):
        return float(median([op(p, q) for p, q in zip(per_round[a], per_round[b])]))

    ratio = lambda a, b: per_round_median(lambda p, q: p / q, a, b)
    return {
        "step_s": {"keras": float(median(times["keras"])), "softmax": float(median(times[softmax])),
                   "softmax+center": float(median(times[center]))},
        "center_minus_softmax_s": per_round_median(lambda p, q: p - q, center, softmax),
        "center_over_softmax": ratio(center, softmax),
        "softmax_over_keras": ratio(softmax, "keras"),
        "center_over_keras": ratio(center, "keras"),
    }


def markdown(results):
    load = results.get("load", [])
    lines = [
        f"Step overhead, {results['backend']}: MLP (layer widths), batch {results['batch']}, Adam; "
        f"median ms per step, wall clock / process CPU time of the same steps, over {results['rounds']} "
        "interleaved one-epoch rounds; differences and ratios are medians of per-round values"
        + (f"; load average {' -> '.join(f'{v:.2f}' for v in load)}" if load else ""),
        "",
        "| model | terms validate | keras (ms) | softmax (ms) | softmax+center (ms) "
        "| center - softmax (ms) | center / softmax | softmax / keras |",
        "|:---|:---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in results["rows"]:
        wall, cpu = row["wall"], row["cpu"]

        def pair(get, form):
            return f"{form(get(wall))} / {form(get(cpu))}"

        lines.append(
            f"| {row['model']} | {row['validate']} | "
            + " | ".join(pair(lambda r, v=v: r["step_s"][v], fmt_ms) for v in ("keras", "softmax", "softmax+center"))
            + f" | {pair(lambda r: r['center_minus_softmax_s'] * 1e3, lambda v: f'{v:+.2f}')}"
            + f" | {pair(lambda r: r['center_over_softmax'], lambda v: f'{v:.3f}x')}"
            + f" | {pair(lambda r: r['softmax_over_keras'], lambda v: f'{v:.3f}x')} |"
        )
    lines.append("")
    lines.append(f"- target softmax+center / softmax <= {TARGET}x (terms with validate=True, the default; "
                 f"verdicts read the {results.get('clock', 'wall')} clock)")
    return "\n".join(lines)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--clock", choices=tuple(CLOCKS), default="wall",
                        help="the clock the target's verdict reads (both are measured and shown)")
    parser.add_argument("--out", help="also write the results as JSON here")
    parser.add_argument("--tiny", action="store_true", help="the 64-64-2-10 and 64-64-32-10 MLPs only")
    args = parser.parse_args()
    res = run(quick=args.quick, clock=args.clock, configs=CONFIGS[:2] if args.tiny else None)
    print(markdown(res))
    print("Targets:", res["targets"])
    if args.out:
        from common import write_results

        write_results(res, args.out)
