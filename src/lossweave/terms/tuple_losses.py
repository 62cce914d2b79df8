"""More tuple losses as terms: NCA, margin (learnable beta), tuplet margin, angular, generalized lifted structure,
intra-pair variance, signal-to-noise contrastive, FastAP.

Thin shells over :mod:`lossweave.ops.tuple_losses` (the formulas, the
papers, their equation numbers and pytorch-metric-learning's choices are
documented there) on :class:`~lossweave.terms.pairs.PairTerm`: one embedding
output, class ids checked by the base (a bad label or a NaN/Inf embedding
raises ``InvalidInputError`` and the batch's loss is 0), float32 under any
dtype policy. ``distance=``, ``reducer=`` and ``miner=`` are the objects of
:mod:`lossweave.distances`, :mod:`lossweave.reducers` and
:mod:`lossweave.miners` (or their names); where a loss does not take one,
its docstring says why. Sample weights follow the library's one rule
(``docs/sample_weight.md``): a weight scales the terms its row anchors, the
denominators count tuples, weight 0 (or a ``missing`` label) removes the row
from every tuple. Only :class:`MarginLoss` owns a variable (its ``beta``).
"""

import keras

from lossweave import arguments
from lossweave.ops import tuple_losses as tuple_ops
from lossweave.terms.check import check_class_rows
from lossweave.terms.pairs import PairTerm, TupleArguments


class _TupleLoss(TupleArguments, PairTerm):
    """The terms here: the loss's own arguments (``loss_arguments``) go to ``loss_op`` and the config.

    A subclass names its op (``loss_op``, a function of ``ops.tuple_losses``)
    and its arguments, and calls ``init_tuple``; the parts (``distance``,
    ``reducer``, ``miner``, ``min_jaccard``) are :class:`TupleArguments`'s,
    with ``takes_distance = False`` for a loss of fixed geometry.
    """

    loss_arguments = ()
    loss_op = None  # each loss: staticmethod(<its function of lossweave.ops.tuple_losses>)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if not cls.__name__.startswith("_") and cls.loss_op is None:  # said when the class is written, not run
            raise TypeError(f"{cls.__name__} is a tuple loss without an op: set "
                            f"loss_op = staticmethod(<a function of lossweave.ops.tuple_losses>) in its class body.")

    def loss_kwargs(self):
        return {**{name: getattr(self, name) for name in self.loss_arguments}, **self.tuple_kwargs()}

    def pair_loss(self, embeddings, labels, sample_weight=None, ref_embeddings=None, ref_labels=None,
                  ref_mask=None, exclude_self=True):
        reference = {}
        if self.supports_reference:
            reference = {"ref_embeddings": ref_embeddings, "ref_labels": ref_labels, "ref_mask": ref_mask,
                         "exclude_self": exclude_self}
        elif ref_embeddings is not None:
            raise ValueError(f"{type(self).__name__} does not take a reference set (it is defined on the "
                             f"batch's own rows); wrap another loss in CrossBatchMemory.")
        return self.loss_op(embeddings, labels, sample_weight=sample_weight, **reference, **self.loss_kwargs())

    def get_config(self):
        return {**super().get_config(), **{name: getattr(self, name) for name in self.loss_arguments},
                **self.tuple_config()}


