"""Millions of classes: ArcFace's step time and memory, full term against Partial FC sampling; sharded tables.

The margin benchmark's face-recognition head (inputs 128 -> Dense(512, relu)
-> embedding 128), batch 256, ArcFace (s = 64, m = 0.5) owning a
``(classes, 128)`` float32 class table, SGD with momentum 0.9 (insightface's
Partial FC optimizer), on one device:

* ``full``: ``sample_rate=1.0``, logits over every class;
* ``sampled``: ``sample_rate=0.1`` (Partial FC, An et al. 2021/2022): logits
  over the batch's positives plus random negatives, 10 % of the classes.

Each case runs in its own process (``--case``), so that its memory is its
own: it builds the objective and the optimizer's slots (the state: table,
momentum, backbone), compiles the train step as Keras's JAX trainer does
(``jit`` with donated state) and reads XLA's buffer assignment
(``memory_analysis()``: **temp bytes**, what the step holds beyond its
inputs and outputs, i.e. above the table and its slots), then fits a warm-up
epoch and a timed epoch; the timed epoch also gives the **RSS growth**
(``/proc`` peak RSS above the RSS before it: the step's temporaries as the
kernel sees them). Step time: median gap between ``on_train_batch_end``
stamps. Cases run in rounds, full and sampled interleaved (forward, then
reverse order); the speed-up is the median of per-round ratios.

Where the full term's step would not fit this machine (4M classes: a 4 GB
``batch x classes`` logits array and its gradient), it is compiled only.

The mesh part (``--mesh``, 4 virtual CPU devices): the same objective under a
``(2 data x 2 model)`` ``keras.distribution.ModelParallel`` whose layout map
comes from ``lossweave.sharding.fill_layout_map``: bytes of the class table
(and its momentum) on each device, and the compiled step's temp bytes per
device.

Targets (issue 13): at 1M classes ``sampled`` >= 4x faster per step than
``full``, and its temp bytes <= 0.25x ``full``'s; the sharded table is
1 / (model axis) of the table per device.

    KERAS_BACKEND=jax .venv/bin/python benchmarks/classes.py [--quick] [--out runs/bench/classes.json]
    make bench-classes
"""

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from common import (  # noqa: E402
    configure_threads, fmt_ms, median, peak_rss_growth_mib, rss_probe_available, write_results,
)

BATCH, EMBED_DIM, RATE = 256, 128, 0.1
CLASSES = (100_000, 1_000_000, 4_000_000)
QUICK_CLASSES = (10_000, 100_000)
RUN_FULL_UP_TO = 1_000_000  # above: the full term is compiled, not run (its logits alone are 4 GB at 4M)
SPEEDUP_TARGET, MEMORY_TARGET, TARGET_CLASSES = 4.0, 0.25, 1_000_000
DEFAULT_OUT = os.path.join("runs", "bench", "classes.json")


def compiled_train_step(objective, x, y, data_sharding=None):
    """The objective's JAX train step on one batch, compiled as Keras's trainer compiles it.

    ``jit`` with the state donated and, under a ``keras.distribution``, the
    state's shardings as outputs; checks recorded as in ``fit``. Returns the
    ``jax.stages.Compiled`` (``.as_text()``: the HLO; ``.memory_analysis()``).
    """
    import jax
    import keras

    from lossweave import _backend as backend

    state = (
        [v.value for v in objective.trainable_variables],
        [v.value for v in objective.non_trainable_variables],
        [v.value for v in objective.optimizer.variables],
        [v.value for v in objective.metrics_variables],
    )
    if data_sharding is not None:
        x, y = jax.device_put(x, data_sharding), jax.device_put(y, data_sharding)
    sharded = keras.distribution.distribution() is not None
    out_shardings = (None, objective._get_state_sharding_spec()) if sharded else None
    step = jax.jit(objective.train_step, donate_argnums=0, out_shardings=out_shardings)
    with backend.recording_checks():
        return step.lower(state, (x, {"label": y})).compile()


def _objective(classes, rate):
    import keras

    import lossweave as lw
    from margin import build_backbone

    inputs, embedding = build_backbone()
    model = keras.Model(inputs, {"embedding": embedding})
    keras.utils.set_random_seed(1)
    term = lw.terms.ArcFace(classes, scale=64.0, angular_margin=0.5, sample_rate=rate, seed=0 if rate < 1 else None)
    objective = lw.Objective(model, {"arcface": term})
    objective.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
    objective.build((None, 128))
    objective.optimizer.build(objective.trainable_variables)
    return objective


def _data(classes, steps):
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(steps * BATCH, 128)).astype("float32")
    y = rng.integers(0, classes, size=steps * BATCH).astype("int32")
    return x, y


def _memory(compiled):
    analysis = compiled.memory_analysis()
    return {
        "temp_bytes": int(analysis.temp_size_in_bytes),
        "argument_bytes": int(analysis.argument_size_in_bytes),
        "output_bytes": int(analysis.output_size_in_bytes),
        "alias_bytes": int(analysis.alias_size_in_bytes),
    }


