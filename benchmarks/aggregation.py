"""The time of the aggregation alone (the K x K solve) against the step time of the model, K = 2, 4, 10.

For each gradient-level strategy of ``lossweave.cli.registry.WEIGHTINGS``
(built by the registry's builder with its defaults; a name added there
appears here with no edit), and for a strategy with ``update_weights_every``
also with ``update_weights_every=1`` (Nash-MTL solving its problem every
step, the worst case), this times one call of what the train step calls:

* ``strategy.aggregate(G, losses, step, True)``: the weights from the K x K
  Gramian ``G`` (the strategy's ``<name>_weights`` solver of
  ``lossweave.ops.aggregators``), for the strategies that need only ``G``;
* ``strategy.aggregate_rows(rows, G, losses, step, True)`` for those that
  override it (they read the term gradients themselves: per-layer groups,
  elementwise masks, running averages), with one ``(K, *shape)`` row tensor
  per shared variable of the model below (what the step hands them), and
  again in representation mode (``Objective(representation=...)``: one
  ``(K, batch, 256)`` row of the trunk's output, GradDrop's setting in its
  paper) unless the strategy refuses that mode.

Each call is compiled the way ``fit`` compiles the train step on the
backend: ``jax.jit`` (the strategy's variables, seed generators included,
passed in and out through a ``StatelessScope``, as Keras's JAX trainer
does), ``tf.function`` with the ``jit_compile`` that ``compile()`` resolves
for the Objective (off on CPU: Keras's "auto"), eager PyTorch under
``no_grad``. Inputs: random term gradients with a shared direction, random
signs (conflicts) and magnitudes spread over 10^-1 .. 10^1, their Gramian,
losses in [0.5, 3]; ``step`` counts the calls. Each strategy's time is the
median over interleaved rounds (strategies in alternating order) of the mean
of a burst of calls (~20 ms of calls, at least 5). A separately compiled
call pays a dispatch cost that the same ops inside the train step do not
(tens of microseconds on JAX, about a millisecond for a ``tf.function`` call
on this loaded machine), so the same call returning constant weights
(``Sum``'s ``aggregate``, same arguments) is timed as the **call floor**
right before each burst of a strategy, and the target is checked on the
time **net** of it: the median over the rounds of the paired differences.

The model, the step times it is compared against: ``gradient.py``'s
multi-task MLP ``x (64) -> Dense(256, relu) -> Dense(256, relu) -> K heads
Dense(32, relu) -> Dense(10)``, batch 128, Adam, one SoftmaxCrossEntropy per
head, fit step (``StepTimer``, interleaved one-epoch rounds) of

* ``Sum``: the gradient-level step with the cheapest aggregation (weights
  1): the step of which the solve is a part. **Target: aggregation <= 10 %
  of this step at every K <= 10**;
* ``Fixed``: the loss-level step (one backward pass), for reference.

    KERAS_BACKEND=jax .venv/bin/python benchmarks/run.py --only aggregation [--quick]
    KERAS_BACKEND=jax .venv/bin/python benchmarks/aggregation.py [--quick] [--only NAME,NAME] [--ks 2,4,10]
"""

if __name__ == "__main__":  # the thread limits must be set before keras is imported
    from common import configure_threads

    configure_threads(1)

import time  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402

import gradient  # noqa: E402
import lossweave as lw  # noqa: E402
from common import backend, fmt_ms, interleaved_rounds, median  # noqa: E402
from lossweave.cli import registry  # noqa: E402
from step_overhead import StepTimer  # noqa: E402

KS = (2, 4, 10)
TARGET = 0.10  # aggregation / gradient-level step
BURST_S = 0.02
FLOOR = "(call floor)"


def gradient_level(only=None):
    names = tuple(name for name, entry in registry.WEIGHTINGS.items() if entry.level == "gradient")
    if only:
        unknown = sorted(set(only) - set(names))
        if unknown:
            raise ValueError(f"--only: unknown gradient-level names {unknown}; choose from {', '.join(names)}.")
        names = tuple(n for n in names if n in only)
    return names


def overrides_rows(strategy):
    """Whether the strategy reads the term gradients themselves (its own ``aggregate_rows``)."""
    return type(strategy).aggregate_rows is not lw.weighting.GradientWeighting.aggregate_rows


