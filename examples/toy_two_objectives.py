"""The two-objective toy of the CAGrad paper: every weighting strategy's trajectories, one panel each.

The problem (Liu, Liu, Jin, Stone & Liu, "Conflict-Averse Gradient Descent
for Multi-task Learning", NeurIPS 2021, Fig. 1; the authors' ``toy.py``),
on a point ``x = (x1, x2)``, with ``LOWER = 5e-6``::

    c1 = max(tanh(0.5 x2), 0),  c2 = max(tanh(-0.5 x2), 0)
    f1 = c1 [log(max(|0.5 (-x1 - 7) - tanh(-x2)|, LOWER)) + 6]
       + c2 [((-x1 + 7)^2 + 0.1 (-x2 - 8)^2) / 10 - 20]
    f2 = c1 [log(max(|0.5 (-x1 + 3) + tanh(-x2) + 2|, LOWER)) + 6]
       + c2 [((-x1 - 7)^2 + 0.1 (-x2 - 8)^2) / 10 - 20]

Its Pareto front is drawn, as the papers draw it, as the segment
``x2 = -8.3552, x1 in [-7, 7]``; the mean loss is lowest on it at
``(0, -8.3552)`` (the star). Above ``x2 = 0`` two narrow log valleys trap
gradient descent on the mean loss (the "conflicting, dominated gradient" case
of the paper).

What it runs: every gradient-level strategy of ``lossweave.weighting``, linear
scalarisation (``Fixed``, loss level) and FAMO (those not in this version of
the library are listed and skipped), each through the library's real train
step, ``Objective.fit``: a ``keras.Model`` whose one layer holds ``x`` (initialised at the start) and
outputs ``f1`` and ``f2``, two terms, ``keras.optimizers.Adam(1e-3)``, on a
dummy one-row dataset (one step = one Adam step). Stateful strategies (the
Nash-MTL weights kept between updates, GradVac's EMA, MoCo's tracked
gradients, FAMO's logits) run exactly as they do on a real model. Every start
begins from the same fresh state (the Objective's variables, the strategy's
state and Adam's moments restored) without recompiling.

* the horizon: 100,000 steps (the CAGrad authors' ``toy.py``) from the starts
  ``(-8.5, 7.5), (-8.5, -5), (9, 9)``; ``--scaled``: Nash-MTL's variant (Navon
  et al., "Multi-Task Learning as a Bargaining Game", ICML 2022, Fig. 1 and
  Appendix B, their ``experiments/toy``; also FAMO's), ``f1 x 0.1``, 35,000
  steps from ``(-8.5, 7.5), (0, 0), (9, 9), (-7.5, -0.5), (9, -1)``;
* the terms hand the strategies ``f_k - lower_k`` with ``lower = -21 s_k``
  (``s_k`` the variant's scale of ``f_k``): the FAMO authors' toy sets these
  lower bounds (``set_min_losses([-21 * scale, -21])``). The shift changes no
  gradient, so strategies that use only the gradients see the paper's
  problem; those that read the losses (FAMO's ``log``, DB-MTL's ``log``,
  GradNorm's loss ratios) get the positive losses they are defined on;
* strategy settings: the papers' defaults, except CAGrad ``c = 0.5`` (its toy),
  FAMO ``gamma = 0`` (its toy's ``run.sh``: "a very small gamma as the
  objective is not changing"), PCGrad, GradVac and GradDrop seeded; GradDrop in
  representation mode (its paper's form) on the position output: here the
  representation is ``x`` itself, so it drops gradient signs of ``x``;
* "reached the front": within ``TOLERANCE = 0.1`` of it (``|x2 + 8.3552| <=
  0.1`` and ``|x1| <= 7.1``). The exact Pareto set, where ``w grad f1 +
  (1 - w) grad f2 = 0`` on the quadratic branch, is not flat: it bends from
  ``x2 = -8.3551`` at ``x1 = 0`` down to ``x2 = -8.4345`` at ``x1 = +-7``
  (MGDA stops at ``x2 = -8.434`` there); 0.1 holds all of it and Adam's
  jitter, while a run still in a valley is at ``x2 > 0``;
* the output: a table (method, start, end point, front reached, ``x2 -
  x2*(x1)``: how far above the exact Pareto set the end point is, final
  ``f1``, ``f2``, seconds), ``--out`` the figure (contours of the mean loss, the
  front, the trajectories coloured from red (start) to yellow (end), one
  panel per method) and ``--json`` the numbers and trajectories.

Run it with any backend (one step is ~0.1 ms on JAX, ~0.5 ms on TensorFlow,
~10 ms on PyTorch on a small CPU: the full horizon is for JAX)::

    KERAS_BACKEND=jax python examples/toy_two_objectives.py --out docs/images/toy_two_objectives.png
    KERAS_BACKEND=jax python examples/toy_two_objectives.py --scaled --out toy_scaled.png
    KERAS_BACKEND=jax python examples/toy_two_objectives.py --methods MGDA,CAGrad --steps 20000
    KERAS_BACKEND=tensorflow python examples/toy_two_objectives.py --fast
"""

