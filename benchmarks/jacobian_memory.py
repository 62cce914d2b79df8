"""Peak memory of a gradient-level step against the loss-level step, K = 2, 4, 10 heads (issue 21, item 4).

Model: a shared trunk of ~10M parameters and K small heads, batch 256, Adam::

    x (256) -> Dense(2048, relu) -> Dense(2048, relu) -> Dense(2048, relu) -> Dense(512, relu)
            -> for each k: Dense(32, relu) -> Dense(10) = "logits_k"

(trunk 9,968,128 parameters), one ``SoftmaxCrossEntropy`` per head. A
gradient-level step holds the K term gradients of the trunk (K x 42 MB in
float32) where the loss-level step ``Fixed`` holds one.

What is measured, per backend:

* **JAX**: XLA's own memory analysis of the compiled train step
  (``jax.jit(train_step).lower(state, batch).compile().memory_analysis()``):
  ``temp_size_in_bytes``, the temporaries the step allocates beyond its
  arguments and outputs (the K gradients, the Gramian's operands, the
  activations), exact and free of noise;
* **PyTorch**: torch has no statistics of its CPU allocator, and
  ``tracemalloc`` does not see its memory, so each case runs in a **fresh
  subprocess** (``MALLOC_MMAP_THRESHOLD_=65536``: every tensor above 64 KiB
  is its own ``mmap`` and goes back to the kernel when freed, so the RSS
  follows what is alive); after two warm-up steps the peak RSS is reset
  (``/proc/self/clear_refs``) and the figure is the **peak RSS of one more
  step above the RSS before it** (``common.peak_rss_growth_mib``). The same
  subprocess protocol times torchjd 0.18's documented loop (``mtl_backward``
  + ``jac_to_grad(trunk.parameters(), UPGrad())``, and with
  ``optimize_gramian_computation=True``) and its ``autogram`` engine
  (``Engine(trunk, batch_dim=None)``, ``compute_gramian`` of the (K,) losses,
  ``UPGradWeighting``, ``losses.backward(weights)``) on the same model in
  plain torch, when torchjd is importable (else its rows say so).

Ours: ``Objective.fit`` of one batch (parameter mode). ``Fixed`` is the
reference; UPGrad, MGDA and PCGrad use only the Gramian (PCGrad's projected
gradients are combinations of the rows, ``pcgrad_weights``). The
``(gramian_blocks)`` variants are ``Objective(..., gramian_blocks=True)``:
the Gramian accumulated block by block of the trunk's variables (a kernel
and its bias), each block's K rows freed once multiplied in, then one more
backward pass of ``sum_k w_k L_k``.

Time: the same cases also time the step, wall clock and process CPU time
side by side (median of ``TIMED`` steps after the warm-up): on PyTorch
``Objective.fit`` of one batch in the case's subprocess (after the memory
probe), on JAX the compiled step whose memory was analysed, run on the
same state and batch.

    KERAS_BACKEND=jax .venv/bin/python benchmarks/jacobian_memory.py [--quick]
    KERAS_BACKEND=torch PYTHONPATH=/tmp/lw/peers .venv/bin/python benchmarks/jacobian_memory.py [--quick] [--jobs 4]
"""

if __name__ == "__main__":  # the thread limits must be set before keras is imported
    from common import configure_threads

    configure_threads(1)

import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402

BATCH, INPUT_DIM, TRUNK, HEAD, NUM_CLASSES = 256, 256, (2048, 2048, 2048, 512), 32, 10
KS = (2, 4, 10)
OURS = ("Fixed", "UPGrad", "MGDA", "PCGrad", "UPGrad (gramian_blocks)", "MGDA (gramian_blocks)")
BLOCKS = " (gramian_blocks)"
TIMED = 5
PEERS = ("torchjd mtl_backward UPGrad", "torchjd mtl_backward UPGrad (optimize_gramian_computation)",
         "torchjd autogram UPGrad")
MIB = 2.0 ** 20


def trunk_params():
    dims = (INPUT_DIM, *TRUNK)
    return sum(a * b + b for a, b in zip(dims[:-1], dims[1:]))


def _data(k, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(BATCH, INPUT_DIM)).astype("float32")
    labels = rng.integers(0, NUM_CLASSES, size=(k, BATCH)).astype("int32")
    return x, labels


