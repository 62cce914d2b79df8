"""Similarity-based pair losses as terms: multi-similarity, circle, SupCon, NT-Xent.

Thin shells over :mod:`lossweave.ops.pair_similarity` (the formulas, the
papers and the conventions are documented there). They own no state: they
read an embedding output (two views for ``TwoViewNTXentLoss``) and class
ids, checked by the ``Term`` base (a bad label or NaN/Inf embedding raises
``InvalidInputError``, and the loss of that batch is 0), and compute in
float32 under any dtype policy. Sample weights follow the library's one rule
(``docs/sample_weight.md``): they scale the anchors' terms, the mean counts
the anchors that count, and weight 0 (or a ``missing`` label) leaves a
sample out of every pair. A batch in which no anchor counts (no positive
pair, e.g. a batch of one) gives 0.0.

The one-output terms are :class:`~lossweave.terms.pairs.PairTerm` s:
``pair_loss(embeddings, labels, sample_weight, ref_embeddings=None,
ref_labels=None, ref_mask=None, exclude_self=True)`` is the loss without the
check, and :class:`~lossweave.terms.CrossBatchMemory` can wrap them. Every
term here forms its pairs over the global batch under ``tf.distribute``
(:func:`~lossweave.terms.pairs.global_batch`).
"""

import keras

from lossweave import arguments
from lossweave.ops import pair_similarity
from lossweave.terms.base import Term
from lossweave.terms.pairs import PairTerm, TupleArguments, global_batch


@keras.saving.register_keras_serializable(package="lossweave")
class MultiSimilarityLoss(TupleArguments, PairTerm):
    """Multi-similarity loss with its pair mining (Wang et al., CVPR 2019, Eq. 9-11).

    See :func:`lossweave.ops.pair_similarity.multi_similarity_loss`: cosine
    similarities, the mining of Eq. 9-10 (margin ``epsilon``), the loss of
    Eq. 11 averaged over the batch's anchors.
    Defaults are the paper's (``alpha=2, beta=50, lambda=1, epsilon=0.1``);
    the authors' code uses ``base=0.5, beta=40`` and pytorch-metric-learning
    ``base=0.5``.

    Args:
        alpha: scale of the positive pairs.
        beta: scale of the negative pairs.
        base: ``lambda``, the similarity the exponents are shifted by.
        epsilon: the similarity margin ``epsilon`` of the mining (>= 0; pytorch-metric-learning's
            ``MultiSimilarityMiner(epsilon)``).
        mining: apply the mining of Eq. 9-10 (``False``: every pair); the same
            as ``miner=MultiSimilarityMiner(epsilon)``.
        distance: a :mod:`lossweave.distances` object or name (paper:
            ``"cosine_similarity"``; a distance ``d`` enters as ``S = -d``).
        reducer: a :mod:`lossweave.reducers` object for the anchors' terms;
            ``None``: their mean (above).
        miner: a :mod:`lossweave.miners` object; it replaces ``mining``.
        on: model output holding the embeddings ``(batch, dim)``.
        target: target holding the class ids (non-negative integers).
        validate: raise on bad rows at run time (bad rows are left out either way).

    Example:
        >>> import numpy as np
        >>> term = MultiSimilarityLoss()
        >>> x = np.array([[1., 0.], [0.6, 0.8], [0.8, 0.6], [0., 1.]], "float32")
        >>> round(float(term(x, np.array([0, 0, 1, 1]))), 4)
        0.5868
    """

    supports_reference = True

    def __init__(self, alpha=2.0, beta=50.0, base=1.0, epsilon=0.1, mining=True, distance="cosine_similarity",
                 reducer=None, miner=None, **kwargs):
        super().__init__(**kwargs)
        self.init_tuple(distance, reducer, miner)
        self.alpha = arguments.positive(alpha, "alpha", self)
        self.beta = arguments.positive(beta, "beta", self)
        self.base = arguments.number(base, "base", self)
        self.epsilon = arguments.number(epsilon, "epsilon", self, low=0.0)
        self.mining = arguments.boolean(mining, "mining", self)

    def pair_loss(self, embeddings, labels, sample_weight=None, ref_embeddings=None, ref_labels=None,
                  ref_mask=None, exclude_self=True):
        return pair_similarity.multi_similarity_loss(
            embeddings, labels, self.alpha, self.beta, self.base, self.epsilon, self.mining, sample_weight,
            ref_embeddings=ref_embeddings, ref_labels=ref_labels, ref_mask=ref_mask, exclude_self=exclude_self,
            **self.tuple_kwargs(),
        )

    def get_config(self):
        return {
            **super().get_config(),
            "alpha": self.alpha,
            "beta": self.beta,
            "base": self.base,
            "epsilon": self.epsilon,
            "mining": self.mining,
            **self.tuple_config(),
        }


