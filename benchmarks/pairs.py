"""Fit step time and loss memory of the pair and proxy losses against a softmax head, batch 256 .. 1024.

Model: a small shared trunk, embedding 128, Adam, float32::

    x (64) -> Dense(256, relu) -> Dense(128) = "embedding"

Labels of 32 classes; every batch is class-balanced, 32 classes x (batch /
32) samples (the batch order of ``lossweave.data.ClassBalancedBatches``,
drawn once and fed to ``fit`` as arrays with ``shuffle=False``, so that no
Python data loader runs between the timed steps). Inputs are class means
plus noise. Every variant of one batch size starts from the same trunk
weights and trains on the same data:

* ``softmax``: the trunk + ``Dense(32)`` logits in an ``lw.Objective`` with
  ``SoftmaxCrossEntropy(on="logits")``: **the reference**;
* each pair loss on the embedding alone, at the library's (the papers')
  defaults: ``ContrastiveLoss``, ``TripletLoss`` with each mining,
  ``LiftedStructureLoss``, ``NPairsLoss``, ``MultiSimilarityLoss``,
  ``CircleLoss``, ``SupConLoss``, ``NTXentLoss`` (one labelled output);
  the proxy losses ``ProxyAnchorLoss`` and ``ProxyNCALoss`` (32 proxies);
  ``CrossBatchMemory(ContrastiveLoss(), memory_size=1024)`` (XBM: its pairs
  are ``batch x (batch + 1024)``, 5x the batch's own at batch 256).

**Step time** as in ``margin.py`` (``step_overhead.StepTimer``): each ``fit``
runs one epoch, a callback stamps ``on_train_batch_end`` (Keras then fetches
the step's logs, so every step is timed to completion), the step time is the
median gap between stamps; the variants of one batch size are interleaved
(``common.interleaved_rounds``) after a warm-up epoch; ratios are medians of
per-round ratios. The same gaps in CPU seconds of the process
(``CpuStepTimer``, ``time.process_time``) give the step's work, which other
processes' load on a shared machine does not lengthen (one thread per pool).
Target: ``loss / softmax <= 1.3`` at batch 256. On JAX
(full run) the table also gives the flops XLA counts in each compiled train
step at batch 256 over the softmax step's (``gradient.xla_flops``): the work a
loss adds, free of the machine's noise.

**Memory** of one loss + gradient evaluation (the term called on a fixed
``(batch, 128)`` embedding and its labels, gradient with respect to the
embedding; no trunk, no optimizer), per batch size, measured per backend:

* JAX: ``jax.jit(value_and_grad(f)).lower(...).compile().memory_analysis()``,
  its ``temp_size_in_bytes``: the peak of XLA's buffer assignment for the
  temporaries (inputs and outputs not included);
* TensorFlow: the CPU allocator's peak (``tf.config.experimental.
  get_memory_info("CPU:0")["peak"]`` after ``reset_memory_stats``) above the
  bytes in use before a call of the ``tf.function`` (loss and
  ``GradientTape`` gradient), after a warm-up call. These are the oneDNN CPU
  allocator's statistics, which count only allocations of 256 KiB or more
  (smaller ones come from its small-size pool; measured here: 128 KiB
  buffers are not counted, 256 KiB ones are), so a small loss reads 0;
* PyTorch: the peak of bytes held, from ``torch.profiler``'s allocation
  records (``profile_memory=True``): every op's net allocation added at the
  op's end, frees outside ops when they happen (so within-op transients are
  not seen);

and on every backend the **largest intermediate**: the biggest single array
of the traced computation (JAX: the jaxpr's values; TensorFlow: the graph's op
outputs, static shapes; PyTorch: the outputs of every op run, forward and
backward, seen by a ``TorchDispatchMode``). ``tracemalloc`` is not used: it
sees Python's allocations, not the backends' buffers. The exponent is the
least-squares slope of log(bytes) against log(batch) over 256, 512, 1024;
``batch x batch`` intermediates give 2 (less where ``batch x dim`` terms still
weigh), a ``(b, b, b)`` triplet tensor would give 3. Target: exponent < 2.5
for every loss with batch x batch pairs (the proxy losses and softmax are
``batch x classes``: about 1).

    KERAS_BACKEND=jax .venv/bin/python benchmarks/run.py --only pairs [--quick]
    KERAS_BACKEND=jax .venv/bin/python benchmarks/pairs.py [--quick]     # the same
"""