import argparse
import json
import math
import sys
import time
import typing

import keras
import numpy as np
from keras import ops

import lossweave as lw

LOWER = 5e-6
FRONT_X2, FRONT_X1 = -8.3552, 7.0  # the papers' front: x2 = -8.3552, x1 in [-7, 7]
TOLERANCE = 0.1  # see the module docstring: the exact Pareto set lies within 0.08 of the line
LOSS_FLOOR = -21.0  # the FAMO authors' lower bound of both objectives (f >= -20)
LEARNING_RATE = 1e-3
STARTS = ((-8.5, 7.5), (-8.5, -5.0), (9.0, 9.0))
SCALED_STARTS = ((-8.5, 7.5), (0.0, 0.0), (9.0, 9.0), (-7.5, -0.5), (9.0, -1.0))
STEPS, SCALED_STEPS, FAST_STEPS = 100_000, 35_000, 10_000
RECORD_EVERY, FAST_RECORD_EVERY = 500, 250  # trajectory points; also steps_per_execution
FAST_METHODS = ("Mean", "MGDA", "CAGrad")


class Method(typing.NamedTuple):
    """One panel: a ``lossweave.weighting`` class by name, the toy's settings, representation mode."""

    label: str
    class_name: str
    kwargs: dict = {}
    representation: bool = False


METHODS = (
    Method("LS (Fixed)", "Fixed"),  # loss level: linear scalarisation, f1 + f2
    Method("Mean", "Mean"),
    Method("MGDA", "MGDA"),
    Method("PCGrad", "PCGrad", {"seed": 0}),
    Method("CAGrad", "CAGrad", {"c": 0.5}),
    Method("Nash-MTL", "NashMTL"),
    Method("UPGrad", "UPGrad"),
    Method("DualProj", "DualProj"),
    Method("IMTL-G", "IMTLG"),
    Method("Aligned-MTL", "AlignedMTL"),
    Method("ConFIG", "ConFIG"),
    Method("GradVac", "GradVac", {"seed": 0}),
    Method("GradDrop", "GradDrop", {"seed": 0}, representation=True),
    Method("MoCo", "MoCo"),
    Method("DB-MTL", "DBMTL"),
    Method("GradNorm", "GradNorm"),
    Method("FAMO", "FAMO", {"gamma": 0.0}),  # loss level
)


def toy_objectives(x1, x2, scale=1.0):
    """``(f1, f2)`` of the CAGrad toy in ``keras.ops`` (float32); ``scale`` multiplies ``f1``."""
    x1, x2 = ops.cast(x1, "float32"), ops.cast(x2, "float32")
    c1 = ops.maximum(ops.tanh(0.5 * x2), 0.0)
    c2 = ops.maximum(ops.tanh(-0.5 * x2), 0.0)
    valley = 0.1 * ops.square(-x2 - 8.0)
    f1 = c1 * (ops.log(ops.maximum(ops.abs(0.5 * (-x1 - 7.0) - ops.tanh(-x2)), LOWER)) + 6.0) + c2 * (
        (ops.square(-x1 + 7.0) + valley) / 10.0 - 20.0
    )
    f2 = c1 * (ops.log(ops.maximum(ops.abs(0.5 * (-x1 + 3.0) + ops.tanh(-x2) + 2.0), LOWER)) + 6.0) + c2 * (
        (ops.square(-x1 - 7.0) + valley) / 10.0 - 20.0
    )
    return scale * f1, f2


class Position(keras.layers.Layer):
    """The point ``x`` as the one trainable variable, repeated for each (dummy) input row."""

    def __init__(self, start=(0.0, 0.0), **kwargs):
        super().__init__(**kwargs)
        self.start = tuple(float(v) for v in start)

    def build(self, input_shape):
        self.x = self.add_weight(name="x", shape=(2,), initializer=keras.initializers.Constant(self.start))

    def call(self, inputs):
        return ops.zeros_like(inputs[:, :1]) + self.x[None, :]


