"""What ``lossweave.metrics.TupleStatistics`` costs a training step: the same step with and without it.

The CLI adds the metric to every run with a tuple loss (the report's
tuple-statistics figure; ``--no-tuple-statistics`` leaves it out). The
metric computes the batch's pair structure once more and runs the term's
loss twice more with counting reducers (all tuples, active tuples), inside
the compiled step. This script times ``fit`` steps of the pair-loss trunk of
``benchmarks/pairs.py`` (64 -> 256 -> 128, 32 classes x 8, batch 256, Adam)
for a few tuple losses, each without and with the metric, interleaved in one
process (A, B, B, A, ...), wall and CPU time, and prints the ratios.

    KERAS_BACKEND=jax .venv/bin/python benchmarks/tuple_statistics.py [--quick] [--out FILE]
"""

if __name__ == "__main__":  # the thread limits must be set before keras is imported
    from common import configure_threads

    configure_threads(1)

import keras  # noqa: E402

import lossweave as lw  # noqa: E402
from common import backend, fmt_ms, interleaved_rounds, median  # noqa: E402
from pairs import EMBED_DIM, HIDDEN, INPUT_DIM, NUM_CLASSES, balanced_data, make_term  # noqa: E402
from step_overhead import StepTimer  # noqa: E402

LOSSES = ("Triplet semi-hard", "Contrastive", "MultiSimilarity")
WITH = " + TupleStatistics"


def build(variant):
    """The trunk of ``benchmarks/pairs.py`` with the loss, compiled with or without the metric."""
    loss = variant.replace(WITH, "")
    keras.utils.set_random_seed(0)
    inputs = keras.Input((INPUT_DIM,), name="x")
    hidden = keras.layers.Dense(HIDDEN, activation="relu")(inputs)
    embedding = keras.layers.Dense(EMBED_DIM, name="embedding")(hidden)
    term = make_term(loss)
    objective = lw.Objective(keras.Model(inputs, {"embedding": embedding}), {"loss": term})
    metrics = {"embedding": [lw.metrics.TupleStatistics(term)]} if variant.endswith(WITH) else None
    objective.compile(optimizer="adam", metrics=metrics)
    return objective


def run(quick=False, losses=LOSSES):
    batch, (steps, rounds) = 256, ((6, 2) if quick else (20, 5))
    variants = tuple(v for loss in losses for v in (loss, loss + WITH))
    x, y = balanced_data(batch, steps)
    runs = {v: build(v) for v in variants}
    timer, cpu_timer = StepTimer(), StepTimer("cpu")
    cpu = {v: [] for v in variants}

    def epoch(variant, timed=True):
        runs[variant].fit(x, {"label": y}, batch_size=batch, epochs=1, shuffle=False, verbose=0,
                          callbacks=[timer, cpu_timer])
        if timed:
            cpu[variant].append(median(cpu_timer.step_times()))
        return timer.step_times()

    for variant in variants:  # trace and compile
        epoch(variant, timed=False)
    _, per_round = interleaved_rounds(epoch, variants, rounds)
    rows = []
    for loss in losses:
        plain, metric = per_round[loss], per_round[loss + WITH]
        rows.append({
            "loss": loss,
            "step_s": float(median(plain)), "step_with_s": float(median(metric)),
            "over": float(median([b / a for a, b in zip(plain, metric)])),
            "cpu_step_s": float(median(cpu[loss])), "cpu_step_with_s": float(median(cpu[loss + WITH])),
            "cpu_over": float(median([b / a for a, b in zip(cpu[loss], cpu[loss + WITH])])),
        })
    return {"backend": backend(), "batch": batch, "steps": steps, "rounds": rounds, "num_classes": NUM_CLASSES,
            "rows": rows}


def markdown(results):
    lines = [
        f"TupleStatistics in the step, {results['backend']}, batch {results['batch']} ({results['num_classes']} "
        f"classes), {results['rounds']} interleaved rounds of {results['steps']} steps, medians (ms per step)",
        "",
        "| loss | step | step + TupleStatistics | ratio | CPU step | CPU step + TupleStatistics | CPU ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        lines.append(f"| {row['loss']} | {fmt_ms(row['step_s'])} | {fmt_ms(row['step_with_s'])} | {row['over']:.2f} | "
                     f"{fmt_ms(row['cpu_step_s'])} | {fmt_ms(row['cpu_step_with_s'])} | {row['cpu_over']:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    from common import main_alone

    sys.exit(main_alone("tuple_statistics", run, markdown))
