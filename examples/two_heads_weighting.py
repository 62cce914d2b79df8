"""Two heads of different shapes, ``alpha * L1 + (1 - alpha) * L2``: scheduled, trained, uncertainty.

What it shows, on scikit-learn's bundled digits (no download):

* one shared trunk with two heads of different shapes: ``value``, a
  ``Dense(1)`` regression of the digit scaled to ``[0, 1]`` (mean squared
  error), and ``parity``, ``Dense(2)`` logits for even/odd (softmax
  cross-entropy);
* three ways to weigh them, each trained with plain ``fit`` and then used for
  prediction through ``objective.model.predict`` (no labels):

  - ``scheduled``: ``lw.weighting.Convex("value", "parity", alpha=schedule)``
    with a ``lw.schedules.Cosine`` alpha, evaluated inside the compiled step
    (the ``weight/value`` history follows the curve on every backend);
  - ``trained``: ``Convex(..., alpha=0.5, learn_alpha=True)``, alpha a variable
    trained with the model and clipped to ``[0, 1]``. Since
    ``d total / d alpha = L_value - L_parity`` does not depend on alpha, it
    collapses to 1 or 0: all the weight goes to whichever loss is smaller
    and the other task is dropped; the ``weight/value`` trajectory shows it;
  - ``uncertainty``: ``lw.weighting.Uncertainty({"parity": "classification"})``
    (Kendall et al., CVPR 2018): learned log-variances whose ``0.5 * s``
    regulariser keeps every weight positive and finite: no collapse.

Run it with any backend::

    KERAS_BACKEND=jax python examples/two_heads_weighting.py
    KERAS_BACKEND=torch python examples/two_heads_weighting.py --weighting trained
    KERAS_BACKEND=tensorflow python examples/two_heads_weighting.py --fast
"""

import argparse
import sys

import keras
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import lossweave as lw

VARIANTS = ("scheduled", "trained", "uncertainty")
BATCH_SIZE = 32


def load_data(fast, seed):
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, stratify=y, random_state=seed)
    if fast:
        x_train, y_train = x_train[:960], y_train[:960]

    def targets(digits):  # two targets of different shapes
        return {"value": (digits / 9.0).astype("float32")[:, None], "parity": (digits % 2).astype("int32")}

    return x_train, targets(y_train), x_test, targets(y_test)


def build_model():
    inputs = keras.Input((64,), name="pixels")
    trunk = keras.layers.Dense(64, activation="relu")(inputs)
    trunk = keras.layers.Dense(32, activation="relu")(trunk)
    value = keras.layers.Dense(1, name="value")(trunk)  # regression head, (batch, 1)
    parity = keras.layers.Dense(2, name="parity")(trunk)  # 2-class logits, (batch, 2)
    return keras.Model(inputs, {"value": value, "parity": parity}, name="two_heads")


def make_weighting(variant, total_steps):
    if variant == "scheduled":  # alpha from 0.9 (mostly the regression) down to 0.1
        return lw.weighting.Convex("value", "parity", alpha=lw.schedules.Cosine(0.9, 0.1, steps=total_steps))
    if variant == "trained":
        return lw.weighting.Convex("value", "parity", alpha=0.5, learn_alpha=True)
    return lw.weighting.Uncertainty({"parity": "classification"})  # "value" is a regression term


def trajectory(values):
    return "[" + ", ".join(f"{v:.3f}" for v in values) + "]"


