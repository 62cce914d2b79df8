"""Multi-task benchmark: every loss-level and gradient-level strategy on the bundled digits.

Two cases, both on scikit-learn's ``load_digits`` (bundled, no download),
pixels / 16:

* ``two`` (K = 2), a fixed train/test split (1200 / 597, permutation seed 0):

  - ``digit``: 10-class classification, softmax cross-entropy; metric
    accuracy (higher is better);
  - ``score``: ``100 * (ink in the top half of the image) / (total ink)``, a
    deterministic, nonlinear function of the pixels (values ~30 .. 70),
    mean squared error; metric MAE (lower is better). At initialisation its
    MSE is ~1000x the cross-entropy (printed as ``initial losses``).

* ``four`` (K = 4): ``lossweave.data.load_multitask(seed=0)`` (its stratified
  split; train 1077, test 360), four tasks of different kinds and scales:

  - ``digit``: the 10-class label (cross-entropy ~2.3 at initialisation);
  - ``parity``: even / odd digit, 2 classes (cross-entropy ~0.7);
  - ``ink``: mean pixel intensity in [0, 1] (MSE ~0.01 .. 0.1);
  - ``top``: the share of the ink in the top half, in percent: the
    100x-scaled regression (MSE ~2600 at initialisation, 10^5 x ``ink``'s).

  Metrics: accuracy (``digit``, ``parity``), MAE (``ink``, ``top``).

Model: a shared MLP trunk 64 -> 64 -> 64 (relu) with one head per task
(``Dense(classes)`` or ``Dense(1)``). Within a seed, every strategy and
baseline starts from the same initial weights (built once, copied).

Strategies (``lw.Objective`` with ``SoftmaxCrossEntropy`` on each class task
and ``Loss(MeanSquaredError())`` on each regression):

* loss level: equal weighting (``Weighting()``, plain sum), ``Uncertainty``
  (class tasks as classification), ``DWA``, ``RLW``, ``GLS``, ``FAMO``;
* gradient level: **every** entry of ``lossweave.cli.registry.WEIGHTINGS``
  with level ``"gradient"`` (MGDA, PCGrad, the gradient mean and sum, and
  whatever else is registered: CAGrad, Nash-MTL, UPGrad, ...), built by the
  registry's own builder with its defaults, in parameter mode (the term
  gradients of the trunk's variables); a strategy with a ``seed`` gets the
  run's seed. A name added to the registry appears here with no edit.

Single-task baselines train the same model on one term alone. Adam (lr
1e-3), batch 64, ``EPOCHS`` epochs, 3 seeds.

Delta_m% (Maninis, Radosavovic & Kokkinos, "Attentive single-tasking of
multiple tasks", CVPR 2019; Vandenhende et al., "Multi-task learning for dense
prediction tasks: a survey", TPAMI 2021, Eq. 11)::

    Delta_m = (1/T) sum_t (-1)^{l_t} (M_{m,t} - M_{b,t}) / M_{b,t} * 100

with ``l_t = 1`` if *lower* is better for task ``t`` and ``M_b`` the
single-task baseline of the same seed: positive means better than the
single-task models. Reported as mean +- std over the seeds.

Step time: per-step median through ``fit`` (the ``StepTimer`` of
``step_overhead.py``) of every strategy, ``Fixed`` (every weight 1, the
loss-level reference) and the plain Keras model compiled with
``loss={task: ...}, loss_weights={task: 1.0}``, on the same model: the
strategies in groups of ``GROUP``, each group interleaved with Keras and
``Fixed`` (forward, then reverse order) over several one-epoch rounds and
deleted before the next (see ``step_time`` for why); ratios are medians of
per-round ratios within a group. Every step is timed on the wall clock and on
the process CPU clock at once (``StepTimer``): both are reported side by side,
with the load average before and after; ``--clock`` picks the one the
verdicts read. Targets: ``Fixed`` <= 1.05x Keras's own step on JAX and
TensorFlow, 1.15x on PyTorch (``FIXED_TARGET``), and every loss-level
strategy the same (they do ``Fixed``'s work);
gradient-level strategies <= ``1.1 (1 + 2K) / 3`` x ``Fixed`` (one forward
and K backward passes, ``gradient.py``'s parameter-mode target).

    KERAS_BACKEND=jax .venv/bin/python benchmarks/multitask.py [--quick] [--no-quality] [--no-step]
        [--case two|four] [--only NAME,NAME]
    KERAS_BACKEND=jax .venv/bin/python benchmarks/run.py --only multitask [--quick]
"""

