"""Two-view self-supervised losses on batch statistics: VICReg and Barlow Twins, as pure functions.

Both read two ``(N, dim)`` views of the same ``N`` samples (rows in the same
order) and no labels. Their terms are statistics of the batch (per-dimension
variances, covariance and cross-correlation matrices), not sums over
samples or pairs, so the library's one meaning of ``sample_weight``
(``docs/sample_weight.md``) reads here:

- a row of weight 0, or with NaN/Inf in either view, is absent: it is left
  out of every mean, variance and correlation (its features are zeroed before
  any product, so its gradient is exactly 0 and finite);
- the statistics count the ``n`` rows of non-zero weight (they do not weigh
  them: a weight is not a frequency);
- a per-sample term (VICReg's invariance) is ``sum_i w_i s_i / n``; a batch
  term (variance, covariance, cross-correlation) is multiplied by the mean
  weight ``sum_i w_i / n``. Weights all ``c`` give ``c`` times the loss;
  weights all 1 give the paper's value.

With fewer than two rows a variance is undefined: the batch terms are then 0
(VICReg keeps its invariance term); with no row the loss is 0.
"""

from keras import ops

from lossweave.ops.pair_structure import embedding_rows


def _rows(view1, view2, sample_weight, what):
    """Both views (absent rows zeroed), the 0/1 row mask, ``n`` and the mean weight of the present rows."""
    a, weights, usable_a = embedding_rows(view1, sample_weight, what)
    b, _, usable_b = embedding_rows(view2, None, what)
    if tuple(a.shape[1:]) != tuple(b.shape[1:]):
        raise ValueError(
            f"{what}: received views of shapes {tuple(a.shape)} and {tuple(b.shape)}; expected two (batch, dim) "
            f"views of the same dim. Give both views the same embedding head."
        )
    usable = ops.logical_and(usable_a, usable_b)
    keep = ops.cast(usable, "float32")
    a = a * keep[:, None]
    b = b * keep[:, None]
    n = ops.sum(keep)
    weights = weights * keep
    mean_weight = ops.sum(weights) / ops.maximum(n, 1.0)
    return a, b, keep, weights, n, mean_weight


def _centered(x, keep, n):
    """The present rows minus their mean (absent rows stay 0)."""
    mean = ops.sum(x, axis=0, keepdims=True) / ops.maximum(n, 1.0)
    return (x - mean) * keep[:, None]


def vicreg_terms(view1, view2, sample_weight=None, variance_target=1.0, eps=1e-4):
    """VICReg's three terms, unweighted by ``lambda, mu, nu``: ``(invariance, variance, covariance)``.

    With ``Z``, ``Z'`` the two views (``n`` rows of dim ``d``), as in the
    authors' code and pytorch-metric-learning (see :func:`vicreg_loss`):

    - invariance (Eq. 5): ``1/n sum_i 1/d ||z_i - z'_i||^2`` (weighted: ``w_i`` scales row ``i``);
    - variance (Eq. 1): ``[v(Z) + v(Z')] / 2``, ``v(Z) = 1/d sum_j max(0, gamma - sqrt(Var(z^j) + eps))``,
      the unbiased variance (``n - 1``);
    - covariance (Eq. 3-4): ``c(Z) + c(Z')``, ``c(Z) = 1/d sum_{i != j} C(Z)_ij^2``,
      ``C(Z) = 1/(n - 1) sum_i (z_i - z_bar)(z_i - z_bar)^T``.

    The batch terms are multiplied by the mean weight (module docstring) and
    are 0 with fewer than two rows.

    Example:
        >>> import numpy as np
        >>> z = np.array([[1., 0.], [-1., 0.], [0., 2.], [0., -2.]], "float32")
        >>> [round(float(t), 4) for t in vicreg_terms(z, z, eps=0.0)]   # std 0.8165 and 1.633; no covariance
        [0.0, 0.0918, 0.0]
    """
    a, b, keep, weights, n, mean_weight = _rows(view1, view2, sample_weight, "VICReg loss")
    dim = ops.cast(ops.shape(a)[1], "float32")
    invariance = ops.sum(weights * ops.mean(ops.square(a - b), axis=-1)) / ops.maximum(n, 1.0)
    enough = n > 1.0
    off_diagonal = 1.0 - ops.eye(ops.shape(a)[1], dtype="float32")

    def variance_and_covariance(x):
        centered = _centered(x, keep, n)
        covariance = ops.matmul(ops.transpose(centered), centered) / ops.maximum(n - 1.0, 1.0)
        std = ops.sqrt(ops.diagonal(covariance) + eps)
        variance = ops.mean(ops.relu(variance_target - std))
        return variance, ops.sum(ops.square(covariance) * off_diagonal) / dim

    variance_a, covariance_a = variance_and_covariance(a)
    variance_b, covariance_b = variance_and_covariance(b)
    scale = ops.where(enough, mean_weight, 0.0)
    return invariance, scale * (variance_a + variance_b) / 2.0, scale * (covariance_a + covariance_b)


