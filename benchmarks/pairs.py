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
(``StepTimer("cpu")``, ``time.process_time``) give the step's work, which other
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

**Beside pytorch-metric-learning** (``--peers``, issue 23): every loss PML
2.9 has (``_peer_table``: triplet + ``TripletMarginMiner("semihard")``,
multi-similarity + ``MultiSimilarityMiner``, SupCon, NT-Xent, Proxy Anchor,
contrastive, circle, lifted and generalised lifted, N-pairs, ProxyNCA,
SoftTriple, NCA, Margin, TupletMargin, Angular, IntraPairVariance,
SNRContrastive, FastAP, Histogram, RankedList, Instance, PNP, and the two-view
``SelfSupervisedLoss(NTXent)`` and VICReg; PML has no Barlow Twins and no
soft nearest neighbour), at PML's defaults, ours with the arguments of the
migration table (``docs/pair_losses.md``, ``tests/test_pml_parity.py``) so
that both compute the same loss. PML runs its documented loop in plain
PyTorch (``miner(e, y)``, ``loss(e, y, pairs)``, ``backward``,
``Adam.step``, the value fetched) on the same trunk with the same initial
weights, batch 256 = 32 x 8 (two-view losses: 256 samples, the second view
the input plus N(0, 0.1) noise), one thread, in the same process as our
``fit`` on this backend; per loss, interleaved rounds (ours, PML, then PML,
ours) of one epoch each after a warm-up epoch, ms per step wall and CPU
(``time.process_time``), ratios ours / PML as medians of per-round ratios.
Then the loss + gradient alone (a fixed (256, 128) embedding, no trunk, no
optimizer; ours compiled as the backend compiles a step, PML eager, both
``autograd.grad`` w.r.t. the embedding) splits the step into (a) the loss's
own ops and (b) the rest (trunk, optimizer, the framework's step), and on
PyTorch ``torch.profiler`` lists the top ops of SupCon and multi-similarity
on both sides. Our memory exponent (as below) is checked for every loss of
the table. Target: ours / PML <= 1 in CPU time. ``--write`` puts this
backend's table into ``PAIRS.md`` ("Beside pytorch-metric-learning").

    KERAS_BACKEND=jax .venv/bin/python benchmarks/run.py --only pairs [--quick]
    KERAS_BACKEND=jax .venv/bin/python benchmarks/pairs.py [--quick]     # the same
    KERAS_BACKEND=torch .venv/bin/python benchmarks/pairs.py --peers [--quick] [--losses SupCon,NTXent] --write
"""

if __name__ == "__main__":  # the thread limits must be set before keras is imported
    from common import configure_threads

    configure_threads(1)

import os  # noqa: E402
import re  # noqa: E402
import time  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402

import lossweave as lw  # noqa: E402
from common import backend, block, fmt_ms, interleaved_rounds, median, wall_and_cpu, write_results  # noqa: E402
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


def time_steps(batch, steps, rounds, variants, flops=False):
    """Step times of ``variants`` at one batch size: median, per-round medians, ratio to softmax.

    ``flops`` (JAX): also the flops XLA counts in each compiled train step
    (``gradient.xla_flops``), a noise-free measure of the work a loss adds.
    """
    x, y = balanced_data(batch, steps)
    runs = {v: build(v) for v in variants}
    timer, cpu_timer = StepTimer(), StepTimer("cpu")
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
def _loss_inputs(variant, batch, seed=0, factory=None, two_views=False):
    """A built term, an embedding ``(batch, 128)`` and balanced labels, plus a loss function of both.

    The softmax reference gets a fixed ``(128, 32)`` head so that its loss is
    a function of the embedding, like the others'. ``factory`` (``--peers``)
    makes the term instead of ``make_term(variant)``; ``two_views``: the
    embedding is ``(2 batch, 128)``, the two views of ``batch`` samples, each
    its own id.
    """
    rng = np.random.default_rng(seed)
    labels = (np.arange(batch, dtype="int32") if two_views
              else np.repeat(np.arange(NUM_CLASSES, dtype="int32"), batch // NUM_CLASSES))
    embedding = rng.normal(size=(2 * batch if two_views else batch, EMBED_DIM)).astype("float32")
    keras.utils.set_random_seed(1)
    term = factory() if factory is not None else make_term(variant)
    if variant == REFERENCE:
        head = keras.ops.convert_to_tensor(rng.normal(size=(EMBED_DIM, NUM_CLASSES)).astype("float32") * 0.1)

        def loss(e, y):
            return term(keras.ops.matmul(e, head), y)
    elif two_views:
        def loss(e, y):
            return term((e[:batch], e[batch:]), y, training=False)
    else:
        def loss(e, y):
            return term(e, y, training=False)  # XBM reads its memory, writes nothing
    # Built outside any trace (the proxies and the memory are variables); nothing runs eagerly.
    if not two_views:
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


def _tf_value_and_grad(loss):
    """A ``tf.function`` of ``(e, y) -> (loss, d loss / d e)``."""
    import tensorflow as tf

    @tf.function
    def step(e, y):
        with tf.GradientTape() as tape:
            tape.watch(e)
            value = loss(e, y)
        return value, tape.gradient(value, e)

    return step


def _tensorflow_memory(loss, embedding, labels):
    import tensorflow as tf

    step = _tf_value_and_grad(loss)
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
    return {"peak": _allocator_peak(prof), "largest": int(Largest.size)}


def _allocator_peak(prof):
    """The most CPU bytes held at once in a ``torch.profiler`` run: every allocation and free of the allocator.

    The allocation records of the profiler's event tree, in time order (each a signed size), summed: frees
    count where they happen, inside a custom-gradient function's forward or backward too (the per-op
    ``self_cpu_memory_usage`` totals miss those, and read PNP's anchor-block gradient as batch^3).
    """
    from torch._C._profiler import _EventType

    records, stack = [], list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        event = stack.pop()
        if event.tag == _EventType.Allocation and event.extra_fields.device.type == "cpu":
            records.append((event.start_time_ns, event.extra_fields.alloc_size))
        stack.extend(event.children)
    held = peak = 0
    for _, size in sorted(records):
        held += size
        peak = max(peak, held)
    return int(peak)


def loss_memory(variant, batch, factory=None, two_views=False):
    """``{"peak": bytes, "largest": bytes}`` of one loss + gradient of ``variant`` (or ``factory()``) at ``batch``."""
    measure = {"jax": _jax_memory, "tensorflow": _tensorflow_memory, "torch": _torch_memory}[backend()]
    return measure(*_loss_inputs(variant, batch, factory=factory, two_views=two_views))


def exponent(batches, values):
    """Least-squares slope of log(values) against log(batches)."""
    return float(np.polyfit(np.log(batches), np.log(np.asarray(values, "float64")), 1)[0])


PEAK_MEASURE = {
    "jax": "XLA temp buffers of the compiled loss + gradient (memory_analysis)",
    "tensorflow": "CPU allocator peak above the bytes in use (get_memory_info)",
    "torch": "peak bytes held, every allocation and free of torch.profiler's allocation records in time order",
}


# ------------------------------------------------------------------ peers (issue 23, item 8)
# ``--peers``: the same step in pytorch-metric-learning (PML), in a plain PyTorch loop, in this process.
# Each row: PML's loss (and miner) at its defaults, ours with the migration table's arguments
# (docs/pair_losses.md, tests/test_pml_parity.py) so that both compute the same loss.
PEER_BATCH = 256
PEER_TARGET = {"jax": 1.0, "tensorflow": 1.0, "torch": 1.0}  # ours / PML per step: faster on JAX, no slower on torch
PEER_SLOW, PEER_SLOW_STEPS = 0.25, 4  # PML steps slower than this (s): so many steps per round
PEER_ANALYSED = ("SupCon", "MultiSimilarity + miner")  # the torch profile the issue asks for


def _unit_euclidean():
    """PML's default distance, ``LpDistance()``: Euclidean on L2-normalised rows."""
    return lw.distances.EuclideanDistance(normalize_embeddings=True)


def _peer_table():
    """``name -> (PML factory (loss, miner or None), our term factory, two views?)``; PML imported here."""
    from pytorch_metric_learning import losses as L
    from pytorch_metric_learning import miners as M

    terms, miners, reducers = lw.terms, lw.miners, lw.reducers
    avg = reducers.AvgNonZeroReducer
    d = EMBED_DIM
    return {
        "Contrastive": (lambda: (L.ContrastiveLoss(), None), lambda: terms.ContrastiveLoss(
            hinge="linear", reduce_parts=True, reducer=avg(), distance=_unit_euclidean()), False),
        "Triplet + semihard miner": (
            lambda: (L.TripletMarginLoss(margin=0.2), M.TripletMarginMiner(margin=0.2, type_of_triplets="semihard")),
            lambda: terms.TripletLoss(margin=0.2, miner=miners.TripletMarginMiner(0.2, "semihard"),
                                      distance=_unit_euclidean(), reducer=avg()), False),
        "MultiSimilarity + miner": (
            lambda: (L.MultiSimilarityLoss(), M.MultiSimilarityMiner(0.1)),
            lambda: terms.MultiSimilarityLoss(base=0.5, miner=miners.MultiSimilarityMiner(0.1)), False),
        "Circle": (lambda: (L.CircleLoss(), None),
                   lambda: terms.CircleLoss(relaxation=0.4, scale=80.0, reducer=avg()), False),
        "SupCon": (lambda: (L.SupConLoss(), None), lambda: terms.SupConLoss(reducer=avg()), False),
        "NTXent": (lambda: (L.NTXentLoss(), None), lambda: terms.NTXentLoss(temperature=0.07), False),
        "LiftedStructure": (lambda: (L.LiftedStructureLoss(), None),
                            lambda: terms.LiftedStructureLoss(distance=_unit_euclidean()), False),
        "GeneralizedLiftedStructure": (lambda: (L.GeneralizedLiftedStructureLoss(), None),
                                       lambda: terms.GeneralizedLiftedStructureLoss(distance=_unit_euclidean()), False),
        "NPairs": (lambda: (L.NPairsLoss(), None),
                   lambda: terms.NPairsLoss(l2_reg=0.0, distance="cosine_similarity"), False),
        "ProxyAnchor": (lambda: (L.ProxyAnchorLoss(NUM_CLASSES, d), None),
                        lambda: terms.ProxyAnchorLoss(NUM_CLASSES), False),
        "ProxyNCA": (lambda: (L.ProxyNCALoss(NUM_CLASSES, d), None),
                     lambda: terms.ProxyNCALoss(NUM_CLASSES, include_positive=True), False),
        "SoftTriple": (lambda: (L.SoftTripleLoss(NUM_CLASSES, d), None),
                       lambda: terms.SoftTripleLoss(NUM_CLASSES, tau=0.0), False),
        "NCA": (lambda: (L.NCALoss(), None),
                lambda: terms.NCALoss(distance=lw.distances.SquaredEuclideanDistance(normalize_embeddings=True)),
                False),
        "Margin": (lambda: (L.MarginLoss(), None),
                   lambda: terms.MarginLoss(triplets=True, distance=_unit_euclidean(), learn_beta=False), False),
        "TupletMargin": (lambda: (L.TupletMarginLoss(margin=float(np.degrees(0.1))), None),
                         lambda: terms.TupletMarginLoss(angular_margin=0.1), False),
        "Angular": (lambda: (L.AngularLoss(alpha=40), None), lambda: terms.AngularLoss(angle=40.0), False),
        "IntraPairVariance": (lambda: (L.IntraPairVarianceLoss(), None),
                              lambda: terms.IntraPairVarianceLoss(), False),
        "SNRContrastive": (lambda: (L.SignalToNoiseRatioContrastiveLoss(), None), lambda: terms.SNRContrastiveLoss(
            distance=lw.distances.SNRDistance(normalize_embeddings=True)), False),
        "FastAP": (lambda: (L.FastAPLoss(num_bins=10), None), lambda: terms.FastAPLoss(num_bins=10), False),
        "Histogram": (lambda: (L.HistogramLoss(n_bins=100), None), lambda: terms.HistogramLoss(n_bins=100), False),
        "RankedList": (lambda: (L.RankedListLoss(margin=0.4, Tn=10.0), None),
                       lambda: terms.RankedListLoss(margin=0.4, negative_temperature=10.0), False),
        "Instance": (lambda: (L.InstanceLoss(gamma=64), None), lambda: terms.InstanceLoss(scale=64.0), False),
        "PNP": (lambda: (L.PNPLoss(), None), lambda: terms.PNPLoss(count_self=True), False),
        "SelfSupervised(NTXent)": (lambda: (L.SelfSupervisedLoss(L.NTXentLoss(temperature=0.5)), None),
                                   lambda: terms.SelfSupervisedLoss(terms.NTXentLoss(temperature=0.5)), True),
        "VICReg": (lambda: (L.VICRegLoss(), None), lambda: terms.VICRegLoss(), True),
    }


PEER_MEASURE_NOTE = ("JAX: XLA temporaries; TensorFlow: allocator peak (allocations >= 256 KiB only); PyTorch: "
                     "allocator peak (profiler allocation records); two-view losses: batch samples x 2 views")
PEER_NOTES = {
    "Angular": "PML's AngularLoss normalises the embeddings, ours takes them as they come (equal on unit rows, "
               "tests/test_pml_parity.py); the work per step is the same",
    "NTXent": "PML averages over positive pairs, ours over anchors: equal on these P x K batches",
}


def _peer_objective(term, two_views):
    """An ``lw.Objective`` over the shared trunk, like ``build`` (same initial weights); two views: one trunk on
    each half of a (batch, 2 x 64) input."""
    keras.utils.set_random_seed(0)
    trunk = keras.Sequential([keras.layers.Dense(HIDDEN, activation="relu"), keras.layers.Dense(EMBED_DIM)],
                             name="trunk")
    if two_views:
        inputs = keras.Input((2 * INPUT_DIM,), name="x")
        outputs = {"view1": trunk(inputs[:, :INPUT_DIM]), "view2": trunk(inputs[:, INPUT_DIM:])}
    else:
        inputs = keras.Input((INPUT_DIM,), name="x")
        outputs = {"embedding": trunk(inputs)}
    keras.utils.set_random_seed(1)
    objective = lw.Objective(keras.Model(inputs, outputs), {"loss": term})
    objective.compile(optimizer="adam")
    return objective, trunk


def _torch_trunk(trunk):
    """The PyTorch twin of a Keras trunk (64 -> 256 relu -> 128) with its initial weights."""
    import torch

    first, second = (torch.nn.Linear(INPUT_DIM, HIDDEN), torch.nn.Linear(HIDDEN, EMBED_DIM))
    with torch.no_grad():
        for linear, dense in zip((first, second), trunk.layers):
            linear.weight.copy_(torch.tensor(keras.ops.convert_to_numpy(dense.kernel).T))
            linear.bias.copy_(torch.tensor(keras.ops.convert_to_numpy(dense.bias)))
    return torch.nn.Sequential(first, torch.nn.ReLU(), second)


class _PmlLoop:
    """PML's documented loop: ``miner(e, y)`` -> ``loss(e, y, pairs)``, ``backward``, ``Adam.step``; one epoch."""

    def __init__(self, model, loss, miner, x, y, batch, two_views):
        import torch

        self.torch, self.model, self.loss, self.miner, self.batch, self.two_views = (
            torch, model, loss, miner, batch, two_views)
        self.x, self.y = torch.tensor(x), torch.tensor(y).long()
        # The loss's own parameters (proxies, SoftTriple's centers) train too, as PML's docs say.
        self.optimizer = torch.optim.Adam(list(model.parameters()) + list(loss.parameters()), lr=1e-3)
        self.max_steps = self.x.shape[0] // batch

    def step(self, i):
        xb, yb = self.x[i * self.batch:(i + 1) * self.batch], self.y[i * self.batch:(i + 1) * self.batch]
        self.optimizer.zero_grad()
        if self.two_views:
            value = self.loss(self.model(xb[:, :INPUT_DIM]), ref_emb=self.model(xb[:, INPUT_DIM:]))
        else:
            e = self.model(xb)
            value = self.loss(e, yb, self.miner(e, yb) if self.miner is not None else None)
        value.backward()
        self.optimizer.step()
        return float(value.detach())  # the value fetched, as Keras fetches a step's logs

    def epoch(self):
        """``(wall, cpu)`` seconds of every step but the first (gaps between step ends, as ``StepTimer``).

        A loss slower than ``PEER_SLOW`` s a step (measured in the warm-up) runs ``PEER_SLOW_STEPS`` steps.
        """
        wall, cpu = [time.perf_counter()], [time.process_time()]
        steps = self.x.shape[0] // self.batch
        for i in range(min(steps, self.max_steps)):
            self.step(i)
            wall.append(time.perf_counter())
            cpu.append(time.process_time())
        return list(np.diff(wall[1:])), list(np.diff(cpu[1:]))


def _peer_data(steps, two_views):
    x, y = balanced_data(PEER_BATCH, steps)
    if two_views:  # a second view: the input plus a little noise; each sample its own id
        noise = np.random.default_rng(2).normal(scale=0.1, size=x.shape).astype("float32")
        x, y = np.concatenate([x, x + noise], axis=1), np.arange(y.size, dtype="int32")
    return x, y


def _loss_alone(factory, pml_loss, miner, two_views, reps):
    """Loss + gradient w.r.t. a fixed embedding, no trunk, no optimizer: ``{"ours": fn, "pml": fn}``.

    The inputs of the memory measure (``_loss_inputs``). Each fn runs the pair ``n`` times and returns the
    wall and CPU seconds of each call (blocked): ours compiled as the backend compiles a step (``jax.jit``,
    ``tf.function``; PyTorch eager), PML eager; both ``autograd.grad`` w.r.t. the embedding only.
    """
    import torch

    loss, embedding, labels = _loss_inputs(None, PEER_BATCH, factory=factory, two_views=two_views)
    name = backend()
    if name == "jax":
        import jax

        compiled = jax.jit(jax.value_and_grad(loss))

        def ours():
            return block(compiled(embedding, labels))
    elif name == "tensorflow":
        import tensorflow as tf

        step, e_tf, y_tf = _tf_value_and_grad(loss), tf.constant(embedding), tf.constant(labels)

        def ours():
            return [t.numpy() for t in step(e_tf, y_tf)]
    else:
        y_torch = torch.tensor(labels)

        def ours():
            e = torch.tensor(embedding, requires_grad=True)
            value = loss(e, y_torch)
            return value.detach(), torch.autograd.grad(value, e)[0]

    y_pml = torch.tensor(labels).long()

    def pml():
        e = torch.tensor(embedding, requires_grad=True)
        if two_views:
            value = pml_loss(e[:PEER_BATCH], ref_emb=e[PEER_BATCH:])
        else:
            value = pml_loss(e, y_pml, miner(e, y_pml) if miner is not None else None)
        return float(value.detach()), torch.autograd.grad(value, e)[0]

    def timed_calls(fn):
        def run(n=reps):
            return wall_and_cpu(fn, n)
        return run

    return {"ours": timed_calls(ours), "pml": timed_calls(pml)}


def _torch_profile(names, reps=20):
    """PyTorch backend: the ops that take the time in our loss + gradient and PML's, by ``torch.profiler``."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    table = _peer_table()
    out = {}
    for name in names:
        pml_factory, ours_factory, two_views = table[name]
        pml_loss, miner = pml_factory()
        calls = _loss_alone(ours_factory, pml_loss, miner, two_views, reps)
        out[name] = {}
        for side, run_calls in calls.items():
            run_calls()  # warm-up
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                run_calls()
            events = prof.key_averages()
            top = sorted(events, key=lambda ev: ev.self_cpu_time_total, reverse=True)[:8]
            out[name][side] = {
                "ops": int(sum(ev.count for ev in events if ev.key.startswith("aten::")) / reps),
                "top": [{"op": ev.key, "self_ms_per_call": ev.self_cpu_time_total / 1e3 / reps,
                         "calls": ev.count / reps} for ev in top]}
    return out


def _peer_row(name, entry, steps, rounds, reps, memory):
    """One loss of ``run_peers``: ours and PML's step, interleaved; the loss alone; our memory."""
    import torch

    pml_factory, ours_factory, two_views = entry
    x, y = _peer_data(steps, two_views)
    objective, trunk = _peer_objective(ours_factory(), two_views)
    torch.manual_seed(0)
    pml_loss, miner = pml_factory()
    loop = _PmlLoop(_torch_trunk(trunk), pml_loss, miner, x, y, PEER_BATCH, two_views)
    wall_timer, cpu_timer = StepTimer(), StepTimer("cpu")
    cpu = {"ours": [], "pml": []}

    def epoch(side, timed=True):
        if side == "pml":
            wall_steps, cpu_steps = loop.epoch()
        else:
            objective.fit(x, {"label": y}, batch_size=PEER_BATCH, epochs=1, shuffle=False, verbose=0,
                          callbacks=[wall_timer, cpu_timer])
            wall_steps, cpu_steps = wall_timer.step_times(), cpu_timer.step_times()
        if timed:
            cpu[side].append(median(cpu_steps))
        return wall_steps

    epoch("ours", timed=False)  # warm-up: trace and compile
    loop.max_steps = PEER_SLOW_STEPS  # PML is eager: a few warm-up steps say whether it is slow
    if median(epoch("pml", timed=False)) <= PEER_SLOW:
        loop.max_steps = x.shape[0] // PEER_BATCH
    times, per_round = interleaved_rounds(epoch, ("ours", "pml"), rounds)
    alone = _loss_alone(ours_factory, *pml_factory(), two_views, reps)
    calls = {}
    for side in alone:  # warm-up; a slow side runs PEER_SLOW_STEPS calls a round
        calls[side] = reps if median(alone[side](2)[0]) <= PEER_SLOW else PEER_SLOW_STEPS
    alone_wall, alone_cpu = {"ours": [], "pml": []}, {"ours": [], "pml": []}
    for r in range(rounds):
        for side in ("ours", "pml") if r % 2 == 0 else ("pml", "ours"):
            w, c = alone[side](calls[side])
            alone_wall[side].append(median(w))
            alone_cpu[side].append(median(c))
    row = {"loss": name, "two_views": two_views, "pml_steps_per_round": loop.max_steps}
    for side in ("ours", "pml"):
        row[side] = {"step_s": float(median(times[side])), "cpu_step_s": float(median(cpu[side])),
                     "loss_s": float(median(alone_wall[side])), "cpu_loss_s": float(median(alone_cpu[side]))}
    row["over_pml"] = float(median([a / b for a, b in zip(per_round["ours"], per_round["pml"])]))
    row["cpu_over_pml"] = float(median([a / b for a, b in zip(cpu["ours"], cpu["pml"])]))
    row["cpu_loss_over_pml"] = float(median([a / b for a, b in zip(alone_cpu["ours"], alone_cpu["pml"])]))
    if memory:  # the exponent check of ``run`` for every loss of this table (ours)
        row["memory"] = [loss_memory(name, b, ours_factory, two_views) for b in BATCHES]
        for key in ("peak", "largest"):
            values = [m[key] for m in row["memory"]]
            row[f"{key}_exponent"] = exponent(BATCHES, values) if min(values) > 0 else float("nan")
    print(f"{name}: ours {row['ours']['cpu_step_s'] * 1e3:.2f} ms CPU/step, PML "
          f"{row['pml']['cpu_step_s'] * 1e3:.2f} ({row['cpu_over_pml']:.2f}x); loss+grad alone "
          f"{row['ours']['cpu_loss_s'] * 1e3:.2f} vs {row['pml']['cpu_loss_s'] * 1e3:.2f} "
          f"({row['cpu_loss_over_pml']:.2f}x)", flush=True)
    return row


def run_peers(quick=False, losses=None, write=False, memory=True, merge=None):
    """Ours (this backend's ``fit``) beside PML (plain PyTorch loop) for every loss PML has, in one process.

    Per loss, interleaved rounds of one epoch each (``common.interleaved_rounds``) after a warm-up epoch; then
    the loss + gradient alone on a fixed (256, 128) embedding, interleaved the same way: the step minus the
    loss alone is the rest of the step (trunk, optimizer, the framework's step machinery).

    ``merge``: the path of an earlier run's results (``--out``); the rows of ``losses`` measured now replace
    theirs there (``merge_peers``), the merged results are written back to it and are what is returned and
    written into PAIRS.md.
    """
    previous = _read_peer_results(merge) if merge else None
    import torch

    if backend() != "torch":
        torch.set_num_threads(1)  # the PML side: one thread, as every backend pool here
    steps, rounds, reps = (6, 2, 10) if quick else (20, 5, 30)
    table = _peer_table()
    names = tuple(losses) if losses else tuple(table)
    rows = []
    for name in names:
        try:
            rows.append(_peer_row(name, table[name], steps, rounds, reps, memory))
        except Exception as error:  # noqa: BLE001 -- one failing loss must not lose the others' rows
            rows.append({"loss": name, "error": f"{type(error).__name__}: {error}"})
            print(f"{name}: failed: {rows[-1]['error']}", flush=True)
        if write and not merge and len(rows) < len(names):  # a run stopped early still leaves its rows
            partial = _peer_results(rows, steps, rounds, reps)
            partial["from_log"] = (f"partial run: {len(rows)} of {len(names)} losses written so far "
                                   f"(missing: {', '.join(names[len(rows):])})")
            write_peers(partial)
    results = _peer_results(rows, steps, rounds, reps)
    if backend() == "torch":
        results["profile"] = _torch_profile([n for n in PEER_ANALYSED if n in names])
    if merge:
        results = merge_peers(previous, results)
        write_results(results, merge)
    if write:
        write_peers(results)
    return results


def _read_peer_results(path):
    """An earlier ``run_peers`` result (``--out``) of this backend; its date is the file's time if it has none."""
    import json

    with open(path, encoding="utf-8") as f:
        results = json.load(f)
    if results.get("backend") != backend() or "rows" not in results:
        raise ValueError(f"--merge {path}: received the results of backend {results.get('backend')!r}; expected "
                         f"a --peers --out file of this process's backend {backend()!r} (set KERAS_BACKEND).")
    results.setdefault("date", time.strftime("%Y-%m-%d %H:%M UTC (file time)", time.gmtime(os.path.getmtime(path))))
    return results


def merge_peers(previous, fresh):
    """The rows of ``fresh`` (a rerun of some losses) in the places of theirs in ``previous`` (a full run).

    A loss ``previous`` lacks is appended. ``reruns`` lists each rerun (its losses, date, load average and
    rounds), so the block says which rows come from when; the rest keep the full run's ``date`` and
    ``load_average``. The targets are recomputed; a rerun's PyTorch profile replaces the same loss's.

    Example:
        >>> full = {"rows": [{"loss": "A", "cpu_over_pml": 2.0}, {"loss": "B", "cpu_over_pml": 3.0}],
        ...         "target": 1.0, "date": "d0", "load_average": [5.0, 5.0, 5.0]}
        >>> again = {"rows": [{"loss": "B", "cpu_over_pml": 0.5}], "target": 1.0, "date": "d1",
        ...          "load_average": [2.0, 2.0, 2.0], "steps_per_epoch": 20, "rounds": 5}
        >>> merged = merge_peers(full, again)
        >>> [r["cpu_over_pml"] for r in merged["rows"]], merged["reruns"][0]["losses"], merged["date"]
        ([2.0, 0.5], ['B'], 'd0')
    """
    fresh_rows = {row["loss"]: row for row in fresh["rows"]}
    merged = dict(previous)
    merged["rows"] = [fresh_rows.pop(row["loss"], row) for row in previous["rows"]] + list(fresh_rows.values())
    merged["reruns"] = list(previous.get("reruns", [])) + [
        {"losses": [row["loss"] for row in fresh["rows"]], "date": fresh.get("date"),
         "load_average": fresh.get("load_average"), "steps_per_epoch": fresh.get("steps_per_epoch"),
         "rounds": fresh.get("rounds")}]
    merged["targets"] = _peer_targets(merged["rows"], merged["target"])
    if fresh.get("profile"):
        merged["profile"] = {**previous.get("profile", {}), **fresh["profile"]}
    return merged


def _peer_results(rows, steps, rounds, reps):
    """The results of ``run_peers`` for the rows measured so far (targets included)."""
    import pytorch_metric_learning
    import torch

    results = {"backend": backend(), "batch": PEER_BATCH, "steps_per_epoch": steps, "rounds": rounds,
               "loss_reps": reps, "pml": pytorch_metric_learning.__version__, "torch": torch.__version__,
               "keras": keras.__version__, "load_average": list(os.getloadavg()), "rows": list(rows),
               "target": PEER_TARGET[backend()], "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    results["targets"] = _peer_targets(rows, results["target"])
    return results


def _peer_targets(rows, target):
    """``{claim: met?}`` of the rows: the step ratio, and the memory exponent where it was measured."""
    targets = {f"{r['loss']}: ours / PML step CPU time <= {target}":
               bool(r["cpu_over_pml"] <= target) if "error" not in r else None for r in rows}
    for r in rows:
        fitted = [e for e in (r.get("peak_exponent", float("nan")), r.get("largest_exponent", float("nan"))) if e == e]
        if fitted:
            targets[f"{r['loss']} memory exponent < {EXPONENT_TARGET}"] = bool(max(fitted) < EXPONENT_TARGET)
    return targets


def peer_memory(quick=False, losses=None):
    """``--peers --memory-only``: the memory rows of ``run_peers`` (our loss + gradient) alone, for ``losses``."""
    table = _peer_table()
    rows = []
    for name in losses or tuple(table):
        _, ours_factory, two_views = table[name]
        row = {"loss": name, "memory": [loss_memory(name, b, ours_factory, two_views) for b in BATCHES]}
        for key in ("peak", "largest"):
            values = [m[key] for m in row["memory"]]
            row[f"{key}_exponent"] = exponent(BATCHES, values) if min(values) > 0 else float("nan")
        rows.append(row)
    return {"backend": backend(), "rows": rows, "load_average": list(os.getloadavg())}


def peer_memory_markdown(results):
    load = ", ".join(f"{v:.2f}" for v in results["load_average"])
    lines = [f"{results['backend']}: memory of our loss + gradient ({PEER_MEASURE_NOTE}), MiB at batch "
             + " / ".join(map(str, BATCHES)) + f"; load average {load}:", "",
             "| loss | peak MiB | peak exponent | largest intermediate MiB | largest exponent |",
             "|:---|---:|---:|---:|---:|"]
    for r in results["rows"]:
        lines.append(f"| {r['loss']} | " + " / ".join(_mib(m["peak"]) for m in r["memory"])
                     + f" | {r['peak_exponent']:.2f} | " + " / ".join(_mib(m["largest"]) for m in r["memory"])
                     + f" | {r['largest_exponent']:.2f} |")
    return "\n".join(lines)


def peers_markdown(results):
    name = {"jax": "JAX", "tensorflow": "TensorFlow", "torch": "PyTorch"}[results["backend"]]
    load = ", ".join(f"{v:.2f}" for v in results["load_average"])
    target = results["target"]
    lines = [
        f"{name} backend against pytorch-metric-learning {results['pml']} (torch {results['torch']}, plain "
        f"PyTorch loop, one thread), keras {results['keras']}: trunk {INPUT_DIM} -> {HIDDEN} (relu) -> "
        f"{EMBED_DIM}, batch {results['batch']} = {NUM_CLASSES} classes x {results['batch'] // NUM_CLASSES} "
        f"(two-view losses: {results['batch']} samples x 2 views), Adam; ms per step, median over "
        f"{results['rounds']} interleaved rounds of {results['steps_per_epoch']} steps, wall clock and process CPU "
        f"time (the verdict reads CPU); ratios are medians of per-round ratios. Loss + gradient alone: a fixed "
        f"({results['batch']}, {EMBED_DIM}) embedding, {results['loss_reps']} calls per round. Load average "
        f"during the run (1, 5, 15 min): {load}" + (f"; run ended {results['date']}" if results.get("date") else "")
        + ".",
        "",
        "| loss | ours ms (CPU) | PML ms (CPU) | ours / PML wall | ours / PML CPU "
        f"| target <= {target:.2f}x (CPU) | loss + grad alone, ours / PML CPU ms | ratio "
        "| rest of step, ours / PML CPU ms |",
        "|:---|---:|---:|---:|---:|:---|---:|---:|---:|",
    ]
    rerun = {loss: i + 1 for i, r in enumerate(results.get("reruns", [])) for loss in r["losses"]}
    for row in results["rows"]:
        name = row["loss"] + (f" (rerun {rerun[row['loss']]})" if row["loss"] in rerun else "")
        if "error" in row:
            lines.append(f"| {name} | failed: {row['error'][:200]} |||||||")
            continue
        o, p = row["ours"], row["pml"]
        missed = 100 * (row["cpu_over_pml"] - target) / target
        verdict = "met" if row["cpu_over_pml"] <= target else f"**missed by {missed:.0f} %**"
        wall = f"{row['over_pml']:.2f}x" if row["over_pml"] == row["over_pml"] else "n/a"
        lines.append(
            f"| {name} | {fmt_ms(o['step_s'])} ({fmt_ms(o['cpu_step_s'])}) | {fmt_ms(p['step_s'])} "
            f"({fmt_ms(p['cpu_step_s'])}) | {wall} | {row['cpu_over_pml']:.2f}x | {verdict} | "
            f"{fmt_ms(o['cpu_loss_s'])} / {fmt_ms(p['cpu_loss_s'])} | {row['cpu_loss_over_pml']:.2f}x | "
            f"{fmt_ms(o['cpu_step_s'] - o['cpu_loss_s'])} / {fmt_ms(p['cpu_step_s'] - p['cpu_loss_s'])} |")
    if any("memory" in r for r in results["rows"]):
        lines += ["", f"Memory of our loss + gradient (the `run` measure: {PEER_MEASURE_NOTE}), MiB at batch "
                  + " / ".join(map(str, BATCHES)) + f"; target: exponent < {EXPONENT_TARGET}:", "",
                  "| loss | peak MiB | peak exponent | largest intermediate MiB | largest exponent |",
                  "|:---|---:|---:|---:|---:|"]
        for r in results["rows"]:
            if "memory" in r:
                lines.append(f"| {r['loss']} | " + " / ".join(_mib(m["peak"]) for m in r["memory"])
                             + f" | {r['peak_exponent']:.2f} | " + " / ".join(_mib(m["largest"]) for m in r["memory"])
                             + f" | {r['largest_exponent']:.2f} |")
    for r in results["rows"]:
        if r.get("pml_steps_per_round", results["steps_per_epoch"]) < results["steps_per_epoch"]:
            lines.append(f"\n- {r['loss']}: PML took over {PEER_SLOW} s a step in the warm-up, so its rounds ran "
                         f"{r['pml_steps_per_round']} steps")
    if results.get("from_log"):
        lines.append(f"\n- {results['from_log']}")
    for i, r in enumerate(results.get("reruns", []), 1):
        lines.append(f"\n- rerun {i}: {', '.join(r['losses'])} measured again on {r['date']} ({r['rounds']} rounds of "
                     f"{r['steps_per_epoch']} steps, load average "
                     + ", ".join(f"{v:.2f}" for v in r["load_average"])
                     + "), their rows replacing the full run's (`--merge`); the other rows and the load average "
                     "above are the full run's")
    for loss, note in PEER_NOTES.items():
        if any(r["loss"] == loss for r in results["rows"]):
            lines.append(f"\n- {loss}: {note}")
    for loss, sides in results.get("profile", {}).items():
        lines.append(f"\n{loss}, loss + gradient alone, `torch.profiler` (self CPU ms per call, top ops):\n")
        for side, prof in sides.items():
            top = "; ".join(f"`{t['op']}` {t['self_ms_per_call']:.3f} x{t['calls']:g}" for t in prof["top"][:6])
            lines.append(f"- {'ours' if side == 'ours' else 'PML'}: {prof['ops']} aten ops per call; {top}")
    return "\n".join(lines)


PEERS_BLOCK = re.compile(r"<!-- peers: (\w+) \(written by benchmarks/pairs\.py --peers --write; do not edit\) -->\n"
                         r"(.*?)<!-- /peers: \1 -->", re.S)


def write_peers(results, path=os.path.join(os.path.dirname(os.path.abspath(__file__)), "PAIRS.md")):
    """Replace this backend's block of the "vs pytorch-metric-learning" section of PAIRS.md (or append it)."""
    name = results["backend"]
    block_text = (f"<!-- peers: {name} (written by benchmarks/pairs.py --peers --write; do not edit) -->\n"
                  f"{peers_markdown(results).rstrip()}\n<!-- /peers: {name} -->")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    found = [m for m in PEERS_BLOCK.finditer(text) if m.group(1) == name]
    if found:
        text = text[:found[0].start()] + block_text + text[found[0].end():]
    else:
        text = text.rstrip() + "\n\n" + block_text + "\n"
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"wrote the {name} block of {path}")


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
    import argparse
    import sys

    from common import main_alone

    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--peers", action="store_true",
                        help="the same step beside pytorch-metric-learning (plain PyTorch loop), every loss PML has")
    parser.add_argument("--losses", help="--peers: a comma-separated subset of the losses")
    parser.add_argument("--write", action="store_true", help="--peers: write this backend's block into PAIRS.md")
    parser.add_argument("--no-memory", action="store_true", help="--peers: skip the memory exponents")
    parser.add_argument("--merge", metavar="FILE.json",
                        help="--peers: rerun only --losses and replace their rows in FILE.json, an earlier run's "
                             "--out results (written back merged; --write writes the merged block)")
    parser.add_argument("--memory-only", action="store_true",
                        help="--peers: only our memory of each loss of --losses (no timing, nothing written)")
    known, rest = parser.parse_known_args()
    if known.peers and known.memory_only:
        sys.exit(main_alone("pairs", peer_memory, peer_memory_markdown, rest,
                            losses=tuple(known.losses.split(",")) if known.losses else None))
    if known.peers:
        if known.merge and not known.losses:
            parser.error("--merge needs --losses: the losses to rerun (the others come from the file)")
        sys.exit(main_alone("pairs", run_peers, peers_markdown, rest, write=known.write, memory=not known.no_memory,
                            losses=tuple(known.losses.split(",")) if known.losses else None, merge=known.merge))
    sys.exit(main_alone("pairs", run, markdown, rest))