if __name__ == "__main__":  # the thread limits must be set before keras is imported
    from common import configure_threads

    configure_threads(1)

import math  # noqa: E402
import time  # noqa: E402
import typing  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402

import lossweave as lw  # noqa: E402
from common import backend, median  # noqa: E402
from gradient import parameter_target  # noqa: E402
from lossweave.cli import registry  # noqa: E402
from step_overhead import StepTimer, load, timed_rounds  # noqa: E402

SEEDS = (0, 1, 2)
EPOCHS = 30
BATCH = 64
N_TRAIN = 1200
HIDDEN = (64, 64)
LOSS_LEVEL = ("equal", "uncertainty", "dwa", "rlw", "gls", "famo")
REFERENCE = "fixed"  # the loss-level reference of the step-time ratios (Fixed(), every weight 1)
STEP_TARGET = 1.05
# Fixed over Keras's own compile(loss_weights=...) step, per backend (issue 21 item 3)
FIXED_TARGET = {"jax": 1.05, "tensorflow": 1.05, "torch": 1.15}
GROUP = 4  # strategies timed together beside keras and Fixed (see step_time)


def _print(text):
    print(text, flush=True)


class Task(typing.NamedTuple):
    classes: int  # 0: a regression
    metric: str  # "accuracy" (higher is better) or "mae" (lower is better)

    @property
    def higher_is_better(self):
        return self.metric == "accuracy"


CASES = {
    "two": {"digit": Task(10, "accuracy"), "score": Task(0, "mae")},
    "four": {"digit": Task(10, "accuracy"), "parity": Task(2, "accuracy"), "ink": Task(0, "mae"),
             "top": Task(0, "mae")},
}


def gradient_level():
    """The gradient-level names of the registry, in its order (read at call time: new names appear)."""
    return tuple(name for name, entry in registry.WEIGHTINGS.items() if entry.level == "gradient")


def strategies(only=None):
    names = LOSS_LEVEL + gradient_level()
    if only:
        unknown = sorted(set(only) - set(names))
        if unknown:
            raise ValueError(f"--only: unknown strategies {unknown}; choose from {', '.join(names)}.")
        names = tuple(n for n in names if n in only)
    return names


# --------------------------------------------------------------------- data
def load_data(case):
    """``((x_train, y_train), (x_test, y_test))`` of ``case``, ``y`` a dict of task targets."""
    if case == "four":
        from lossweave.data.multitask import load_multitask

        ds = load_multitask(seed=0)
        names = {"digit": "label", "parity": "parity", "ink": "ink", "top": "top"}
        part = lambda p: (getattr(ds, f"x_{p}"), {t: ds.targets(p)[n] for t, n in names.items()})
        return part("train"), part("test")
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.data / 16.0).astype("float32")
    images = digits.images.astype("float64")
    top = images[:, :4, :].sum(axis=(1, 2))
    total = images.sum(axis=(1, 2))
    score = (100.0 * top / total).astype("float32")[:, None]
    digit = digits.target.astype("int32")
    order = np.random.default_rng(0).permutation(len(x))
    tr, te = order[:N_TRAIN], order[N_TRAIN:]
    split = lambda idx: (x[idx], {"digit": digit[idx], "score": score[idx]})
    return split(tr), split(te)


