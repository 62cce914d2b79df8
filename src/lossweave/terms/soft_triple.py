"""SoftTriple loss as a term on the class-table base: ``K`` centers per class (Qian et al., ICCV 2019)."""

import keras

from lossweave import arguments
from lossweave.ops import tuple_losses as tuple_ops
from lossweave.terms.proxy import _ProxyTerm


@keras.saving.register_keras_serializable(package="lossweave")
class SoftTripleLoss(_ProxyTerm):
    """SoftTriple loss (Qian, Shang, Sun, Hu, Li & Jin, ICCV 2019, Eq. 6-8, with the regulariser of Eq. 10-12).

    Each class has ``centers_per_class`` (``K``) centers, the rows of the
    term's trainable ``(num_classes * K, dim)`` table ``term.proxies`` (the
    proxies of the proxy terms, ``K`` per class: the class-table base owns
    them, samples them with ``sample_rate`` and saves them). A sample's
    relaxed similarity to a class is the softmax-weighted (temperature
    ``gamma``) mean of its cosines to the class's centers; the loss is the
    softmax cross-entropy of ``scale`` times those, the target's lowered by
    ``cosine_margin``, plus ``tau`` times the regulariser that merges close
    centers of a class (:func:`lossweave.ops.tuple_losses.soft_triple_loss`).
    One loss per sample: weights and ``missing`` act as in a Keras loss.

    Defaults are the paper's and its authors' (``idstcv/SoftTriple``):
    ``lambda=20, gamma=0.1, delta=0.01, tau=0.2, K=10``, centers initialised
    as the authors' and pytorch-metric-learning's ``kaiming_uniform_(a=sqrt(5))``
    of a ``(dim, classes * K)`` tensor, i.e. uniform in ``±1 / sqrt(classes * K)``:
    Keras's ``VarianceScaling(1 / 3, "fan_in", "uniform")`` of our ``(classes *
    K, dim)`` table. pytorch-metric-learning's ``SoftTripleLoss`` is
    ``tau=0`` (its regulariser is a separate ``weight_regularizer``). No
    ``distance``: the relaxed similarity and the regulariser are defined on
    unit vectors (cosines), and PML requires a similarity there too.

    Args:
        num_classes: number of classes.
        centers_per_class: ``K`` (10).
        scale: ``lambda`` (20).
        gamma: the temperature of the softmax over a class's centers (0.1).
        cosine_margin: ``delta`` (0.01).
        tau: the weight of the center regulariser (0.2; 0 for none).
        proxies_initializer: initializer of the centers; ``None`` for the authors' (above).
        on: model output holding the embeddings ``(batch, dim)``.
        target: target holding sparse or one-hot labels.
        **kwargs: ``validate``, ``missing`` (see :class:`~lossweave.terms.Term`), and
            ``sample_rate``, ``seed`` and ``negative_threshold`` (Partial FC's
            class sampling and inter-class filtering, see
            :class:`lossweave.terms.MarginSoftmax`), and Layer arguments.

    Example:
        >>> import numpy as np
        >>> term = SoftTripleLoss(num_classes=2, centers_per_class=1, scale=1.0, cosine_margin=0.0,
        ...                       proxies_initializer="identity")
        >>> round(float(term(np.array([[1., 0.]], "float32"), np.array([0]))), 4)   # log(1 + e^-1)
        0.3133
    """

    def __init__(self, num_classes, centers_per_class=10, scale=20.0, gamma=0.1, cosine_margin=0.01, tau=0.2,
                 proxies_initializer=None, on="embedding", target="label", **kwargs):
        if proxies_initializer is None:
            proxies_initializer = keras.initializers.VarianceScaling(1.0 / 3.0, "fan_in", "uniform")
        super().__init__(num_classes, proxies_initializer, None, on=on, target=target, **kwargs)
        self.centers_per_class = arguments.positive_int(centers_per_class, "centers_per_class", self)
        self.scale = arguments.positive(scale, "scale", self)
        self.gamma = arguments.positive(gamma, "gamma", self)
        self.cosine_margin = arguments.number(cosine_margin, "cosine_margin", self, low=0.0)
        self.tau = arguments.number(tau, "tau", self, low=0.0)

    @property
    def rows_per_class(self):
        return self.centers_per_class

    def proxy_loss(self, embeddings, labels, sample_weight, proxies, mask=None, negative_threshold=None):
        return tuple_ops.soft_triple_loss(
            embeddings, proxies, labels, self.centers_per_class, scale=self.scale, gamma=self.gamma,
            cosine_margin=self.cosine_margin, tau=self.tau, sample_weight=sample_weight, mask=mask,
            negative_threshold=negative_threshold,
        )

    def get_config(self):
        return {**super().get_config(), "centers_per_class": self.centers_per_class, "scale": self.scale,
                "gamma": self.gamma, "cosine_margin": self.cosine_margin, "tau": self.tau}


__all__ = ["SoftTripleLoss"]
