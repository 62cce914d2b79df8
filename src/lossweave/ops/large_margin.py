"""L-Softmax (Liu, Wen, Yu & Yang, ICML 2016) as pure functions: logits that keep the norms.

Large-margin softmax is the margin-softmax loss *before* normalisation: the
logit of class ``j`` is the plain inner product ``W_j^T x = ||W_j|| ||x|| cos
theta_j`` (the paper's Eq. 2), and the target's is ``||W_y|| ||x||
psi(theta_y)`` (Eq. 4) with the monotonic ``psi(theta) = (-1)^k cos(m theta)
- 2k`` for ``theta`` in ``[k pi / m, (k + 1) pi / m]`` (Eq. 5-6). ``psi`` is
:func:`lossweave.ops.margin.sphereface_psi` (SphereFace took it from this
paper): ``cos(m theta)`` is the Chebyshev polynomial ``T_m(cos theta)``, the
paper's multiple-angle expansion (Eq. 7) in another order, and ``k`` is
counted from ``cos theta`` (no ``arccos``), so the value and its gradient
are finite everywhere on ``[-1, 1]``, ``cos theta = +-1`` included.
(Which of these equation numbers a second source confirms:
:class:`lossweave.terms.LargeMarginSoftmax`'s docstring.)

The authors train with an annealed target (the paper's section on
optimization; their Caffe layer's ``base``, ``gamma``, ``power``,
``lambda_min``): ``f_y = (lambda ||W_y|| ||x|| cos theta_y + ||W_y|| ||x||
psi(theta_y)) / (1 + lambda)``, ``lambda = max(lambda_min, base (1 + gamma
t)^-power)`` (:func:`lossweave.ops.margin.sphereface_lambda`).

The term is :class:`lossweave.terms.LargeMarginSoftmax`; these functions are
its pieces (:func:`weighted_cosines`, :func:`target_weight_norms`) and the
whole logits for a custom loop (:func:`large_margin_logits`).
"""

from keras import ops

from lossweave.ops import adaptive_margin as adaptive_ops
from lossweave.ops import margin as margin_ops
from lossweave.ops.labels import class_indices


def weighted_cosines(embeddings, class_weights, scale=1.0):
    """``scale * ||W_j|| cos theta_j``, ``(batch, classes)`` float32: the class weights are *not* normalised.

    With ``scale = s ||x||`` (what :class:`~lossweave.terms.LargeMarginSoftmax`
    passes) this is ``s W_j^T x``, the paper's logit (Eq. 2) times ``s``. The
    embeddings are normalised first so that ``scale`` may be any per-row
    factor, as in :func:`lossweave.ops.margin.scaled_cosines`.

    Args:
        embeddings: ``(batch, dim)``.
        class_weights: ``(classes, dim)``, raw.
        scale: a number, a scalar tensor or a ``(batch, 1)`` tensor.

    Example:
        >>> import numpy as np
        >>> w = np.array([[1., 0.], [0., 2.]], "float32")
        >>> [round(float(v), 4) for v in weighted_cosines(np.array([[3., 4.]], "float32"), w, 5.0)[0]]
        [3.0, 8.0]
    """
    x = margin_ops._l2_normalize(embeddings)
    if not isinstance(scale, (int, float)) or scale != 1.0:
        x = x * ops.cast(scale, "float32")
    return ops.matmul(x, ops.transpose(ops.cast(class_weights, "float32")))


def target_weight_norms(class_weights, labels, num_classes):
    """``||W_y||`` of each row's own class, ``(batch,)`` float32, 0 where a row has no valid label.

    One gather of ``batch`` rows of the table: O(batch x dim), no pass over
    ``(batch, classes)``. The norm's gradient is finite at a zero row.

    Example:
        >>> import numpy as np
        >>> w = np.array([[3., 4.], [0., 2.]], "float32")
        >>> [float(v) for v in target_weight_norms(w, np.array([1, 0, 5]), 2)]
        [2.0, 5.0, 0.0]
    """
    indices, valid = class_indices(labels, num_classes)
    norms = adaptive_ops.feature_norms(ops.take(ops.cast(class_weights, "float32"), indices, axis=0))
    return ops.where(valid, norms, 0.0)


def large_margin_target(cos, multiplicative_margin=4, annealing=0.0):
    """The target's factor ``(lambda cos theta + psi(theta)) / (1 + lambda)`` (Eq. 6, annealed).

    ``annealing`` is ``lambda`` (0: the pure margin of Eq. 4-6; a number or
    a scalar tensor); ``multiplicative_margin`` the paper's integer ``m``.

    Example:
        >>> import numpy as np
        >>> theta = np.float32(2.0)      # in [pi/2, 3 pi/4): k = 2 for m = 4
        >>> round(float(large_margin_target(np.cos(theta), 4)), 4) == round(float(np.cos(4 * theta) - 4), 4)
        True
    """
    cos = ops.cast(cos, "float32")
    psi = margin_ops.sphereface_psi(cos, multiplicative_margin)
    return (annealing * cos + psi) / (1.0 + annealing)


def large_margin_logits(embeddings, class_weights, labels, multiplicative_margin=4, annealing=0.0, scale=1.0):
    """L-Softmax training logits: ``s W_j^T x``, the target's ``s ||W_y|| ||x|| f(theta_y)`` (Eq. 2, 4, 6).

    Softmax cross-entropy on these is the loss of Eq. 4
    (:func:`lossweave.ops.softmax_cross_entropy`). A row with an invalid
    label keeps its plain logits.

    Args:
        embeddings: ``(batch, dim)``, raw.
        class_weights: ``(classes, dim)``, raw.
        labels: sparse or one-hot labels.
        multiplicative_margin: the integer ``m``.
        annealing: ``lambda`` of :func:`large_margin_target` (0: no annealing).
        scale: a factor of every logit (pytorch-metric-learning's ``scale``; 1 in the paper).

    Example:
        >>> import numpy as np
        >>> w = np.array([[1., 0.], [0., 1.]], "float32")
        >>> x = np.array([[2., 0.]], "float32")     # theta_y = 0: psi = 1
        >>> [float(v) for v in large_margin_logits(x, w, np.array([0]))[0]]
        [2.0, 0.0]
    """
    num_classes = ops.shape(class_weights)[0]
    row = ops.cast(scale, "float32") * adaptive_ops.feature_norms(embeddings)
    logits = weighted_cosines(embeddings, class_weights, ops.expand_dims(row, -1))
    hit, _ = margin_ops.target_mask(labels, num_classes)
    target_scale = row * target_weight_norms(class_weights, labels, num_classes)
    cos = ops.clip(margin_ops.masked_target(logits, hit) / ops.maximum(target_scale, 1e-12), -1.0, 1.0)
    target = large_margin_target(cos, multiplicative_margin, annealing) * target_scale
    return margin_ops.replace_target(logits, hit, target)
