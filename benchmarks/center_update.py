"""Cost of ONE compiled center update as the number of classes grows.

Measures, for num_classes in 10, 10k, 100k, 1M (batch 256, dim 128, float32):

* ``update``: lossweave's in-place Eq. 4 update,
  ``lw.ops.center_update_rows`` then ``lw.terms.add_to_rows`` on the
  ``CenterLoss`` centers variable;
* ``term``: the whole ``CenterLoss`` call in training (label/feature check,
  loss, update), i.e. what ``Objective.fit`` runs per step for this term;
* ``dense``: the common PyTorch center loss (KaiyangZhou's): the batch x
  classes distance matrix ``||x||^2 + ||c||^2 - 2 x c^T``, masked by the
  labels, ``loss = sum(clamp(distmat * mask)) / B``, and the centers moved by
  SGD on its gradient (a full-table update). Skipped at 1M by default
  (256 x 1M floats = 1 GB per temporary); ``--dense-1m`` runs it once.

Then, end to end, the median ``Objective.fit`` step with a CenterLoss at 10
and at 1M classes (everything fit runs per step, not just the update).

Each is compiled the way ``fit`` compiles it on the backend: TensorFlow in a
``tf.function``; JAX in ``jax.jit`` with the centers donated, the library code
traced inside a ``keras.StatelessScope``; PyTorch eagerly.

Targets: ``t_update(1M) / t_update(10) <= 1.5``; dense / update at 100k >= 50x;
no temporary the size of the table (classes x dim): the peak RSS growth during
updates at 1M stays far below the 512 MB table (a positive control, one
full-table copy, shows what the probe reports for such a temporary).
"""

import gc

import numpy as np
import keras
from keras import ops

import lossweave as lw
from common import backend, block, fmt_ms, median, peak_rss_growth_mib, rss_probe_available, timed

BATCH, DIM, ALPHA, DENSE_LR = 256, 128, 0.5, 0.5
SIZES = (10, 10_000, 100_000, 1_000_000)
TARGET_SCALING, TARGET_SPEEDUP = 1.5, 50.0
BACKEND = backend()


def dense_center_loss(x, y, centers):
    """KaiyangZhou's ``CenterLoss.forward`` in keras.ops: O(batch x classes) memory and time."""
    num_classes = centers.shape[0]
    distmat = (
        ops.sum(x * x, axis=1, keepdims=True)
        + ops.sum(centers * centers, axis=1)[None, :]
        - 2.0 * ops.matmul(x, ops.transpose(centers))
    )
    mask = ops.cast(ops.equal(y[:, None], ops.arange(num_classes, dtype="int32")[None, :]), x.dtype)
    return ops.sum(ops.clip(distmat * mask, 1e-12, 1e12)) / x.shape[0]


# ------------------------------------------------------------ per backend
# Each maker returns ``(update, term_call, dense)``: callables ``f(x, y)`` that
# run one step on their own state and return something to block on (``dense``
# is None when skipped). TensorFlow: a plain ``tf.function``, as Keras's fit
# compiles its step on a CPU-only machine (``jit_compile="auto"`` -> no XLA).


def _make_tensorflow(term, num_classes, dense):
    import tensorflow as tf

    @tf.function
    def update(x, y):
        indices, deltas = lw.ops.center_update_rows(x, y, term.centers, ALPHA)
        lw.terms.add_to_rows(term.centers, indices, deltas)

    @tf.function
    def term_call(x, y):
        return term(x, y, training=True)

    if not dense:
        return update, term_call, None
    centers = tf.Variable(tf.zeros((num_classes, DIM)))

    @tf.function
    def dense_step(x, y):
        with tf.GradientTape() as tape:
            loss = dense_center_loss(x, y, centers)
        centers.assign_sub(DENSE_LR * tape.gradient(loss, centers))
        return loss

    return update, term_call, dense_step