if __name__ == "__main__":  # the thread limits must be set before keras is imported
    from common import configure_threads

    configure_threads(1)

import time  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402

import lossweave as lw  # noqa: E402
from common import backend, block, fmt_ms, interleaved_rounds, median  # noqa: E402
from step_overhead import StepTimer  # noqa: E402

INPUT_DIM, HIDDEN, EMBED_DIM, NUM_CLASSES = 64, 256, 128, 32
BATCHES = (256, 512, 1024)
MEMORY_SIZE = 1024
TARGET, TARGET_BATCH, EXPONENT_TARGET = 1.3, 256, 2.5
REFERENCE = "softmax"
XBM = f"XBM(Contrastive, M={MEMORY_SIZE})"
PAIR_TERMS = (
    "Contrastive", "Triplet semi-hard", "Triplet batch-hard", "Triplet batch-all", "LiftedStructure",
    "NPairs", "MultiSimilarity", "Circle", "SupCon", "NTXent", XBM,
)
PROXY_TERMS = ("ProxyAnchor", "ProxyNCA")
TERMS = PAIR_TERMS + PROXY_TERMS
VARIANTS = (REFERENCE,) + TERMS


def make_term(name):
    """The term at the library's defaults (the papers' settings)."""
    terms = lw.terms
    return {
        "Contrastive": lambda: terms.ContrastiveLoss(),
        "Triplet semi-hard": lambda: terms.TripletLoss(mining="semi-hard"),
        "Triplet batch-hard": lambda: terms.TripletLoss(mining="batch-hard"),
        "Triplet batch-all": lambda: terms.TripletLoss(mining="batch-all"),
        "LiftedStructure": lambda: terms.LiftedStructureLoss(),
        "NPairs": lambda: terms.NPairsLoss(),
        "MultiSimilarity": lambda: terms.MultiSimilarityLoss(),
        "Circle": lambda: terms.CircleLoss(),
        "SupCon": lambda: terms.SupConLoss(),
        "NTXent": lambda: terms.NTXentLoss(on="embedding"),
        XBM: lambda: terms.CrossBatchMemory(terms.ContrastiveLoss(), memory_size=MEMORY_SIZE),
        "ProxyAnchor": lambda: terms.ProxyAnchorLoss(NUM_CLASSES),
        "ProxyNCA": lambda: terms.ProxyNCALoss(NUM_CLASSES),
        REFERENCE: lambda: terms.SoftmaxCrossEntropy(on="logits"),
    }[name]()


