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
import time  # noqa: E402

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



# ------------------------------------------------------------------ peers (issue 21, item 3)
# ``--peers``: the gradient-level step of each strategy against torchjd's documented
# loop, on the model (trunk 64 -> 256 -> 256, K heads, batch 256, Adam).

PEER_BATCH, PEER_KS = 256, (2, 4, 10)
# ours (lw.weighting name, kwargs) -> torchjd (aggregator name, kwargs); defaults on both sides
# where they agree, the paper's value where torchjd has none (CAGrad's c).
PEER_STRATEGIES = {
    "UPGrad": ({}, "UPGrad", {}),
    "MGDA": ({}, "MGDA", {}),
    "PCGrad": ({"seed": 0}, "PCGrad", {}),
    "CAGrad": ({"c": 0.5}, "CAGrad", {"c": 0.5}),
    "IMTLG": ({}, "IMTLG", {}),
    "AlignedMTL": ({}, "AlignedMTL", {}),
    "NashMTL": ({}, "NashMTL", {"n_tasks": None}),
}
PEER_TARGET = 1.0  # ours / torchjd on PyTorch


class WallCpuTimer(keras.callbacks.Callback):
    """Wall-clock and process-CPU gaps between consecutive ``on_train_batch_end`` calls."""

    def on_epoch_begin(self, epoch, logs=None):
        self.stamps = []

    def on_train_batch_end(self, batch, logs=None):
        self.stamps.append((time.perf_counter(), time.process_time()))

    def step_times(self):
        s = np.asarray(self.stamps)
        return [tuple(d) for d in np.diff(s, axis=0)]


def torchjd_available():
    """The installed torchjd's version, or None (then its rows say it was absent)."""
    try:
        import torchjd  # noqa: F401
        from importlib.metadata import version

        return version("torchjd")
    except Exception:  # noqa: BLE001 - absent or broken: skipped, and said so
        return None


def torch_mtl_model(k, input_dim, trunk, head=HEAD, classes=NUM_CLASSES, seed=0):
    """``(trunk, heads, Adam)`` in plain torch: Linear + ReLU per trunk width, K heads ``head`` -> ``classes``."""
    import torch

    torch.manual_seed(seed)
    layers, width = [], input_dim
    for w in trunk:
        layers += [torch.nn.Linear(width, w), torch.nn.ReLU()]
        width = w
    body = torch.nn.Sequential(*layers)
    heads = torch.nn.ModuleList([
        torch.nn.Sequential(torch.nn.Linear(width, head), torch.nn.ReLU(), torch.nn.Linear(head, classes))
        for _ in range(k)
    ])
    return body, heads, torch.optim.Adam([*body.parameters(), *heads.parameters()], lr=1e-3)


def torchjd_loop(k, aggregator_name, kwargs, x, labels, steps, seed=0):
    """``epoch() -> [(wall, cpu) per step]``: torchjd's documented MTL loop on the same model.

    ``features = trunk(x); losses = [ce(head_k(features), y_k)]; mtl_backward(losses,
    features=features); jac_to_grad(trunk.parameters(), aggregator); optimizer.step();
    optimizer.zero_grad()`` (torchjd's "Multi-Task Learning" example, version 0.18).
    """
    import torch
    from torchjd import aggregation, autojac  # its functions looked up per step (``--profile`` wraps them)

    trunk, heads, optimizer = torch_mtl_model(k, INPUT_DIM, TRUNK, seed=seed)
    kwargs = {key: (k if value is None else value) for key, value in kwargs.items()}
    aggregator = getattr(aggregation, aggregator_name)(**kwargs)
    xs = torch.from_numpy(x).split(PEER_BATCH)
    ys = [torch.from_numpy(labels[i].astype("int64")).split(PEER_BATCH) for i in range(k)]

    def epoch():
        stamps = []
        for s in range(steps):
            features = trunk(xs[s])
            losses = [torch.nn.functional.cross_entropy(heads[i](features), ys[i][s]) for i in range(k)]
            autojac.mtl_backward(losses, features=features)
            autojac.jac_to_grad(trunk.parameters(), aggregator)
            optimizer.step()
            optimizer.zero_grad()
            stamps.append((time.perf_counter(), time.process_time()))
        return [tuple(d) for d in np.diff(np.asarray(stamps), axis=0)]

    return epoch


def ours(k, name, kwargs, x, labels, steps):
    """``epoch() -> [(wall, cpu) per step]``: ``Objective.fit`` with ``lw.weighting.<name>`` (parameter mode)."""
    terms = {f"task_{i}": lw.terms.SoftmaxCrossEntropy(on=f"logits_{i}", target=f"label_{i}") for i in range(k)}
    objective = lw.Objective(build_model(k, features=False), terms, weighting=getattr(lw.weighting, name)(**kwargs))
    objective.compile(optimizer="adam")
    timer = WallCpuTimer()
    y = {f"label_{i}": labels[i] for i in range(k)}

    def epoch():
        objective.fit(x, y, batch_size=PEER_BATCH, epochs=1, shuffle=False, verbose=0, callbacks=[timer])
        return timer.step_times()

    return epoch