def case(classes, rate, steps, run_steps=True):
    """One process's measurement (see the module docstring)."""
    from step_overhead import StepTimer

    objective = _objective(classes, rate)
    x, y = _data(classes, steps)
    result = {"classes": classes, "rate": rate, "table_bytes": classes * EMBED_DIM * 4}
    result.update(_memory(compiled_train_step(objective, x[:BATCH], y[:BATCH])))
    if not run_steps:
        return result
    timer = StepTimer()

    def epoch(n):
        objective.fit(x[: n * BATCH], {"label": y[: n * BATCH]}, batch_size=BATCH, epochs=1, shuffle=False,
                      verbose=0, callbacks=[timer])

    epoch(2)  # trace, compile, first steps
    growth = peak_rss_growth_mib(lambda: epoch(steps), repeats=1) if rss_probe_available() else float("nan")
    result.update({"step_s": float(median(timer.step_times())), "steps": steps, "rss_growth_mib": growth})
    return result


def mesh_case(classes):
    """Bytes of each table on each device under a (2 data x 2 model) mesh, and each step's temp bytes."""
    import jax
    import keras

    import lossweave as lw

    mesh = keras.distribution.DeviceMesh((2, 2), ["data", "model"], jax.devices()[:4])
    data_sharding = jax.sharding.NamedSharding(mesh.backend_mesh, jax.sharding.PartitionSpec("data"))
    rows = []
    for rate in (1.0, RATE):
        layout_map = keras.distribution.LayoutMap(mesh)
        keras.distribution.set_distribution(keras.distribution.ModelParallel(layout_map=layout_map,
                                                                             batch_dim_name="data"))
        objective = _build_sharded(classes, rate, layout_map, lw)  # terms made under the distribution
        table = objective.terms["arcface"].class_weights
        momentum = next(v for v in objective.optimizer.variables if v.path.endswith("arcface_class_weights_momentum"))

        def per_device(variable):
            bytes_on = {}
            for shard in variable.value.addressable_shards:
                bytes_on[str(shard.device)] = bytes_on.get(str(shard.device), 0) + shard.data.nbytes
            return sorted(set(bytes_on.values())), len(bytes_on)

        x, y = _data(classes, 1)
        memory = _memory(compiled_train_step(objective, x, y, data_sharding))
        table_per_device, devices = per_device(table)
        rows.append({
            "classes": classes, "rate": rate, "devices": devices, "table_bytes": classes * EMBED_DIM * 4,
            "table_bytes_per_device": table_per_device, "momentum_bytes_per_device": per_device(momentum)[0],
            "temp_bytes_per_device": memory["temp_bytes"],
        })
        keras.distribution.set_distribution(None)
        del objective, table, momentum
    return rows


def _build_sharded(classes, rate, layout_map, lw):
    import keras

    from margin import build_backbone

    inputs, embedding = build_backbone()
    model = keras.Model(inputs, {"embedding": embedding})
    keras.utils.set_random_seed(1)
    terms = {"arcface": lw.terms.ArcFace(classes, scale=64.0, angular_margin=0.5, sample_rate=rate,
                                         seed=0 if rate < 1 else None)}
    lw.sharding.fill_layout_map(layout_map, terms)
    objective = lw.Objective(model, terms)
    objective.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
    objective.build((None, 128))
    objective.optimizer.build(objective.trainable_variables)
    return objective


# ------------------------------------------------------------------ the driver
def _subprocess(args, threads, devices=None):
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3")
    if devices:
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={devices}").strip()
    command = [sys.executable, os.path.abspath(__file__), "--threads", str(threads), *args]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(quick=False, threads=1, rounds=None):
    classes_list = QUICK_CLASSES if quick else CLASSES
    steps, rounds = (4, 1) if quick else (6, rounds or 2)
    cases = []
    for classes in classes_list:
        variants = [1.0, RATE]
        measured = {rate: [] for rate in variants}
        for r in range(rounds):
            for rate in variants if r % 2 == 0 else variants[::-1]:
                run_steps = rate < 1 or classes <= RUN_FULL_UP_TO
                if not run_steps and r > 0:
                    continue  # compiled once is enough
                args = ["--case", str(classes), str(rate), str(steps)] + ([] if run_steps else ["--compile-only"])
                measured[rate].append(_subprocess(args, threads))
                print(f"  {classes:,} classes, rate {rate}: {measured[rate][-1]}", flush=True)
        cases.append(_summary(classes, measured))
    mesh_classes = classes_list[1] if quick else TARGET_CLASSES
    mesh = _subprocess(["--mesh", str(mesh_classes)], threads, devices=4)
    results = {"batch": BATCH, "embed_dim": EMBED_DIM, "rate": RATE, "steps": steps, "rounds": rounds,
               "threads": threads, "cases": cases, "mesh": mesh}
    results["targets"] = _targets(results)
    return results


