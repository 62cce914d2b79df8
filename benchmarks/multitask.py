"""Multi-task benchmark: loss-weighting strategies on digits with a 100x+ loss-scale gap.

Data: sklearn ``load_digits`` (bundled, no download), pixels / 16, a fixed
train/test split (1200 / 597, permutation seed 0), two tasks:

* ``digit``: 10-class classification, softmax cross-entropy; metric accuracy
  (higher is better);
* ``score``: ``100 * (ink in the top half of the image) / (total ink)``, a
  deterministic, nonlinear function of the pixels (values ~30 .. 70), mean
  squared error; metric MAE (lower is better). At initialisation its MSE is
  ~1000x the cross-entropy (printed as ``initial losses``).

Model: a shared MLP trunk 64 -> 64 -> 64 (relu) with one head per task (dict
outputs ``digit``: 10 logits, ``score``: 1). Within a seed, every strategy
and baseline starts from the same initial weights (built once, copied).

Strategies (``lw.Objective`` with ``SoftmaxCrossEntropy`` on ``digit`` and
``Loss(MeanSquaredError())`` on ``score``): equal weighting (``Weighting()``,
plain sum), ``Uncertainty`` (``digit`` as classification), ``DWA``,
``RLW``, ``GLS`` and ``FAMO``; single-task baselines train the same model on
one term alone. Adam (lr 1e-3), batch 64, ``EPOCHS`` epochs, 3 seeds.

Delta_m% (Maninis, Radosavovic & Kokkinos, "Attentive single-tasking of
multiple tasks", CVPR 2019; Vandenhende et al., "Multi-task learning for dense
prediction tasks: a survey", TPAMI 2021, Eq. 11)::

    Delta_m = (1/T) sum_t (-1)^{l_t} (M_{m,t} - M_{b,t}) / M_{b,t} * 100

with ``l_t = 1`` if *lower* is better for task ``t`` (Vandenhende et al.'s
convention; the same as writing ``l_t = 1`` for higher-is-better and
negating the sum) and ``M_b`` the single-task baseline of the same seed:
positive means better than the single-task models. Reported as mean +- std over the seeds.

Step time: per-step median through ``fit`` (the ``StepTimer`` of
``step_overhead.py``), all strategies and the plain Keras model compiled with
``loss={"digit": SparseCategoricalCrossentropy(from_logits=True), "score":
"mse"}, loss_weights={"digit": 1.0, "score": 1.0}`` interleaved (forward,
then reverse order) over several one-epoch rounds; ratios are medians of
per-round ratios. Target: loss-level strategies <= 1.05x Keras's own step.

    KERAS_BACKEND=jax .venv/bin/python benchmarks/multitask.py [--quick] [--no-quality]
    KERAS_BACKEND=jax .venv/bin/python benchmarks/run.py --only multitask
"""

import math
import time

import numpy as np
import keras

import lossweave as lw
from common import backend, interleaved_rounds, median
from step_overhead import StepTimer

SEEDS = (0, 1, 2)
EPOCHS = 30
BATCH = 64
N_TRAIN = 1200
HIDDEN = (64, 64)
STRATEGIES = ("equal", "uncertainty", "dwa", "rlw", "gls", "famo")
TASKS = ("digit", "score")
HIGHER_IS_BETTER = {"digit": True, "score": False}
STEP_TARGET = 1.05


def load_data():
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


