"""Miners: which pairs or triplets a tuple loss uses (``miner=``), chosen inside the compiled step.

A miner reads the loss's distance matrix (in its larger-is-farther order: a
similarity is negated, so every miner works with every distance) and the
positive and negative pairs of the batch, and selects tuples; the loss then
computes its terms on them. Static shapes on every backend, no host round
trip, never a ``batch x batch x batch`` tensor (a triplet selection is a mask
of positive pairs with one negative column each, or a condition on the gap
``d(a, n) - d(a, p)`` the triplet loss evaluates one positive rank at a
time). No gradient flows through a selection. The selections are in
:mod:`lossweave.ops.miners`.

Any miner works with any tuple loss, as in pytorch-metric-learning: a pair
loss (contrastive, multi-similarity, circle, NT-Xent, lifted structure) uses
the pairs of a triplet selection (the positive pairs with a triplet and the
negatives in one), a triplet loss every triplet of a pair selection's
positives and negatives of one anchor. Unlike pytorch-metric-learning, whose
miners have their own distance (default: normalised Euclidean), a miner here
mines with the loss's distance: pass the loss the distance you want both to use.

=========================  =====================================================================
class                      selects (pytorch-metric-learning's class of the same name unless said)
=========================  =====================================================================
``TripletMarginMiner``     triplets by their gap: ``"all"`` / ``"hard"`` / ``"semihard"`` / ``"easy"``
``BatchHardMiner``         per anchor its farthest positive and nearest negative (Hermans et al. 2017)
``BatchEasyHardMiner``     per anchor an easy/semi-hard/hard positive and negative (Xuan et al. 2020)
``SemiHardNegativeMiner``  per positive pair TF Addons' semi-hard negative (FaceNet; not in PML)
``MultiSimilarityMiner``   the pairs of Eq. 9-10 of Wang et al., CVPR 2019
``PairMarginMiner``        positives farther than ``pos_margin``, negatives nearer than ``neg_margin``
``HDCMiner``               the hardest fraction of the positive and of the negative pairs
``AngularMiner``           triplets whose angle at the negative exceeds ``angle`` (Wang et al. 2017)
``DistanceWeightedMiner``  per positive pair a negative drawn by ``q(d)^-1`` (Wu et al. 2017; seeded)
``UniformHistogramMiner``  pairs drawn uniformly from each bin of the distance histogram (seeded)
=========================  =====================================================================

The two seeded miners draw from a ``keras.random.SeedGenerator`` whose state
is a variable of the miner: they are Keras layers (:class:`SeededMiner`), so
the loss that holds one tracks the state, the compiled step moves it, and a
``.keras`` file saves it (a reloaded loss draws what the original would have
drawn next). Give ``seed=`` for reproducible draws.
"""

import keras

from lossweave import arguments
from lossweave._config_object import ConfigObject, resolve
from lossweave._seed_state import SavesSeedState
from lossweave.ops import miners as miner_ops
from lossweave.ops.pair_structure import checked_min_jaccard


@keras.saving.register_keras_serializable(package="lossweave")
class Miner(ConfigObject):
    """Base of the miners: ``mine(d, positives, negatives, inverted) -> lossweave.ops.miners.Mined``.

    ``d`` is the ``(n, m)`` distance matrix in its larger-is-farther order,
    ``positives`` / ``negatives`` the bool ``(n, m)`` pairs that take part,
    ``inverted`` whether the loss's distance is a similarity (then ``d`` is
    minus it, and a margin given in its units is negated).

    Every miner takes ``min_jaccard`` (checked here, in ``get_config`` when
    given): with multi-hot labels ``(batch, classes)`` it mines from the
    positive pairs whose Jaccard index ``|Y_i & Y_j| / |Y_i | Y_j|`` is at
    least it (``None``: those that share a label; class ids: ignored). A
    miner sees masks, not labels: the loss that holds it builds its pair
    structure with the larger of its own and the miner's threshold
    (:class:`lossweave.terms.pairs.TupleArguments`), so the tuples mined are
    those the miner's rule allows. A bare ``lossweave.ops`` loss call reads
    no miner's threshold: pass it the op's ``min_jaccard=`` (the larger of
    the two) as the loss does.

    Args:
        min_jaccard: ``None`` or a number in ``(0, 1]``.
    """

    def __init__(self, min_jaccard=None):
        self.min_jaccard = checked_min_jaccard(min_jaccard, self)

    def get_config(self):
        config = super().get_config()
        if self.min_jaccard is not None:  # absent by default: configs saved before it still match
            config["min_jaccard"] = self.min_jaccard
        return config

    def __repr__(self):
        text = super().__repr__()
        if self.min_jaccard is None:
            return text
        return f"{text[:-1]}{', ' if not text.endswith('()') else ''}min_jaccard={self.min_jaccard!r})"

    def mine(self, d, positives, negatives, inverted=False):
        raise NotImplementedError(f"{type(self).__name__} must implement mine.")