@keras.saving.register_keras_serializable(package="lossweave")
class NCALoss(_TupleLoss):
    """Neighbourhood components analysis loss (Goldberger et al., NeurIPS 2004, Eq. 1-2, log form).

    ``-log p_i`` with ``p_i`` the softmax mass of anchor ``i``'s positives
    over its neighbours (logits ``-scale d``); the mean over the anchors with
    a positive (:func:`lossweave.ops.tuple_losses.nca_loss`). Accepts a
    reference set (``CrossBatchMemory``).

    Args:
        scale: multiplies the logits (pytorch-metric-learning's ``softmax_scale``; paper: 1).
        distance: a :mod:`lossweave.distances` object or name (paper:
            ``"squared_euclidean"``; PML: ``SquaredEuclideanDistance(normalize_embeddings=True)``).
        reducer: a :mod:`lossweave.reducers` object for the anchors' terms; ``None``: their mean.
        miner: a :mod:`lossweave.miners` object; ``None``: every pair.
        on: model output holding the embeddings.
        target: target holding the class ids.
        **kwargs: ``min_jaccard`` (multi-hot labels: see :class:`~lossweave.terms.pairs.TupleArguments`),
            ``validate``, ``missing`` and Layer arguments (see :class:`~lossweave.terms.Term`).

    Example:
        >>> import numpy as np
        >>> x = np.array([[0.], [1.], [3.]], "float32")
        >>> round(float(NCALoss()(x, np.array([0, 0, 1]))), 4)
        0.0245
    """

    supports_reference = True
    loss_arguments = ("scale",)
    loss_op = staticmethod(tuple_ops.nca_loss)

    def __init__(self, scale=1.0, distance="squared_euclidean", reducer=None, miner=None, on="embedding",
                 target="label", **kwargs):
        super().__init__(on=on, target=target, **kwargs)
        self.scale = arguments.positive(scale, "scale", self)
        self.init_tuple(distance, reducer, miner)


@keras.saving.register_keras_serializable(package="lossweave")
class MarginLoss(_TupleLoss):
    """Margin-based loss with a learned boundary ``beta`` (Wu et al., "Sampling Matters", ICCV 2017, Eq. 3-4).

    ``[margin + y_ij (D_ij - beta)]_+`` over the positive (``y = 1``) and
    negative (``y = -1``) pairs, plus ``nu beta`` (Eq. 4); averaged over the
    non-zero terms (the authors' code and pytorch-metric-learning;
    :func:`lossweave.ops.tuple_losses.margin_loss`). ``beta`` is a trainable
    variable of the term (``term.betas``, one value, or one per class with
    ``num_classes``: the paper's ``beta^(class)``), saved with it. The paper
    draws its pairs with distance-weighted sampling: pass
    ``miner=lw.miners.DistanceWeightedMiner(dimension=..., seed=...)`` (or any
    miner). Accepts a reference set (``CrossBatchMemory``).

    Args:
        margin: the margin ``alpha`` (paper and PML: 0.2).
        beta: the initial boundary ``beta^(0)`` (paper and PML: 1.2).
        nu: weight of the ``beta`` regulariser (PML: 0; the paper's ``nu``).
        learn_beta: train ``beta`` (the paper; PML's default is ``False``).
        num_classes: ``None`` for one ``beta``, or the number of classes for
            one per class (labels are then checked to be below it).
        triplets: count every pair once per triplet it is in, as
            pytorch-metric-learning does without a miner (see the op).
        distance: a :mod:`lossweave.distances` object or name (paper:
            ``"euclidean"`` of normalised embeddings; PML:
            ``EuclideanDistance(normalize_embeddings=True)``).
        reducer: a :mod:`lossweave.reducers` object for the pair terms;
            ``None``: the mean over the non-zero ones.
        miner: a :mod:`lossweave.miners` object; ``None``: every pair.
        on: model output holding the embeddings.
        target: target holding the class ids.
        **kwargs: ``min_jaccard`` (multi-hot labels: see :class:`~lossweave.terms.pairs.TupleArguments`),
            ``validate``, ``missing`` and Layer arguments (see :class:`~lossweave.terms.Term`).

    Example:
        >>> import numpy as np
        >>> x = np.array([[0.], [1.], [1.5]], "float32")
        >>> round(float(MarginLoss()(x, np.array([0, 0, 1]))), 4)
        0.9
    """

    supports_reference = True
    loss_arguments = ("margin", "nu", "triplets")
    loss_op = staticmethod(tuple_ops.margin_loss)

    def __init__(self, margin=0.2, beta=1.2, nu=0.0, learn_beta=True, num_classes=None, triplets=False,
                 distance="euclidean", reducer=None, miner=None, on="embedding", target="label", **kwargs):
        super().__init__(on=on, target=target, **kwargs)
        self.margin = arguments.number(margin, "margin", self, low=0.0)
        self.beta = arguments.number(beta, "beta", self)
        self.nu = arguments.number(nu, "nu", self, low=0.0)
        self.learn_beta = arguments.boolean(learn_beta, "learn_beta", self)
        self.num_classes = arguments.optional(arguments.positive_int, num_classes, "num_classes", self)
        self.triplets = arguments.boolean(triplets, "triplets", self)
        self.init_tuple(distance, reducer, miner)

    def build(self, outputs_shape):
        # Made in build (which Keras's __call__, CrossBatchMemory, SelfSupervisedLoss and the Objective
        # call before any step), never on first use: a variable made while a step is traced (JAX inside
        # CrossBatchMemory, tf.function) would be a tracer. Not in __init__ either: the Objective names an
        # unbuilt term after its key first, and the variable's path follows.
        super().build(outputs_shape)
        self.betas = self.add_weight(
            name="beta", shape=(self.num_classes or 1,), initializer=keras.initializers.Constant(self.beta),
            trainable=self.learn_beta, dtype="float32", autocast=False,
        )

    def check_inputs(self, outputs, targets):
        if self.num_classes is None:
            return super().check_inputs(outputs, targets)
        return check_class_rows(self, outputs, targets, self.num_classes)

    def loss_kwargs(self):
        return {**super().loss_kwargs(), "beta": self.betas}

    def get_config(self):
        config = {**super().get_config(), "beta": self.beta, "learn_beta": self.learn_beta}
        if self.num_classes is not None:  # one beta: a pair term without a class count (and its checks)
            config["num_classes"] = self.num_classes
        return config