def build_model(seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((64,), name="x")
    h = inputs
    for width in HIDDEN:
        h = keras.layers.Dense(width, activation="relu")(h)
    outputs = {"digit": keras.layers.Dense(10, name="digit")(h), "score": keras.layers.Dense(1, name="score")(h)}
    return keras.Model(inputs, outputs)


def clone(model):
    copy = build_model(0)
    copy.set_weights(model.get_weights())
    return copy


def terms(tasks=TASKS, validate=True):
    all_terms = {
        "digit": lw.terms.SoftmaxCrossEntropy(on="digit", target="digit", validate=validate),
        "score": lw.terms.Loss(keras.losses.MeanSquaredError(), on="score", target="score"),
    }
    return {t: all_terms[t] for t in tasks}


def weighting(name, seed, steps_per_epoch):
    if name == "equal":
        return lw.weighting.Weighting()
    if name == "uncertainty":
        return lw.weighting.Uncertainty({"digit": "classification"})
    if name == "dwa":
        return lw.weighting.DWA(steps_per_epoch=steps_per_epoch)
    if name == "rlw":
        return lw.weighting.RLW(seed=seed)
    if name == "gls":
        return lw.weighting.GLS()
    if name == "famo":
        return lw.weighting.FAMO()
    raise ValueError(name)


def evaluate(model, x, y):
    out = model.predict(x, batch_size=1024, verbose=0)
    pred = {k: np.asarray(keras.ops.convert_to_numpy(v)) for k, v in out.items()}
    return {
        "digit": float(np.mean(pred["digit"].argmax(-1) == y["digit"])),
        "score": float(np.mean(np.abs(pred["score"] - y["score"]))),
    }


def delta_m(metrics, base):
    """Vandenhende et al. Eq. 11: (-1)^{l_t} with l_t = 1 when LOWER is better; positive = better."""
    return float(np.mean([
        (-1.0 if not HIGHER_IS_BETTER[t] else 1.0) * (metrics[t] - base[t]) / base[t] * 100.0 for t in TASKS
    ]))


def initial_losses(model, x, y):
    out = model(x[:512], training=False)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y["digit"][:512], out["digit"])
    mse = keras.losses.MeanSquaredError()(y["score"][:512], out["score"])
    ce, mse = float(keras.ops.convert_to_numpy(ce)), float(keras.ops.convert_to_numpy(mse))
    return {"digit": ce, "score": mse, "ratio": mse / ce}


def train(model, tasks, strategy, seed, data, epochs):
    (x, y), _ = data
    steps = math.ceil(len(x) / BATCH)
    objective = lw.Objective(model, terms(tasks), weighting=weighting(strategy, seed, steps))
    objective.compile(optimizer=keras.optimizers.Adam(1e-3))
    keras.utils.set_random_seed(1000 + seed)  # same shuffling for every run of a seed
    history = objective.fit(x, {t: y[t] for t in tasks}, batch_size=BATCH, epochs=epochs, verbose=0)
    final_weights = {t: float(history.history[f"weight/{t}"][-1]) for t in tasks}
    return final_weights


def quality(quick=False, log=print):
    data = load_data()
    (_, _), (x_test, y_test) = data
    epochs = 4 if quick else EPOCHS
    seeds = SEEDS[:1] if quick else SEEDS
    results = {"epochs": epochs, "seeds": list(seeds), "batch": BATCH, "runs": {}, "initial_losses": []}
    for seed in seeds:
        init = build_model(seed)
        results["initial_losses"].append(initial_losses(init, *data[0]))
        log(f"seed {seed}: initial losses {results['initial_losses'][-1]}")
        base = {}
        for task in TASKS:
            model = clone(init)
            train(model, (task,), "equal", seed, data, epochs)
            base[task] = evaluate(model, x_test, y_test)[task]
        results["runs"].setdefault("single-task", []).append({"metrics": dict(base), "delta_m": 0.0})
        for strategy in STRATEGIES:
            t0 = time.perf_counter()
            model = clone(init)
            w = train(model, TASKS, strategy, seed, data, epochs)
            m = evaluate(model, x_test, y_test)
            results["runs"].setdefault(strategy, []).append(
                {"metrics": m, "delta_m": delta_m(m, base), "final_weights": w}
            )
            log(f"  seed {seed} {strategy:12s} acc {m['digit']:.4f} mae {m['score']:.3f} "
                f"dm {delta_m(m, base):+.2f}% weights {w} ({time.perf_counter() - t0:.1f} s)")
    summary = {}
    for name, runs in results["runs"].items():
        summary[name] = {
            "acc": (float(np.mean([r["metrics"]["digit"] for r in runs])), float(np.std([r["metrics"]["digit"] for r in runs]))),
            "mae": (float(np.mean([r["metrics"]["score"] for r in runs])), float(np.std([r["metrics"]["score"] for r in runs]))),
            "delta_m": (float(np.mean([r["delta_m"] for r in runs])), float(np.std([r["delta_m"] for r in runs]))),
        }
    results["summary"] = summary
    eq = summary["equal"]["delta_m"][0]
    results["targets"] = {
        "a learned strategy beats equal weighting on Delta_m%": bool(
            any(summary[s]["delta_m"][0] > eq for s in ("uncertainty", "dwa", "gls", "famo"))
        )
    }
    return results