@keras.saving.register_keras_serializable(package="lossweave")
class TripletMarginMiner(Miner):
    """Triplets by their gap ``g = d(a, n) - d(a, p)``: pytorch-metric-learning's ``TripletMarginMiner``.

    ``"all"``: ``g <= margin`` (every triplet that violates the margin);
    ``"hard"``: those with ``g <= 0`` too; ``"semihard"``: ``0 < g <=
    margin``; ``"easy"``: ``g > margin``. For a similarity ``g = s(a, p) -
    s(a, n)``.

    Args:
        margin: the margin of the selection (in the distance's units).
        type_of_triplets: ``"all"``, ``"hard"``, ``"semihard"`` or ``"easy"``.
        min_jaccard: the positives of multi-hot labels (see :class:`Miner`; ``None``: sharing a label).

    Example:
        >>> import numpy as np
        >>> import lossweave as lw
        >>> x, y = np.array([[0.], [1.], [1.5], [3.]], "float32"), np.array([0, 0, 1, 1])
        >>> miner = TripletMarginMiner(margin=1.0, type_of_triplets="hard")
        >>> round(float(lw.ops.pairs.triplet_loss(x, y, miner=miner)), 4)
        1.5
    """

    _config = ("margin", "type_of_triplets")

    def __init__(self, margin=0.2, type_of_triplets="all", min_jaccard=None):
        super().__init__(min_jaccard)
        self.margin = arguments.number(margin, "margin", self)
        self.type_of_triplets = arguments.choice(type_of_triplets, miner_ops.TRIPLET_TYPES, "type_of_triplets", self)

    def mine(self, d, positives, negatives, inverted=False):
        return miner_ops.triplet_margin(positives, negatives, self.margin, self.type_of_triplets)


@keras.saving.register_keras_serializable(package="lossweave")
class BatchEasyHardMiner(Miner):
    """One triplet per anchor, an easy, semi-hard or hard positive and negative (Xuan et al., WACV 2020).

    pytorch-metric-learning's ``BatchEasyHardMiner``: the easy positive is the
    nearest, the hard one the farthest; the easy negative the farthest, the
    hard one the nearest; a semi-hard one is the hardest on the right side
    of the other pick. Its ``"all"`` strategy and value ranges are not
    offered (use ``TripletMarginMiner`` or no miner for every triplet).

    Args:
        pos_strategy: ``"easy"``, ``"semihard"`` or ``"hard"``.
        neg_strategy: ``"easy"``, ``"semihard"`` or ``"hard"`` (not both ``"semihard"``).
        min_jaccard: the positives of multi-hot labels (see :class:`Miner`; ``None``: sharing a label).

    Example:
        >>> import numpy as np
        >>> import lossweave as lw
        >>> x, y = np.array([[0.], [1.], [1.5], [3.]], "float32"), np.array([0, 0, 1, 1])
        >>> round(float(lw.ops.pairs.triplet_loss(x, y, miner=BatchEasyHardMiner())), 4)
        0.3333
    """

    _config = ("pos_strategy", "neg_strategy")

    def __init__(self, pos_strategy="easy", neg_strategy="semihard", min_jaccard=None):
        super().__init__(min_jaccard)
        self.pos_strategy = arguments.choice(pos_strategy, miner_ops.BATCH_STRATEGIES, "pos_strategy", self)
        self.neg_strategy = arguments.choice(neg_strategy, miner_ops.BATCH_STRATEGIES, "neg_strategy", self)
        if self.pos_strategy == self.neg_strategy == "semihard":
            raise ValueError(f"{type(self).__name__}: received pos_strategy='semihard' and "
                             f"neg_strategy='semihard'; expected at most one semi-hard pick (each is defined "
                             f"by the other).")

    def mine(self, d, positives, negatives, inverted=False):
        return miner_ops.batch_easy_hard(d, positives, negatives, self.pos_strategy, self.neg_strategy)