@keras.saving.register_keras_serializable(package="lossweave")
class TupletMarginLoss(_TupleLoss):
    """Tuplet margin loss (Yu & Tao, ICCV 2019, Eq. 5 and 7).

    Each positive pair's ``log(1 + sum_n exp(s (cos theta_an - cos(theta_ap
    - beta))))``, the mean over the positive pairs
    (:func:`lossweave.ops.tuple_losses.tuplet_margin_loss`). Defaults are
    pytorch-metric-learning's ``TupletMarginLoss`` (its ``margin=5.73``
    degrees is ``angular_margin=0.1`` radians). Accepts a reference set.

    Args:
        angular_margin: the slack margin ``beta`` in radians (0.1).
        scale: the scale ``s`` of the cosines (64).
        distance: a similarity (``is_inverted``) of :mod:`lossweave.distances`
            whose values are cosines (default ``"cosine_similarity"``; a
            distance is refused: the loss reads angles).
        reducer: a :mod:`lossweave.reducers` object for the positive pairs' terms; ``None``: their mean.
        miner: a :mod:`lossweave.miners` object; ``None``: every pair.
        on: model output holding the embeddings.
        target: target holding the class ids.
        **kwargs: ``min_jaccard`` (multi-hot labels: see :class:`~lossweave.terms.pairs.TupleArguments`),
            ``validate``, ``missing`` and Layer arguments (see :class:`~lossweave.terms.Term`).

    Example:
        >>> import numpy as np
        >>> x = np.array([[1., 0.], [1., 0.], [0., 1.]], "float32")
        >>> round(float(TupletMarginLoss(angular_margin=0.0, scale=1.0)(x, np.array([0, 0, 1]))), 4)
        0.3133
    """

    supports_reference = True
    loss_arguments = ("angular_margin", "scale")
    loss_op = staticmethod(tuple_ops.tuplet_margin_loss)

    def __init__(self, angular_margin=0.1, scale=64.0, distance="cosine_similarity", reducer=None, miner=None,
                 on="embedding", target="label", **kwargs):
        super().__init__(on=on, target=target, **kwargs)
        self.angular_margin = arguments.number(angular_margin, "angular_margin", self, low=0.0, high=3.141592653589793,
                                               hint="It is in radians (PML's 5.73 degrees is 0.1).")
        self.scale = arguments.positive(scale, "scale", self)
        self.init_tuple(distance, reducer, miner)
        if not self.distance.is_inverted:
            raise ValueError(f"{type(self).__name__}: received distance={self.distance!r}; expected a similarity "
                             f"whose values are cosines, e.g. 'cosine_similarity' (the loss reads angles).")