def _median_pair(steps):
    return float(median([w for w, _ in steps])), float(median([c for _, c in steps]))


def run_peers(quick=False, ks=PEER_KS, strategies=None, child=False):
    """Ours (this backend) against torchjd's loop (PyTorch only), each K and strategy, interleaved.

    Run on PyTorch (the parent), it also runs itself on JAX in a subprocess
    (``--peers-child``) so that one command gives the whole table; JAX's rows
    are ours alone (torchjd is a PyTorch library).
    """
    steps, rounds = (6, 3) if quick else (16, 5)
    strategies = strategies or tuple(PEER_STRATEGIES)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(steps * PEER_BATCH, INPUT_DIM)).astype("float32")
    labels = rng.integers(0, NUM_CLASSES, size=(max(ks), steps * PEER_BATCH)).astype("int32")
    peer = torchjd_available() if backend() == "torch" else None
    rows = []
    for k in ks:
        for name in strategies:
            our_kwargs, peer_name, peer_kwargs = PEER_STRATEGIES[name]
            runs = {"ours": ours(k, name, our_kwargs, x, labels, steps)}
            if peer:
                runs["torchjd"] = torchjd_loop(k, peer_name, peer_kwargs, x, labels, steps)
            variants = tuple(runs)
            for v in variants:  # warm-up: trace, compile, cvxpy's first solve
                runs[v]()
            both = {v: [] for v in variants}
            for r in range(rounds):
                for v in variants if r % 2 == 0 else variants[::-1]:
                    both[v].append(runs[v]())
            row = {"k": k, "strategy": name, "backend": backend()}
            for v in variants:
                medians = [_median_pair(s) for s in both[v]]
                row[v] = {"wall_s": float(median([m[0] for m in medians])),
                          "cpu_s": float(median([m[1] for m in medians]))}
            if peer:
                for clock in ("wall", "cpu"):
                    row[f"{clock}_over_torchjd"] = float(median([
                        _median_pair(a)[i] / _median_pair(b)[i]
                        for a, b in zip(both["ours"], both["torchjd"])
                        for i in [0 if clock == "wall" else 1]
                    ]))
            rows.append(row)
            print(f"K={k} {name}: " + ", ".join(
                f"{v} {row[v]['wall_s'] * 1e3:.2f} ms ({row[v]['cpu_s'] * 1e3:.2f} cpu)" for v in variants), flush=True)
    results = {"backend": backend(), "batch": PEER_BATCH, "trunk": list(TRUNK), "head": HEAD,
               "steps_per_epoch": steps, "rounds": rounds, "torchjd": peer, "rows": rows,
               "libmtl": "not run (not installed here); torchjd's NashMTL is its adaptation of LibMTL's"}
    if backend() == "torch" and not child:
        results["jax"] = _child("jax", quick, ks, strategies)
    return results


def _child(name, quick, ks, strategies):
    """This benchmark's ``--peers`` rows on backend ``name``, run in a subprocess (one backend per process)."""
    import json
    import os
    import subprocess
    import tempfile

    out = tempfile.mktemp(suffix=".json")
    env = {**os.environ, "KERAS_BACKEND": name}
    command = [sys.executable, os.path.abspath(__file__), "--peers-child", "--ks", ",".join(map(str, ks)),
               "--strategies", ",".join(strategies), "--out", out] + (["--quick"] if quick else [])
    done = subprocess.run(command, env=env)
    if done.returncode != 0 or not os.path.exists(out):
        return {"error": f"the {name} run failed (exit {done.returncode})"}
    with open(out) as f:
        return json.load(f)