def _make_jax(term, num_classes, dense):
    import jax

    var = term.centers
    state = {"table": var.value, "dense": None}

    def pure_update(table, x, y):
        with keras.StatelessScope(state_mapping=[(var, table)]) as scope:
            indices, deltas = lw.ops.center_update_rows(x, y, var, ALPHA)
            lw.terms.add_to_rows(var, indices, deltas)
        return scope.get_current_value(var)

    def pure_term(table, x, y):
        with keras.StatelessScope(state_mapping=[(var, table)]) as scope:
            loss = term(x, y, training=True)
        return loss, scope.get_current_value(var)

    jit_update = jax.jit(pure_update, donate_argnums=0)
    jit_term = jax.jit(pure_term, donate_argnums=0)

    def update(x, y):
        state["table"] = jit_update(state["table"], x, y)
        return state["table"]

    def term_call(x, y):
        loss, state["table"] = jit_term(state["table"], x, y)
        return state["table"]

    update.lowered = lambda x, y: jit_update.lower(state["table"], x, y)
    update.current_table = lambda: state["table"]
    if not dense:
        return update, term_call, None

    def pure_dense(centers, x, y):
        grad = jax.grad(dense_center_loss, argnums=2)(x, y, centers)
        return centers - DENSE_LR * grad

    jit_dense = jax.jit(pure_dense, donate_argnums=0)
    state["dense"] = jax.numpy.zeros((num_classes, DIM), "float32")

    def dense_step(x, y):
        state["dense"] = jit_dense(state["dense"], x, y)
        return state["dense"]

    return update, term_call, dense_step


def _make_torch(term, num_classes, dense):
    import torch

    def update(x, y):
        indices, deltas = lw.ops.center_update_rows(x, y, term.centers, ALPHA)
        lw.terms.add_to_rows(term.centers, indices, deltas)

    def term_call(x, y):
        return term(x, y, training=True)

    if not dense:
        return update, term_call, None
    centers = torch.zeros((num_classes, DIM), requires_grad=True)

    def dense_step(x, y):
        loss = dense_center_loss(x, y, centers)
        (grad,) = torch.autograd.grad(loss, centers)
        with torch.no_grad():
            centers.sub_(DENSE_LR * grad)
        return loss

    return update, term_call, dense_step


MAKERS = {"tensorflow": _make_tensorflow, "jax": _make_jax, "torch": _make_torch}


def _full_copy_control(case):
    """Positive control for the RSS probe: one new classes x dim table per call."""
    term = case["term"]
    if BACKEND == "tensorflow":
        import tensorflow as tf

        fn = tf.function(lambda: term.centers.value + 0.0)
        return lambda: fn().shape
    if BACKEND == "jax":
        import jax

        fn = jax.jit(lambda t: t + 0.0)  # not donated: a new output buffer
        return lambda: block(fn(case["update"].current_table())).shape
    return lambda: (term.centers.value + 0.0).shape