def build_objective(k, name):
    import keras

    import lossweave as lw

    keras.utils.set_random_seed(0)
    inputs = keras.Input((INPUT_DIM,), name="x")
    h = inputs
    for width in TRUNK:
        h = keras.layers.Dense(width, activation="relu")(h)
    outputs = {}
    for i in range(k):
        head = keras.layers.Dense(HEAD, activation="relu", name=f"head_{i}")(h)
        outputs[f"logits_{i}"] = keras.layers.Dense(NUM_CLASSES, name=f"logits_{i}")(head)
    terms = {f"task_{i}": lw.terms.SoftmaxCrossEntropy(on=f"logits_{i}", target=f"label_{i}") for i in range(k)}
    blocks = name.endswith(BLOCKS)
    name = name.removesuffix(BLOCKS)
    weighting = lw.weighting.PCGrad(seed=0) if name == "PCGrad" else getattr(lw.weighting, name)()
    options = {"gramian_blocks": True} if blocks else {}
    objective = lw.Objective(keras.Model(inputs, outputs), terms, weighting=weighting, **options)
    objective.compile(optimizer="adam")
    return objective


# --------------------------------------------------------------------- JAX


def jax_temporaries(k, name):
    """XLA's temporaries (bytes) of the compiled train step, and its argument bytes."""
    import jax

    from common import recording_checks

    x, labels = _data(k)
    objective = build_objective(k, name)
    y = {f"label_{i}": labels[i] for i in range(k)}
    objective.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)  # builds variables, optimizer slots
    state = (
        [v.value for v in objective.trainable_variables],
        [v.value for v in objective.non_trainable_variables],
        [v.value for v in objective.optimizer.variables],
        [v.value for v in objective.metrics_variables],
    )
    with recording_checks(objective):
        compiled = jax.jit(objective.train_step).lower(state, (x, y)).compile()
    analysis = compiled.memory_analysis()

    def step():
        jax.block_until_ready(compiled(state, (x, y)))

    return {"temp_bytes": int(analysis.temp_size_in_bytes), "argument_bytes": int(analysis.argument_size_in_bytes),
            "output_bytes": int(analysis.output_size_in_bytes), **_timed(step)}


def _timed(step):
    """Median wall-clock and process CPU ms of ``TIMED`` calls of ``step`` after one warm-up call."""
    from common import wall_and_cpu

    step()
    wall, cpu = wall_and_cpu(step, TIMED)
    return {"wall_ms": 1e3 * float(np.median(wall)), "cpu_ms": 1e3 * float(np.median(cpu))}


# ----------------------------------------------------------------- PyTorch


def torch_case(k, name):
    """In a fresh process: the peak RSS growth (MiB) of one step after two warm-up steps."""
    from common import peak_rss_growth_mib, rss_probe_available

    if not rss_probe_available():
        return {"error": "no /proc/self/clear_refs: peak RSS cannot be reset here"}
    x, labels = _data(k)
    if name.startswith("torchjd"):
        step = _torchjd_step(k, name, x, labels)
    else:
        objective = build_objective(k, name)
        y = {f"label_{i}": labels[i] for i in range(k)}

        def step():
            objective.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)

    step()
    step()
    return {"peak_mib": peak_rss_growth_mib(step, repeats=1), **_timed(step)}


def _torchjd_step(k, name, x, labels):
    import torch
    from torchjd.aggregation import UPGrad, UPGradWeighting

    from gradient import torch_mtl_model

    trunk, heads, optimizer = torch_mtl_model(k, INPUT_DIM, TRUNK, HEAD, NUM_CLASSES)
    xt = torch.from_numpy(x)
    ys = [torch.from_numpy(labels[i].astype("int64")) for i in range(k)]

    def losses_of(features):
        return [torch.nn.functional.cross_entropy(heads[i](features), ys[i]) for i in range(k)]

    if "autogram" in name:
        from torchjd.autogram import Engine

        engine, weighting = Engine(trunk, batch_dim=None), UPGradWeighting()

        def step():
            losses = torch.stack(losses_of(trunk(xt)))
            weights = weighting(engine.compute_gramian(losses))
            losses.backward(weights)
            optimizer.step()
            optimizer.zero_grad()
    else:
        from torchjd.autojac import jac_to_grad, mtl_backward

        aggregator = UPGrad()
        options = {"optimize_gramian_computation": True} if "optimize" in name else {}

        def step():
            features = trunk(xt)
            mtl_backward(losses_of(features), features=features)
            jac_to_grad(trunk.parameters(), aggregator, **options)
            optimizer.step()
            optimizer.zero_grad()

    return step


def _subprocess(k, name):
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "KERAS_BACKEND": "torch"}
    command = [sys.executable, os.path.abspath(__file__), "--case", str(k), name]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": f"exit {done.returncode}: {tail[:200]}"}
    return json.loads(lines[-1])


def torchjd_version():
    try:
        from importlib.metadata import version

        import torchjd  # noqa: F401

        return version("torchjd")
    except Exception:  # noqa: BLE001 - absent: its rows say so
        return None