@keras.saving.register_keras_serializable(package="lossweave")
class BatchHardMiner(BatchEasyHardMiner):
    """Per anchor its farthest positive and nearest negative: batch-hard (Hermans, Beyer & Leibe 2017, Eq. 5).

    ``TripletLoss(mining="batch-hard")`` is ``TripletLoss(miner=BatchHardMiner())``.

    Example:
        >>> import numpy as np
        >>> import lossweave as lw
        >>> x, y = np.array([[0.], [1.], [1.5], [3.]], "float32"), np.array([0, 0, 1, 1])
        >>> round(float(lw.ops.pairs.triplet_loss(x, y, miner=BatchHardMiner())), 4)
        1.125
    """

    _config = ()

    def __init__(self, min_jaccard=None):
        super().__init__("hard", "hard", min_jaccard)


@keras.saving.register_keras_serializable(package="lossweave")
class SemiHardNegativeMiner(Miner):
    """Per positive pair its semi-hard negative, as TF Addons' ``TripletSemiHardLoss`` (Schroff et al., CVPR 2015).

    For ``(a, p)`` the nearest negative farther than ``p``, else the farthest
    negative: one triplet per positive pair. ``TripletLoss()`` (its default
    ``mining="semi-hard"``) is ``TripletLoss(miner=SemiHardNegativeMiner())``.
    pytorch-metric-learning has no such miner (its ``TripletMarginMiner(type_of_triplets="semihard")``
    keeps every semi-hard triplet).

    Example:
        >>> import numpy as np
        >>> import lossweave as lw
        >>> x, y = np.array([[0.], [1.], [1.5], [3.]], "float32"), np.array([0, 0, 1, 1])
        >>> round(float(lw.ops.pairs.triplet_loss(x, y, miner=SemiHardNegativeMiner())), 4)
        0.5
    """

    def mine(self, d, positives, negatives, inverted=False):
        return miner_ops.semi_hard(d, positives, negatives)


@keras.saving.register_keras_serializable(package="lossweave")
class MultiSimilarityMiner(Miner):
    """The pair mining of multi-similarity loss (Wang, Han, Huang, Dong & Scott, CVPR 2019, Eq. 9-10).

    A negative is kept when it is closer than the anchor's farthest positive
    plus ``epsilon``, a positive when it is farther than the nearest negative
    minus ``epsilon`` (both strict). ``MultiSimilarityLoss()`` (``mining=True``)
    is ``MultiSimilarityLoss(mining=False, miner=MultiSimilarityMiner(epsilon))``.

    Args:
        epsilon: the margin (>= 0; paper and pytorch-metric-learning: 0.1).
        min_jaccard: the positives of multi-hot labels (see :class:`Miner`; ``None``: sharing a label).

    Example:
        >>> import numpy as np
        >>> import lossweave as lw
        >>> x = np.array([[1., 0.], [0.6, 0.8], [0.8, 0.6], [0., 1.]], "float32")
        >>> y = np.array([0, 0, 1, 1])
        >>> round(float(lw.ops.multi_similarity_loss(x, y, mining=False, miner=MultiSimilarityMiner())), 4)
        0.5868
    """

    _config = ("epsilon",)

    def __init__(self, epsilon=0.1, min_jaccard=None):
        super().__init__(min_jaccard)
        self.epsilon = arguments.number(epsilon, "epsilon", self, low=0.0)

    def mine(self, d, positives, negatives, inverted=False):
        return miner_ops.multi_similarity(d, positives, negatives, self.epsilon)


