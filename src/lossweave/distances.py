"""Distances and similarities every pair, triplet and proxy loss takes (``distance=``).

A distance object computes the ``(n, m)`` values between the rows of two
embedding matrices (``pairwise``) or the ``(n,)`` values of paired rows
(``paired``), and says whether larger values mean *closer*
(``is_inverted``: a similarity) or *farther* (a distance): the losses and
miners read that property, so any loss works with any of them (a margin in a
similarity's units, e.g. a contrastive ``neg_margin``, then means a
similarity). The formulas are in :mod:`lossweave.ops.distances`; nothing
bigger than ``n x m`` is built (an Lp distance of order ``p != 2`` sums over
slices of 16 features).

=============================  ==========  ===============================================  ===========================
class                          inverted    value                                            pytorch-metric-learning
=============================  ==========  ===============================================  ===========================
``EuclideanDistance``          no          ``||x - y||`` (gradient 0, not NaN, at 0)        ``LpDistance()``
``SquaredEuclideanDistance``   no          ``||x - y||^2``                                  ``LpDistance(power=2)``
``LpDistance``                 no          ``||x - y||_p ** power``                         ``LpDistance(p, power)``
``CosineDistance``             no          ``1 - cos(x, y)``, in ``[0, 2]``                 (none)
``CosineSimilarity``           yes         ``cos(x, y)``                                    ``CosineSimilarity()``
``DotProductSimilarity``       yes         ``x . y``                                        ``DotProductSimilarity()``
``SNRDistance``                no          ``var(y - x) / var(x)`` (Yuan et al. 2019)       ``SNRDistance()``
=============================  ==========  ===============================================  ===========================

``normalize_embeddings`` (L2; Lp for ``LpDistance``) defaults to ``False``
here and to ``True`` in pytorch-metric-learning, whose ``LpDistance()`` is
therefore ``EuclideanDistance(normalize_embeddings=True)``. The names a loss's
``distance`` argument has always taken map to objects: ``"euclidean"``,
``"squared_euclidean"``, ``"cosine"`` (``CosineDistance``); and
``"cosine_similarity"``, ``"dot_product"``, ``"snr"``.
"""

import keras

from lossweave import arguments
from lossweave._config_object import ConfigObject, resolve
from lossweave.ops import distances as distance_ops


@keras.saving.register_keras_serializable(package="lossweave")
class Distance(ConfigObject):
    """Base of the distances: ``pairwise(x, y=None)``, ``paired(x, y)``, ``is_inverted``.

    Subclasses implement ``_pairwise`` and ``_paired`` on rows already
    normalised when ``normalize_embeddings`` is true.

    Args:
        normalize_embeddings: divide each row by its L2 norm first (a zero row stays zero).
    """

    is_inverted = False
    _config = ("normalize_embeddings",)

    def __init__(self, normalize_embeddings=False):
        self.normalize_embeddings = arguments.boolean(normalize_embeddings, "normalize_embeddings", self)

    def normalize(self, x):
        return distance_ops.l2_normalize(x)

    def pairwise(self, x, y=None):
        """float32 ``(n, m)`` values between the rows of ``x`` and of ``y`` (``None``: ``x`` itself)."""
        if self.normalize_embeddings:
            x = self.normalize(x)
            y = None if y is None else self.normalize(y)
        return self._pairwise(x, y)

    def paired(self, x, y):
        """float32 ``(n,)`` values between row ``i`` of ``x`` and row ``i`` of ``y``."""
        if self.normalize_embeddings:
            x, y = self.normalize(x), self.normalize(y)
        return self._paired(x, y)

    def _pairwise(self, x, y):
        raise NotImplementedError(f"{type(self).__name__} must implement _pairwise.")

    def _paired(self, x, y):
        raise NotImplementedError(f"{type(self).__name__} must implement _paired.")


