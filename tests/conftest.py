"""Shared fixtures. The suite runs once per backend (KERAS_BACKEND set by `make test`)."""

import keras
import numpy as np
import pytest

BACKEND = keras.backend.backend()

# Tests whose subject does not depend on the backend (NumPy metrics, data
# loaders, CLI parsing, the report) run in one backend pass of `make test`.
one_backend = pytest.mark.skipif(BACKEND != "jax", reason="backend-independent: runs in the jax pass only")

# Scripts the tests run in subprocesses (they configure devices at import):
# not test modules, and not for --doctest-modules to import.
collect_ignore_glob = ["*_run.py"]


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)
    yield
    keras.config.set_dtype_policy("float32")


def to_numpy(x):
    return keras.ops.convert_to_numpy(x)


def gradient(fn, x):
    """d fn(x) / d x of a scalar function of the NumPy array ``x``, as NumPy, on the current backend."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        xt = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            value = fn(xt)
        return tape.gradient(value, xt).numpy()
    if BACKEND == "torch":
        import torch

        xt = torch.tensor(x, requires_grad=True)
        (g,) = torch.autograd.grad(fn(xt), [xt])
        return g.cpu().numpy()
    import jax

    return np.asarray(jax.grad(fn)(x))


def numpy_center_loss(x, y, c, w=None):
    """Wen et al. 2016, Eq. 2, divided by the batch size: 1/2 mean_i ||x_i - c_{y_i}||^2."""
    per = 0.5 * ((x - c[y]) ** 2).sum(axis=1)
    if w is not None:
        per = per * w
    return per.sum() / len(x)


def numpy_center_update(x, y, c, alpha):
    """Wen et al. 2016, Eq. 3-4, written class by class as in the paper."""
    new = c.astype("float64").copy()
    for j in np.unique(y):
        members = y == j
        n_j = members.sum()
        delta = (c[j] - x[members]).sum(axis=0) / (1.0 + n_j)
        new[j] = c[j] - alpha * delta
    return new