def vicreg_loss(view1, view2, invariance_lambda=25.0, variance_mu=25.0, covariance_v=1.0, eps=1e-4,
                sample_weight=None):
    """VICReg (Bardes, Ponce & LeCun, ICLR 2022, Eq. 1-6).

    ``L = lambda s(Z, Z') + mu [v(Z) + v(Z')] / 2 + nu [c(Z) + c(Z')]`` with
    the terms of :func:`vicreg_terms` (Eq. 6 is this sum; Eq. 1-2 the
    variance, Eq. 3-4 the covariance, Eq. 5 the invariance). Defaults are the
    paper's and pytorch-metric-learning's (``VICRegLoss(invariance_lambda=25,
    variance_mu=25, covariance_v=1, eps=1e-4)``; ``gamma = 1``).

    Two departures from the equations as printed, both those of the authors'
    code (``facebookresearch/vicreg``: ``F.mse_loss`` and ``std_loss / 2``)
    and of pytorch-metric-learning, for which ``lambda = mu = 25`` were tuned:
    the invariance divides Eq. 5's squared distance by ``d`` too (a mean
    squared error), and the variance of the two views is averaged, not summed.

    Args:
        view1, view2: ``(N, dim)`` embeddings of the two views.
        invariance_lambda: ``lambda``.
        variance_mu: ``mu``.
        covariance_v: ``nu``.
        eps: ``epsilon`` of the standard deviation ``sqrt(Var + eps)``.
        sample_weight: optional ``(N,)`` sample weights (module docstring).

    Returns:
        A float32 scalar.

    Example:
        >>> import numpy as np
        >>> z = np.array([[1., 0.], [-1., 0.], [0., 2.], [0., -2.]], "float32")
        >>> round(float(vicreg_loss(z, z, eps=0.0)), 4)   # 25 * 0.09175
        2.2938
    """
    invariance, variance, covariance = vicreg_terms(view1, view2, sample_weight, 1.0, eps)
    return invariance_lambda * invariance + variance_mu * variance + covariance_v * covariance


def barlow_twins_loss(view1, view2, redundancy_lambda=0.005, eps=1e-5, sample_weight=None):
    """Barlow Twins (Zbontar, Jing, Misra, LeCun & Deny, ICML 2021, Eq. 1-2).

    Each view's features are standardised along the batch (mean 0, biased
    standard deviation ``sqrt(Var + eps)``: the authors' code's
    ``BatchNorm1d(affine=False)``, whose ``eps`` is 1e-5), and ``C`` is their
    cross-correlation matrix (Eq. 2: ``C_ij = sum_b z^A_bi z^B_bj / n`` of the
    standardised views)::

        L = sum_i (1 - C_ii)^2 + lambda sum_i sum_{j != i} C_ij^2          (Eq. 1)

    ``lambda`` defaults to the paper's ``5e-3`` (Sec. 4; the authors' code
    uses 0.0051). pytorch-metric-learning has no Barlow Twins loss. The loss
    is multiplied by the mean weight of the present rows (module docstring);
    with fewer than two rows it is 0.

    Args:
        view1, view2: ``(N, dim)`` embeddings of the two views.
        redundancy_lambda: ``lambda``, the weight of the off-diagonal terms.
        eps: added to the variance before the square root.
        sample_weight: optional ``(N,)`` sample weights (module docstring).

    Returns:
        A float32 scalar.

    Example:
        >>> import numpy as np
        >>> z = np.array([[1., 1.], [-1., -1.]], "float32")
        >>> round(float(barlow_twins_loss(z, z, redundancy_lambda=1.0, eps=0.0)), 4)   # C = all ones
        2.0
    """
    a, b, keep, _, n, mean_weight = _rows(view1, view2, sample_weight, "Barlow Twins loss")

    def standardised(x):
        centered = _centered(x, keep, n)
        std = ops.sqrt(ops.sum(ops.square(centered), axis=0, keepdims=True) / ops.maximum(n, 1.0) + eps)
        return centered / std

    correlation = ops.matmul(ops.transpose(standardised(a)), standardised(b)) / ops.maximum(n, 1.0)
    diagonal = ops.eye(ops.shape(a)[1], dtype="float32")
    on = ops.sum(ops.square(1.0 - ops.diagonal(correlation)))
    off = ops.sum(ops.square(correlation) * (1.0 - diagonal))
    return ops.where(n > 1.0, mean_weight, 0.0) * (on + redundancy_lambda * off)


__all__ = ["barlow_twins_loss", "vicreg_loss", "vicreg_terms"]