@keras.saving.register_keras_serializable(package="lossweave")
class AngularLoss(_TupleLoss):
    """Angular loss, N-pair form (Wang et al., ICCV 2017, Eq. 8-9).

    Each positive pair's ``log(1 + sum_n exp(4 tan^2(alpha) (x_a + x_p).x_n -
    2 (1 + tan^2(alpha)) x_a.x_p))`` on L2-normalised rows, the mean over the
    positive pairs (:func:`lossweave.ops.tuple_losses.angular_loss`;
    pytorch-metric-learning's ``AngularLoss(alpha=40)``). No ``distance``: the
    loss is defined by inner products of unit vectors (PML refuses any
    distance other than normalised Euclidean too). No reference set.

    Args:
        angle: the angle ``alpha`` in degrees, in ``(0, 90)`` (PML: 40; the paper tries 36-55).
        reducer: a :mod:`lossweave.reducers` object for the positive pairs' terms; ``None``: their mean.
        miner: a :mod:`lossweave.miners` object (mining on the cosine similarity); ``None``: every pair.
        on: model output holding the embeddings.
        target: target holding the class ids.
        **kwargs: ``min_jaccard`` (multi-hot labels: see :class:`~lossweave.terms.pairs.TupleArguments`),
            ``validate``, ``missing`` and Layer arguments (see :class:`~lossweave.terms.Term`).

    Example:
        >>> import numpy as np
        >>> x = np.array([[1., 0.], [1., 0.], [0., 1.]], "float32")
        >>> round(float(AngularLoss(angle=45.0)(x, np.array([0, 0, 1]))), 4)
        0.0181
    """

    takes_distance = False
    loss_arguments = ("angle",)
    loss_op = staticmethod(tuple_ops.angular_loss)

    def __init__(self, angle=40.0, reducer=None, miner=None, on="embedding", target="label", **kwargs):
        super().__init__(on=on, target=target, **kwargs)
        self.angle = arguments.number(angle, "angle", self, low=0.0, high=90.0, low_open=True, high_open=True,
                                      hint="It is in degrees.")
        self.init_tuple(reducer=reducer, miner=miner)


@keras.saving.register_keras_serializable(package="lossweave")
class GeneralizedLiftedStructureLoss(_TupleLoss):
    """Generalized lifted structure loss (Hermans, Beyer & Leibe, arXiv 2017, p. 4).

    Per anchor ``[LSE_p(D_ap - pos_margin) + LSE_n(neg_margin - D_an)]_+``,
    the mean over the anchors with a pair
    (:func:`lossweave.ops.tuple_losses.generalized_lifted_structure_loss`;
    pytorch-metric-learning's ``GeneralizedLiftedStructureLoss``). Accepts a
    reference set.

    Args:
        pos_margin: subtracted from the positives' distances (0).
        neg_margin: the margin of the negatives (1).
        distance: a :mod:`lossweave.distances` object or name (``"euclidean"``;
            PML: ``EuclideanDistance(normalize_embeddings=True)``).
        reducer: a :mod:`lossweave.reducers` object for the anchors' terms; ``None``: their mean.
        miner: a :mod:`lossweave.miners` object; ``None``: every pair.
        on: model output holding the embeddings.
        target: target holding the class ids.
        **kwargs: ``min_jaccard`` (multi-hot labels: see :class:`~lossweave.terms.pairs.TupleArguments`),
            ``validate``, ``missing`` and Layer arguments (see :class:`~lossweave.terms.Term`).

    Example:
        >>> import numpy as np
        >>> x = np.array([[0.], [2.], [2.5]], "float32")
        >>> round(float(GeneralizedLiftedStructureLoss()(x, np.array([0, 0, 1]))), 4)
        1.209
    """

    supports_reference = True
    loss_arguments = ("pos_margin", "neg_margin")
    loss_op = staticmethod(tuple_ops.generalized_lifted_structure_loss)

    def __init__(self, pos_margin=0.0, neg_margin=1.0, distance="euclidean", reducer=None, miner=None,
                 on="embedding", target="label", **kwargs):
        super().__init__(on=on, target=target, **kwargs)
        self.pos_margin = arguments.number(pos_margin, "pos_margin", self)
        self.neg_margin = arguments.number(neg_margin, "neg_margin", self)
        self.init_tuple(distance, reducer, miner)


