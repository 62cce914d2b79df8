"""What every aggregator shares: input checks, the Jacobian form, tolerances."""

from keras import ops
from keras import random

# Inner products are float32: within this fraction of the largest one, two
# values are treated as equal (a tie, a zero gradient), so that rounding noise
# never drives a step.
REL_EPS = 1e-6
# A term gradient with ||g_j||^2 below this fraction of the largest squared
# norm counts as zero: PCGrad does not project onto it (no division by ~0).
ZERO_GRAD = 1e-12


def as_gramian(gramian, what):
    """The Gramian as a symmetric float32 ``(K, K)`` tensor with a static K."""
    gramian = ops.convert_to_tensor(gramian)
    shape = tuple(gramian.shape)
    if len(shape) != 2 or shape[0] is None or shape[0] != shape[1]:
        raise ValueError(
            f"{what}: received a gramian of shape {shape}; expected a square (K, K) "
            f"matrix with a static K, G[i, j] = g_i . g_j for the K term gradients "
            f"(jacobian @ jacobian.T for a (K, params) jacobian)."
        )
    gramian = ops.cast(gramian, "float32")
    # J J^T is symmetric up to rounding; symmetrise so both triangles agree.
    return 0.5 * (gramian + ops.transpose(gramian))


def as_jacobian(jacobian, what):
    jacobian = ops.convert_to_tensor(jacobian)
    shape = tuple(jacobian.shape)
    if len(shape) != 2 or shape[0] is None:
        raise ValueError(
            f"{what}: received a jacobian of shape {shape}; expected a 2-D (K, params) "
            f"tensor with a static K, row k the flattened gradient of term k. "
            f"Stack the flattened per-term gradients (ops.stack of ops.reshape(g, (-1,)))."
        )
    return ops.cast(jacobian, "float32")


def apply_weights(weights_fn, jacobian, what, **kwargs):
    jacobian = as_jacobian(jacobian, what)
    weights = weights_fn(ops.matmul(jacobian, ops.transpose(jacobian)), **kwargs)
    return ops.matmul(weights, jacobian)




def task_orders(k, seed, order, what):
    """``(K, K - 1)`` int32: row i, the other tasks in the order task i visits them (PCGrad, GradVac).

    Exactly one of ``seed`` (an int or a ``keras.random.SeedGenerator``: one
    random permutation of the others per task, drawn in the step) and
    ``order`` (an explicit order, for tests; checked now when concrete).
    """
    if (seed is None) == (order is None):
        raise ValueError(
            f"{what}: received seed={seed!r} and order={'None' if order is None else 'given'}; "
            f"expected exactly one: a seed (an int or a keras.random.SeedGenerator) that "
            f"draws each task's random order of the others, or an explicit (K, K - 1) order (tests)."
        )
    if order is None:
        # argsort of uniform noise with the diagonal pushed last drops task i itself.
        noise = random.uniform((k, k), dtype="float32", seed=seed)
        noise = ops.where(ops.eye(k) > 0, 2.0 * ops.ones_like(noise), noise)
        return ops.cast(ops.argsort(noise, axis=-1)[:, : k - 1], "int32")
    if not ops.is_tensor(order):  # a concrete order: check it now
        rows = [[int(j) for j in row] for row in order]
        bad = [i for i, row in enumerate(rows) if sorted(row) != [j for j in range(k) if j != i]]
        if len(rows) != k or bad:
            raise ValueError(
                f"{what}: received order={rows}; expected K = {k} rows, row i a permutation "
                f"of the other tasks {{0..{k - 1}}} minus i (row {bad[0] if bad else len(rows)} is not)."
            )
        if k == 1:
            return ops.zeros((1, 0), "int32")
    order = ops.cast(ops.convert_to_tensor(order), "int32")
    if tuple(order.shape) != (k, k - 1):
        raise ValueError(
            f"{what}: received an order of shape {tuple(order.shape)}; expected (K, K - 1) = "
            f"({k}, {k - 1}): row i the other tasks in the order task i's gradient visits them."
        )
    return order