# -------------------------------------------------------------------- model
def build_model(case, seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((64,), name="x")
    h = inputs
    for width in HIDDEN:
        h = keras.layers.Dense(width, activation="relu")(h)
    outputs = {t: keras.layers.Dense(task.classes or 1, name=t)(h) for t, task in CASES[case].items()}
    return keras.Model(inputs, outputs)


def clone(model, case):
    copy = build_model(case, 0)
    copy.set_weights(model.get_weights())
    return copy


def terms(case, tasks=None, validate=True):
    spec = CASES[case]
    return {
        t: (lw.terms.SoftmaxCrossEntropy(on=t, target=t, validate=validate) if spec[t].classes
            else lw.terms.Loss(keras.losses.MeanSquaredError(), on=t, target=t))
        for t in (tasks or spec)
    }


def weighting(name, case, tasks, seed, steps_per_epoch):
    """The strategy ``name`` over ``tasks``: the loss-level ones here, the rest from the registry."""
    if name == "equal":
        return lw.weighting.Weighting()
    if name == "uncertainty":
        return lw.weighting.Uncertainty({t: "classification" for t in tasks if CASES[case][t].classes})
    if name == "dwa":
        return lw.weighting.DWA(steps_per_epoch=steps_per_epoch)
    if name == "rlw":
        return lw.weighting.RLW(seed=seed)
    if name == "gls":
        return lw.weighting.GLS()
    if name == "famo":
        return lw.weighting.FAMO()
    strategy = registry.build_weighting(name, list(tasks), 0.0, steps_per_epoch)
    config = strategy.get_config()
    if "seed" in config and config["seed"] != seed:  # the run's seed, not the registry's fixed one
        strategy = type(strategy).from_config({**config, "seed": seed})
    return strategy


# ------------------------------------------------------------------ quality
def evaluate(model, case, x, y):
    out = model(x, training=False)  # eager: no predict function to compile per run
    metrics = {}
    for t, task in CASES[case].items():
        pred = np.asarray(keras.ops.convert_to_numpy(out[t]))
        if task.classes:
            metrics[t] = float(np.mean(pred.argmax(-1) == np.asarray(y[t]).reshape(-1)))
        else:
            metrics[t] = float(np.mean(np.abs(pred - y[t])))
    return metrics


def delta_m(case, metrics, base):
    """Vandenhende et al. Eq. 11: (-1)^{l_t} with l_t = 1 when LOWER is better; positive = better."""
    return float(np.mean([
        (1.0 if task.higher_is_better else -1.0) * (metrics[t] - base[t]) / base[t] * 100.0
        for t, task in CASES[case].items()
    ]))


def initial_losses(model, case, x, y):
    out = model(x[:512], training=False)
    losses = {}
    for t, task in CASES[case].items():
        if task.classes:
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y[t][:512], out[t])
        else:
            loss = keras.losses.MeanSquaredError()(y[t][:512], out[t])
        losses[t] = float(keras.ops.convert_to_numpy(loss))
    losses["ratio"] = max(losses.values()) / min(losses.values())
    return losses


class Snapshot(keras.callbacks.Callback):
    """The Objective's whole state (optimizer included) at the start of its first ``fit``, as NumPy copies.

    At ``on_train_begin`` Keras has built every variable (optimizer slots,
    metrics, the strategy's row state) and trained none: the state a fresh
    run starts from. Copies, because the JAX step donates the buffers.
    """

    def __init__(self):
        super().__init__()
        self.values = None

    def on_train_begin(self, logs=None):
        if self.values is None:
            self.values = [np.array(keras.ops.convert_to_numpy(v.value)) for v in _state(self.model)]


def _state(objective):
    return list(objective.variables) + list(objective.optimizer.variables)


class Runner:
    """One Objective per strategy, reused across seeds: one compile instead of one per seed.

    Each seed starts from the first fit's initial state (``Snapshot``) with
    the seed's initial model weights and the seed generators of a fresh
    strategy built with the seed: the same run as a new Objective, without
    tracing and compiling its step again (compiling was ~90 % of a
    30-epoch run here).
    """

    def __init__(self, case, tasks, strategy, data):
        self.case, self.tasks, self.strategy, self.data = case, tasks, strategy, data
        self.steps = math.ceil(len(data[0][0]) / BATCH)
        self.objective, self.snapshot = None, Snapshot()

    def train(self, init, seed, epochs):
        (x, y), _ = self.data
        if self.objective is None:
            model = clone(init, self.case)
            self.objective = lw.Objective(
                model, terms(self.case, self.tasks),
                weighting=weighting(self.strategy, self.case, self.tasks, seed, self.steps))
            self.objective.compile(optimizer=keras.optimizers.Adam(1e-3))
        else:
            for variable, value in zip(_state(self.objective), self.snapshot.values):
                variable.assign(value)
            self.objective.model.set_weights(init.get_weights())
            fresh = weighting(self.strategy, self.case, self.tasks, seed, self.steps)
            fresh.setup(list(self.tasks))
            seeds = lambda w: [v for v in w.variables if "seed_generator_state" in v.path]
            for old, new in zip(seeds(self.objective.weighting), seeds(fresh)):
                old.assign(new.value)
        keras.utils.set_random_seed(1000 + seed)  # same shuffling for every run of a seed
        history = self.objective.fit(x, {t: y[t] for t in self.tasks}, batch_size=BATCH, epochs=epochs,
                                     verbose=0, callbacks=[self.snapshot])
        return {t: float(history.history[f"weight/{t}"][-1]) for t in self.tasks}


