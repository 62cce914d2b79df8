"""Pair-based metric-learning terms: contrastive, triplet, lifted structure, N-pairs.

Thin shells over ``lossweave.ops.pairs`` on the one ``Term`` protocol: each
declares its inputs (one embedding output, class ids checked by
``check_pair_rows``: >= 0, sparse; finite features) and implements
``pair_loss``; the base checks, and returns 0 when the check failed (the
step then raises ``InvalidInputError``). They own no variables.

Sample weights follow the library's one rule (``docs/sample_weight.md``):
``w_i`` scales the pairs or triplets anchored at row ``i``, the mean counts
the tuples, and a row of weight 0 takes part in no pair. ``missing=`` labels
get weight 0, so they are left out of every pair; the mean is then over the
pairs of the labelled rows.

Terms that accept a reference set of partners (``supports_reference``) can be
wrapped by ``lossweave.terms.CrossBatchMemory``; their ``pair_loss(embeddings,
labels, sample_weight, ref_embeddings=None, ref_labels=None, ref_mask=None,
exclude_self=True)`` is the loss without the check.

Several devices: every pair term forms its tuples over the **global** batch.
Under JAX's ``keras.distribution.DataParallel`` the step is one global
program. Under a ``tf.distribute`` strategy ``PairTerm.compute_loss`` first
all-gathers the embeddings, labels and sample weights of every replica
(``lossweave._backend.all_gather``, O(global batch x dim)), so each replica
computes the loss of the global batch, mining and reducer included. The
collective's gradient (TensorFlow's ``ReplicaContext.all_gather``: the sum
over the replicas of the gradients of the gathered rows, sliced to the
replica's own rows) gives each replica ``sum_r dL_r/dx_i`` for its own rows
``x_i`` only; with the ``1 / replicas`` by which Keras (and the
``Objective``) scales each replica's loss, that is ``dL/dx_i`` of the one
global loss, and the replicas' parameter gradients, summed by the
optimizer, equal one device's (``tests/test_distribution.py``, 2 and 4
replicas, 1e-5). A subclass that overrides ``compute_loss`` gathers with
``global_batch``. On PyTorch (one process per device under DDP) each process
sees only its own batch: ``docs/distributed.md``.
"""

import contextlib
import threading

import keras

from lossweave import _backend as backend
from lossweave import arguments
from lossweave import distances as distance_objects
from lossweave import miners as miner_objects
from lossweave import reducers as reducer_objects
from lossweave.ops import pair_structure
from lossweave.ops import pairs as pair_ops
from lossweave.terms.base import Term


@keras.saving.register_keras_serializable(package="lossweave")
class PairTerm(Term):
    """Base of the pair terms: one embedding output, class-id labels, a checked batch.

    Subclasses implement ``pair_loss``. ``supports_reference`` says whether
    it accepts a reference set (``CrossBatchMemory`` needs one).

    Args:
        on: model output holding the embeddings ``(batch, dim)``.
        target: target holding the class ids (sparse, ``(batch,)`` or ``(batch, 1)``).
        **kwargs: ``validate``, ``missing`` and Layer arguments (see :class:`~lossweave.terms.Term`).
    """

    supports_reference = False
    reads = "embedding"
    input_checks = "pair_rows"
    weights_per = "tuple"  # weight 0 leaves a row out of every pair; means count pairs, not rows

    def __init__(self, on="embedding", target="label", **kwargs):
        super().__init__(on=on, target=target, **kwargs)

    def pair_loss(self, embeddings, labels, sample_weight=None, ref_embeddings=None, ref_labels=None,
                  ref_mask=None, exclude_self=True):
        """The loss of the batch (or of the batch against a reference set), without the input check."""
        raise NotImplementedError(f"{type(self).__name__} must implement pair_loss.")

    def compute_loss(self, outputs, targets, sample_weight, training):
        return self.pair_loss(*global_batch(outputs, targets, sample_weight))