def run(variant, data, epochs, fast, verbose):
    x_train, y_train, x_test, y_test = data
    steps_per_epoch = -(-len(x_train) // BATCH_SIZE)
    objective = lw.Objective(
        build_model(),
        {
            "value": lw.terms.Loss(keras.losses.MeanSquaredError(), on="value", target="value"),
            "parity": lw.terms.SoftmaxCrossEntropy(on="parity", target="parity"),
        },
        weighting=make_weighting(variant, epochs * steps_per_epoch),
    )
    objective.compile(
        optimizer=keras.optimizers.Adam(1e-2 if fast else 3e-3),
        metrics={"parity": ["accuracy"], "value": [keras.metrics.MeanAbsoluteError(name="mae")]},
    )
    history = objective.fit(x_train, y_train, epochs=epochs, batch_size=BATCH_SIZE, verbose=verbose).history
    w_value, w_parity = history["weight/value"], history["weight/parity"]
    print(f"[{variant}] epochs={epochs} last epoch: loss={history['loss'][-1]:.4f} "
          f"loss/value={history['loss/value'][-1]:.4f} loss/parity={history['loss/parity'][-1]:.4f}")
    print(f"[{variant}] weight/value per epoch (epoch mean): {trajectory(w_value)}")
    print(f"[{variant}] weight/parity per epoch (epoch mean): {trajectory(w_parity)}")

    outputs = objective.model.predict(x_test, batch_size=256, verbose=0)  # plain model, no labels
    mae = float(np.mean(np.abs(outputs["value"] - y_test["value"])))
    accuracy = float(np.mean(np.argmax(outputs["parity"], axis=-1) == y_test["parity"]))
    baseline_mae = float(np.mean(np.abs(y_test["value"] - y_test["value"].mean())))
    print(f"[{variant}] test (predict): value MAE {mae:.3f} (predicting the mean: {baseline_mae:.3f}), "
          f"parity accuracy {accuracy:.3f} (chance 0.500)")

    failures = []
    if not all(np.isfinite(history["loss"])):
        failures.append(f"[{variant}] the loss is not finite")
    if variant == "scheduled":
        if not w_value[0] > w_value[-1] + 0.3:
            failures.append(f"[{variant}] alpha did not follow the schedule: {trajectory(w_value)}")
        if not (accuracy > 0.7 and mae < baseline_mae):
            failures.append(f"[{variant}] a head did not learn")
    elif variant == "trained":
        alpha = float(keras.ops.convert_to_numpy(objective.weighting.alpha_variable))
        smaller = "value" if history["loss/value"][-1] < history["loss/parity"][-1] else "parity"
        collapsed = alpha in (0.0, 1.0)
        favoured = "value" if alpha == 1.0 else "parity" if alpha == 0.0 else None
        print(f"[{variant}] final alpha = {alpha:.3f}; collapsed: {collapsed} "
              f"(all the weight on '{favoured}', the smaller loss: '{smaller}'; "
              f"the other task is no longer trained)")
        if not collapsed:
            failures.append(f"[{variant}] alpha did not collapse to 0 or 1: {alpha}")
    else:
        weights = np.array([w_value[-1], w_parity[-1]])
        log_vars = {k: float(keras.ops.convert_to_numpy(v)) for k, v in objective.weighting.log_variances.items()}
        no_collapse = bool(np.all(np.isfinite(weights)) and np.all(weights > 0.05))
        print(f"[{variant}] log variances {', '.join(f'{k}={v:.3f}' for k, v in log_vars.items())}; "
              f"final weights value={weights[0]:.3f} parity={weights[1]:.3f}; "
              f"no collapse (both weights > 0.05): {no_collapse}")
        if not no_collapse:
            failures.append(f"[{variant}] a weight collapsed: {weights}")
        if not (accuracy > 0.7 and mae < baseline_mae):
            failures.append(f"[{variant}] a head did not learn")
    return failures


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fast", action="store_true", help="few epochs on a subset (for tests)")
    parser.add_argument("--weighting", choices=VARIANTS + ("all",), default="all")
    parser.add_argument("--epochs", type=int, default=None, help="default: 20 (4 with --fast)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    epochs = args.epochs or (4 if args.fast else 20)
    variants = VARIANTS if args.weighting == "all" else (args.weighting,)

    print(f"backend={keras.backend.backend()} weighting={args.weighting}")
    data = load_data(args.fast, args.seed)
    failures = []
    for variant in variants:
        keras.utils.set_random_seed(args.seed)  # the same initial model for every variant
        failures += run(variant, data, epochs, args.fast, verbose=0 if args.fast else 2)
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