@keras.saving.register_keras_serializable(package="lossweave")
class CircleLoss(TupleArguments, PairTerm):
    """Circle loss with class-level labels (Sun et al., CVPR 2020, Eq. 6).

    See :func:`lossweave.ops.pair_similarity.circle_loss`: self-paced weights
    ``[1 + m - s_p]_+`` and ``[s_n + m]_+``, margins ``1 - m`` and ``m``, mean
    over the anchors that have a positive and a negative. Defaults are the
    paper's face-recognition setting ``m=0.25, gamma=256``
    (pytorch-metric-learning: ``m=0.4, gamma=80``, the paper's fine-grained
    retrieval setting).

    Args:
        relaxation: the relaxation ``m``, in ``[0, 1)``.
        scale: the scale ``gamma`` of the similarities.
        distance: a :mod:`lossweave.distances` object or name (paper:
            ``"cosine_similarity"``; a distance ``d`` enters as ``S = -d``).
        reducer: a :mod:`lossweave.reducers` object for the anchors' terms;
            ``None``: their mean (above).
        miner: a :mod:`lossweave.miners` object; ``None``: every pair.
        on: model output holding the embeddings ``(batch, dim)``.
        target: target holding the class ids (non-negative integers).
        validate: raise on bad rows at run time (bad rows are left out either way).

    Example:
        >>> import numpy as np
        >>> term = CircleLoss(relaxation=0.25, scale=1.0)
        >>> x = np.array([[1., 0.], [1., 0.], [0., 1.], [0., 1.]], "float32")
        >>> round(float(term(x, np.array([0, 0, 1, 1]))), 4)
        1.017
    """

    supports_reference = True

    def __init__(self, relaxation=0.25, scale=256.0, distance="cosine_similarity", reducer=None, miner=None,
                 **kwargs):
        super().__init__(**kwargs)
        self.init_tuple(distance, reducer, miner)
        self.relaxation = arguments.number(relaxation, "relaxation", self, low=0.0, high=1.0, high_open=True)
        self.scale = arguments.positive(scale, "scale", self)

    def pair_loss(self, embeddings, labels, sample_weight=None, ref_embeddings=None, ref_labels=None,
                  ref_mask=None, exclude_self=True):
        return pair_similarity.circle_loss(
            embeddings, labels, self.relaxation, self.scale, sample_weight,
            ref_embeddings=ref_embeddings, ref_labels=ref_labels, ref_mask=ref_mask, exclude_self=exclude_self,
            **self.tuple_kwargs(),
        )

    def get_config(self):
        return {**super().get_config(), "relaxation": self.relaxation, "scale": self.scale, **self.tuple_config()}


@keras.saving.register_keras_serializable(package="lossweave")
class SupConLoss(TupleArguments, PairTerm):
    """Supervised contrastive loss ``L^sup_out`` (Khosla et al., NeurIPS 2020, Eq. 2).

    See :func:`lossweave.ops.pair_similarity.supcon_loss`. For the paper's
    two views per sample, make the model output both views' embeddings as one
    ``(2N, dim)`` output with the labels repeated. Anchors without a positive
    are left out of the mean; a batch without positive pairs gives 0.

    Args:
        temperature: ``tau`` (paper: 0.1; the authors' code: 0.07), ``1 / scale`` of the logits.
        distance: a :mod:`lossweave.distances` object or name (paper:
            ``"cosine_similarity"``; a distance ``d`` enters as ``S = -d``).
        reducer: a :mod:`lossweave.reducers` object for the anchors' terms;
            ``None``: their mean (above).
        miner: a :mod:`lossweave.miners` object; ``None``: every pair.
        on: model output holding the embeddings ``(batch, dim)``.
        target: target holding the class ids (non-negative integers).
        validate: raise on bad rows at run time (bad rows are left out either way).

    Example:
        >>> import numpy as np
        >>> term = SupConLoss(temperature=1.0)
        >>> x = np.array([[1., 0.], [1., 0.], [0., 1.]], "float32")
        >>> round(float(term(x, np.array([0, 0, 1]))), 4)   # log(1 + e^-1); the lone anchor is left out
        0.3133
    """

    supports_reference = True

    def __init__(self, temperature=0.1, distance="cosine_similarity", reducer=None, miner=None, **kwargs):
        super().__init__(**kwargs)
        self.temperature = arguments.positive(temperature, "temperature", self)
        self.init_tuple(distance, reducer, miner)

    def pair_loss(self, embeddings, labels, sample_weight=None, ref_embeddings=None, ref_labels=None,
                  ref_mask=None, exclude_self=True):
        return pair_similarity.supcon_loss(
            embeddings, labels, self.temperature, sample_weight,
            ref_embeddings=ref_embeddings, ref_labels=ref_labels, ref_mask=ref_mask, exclude_self=exclude_self,
            **self.tuple_kwargs(),
        )

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature, **self.tuple_config()}


