"""Ranking and neighbourhood pair terms: soft nearest neighbour, histogram, ranked list, PNP; PML's instance loss.

Thin shells over :mod:`lossweave.ops.ranking` (the formulas, the papers, the
pytorch-metric-learning defaults and where they differ are documented
there) on the :class:`~lossweave.terms.pairs.PairTerm` protocol: one
embedding output, sparse class ids checked by the base (a bad label or a
NaN/Inf embedding raises ``InvalidInputError`` and the batch's loss is 0),
``distance=``, ``reducer=`` and ``miner=`` objects. Sample weights follow
``docs/sample_weight.md``: a weight scales the terms its row anchors, the
means count, weight 0 (or a ``missing`` label) removes the row from every
pair. They own no state.
"""

import keras

from lossweave import arguments
from lossweave import distances as distance_objects
from lossweave.ops import ranking
from lossweave.terms.pairs import PairTerm, TupleArguments


@keras.saving.register_keras_serializable(package="lossweave")
class SoftNearestNeighborLoss(TupleArguments, PairTerm):
    """Soft nearest neighbour loss (Frosst, Papernot & Hinton, ICML 2019, Eq. 1).

    Each anchor's ``-log`` of the share of its neighbour mass
    ``exp(-d / T)`` that lies in its own class
    (:func:`lossweave.ops.ranking.soft_nearest_neighbor_loss`), averaged over
    the anchors that have a positive. Takes a reference set
    (``CrossBatchMemory``). pytorch-metric-learning has no such loss;
    TensorFlow Similarity's ``SoftNearestNeighborLoss`` has these defaults.

    Args:
        temperature: ``T`` (> 0; paper: optimised, here fixed; 1.0).
        distance: a :mod:`lossweave.distances` object or name (paper:
            ``"squared_euclidean"``; a similarity ``s`` enters as ``exp(s / T)``).
        reducer: a :mod:`lossweave.reducers` object for the anchors' terms; ``None``: their mean.
        miner: a :mod:`lossweave.miners` object; ``None``: every pair.
        on: the embedding output.
        target: the class ids.
        **kwargs: ``validate``, ``missing`` and Layer arguments (see :class:`~lossweave.terms.Term`).

    Example:
        >>> import numpy as np
        >>> x = np.array([[0.], [1.], [2.]], "float32")
        >>> round(float(SoftNearestNeighborLoss()(x, np.array([0, 0, 1]))), 4)   # (log(1 + e^-3) + log 2) / 2
        0.3709
    """

    supports_reference = True

    def __init__(self, temperature=1.0, distance="squared_euclidean", reducer=None, miner=None, on="embedding",
                 target="label", **kwargs):
        super().__init__(on=on, target=target, **kwargs)
        self.temperature = arguments.positive(temperature, "temperature", self)
        self.init_tuple(distance, reducer, miner)

    def pair_loss(self, embeddings, labels, sample_weight=None, ref_embeddings=None, ref_labels=None,
                  ref_mask=None, exclude_self=True):
        return ranking.soft_nearest_neighbor_loss(
            embeddings, labels, self.temperature, sample_weight, ref_embeddings=ref_embeddings,
            ref_labels=ref_labels, ref_mask=ref_mask, exclude_self=exclude_self, **self.tuple_kwargs(),
        )

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature, **self.tuple_config()}


class _NoReference:
    """A pair term whose formula has no reference-set form (it refuses one)."""

    def refuse_reference(self, ref_embeddings):
        if ref_embeddings is not None:
            raise ValueError(f"{type(self).__name__} does not take a reference set (its pairs are the batch's "
                             f"own); use it without CrossBatchMemory.")