@keras.saving.register_keras_serializable(package="lossweave")
class PairMarginMiner(Miner):
    """Positive pairs farther than ``pos_margin`` and negative pairs nearer than ``neg_margin``.

    pytorch-metric-learning's ``PairMarginMiner``; with a similarity the
    margins are similarities (positives with ``s < pos_margin``, negatives
    with ``s > neg_margin``).

    Args:
        pos_margin: positives at or below it (a distance) are left out.
        neg_margin: negatives at or above it (a distance) are left out.
        min_jaccard: the positives of multi-hot labels (see :class:`Miner`; ``None``: sharing a label).

    Example:
        >>> import numpy as np
        >>> import lossweave as lw
        >>> x, y = np.array([[0.], [1.], [1.5], [3.]], "float32"), np.array([0, 0, 1, 1])
        >>> round(float(lw.ops.pairs.contrastive_loss(x, y, miner=PairMarginMiner(1.2, 1.0))), 4)
        0.625
    """

    _config = ("pos_margin", "neg_margin")

    def __init__(self, pos_margin=0.2, neg_margin=0.8, min_jaccard=None):
        super().__init__(min_jaccard)
        self.pos_margin = arguments.number(pos_margin, "pos_margin", self)
        self.neg_margin = arguments.number(neg_margin, "neg_margin", self)

    def mine(self, d, positives, negatives, inverted=False):
        sign = -1.0 if inverted else 1.0
        return miner_ops.pair_margin(d, positives, negatives, sign * self.pos_margin, sign * self.neg_margin)


@keras.saving.register_keras_serializable(package="lossweave")
class HDCMiner(Miner):
    """The hardest ``filter_percentage`` of the positive and of the negative pairs (Yuan et al., ICCV 2017).

    "Hard-Aware Deeply Cascaded Embedding": pytorch-metric-learning's
    ``HDCMiner``: the ``ceil(filter_percentage * count)`` farthest positive
    pairs and nearest negative pairs of the batch (a pair tied with the last
    one kept is kept too).

    Args:
        filter_percentage: the fraction kept, in ``(0, 1]``.
        min_jaccard: the positives of multi-hot labels (see :class:`Miner`; ``None``: sharing a label).

    Example:
        >>> import numpy as np
        >>> import lossweave as lw
        >>> x, y = np.array([[0.], [1.], [1.5], [3.]], "float32"), np.array([0, 0, 1, 1])
        >>> round(float(lw.ops.pairs.contrastive_loss(x, y, miner=HDCMiner(0.5))), 4)
        0.4167
    """

    _config = ("filter_percentage",)

    def __init__(self, filter_percentage=0.5, min_jaccard=None):
        super().__init__(min_jaccard)
        self.filter_percentage = arguments.number(filter_percentage, "filter_percentage", self, low=0.0,
                                                  high=1.0, low_open=True)

    def mine(self, d, positives, negatives, inverted=False):
        return miner_ops.hdc(d, positives, negatives, self.filter_percentage)


@keras.saving.register_keras_serializable(package="lossweave")
class AngularMiner(Miner):
    """Triplets whose angle at the negative exceeds ``angle``: pytorch-metric-learning's ``AngularMiner``.

    Wang, Zhou, Wen, Liu & Lin, "Deep Metric Learning with Angular Loss",
    ICCV 2017, Sec. 3.2 (Eq. 4-5): with ``c = (a + p) / 2`` the angle at
    ``n`` is ``atan(|a - p| / (2 |n - c|))``; a triplet is kept when it is
    larger than ``angle`` (degrees). ``|n - c|`` is computed from the
    batch's pairwise distances (the median of the triangle), so the loss's
    distance must be Euclidean (``lossweave.distances.EuclideanDistance``,
    normalised or not) or a cosine similarity (unit rows: ``d^2 = 2 - 2
    cos``). pytorch-metric-learning 2.9 asserts a normalised distance but
    measures the angle on the raw embeddings (its
    ``LpDistance.pairwise_distance`` does not normalise):
    ``EuclideanDistance()`` gives its triplets, ``EuclideanDistance(True)``
    or ``CosineSimilarity()`` the angle of the unit embeddings. It mines the
    batch against itself, not a reference set (``CrossBatchMemory``). The
    triplet test reads ``d(p, n)``: a caller passes each positive rank's
    mask to ``Mined.gap(g, positive)`` (:mod:`lossweave.ops.miners`).

    Args:
        angle: the threshold in degrees, ``0 <= angle < 90`` (pytorch-metric-learning: 20).
        min_jaccard: the positives of multi-hot labels (see :class:`Miner`; ``None``: sharing a label).

    Example:
        >>> import numpy as np
        >>> import lossweave as lw
        >>> x = np.array([[0., 0.], [1., 0.], [0.5, 0.2], [3., 0.]], "float32")
        >>> y = np.array([0, 0, 1, 1])
        >>> round(float(lw.ops.pairs.contrastive_loss(x, y, neg_margin=2.0, miner=AngularMiner(45.0))), 4)
        1.3117
    """

    _config = ("angle",)

    def __init__(self, angle=20.0, min_jaccard=None):
        super().__init__(min_jaccard)
        self.angle = arguments.number(angle, "angle", self, low=0.0, high=90.0, high_open=True,
                                      hint="(degrees)")

    def mine(self, d, positives, negatives, inverted=False):
        return miner_ops.angular(d, positives, negatives, self.angle, inverted)