def variants(term_names, only=None):
    """``{label: (strategy, representation)}``: every registered gradient-level strategy, and

    * its every-step variant when it has ``update_weights_every`` (!= 1 by default),
    * when it reads the rows themselves, its representation-mode variant
      (``Objective(representation=...)``: rows ``(K, batch, features)`` of the
      trunk's output instead of one per shared variable; GradDrop's mode in its
      paper), unless it refuses that mode.
    """
    found = {}
    for name in gradient_level(only):
        strategy = registry.build_weighting(name, term_names, 0.0, 1)
        found[name] = (strategy, False)
        config = strategy.get_config()
        if config.get("update_weights_every", 1) != 1:
            found[f"{name} (update_weights_every=1)"] = (
                type(strategy).from_config({**config, "update_weights_every": 1}), False)
        if overrides_rows(strategy):
            found[f"{name} (representation)"] = (registry.build_weighting(name, term_names, 0.0, 1), True)
    return found


def inputs(k, entries, seed=0):
    """Rows like the model's shared variables (a None batch: ``gradient.BATCH``), their Gramian, losses (float32)."""
    entries = [(path, tuple(gradient.BATCH if d is None else d for d in shape)) for path, shape in entries]
    rng = np.random.default_rng(seed)
    signs = rng.choice([-1.0, 1.0], size=k) * rng.uniform(0.5, 1.5, size=k)
    magnitudes = 10.0 ** rng.uniform(-1.0, 1.0, size=k)
    rows = []
    for _, shape in entries:
        shared = rng.normal(size=shape)
        own = rng.normal(size=(k, *shape))
        r = magnitudes.reshape((k,) + (1,) * len(shape)) * (signs.reshape((k,) + (1,) * len(shape)) * shared + own)
        rows.append((r / np.sqrt(sum(int(np.prod(s)) for _, s in entries))).astype("float32"))
    flat = np.concatenate([r.reshape(k, -1).astype("float64") for r in rows], axis=1)
    gram = (flat @ flat.T).astype("float32")
    losses = rng.uniform(0.5, 3.0, size=k).astype("float32")
    return rows, gram, losses


# ------------------------------------------------------------- compiled calls
def compiled_call(strategy, use_rows, jit_compile):
    """``call(rows, gram, losses, step)``: one aggregation compiled as ``fit`` compiles its step."""

    def aggregate(rows, gram, losses, step):
        if use_rows:
            updates, weights = strategy.aggregate_rows(list(rows), gram, losses, step, True)
            return list(updates), weights
        return [], strategy.aggregate(gram, losses, step, True)

    name = backend()
    variables = list(strategy.variables)
    if name == "jax":
        import jax
        from keras.src.backend import StatelessScope  # no public API (Keras 3.15)

        def pure(values, rows, gram, losses, step):
            with StatelessScope(state_mapping=list(zip(variables, values))) as scope:
                out = aggregate(rows, gram, losses, step)
            new = [scope.get_current_value(v) for v in variables]
            return out, [v if n is None else n for v, n in zip(values, new)]

        jitted = jax.jit(pure)
        state = [v.value for v in variables]

        def call(rows, gram, losses, step):
            nonlocal state
            out, state = jitted(state, rows, gram, losses, step)
            return out

        return call
    if name == "tensorflow":
        import tensorflow as tf

        function = tf.function(aggregate, jit_compile=bool(jit_compile))
        return lambda rows, gram, losses, step: function(rows, gram, losses, step)
    import torch

    def eager(rows, gram, losses, step):
        with torch.no_grad():
            return aggregate(rows, gram, losses, step)

    return eager


def _block(out):
    if backend() == "jax":
        import jax

        jax.block_until_ready(out)
    return out