class ToyObjectives(keras.layers.Layer):
    """``{"f1", "f2"}`` of the positions, each ``(batch, 1)``; no variables."""

    def __init__(self, scale=1.0, **kwargs):
        super().__init__(**kwargs)
        self.scale = float(scale)

    def call(self, position):
        f1, f2 = toy_objectives(position[:, 0], position[:, 1], self.scale)
        return {"f1": f1[:, None], "f2": f2[:, None]}


class ShiftedValue(lw.terms.Term):
    """The model output itself as the loss, minus a lower bound: ``mean(f) - lower > 0``."""

    def __init__(self, lower=0.0, **kwargs):
        super().__init__(**kwargs)
        self.lower = float(lower)

    def compute_loss(self, outputs, targets, sample_weight, training):
        return ops.mean(ops.cast(outputs, "float32")) - self.lower


def make_weighting(method):
    """The strategy, or None when this version of ``lossweave.weighting`` has no such class."""
    cls = getattr(lw.weighting, method.class_name, None)
    return None if cls is None else cls(**method.kwargs)


def build_objective(method, weighting, scale):
    inputs = keras.Input((1,), name="dummy")
    position = Position(name="position")(inputs)
    model = keras.Model(inputs, {"position": position, **ToyObjectives(scale, name="toy")(position)})
    terms = {
        "f1": ShiftedValue(lower=LOSS_FLOOR * scale, on="f1", target="none"),
        "f2": ShiftedValue(lower=LOSS_FLOOR, on="f2", target="none"),
    }
    return lw.Objective(
        model, terms, weighting=weighting, representation="position" if method.representation else None
    )


class Trajectory(keras.callbacks.Callback):
    """Reads ``x`` at the end of every epoch (``record_every`` steps; JAX has synced its state there)."""

    def __init__(self, variable):
        super().__init__()
        self.variable, self.points = variable, []

    def on_epoch_end(self, epoch, logs=None):
        self.points.append(ops.convert_to_numpy(self.variable).astype("float64"))


def on_front(point):
    x1, x2 = point
    return bool(abs(x2 - FRONT_X2) <= TOLERANCE and abs(x1) <= FRONT_X1 + TOLERANCE)


def pareto_x2(x1):
    """The exact Pareto set ``x2*(x1)`` for ``|x1| <= 7`` (NumPy, float64; for the report only).

    Below ``x2 = 0`` only the quadratic branches remain (``c1 = 0``):
    ``f_k = c2(x2) q_k``. ``w grad f1 + (1 - w) grad f2 = 0`` in ``x1``
    gives ``w = (x1 + 7) / 14``; in ``x2`` it is ``h(x2) = c2'(x2) (w q1 +
    (1 - w) q2) + c2(x2) 0.02 (x2 + 8) = 0``, with one root in
    ``[-9.5, -8]`` (``h(-8) > 0 > h(-9.5)``), found by bisection. Scaling
    ``f1`` only rescales ``w``: both variants have this set.
    """
    x1 = np.asarray(x1, "float64")
    w = (x1 + 7.0) / 14.0

    def h(x2):
        c2, dc2 = np.tanh(-0.5 * x2), -0.5 / np.cosh(0.5 * x2) ** 2
        q1 = ((x1 - 7.0) ** 2 + 0.1 * (x2 + 8.0) ** 2) / 10.0 - 20.0
        q2 = ((x1 + 7.0) ** 2 + 0.1 * (x2 + 8.0) ** 2) / 10.0 - 20.0
        return dc2 * (w * q1 + (1.0 - w) * q2) + c2 * 0.02 * (x2 + 8.0)

    low, high = np.full_like(x1, -9.5), np.full_like(x1, -8.0)
    for _ in range(60):
        middle = 0.5 * (low + high)
        above = h(middle) > 0  # h > 0 above the root
        high, low = np.where(above, middle, high), np.where(above, low, middle)
    return 0.5 * (low + high)


def pareto_gap(point):
    """``x2 - x2*(x1)``: how far above (> 0) or below the exact Pareto set a point is; None off its x1 range."""
    x1, x2 = point
    return None if abs(x1) > FRONT_X1 else float(x2 - pareto_x2(x1))