def _mean_std(values):
    return float(np.mean(values)), float(np.std(values))


def quality(case, quick=False, only=None, log=_print):
    data = load_data(case)
    (_, _), (x_test, y_test) = data
    epochs = 4 if quick else EPOCHS
    seeds = SEEDS[:1] if quick else SEEDS
    tasks = tuple(CASES[case])
    names = strategies(only)
    results = {"case": case, "backend": backend(), "epochs": epochs, "seeds": list(seeds), "batch": BATCH, "n_train": len(data[0][0]),
               "n_test": len(x_test), "runs": {}, "initial_losses": [], "seconds": {}}
    inits = {seed: build_model(case, seed) for seed in seeds}
    for seed in seeds:
        results["initial_losses"].append(initial_losses(inits[seed], case, *data[0]))
        log(f"[{case}] seed {seed}: initial losses {results['initial_losses'][-1]}")
    base = {seed: {} for seed in seeds}
    for task in tasks:
        runner = Runner(case, (task,), "equal", data)
        for seed in seeds:
            runner.train(inits[seed], seed, epochs)
            base[seed][task] = evaluate(runner.objective.model, case, x_test, y_test)[task]
    results["runs"]["single-task"] = [{"metrics": dict(base[seed]), "delta_m": 0.0} for seed in seeds]
    for strategy in names:
        runner = Runner(case, tasks, strategy, data)
        for seed in seeds:
            t0 = time.perf_counter()
            w = runner.train(inits[seed], seed, epochs)
            m = evaluate(runner.objective.model, case, x_test, y_test)
            dm = delta_m(case, m, base[seed])
            finite = all(math.isfinite(v) for v in m.values())
            results["runs"].setdefault(strategy, []).append(
                {"seed": seed, "metrics": m, "delta_m": dm if finite else float("nan"), "final_weights": w})
            seconds = time.perf_counter() - t0
            results["seconds"].setdefault(strategy, []).append(seconds)
            log(f"  [{case}] seed {seed} {strategy:14s} "
                + " ".join(f"{t} {m[t]:.4g}" for t in tasks)
                + f" dm {dm:+.2f}% weights {{{', '.join(f'{t}: {v:.3g}' for t, v in w.items())}}} ({seconds:.1f} s)")
    return summarize(results, names)


def summarize(results, names):
    """``results`` with its ``summary`` (mean +- std over seeds per strategy) and ``targets`` (re)computed."""
    tasks = tuple(CASES[results["case"]])
    summary = {}
    for name, runs in results["runs"].items():
        summary[name] = {t: _mean_std([r["metrics"][t] for r in runs]) for t in tasks}
        summary[name]["delta_m"] = _mean_std([r["delta_m"] for r in runs])
    # Mean rank (Navon et al., "Multi-Task Learning as a Bargaining Game", ICML 2022, Sec. 6): each
    # strategy's rank per task among the strategies (1 = best mean), averaged over the tasks. Delta_m%
    # averages relative changes, so one task with a tiny baseline (ink's MAE ~0.02) can dominate it.
    ranked = [n for n in summary if n != "single-task"]
    for t in tasks:
        sign = -1.0 if CASES[results["case"]][t].higher_is_better else 1.0
        order = sorted(ranked, key=lambda n: sign * summary[n][t][0] if math.isfinite(summary[n][t][0]) else math.inf)
        for position, n in enumerate(order, start=1):
            summary[n].setdefault("ranks", []).append(position)
    for n in ranked:
        summary[n]["mean_rank"] = float(np.mean(summary[n].pop("ranks")))
    results["summary"] = summary
    results["targets"] = quality_targets(results["case"], summary, names)
    return results