# ------------------------------------------------------------------ run
def run(quick=False, dense_1m=False):
    sizes = SIZES
    rounds = 8 if quick else 30
    dense_rounds = 2 if quick else 5
    rng = np.random.default_rng(0)
    results = {"backend": BACKEND, "batch": BATCH, "dim": DIM, "rows": []}
    cases = []
    for n in sizes:
        term = lw.terms.CenterLoss(n, alpha=ALPHA, on="embedding")
        term.build((None, DIM))
        x = ops.convert_to_tensor(rng.normal(size=(BATCH, DIM)).astype("float32"))
        y = ops.convert_to_tensor(rng.integers(0, n, size=BATCH).astype("int32"))
        with_dense = n < 1_000_000 or dense_1m
        update, term_call, dense = MAKERS[BACKEND](term, n, with_dense)
        for fn in (update, term_call, dense):  # warm-up: trace / compile
            if fn is not None:
                timed(fn, x, y)
        cases.append({"n": n, "term": term, "x": x, "y": y, "update": update,
                      "term_call": term_call, "dense": dense,
                      "t": {"update": [], "term": [], "dense": []}})

    # Phase 1, lossweave: every round runs each size (order alternating) and
    # method once, so machine noise hits all alike. Phase 2: the dense
    # reference, apart, so its GB-sized passes do not disturb the small calls.
    # A method stops once it has min_repeats and has used its time budget.
    budget, min_repeats = (2.0, 2) if quick else (5.0, 5)

    def due(times, limit):
        return len(times) < limit and (len(times) < min_repeats or sum(times) < budget)

    for r in range(rounds):
        for case in cases if r % 2 == 0 else cases[::-1]:
            for method, fn in (("update", case["update"]), ("term", case["term_call"])):
                if due(case["t"][method], rounds):
                    case["t"][method].append(timed(fn, case["x"], case["y"])[0])
    results["memory"] = _memory_evidence(cases[-1])
    for r in range(dense_rounds):
        for case in cases:
            limit = dense_rounds if case["n"] < 1_000_000 else 1
            if case["dense"] is not None and due(case["t"]["dense"], limit):
                case["t"]["dense"].append(timed(case["dense"], case["x"], case["y"])[0])

    for case in cases:
        t = {k: median(v) for k, v in case["t"].items()}
        results["rows"].append({
            "num_classes": case["n"],
            "update_s": t["update"], "term_s": t["term"], "dense_s": t["dense"],
            "repeats": {k: len(v) for k, v in case["t"].items()},
            "dense_repeats": len(case["t"]["dense"]),
            "dense_over_update": t["dense"] / t["update"],
            "dense_over_term": t["dense"] / t["term"],
        })
    by_n = {row["num_classes"]: row for row in results["rows"]}
    results["scaling_update"] = by_n[sizes[-1]]["update_s"] / by_n[sizes[0]]["update_s"]
    results["scaling_term"] = by_n[sizes[-1]]["term_s"] / by_n[sizes[0]]["term_s"]
    results["speedup_100k"] = by_n[100_000]["dense_over_update"]
    results["speedup_100k_term"] = by_n[100_000]["dense_over_term"]
    results["scaling_update_from_10k"] = by_n[sizes[-1]]["update_s"] / by_n[10_000]["update_s"]
    del cases
    gc.collect()
    results["fit"] = fit_step_scaling(quick)
    results["targets"] = {
        "scaling_update <= 1.5": bool(results["scaling_update"] <= TARGET_SCALING),
        "speedup_100k >= 50": bool(results["speedup_100k"] >= TARGET_SPEEDUP),
        "no classes x dim temporary": results["memory"].get("ok"),
        "fit step t(1M)/t(10) <= 1.5": bool(results["fit"]["ratio"] <= TARGET_SCALING),
    }
    return results


def fit_step_scaling(quick=False, sizes=(10, 1_000_000)):
    """Median ``Objective.fit`` step time with a CenterLoss at 10 and at 1M classes.

    The end-to-end check of the same property: a linear map from 64 inputs to
    a 128-dim embedding trained by center loss alone (SGD), batch 256; the
    two objectives interleaved, one epoch each per round.
    """
    from step_overhead import StepTimer

    steps, rounds = (5, 1) if quick else (10, 3)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(steps * BATCH, 64)).astype("float32")
    runs = {}
    for n in sizes:
        keras.utils.set_random_seed(0)
        inputs = keras.Input((64,))
        model = keras.Model(inputs, {"embedding": keras.layers.Dense(DIM)(inputs)})
        objective = lw.Objective(model, {"center": lw.terms.CenterLoss(n, alpha=ALPHA, on="embedding")})
        objective.compile(optimizer="sgd")
        runs[n] = (objective, {"label": rng.integers(0, n, size=steps * BATCH).astype("int32")})
    timer, times = StepTimer(), {n: [] for n in sizes}
    for r in range(rounds + 1):  # round 0 warms up (trace / compile)
        for n in sizes if r % 2 == 0 else sizes[::-1]:
            objective, y = runs[n]
            objective.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0, callbacks=[timer])
            if r:
                times[n] += timer.step_times()
    step = {n: float(median(times[n])) for n in sizes}
    return {"step_s": step, "ratio": step[sizes[-1]] / step[sizes[0]], "steps": steps, "rounds": rounds}