@keras.saving.register_keras_serializable(package="lossweave")
class SeededMiner(SavesSeedState, Miner, keras.layers.Layer):
    """Base of the miners that draw at random: a Keras layer holding a ``keras.random.SeedGenerator``.

    The generator's state is the layer's variable: a loss that holds the
    miner tracks it as a sub-layer, the compiled step moves it on every
    backend, and :class:`lossweave._seed_state.SavesSeedState` saves it in a
    ``.keras`` file. Two miners are equal only when they are the same object
    (each has its own state). Used in a function of :mod:`lossweave.ops` the
    miner advances its generator on each call (eager), as
    ``keras.random`` does with a ``SeedGenerator``.

    Args:
        seed: an int (reproducible draws) or ``None``.
        min_jaccard: the positives of multi-hot labels (see :class:`Miner`; ``None``: sharing a label).
        **kwargs: Layer arguments (``name``, ``dtype``).
    """

    _config = ("seed",)

    def __init__(self, seed=None, min_jaccard=None, **kwargs):
        arguments.check_keywords(self, kwargs)
        keras.layers.Layer.__init__(self, **kwargs)
        Miner.__init__(self, min_jaccard)
        self.seed = arguments.seed(seed, self)
        self.seed_generator = keras.random.SeedGenerator(self.seed)
        self.built = True

    def get_config(self):
        return {**keras.layers.Layer.get_config(self), **Miner.get_config(self)}
    __eq__ = object.__eq__
    __hash__ = object.__hash__
    __repr__ = Miner.__repr__


@keras.saving.register_keras_serializable(package="lossweave")
class DistanceWeightedMiner(SeededMiner):
    """Distance weighted sampling (Wu, Manmatha, Smola & Krähenbühl, "Sampling Matters", ICCV 2017, Sec. 4).

    Pairwise distances of points spread uniformly on the unit sphere of
    ``R^n`` have the density ``q(d) ~ d^(n-2) (1 - d^2/4)^((n-3)/2)``; every
    (anchor, positive) pair gets one negative drawn with probability
    ``~ q(max(d, cutoff))^-1``, 0 for negatives at ``d >= nonzero_loss_cutoff``
    (they give no margin loss). The draw follows the authors' code (MXNet
    ``DistanceWeightedSampling``: one negative per positive pair);
    pytorch-metric-learning draws ``#class`` random positives per anchor
    instead, with replacement. An anchor without an eligible negative has no
    triplet (pytorch-metric-learning's choice; the authors' code falls back
    to a uniform draw over the whole batch). A pair loss uses the drawn
    triplets' pairs.

    The distances must be Euclidean between unit-norm embeddings
    (``distance=lossweave.distances.EuclideanDistance(normalize_embeddings=True)``,
    what pytorch-metric-learning asserts) or a cosine similarity (turned into
    ``sqrt(2 - 2 cos)``).

    Args:
        dimension: ``n``, the embedding's width (pytorch-metric-learning
            reads it from the embeddings; a miner sees only the distances).
        cutoff: distances below it are raised to it before weighting (paper and pytorch-metric-learning: 0.5).
        nonzero_loss_cutoff: negatives at or beyond it are never drawn (1.4).
        seed: an int for reproducible draws, or ``None``.
        min_jaccard: the positives of multi-hot labels (see :class:`Miner`; ``None``: sharing a label).
        **kwargs: Layer arguments (``name``).

    Example:
        >>> import numpy as np
        >>> import lossweave as lw
        >>> x = np.array([[1., 0.], [0.8, 0.6], [0.6, 0.8], [0., 1.]], "float32")
        >>> y = np.array([0, 0, 1, 1])
        >>> miner = DistanceWeightedMiner(dimension=2, seed=1)
        >>> loss = lw.ops.pairs.triplet_loss(x, y, margin=0.2, metric=lw.distances.CosineSimilarity(), miner=miner)
        >>> bool(loss >= 0.0)
        True
    """

    _config = ("dimension", "cutoff", "nonzero_loss_cutoff", "seed")

    def __init__(self, dimension, cutoff=0.5, nonzero_loss_cutoff=1.4, seed=None, min_jaccard=None, **kwargs):
        super().__init__(seed, min_jaccard, **kwargs)
        self.dimension = arguments.positive_int(dimension, "dimension", self)
        self.cutoff = arguments.number(cutoff, "cutoff", self, low=0.0)
        self.nonzero_loss_cutoff = arguments.number(nonzero_loss_cutoff, "nonzero_loss_cutoff", self,
                                                    low=0.0, low_open=True)

    def mine(self, d, positives, negatives, inverted=False):
        return miner_ops.distance_weighted(d, positives, negatives, self.dimension, self.cutoff,
                                           self.nonzero_loss_cutoff, self.seed_generator, inverted)