def merge(parts):
    """One result from quality runs of the same cases with different ``--only`` strategy sets.

    Runs are deterministic (same seeds, same initial weights, same
    shuffling), so each part's single-task baselines must agree: checked,
    then the strategies' runs are united and the summaries recomputed.
    """
    merged = {"backend": parts[0]["backend"], "targets": {}, "quality": [], "strategies": []}
    for part in parts:
        merged["strategies"] += [s for s in part["strategies"] if s not in merged["strategies"]]
    for case in CASES:
        found = [q for part in parts for q in part.get("quality", []) if q["case"] == case]
        if not found:
            continue
        first = found[0]
        first.setdefault("backend", parts[0]["backend"])
        for q in found[1:]:
            same = all(np.allclose([r["metrics"][t] for r in q["runs"]["single-task"]],
                                   [r["metrics"][t] for r in first["runs"]["single-task"]], rtol=1e-5)
                       for t in CASES[case])
            if not same or q["seeds"] != first["seeds"] or q["epochs"] != first["epochs"]:
                raise ValueError(f"merge: the [{case}] parts differ in seeds, epochs or single-task baselines; "
                                 "they are not runs of the same benchmark.")
            first["runs"].update(q["runs"])
            first["seconds"].update(q["seconds"])
        order = [n for n in strategies() if n in first["runs"]]
        first["runs"] = {"single-task": first["runs"]["single-task"], **{n: first["runs"][n] for n in order}}
        merged["quality"].append(summarize(first, order))
        merged["targets"].update(first["targets"])
    return merged


def quality_targets(case, summary, names):
    learned = [s for s in names if s != "equal" and s in summary and s not in ("gradient-sum", "gradient-mean")]
    if "equal" not in summary or not learned:
        return {}
    eq = summary["equal"]["delta_m"][0]
    targets = {f"[{case}] a learned strategy beats equal weighting on Delta_m%": bool(
        any(summary[s]["delta_m"][0] > eq for s in learned))}
    means = [summary[s]["delta_m"][0] for s in names if s in summary and math.isfinite(summary[s]["delta_m"][0])]
    stds = [summary[s]["delta_m"][1] for s in names if s in summary and math.isfinite(summary[s]["delta_m"][1])]
    if case == "four" and len(means) > 1:
        # "the strategies actually differ": the spread of the means is well above the seeds' noise
        targets["[four] strategies differ: max - min Delta_m% > 2 x the largest seed std"] = bool(
            max(means) - min(means) > 2 * max(stds))
    return targets


