"""What every aggregator shares: input checks, the Jacobian form, tolerances."""

from keras import ops

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