@keras.saving.register_keras_serializable(package="lossweave")
class LpDistance(Distance):
    """``||x - y||_p ** power``: pytorch-metric-learning's ``LpDistance``.

    ``p = 2`` is computed from one matmul (``||x||^2 + ||y||^2 - 2 x.y``, after
    a mean shift; for normalised rows ``2 - 2 x.y``); other orders sum
    ``|x_k - y_k|^p`` over slices of 16 features. The root and the power are
    exactly 0, with gradient 0, at distance 0 (never NaN).

    Args:
        p: the order of the norm (> 0).
        power: the power the distance is raised to (> 0).
        normalize_embeddings: divide each row by its Lp norm first
            (pytorch-metric-learning's default is ``True``).

    Example:
        >>> import numpy as np
        >>> x = np.array([[0., 0.], [3., 4.]], "float32")
        >>> [float(v) for v in LpDistance(p=1.0).pairwise(x)[0]]
        [0.0, 7.0]
    """

    _config = ("p", "power", "normalize_embeddings")

    def __init__(self, p=2.0, power=1.0, normalize_embeddings=False):
        super().__init__(normalize_embeddings)
        self.p = arguments.positive(p, "p", self)
        self.power = arguments.positive(power, "power", self)

    def normalize(self, x):
        return distance_ops.lp_normalize(x, self.p)

    def _pairwise(self, x, y):
        if self.p == 2.0 and not self.normalize_embeddings and self.power in (1.0, 2.0):
            # The named metrics: exactly the values (and gradients) the losses have always had.
            return distance_ops.pairwise_distances(x, y, "euclidean" if self.power == 1.0 else "squared_euclidean")
        return distance_ops.lp_distances(x, y, self.p, self.power, normalized=self.normalize_embeddings)

    def _paired(self, x, y):
        if self.p == 2.0 and self.power in (1.0, 2.0):
            return distance_ops.paired_distances(x, y, "euclidean" if self.power == 1.0 else "squared_euclidean")
        return distance_ops.paired_lp_distances(x, y, self.p, self.power)


@keras.saving.register_keras_serializable(package="lossweave")
class EuclideanDistance(LpDistance):
    """``||x - y||`` with a finite (zero) gradient at distance 0: the pair and triplet losses' default.

    Args:
        normalize_embeddings: L2-normalise the rows first (pytorch-metric-learning's ``LpDistance()``).

    Example:
        >>> import numpy as np
        >>> x = np.array([[0., 0.], [3., 4.]], "float32")
        >>> [[float(v) for v in row] for row in EuclideanDistance().pairwise(x)]
        [[0.0, 5.0], [5.0, 0.0]]
    """

    _config = ("normalize_embeddings",)

    def __init__(self, normalize_embeddings=False):
        super().__init__(2.0, 1.0, normalize_embeddings)


@keras.saving.register_keras_serializable(package="lossweave")
class SquaredEuclideanDistance(LpDistance):
    """``||x - y||^2`` (FaceNet's Eq. 1; ProxyNCA's ``d``).

    Args:
        normalize_embeddings: L2-normalise the rows first (then ``2 - 2 cos``).

    Example:
        >>> import numpy as np
        >>> x = np.array([[0., 0.], [3., 4.]], "float32")
        >>> float(SquaredEuclideanDistance().pairwise(x)[0, 1])
        25.0
    """

    _config = ("normalize_embeddings",)

    def __init__(self, normalize_embeddings=False):
        super().__init__(2.0, 2.0, normalize_embeddings)


@keras.saving.register_keras_serializable(package="lossweave")
class CosineDistance(Distance):
    """``1 - cos(x, y)`` in ``[0, 2]``, a distance (the losses' ``distance="cosine"``).

    pytorch-metric-learning has no such class; its ``CosineSimilarity`` is the
    similarity ``cos(x, y)`` (larger is closer): the two order pairs the same
    way and differ in the units of a margin (``1 - s``, not ``s``).

    Example:
        >>> import numpy as np
        >>> x = np.array([[1., 0.], [0., 2.]], "float32")
        >>> [[float(v) for v in row] for row in CosineDistance().pairwise(x)]
        [[0.0, 1.0], [1.0, 0.0]]
    """

    _config = ()

    def __init__(self):
        super().__init__(False)

    def _pairwise(self, x, y):
        return distance_ops.pairwise_distances(x, y, "cosine")

    def _paired(self, x, y):
        return distance_ops.paired_distances(x, y, "cosine")


