"""Fit step time of each term family, today's lossweave against lossweave at an earlier revision.

Issue 20 moved every loss term onto one Term protocol (the base ``call`` runs
the declared input checks, the ``compute_loss`` hook, the gate and a gated
``update_state``). This benchmark checks that the move costs no step time:
for each term family, the same ``Objective`` is built from today's library
(the working tree) and from the library at ``--before REV`` (default
``43efa0a``, the commit before the move; read with ``git archive`` and
imported as ``lossweave_<sha>`` beside today's by ``common.load_library``),
and both are trained through ``fit`` in one process. ``--today REV`` times
lossweave at ``REV`` (read the same way) instead of the working tree: with
``--before`` the parent of ``REV``, it charges a change to one commit.

Model (one per version, identical initial weights), batch 256, Adam, float32::

    x (64) -> Dense(64, relu) -> Dense(32) = "embedding" [-> Dense(10) = "logits"]

The logits head exists only for the families that read it (softmax, center).
Each family's terms, built with DEFAULT arguments only (argument names were
renamed between the versions; positional ``num_classes`` is the same):

* ``softmax``: ``SoftmaxCrossEntropy(on="logits")``;
* ``center``: that plus ``CenterLoss(10)``, ``weighting=Fixed({"center": 0.003})``
  (as ``step_overhead.py``);
* ``arcface``: ``ArcFace(10)``; ``proxy-anchor``: ``ProxyAnchorLoss(10)``;
* ``triplet``: ``TripletLoss()`` (semi-hard mining);
* ``multi-similarity``: ``MultiSimilarityLoss()``; ``supcon``: ``SupConLoss()``;
* ``xbm``: ``CrossBatchMemory(TripletLoss(mining="batch-hard"), memory_size=1024)``.

Data: fixed random normal features (64), labels 0..9 balanced in every batch
(each class 25 or 26 times, shuffled within the batch).

Timing: ``step_overhead.StepTimer`` (a callback stamps
``on_train_batch_end``; the step time is the median gap between stamps) on
the CPU clock by default (``--clock cpu``: this process's CPU seconds, which
other processes on a shared machine do not lengthen, with one thread per
backend pool as ``run.py`` sets it). After a warm-up epoch per version
(trace and compile), ``common.interleaved_rounds`` runs one-epoch fits of
today and before, alternating the order each round; the ratio is the median
of the per-round ratios today/before, its spread the per-round quartiles.
Target: ``today / before <= 1.03`` for every family.

Beside the times (not with ``--quick``), a noise-free size of one train step
of each version: on JAX XLA's flop count of the compiled step
(``common.xla_flops``), on TensorFlow the number of operations in the
traced step's graph, on PyTorch the number of ATen operators one eager step
dispatches. Equal counts mean both versions run the same computation, so a
time ratio away from 1 is Python overhead per op call (eager PyTorch) or the
shared machine's noise; a higher count names a real change of the step.

    KERAS_BACKEND=jax .venv/bin/python benchmarks/terms_step.py [--quick] [--before 43efa0a] \
        [--today REV] [--clock cpu|wall] [--rounds N] [--steps N] [--only FAMILY ...] [--no-count] \
        [--out FILE.json]
"""

import argparse
import datetime
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import configure_threads, write_results  # noqa: E402  (imports no backend)

BATCH, INPUT_DIM, HIDDEN, EMBED_DIM, NUM_CLASSES = 256, 64, 64, 32, 10
TARGET = 1.03
DEFAULT_BEFORE = "43efa0a"
VERSIONS = ("today", "before")


def _softmax(lib):
    return {"softmax": lib.terms.SoftmaxCrossEntropy(on="logits")}, None


def _center(lib):
    terms = {"softmax": lib.terms.SoftmaxCrossEntropy(on="logits"), "center": lib.terms.CenterLoss(NUM_CLASSES)}
    return terms, lib.weighting.Fixed({"center": 0.003})


# family -> (builder(library) -> (terms, weighting), whether the model has the logits head)
FAMILIES = {
    "softmax": (_softmax, True),
    "center": (_center, True),
    "arcface": (lambda lib: ({"arcface": lib.terms.ArcFace(NUM_CLASSES)}, None), False),
    "proxy-anchor": (lambda lib: ({"proxy": lib.terms.ProxyAnchorLoss(NUM_CLASSES)}, None), False),
    "triplet": (lambda lib: ({"triplet": lib.terms.TripletLoss()}, None), False),
    "multi-similarity": (lambda lib: ({"ms": lib.terms.MultiSimilarityLoss()}, None), False),
    "supcon": (lambda lib: ({"supcon": lib.terms.SupConLoss()}, None), False),
    "xbm": (lambda lib: ({"xbm": lib.terms.CrossBatchMemory(
        lib.terms.TripletLoss(mining="batch-hard"), memory_size=1024)}, None), False),
}


def build_model(logits, seed=0):
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((INPUT_DIM,), name="x")
    h = keras.layers.Dense(HIDDEN, activation="relu")(inputs)
    embedding = keras.layers.Dense(EMBED_DIM, name="embedding")(h)
    outputs = {"embedding": embedding}
    if logits:
        outputs["logits"] = keras.layers.Dense(NUM_CLASSES, name="logits")(embedding)
    return keras.Model(inputs, outputs)