# --------------------------------------------------------------- step time
def step_time(quick=False):
    (x, y), _ = load_data()
    steps = math.ceil(len(x) / BATCH)
    variants = ("keras",) + STRATEGIES + ("equal/nocheck",)
    init = build_model(0)
    runs = {}
    for v in variants:
        model = clone(init)
        if v == "keras":
            model.compile(
                optimizer=keras.optimizers.Adam(1e-3),
                loss={"digit": keras.losses.SparseCategoricalCrossentropy(from_logits=True), "score": "mse"},
                loss_weights={"digit": 1.0, "score": 1.0},
            )
            runs[v] = model
        else:
            objective = lw.Objective(model, terms(validate=not v.endswith("/nocheck")),
                                     weighting=weighting(v.split("/")[0], 0, steps))
            objective.compile(optimizer=keras.optimizers.Adam(1e-3))
            runs[v] = objective
    timer = StepTimer()

    def epoch(v):
        runs[v].fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0, callbacks=[timer])
        return timer.step_times()

    for v in variants:
        epoch(v)
    rounds = 3 if quick else 8
    times, per_round = interleaved_rounds(epoch, variants, rounds)
    rows = []
    for v in variants:
        ratio = float(median([a / b for a, b in zip(per_round[v], per_round["keras"])]))
        rows.append({"variant": v, "step_s": float(median(times[v])), "over_keras": ratio})
    return {
        "backend": backend(), "rounds": rounds, "steps_per_epoch": steps, "batch": BATCH, "rows": rows,
        "targets": {
            f"loss-level strategies <= {STEP_TARGET}x keras step ({backend()})": bool(
                all(r["over_keras"] <= STEP_TARGET for r in rows if r["variant"] in STRATEGIES)
            )
        },
    }


# ---------------------------------------------------------------- markdown
def markdown_quality(q):
    lines = [
        f"Multi-task quality ({backend()}): digits, test set 597, MLP 64-64-64 + 2 heads, Adam 1e-3, "
        f"batch {q['batch']}, {q['epochs']} epochs, seeds {q['seeds']}; mean +- std over seeds",
        "",
        "initial losses (seed: CE / MSE / ratio): "
        + "; ".join(f"{s}: {d['digit']:.2f} / {d['score']:.0f} / {d['ratio']:.0f}x"
                    for s, d in zip(q["seeds"], q["initial_losses"])),
        "",
        "| strategy | digit accuracy (up) | score MAE (down) | Delta_m% (up) |",
        "|:---|---:|---:|---:|",
    ]
    for name, s in q["summary"].items():
        lines.append(
            f"| {name} | {s['acc'][0]:.4f} +- {s['acc'][1]:.4f} | {s['mae'][0]:.3f} +- {s['mae'][1]:.3f} | "
            f"{s['delta_m'][0]:+.2f} +- {s['delta_m'][1]:.2f} |"
        )
    return "\n".join(lines)


def markdown_step(st):
    lines = [
        f"Multi-task step time ({st['backend']}): batch {st['batch']}, {st['steps_per_epoch']} steps/epoch, "
        f"median ms per step over {st['rounds']} interleaved one-epoch rounds; ratio = median of per-round ratios",
        "",
        "| variant | step (ms) | / keras compile(loss=dict, loss_weights=dict) |",
        "|:---|---:|---:|",
    ]
    for r in st["rows"]:
        lines.append(f"| {r['variant']} | {r['step_s'] * 1e3:.3f} | {r['over_keras']:.3f}x |")
    lines.append(f"\n- target: every strategy <= {STEP_TARGET}x keras; `equal/nocheck` is equal "
                 "weighting with the label check of SoftmaxCrossEntropy off (validate=False), for reference")
    return "\n".join(lines)


def markdown(results):
    parts = []
    if "quality" in results:
        parts.append(markdown_quality(results["quality"]))
    if "step" in results:
        parts.append(markdown_step(results["step"]))
    return "\n\n".join(parts)


def run(quick=False, do_quality=True, do_step=True, log=print):
    results = {"backend": backend(), "targets": {}}
    if do_quality:
        results["quality"] = quality(quick=quick, log=log)
        results["targets"].update(results["quality"]["targets"])
    if do_step:
        results["step"] = step_time(quick=quick)
        results["targets"].update(results["step"]["targets"])
    return results


if __name__ == "__main__":
    import sys

    from common import configure_threads

    configure_threads(1)
    t0 = time.perf_counter()
    res = run(quick="--quick" in sys.argv, do_quality="--no-quality" not in sys.argv,
              do_step="--no-step" not in sys.argv)
    print(markdown(res))
    print("Targets:", res["targets"])
    print(f"({backend()}, {time.perf_counter() - t0:.0f} s)")
