"""Large-margin softmax (L-Softmax): the margin-softmax base with the norms kept."""

import keras

from lossweave import arguments
from lossweave.ops import adaptive_margin as adaptive_ops
from lossweave.terms.margin import SphereFace


@keras.saving.register_keras_serializable(package="lossweave")
class LargeMarginSoftmax(SphereFace):
    """L-Softmax (Liu, Wen, Yu & Yang, "Large-Margin Softmax Loss for Convolutional Neural Networks", ICML 2016).

    Softmax cross-entropy (Eq. 1) on the plain inner products ``f_j = W_j^T x
    = ||W_j|| ||x|| cos theta_j`` (Eq. 2), in which the target's logit is
    ``||W_y|| ||x|| psi(theta_y)`` (Eq. 4) with the monotonic
    ``psi(theta) = (-1)^k cos(m theta) - 2k`` for ``theta`` in ``[k pi / m,
    (k + 1) pi / m]``, ``k`` in ``[0, m - 1]`` (Eq. 5-6); ``cos(m theta)`` is
    a polynomial in ``cos theta`` (Eq. 7; here the Chebyshev recurrence) and
    ``k`` is counted from ``cos theta``, so value and gradient are finite at
    ``cos theta = +-1`` (:mod:`lossweave.ops.large_margin`). Neither the
    embeddings nor the class weights are normalised: this is SphereFace
    (which normalises ``W``) with the weights' norms kept, and the class is
    SphereFace's, the margin-softmax base declaring ``normalizes_weights =
    False``. No bias, as in the authors' layer.

    **Annealing.** As in the authors' Caffe layer (``LargeMarginInnerProduct``)
    and the paper's section on optimization, the trained target is ``(lambda
    ||W_y|| ||x|| cos theta_y + ||W_y|| ||x|| psi(theta_y)) / (1 + lambda)``
    with ``lambda = max(lambda_min, base (1 + gamma t)^-power)`` at the term's training step
    ``t`` (its ``iterations`` counter, saved with it; the Caffe layer counts
    from 1, this counter from 0). The defaults are the authors' MNIST
    settings for ``m = 4`` (``base=1000, gamma=0.000025, power=35,
    lambda_min=0``: ``lambda`` is about 0.4 after 10k steps); their CIFAR-10
    setting is ``m = 2, gamma=0.00002, power=45``. ``base=0`` gives the
    pure margin at every step.

    **pytorch-metric-learning.** PML's ``LargeMarginSoftmaxLoss(num_classes,
    embedding_size, margin, scale)`` is the unannealed loss: it equals
    ``LargeMarginSoftmax(num_classes, multiplicative_margin=margin,
    scale=scale, base=0.0)`` with PML's ``W`` transposed into
    ``class_weights`` (tested against PML 2.9.0). The defaults here follow
    the authors' annealed training instead; ``scale`` (PML's, 1 in the
    paper) multiplies every logit.

    **Equation numbers** are those of the arXiv text (1612.02295, the ICML
    paper). Eq. 6 (``psi`` with its ``k``) and Eq. 7 (the ``cos(m theta)``
    expansion) agree with the comments of pytorch-metric-learning's
    ``LargeMarginSoftmaxLoss``; Eq. 1, 2, 4 and 5 were read from the paper
    when the class was written and have not been checked against a second
    source (the authors' Caffe code and README cite no equation).

    Partial FC class sampling (``sample_rate``) applies; ``sub_centers``
    and ``negative_threshold`` are refused (one weight vector per class, and
    the filter's threshold is a cosine of normalised weights).

    Args:
        num_classes: number of classes.
        multiplicative_margin: the integer ``m`` (paper: 1 to 4; 4 on MNIST).
        scale: a factor ``s`` of every logit (PML's ``scale``; the paper: 1).
        base, gamma, power, lambda_min: the annealing of ``lambda`` (see above).
        **kwargs: see :class:`~lossweave.terms.MarginSoftmax`.

    Example:
        >>> import numpy as np
        >>> term = LargeMarginSoftmax(num_classes=2, multiplicative_margin=2, base=0.0,
        ...                           class_weights_initializer="identity")
        >>> x = np.array([[0., 3.]], "float32")    # theta_y = pi/2, k = 1: psi = -cos(pi) - 2 = -1
        >>> [round(float(v), 4) for v in term.margin_logits(x, np.array([0]))[0]]
        [-3.0, 3.0]
    """

    normalizes_weights = False

    def __init__(self, num_classes, multiplicative_margin=4, scale=1.0, base=1000.0, gamma=0.000025, power=35.0,
                 lambda_min=0.0, **kwargs):
        for name, default, why in (
            ("sub_centers", 1, "L-Softmax has one weight vector per class"),
            ("negative_threshold", None, "the filter's threshold is a cosine of normalised class weights, and "
                                         "L-Softmax keeps the weights' norms in its logits"),
        ):
            if kwargs.get(name, default) != default:
                raise ValueError(
                    f"LargeMarginSoftmax: received {name}={kwargs[name]!r}; {why}. Leave `{name}` out, or use "
                    f"SphereFace / ArcFace for it."
                )
        super().__init__(num_classes, multiplicative_margin=multiplicative_margin, base=base, gamma=gamma,
                         power=power, lambda_min=lambda_min, **kwargs)
        self.scale = arguments.positive(scale, "scale", self)

    def logit_scale(self, embeddings):
        """``s ||x||`` per row, ``(batch, 1)`` (the class weights' norms are in the logits)."""
        return self.scale * adaptive_ops.feature_norms(embeddings)[:, None]

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}