def build(variant):
    """An ``lw.Objective`` over the shared trunk (same initial weights for every variant), compiled."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((INPUT_DIM,), name="x")
    hidden = keras.layers.Dense(HIDDEN, activation="relu")(inputs)
    embedding = keras.layers.Dense(EMBED_DIM, name="embedding")(hidden)
    outputs = {"embedding": embedding}
    keras.utils.set_random_seed(1)
    if variant == REFERENCE:
        outputs["logits"] = keras.layers.Dense(NUM_CLASSES, name="logits")(embedding)
    objective = lw.Objective(keras.Model(inputs, outputs), {"loss": make_term(variant)})
    objective.compile(optimizer="adam")
    return objective


def balanced_data(batch, steps, seed=0):
    """``steps`` class-balanced batches in a row: ``(x, y)`` arrays for ``fit(shuffle=False)``.

    32 classes x ``batch / 32`` samples per batch, in ``ClassBalancedBatches``'
    order; the inputs are a class mean plus unit noise, so the losses see
    positives and negatives at varied distances.
    """
    rng = np.random.default_rng(seed)
    per_class = steps * batch // NUM_CLASSES
    y = np.repeat(np.arange(NUM_CLASSES, dtype="int32"), per_class)
    means = rng.normal(size=(NUM_CLASSES, INPUT_DIM)).astype("float32")
    x = means[y] + rng.normal(size=(y.size, INPUT_DIM)).astype("float32")
    batches = lw.data.ClassBalancedBatches(x, y, NUM_CLASSES, batch // NUM_CLASSES, seed=seed)
    rows = batches.indices(0)
    assert rows.shape == (steps, batch), rows.shape  # every sample in exactly one batch
    rows = rows.reshape(-1)
    return x[rows], y[rows]


class CpuStepTimer(StepTimer):
    """``StepTimer``'s gaps in CPU seconds of this process (all its threads): the work of a step.

    On a shared machine other processes' load lengthens the wall-clock gaps
    (a step waits for a core) but not these, with one thread per backend
    pool; on an idle machine the two agree.
    """

    def on_train_batch_end(self, batch, logs=None):
        self.stamps.append(time.process_time())


def time_steps(batch, steps, rounds, variants, flops=False):
    """Step times of ``variants`` at one batch size: median, per-round medians, ratio to softmax.

    ``flops`` (JAX): also the flops XLA counts in each compiled train step
    (``gradient.xla_flops``), a noise-free measure of the work a loss adds.
    """
    x, y = balanced_data(batch, steps)
    runs = {v: build(v) for v in variants}
    timer, cpu_timer = StepTimer(), CpuStepTimer()
    cpu_times = {v: [] for v in variants}  # per timed round: the CPU seconds of its steps

    def epoch(variant, timed=True):
        runs[variant].fit(x, {"label": y}, batch_size=batch, epochs=1, shuffle=False, verbose=0,
                          callbacks=[timer, cpu_timer])
        if timed:
            cpu_times[variant].append(cpu_timer.step_times())
        return timer.step_times()

    for variant in variants:  # warm-up: trace and compile
        epoch(variant, timed=False)
    counted = {}
    if flops:
        from gradient import xla_flops

        counted = {v: xla_flops(runs[v], (x[:batch], {"label": y[:batch]})) for v in variants}
    times, per_round = interleaved_rounds(epoch, variants, rounds)
    rows = {}
    cpu_round = {v: [median(r) for r in cpu_times[v]] for v in variants}
    for variant in variants:
        ratios = [p / q for p, q in zip(per_round[variant], per_round[REFERENCE])]
        cpu_ratios = [p / q for p, q in zip(cpu_round[variant], cpu_round[REFERENCE])]
        rows[variant] = {"step_s": float(median(times[variant])), "over_softmax": float(median(ratios)),
                         "round_medians_s": [float(t) for t in per_round[variant]],
                         "cpu_step_s": float(median([t for r in cpu_times[variant] for t in r])),
                         "cpu_over_softmax": float(median(cpu_ratios))}
        if counted:
            rows[variant]["flops"] = counted[variant]
            rows[variant]["flops_over_softmax"] = counted[variant] / counted[REFERENCE]
    return rows


# ------------------------------------------------------------------ memory
def _loss_inputs(variant, batch, seed=0):
    """A built term, an embedding ``(batch, 128)`` and balanced labels, plus a loss function of both.

    The softmax reference gets a fixed ``(128, 32)`` head so that its loss is
    a function of the embedding, like the others'.
    """
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(NUM_CLASSES, dtype="int32"), batch // NUM_CLASSES)
    embedding = rng.normal(size=(batch, EMBED_DIM)).astype("float32")
    keras.utils.set_random_seed(1)
    term = make_term(variant)
    if variant == REFERENCE:
        head = keras.ops.convert_to_tensor(rng.normal(size=(EMBED_DIM, NUM_CLASSES)).astype("float32") * 0.1)

        def loss(e, y):
            return term(keras.ops.matmul(e, head), y)
    else:
        def loss(e, y):
            return term(e, y, training=False)  # XBM reads its memory, writes nothing
    # Built outside any trace (the proxies and the memory are variables); nothing runs eagerly.
    term.build((batch, NUM_CLASSES if variant == REFERENCE else EMBED_DIM))
    return loss, embedding, labels


def _jax_memory(loss, embedding, labels):
    import jax

    step = jax.value_and_grad(loss)
    temp = jax.jit(step).lower(embedding, labels).compile().memory_analysis().temp_size_in_bytes
    largest = 0
    stack = [jax.make_jaxpr(step)(embedding, labels).jaxpr]
    while stack:  # the jaxpr and the jaxprs nested in its equations (pjit, custom_jvp, ...)
        jaxpr = stack.pop()
        for eqn in jaxpr.eqns:
            for var in eqn.outvars:
                aval = var.aval
                if hasattr(aval, "shape"):
                    largest = max(largest, int(np.prod(aval.shape, dtype="int64")) * aval.dtype.itemsize)
            for param in eqn.params.values():
                for sub in param if isinstance(param, (tuple, list)) else (param,):
                    inner = getattr(sub, "jaxpr", sub)
                    if hasattr(inner, "eqns"):
                        stack.append(inner)
    return {"peak": int(temp), "largest": largest}


def _tensorflow_memory(loss, embedding, labels):
    import tensorflow as tf

    @tf.function
    def step(e, y):
        with tf.GradientTape() as tape:
            tape.watch(e)
            value = loss(e, y)
        return value, tape.gradient(value, e)

    e, y = tf.constant(embedding), tf.constant(labels)
    block(step(e, y))  # trace, and a first run that allocates what stays
    before = tf.config.experimental.get_memory_info("CPU:0")["current"]
    tf.config.experimental.reset_memory_stats("CPU:0")
    out = step(e, y)
    peak = tf.config.experimental.get_memory_info("CPU:0")["peak"] - before
    del out
    largest = 0
    for op in step.get_concrete_function(e, y).graph.get_operations():
        for tensor in op.outputs:
            if tensor.shape.is_fully_defined() and tensor.dtype.size:
                largest = max(largest, tensor.shape.num_elements() * tensor.dtype.size)
    return {"peak": int(peak), "largest": largest}


def _torch_memory(loss, embedding, labels):
    import torch
    from torch.profiler import ProfilerActivity, profile
    from torch.utils._python_dispatch import TorchDispatchMode

    def step():
        e = torch.tensor(embedding, requires_grad=True)
        value = loss(e, torch.tensor(labels))
        (grad,) = torch.autograd.grad(value, e)
        return value.detach(), grad

    class Largest(TorchDispatchMode):
        size = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, torch.Tensor):
                    Largest.size = max(Largest.size, t.numel() * t.element_size())
            return out

    step()  # warm-up
    with Largest():
        step()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    # Net bytes of each op at its end (children end before their parents); "[memory]" frees as they come.
    events = sorted(prof.events(), key=lambda ev: ev.time_range.end)
    held = peak = 0
    for ev in events:
        held += ev.cpu_memory_usage if ev.name == "[memory]" else ev.self_cpu_memory_usage
        peak = max(peak, held)
    return {"peak": int(peak), "largest": int(Largest.size)}


def loss_memory(variant, batch):
    """``{"peak": bytes, "largest": bytes}`` of one loss + gradient of ``variant`` at ``batch``."""
    measure = {"jax": _jax_memory, "tensorflow": _tensorflow_memory, "torch": _torch_memory}[backend()]
    return measure(*_loss_inputs(variant, batch))


def exponent(batches, values):
    """Least-squares slope of log(values) against log(batches)."""
    return float(np.polyfit(np.log(batches), np.log(np.asarray(values, "float64")), 1)[0])


PEAK_MEASURE = {
    "jax": "XLA temp buffers of the compiled loss + gradient (memory_analysis)",
    "tensorflow": "CPU allocator peak above the bytes in use (get_memory_info)",
    "torch": "peak bytes held, torch.profiler allocation records at op boundaries",
}


# -------------------------------------------------------------------- run
def run(quick=False, variants=VARIANTS):
    # (steps per epoch, rounds) per batch size: the target's batch gets the most repeats; the
    # sort-based triplet minings take ~0.1 s a step at 256 and ~1 s at 1024 on 2 CPU cores.
    schedule = {TARGET_BATCH: (8, 2)} if quick else {256: (20, 5), 512: (6, 3), 1024: (4, 3)}
    timed_batches = tuple(schedule)
    variants = tuple(variants)
    if REFERENCE not in variants:
        variants = (REFERENCE,) + variants
    count_flops = backend() == "jax" and not quick  # one more compile per variant
    steps_rows = {b: time_steps(b, *schedule[b], variants, flops=count_flops and b == TARGET_BATCH)
                  for b in timed_batches}
    memory = {v: [loss_memory(v, b) for b in BATCHES] for v in variants}
    rows = []
    for variant in variants:
        row = {"variant": variant, "steps": {}, "memory": memory[variant]}
        for b in timed_batches:
            row["steps"][str(b)] = steps_rows[b][variant]
        for key in ("peak", "largest"):
            values = [m[key] for m in memory[variant]]
            row[f"{key}_exponent"] = exponent(BATCHES, values) if min(values) > 0 else float("nan")
        rows.append(row)
    results = {
        "backend": backend(), "input_dim": INPUT_DIM, "hidden": HIDDEN, "embed_dim": EMBED_DIM,
        "num_classes": NUM_CLASSES, "timed_batches": list(timed_batches), "memory_batches": list(BATCHES),
        "memory_size": MEMORY_SIZE, "schedule": {str(b): list(v) for b, v in schedule.items()},
        "peak_measure": PEAK_MEASURE[backend()], "rows": rows,
    }
    targets = {}
    for row in rows:
        if row["variant"] == REFERENCE:
            continue
        step = row["steps"][str(TARGET_BATCH)]
        targets[f"{row['variant']} / softmax step <= {TARGET} (batch {TARGET_BATCH})"] = bool(
            step["over_softmax"] <= TARGET)
        targets[f"{row['variant']} / softmax step CPU time <= {TARGET} (batch {TARGET_BATCH})"] = bool(
            step["cpu_over_softmax"] <= TARGET)
        if row["variant"] in PAIR_TERMS:
            # A measure that read 0 somewhere (TensorFlow's allocator skips small buffers) has no exponent.
            fitted = [e for e in (row["peak_exponent"], row["largest_exponent"]) if e == e]
            verdict = bool(max(fitted) < EXPONENT_TARGET) if fitted else None
            targets[f"{row['variant']} memory exponent < {EXPONENT_TARGET}"] = verdict
    results["targets"] = targets
    return results


def _mib(n):
    return f"{n / 2**20:.2f}"


def markdown(results):
    batches = results["timed_batches"]
    flops = "flops_over_softmax" in results["rows"][0]["steps"][str(TARGET_BATCH)]
    lines = [
        f"Pair losses, {results['backend']}: {results['input_dim']} -> {results['hidden']} (relu) -> embedding "
        f"{results['embed_dim']}, {results['num_classes']} classes x batch/{results['num_classes']} samples per "
        f"batch, Adam; median ms per step over interleaved one-epoch rounds ("
        + ", ".join(f"batch {b}: {r} rounds of {s} steps" for b, (s, r) in results["schedule"].items())
        + "); ratios are medians of per-round ratios to the softmax head; CPU: the same in CPU seconds "
        "of the process (time.process_time)",
        "",
        "| loss | " + " | ".join(f"ms @ {b} | / softmax @ {b}" for b in batches)
        + f" | CPU ms @ {TARGET_BATCH} | CPU / softmax @ {TARGET_BATCH}"
        + (f" | XLA flops / softmax @ {TARGET_BATCH}" if flops else "") + " |",
        "|:---|" + "---:|---:|" * (len(batches) + 1) + ("---:|" if flops else ""),
    ]
    for row in results["rows"]:
        name = "Dense(32) + SoftmaxCrossEntropy" if row["variant"] == REFERENCE else row["variant"]
        cells = []
        for b in batches:
            step = row["steps"][str(b)]
            cells += [fmt_ms(step["step_s"]), f"{step['over_softmax']:.2f}x"]
        step = row["steps"][str(TARGET_BATCH)]
        cells += [fmt_ms(step["cpu_step_s"]), f"{step['cpu_over_softmax']:.2f}x"]
        if flops:
            cells.append(f"{row['steps'][str(TARGET_BATCH)]['flops_over_softmax']:.2f}x")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"- target: loss / softmax <= {TARGET}x at batch {TARGET_BATCH} (wall clock; the CPU column is the same "
        "measure free of other processes' load)",
        "",
        f"Memory of one loss + gradient w.r.t. a ({'/'.join(map(str, results['memory_batches']))}, "
        f"{results['embed_dim']}) embedding, MiB; peak: {results['peak_measure']}; largest: the biggest "
        f"single intermediate; exponent: log-log slope over the batch sizes",
        "",
        "| loss | " + " | ".join(f"peak @ {b}" for b in results["memory_batches"]) + " | peak exponent | "
        + " | ".join(f"largest @ {b}" for b in results["memory_batches"]) + " | largest exponent |",
        "|:---|" + "---:|" * (2 * len(results["memory_batches"]) + 2),
    ]
    for row in results["rows"]:
        peaks = [_mib(m["peak"]) for m in row["memory"]]
        largest = [_mib(m["largest"]) for m in row["memory"]]
        lines.append(
            f"| {row['variant']} | " + " | ".join(peaks) + f" | {row['peak_exponent']:.2f} | "
            + " | ".join(largest) + f" | {row['largest_exponent']:.2f} |"
        )
    lines += ["", f"- target: exponent < {EXPONENT_TARGET} (batch^2, not batch^3) for the batch x batch pair losses"]
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    from common import main_alone

    sys.exit(main_alone("pairs", run, markdown))