@keras.saving.register_keras_serializable(package="lossweave")
class CosineSimilarity(Distance):
    """``cos(x, y)`` of L2-normalised rows, in ``[-1, 1]``; larger is closer (``is_inverted``).

    The similarity losses' default (multi-similarity, circle, SupCon,
    NT-Xent, Proxy Anchor); pytorch-metric-learning's ``CosineSimilarity``.

    Example:
        >>> import numpy as np
        >>> x = np.array([[1., 0.], [3., 3.]], "float32")
        >>> round(float(CosineSimilarity().pairwise(x)[0, 1]), 4)
        0.7071
    """

    is_inverted = True
    _config = ()

    def __init__(self):
        super().__init__(False)

    def _pairwise(self, x, y):
        return distance_ops.pairwise_similarity(x, y)

    def _paired(self, x, y):
        return distance_ops.paired_similarity(x, y)


@keras.saving.register_keras_serializable(package="lossweave")
class DotProductSimilarity(Distance):
    """Inner products ``x . y``; larger is closer (``is_inverted``). N-pairs' similarity (Sohn 2016).

    Args:
        normalize_embeddings: L2-normalise the rows first (then it is the cosine similarity).

    Example:
        >>> import numpy as np
        >>> x = np.array([[1., 2.], [0., 3.]], "float32")
        >>> float(DotProductSimilarity().pairwise(x)[0, 1])
        6.0
    """

    is_inverted = True

    def _pairwise(self, x, y):
        return distance_ops.dot_products(x, y)

    def _paired(self, x, y):
        return keras.ops.sum(keras.ops.cast(x, "float32") * keras.ops.cast(y, "float32"), axis=-1)


@keras.saving.register_keras_serializable(package="lossweave")
class SNRDistance(Distance):
    """Signal-to-noise-ratio distance ``var(y - x) / var(x)`` (Yuan, Chen, Chen & Ma, CVPR 2019).

    The anchor's features are the signal and the difference the noise
    (the paper's ``d_S(h_i, h_j) = var(h_j - h_i) / var(h_i)``; variances
    over the features); it is not symmetric. pytorch-metric-learning's
    ``SNRDistance`` (whose ``normalize_embeddings`` defaults to ``True``).
    An anchor of zero variance divides by ``1e-12`` rather than 0.

    Args:
        normalize_embeddings: L2-normalise the rows first.

    Example:
        >>> import numpy as np
        >>> x = np.array([[1., -1.], [2., -2.]], "float32")
        >>> [[float(v) for v in row] for row in SNRDistance().pairwise(x)]
        [[0.0, 1.0], [0.25, 0.0]]
    """

    def _pairwise(self, x, y):
        return distance_ops.snr_distances(x, y)

    def _paired(self, x, y):
        return distance_ops.paired_snr_distances(x, y)


NAMES = {
    "euclidean": EuclideanDistance,
    "squared_euclidean": SquaredEuclideanDistance,
    "cosine": CosineDistance,
    "cosine_similarity": CosineSimilarity,
    "dot_product": DotProductSimilarity,
    "snr": SNRDistance,
}


def get(value, owner="distance", argument="distance"):
    """A :class:`Distance` from an object, a name of ``NAMES`` or a serialized config.

    Example:
        >>> get("squared_euclidean")
        SquaredEuclideanDistance(normalize_embeddings=False)
    """
    return resolve(value, Distance, NAMES, argument, owner)


__all__ = [
    "CosineDistance",
    "CosineSimilarity",
    "Distance",
    "DotProductSimilarity",
    "EuclideanDistance",
    "LpDistance",
    "NAMES",
    "SNRDistance",
    "SquaredEuclideanDistance",
    "get",
]