def run_method(method, starts, steps, record_every, scale):
    """One strategy from every start: a list of run dicts, or a str saying why it was skipped."""
    weighting = make_weighting(method)
    if weighting is None:
        return f"skipped: lossweave.weighting.{method.class_name} is not in this version"
    objective = build_objective(method, weighting, scale)
    # An epoch is `record_every` steps, one compiled call on JAX and TensorFlow (a Python
    # loop of jitted steps on JAX, a graph loop on TensorFlow); PyTorch's trainer runs one.
    objective.compile(
        optimizer=keras.optimizers.Adam(LEARNING_RATE),
        steps_per_execution=1 if keras.backend.backend() == "torch" else record_every,
    )
    objective.build((None, 1))
    objective.optimizer.build(objective.trainable_variables)
    state = objective.variables + objective.optimizer.variables
    fresh = [ops.convert_to_numpy(v) for v in state]
    x_var = objective.model.get_layer("position").x
    dummy = np.zeros((record_every, 1), "float32")
    runs = []
    for start in starts:
        for variable, value in zip(state, fresh):
            variable.assign(value)
        x_var.assign(np.asarray(start, "float32"))
        trajectory = Trajectory(x_var)
        began = time.perf_counter()
        objective.fit(dummy, {"none": dummy}, batch_size=1, epochs=steps // record_every, shuffle=False,
                      verbose=0, callbacks=[trajectory])
        seconds = time.perf_counter() - began
        points = np.concatenate([np.asarray([start], "float64"), np.stack(trajectory.points)])
        end = points[-1]
        f1, f2 = (float(ops.convert_to_numpy(f)) for f in toy_objectives(end[0], end[1], scale))
        runs.append({
            "method": method.label, "start": list(start), "end": end.tolist(), "reached": on_front(end),
            "pareto_gap": pareto_gap(end),
            "f1": f1, "f2": f2, "seconds": seconds, "finite": bool(np.all(np.isfinite(points))),
            "trajectory": points.tolist(),
        })
    return runs


def mean_loss_grid(scale, limit=10.5, n=220):
    """The mean loss ``(f1 + f2) / 2`` on an ``n x n`` grid over ``[-limit, limit]^2`` (keras.ops)."""
    axis = np.linspace(-limit, limit, n).astype("float32")
    x1, x2 = np.meshgrid(axis, axis)
    f1, f2 = toy_objectives(x1, x2, scale)
    return x1, x2, ops.convert_to_numpy(0.5 * (f1 + f2))


def best_on_front(scale):
    """The point of the front segment with the lowest mean loss (``(0, -8.3552)`` unscaled)."""
    x1 = np.linspace(-FRONT_X1, FRONT_X1, 1401).astype("float32")
    f1, f2 = toy_objectives(x1, np.full_like(x1, FRONT_X2), scale)
    return float(x1[int(np.argmin(ops.convert_to_numpy(f1 + f2)))]), FRONT_X2


def draw(results, scale, path, title):
    from matplotlib import cm
    from matplotlib.figure import Figure

    panels = [(label, runs) for label, runs in results.items() if isinstance(runs, list)]
    columns = min(4, len(panels))
    rows = math.ceil(len(panels) / columns)
    figure = Figure(figsize=(3.3 * columns, 3.3 * rows + 0.5), layout="constrained")
    grid_x1, grid_x2, mean = mean_loss_grid(scale)
    star = best_on_front(scale)
    for index, (label, runs) in enumerate(panels):
        ax = figure.add_subplot(rows, columns, index + 1)
        ax.contour(grid_x1, grid_x2, mean, levels=14, cmap="viridis", linewidths=0.8)
        ax.plot([-FRONT_X1, FRONT_X1], [FRONT_X2, FRONT_X2], color="0.55", linewidth=5, zorder=1)
        ax.plot(*star, marker="*", markersize=11, color="k", zorder=6)
        for run in runs:
            points = np.asarray(run["trajectory"])
            points = points[np.all(np.isfinite(points), axis=1)]
            colours = cm.autumn(np.linspace(0.0, 1.0, len(points)))
            ax.scatter(points[:, 0], points[:, 1], color=colours, s=4, zorder=4)
            ax.plot(*run["start"], marker="o", markersize=6, color="k", zorder=5)
            ax.plot(*points[-1], marker="o" if run["reached"] else "X", markersize=7,
                    markerfacecolor="w", markeredgecolor="k", zorder=7)
        reached = [run for run in runs if run["reached"]]
        gap = f", gap <= {max(abs(run['pareto_gap']) for run in reached):.2f}" if reached else ""
        ax.set_title(f"{label}: {len(reached)}/{len(runs)} on the front{gap}", fontsize=9)
        ax.set_xlim(-10.5, 10.5)
        ax.set_ylim(-10.5, 10.5)
        ax.set_aspect("equal")
        ax.tick_params(labelsize=7)
    figure.suptitle(f"{title}\ncontours: mean loss; grey: the Pareto front, star: its lowest mean loss; "
                    f"black dot: start; end: o on the front, X off it", fontsize=10)
    figure.savefig(path, dpi=90)