@keras.saving.register_keras_serializable(package="lossweave")
class NTXentLoss(TupleArguments, PairTerm):
    """NT-Xent (Chen et al., ICML 2020, Eq. 1) over a labelled batch of one embedding output.

    The positives are given by the labels and each positive pair is scored
    against the anchor's negatives
    (:func:`lossweave.ops.pair_similarity.nt_xent_loss`; with one positive per
    anchor it is SimCLR's two-view loss, :class:`TwoViewNTXentLoss`), as
    pytorch-metric-learning's ``NTXentLoss``. Takes a reference set
    (``CrossBatchMemory``).

    Args:
        temperature: ``tau`` (paper's default setting: 0.1; its CIFAR-10 runs: 0.5), ``1 / scale``
            of the logits.
        distance: a :mod:`lossweave.distances` object or name (paper:
            ``"cosine_similarity"``; a distance ``d`` enters as ``S = -d``).
        reducer: a :mod:`lossweave.reducers` object for the anchors' terms;
            ``None``: their mean (above).
        miner: a :mod:`lossweave.miners` object; ``None``: every pair.
        on: the embedding output.
        target: target holding the class (or sample) ids.
        **kwargs: ``validate``, ``missing`` and Layer arguments (see :class:`~lossweave.terms.Term`).

    Example:
        >>> import numpy as np
        >>> term = NTXentLoss(temperature=1.0)
        >>> x = np.array([[1., 0.], [1., 0.], [0., 1.], [0., 1.]], "float32")
        >>> round(float(term(x, np.array([0, 0, 1, 1]))), 4)   # log(1 + 2 e^-1)
        0.5514
    """

    supports_reference = True
    two_output_form = "TwoViewNTXentLoss"

    def __init__(self, temperature=0.1, distance="cosine_similarity", reducer=None, miner=None, on="embedding",
                 target="label", **kwargs):
        super().__init__(on=on, target=target, **kwargs)
        self.temperature = arguments.positive(temperature, "temperature", self)
        self.init_tuple(distance, reducer, miner)

    def pair_loss(self, embeddings, labels, sample_weight=None, ref_embeddings=None, ref_labels=None,
                  ref_mask=None, exclude_self=True):
        return pair_similarity.nt_xent_loss(
            embeddings, labels, self.temperature, sample_weight,
            ref_embeddings=ref_embeddings, ref_labels=ref_labels, ref_mask=ref_mask, exclude_self=exclude_self,
            **self.tuple_kwargs(),
        )

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature, **self.tuple_config()}


@keras.saving.register_keras_serializable(package="lossweave")
class TwoViewNTXentLoss(TupleArguments, Term):
    """NT-Xent, SimCLR's contrastive loss on two views (Chen et al., ICML 2020, Eq. 1).

    Two outputs of shape ``(N, dim)`` holding two views of the same ``N``
    samples: the positive of row ``i`` of one view is row ``i`` of the other,
    the other ``2N - 2`` rows are its negatives, and the loss is the mean over
    the ``2N`` anchors (:func:`lossweave.ops.pair_similarity.nt_xent_views_loss`).
    The target holds class ids: views of *other* samples of the same class are
    then not negatives. An ``Objective`` always passes the term its target, so
    for plain (self-supervised) SimCLR give every sample its own id, e.g.
    ``fit(x, {"label": np.arange(len(x))})``; called directly, the term takes
    ``None`` for no labels.

    Args:
        temperature: ``tau`` (paper's default setting: 0.1; its CIFAR-10 runs: 0.5), ``1 / scale``
            of the logits.
        distance: a :mod:`lossweave.distances` object or name (paper:
            ``"cosine_similarity"``; a distance ``d`` enters as ``S = -d``).
        reducer: a :mod:`lossweave.reducers` object for the ``2N`` anchors'
            terms; ``None``: their mean.
        on: the two view outputs.
        target: target holding the class (or sample) ids.
        **kwargs: ``validate``, ``missing`` and Layer arguments (see :class:`~lossweave.terms.Term`).

    Example:
        >>> import numpy as np
        >>> term = TwoViewNTXentLoss(temperature=1.0)
        >>> v = np.array([[1., 0.], [0., 1.]], "float32")
        >>> round(float(term((v, v), None)), 4)   # log(1 + 2 e^-1)
        0.5514
    """

    reads = "views"
    input_checks = "pair_rows"
    weights_per = "tuple"
    pairs_by_position = True  # row i of one view is the positive of row i of the other: no min_jaccard

    def __init__(self, temperature=0.1, distance="cosine_similarity", reducer=None, on=("view1", "view2"),
                 target="label", **kwargs):
        super().__init__(on=on, target=target, **kwargs)
        self.temperature = arguments.positive(temperature, "temperature", self)
        self.init_tuple(distance, reducer, mines=False)

    def compute_loss(self, outputs, targets, sample_weight, training):
        # Under tf.distribute, the views of the global batch (row i of both from one replica).
        view1, view2, targets, sample_weight = global_batch(*outputs, targets, sample_weight)
        return pair_similarity.nt_xent_views_loss(view1, view2, self.temperature, targets, sample_weight,
                                                  **self.tuple_kwargs())

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature, **self.tuple_config()}