def global_batch(*tensors):
    """The tensors of the global batch: under ``tf.distribute``, every replica's rows concatenated in order.

    Each tensor (or ``None``) is all-gathered along axis 0 over the replicas
    of a ``tf.distribute`` step; on one device, on JAX (one global program)
    and on PyTorch the tensors are returned as they are. Gradients flow back
    to each replica's own rows (see the module docstring for why the
    replicas' gradients then add up to one device's). Every tuple loss
    gathers with it before forming its tuples (``PairTerm.compute_loss``).

    Example:
        >>> import numpy as np
        >>> x, y = global_batch(np.ones((2, 3), "float32"), np.array([0, 1]))
        >>> x.shape, y.tolist()
        ((2, 3), [0, 1])
    """
    return backend.all_gather(tensors)


# Per thread: {id(term): reducer} of the open TupleArguments.reducing_with blocks. A context, not an argument:
# the override must reach the reducer of every subclass's pair_loss (and of a CrossBatchMemory's inner term)
# without a new parameter in each, and a thread-local one because tf.distribute runs a replica per thread.
_REDUCING = threading.local()


class TupleArguments:
    """``distance=``, ``reducer=``, ``miner=``, ``min_jaccard=``: the composable parts of a tuple loss.

    ``distance``, ``reducer`` and ``miner`` are given as objects of
    :mod:`lossweave.distances`, :mod:`lossweave.reducers` or
    :mod:`lossweave.miners`, as one of their names (``distance="euclidean"``,
    the strings the losses always took) or as a saved config, and kept as the
    object (so a ``.keras`` file written before they were objects still
    loads). ``None`` reducer / miner: the loss's own (the paper's mean; every
    tuple, or the loss's ``mining``). A loss declares what it takes:
    ``takes_distance = False`` for a loss of fixed geometry (no
    ``distance``: its config and its op's arguments have none), and
    ``init_tuple(..., mines=False)`` for one without a miner.

    ``min_jaccard`` (a keyword of every tuple loss, taken here): the rule
    that makes a pair of multi-hot label rows ``(batch, classes)`` a positive
    (:func:`lossweave.ops.pair_structure.label_relation`): ``None`` (the
    default) shares any label; a number ``t`` in ``(0, 1]`` needs a Jaccard
    index ``|Y_i & Y_j| / |Y_i | Y_j| >= t`` (pairs that share fewer labels
    are neither positive nor negative). Class-id labels give the same pairs
    for every value (it is ignored, not refused: a config can serve both
    kinds of data). A miner's ``min_jaccard`` narrows the positives it mines
    from; the loss forms its tuples with the larger of the two thresholds
    (the tuples a miner picks are then those it would pick with its own
    rule). It is in ``get_config`` when given. The ops receive it as their
    ``min_jaccard=`` argument, with the other parts (:meth:`tuple_kwargs`),
    so a ``CrossBatchMemory`` around the loss (it calls the loss's
    ``pair_loss``) and ``TupleStatistics`` (it reads
    :meth:`tuple_min_jaccard`) see the same rule. A loss whose pairs are
    fixed by position, not formed from labels (``pairs_by_position = True``:
    ``NPairsLoss``, ``InstanceLoss``, ``TwoViewNTXentLoss``), refuses it.
    """

    takes_distance = True
    pairs_by_position = False

    def __init__(self, *args, min_jaccard=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.min_jaccard = pair_structure.checked_min_jaccard(min_jaccard, self)
        if self.min_jaccard is not None and self.pairs_by_position:
            raise ValueError(
                f"{type(self).__name__}: received min_jaccard={self.min_jaccard!r}; this loss takes no "
                f"min_jaccard: its positive of a row is fixed by position (the row's pair or view), not formed "
                f"from shared labels, so no threshold on shared labels applies. Leave min_jaccard out, or use a "
                f"loss that forms its pairs from labels (SupConLoss, NTXentLoss, ContrastiveLoss, ...) for "
                f"multi-hot labels."
            )

    def tuple_min_jaccard(self):
        """The threshold the loss's tuples are formed with: the larger of its ``min_jaccard`` and its miner's."""
        given = [v for v in (self.min_jaccard, getattr(getattr(self, "miner", None), "min_jaccard", None))
                 if v is not None]
        return max(given) if given else None

    @property
    def reducer(self):
        """The reducer: the one given, or, inside ``reducing_with`` in this thread, that block's."""
        override = getattr(_REDUCING, "by_term", {}).get(id(self))
        return self._reducer if override is None else override

    @reducer.setter
    def reducer(self, value):
        self._reducer = value

    @contextlib.contextmanager
    def reducing_with(self, reducer):
        """Inside the block, in this thread only, the loss reduces its tuples with ``reducer``.

        How :class:`lossweave.metrics.TupleStatistics` counts a loss's tuples
        with the term itself (its miner, its state); other threads (the other
        replicas of a tf.distribute step) still see the term's own reducer.
        """
        overrides = _REDUCING.__dict__.setdefault("by_term", {})
        previous = overrides.get(id(self))
        overrides[id(self)] = reducer
        try:
            yield self
        finally:
            if previous is None:
                del overrides[id(self)]
            else:
                overrides[id(self)] = previous

    def init_tuple(self, distance=None, reducer=None, miner=None, mines=True):
        """Keep the parts as objects: ``distance`` (when ``takes_distance``), ``reducer``, ``miner`` (when ``mines``)."""
        if self.takes_distance:
            self.distance = distance_objects.get(distance, self)
        self.reducer = reducer_objects.get(reducer, self)
        if mines:
            self.miner = miner_objects.get(miner, self)

    def tuple_config(self):
        """The parts' config entries (``distance`` only when the loss takes one; ``min_jaccard`` when given)."""
        config = {}
        if self.takes_distance:
            config["distance"] = keras.saving.serialize_keras_object(self.distance)
        config["reducer"] = keras.saving.serialize_keras_object(self.reducer)
        if hasattr(self, "miner"):
            config["miner"] = keras.saving.serialize_keras_object(self.miner)
        if self.min_jaccard is not None:  # absent by default: configs saved before it still match
            config["min_jaccard"] = self.min_jaccard
        return config

    def tuple_kwargs(self):
        """The ops' keyword arguments: ``metric``, ``reducer``, ``miner``, ``min_jaccard``, where the loss takes each."""
        kwargs = {"metric": self.distance} if self.takes_distance else {}
        kwargs["reducer"] = self.reducer
        if hasattr(self, "miner"):
            kwargs["miner"] = self.miner
        if not self.pairs_by_position:
            kwargs["min_jaccard"] = self.tuple_min_jaccard()
        return kwargs


class _ContrastiveArguments:
    """``pos_margin``, ``neg_margin`` and ``distance``: the arguments both contrastive forms take.

    The form over a labelled batch adds :class:`TupleArguments` (``pairs=True``); the form on given pairs
    takes no ``reducer``, ``miner`` or ``min_jaccard`` (its pairs and their same/different target are given).
    """

    def init_margins(self, pos_margin, neg_margin, distance, reducer=None, miner=None, pairs=True):
        self.pos_margin = arguments.number(pos_margin, "pos_margin", self, low=0.0)
        self.neg_margin = arguments.number(neg_margin, "neg_margin", self, low=0.0)
        if pairs:
            self.init_tuple(distance, reducer, miner)
        else:
            self.distance = distance_objects.get(distance, self)

    def get_config(self):
        config = {**super().get_config(), "pos_margin": self.pos_margin, "neg_margin": self.neg_margin}
        if hasattr(self, "reducer"):
            return {**config, **self.tuple_config()}
        return {**config, "distance": keras.saving.serialize_keras_object(self.distance)}


@keras.saving.register_keras_serializable(package="lossweave")
class ContrastiveLoss(_ContrastiveArguments, TupleArguments, PairTerm):
    """Contrastive loss over the pairs of a labelled batch (Hadsell, Chopra & LeCun, CVPR 2006, Eq. 4).

    Every ordered pair ``(i, j)``, ``i != j``, of the batch; a positive (same
    class) pair pays ``1/2 max(d - pos_margin, 0)^2``, a negative pair
    ``1/2 max(neg_margin - d, 0)^2`` (the paper's factor 1/2); the loss is the
    mean over the pairs (``lossweave.ops.pairs.contrastive_loss``), 0 when
    there is no pair. Accepts a reference set (``CrossBatchMemory``). For
    given pairs read from two outputs, see :class:`SiameseContrastiveLoss`.

    Args:
        pos_margin: distance below which a positive pair costs nothing (paper: 0).
        neg_margin: the margin ``m`` of the negative pairs (1.0).
        distance: a :mod:`lossweave.distances` object or name: ``"euclidean"``
            (the paper's ``D_W``), ``"squared_euclidean"``, ``"cosine"``, ...
            With a similarity the margins are similarities (a positive pays
            below ``pos_margin``, a negative above ``neg_margin``).
        reducer: a :mod:`lossweave.reducers` object; ``None``: the mean over
            the pairs (pytorch-metric-learning: ``AvgNonZeroReducer()``).
        miner: a :mod:`lossweave.miners` object; ``None``: every pair.
        hinge: ``"half_squared"`` (Eq. 4's ``1/2 max(.)^2``) or ``"linear"``
            (``max(.)``: pytorch-metric-learning's ``ContrastiveLoss``).
        reduce_parts: ``True`` reduces the positive and the negative pairs
            separately and adds the two (pytorch-metric-learning's); ``False``
            (the paper's mean) reduces every pair at once. PML's
            ``ContrastiveLoss()`` is ``ContrastiveLoss(hinge="linear",
            reduce_parts=True, reducer=AvgNonZeroReducer(),
            distance=EuclideanDistance(normalize_embeddings=True))``.
        on: the embedding output.
        target: the class ids.
        **kwargs: ``min_jaccard`` (multi-hot labels: see :class:`~lossweave.terms.pairs.TupleArguments`),
            ``validate``, ``missing`` and Layer arguments (see :class:`~lossweave.terms.Term`).

    Example:
        >>> import numpy as np
        >>> term = ContrastiveLoss(neg_margin=1.0)
        >>> x = np.array([[0., 0.], [0.5, 0.], [0., 0.25]], "float32")
        >>> round(float(term(x, np.array([0, 0, 1]))), 6)
        0.167828
    """

    supports_reference = True
    two_output_form = "SiameseContrastiveLoss"

    def __init__(self, pos_margin=0.0, neg_margin=1.0, distance="euclidean", reducer=None, miner=None,
                 hinge="half_squared", reduce_parts=False, on="embedding", target="label", **kwargs):
        super().__init__(on=on, target=target, **kwargs)
        self.init_margins(pos_margin, neg_margin, distance, reducer, miner)
        self.hinge = arguments.choice(hinge, pair_ops.CONTRASTIVE_HINGES, "hinge", self)
        self.reduce_parts = arguments.boolean(reduce_parts, "reduce_parts", self)

    def get_config(self):
        return {**super().get_config(), "hinge": self.hinge, "reduce_parts": self.reduce_parts}

    def pair_loss(self, embeddings, labels, sample_weight=None, ref_embeddings=None, ref_labels=None,
                  ref_mask=None, exclude_self=True):
        return pair_ops.contrastive_loss(
            embeddings, labels, self.pos_margin, self.neg_margin, sample_weight=sample_weight,
            ref_embeddings=ref_embeddings, ref_labels=ref_labels, ref_mask=ref_mask, exclude_self=exclude_self,
            hinge=self.hinge, reduce_parts=self.reduce_parts, **self.tuple_kwargs(),
        )


@keras.saving.register_keras_serializable(package="lossweave")
class SiameseContrastiveLoss(_ContrastiveArguments, Term):
    """Contrastive loss on given pairs: row ``i`` of two outputs, a same/different target (Hadsell et al., Eq. 4).

    The distance between row ``i`` of the two outputs, and a target of 1 for a
    similar and 0 for a dissimilar pair (the paper's ``Y`` is reversed: 0 for
    similar); a similar pair pays ``1/2 max(d - pos_margin, 0)^2``, a
    dissimilar one ``1/2 max(neg_margin - d, 0)^2``; the loss is the mean over
    the batch of the pair terms (``lossweave.ops.pairs.contrastive_pair_loss``;
    one loss per row, so sample weights and ``missing`` act as in any Keras
    loss). A target other than 0/1 raises ``InvalidInputError``.

    Args:
        pos_margin: distance below which a similar pair costs nothing (paper: 0).
        neg_margin: the margin ``m`` of the dissimilar pairs (1.0).
        distance: a :mod:`lossweave.distances` object or name (``"euclidean"``,
            ``"squared_euclidean"``, ``"cosine"``, ...).
        on: the two outputs, ``(left, right)``.
        target: the 0/1 target.
        **kwargs: ``validate``, ``missing`` and Layer arguments (see :class:`~lossweave.terms.Term`).

    Example:
        >>> import numpy as np
        >>> term = SiameseContrastiveLoss(on=("left", "right"), target="same")
        >>> left = np.array([[0., 0.], [0.5, 0.], [0., 0.25]], "float32")
        >>> right = np.array([[0.5, 0.], [0.5, 0.], [0., 0.]], "float32")
        >>> round(float(term((left, right), np.array([1, 0, 1]))), 6)
        0.21875
    """

    reads = "views"
    input_checks = "pair_targets"

    def __init__(self, pos_margin=0.0, neg_margin=1.0, distance="euclidean", on=("left", "right"), target="same",
                 **kwargs):
        super().__init__(on=on, target=target, **kwargs)
        self.init_margins(pos_margin, neg_margin, distance, pairs=False)

    def compute_loss(self, outputs, targets, sample_weight, training):
        left, right = outputs
        return pair_ops.contrastive_pair_loss(
            left, right, targets, self.pos_margin, self.neg_margin, self.distance, sample_weight
        )


@keras.saving.register_keras_serializable(package="lossweave")
class TripletLoss(TupleArguments, PairTerm):
    """Triplet loss with in-batch mining: semi-hard, batch-hard or batch-all.

    ``[d(a, p) - d(a, n) + margin]_+`` over triplets chosen by ``mining``
    (``lossweave.ops.pairs.triplet_loss`` has the definitions):
    ``"semi-hard"`` is TensorFlow Addons' ``TripletSemiHardLoss`` (Schroff et
    al., CVPR 2015), whose defaults are the defaults here (``margin=1.0``,
    Euclidean distance); ``"batch-hard"`` and ``"batch-all"`` are Hermans,
    Beyer & Leibe 2017 (Eq. 5 and Eq. 4; ``soft=True`` is their soft margin,
    Eq. 6, for batch-hard). 0 when the batch has no triplet. Accepts a
    reference set (``CrossBatchMemory``). Batch-hard equals TF Addons'
    ``TripletHardLoss`` on P x K batches; on anchors without a positive or a
    negative they differ (docs/pair_losses.md, "Against TensorFlow Addons'
    triplet losses").

    Args:
        margin: the margin.
        mining: ``"semi-hard"``, ``"batch-hard"`` or ``"batch-all"``.
        distance: a :mod:`lossweave.distances` object or name: ``"euclidean"``,
            ``"squared_euclidean"`` (FaceNet's Eq. 1), ``"cosine"``, ... (a
            similarity ``s``: the hinge is ``[s_an - s_ap + margin]_+``).
        soft: soft margin ``log(1 + exp(d_ap - d_an))`` (batch-hard, or a
            miner with one negative per positive pair).
        average: batch-all's mean: over the triplets with a non-zero loss
            (``"positive"``, Hermans et al.'s BA≠0) or over all (``"all"``);
            without a ``reducer`` only.
        reducer: a :mod:`lossweave.reducers` object; ``None``: the mean of
            the mining (above).
        miner: a :mod:`lossweave.miners` object that replaces ``mining``:
            ``mining="semi-hard"`` is ``SemiHardNegativeMiner()``,
            ``"batch-hard"`` ``BatchHardMiner()``, ``"batch-all"`` no miner
            with ``AvgNonZeroReducer()`` (``average="all"``: ``MeanReducer()``).
        on: model output holding the embeddings.
        target: target holding the class ids.
        **kwargs: ``min_jaccard`` (multi-hot labels: see :class:`~lossweave.terms.pairs.TupleArguments`),
            ``validate``, ``missing`` and Layer arguments (see :class:`~lossweave.terms.Term`).

    Example:
        >>> import numpy as np
        >>> x = np.array([[0.], [1.], [1.5], [3.]], "float32")
        >>> round(float(TripletLoss(mining="batch-hard")(x, np.array([0, 0, 1, 1]))), 4)
        1.125
    """

    supports_reference = True

    def __init__(self, margin=1.0, mining="semi-hard", distance="euclidean", soft=False, average="positive",
                 reducer=None, miner=None, on="embedding", target="label", **kwargs):
        super().__init__(on=on, target=target, **kwargs)
        self.margin = arguments.number(margin, "margin", self, low=0.0)
        self.mining = arguments.choice(mining, pair_ops.MININGS, "mining", self)
        self.soft = arguments.boolean(soft, "soft", self)
        self.average = arguments.choice(average, pair_ops.AVERAGES, "average", self)
        self.init_tuple(distance, reducer, miner)
        one_negative = (miner_objects.BatchEasyHardMiner, miner_objects.SemiHardNegativeMiner)
        if self.soft and self.miner is not None and not isinstance(self.miner, one_negative):
            raise ValueError(
                f"{type(self).__name__}: soft=True is the soft margin of batch-hard mining (Hermans et al. "
                f"2017, Eq. 6), for one negative per positive pair; received miner={self.miner!r}. Use "
                f"BatchHardMiner, BatchEasyHardMiner or SemiHardNegativeMiner, or soft=False."
            )
        if self.soft and self.miner is None and self.mining != "batch-hard":
            raise ValueError(
                f"{type(self).__name__}: soft=True is the soft margin of batch-hard mining "
                f"(Hermans et al. 2017, Eq. 6); "
                f"received mining={mining!r}. Use mining='batch-hard' or soft=False."
            )

    def pair_loss(self, embeddings, labels, sample_weight=None, ref_embeddings=None, ref_labels=None,
                  ref_mask=None, exclude_self=True):
        return pair_ops.triplet_loss(
            embeddings, labels, self.margin, self.mining, soft=self.soft, average=self.average,
            sample_weight=sample_weight, ref_embeddings=ref_embeddings, ref_labels=ref_labels, ref_mask=ref_mask,
            exclude_self=exclude_self, **self.tuple_kwargs(),
        )

    def get_config(self):
        config = super().get_config()
        config.update({"margin": self.margin, "mining": self.mining, "soft": self.soft, "average": self.average,
                       **self.tuple_config()})
        return config


@keras.saving.register_keras_serializable(package="lossweave")
class LiftedStructureLoss(TupleArguments, PairTerm):
    """Lifted structured embedding loss (Oh Song et al., CVPR 2016, Eq. 4, the smooth bound).

    Euclidean distances, as in the paper; a stable log-sum-exp over the
    negatives of both rows of each positive pair
    (``lossweave.ops.pairs.lifted_structure_loss``). 0 when the batch has no
    positive pair or no negative.

    Args:
        margin: the margin ``alpha`` (paper: 1.0).
        distance: a :mod:`lossweave.distances` object or name (paper: ``"euclidean"``).
        reducer: a :mod:`lossweave.reducers` object for the terms of the
            ordered positive pairs; ``None``: their mean (Eq. 4).
        miner: a :mod:`lossweave.miners` object; ``None``: every pair.
        on: model output holding the embeddings.
        target: target holding the class ids.
        **kwargs: ``min_jaccard`` (multi-hot labels: see :class:`~lossweave.terms.pairs.TupleArguments`),
            ``validate``, ``missing`` and Layer arguments (see :class:`~lossweave.terms.Term`).

    Example:
        >>> import numpy as np
        >>> x = np.array([[0., 0.], [2., 0.], [0., 1.]], "float32")
        >>> round(float(LiftedStructureLoss()(x, np.array([0, 0, 1]))), 4)
        2.5426
    """

    def __init__(self, margin=1.0, distance="euclidean", reducer=None, miner=None, on="embedding", target="label",
                 **kwargs):
        super().__init__(on=on, target=target, **kwargs)
        self.margin = arguments.number(margin, "margin", self)
        self.init_tuple(distance, reducer, miner)

    def pair_loss(self, embeddings, labels, sample_weight=None, ref_embeddings=None, ref_labels=None,
                  ref_mask=None, exclude_self=True):
        if ref_embeddings is not None:
            raise ValueError("LiftedStructureLoss does not take a reference set (its J_ij needs the "
                             "negatives of both rows of a pair).")
        return pair_ops.lifted_structure_loss(embeddings, labels, self.margin, sample_weight, **self.tuple_kwargs())

    def get_config(self):
        return {**super().get_config(), "margin": self.margin, **self.tuple_config()}


@keras.saving.register_keras_serializable(package="lossweave")
class NPairsLoss(TupleArguments, PairTerm):
    """Multi-class N-pair loss (Sohn, NeurIPS 2016, Eq. 3) with its embedding L2 regulariser.

    From a labelled batch, the first two rows of each class are its
    (anchor, positive) pair (``lossweave.ops.pairs.npairs_pairs``); each
    anchor's softmax cross-entropy over its inner products with the positives
    of all classes, plus ``l2_reg / 4`` times the mean squared norms of anchors
    and positives (TensorFlow's ``npairs_loss``, default 0.002; 0 gives
    pytorch-metric-learning's ``NPairsLoss``). Batches should hold two or more
    rows of several classes (a class-balanced sampler); the loss is 0 when
    fewer than two classes have a pair.

    Args:
        l2_reg: weight of the embedding L2 regulariser.
        distance: a :mod:`lossweave.distances` object or name (paper:
            ``"dot_product"``; a distance ``d`` gives the logits ``-d``).
        reducer: a :mod:`lossweave.reducers` object for the anchors' terms;
            ``None``: their mean. (No miner: the N-pair batch picks its pairs.)
        on: model output holding the embeddings (not normalised: the loss
            uses inner products).
        target: target holding the class ids.
        **kwargs: ``validate``, ``missing`` and Layer arguments (see :class:`~lossweave.terms.Term`); no
            ``min_jaccard``: the pairs are fixed by position (the first two rows of a class), not by shared labels.

    Example:
        >>> import numpy as np
        >>> x = np.array([[1., 0.], [0., 1.], [1., 0.], [0., 1.]], "float32")
        >>> round(float(NPairsLoss(l2_reg=0.0)(x, np.array([0, 1, 0, 1]))), 4)
        0.3133
    """

    pairs_by_position = True

    def __init__(self, l2_reg=0.002, distance="dot_product", reducer=None, on="embedding", target="label", **kwargs):
        super().__init__(on=on, target=target, **kwargs)
        self.l2_reg = arguments.number(l2_reg, "l2_reg", self, low=0.0)
        self.init_tuple(distance, reducer, mines=False)

    def pair_loss(self, embeddings, labels, sample_weight=None, ref_embeddings=None, ref_labels=None,
                  ref_mask=None, exclude_self=True):
        if ref_embeddings is not None:
            raise ValueError("NPairsLoss does not take a reference set (its N-pair batch is built from "
                             "the batch's own classes).")
        return pair_ops.npairs_loss(embeddings, labels, self.l2_reg, sample_weight, **self.tuple_kwargs())

    def get_config(self):
        return {**super().get_config(), "l2_reg": self.l2_reg, **self.tuple_config()}