def print_table(results, tolerance):
    print(f"| method | start | end (x1, x2) | on the front (tol {tolerance}) | x2 - Pareto x2 | f1 | f2 | seconds |")
    print("|:---|:---|:---|:---|---:|---:|---:|---:|")
    for label, runs in results.items():
        if isinstance(runs, str):
            print(f"| {label} | - | {runs} | - | - | - | - | - |")
            continue
        for run in runs:
            start = f"({run['start'][0]:g}, {run['start'][1]:g})"
            end = f"({run['end'][0]:.3f}, {run['end'][1]:.3f})"
            gap = "-" if run["pareto_gap"] is None else f"{run['pareto_gap']:+.3f}"
            print(f"| {label} | {start} | {end} | {'yes' if run['reached'] else 'no'} | {gap} | "
                  f"{run['f1']:.3f} | {run['f2']:.3f} | {run['seconds']:.1f} |")


def select_methods(names, fast):
    if names is None:
        return METHODS if not fast else tuple(m for m in METHODS if m.class_name in FAST_METHODS)
    wanted = [n.strip().lower() for n in names.split(",") if n.strip()]
    known = {key: m for m in METHODS for key in (m.label.lower(), m.class_name.lower())}
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise SystemExit(f"--methods: unknown {unknown}; choose from {[m.class_name for m in METHODS]}.")
    chosen = [known[n] for n in wanted]
    return tuple(m for i, m in enumerate(chosen) if m not in chosen[:i])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fast", action="store_true",
                        help=f"{FAST_STEPS} steps, methods {', '.join(FAST_METHODS)} (for tests)")
    parser.add_argument("--scaled", action="store_true", help="Nash-MTL's variant: f1 x 0.1, five starts")
    parser.add_argument("--methods", default=None, help="comma-separated class names or labels (default: all)")
    parser.add_argument("--steps", type=int, default=None,
                        help=f"Adam steps per run (default {STEPS}; --scaled {SCALED_STEPS}; --fast {FAST_STEPS})")
    parser.add_argument("--record-every", type=int, default=None, help="steps between trajectory points")
    parser.add_argument("--out", default=None, help="where to save the figure (PNG)")
    parser.add_argument("--json", default=None, help="where to save the table and trajectories (JSON)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(args.seed)
    scale = 0.1 if args.scaled else 1.0
    starts = SCALED_STARTS if args.scaled else STARTS
    steps = args.steps or (FAST_STEPS if args.fast else SCALED_STEPS if args.scaled else STEPS)
    record_every = args.record_every or (FAST_RECORD_EVERY if args.fast else RECORD_EVERY)
    if steps % record_every:
        parser.error(f"--steps ({steps}) must be a multiple of --record-every ({record_every}).")
    methods = select_methods(args.methods, args.fast)
    variant = "f1 x 0.1 (Nash-MTL)" if args.scaled else "CAGrad"
    print(f"backend={keras.backend.backend()} toy={variant} steps={steps} Adam lr={LEARNING_RATE} "
          f"methods={[m.label for m in methods]}")

    results, failed = {}, []
    for method in methods:
        try:
            results[method.label] = run_method(method, starts, steps, record_every, scale)
        except Exception as error:  # one strategy failing must not hide the others' results
            results[method.label] = f"failed: {type(error).__name__}: {str(error)[:300]}"
            failed.append(method.label)
        runs = results[method.label]
        progress = runs if isinstance(runs, str) else (
            f"{sum(r['reached'] for r in runs)}/{len(runs)} on the front, {sum(r['seconds'] for r in runs):.0f} s")
        print(f"{method.label}: {progress}", flush=True)
    print_table(results, TOLERANCE)

    if args.out:
        title = f"{variant} toy, {steps:,} Adam steps (lr {LEARNING_RATE:g}), {keras.backend.backend()}"
        draw(results, scale, args.out, title)
        print(f"figure: {args.out}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"backend": keras.backend.backend(), "scaled": args.scaled, "steps": steps,
                       "record_every": record_every, "tolerance": TOLERANCE, "results": results}, handle)
    failed += [label for label, runs in results.items()
               if isinstance(runs, list) and not all(run["finite"] for run in runs)]
    for label in failed:
        print(f"FAILED: {label}: {results[label] if isinstance(results[label], str) else 'not finite'}",
              file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