def peers_markdown(results):
    jax_rows = {(r["k"], r["strategy"]): r for r in results.get("jax", {}).get("rows", [])}
    peer = results["torchjd"]
    lines = [
        f"Gradient-level step against torchjd's documented loop: trunk {INPUT_DIM} -> "
        f"{' -> '.join(map(str, results['trunk']))} (relu, shared), K heads {results['head']} -> {NUM_CLASSES}, "
        f"cross-entropy per head, batch {results['batch']}, Adam; ms per step (median over "
        f"{results['rounds']} interleaved rounds of {results['steps_per_epoch']} steps), wall clock and process "
        f"CPU time; ratios are medians of per-round ratios. Ours: `Objective.fit`, parameter mode. "
        f"torchjd: {('version ' + peer) if peer else '**not installed: its columns are empty**'}, "
        f"`mtl_backward` + `jac_to_grad` + `optimizer.step()`.",
        "",
        "| K | strategy | ours torch ms (cpu) | torchjd ms (cpu) | ours / torchjd wall | cpu | target | ours JAX ms (cpu) |",
        "|---:|:---|---:|---:|---:|---:|:---|---:|",
    ]
    for row in results["rows"]:
        o, t = row["ours"], row.get("torchjd")
        j = jax_rows.get((row["k"], row["strategy"]), {}).get("ours")
        verdict = ""
        if t:
            met = row["wall_over_torchjd"] <= PEER_TARGET and row["cpu_over_torchjd"] <= PEER_TARGET
            verdict = f"<= {PEER_TARGET:.2f}x: " + ("met" if met else "**missed**")
        lines.append(
            f"| {row['k']} | {row['strategy']} | {fmt_ms(o['wall_s'])} ({fmt_ms(o['cpu_s'])}) | "
            + (f"{fmt_ms(t['wall_s'])} ({fmt_ms(t['cpu_s'])}) | {row['wall_over_torchjd']:.2f}x | "
               f"{row['cpu_over_torchjd']:.2f}x | {verdict} | " if t else "(absent) | | | | ")
            + (f"{fmt_ms(j['wall_s'])} ({fmt_ms(j['cpu_s'])}) |" if j else "(not run) |")
        )
    if "error" in results.get("jax", {}):
        lines.append(f"\n- JAX: {results['jax']['error']}")
    lines.append(f"\n- LibMTL: {results['libmtl']}")
    return "\n".join(lines)

# --profile: where a step's CPU time goes, ours (``Objective.fit``) against torchjd's loop, by part.
# Inclusive process-CPU time of each function below, per step; the functions are wrapped in this
# process only (instrumentation: nothing in the library changes). Nested parts are inside their
# parent's time (``_grads``, ``aggregate_rows``, ``_finite``, ... are inside ``_rows_grads``).
PROFILED_OURS = (
    ("Objective.train_step", "lossweave.objective:Objective.train_step"),
    ("forward (model call)", "lossweave.objective:Objective.__call__"),
    ("term losses + trackers", "lossweave.objective:Objective.compute_term_vector"),
    ("trainer: rows, Gramian, weights, checks", "lossweave.trainer._torch:_rows_grads"),
    ("  K autograd.grad (rows)", "lossweave.trainer._torch:_grads"),
    ("  stack the shared rows", "lossweave.trainer._torch:_stack"),
    ("  finite check", "lossweave.trainer._torch:_finite"),
    ("  Gramian", "lossweave.trainer._torch:_gramian"),
    ("  strategy: weights and update", "lossweave.weighting.gradient:GradientWeighting.aggregate_rows"),
    ("  record weights, gradient gate", "lossweave.objective:Objective.record_aggregation"),
    ("optimizer.apply (Keras Adam)", "keras.optimizers:Optimizer.apply"),
    ("metrics", "lossweave.objective:Objective.compute_metrics"),
)
PROFILED_TORCHJD = (
    ("forward (trunk, heads)", "torch.nn:Sequential.forward"),
    ("cross_entropy", "torch.nn.functional:cross_entropy"),
    ("mtl_backward", "torchjd.autojac:mtl_backward"),
    ("jac_to_grad", "torchjd.autojac:jac_to_grad"),
    ("  the aggregator", "torchjd.aggregation:{aggregator}.forward"),
    ("optimizer.step (torch Adam)", "torch.optim:Adam.step"),
)


def _wrap_parts(parts, totals, counts, aggregator):
    """Wrap each ``module:Owner.attr`` of ``parts`` to add its process-CPU time to ``totals``; return the undo."""
    import functools
    import importlib

    undo = []
    for label, target in parts:
        module, path = target.format(aggregator=aggregator).split(":")
        owner = importlib.import_module(module)
        *owners, attr = path.split(".")
        for name in owners:
            owner = getattr(owner, name)
        original = getattr(owner, attr)

        def timed(*args, _f=original, _label=label, **kwargs):
            start = time.process_time()
            try:
                return _f(*args, **kwargs)
            finally:
                totals[_label] += time.process_time() - start
                counts[_label] += 1

        setattr(owner, attr, functools.wraps(original)(timed))
        undo.append((owner, attr, original))
    return undo