def _summary(classes, measured):
    full, sampled = measured[1.0], measured[RATE]
    row = {"classes": classes, "full": full[0], "sampled": sampled[0]}
    for name, runs in (("full", full), ("sampled", sampled)):
        times = [r["step_s"] for r in runs if "step_s" in r]
        row[f"{name}_step_s"] = float(median(times)) if times else None
        row[f"{name}_rss_growth_mib"] = float(median([r["rss_growth_mib"] for r in runs if "step_s" in r])) if times else None
    paired = [f["step_s"] / s["step_s"] for f, s in zip(full, sampled) if "step_s" in f and "step_s" in s]
    row["speedup"] = float(median(paired)) if paired else None
    row["temp_ratio"] = sampled[0]["temp_bytes"] / full[0]["temp_bytes"]
    return row


def _targets(results):
    targets = {}
    for row in results["cases"]:
        if row["classes"] == TARGET_CLASSES:
            targets[f"sampled {RATE} >= {SPEEDUP_TARGET}x faster than full at 1M classes"] = (
                None if row["speedup"] is None else bool(row["speedup"] >= SPEEDUP_TARGET))
            targets[f"sampled temp bytes <= {MEMORY_TARGET}x full at 1M classes"] = bool(
                row["temp_ratio"] <= MEMORY_TARGET)
    for row in results["mesh"]:
        targets[f"table per device = 1/2 of the table (2 x 2 mesh, rate {row['rate']})"] = (
            row["table_bytes_per_device"] == [row["table_bytes"] // 2])
    return targets


def _mib(n):
    return "n/a" if n is None else f"{n / 2**20:,.0f}"


def markdown(results):
    lines = [
        f"ArcFace at many classes (JAX, one CPU device, {results['threads']} thread): batch {results['batch']}, "
        f"embedding {results['embed_dim']}, SGD momentum 0.9; ms per step = median of {results['steps']} steps, "
        f"{results['rounds']} rounds (full and sampled interleaved, one process per case); temp = XLA's temp "
        "buffers of the compiled step (beyond its state: table, momentum, backbone); RSS growth = peak RSS "
        "above the RSS before the timed epoch",
        "",
        "| classes | table MiB | full ms/step | sampled 0.1 ms/step | speed-up | full temp MiB | "
        "sampled temp MiB | temp ratio | full RSS growth MiB | sampled RSS growth MiB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in results["cases"]:
        full_ms = "not run" if row["full_step_s"] is None else fmt_ms(row["full_step_s"])
        speedup = "n/a" if row["speedup"] is None else f"{row['speedup']:.2f}x"
        lines.append(
            f"| {row['classes']:,} | {_mib(row['full']['table_bytes'])} | {full_ms} | {fmt_ms(row['sampled_step_s'])} "
            f"| {speedup} | {_mib(row['full']['temp_bytes'])} | {_mib(row['sampled']['temp_bytes'])} | "
            f"{row['temp_ratio']:.3f} | {_growth(row['full_rss_growth_mib'])} | {_growth(row['sampled_rss_growth_mib'])} |"
        )
    lines += [
        "",
        "Under a 2 data x 2 model `ModelParallel` mesh (4 virtual CPU devices, `lw.sharding.fill_layout_map`):",
        "",
        "| classes | rate | table MiB | table MiB per device | momentum MiB per device | temp MiB per device |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for row in results["mesh"]:
        lines.append(
            f"| {row['classes']:,} | {row['rate']} | {_mib(row['table_bytes'])} | "
            f"{', '.join(_mib(b) for b in row['table_bytes_per_device'])} | "
            f"{', '.join(_mib(b) for b in row['momentum_bytes_per_device'])} | {_mib(row['temp_bytes_per_device'])} |"
        )
    verdict = lambda v: "met" if v else ("n/a" if v is None else "MISSED")
    lines += ["", "Targets: " + "; ".join(f"{k}: {verdict(v)}" for k, v in results["targets"].items())]
    return "\n".join(lines)


def _growth(mib):
    return "n/a" if mib is None or mib != mib else f"{mib:,.0f}"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 10k and 100k classes, one round")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"JSON results file (default {DEFAULT_OUT})")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per backend pool (default 1)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds of interleaved cases (default 2)")
    parser.add_argument("--case", nargs=3, metavar=("CLASSES", "RATE", "STEPS"), help=argparse.SUPPRESS)
    parser.add_argument("--compile-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mesh", type=int, metavar="CLASSES", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("KERAS_BACKEND", "jax")
    configure_threads(args.threads)
    if args.case:
        classes, rate, steps = int(args.case[0]), float(args.case[1]), int(args.case[2])
        print(json.dumps(case(classes, rate, steps, run_steps=not args.compile_only)))
        return 0
    if args.mesh:
        print(json.dumps(mesh_case(args.mesh)))
        return 0
    start = time.perf_counter()
    results = run(quick=args.quick, threads=args.threads, rounds=args.rounds)
    results["seconds"] = time.perf_counter() - start
    results["command"] = " ".join(["python", *sys.argv])
    results["markdown"] = markdown(results)
    print(results["markdown"])
    if args.out:
        write_results(results, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