def time_aggregations(k, entries, representation, jit_compile, only=None, rounds=5):
    """Seconds per call of each variant; ``entries``/``representation``: the shared variables / trunk output."""
    names = [f"t{i}" for i in range(k)]
    tensor = keras.ops.convert_to_tensor
    data = {}
    for mode, mode_entries in ((False, entries), (True, representation)):
        rows, gram, losses = inputs(k, mode_entries)
        data[mode] = ([tensor(r) for r in rows], tensor(gram), tensor(losses))
    calls, kinds, bursts, counters, modes = {}, {}, {}, {}, {}
    for label, (strategy, mode) in {FLOOR: (lw.weighting.Sum(), False), **variants(names, only)}.items():
        strategy.setup(names)
        try:
            strategy.build_rows(representation if mode else entries)
        except ValueError:  # a strategy that refuses representation mode
            continue
        use_rows = overrides_rows(strategy)
        calls[label] = compiled_call(strategy, use_rows, jit_compile)
        kinds[label] = "aggregate_rows" if use_rows else "aggregate"
        counters[label], modes[label] = 0, mode

    def one(label):
        step = keras.ops.convert_to_tensor(np.int32(counters[label]))
        counters[label] += 1
        rows_t, gram_t, losses_t = data[modes[label]]
        return calls[label](rows_t, gram_t, losses_t, step)

    for label in calls:  # warm-up: trace and compile, then size the burst
        _block(one(label))
        start = time.perf_counter()
        _block([one(label) for _ in range(3)])
        per_call = (time.perf_counter() - start) / 3
        bursts[label] = int(min(200, max(5, BURST_S / max(per_call, 1e-7))))
        weights = np.asarray(keras.ops.convert_to_numpy(_block(one(label))[1]))
        if not np.all(np.isfinite(weights)):
            raise FloatingPointError(f"{label}: non-finite weights {weights} at K={k}")

    def burst(label):
        n = bursts[label]
        start = time.perf_counter()
        _block([one(label) for _ in range(n)])
        return (time.perf_counter() - start) / n

    # Each strategy's burst right after a burst of the floor, strategies in alternating order
    # each round: the net time is the median of these paired differences, robust to the
    # machine's drifts that a floor timed once would carry into every strategy.
    labels = [label for label in calls if label != FLOOR]
    gross, net, floors = {label: [] for label in labels}, {label: [] for label in labels}, []
    for r in range(rounds):
        for label in labels if r % 2 == 0 else labels[::-1]:
            floor = burst(FLOOR)
            seconds = burst(label)
            floors.append(floor)
            gross[label].append(seconds)
            net[label].append(seconds - floor)
    timed = {label: {"seconds": float(median(gross[label])), "net_seconds": max(float(median(net[label])), 0.0),
                     "kind": kinds[label], "burst": bursts[label]} for label in labels}
    timed[FLOOR] = {"seconds": float(median(floors)), "kind": "aggregate", "burst": bursts[FLOOR]}
    return timed


def step_times(k, steps, rounds):
    """Median fit step (s) of ``Sum`` and ``Fixed`` on the K-head model, interleaved; the Sum objective."""
    runs = {v: gradient.build(v, k) for v in ("Fixed", "Sum")}
    rng = np.random.default_rng(0)
    x = rng.normal(size=(steps * gradient.BATCH, gradient.INPUT_DIM)).astype("float32")
    labels = rng.integers(0, gradient.NUM_CLASSES, size=(k, steps * gradient.BATCH)).astype("int32")
    timer = StepTimer()

    def epoch(variant):
        trainable, key = runs[variant]
        trainable.fit(x, {key.format(i): labels[i] for i in range(k)}, batch_size=gradient.BATCH, epochs=1,
                      shuffle=False, verbose=0, callbacks=[timer])
        return timer.step_times()

    for variant in runs:
        epoch(variant)
    times, per_round = interleaved_rounds(epoch, tuple(runs), rounds)
    return {v: float(median(times[v])) for v in runs}, runs["Sum"][0]


def run(quick=False, ks=KS, only=None):
    steps, step_rounds, agg_rounds = (8, 2, 3) if quick else (24, 5, 7)
    results = {"backend": backend(), "batch": gradient.BATCH, "trunk": list(gradient.TRUNK), "head": gradient.HEAD,
               "steps_per_epoch": steps, "step_rounds": step_rounds, "aggregation_rounds": agg_rounds,
               "tables": []}
    for k in ks:
        steps_s, objective = step_times(k, steps, step_rounds)
        entries = objective.gradient_plan().entries
        representation = [("representation/features", (None, gradient.TRUNK[-1]))]
        jit_compile = getattr(objective, "jit_compile", False)
        timed = time_aggregations(k, entries, representation, jit_compile, only, agg_rounds)
        floor = timed.pop(FLOOR)["seconds"]
        rows = []
        for label, t in timed.items():
            net = t["net_seconds"]
            share = net / steps_s["Sum"]
            rows.append({"strategy": label, "kind": t["kind"], "seconds": t["seconds"], "net_seconds": net,
                         "burst": t["burst"], "of_sum_step": share, "of_fixed_step": net / steps_s["Fixed"],
                         "met": bool(share <= TARGET)})
        params = sum(int(np.prod(s)) for _, s in entries)
        results["tables"].append({"k": k, "steps": steps_s, "floor_seconds": floor, "shared_params": params,
                                  "jit_compile": jit_compile, "rows": rows})
    results["targets"] = targets(results)
    return results