def build(family, library, weights=None):
    """A compiled ``Objective`` of ``family`` built with ``library`` (model weights set to ``weights``)."""
    import keras

    builder, logits = FAMILIES[family]
    model = build_model(logits)
    if weights is not None:
        model.set_weights(weights)
    keras.utils.set_random_seed(1)  # the terms' own initial state (class weights, proxies) alike
    terms, weighting = builder(library)
    objective = library.Objective(model, terms, weighting=weighting)
    objective.compile(optimizer="adam")
    return objective


def make_data(steps, seed=0):
    """Random features and labels 0..9 balanced in every batch of ``BATCH``."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(steps * BATCH, INPUT_DIM)).astype("float32")
    base = np.arange(BATCH) % NUM_CLASSES
    y = np.concatenate([rng.permutation(base) for _ in range(steps)]).astype("int32")
    return x, y


def run(quick=False, before=DEFAULT_BEFORE, clock="cpu", rounds=None, steps=None, families=None, count=None,
        today=None):
    import keras

    from common import backend, interleaved_rounds, median
    from common import load_library
    from step_overhead import StepTimer

    import lossweave as lw

    sha, old = load_library(before)
    today_sha = None
    if today:  # a committed revision instead of the working tree (e.g. to leave out uncommitted edits)
        today_sha, lw = load_library(today)
    rounds = rounds or (4 if quick else 40)
    steps = steps or (8 if quick else 32)
    families = families or tuple(FAMILIES)
    count = (not quick) if count is None else count
    x, y = make_data(steps)
    results = {
        "backend": backend(), "before": before, "before_sha": sha, "today": today or "working tree",
        "today_sha": today_sha, "working_tree": None if today else _working_tree(), "clock": clock, "batch": BATCH,
        "model": f"{INPUT_DIM} -> {HIDDEN} (relu) -> {EMBED_DIM} [-> {NUM_CLASSES}]", "rounds": rounds,
        "steps_per_epoch": steps, "target": TARGET, "rows": [],
    }
    timer = StepTimer(clock)
    for family in families:
        start = time.perf_counter()
        current = build(family, lw)
        runs = {"today": current, "before": build(family, old, weights=current.model.get_weights())}

        def epoch(version):
            runs[version].fit(x, {"label": y}, batch_size=BATCH, epochs=1, shuffle=False, verbose=0,
                              callbacks=[timer])
            return timer.step_times()

        for version in VERSIONS:  # warm-up: trace and compile
            epoch(version)
        counted = {}
        if count:
            for version in VERSIONS:
                try:
                    counted[version] = step_count(runs[version], x[:BATCH], y[:BATCH])
                except Exception as error:  # a count is a bonus: never lose the timing for it
                    counted[version] = None
                    print(f"  ({family} {version}: no {COUNTS[backend()]}: {type(error).__name__}: {error})")
        times, per_round = interleaved_rounds(epoch, VERSIONS, rounds)
        ratios = sorted(p / q for p, q in zip(per_round["today"], per_round["before"]))
        q1, q3 = _quartiles(ratios)
        ratio = float(median(ratios))
        row = {
            "family": family,
            "terms": {name: type(term).__name__ for name, term in runs["today"].terms.items()}
            if hasattr(runs["today"], "terms") and isinstance(runs["today"].terms, dict) else None,
            "before_s": float(median(times["before"])),
            "today_s": float(median(times["today"])),
            "ratio": ratio,
            "ratio_q1": q1,
            "ratio_q3": q3,
            "ratio_min": float(ratios[0]),
            "ratio_max": float(ratios[-1]),
            "per_round": {v: [float(t) for t in per_round[v]] for v in VERSIONS},
            "count": COUNTS[backend()] if counted else None,
            "count_today": counted.get("today"),
            "count_before": counted.get("before"),
            "count_ratio": counted["today"] / counted["before"]
            if counted.get("today") and counted.get("before") else None,
            "met": bool(ratio <= TARGET),
            "seconds": time.perf_counter() - start,
        }
        results["rows"].append(row)
        print(f"  {family}: before {row['before_s'] * 1e3:.3f} ms, today {row['today_s'] * 1e3:.3f} ms, "
              f"today/before {ratio:.3f} [{q1:.3f}, {q3:.3f}] ({row['seconds']:.0f} s)", flush=True)
        del runs, current
        keras.backend.clear_session()
    results["targets"] = {f"{row['family']}: today / before <= {TARGET}": row["met"] for row in results["rows"]}
    return results


def _quartiles(sorted_values):
    import numpy as np

    q1, q3 = np.percentile(sorted_values, [25, 75])
    return float(q1), float(q3)


def _working_tree():
    """``{"head": short sha, "modified": files changed under src/lossweave}``: what 'today' was."""
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    git = lambda *args: subprocess.check_output(["git", *args], cwd=root, text=True).strip()
    try:
        return {"head": git("rev-parse", "--short", "HEAD"),
                "modified": len(git("status", "--porcelain", "--", "src/lossweave").splitlines())}
    except (OSError, subprocess.CalledProcessError):
        return None


COUNTS = {
    "jax": "XLA flops",  # common.xla_flops: the compiled step's cost_analysis
    "tensorflow": "graph ops",  # operations in the traced train step's graph
    "torch": "aten ops",  # ATen operators dispatched by one eager fit step
}


def step_count(trainable, x, y):
    """A noise-free size of one train step of ``trainable`` on one batch (``COUNTS`` says which).

    Equal counts mean the versions run the same computation: a time ratio away
    from 1 is then Python overhead per op call (eager PyTorch) or noise.
    """
    import keras

    from common import recording_checks, xla_flops

    name = keras.backend.backend()
    if name == "jax":
        return xla_flops(trainable, (x, {"label": y}))
    if name == "tensorflow":
        import tensorflow as tf

        data = (tf.constant(x), {"label": tf.constant(y)})
        with recording_checks(trainable):  # as the Objective's guarded step traces it
            graph = tf.function(trainable.train_step).get_concrete_function(data).graph
        return float(len(graph.get_operations()))
    if name == "torch":
        from torch.utils._python_dispatch import TorchDispatchMode

        class Counter(TorchDispatchMode):
            calls = 0

            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                Counter.calls += 1
                return func(*args, **(kwargs or {}))

        with Counter():  # one more training step for this version (both versions get one)
            trainable.fit(x, {"label": y}, batch_size=len(x), epochs=1, shuffle=False, verbose=0)
        return float(Counter.calls)
    return None


def _today(results):
    tree = results.get("working_tree")
    if tree:
        return f"working tree: {tree['head']} + {tree['modified']} modified files in src/lossweave"
    return results.get("today") or "working tree"


def markdown(results):
    from common import fmt_ms

    counted = [row for row in results["rows"] if row.get("count_ratio") is not None]
    count = counted[0]["count"] if counted else None
    lines = [
        f"Term families, {results['backend']}: fit step of lossweave today ({_today(results)}) against lossweave at "
        f"{results['before']} ({results['before_sha']}); MLP {results['model']}, batch {results['batch']}, "
        f"Adam; median ms per step ({results['clock']} clock) over {results['rounds']} interleaved one-epoch "
        f"rounds of {results['steps_per_epoch']} steps; today/before is the median of per-round ratios "
        f"[quartiles of the per-round ratios]. Target: today/before <= {results['target']}",
        "",
        "| family | before ms | today ms | today/before | per-round [q1, q3] | target |"
        + (f" {count} per step today/before |" if count else ""),
        "|:---|---:|---:|---:|:---|:---|" + ("---:|" if count else ""),
    ]
    for row in results["rows"]:
        flops = ""
        if count:
            flops = " n/a |" if row.get("count_ratio") is None else (
                f" {row['count_ratio']:.3f} ({row['count_today']:.4g} / {row['count_before']:.4g}) |")
        lines.append(
            f"| {row['family']} | {fmt_ms(row['before_s'])} | {fmt_ms(row['today_s'])} | {row['ratio']:.3f} "
            f"| [{row['ratio_q1']:.3f}, {row['ratio_q3']:.3f}] | {'met' if row['met'] else '**missed**'} |"
            + flops
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", default=DEFAULT_BEFORE, metavar="REV",
                        help=f"git revision to compare with (default {DEFAULT_BEFORE})")
    parser.add_argument("--today", metavar="REV",
                        help="time lossweave at git REV as 'today' instead of the working tree")
    parser.add_argument("--quick", action="store_true", help="smoke run: few rounds, short epochs")
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    parser.add_argument("--rounds", type=int, help="interleaved rounds per family (default 40; quick 4)")
    parser.add_argument("--steps", type=int, help="steps per timed epoch (default 32; quick 8)")
    parser.add_argument("--only", nargs="+", choices=tuple(FAMILIES), metavar="FAMILY",
                        help=f"families to time (default all: {', '.join(FAMILIES)})")
    parser.add_argument("--no-count", action="store_true",
                        help="skip the noise-free count per step (XLA flops, TF graph ops, torch aten ops)")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads per backend thread pool (default 1, as run.py; 0: backend defaults)")
    parser.add_argument("--out", help="write the results as JSON to this file")
    args = parser.parse_args(argv)
    configure_threads(args.threads)  # before keras is imported
    import keras

    start = time.perf_counter()
    results = run(quick=args.quick, before=args.before, clock=args.clock, rounds=args.rounds, steps=args.steps,
                  families=args.only, count=False if args.no_count else None, today=args.today)
    results.update({
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": " ".join([f"KERAS_BACKEND={keras.backend.backend()}", "python"] + sys.argv),
        "quick": args.quick, "threads": args.threads, "keras": keras.__version__,
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "seconds": time.perf_counter() - start,
    })
    results["markdown"] = markdown(results)
    print()
    print(results["markdown"])
    print(f"\n({results['backend']}, {results['seconds']:.0f} s, load average {results['load_average']})")
    if args.out:
        write_results(results, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