@keras.saving.register_keras_serializable(package="lossweave")
class UniformHistogramMiner(SeededMiner):
    """Pairs drawn uniformly across the bins of the distance histogram: pytorch-metric-learning's ``UniformHistogramMiner``.

    The positive pairs' distances are cut into ``num_bins`` equal bins
    between their smallest and largest value and ``pos_per_bin`` pairs are
    drawn uniformly from each bin; the negative pairs likewise with
    ``neg_per_bin``. Unlike pytorch-metric-learning, which draws with
    replacement (a pair may be drawn twice, a bin with 3 pairs still gives
    ``pos_per_bin`` draws), a pair is drawn at most once: a bin keeps
    ``min(count, per_bin)`` distinct pairs (a selection is a mask). Works
    with any distance (bins of a similarity are bins of its negation). A
    triplet loss forms every triplet of an anchor's drawn positives and negatives.

    Args:
        num_bins: the number of bins (>= 1; pytorch-metric-learning: 100).
        pos_per_bin: positive pairs drawn per bin (>= 1; 10).
        neg_per_bin: negative pairs drawn per bin (>= 1; 10).
        seed: an int for reproducible draws, or ``None``.
        min_jaccard: the positives of multi-hot labels (see :class:`Miner`; ``None``: sharing a label).
        **kwargs: Layer arguments (``name``).

    Example:
        >>> import numpy as np
        >>> import lossweave as lw
        >>> x, y = np.array([[0.], [1.], [1.5], [3.]], "float32"), np.array([0, 0, 1, 1])
        >>> miner = UniformHistogramMiner(num_bins=2, pos_per_bin=5, neg_per_bin=5, seed=0)
        >>> round(float(lw.ops.pairs.contrastive_loss(x, y, miner=miner)), 4)  # every pair fits in its bin
        0.2917
    """

    _config = ("num_bins", "pos_per_bin", "neg_per_bin", "seed")

    def __init__(self, num_bins=100, pos_per_bin=10, neg_per_bin=10, seed=None, min_jaccard=None, **kwargs):
        super().__init__(seed, min_jaccard, **kwargs)
        self.num_bins = arguments.integer(num_bins, "num_bins", self, low=1, high=2 ** 20)
        self.pos_per_bin = arguments.positive_int(pos_per_bin, "pos_per_bin", self)
        self.neg_per_bin = arguments.positive_int(neg_per_bin, "neg_per_bin", self)

    def mine(self, d, positives, negatives, inverted=False):
        return miner_ops.uniform_histogram(d, positives, negatives, self.num_bins, self.pos_per_bin,
                                           self.neg_per_bin, self.seed_generator)


NAMES = {
    "semi-hard": SemiHardNegativeMiner,
    "batch-hard": BatchHardMiner,
    "multi-similarity": MultiSimilarityMiner,
}


def get(value, owner="miner", argument="miner"):
    """A :class:`Miner` from an object, a name of ``NAMES``, a serialized config, or ``None`` (``None``).

    Example:
        >>> get("batch-hard")
        BatchHardMiner()
    """
    return resolve(value, Miner, NAMES, argument, owner)


__all__ = [
    "AngularMiner",
    "BatchEasyHardMiner",
    "BatchHardMiner",
    "DistanceWeightedMiner",
    "HDCMiner",
    "Miner",
    "MultiSimilarityMiner",
    "NAMES",
    "PairMarginMiner",
    "SeededMiner",
    "SemiHardNegativeMiner",
    "TripletMarginMiner",
    "UniformHistogramMiner",
    "get",
]