def targets(results):
    """One verdict per strategy: its aggregation <= TARGET of the gradient-level step at every K timed."""
    ks = ", ".join(str(t["k"]) for t in results["tables"])
    verdicts = {}
    for table in results["tables"]:
        for row in table["rows"]:
            key = f"{row['strategy']} aggregation <= {TARGET:.0%} of the gradient-level step (K = {ks}, " \
                  f"{results['backend']})"
            verdicts[key] = verdicts.get(key, True) and row["met"]
    return verdicts


def markdown(results):
    tables = results["tables"]
    compiled = {"jax": "jax.jit", "tensorflow": "tf.function", "torch": "eager, no_grad"}[results["backend"]]
    if results["backend"] == "tensorflow":
        compiled += f" (jit_compile={tables[0]['jit_compile']})" if tables else ""
    lines = [
        f"Aggregation alone, {results['backend']} ({compiled}), against the fit step of the K-head MLP "
        f"(trunk {' -> '.join(map(str, results['trunk']))}, heads {results['head']} -> 10, batch {results['batch']}); "
        f"median over {results['aggregation_rounds']} interleaved rounds of bursts; steps: median over "
        f"{results['step_rounds']} interleaved one-epoch rounds of {results['steps_per_epoch']} steps",
        "",
        "| strategy | call | " + " | ".join(f"K={t['k']}: us (net) | % of Sum step | % of Fixed step"
                                             for t in tables) + " |",
        "|:---|:---|" + "---:|---:|---:|" * len(tables),
        "| *Sum step (ms)* | fit | " + " | ".join(f"{fmt_ms(t['steps']['Sum'])} | | " for t in tables) + " |",
        "| *Fixed step (ms)* | fit | " + " | ".join(f"{fmt_ms(t['steps']['Fixed'])} | | " for t in tables) + " |",
        "| *call floor (us)* | aggregate | " + " | ".join(f"{t['floor_seconds'] * 1e6:.1f} | | " for t in tables)
        + " |",
    ]
    labels = list(dict.fromkeys(r["strategy"] for t in tables for r in t["rows"]))
    for label in labels:
        cells = []
        for t in tables:
            r = next((r for r in t["rows"] if r["strategy"] == label), None)
            if r is None:
                cells.append(" | | ")
                continue
            mark = "" if r["met"] else " **(missed)**"
            cells.append(f"{r['seconds'] * 1e6:.1f} ({r['net_seconds'] * 1e6:.1f}) | {r['of_sum_step']:.1%}{mark} "
                         f"| {r['of_fixed_step']:.1%}")
        kind = next(r["kind"] for t in tables for r in t["rows"] if r["strategy"] == label)
        lines.append(f"| {label} | {kind} | " + " | ".join(cells) + " |")
    lines += ["", f"- target: the aggregation, net of the call floor, <= {TARGET:.0%} of the gradient-level (Sum) "
              "step at each K <= 10; the % columns are net; "
              "`aggregate`: the weights from the K x K Gramian; `aggregate_rows`: the update from the term "
              "gradients of every shared variable, or `(representation)`: of the trunk's output, "
              f"({gradient.BATCH}, {gradient.TRUNK[-1]}) "
              + ", ".join(f"({t['shared_params']:,} shared parameters at K={t['k']})" for t in tables[:1])]
    return "\n".join(lines)


if __name__ == "__main__":
    import argparse
    import json
    import os

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", help="comma-separated gradient-level names (default: all)")
    parser.add_argument("--ks", default=",".join(map(str, KS)), help="comma-separated K (default 2,4,10)")
    parser.add_argument("--out", help="also write the results as JSON here")
    args = parser.parse_args()
    t0 = time.perf_counter()
    res = run(quick=args.quick, ks=tuple(int(k) for k in args.ks.split(",")),
              only=args.only.split(",") if args.only else None)
    print(markdown(res))
    print("Targets:", res["targets"])
    print(f"({backend()}, {time.perf_counter() - t0:.0f} s)")
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1, default=float)