@keras.saving.register_keras_serializable(package="lossweave")
class IntraPairVarianceLoss(_TupleLoss):
    """Intra-pair variance loss (Yu & Tao, "Deep Metric Learning with Tuplet Margin Loss", ICCV 2019).

    Positive pairs below ``(1 - pos_eps)`` times the positives' mean
    similarity and negatives above ``(1 + neg_eps)`` times the negatives'
    pay the square of the gap; each side's mean, added
    (:func:`lossweave.ops.tuple_losses.intra_pair_variance_loss`;
    pytorch-metric-learning's ``IntraPairVarianceLoss``). Usually added to
    :class:`TupletMarginLoss`, as in the paper (two terms of one
    ``Objective``). Accepts a reference set.

    The paper's ``L_pos`` and ``L_neg``; their equation number is not
    verified: an earlier note cited "Eq. 8", which could not be checked
    against the paper's text (pytorch-metric-learning's docs show the two
    equations without numbers; the authors released no code).

    Args:
        pos_eps: the positives' slack (0.01).
        neg_eps: the negatives' slack (0.01).
        distance: a :mod:`lossweave.distances` object or name (``"cosine_similarity"``).
        reducer: a :mod:`lossweave.reducers` object, for each side's pair terms; ``None``: their mean.
        miner: a :mod:`lossweave.miners` object; ``None``: every pair.
        on: model output holding the embeddings.
        target: target holding the class ids.
        **kwargs: ``min_jaccard`` (multi-hot labels: see :class:`~lossweave.terms.pairs.TupleArguments`),
            ``validate``, ``missing`` and Layer arguments (see :class:`~lossweave.terms.Term`).

    Example:
        >>> import numpy as np
        >>> x = np.array([[1., 0.], [0.6, 0.8], [1., 0.], [0., 1.]], "float32")
        >>> round(float(IntraPairVarianceLoss(pos_eps=0.0)(x, np.array([0, 0, 0, 1]))), 4)
        0.1057
    """

    supports_reference = True
    loss_arguments = ("pos_eps", "neg_eps")
    loss_op = staticmethod(tuple_ops.intra_pair_variance_loss)

    def __init__(self, pos_eps=0.01, neg_eps=0.01, distance="cosine_similarity", reducer=None, miner=None,
                 on="embedding", target="label", **kwargs):
        super().__init__(on=on, target=target, **kwargs)
        self.pos_eps = arguments.number(pos_eps, "pos_eps", self, low=0.0, high=1.0)
        self.neg_eps = arguments.number(neg_eps, "neg_eps", self, low=0.0)
        self.init_tuple(distance, reducer, miner)