# --------------------------------------------------------------- step time
def step_time(case, quick=False, only=None, clock="wall"):
    """Step times of every strategy beside ``Fixed`` and Keras, in groups of ``GROUP`` strategies.

    ``keras`` and ``Fixed`` stay built for the whole run; each group of
    strategies is built, warmed up, timed interleaved with them and deleted
    before the next group. With all ~24 variants alive and interleaved at
    once, the strategies timed later in a round ran 3-7x slower on JAX than
    the same strategies timed in a group of four (0.6 ms -> 2.4-4 ms per step
    for PCGrad, IMTL-G, CAGrad: the same program), so a ratio is only taken
    between variants timed together in one small group.
    """
    import gc

    (x, y), _ = load_data(case)
    steps = math.ceil(len(x) / BATCH)
    tasks = tuple(CASES[case])
    k = len(tasks)
    names = strategies(only)
    init = build_model(case, 0)

    def build(v):
        model = clone(init, case)
        if v == "keras":
            model.compile(
                optimizer=keras.optimizers.Adam(1e-3),
                loss={t: (keras.losses.SparseCategoricalCrossentropy(from_logits=True) if CASES[case][t].classes
                          else "mse") for t in tasks},
                loss_weights={t: 1.0 for t in tasks},
            )
            return model
        strategy = lw.weighting.Fixed() if v == REFERENCE else weighting(v, case, tasks, 0, steps)
        objective = lw.Objective(model, terms(case), weighting=strategy)
        objective.compile(optimizer=keras.optimizers.Adam(1e-3))
        return objective

    timer = StepTimer(clock)
    runs = {"keras": build("keras"), REFERENCE: build(REFERENCE)}

    def epoch(v):
        runs[v].fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0, callbacks=[timer])

    loads = [load()]
    for v in runs:  # warm-up: trace and compile
        epoch(v)
    rounds = 2 if quick else 6
    ratio = lambda per_round, a, b: float(median([p / q for p, q in zip(per_round[a], per_round[b])]))
    clocks = ("wall", "cpu")
    measured = {}
    base = {c: {"keras": [], REFERENCE: [], "keras/fixed": []} for c in clocks}
    for start in range(0, len(names), GROUP):
        group = names[start:start + GROUP]
        for v in group:
            runs[v] = build(v)
            epoch(v)
        both = timed_rounds(epoch, ("keras", REFERENCE) + group, rounds, timer)
        for v in group:
            measured[v] = {c: {"step_s": float(median(both[c][0][v])), "over_fixed": ratio(both[c][1], v, REFERENCE),
                               "over_keras": ratio(both[c][1], v, "keras")} for c in clocks}
            del runs[v]
        for c in clocks:
            times, per_round = both[c]
            base[c]["keras"] += times["keras"]
            base[c][REFERENCE] += times[REFERENCE]
            base[c]["keras/fixed"].append(ratio(per_round, "keras", REFERENCE))
        gc.collect()
    loads.append(load())
    keras_over_fixed = {c: float(median(base[c]["keras/fixed"])) for c in clocks}
    fixed_target = FIXED_TARGET.get(backend(), STEP_TARGET)
    rows = [
        {"variant": "keras", "level": "keras", "target": None, "met": None,
         **{c: {"step_s": float(median(base[c]["keras"])), "over_fixed": keras_over_fixed[c], "over_keras": 1.0}
            for c in clocks}},
        {"variant": REFERENCE, "level": "loss", "target": fixed_target,
         "met": bool(1.0 / keras_over_fixed[clock] <= fixed_target),
         **{c: {"step_s": float(median(base[c][REFERENCE])), "over_fixed": 1.0, "over_keras": 1.0 / keras_over_fixed[c]}
            for c in clocks}},
    ]
    for v in names:
        level = "gradient" if v in gradient_level() else "loss"
        limit = parameter_target(k) if level == "gradient" else fixed_target
        checked = measured[v][clock]["over_fixed"] if level == "gradient" else measured[v][clock]["over_keras"]
        rows.append({"variant": v, "level": level, **measured[v], "target": limit, "met": bool(checked <= limit)})
    targets = {f"[{case}] Fixed <= {fixed_target}x keras's loss_weights step ({backend()}, {clock} clock)":
               rows[1]["met"]}
    loss_rows = [r for r in rows if r["variant"] in LOSS_LEVEL]
    if loss_rows:
        targets[f"[{case}] loss-level strategies <= {fixed_target}x keras step ({backend()}, {clock} clock)"] = bool(
            all(r["met"] for r in loss_rows))
    for r in rows:
        if r["level"] == "gradient":
            targets[f"[{case}] {r['variant']} step <= {r['target']:.2f}x Fixed (K={k}, {backend()})"] = r["met"]
    return {"case": case, "k": k, "backend": backend(), "rounds": rounds, "group": GROUP, "steps_per_epoch": steps,
            "batch": BATCH, "clock": clock, "load": loads, "rows": rows, "targets": targets}


# ---------------------------------------------------------------- markdown
def _pm(mean_std, digits):
    mean, std = mean_std
    return f"{mean:.{digits}f} +- {std:.{digits}f}"


def markdown_quality(q):
    case, tasks = q["case"], list(CASES[q["case"]])
    arrow = lambda t: "up" if CASES[case][t].higher_is_better else "down"
    lines = [
        f"Multi-task quality, case `{case}` ({q.get('backend', backend())}): digits, train {q['n_train']} / test {q['n_test']}, "
        f"MLP 64-64-64 + {len(tasks)} heads, Adam 1e-3, batch {q['batch']}, {q['epochs']} epochs, "
        f"seeds {q['seeds']}; mean +- std over seeds",
        "",
        "initial losses (seed: " + " / ".join(tasks) + " / max:min): "
        + "; ".join(f"{s}: " + " / ".join(f"{d[t]:.3g}" for t in tasks) + f" / {d['ratio']:.0f}x"
                    for s, d in zip(q["seeds"], q["initial_losses"])),
        "",
        "| strategy | level | " + " | ".join(f"{t} {CASES[case][t].metric} ({arrow(t)})" for t in tasks)
        + " | Delta_m% (up) | mean rank (down) |",
        "|:---|:---|" + "---:|" * (len(tasks) + 2),
    ]
    for name, s in q["summary"].items():
        level = "" if name == "single-task" else ("gradient" if name in gradient_level() else "loss")
        cells = [_pm(s[t], 4 if CASES[case][t].metric == "accuracy" else 3) for t in tasks]
        rank = f"{s['mean_rank']:.1f}" if "mean_rank" in s else ""
        lines.append(f"| {name} | {level} | " + " | ".join(cells) + f" | {s['delta_m'][0]:+.2f} +- "
                     f"{s['delta_m'][1]:.2f} | {rank} |")
    return "\n".join(lines)


