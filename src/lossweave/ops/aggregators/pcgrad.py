"""PCGrad (Yu et al., NeurIPS 2020): project off the conflicting components, then sum."""

from keras import ops

from lossweave.ops.aggregators._common import ZERO_GRAD, apply_weights, as_gramian, task_orders


def pcgrad_weights(gramian, seed=None, order=None):
    """PCGrad weights: the projected gradients' sum as a combination of the originals.

    Yu, Kumar, Gupta, Levine, Hausman & Finn, "Gradient Surgery for
    Multi-Task Learning", NeurIPS 2020, Algorithm 1: for each task i,
    ``g_i^PC = g_i``; for each other task j (j != i) in random order, if
    ``g_i^PC . g_j < 0`` then ``g_i^PC -= (g_i^PC . g_j) / ||g_j||^2 g_j``;
    the update is ``sum_i g_i^PC`` (line 8).

    The projections are onto the *original* ``g_j``, as in the paper and in
    both reference codes (the authors' ``tianheyu927/PCGrad`` TensorFlow
    optimizer and ``WeiChengTseng/Pytorch-PCGrad``). This follows the paper
    where those codes differ from it: the others are visited in a fresh
    random order per task (the authors' TF code never uses its shuffled
    losses, so its order is fixed), task i itself is not visited (both codes
    include it, a no-op unless ``g_i^PC . g_i < 0``), and the projected
    gradients are summed (Pytorch-PCGrad averages them over the shared
    parameters, 1/K of this update, whatever its ``reduction``: its
    ``if self._reduction:`` test is true for ``"sum"`` too).

    Each ``g_i^PC`` stays a linear combination ``sum_m C_im g_m`` of the
    originals, so the projections only need Gramian entries:
    ``g_i^PC . g_j = (C G)_ij``; the weights are the column sums of ``C``.
    A zero ``g_j`` (``||g_j||^2 <= 1e-12 max_k ||g_k||^2``) is skipped.

    Args:
        gramian: ``(K, K)`` Gramian ``G_ij = g_i . g_j`` of the term gradients.
        seed: an int or a ``keras.random.SeedGenerator`` (what
            ``keras.random`` accepts) drawing one permutation of the others
            per task; a strategy keeps a ``SeedGenerator`` so the draws are
            saved with the model. Give ``seed`` or ``order``, not both.
        order: ``(K, K - 1)`` ints, row i the other tasks in the order task
            i's gradient is projected on them (deterministic: for tests).

    Returns:
        ``(K,)`` float32 weights (not normalised: conflicts add weight).

    Example:
        >>> w = pcgrad_weights([[1., -1.], [-1., 2.]], seed=0)   # g_1 = (1, 0), g_2 = (-1, 1)
        >>> [round(float(v), 4) for v in w]   # g_1 + g_2/2 + g_2 + g_1
        [2.0, 1.5]
    """
    gramian = as_gramian(gramian, "pcgrad_weights")
    k = gramian.shape[0]
    order = task_orders(k, seed, order, "PCGrad")
    diagonal = ops.diagonal(gramian)
    nonzero = ops.cast(diagonal > ZERO_GRAD * ops.max(diagonal), "float32")
    coefficients = ops.eye(k, dtype="float32")  # row i: g_i^PC in terms of g_1..g_K
    for step in range(k - 1):  # unrolled over the static K: every task at once
        pick = ops.one_hot(order[:, step], k, dtype="float32")  # row i selects task i's j
        dots = ops.sum(ops.matmul(coefficients, gramian) * pick, axis=1)  # g_i^PC . g_j
        squared = ops.sum(pick * diagonal[None, :], axis=1)  # ||g_j||^2
        project = ops.logical_and(dots < 0, ops.sum(pick * nonzero[None, :], axis=1) > 0)
        ratio = dots / ops.where(project, squared, ops.ones_like(squared))
        coefficients = coefficients - ops.where(project, ratio, ops.zeros_like(ratio))[:, None] * pick
    return ops.sum(coefficients, axis=0)


def pcgrad(jacobian, seed=None, order=None):
    """The PCGrad update ``pcgrad_weights(J J^T, ...) @ J`` (Yu et al. 2020, Alg. 1).

    Example:
        >>> [round(float(v), 4) for v in pcgrad([[1., 0.], [-1., 1.]], seed=0)]
        [0.5, 1.5]
    """
    return apply_weights(pcgrad_weights, jacobian, "pcgrad", seed=seed, order=order)