def run(quick=False, ks=KS, jobs=1, variants=None, merge=None):
    """Every case at every K; on PyTorch ``jobs`` case subprocesses at a time (each measures its own RSS).

    ``variants``: only these (default: all); ``merge``: an earlier run's JSON whose rows
    of the cases not run now are kept (its order), e.g. to rerun the variants a change touched.
    """
    from concurrent.futures import ThreadPoolExecutor

    from common import backend

    ks = (2, 4) if quick else ks
    results = {"backend": backend(), "batch": BATCH, "input_dim": INPUT_DIM, "trunk": list(TRUNK),
               "trunk_params": trunk_params(), "rows": []}
    peer = torchjd_version() if backend() == "torch" else None
    results["torchjd"] = peer

    def case(k, name):
        if name.startswith("torchjd") and not peer:
            row = {"error": "torchjd not importable: skipped"}
        elif backend() == "jax":
            row = jax_temporaries(k, name)
        elif backend() == "torch":
            row = _subprocess(k, name)
        else:
            row = {"error": f"no memory probe on {backend()}"}
        row.update(k=k, variant=name)
        print(row, flush=True)
        return row

    cases = [(k, name) for k in ks for name in OURS + (PEERS if backend() == "torch" else ())
             if variants is None or name in variants]
    with ThreadPoolExecutor(jobs if backend() == "torch" else 1) as pool:
        results["rows"] = list(pool.map(lambda c: case(*c), cases))
    if merge:
        with open(merge) as f:
            earlier = json.load(f)["rows"]
        fresh = {(r["k"], r["variant"]): r for r in results["rows"]}
        kept = [fresh.pop((r["k"], r["variant"]), r) for r in earlier]
        results["rows"] = kept + list(fresh.values())
        results["merged_from"] = merge
    return results


def markdown(results):
    key, unit = ("temp_bytes", "XLA temporaries") if results["backend"] == "jax" else ("peak_mib", "peak RSS growth")
    grad_mib = results["trunk_params"] * 4 / MIB
    lines = [
        f"Peak memory of one train step, {results['backend']}: trunk {results['input_dim']} -> "
        f"{' -> '.join(map(str, results['trunk']))} ({results['trunk_params']:,} parameters, one float32 "
        f"gradient = {grad_mib:.1f} MiB), K heads 32 -> 10, batch {results['batch']}, Adam; {unit} "
        + ("of the compiled step (`memory_analysis`)" if key == "temp_bytes" else
           "of one step above the RSS before it, one fresh process per case")
        + (f"; torchjd {results['torchjd']}" if results.get("torchjd") else ""),
        "",
        f"Time: median of {TIMED} steps after the memory probe, ms, wall clock (process CPU time); "
        "`/ Fixed`: the CPU time's ratio.",
        "",
        "| K | variant | MiB | / Fixed | in trunk gradients (MiB / one gradient) | ms wall (cpu) | cpu / Fixed |",
        "|---:|:---|---:|---:|---:|---:|---:|",
    ]
    fixed = {r["k"]: r for r in results["rows"] if r["variant"] == "Fixed"}
    for row in results["rows"]:
        if "error" in row:
            lines.append(f"| {row['k']} | {row['variant']} | ({row['error']}) | | | | |")
            continue
        mib = row[key] / MIB if key == "temp_bytes" else row[key]
        base = fixed.get(row["k"], {})
        ref = (base.get(key, float("nan")) / MIB if key == "temp_bytes" else base.get(key, float("nan")))
        time = (f"{row['wall_ms']:.0f} ({row['cpu_ms']:.0f}) | {row['cpu_ms'] / base['cpu_ms']:.2f}x"
                if "cpu_ms" in row and "cpu_ms" in base else " | ")
        lines.append(f"| {row['k']} | {row['variant']} | {mib:.1f} | {mib / ref:.2f}x | {mib / grad_mib:.2f} | {time} |")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--case":  # one PyTorch case, in its own process
        print(json.dumps(torch_case(int(sys.argv[2]), sys.argv[3])))
        sys.exit(0)
    import argparse

    from common import main_alone

    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--jobs", type=int, default=1, help="PyTorch: case subprocesses run at once")
    parser.add_argument("--ks", help="the K values, e.g. 2,4,10")
    parser.add_argument("--variants", help="only these variants, separated by ';'")
    parser.add_argument("--merge", help="an earlier --out JSON: its rows of the cases not run now are kept")
    known, rest = parser.parse_known_args()
    options = {"jobs": known.jobs, "merge": known.merge}
    if known.variants:
        options["variants"] = tuple(known.variants.split(";"))
    if known.ks:
        options["ks"] = tuple(int(k) for k in known.ks.split(","))
    sys.exit(main_alone("jacobian_memory", run, markdown, rest, **options))