def _memory_evidence(case):
    """Peak RSS growth of 3 updates at the largest size, against one full-table copy."""
    n, x, y = case["n"], case["x"], case["y"]
    table_mib = n * DIM * 4 / 2**20
    out = {"num_classes": n, "table_mib": table_mib}
    if BACKEND == "jax":
        compiled = case["update"].lowered(x, y).compile()
        stats = compiled.memory_analysis()
        if stats is not None:
            out["xla_temp_mib"] = stats.temp_size_in_bytes / 2**20
            out["xla_alias_mib"] = stats.alias_size_in_bytes / 2**20
    if not rss_probe_available():
        out["ok"] = None
        out["note"] = "no /proc/self/clear_refs: peak RSS probe unavailable"
        return out
    out["update_peak_mib"] = peak_rss_growth_mib(lambda: block(case["update"](x, y)), repeats=3)
    out["term_peak_mib"] = peak_rss_growth_mib(lambda: block(case["term_call"](x, y)), repeats=3)
    control = _full_copy_control(case)
    out["copy_control_peak_mib"] = peak_rss_growth_mib(control, repeats=1)
    # A table-sized temporary would add ~table_mib; allow a tenth of it for allocator noise.
    out["ok"] = bool(out["update_peak_mib"] < 0.1 * table_mib)
    return out


def markdown(results):
    lines = [
        f"Center update, {BACKEND}: batch {results['batch']}, dim {results['dim']}, float32; "
        "median ms per call",
        "",
        "| classes | update (ms) | term call (ms) | dense ref (ms) | dense / update | dense / term |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for row in results["rows"]:
        dense = fmt_ms(row["dense_s"])
        if row["dense_repeats"] == 1:
            dense += " (1 run)"
        ratio = lambda v: "n/a" if v != v else f"{v:,.0f}x"
        lines.append(
            f"| {row['num_classes']:,} | {fmt_ms(row['update_s'])} | {fmt_ms(row['term_s'])} | "
            f"{dense} | {ratio(row['dense_over_update'])} | {ratio(row['dense_over_term'])} |"
        )
    mem, fit = results["memory"], results["fit"]
    lines += [
        "",
        f"- t(1M)/t(10): update {results['scaling_update']:.2f}x, term call "
        f"{results['scaling_term']:.2f}x (target update <= {TARGET_SCALING}); update t(1M)/t(10k): "
        f"{results['scaling_update_from_10k']:.2f}x",
        f"- Objective.fit step, CenterLoss only, 64 -> {DIM} embedding: "
        f"{fmt_ms(fit['step_s'][10])} ms at 10 classes, {fmt_ms(fit['step_s'][1_000_000])} ms at 1M "
        f"({fit['ratio']:.2f}x)",
        f"- dense / update at 100k: {results['speedup_100k']:,.0f}x "
        f"(dense / term call: {results['speedup_100k_term']:,.0f}x; target >= {TARGET_SPEEDUP:.0f}x)",
    ]
    if "update_peak_mib" in mem:
        lines.append(
            f"- peak RSS growth at {mem['num_classes']:,} classes (table {mem['table_mib']:.0f} MiB): "
            f"3 updates {mem['update_peak_mib']:.1f} MiB, 3 term calls {mem['term_peak_mib']:.1f} MiB; "
            f"positive control (one full-table copy) {mem['copy_control_peak_mib']:.0f} MiB"
        )
    if "xla_temp_mib" in mem:
        lines.append(
            f"- XLA memory analysis of the jitted update: temporaries {mem['xla_temp_mib']:.2f} MiB, "
            f"donated/aliased {mem['xla_alias_mib']:.0f} MiB"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    res = run(quick="--quick" in sys.argv, dense_1m="--dense-1m" in sys.argv)
    print(markdown(res))
