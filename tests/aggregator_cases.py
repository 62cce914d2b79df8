"""Shared pieces of the gradient-aggregator tests (tests/test_aggregators*.py).

The float64 Gramian and MGDA's brute-force min-norm reference, the random
Jacobians every file draws, and the small multi-head model the fit tests
train. Not a test module (no ``test_`` prefix): the files import it.
"""

import itertools

import keras
import numpy as np

import lossweave as lw
from conftest import to_numpy


def gram(j):
    """G = J J^T in float64."""
    j = np.asarray(j, "float64")
    return j @ j.T


def np_min_norm(g):
    """MGDA, Sener & Koltun 2018, Eq. 3: min_w w^T G w over the simplex, by brute force over the supports.

    On the optimal support S the KKT conditions are G_SS w_S = lambda 1,
    sum w_S = 1; every feasible stationary point is a feasible point, so the
    smallest objective among them is the minimum. Returns (minimum, weights).
    """
    k = len(g)
    best, best_w = np.inf, None
    for size in range(1, k + 1):
        for support in itertools.combinations(range(k), size):
            s = list(support)
            a = np.zeros((size + 1, size + 1))
            a[:size, :size] = g[np.ix_(s, s)]
            a[:size, size] = a[size, :size] = 1.0
            rhs = np.zeros(size + 1)
            rhs[size] = 1.0
            x = np.linalg.lstsq(a, rhs, rcond=None)[0]
            if np.abs(a @ x - rhs).max() > 1e-9 or x[:size].min() < -1e-12:
                continue
            w = np.zeros(k)
            w[s] = x[:size]
            if w @ g @ w < best:
                best, best_w = w @ g @ w, w
    return best, best_w


def jacobian(case, k, params=8, *, rng, spread=0.3, low=0.3):
    """A (K, params) float32 Jacobian of the named kind, drawn from ``rng``.

    "aligned": a common direction plus ``spread`` noise (every pair has a
    positive inner product); any other case starts from rows scaled by
    U(low, 2) with g_2 = -0.7 g_1 + noise (at least one conflict), then
    "zero" / "one_zero" sets row K // 2 to 0, "duplicated" copies g_1 into
    the last row, "opposed" makes it -2 g_1 (exact in float32), "dependent"
    g_1 + g_2 (for K = 2: g_1 + g_1), "scaled" spreads the row norms over
    three orders of magnitude. Each file keeps its own rank-deficient kind.
    """
    if case == "aligned":
        j = rng.normal(size=(1, params)) + spread * rng.normal(size=(k, params))
    else:
        j = rng.normal(size=(k, params)) * rng.uniform(low, 2.0, size=(k, 1))
        j[1] = -0.7 * j[0] + 0.5 * rng.normal(size=params)
    if case in ("zero", "one_zero"):
        j[k // 2] = 0.0
    elif case == "duplicated":
        j[-1] = j[0]
    elif case == "opposed":
        j[-1] = -2.0 * j[0]
    elif case == "dependent":
        j[-1] = j[0] + j[1 % (k - 1)]
    elif case == "scaled":
        j = j * np.exp(rng.uniform(-3.5, 3.5, size=(k, 1)))
    return j.astype("float32")


def case_rng(case, k, seed, cases):
    """The generator of one (case, K, seed): the same draws whatever ran before."""
    return np.random.default_rng([seed, k, cases.index(case)])


# --- the multi-head model of the fit tests ------------------------------------------


def head_objective(weighting, heads=3, *, features=6, classes=4, hidden=("trunk",), width=8,
                   representation=False, seed=2, optimizer=None):
    """A small multi-task Objective: a tanh trunk (layers named ``hidden``), one softmax head per task.

    With ``representation`` the trunk's output is the model output "features"
    and the weighting aggregates at it (``Objective(representation="features")``).
    """
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((features,))
    z = inputs
    for name in hidden:
        z = keras.layers.Dense(width, activation="tanh", name=name)(z)
    outputs = {}
    if representation:
        z = keras.layers.Identity(name="features")(z)
        outputs["features"] = z
    outputs.update({f"logits_{t}": keras.layers.Dense(classes, name=f"head_{t}")(z) for t in range(heads)})
    terms = {f"task_{t}": lw.terms.SoftmaxCrossEntropy(on=f"logits_{t}", target=f"label_{t}") for t in range(heads)}
    objective = lw.Objective(keras.Model(inputs, outputs), terms, weighting=weighting,
                             representation="features" if representation else None)
    objective.compile(optimizer=optimizer or keras.optimizers.SGD(0.1))
    return objective


def head_data(heads, rows, *, features=6, classes=4, seed=0):
    """Inputs and one integer label per head."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, features)).astype("float32")
    return x, {f"label_{t}": rng.integers(0, classes, rows) for t in range(heads)}


def np_head_gradients(objective, x, y, heads):
    """dL_k/dz of each softmax head at z = features, in closed form: (softmax - onehot) W^T / N."""
    z = to_numpy(objective.model(x)["features"]).astype("float64")
    rows = []
    for k in range(heads):
        kernel, bias = (to_numpy(v).astype("float64") for v in objective.model.get_layer(f"head_{k}").weights)
        logits = z @ kernel + bias
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        p[np.arange(len(z)), y[f"label_{k}"]] -= 1.0
        rows.append((p @ kernel.T / len(z)).reshape(-1))
    return np.stack(rows)


def fit_and_logged_weights(objective, heads=3, rows=32, batch_size=16):
    """One epoch on random data; checks the trunk moved and every weight is finite; the last logged weights."""
    x, y = head_data(heads, rows)
    trunk = objective.model.get_layer("trunk").kernel
    before = to_numpy(trunk).copy()
    history = objective.fit(x, y, batch_size=batch_size, epochs=1, shuffle=False, verbose=0).history
    assert np.abs(to_numpy(trunk) - before).max() > 1e-4
    for value in objective.weights:
        assert np.all(np.isfinite(to_numpy(value))), value.path
    return np.array([history[f"weight/task_{t}"][-1] for t in range(heads)])