@keras.saving.register_keras_serializable(package="lossweave")
class HistogramLoss(_NoReference, TupleArguments, PairTerm):
    """Histogram loss (Ustinova & Lempitsky, NeurIPS 2016, Eq. 1-5).

    The probability, estimated from soft histograms of the similarities of
    the batch's positive and negative pairs, that a positive pair is less
    similar than a negative one (:func:`lossweave.ops.ranking.histogram_loss`).
    ``n_bins`` defaults to pytorch-metric-learning's 100 (``HistogramLoss()``;
    its ``delta`` is ``2 / n_bins``).

    Args:
        n_bins: the number of bins of ``[-1, 1]`` (>= 1).
        distance: a similarity with values in ``[-1, 1]`` (paper: ``"cosine_similarity"``); a distance is refused.
        reducer: a :mod:`lossweave.reducers` object for the ordered negative pairs' terms; ``None``: their mean.
        miner: a :mod:`lossweave.miners` object; ``None``: every pair.
        on: the embedding output.
        target: the class ids.
        **kwargs: ``validate``, ``missing`` and Layer arguments (see :class:`~lossweave.terms.Term`).

    Example:
        >>> import numpy as np
        >>> x = np.array([[1., 0.], [1., 0.], [0., 1.], [0., 1.]], "float32")
        >>> round(float(HistogramLoss()(x, np.array([0, 1, 0, 1]))), 4)   # every positive below every negative
        1.0
    """

    def __init__(self, n_bins=100, distance="cosine_similarity", reducer=None, miner=None, on="embedding",
                 target="label", **kwargs):
        super().__init__(on=on, target=target, **kwargs)
        self.n_bins = arguments.positive_int(n_bins, "n_bins", self)
        self.init_tuple(distance, reducer, miner)
        ranking.require_kind(type(self).__name__, self.distance, want_similarity=True)

    def pair_loss(self, embeddings, labels, sample_weight=None, ref_embeddings=None, ref_labels=None,
                  ref_mask=None, exclude_self=True):
        self.refuse_reference(ref_embeddings)
        return ranking.histogram_loss(embeddings, labels, self.n_bins, sample_weight, **self.tuple_kwargs())

    def get_config(self):
        return {**super().get_config(), "n_bins": self.n_bins, **self.tuple_config()}


@keras.saving.register_keras_serializable(package="lossweave")
class RankedListLoss(_NoReference, TupleArguments, PairTerm):
    """Ranked list loss (Wang et al., CVPR 2019); RLL-Simpler (``positive_temperature=0``) by default.

    Per anchor, the weighted hinges of the positives beyond ``alpha - m`` and
    of the negatives inside ``alpha``, balanced ``(1 - lambda, lambda)``
    (:func:`lossweave.ops.ranking.ranked_list_loss`). The arguments are
    pytorch-metric-learning's ``RankedListLoss(margin, Tn, imbalance, alpha,
    Tp)`` under explicit names; ``margin=0.4`` and ``negative_temperature=10``
    are the paper's (PML requires them). No equation numbers are cited: they
    could not be checked against the paper's text (arXiv 1903.03238; the
    authors' Caffe code, their README and PML cite none); the formulas are
    those PML 2.9's ``RankedListLoss`` computes, checked against it in
    ``tests/test_pml_parity.py``.

    Args:
        margin: ``m``.
        negative_temperature: ``T_n`` (PML's ``Tn``).
        imbalance: ``lambda`` in ``[0, 1]``.
        boundary: ``alpha`` (PML's ``alpha``); ``None``: ``1 + margin / 2``.
        positive_temperature: ``T_p`` (PML's ``Tp``; 0: RLL-Simpler).
        distance: a distance (``None``: ``EuclideanDistance(normalize_embeddings=True)``, PML's
            ``LpDistance()``); a similarity is refused.
        reducer: a :mod:`lossweave.reducers` object for the anchors' terms; ``None``: their mean.
        miner: a :mod:`lossweave.miners` object, applied before the loss's own selection; ``None``: every pair.
        on: the embedding output.
        target: the class ids.
        **kwargs: ``validate``, ``missing`` and Layer arguments (see :class:`~lossweave.terms.Term`).

    Example:
        >>> import numpy as np
        >>> x = np.array([[1., 0.], [0., 1.], [1., 0.]], "float32")
        >>> round(float(RankedListLoss()(x, np.array([0, 0, 1]))), 4)
        0.6047
    """

    def __init__(self, margin=0.4, negative_temperature=10.0, imbalance=0.5, boundary=None, positive_temperature=0.0,
                 distance=None, reducer=None, miner=None, on="embedding", target="label", **kwargs):
        super().__init__(on=on, target=target, **kwargs)
        self.margin = arguments.number(margin, "margin", self, low=0.0)
        self.negative_temperature = arguments.number(negative_temperature, "negative_temperature", self, low=0.0)
        self.imbalance = arguments.number(imbalance, "imbalance", self, low=0.0, high=1.0)
        self.boundary = arguments.optional(arguments.number, boundary, "boundary", self)
        self.positive_temperature = arguments.number(positive_temperature, "positive_temperature", self, low=0.0)
        if distance is None:
            distance = distance_objects.EuclideanDistance(normalize_embeddings=True)
        self.init_tuple(distance, reducer, miner)
        ranking.require_kind(type(self).__name__, self.distance, want_similarity=False)

    def pair_loss(self, embeddings, labels, sample_weight=None, ref_embeddings=None, ref_labels=None,
                  ref_mask=None, exclude_self=True):
        self.refuse_reference(ref_embeddings)
        return ranking.ranked_list_loss(
            embeddings, labels, self.margin, self.negative_temperature, self.imbalance, self.boundary,
            self.positive_temperature, sample_weight, **self.tuple_kwargs(),
        )

    def get_config(self):
        return {**super().get_config(), "margin": self.margin, "negative_temperature": self.negative_temperature,
                "imbalance": self.imbalance, "boundary": self.boundary,
                "positive_temperature": self.positive_temperature, **self.tuple_config()}