def run_profile(quick=False, ks=(2, 4), strategies=("UPGrad", "MGDA")):
    """Per part CPU ms per step (``PROFILED_*``) of ours, ``Fixed`` and torchjd's loop (PyTorch only)."""
    import collections

    if backend() != "torch":
        raise SystemExit("--profile: run on PyTorch (KERAS_BACKEND=torch): it profiles the torch step against torchjd")
    steps, rounds = (6, 1) if quick else (16, 3)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(steps * PEER_BATCH, INPUT_DIM)).astype("float32")
    labels = rng.integers(0, NUM_CLASSES, size=(max(ks), steps * PEER_BATCH)).astype("int32")
    peer = torchjd_available()
    rows = []
    for k in ks:
        for name in strategies:
            our_kwargs, peer_name, peer_kwargs = PEER_STRATEGIES[name]
            runs = {"ours": (ours(k, name, our_kwargs, x, labels, steps), PROFILED_OURS),
                    "Fixed": (ours(k, "Fixed", {}, x, labels, steps), PROFILED_OURS)}
            if peer:
                runs["torchjd"] = (torchjd_loop(k, peer_name, peer_kwargs, x, labels, steps), PROFILED_TORCHJD)
            row = {"k": k, "strategy": name}
            for variant, (epoch, parts) in runs.items():
                epoch()  # warm-up, unwrapped
                totals, counts = collections.Counter(), collections.Counter()
                undo = _wrap_parts(parts, totals, counts, peer_name)
                try:
                    cpu = [_median_pair(epoch())[1] for _ in range(rounds)]
                finally:
                    for owner, attr, original in undo:
                        setattr(owner, attr, original)
                n = rounds * steps
                row[variant] = {"step_cpu_s": float(median(cpu)),
                                "parts": {label: {"cpu_s": totals[label] / n, "calls": counts[label] / n}
                                          for label, _ in parts if counts[label]}}
            rows.append(row)
            print(f"K={k} {name}: " + ", ".join(f"{v} {row[v]['step_cpu_s'] * 1e3:.2f} ms cpu" for v in runs), flush=True)
    return {"backend": backend(), "torchjd": peer, "steps_per_epoch": steps, "rounds": rounds, "rows": rows}


def profile_markdown(results):
    lines = [
        "Where a step's CPU time goes (`gradient.py --profile`): inclusive process-CPU ms per step of "
        "each part (indented parts are inside the one above), median step over "
        f"{results['rounds']} epochs of {results['steps_per_epoch']} steps; same model as `--peers`; "
        f"torchjd {results['torchjd'] or 'absent'}. The wrappers add ~1 us per call.",
    ]
    for row in results["rows"]:
        lines += ["", f"K = {row['k']}, {row['strategy']}:", "",
                  "| part | ours ms (calls) | Fixed ms | torchjd part | torchjd ms (calls) |",
                  "|:---|---:|---:|:---|---:|"]
        ours_parts = list(row["ours"]["parts"].items())
        fixed = row["Fixed"]["parts"]
        theirs = list(row.get("torchjd", {}).get("parts", {}).items())
        for i in range(max(len(ours_parts), len(theirs))):
            a = ours_parts[i] if i < len(ours_parts) else None
            b = theirs[i] if i < len(theirs) else None
            lines.append(
                (f"| {a[0]} | {a[1]['cpu_s'] * 1e3:.2f} ({a[1]['calls']:g}) | "
                 + (f"{fixed[a[0]]['cpu_s'] * 1e3:.2f} |" if a[0] in fixed else " |") if a else "| | | |")
                + (f" {b[0]} | {b[1]['cpu_s'] * 1e3:.2f} ({b[1]['calls']:g}) |" if b else " | |"))
        lines.append(
            f"| **step** | **{row['ours']['step_cpu_s'] * 1e3:.2f}** | **{row['Fixed']['step_cpu_s'] * 1e3:.2f}** | "
            + (f"**step** | **{row['torchjd']['step_cpu_s'] * 1e3:.2f}** |" if "torchjd" in row else " | |"))
    return "\n".join(lines)


if __name__ == "__main__":
    import argparse

    from common import main_alone

    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--before", metavar="REV", help="also time the Fixed step of lossweave at git REV")
    parser.add_argument("--peers", action="store_true", help="against torchjd's loop (run on PyTorch)")
    parser.add_argument("--peers-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--profile", action="store_true", help="--peers' step by part, CPU ms (PyTorch)")
    parser.add_argument("--ks", help="--peers: the K values, e.g. 2,4,10")
    parser.add_argument("--strategies", help="--peers: a subset of " + ",".join(PEER_STRATEGIES))
    known, rest = parser.parse_known_args()
    if known.profile:
        options = {}
        if known.ks:
            options["ks"] = tuple(int(k) for k in known.ks.split(","))
        if known.strategies:
            options["strategies"] = tuple(known.strategies.split(","))
        sys.exit(main_alone("gradient", run_profile, profile_markdown, rest, **options))
    if known.peers or known.peers_child:
        options = {"child": known.peers_child}
        if known.ks:
            options["ks"] = tuple(int(k) for k in known.ks.split(","))
        if known.strategies:
            options["strategies"] = tuple(known.strategies.split(","))
        sys.exit(main_alone("gradient", run_peers, peers_markdown, rest, **options))
    sys.exit(main_alone("gradient", run, markdown, rest, before=known.before))