@keras.saving.register_keras_serializable(package="lossweave")
class SNRContrastiveLoss(_TupleLoss):
    """Signal-to-noise-ratio contrastive loss (Yuan et al., CVPR 2019, Eq. 10-11).

    The contrastive hinge on the SNR distance, each part averaged over its
    non-zero terms, plus ``zero_mean_weight`` times the features' zero-mean
    regulariser (:func:`lossweave.ops.tuple_losses.snr_contrastive_loss`;
    pytorch-metric-learning's ``SignalToNoiseRatioContrastiveLoss`` with
    ``distance=SNRDistance(normalize_embeddings=True)``). Accepts a reference set.

    Args:
        pos_margin: SNR distance below which a positive pair costs nothing (0).
        neg_margin: the margin of the negative pairs (1).
        zero_mean_weight: ``lambda``, weight of ``mean_i |sum_k h_ik|`` (PML 2.x: 0).
        distance: a :mod:`lossweave.distances` object or name (``"snr"``, the
            paper's; any other distance gives a plain hinge contrastive loss).
        reducer: a :mod:`lossweave.reducers` object for each part; ``None``: the mean of its non-zero terms.
        miner: a :mod:`lossweave.miners` object; ``None``: every pair.
        on: model output holding the embeddings.
        target: target holding the class ids.
        **kwargs: ``min_jaccard`` (multi-hot labels: see :class:`~lossweave.terms.pairs.TupleArguments`),
            ``validate``, ``missing`` and Layer arguments (see :class:`~lossweave.terms.Term`).

    Example:
        >>> import numpy as np
        >>> x = np.array([[1., -1.], [2., -2.], [1., 1.]], "float32")
        >>> round(float(SNRContrastiveLoss(neg_margin=3.0)(x, np.array([0, 0, 1]))), 4)
        2.625
    """

    supports_reference = True
    loss_arguments = ("pos_margin", "neg_margin", "zero_mean_weight")
    loss_op = staticmethod(tuple_ops.snr_contrastive_loss)

    def __init__(self, pos_margin=0.0, neg_margin=1.0, zero_mean_weight=0.0, distance="snr", reducer=None,
                 miner=None, on="embedding", target="label", **kwargs):
        super().__init__(on=on, target=target, **kwargs)
        self.pos_margin = arguments.number(pos_margin, "pos_margin", self, low=0.0)
        self.neg_margin = arguments.number(neg_margin, "neg_margin", self, low=0.0)
        self.zero_mean_weight = arguments.number(zero_mean_weight, "zero_mean_weight", self, low=0.0)
        self.init_tuple(distance, reducer, miner)


@keras.saving.register_keras_serializable(package="lossweave")
class FastAPLoss(_TupleLoss):
    """FastAP, histogram-binned average precision (Cakir et al., CVPR 2019, Eq. 9-12).

    ``1 - FastAP`` of each anchor's ranking of the batch, the mean over the
    anchors with a positive (:func:`lossweave.ops.tuple_losses.fast_ap_loss`;
    the authors' code and pytorch-metric-learning's ``FastAPLoss(num_bins=10)``).
    No ``distance``: the histogram needs the distance's range, so it is the
    squared Euclidean distance of L2-normalised rows, in ``[0, 4]``. No
    ``miner``: the loss ranks the whole batch. No reference set.

    Args:
        num_bins: the number of histogram bins (10; the distance range has ``num_bins + 1`` centres).
        reducer: a :mod:`lossweave.reducers` object for the anchors' terms; ``None``: their mean.
        on: model output holding the embeddings.
        target: target holding the class ids.
        **kwargs: ``min_jaccard`` (multi-hot labels: see :class:`~lossweave.terms.pairs.TupleArguments`),
            ``validate``, ``missing`` and Layer arguments (see :class:`~lossweave.terms.Term`).

    Example:
        >>> import numpy as np
        >>> x = np.array([[1., 0.], [0., 1.], [1., 0.1]], "float32")
        >>> round(float(FastAPLoss()(x, np.array([0, 0, 1]))), 4)   # each positive ranks behind the negative
        0.5
    """

    takes_distance = False
    loss_arguments = ("num_bins",)
    loss_op = staticmethod(tuple_ops.fast_ap_loss)

    def __init__(self, num_bins=10, reducer=None, on="embedding", target="label", **kwargs):
        super().__init__(on=on, target=target, **kwargs)
        self.num_bins = arguments.positive_int(num_bins, "num_bins", self)
        self.init_tuple(reducer=reducer, mines=False)


__all__ = [
    "AngularLoss",
    "FastAPLoss",
    "GeneralizedLiftedStructureLoss",
    "IntraPairVarianceLoss",
    "MarginLoss",
    "NCALoss",
    "SNRContrastiveLoss",
    "TupletMarginLoss",
]