@keras.saving.register_keras_serializable(package="lossweave")
class PNPLoss(_NoReference, TupleArguments, PairTerm):
    """PNP loss: only the negatives ranked before a positive are penalised (Li et al., AAAI 2022, Eq. 5-13).

    The smoothed number of negatives ranked before each positive, through
    one of the paper's variants (``"O"`` Eq. 5, ``"Iu"`` Eq. 7, ``"Ib"``
    Eq. 9, ``"Ds"`` Eq. 12, ``"Dq"`` Eq. 13;
    :func:`lossweave.ops.ranking.pnp_loss`), averaged over each anchor's
    positives and over the anchors. The equation numbers are those of arXiv
    2102.04640 as the equation image in pytorch-metric-learning's docs
    (``docs/imgs/PNP_loss_equation.png``) shows them; the authors' code
    (``interestingzhuo/PNPloss``, ``criteria/PNP.py``) names none. Defaults are
    pytorch-metric-learning's ``PNPLoss(b=2, alpha=1, anneal=0.01,
    variant="O")``; PML counts each anchor among its own positives:
    ``count_self=True`` gives its numbers. Memory grows as ``batch^3``.

    Args:
        variant: one of ``"O"``, ``"Ds"``, ``"Dq"``, ``"Iu"``, ``"Ib"``.
        anneal: the temperature of the sigmoid that counts a negative as ranked before.
        alpha: the exponent of ``"Dq"``.
        b: the constant of ``"Ib"``.
        count_self: count each anchor among its positives (pytorch-metric-learning).
        distance: a :mod:`lossweave.distances` object or name (paper and PML: ``"cosine_similarity"``;
            a distance ``d`` enters as ``-d``).
        reducer: a :mod:`lossweave.reducers` object for the anchors' terms; ``None``: their mean.
        miner: a :mod:`lossweave.miners` object; ``None``: every pair.
        on: the embedding output.
        target: the class ids.
        **kwargs: ``validate``, ``missing`` and Layer arguments (see :class:`~lossweave.terms.Term`).

    Example:
        >>> import numpy as np
        >>> x = np.array([[1., 0.], [0., 1.], [1., 0.], [0., 1.]], "float32")
        >>> float(PNPLoss()(x, np.array([0, 1, 1, 0])))
        1.5
    """

    def __init__(self, variant="O", anneal=0.01, alpha=1.0, b=2.0, count_self=False, distance="cosine_similarity",
                 reducer=None, miner=None, on="embedding", target="label", **kwargs):
        super().__init__(on=on, target=target, **kwargs)
        self.variant = arguments.choice(variant, ranking.PNP_VARIANTS, "variant", self)
        self.anneal = arguments.positive(anneal, "anneal", self)
        self.alpha = arguments.positive(alpha, "alpha", self)
        self.b = arguments.positive(b, "b", self)
        self.count_self = arguments.boolean(count_self, "count_self", self)
        self.init_tuple(distance, reducer, miner)

    def pair_loss(self, embeddings, labels, sample_weight=None, ref_embeddings=None, ref_labels=None,
                  ref_mask=None, exclude_self=True):
        self.refuse_reference(ref_embeddings)
        return ranking.pnp_loss(embeddings, labels, self.variant, self.anneal, self.alpha, self.b, self.count_self,
                                sample_weight, **self.tuple_kwargs())

    def get_config(self):
        return {**super().get_config(), "variant": self.variant, "anneal": self.anneal, "alpha": self.alpha,
                "b": self.b, "count_self": self.count_self, **self.tuple_config()}