def markdown_step(st):
    load = st.get("load", [])
    lines = [
        f"Multi-task step time, case `{st['case']}` (K = {st['k']}, {st['backend']}): batch {st['batch']}, "
        f"{st['steps_per_epoch']} steps/epoch, median ms per step, wall clock / process CPU time of the same "
        f"steps, over {st['rounds']} interleaved one-epoch "
        f"rounds of keras, Fixed and a group of {st.get('group', 'all')} strategies; ratios = medians of "
        f"per-round ratios within a group; verdicts read the {st.get('clock', 'wall')} clock"
        + (f"; load average {' -> '.join(f'{v:.2f}' for v in load)}" if load else ""),
        "",
        "| variant | level | step (ms) | / Fixed | / keras | target | |",
        "|:---|:---|---:|---:|---:|:---|:---|",
    ]
    for r in st["rows"]:
        limit = ""
        if r["target"] is not None:
            limit = f"<= {r['target']:.2f}x " + ("Fixed" if r["level"] == "gradient" else "keras")
        verdict = {None: "", True: "met", False: "**missed**"}[r["met"]]
        wall, cpu = r["wall"], r["cpu"]
        lines.append(f"| {r['variant']} | {r['level']} | {wall['step_s'] * 1e3:.3f} / {cpu['step_s'] * 1e3:.3f} | "
                     f"{wall['over_fixed']:.3f}x / {cpu['over_fixed']:.3f}x | "
                     f"{wall['over_keras']:.3f}x / {cpu['over_keras']:.3f}x | {limit} | {verdict} |")
    return "\n".join(lines)


def markdown(results):
    parts = [markdown_quality(q) for q in results.get("quality", [])]
    parts += [markdown_step(s) for s in results.get("step", [])]
    return "\n\n".join(parts)


def run(quick=False, do_quality=True, do_step=True, cases=tuple(CASES), only=None, log=_print, clock="wall"):
    results = {"backend": backend(), "targets": {}, "strategies": list(strategies(only))}
    for case in cases:
        if do_quality:
            q = quality(case, quick=quick, only=only, log=log)
            results.setdefault("quality", []).append(q)
            results["targets"].update(q["targets"])
            log(markdown_quality(q) + "\n")  # progress: the table of a case as soon as it is done
        if do_step:
            s = step_time(case, quick=quick, only=only, clock=clock)
            results.setdefault("step", []).append(s)
            results["targets"].update(s["targets"])
            log(markdown_step(s) + "\n")
    return results


if __name__ == "__main__":
    import argparse
    import json
    import os

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-quality", action="store_true")
    parser.add_argument("--no-step", action="store_true")
    parser.add_argument("--case", choices=tuple(CASES), action="append", help="default: both")
    parser.add_argument("--only", help="comma-separated strategy names (default: all)")
    parser.add_argument("--out", help="also write the results as JSON here")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="the clock the targets' verdicts read (both wall and process CPU time are measured "
                             "and shown; a loaded machine: cpu)")
    parser.add_argument("--merge", nargs="+", metavar="JSON",
                        help="print the tables of quality runs (--out files) of different --only sets, united")
    args = parser.parse_args()
    if args.merge:
        parts = []
        for path in args.merge:
            with open(path) as f:
                parts.append(json.load(f))
        res = merge(parts)
        print(markdown(res))
        print("Targets:", res["targets"])
        if args.out:
            with open(args.out, "w") as f:
                json.dump(res, f, indent=1, default=float)
        raise SystemExit(0)
    t0 = time.perf_counter()
    res = run(quick=args.quick, do_quality=not args.no_quality, do_step=not args.no_step,
              cases=tuple(args.case or CASES), only=args.only.split(",") if args.only else None, clock=args.clock)
    res["seconds"] = time.perf_counter() - t0
    print(markdown(res))
    print("Targets:", res["targets"])
    print(f"({backend()}, {res['seconds']:.0f} s)")
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1, default=float)