@keras.saving.register_keras_serializable(package="lossweave")
class InstanceLoss(_NoReference, TupleArguments, PairTerm):
    """pytorch-metric-learning's ``InstanceLoss``, after Zheng et al. (ACM TOMM 2020, Eq. 1-3): instances apart.

    Each row's softmax cross-entropy over ``scale`` times its cosine
    similarities to the batch's rows, its target the row at the rank of its
    label among the batch's distinct labels
    (:func:`lossweave.ops.ranking.instance_loss`, which says how this differs
    from the paper's learned instance classifier). Give each sample its own id
    (``labels = arange``): its target is then itself. ``scale`` defaults to
    PML's ``gamma=64``; with ``InstanceLoss(scale=gamma)`` the numbers are
    PML's ``InstanceLoss(gamma)``. No ``miner`` (PML refuses one too).

    Args:
        scale: ``gamma``, the scale of the cosine logits (> 0).
        distance: a :mod:`lossweave.distances` object or name (PML: ``"cosine_similarity"`` only; a distance
            ``d`` enters as ``-d``).
        reducer: a :mod:`lossweave.reducers` object for the rows' terms; ``None``: their mean (PML's
            ``MeanReducer``).
        on: the embedding output.
        target: the instance ids.
        **kwargs: ``validate``, ``missing`` and Layer arguments (see :class:`~lossweave.terms.Term`); no
            ``min_jaccard``: a row's target is fixed by position (the rank of its id), not by shared labels.

    Example:
        >>> import numpy as np
        >>> x = np.array([[1., 0.], [0., 1.]], "float32")
        >>> round(float(InstanceLoss(scale=1.0)(x, np.array([0, 1]))), 4)   # log(1 + e^-1)
        0.3133
    """

    pairs_by_position = True

    def __init__(self, scale=64.0, distance="cosine_similarity", reducer=None, on="embedding", target="label",
                 **kwargs):
        super().__init__(on=on, target=target, **kwargs)
        self.scale = arguments.positive(scale, "scale", self)
        self.init_tuple(distance, reducer, mines=False)

    def pair_loss(self, embeddings, labels, sample_weight=None, ref_embeddings=None, ref_labels=None,
                  ref_mask=None, exclude_self=True):
        self.refuse_reference(ref_embeddings)
        return ranking.instance_loss(embeddings, labels, self.scale, sample_weight, **self.tuple_kwargs())

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, **self.tuple_config()}
