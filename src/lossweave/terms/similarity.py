"""Similarity-based pair losses as terms: multi-similarity, circle, SupCon, NT-Xent.

Thin shells over :mod:`lossweave.ops.pair_similarity` (the formulas, the
papers and the conventions are documented there). They own no state: they
read an embedding output and class ids, check both (a bad label or NaN/Inf
embedding raises ``InvalidInputError``, and the loss of that batch is 0, as
in :class:`~lossweave.terms.CenterLoss`), and compute in float32 under any
dtype policy. Sample weights weigh anchors (a weighted mean over the anchors
that count; weight 0 leaves a sample out of every pair, and so do ``missing``
labels). A batch in which no anchor counts (no positive pair, e.g. a batch of
one) gives 0.0.

They are :class:`~lossweave.terms.pairs.PairTerm` s: ``pair_loss(embeddings,
labels, sample_weight, ref_embeddings=None, ref_labels=None, ref_mask=None,
exclude_self=True)`` is the loss without the check, and
:class:`~lossweave.terms.CrossBatchMemory` can wrap them
(``supports_reference``; for ``NTXentLoss`` only on one output).
"""

import keras
from keras import ops

from lossweave.ops import pair_similarity
from lossweave.terms.check import check_pair_rows
from lossweave.terms.pairs import PairTerm, _number


def _check_view_shape(term, name, shape):
    if len(shape) != 2 or shape[-1] is None:
        raise ValueError(
            f"{type(term).__name__} '{term.name}': received view '{name}' of shape {tuple(shape)}; "
            f"expected (batch, dim) with a known dim. Point `on` at the two view outputs."
        )


@keras.saving.register_keras_serializable(package="lossweave")
class MultiSimilarityLoss(PairTerm):
    """Multi-similarity loss with its pair mining (Wang et al., CVPR 2019, Eq. 9-11).

    See :func:`lossweave.ops.pair_similarity.multi_similarity_loss`: cosine
    similarities, the mining of Eq. 9-10 (``margin`` is the paper's
    ``epsilon``), the loss of Eq. 11 averaged over the batch's anchors.
    Defaults are the paper's (``alpha=2, beta=50, lambda=1, epsilon=0.1``);
    the authors' code uses ``base=0.5, beta=40`` and pytorch-metric-learning
    ``base=0.5``.

    Args:
        alpha: scale of the positive pairs.
        beta: scale of the negative pairs.
        base: ``lambda``, the similarity the exponents are shifted by.
        margin: ``epsilon`` of the mining (>= 0).
        mining: apply the mining of Eq. 9-10 (``False``: every pair).
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

    def __init__(self, alpha=2.0, beta=50.0, base=1.0, margin=0.1, mining=True, **kwargs):
        super().__init__(**kwargs)
        owner = type(self).__name__
        self.alpha = _number(alpha, "alpha", owner, low=0.0, strict=True)
        self.beta = _number(beta, "beta", owner, low=0.0, strict=True)
        self.base = _number(base, "base", owner)
        self.margin = _number(margin, "margin", owner, low=0.0)
        self.mining = bool(mining)

    def pair_loss(self, embeddings, labels, sample_weight=None, ref_embeddings=None, ref_labels=None,
                  ref_mask=None, exclude_self=True):
        return pair_similarity.multi_similarity_loss(
            embeddings, labels, self.alpha, self.beta, self.base, self.margin, self.mining, sample_weight,
            ref_embeddings=ref_embeddings, ref_labels=ref_labels, ref_mask=ref_mask, exclude_self=exclude_self,
        )

    def get_config(self):
        return {
            **super().get_config(),
            "alpha": self.alpha,
            "beta": self.beta,
            "base": self.base,
            "margin": self.margin,
            "mining": self.mining,
        }


@keras.saving.register_keras_serializable(package="lossweave")
class CircleLoss(PairTerm):
    """Circle loss with class-level labels (Sun et al., CVPR 2020, Eq. 6).

    See :func:`lossweave.ops.pair_similarity.circle_loss`: self-paced weights
    ``[1 + m - s_p]_+`` and ``[s_n + m]_+``, margins ``1 - m`` and ``m``, mean
    over the anchors that have a positive and a negative. Defaults are the
    paper's face-recognition setting ``m=0.25, gamma=256``
    (pytorch-metric-learning: ``m=0.4, gamma=80``, the paper's fine-grained
    retrieval setting).

    Args:
        margin: the relaxation ``m``, in ``[0, 1)``.
        gamma: the scale ``gamma``.
        on: model output holding the embeddings ``(batch, dim)``.
        target: target holding the class ids (non-negative integers).
        validate: raise on bad rows at run time (bad rows are left out either way).

    Example:
        >>> import numpy as np
        >>> term = CircleLoss(margin=0.25, gamma=1.0)
        >>> x = np.array([[1., 0.], [1., 0.], [0., 1.], [0., 1.]], "float32")
        >>> round(float(term(x, np.array([0, 0, 1, 1]))), 4)
        1.017
    """

    supports_reference = True

    def __init__(self, margin=0.25, gamma=256.0, **kwargs):
        super().__init__(**kwargs)
        owner = type(self).__name__
        self.margin = _number(margin, "margin", owner, low=0.0)
        if self.margin >= 1.0:
            raise ValueError(f"{owner}: margin must be in [0, 1); received {margin!r}.")
        self.gamma = _number(gamma, "gamma", owner, low=0.0, strict=True)

    def pair_loss(self, embeddings, labels, sample_weight=None, ref_embeddings=None, ref_labels=None,
                  ref_mask=None, exclude_self=True):
        return pair_similarity.circle_loss(
            embeddings, labels, self.margin, self.gamma, sample_weight,
            ref_embeddings=ref_embeddings, ref_labels=ref_labels, ref_mask=ref_mask, exclude_self=exclude_self,
        )

    def get_config(self):
        return {**super().get_config(), "margin": self.margin, "gamma": self.gamma}


@keras.saving.register_keras_serializable(package="lossweave")
class SupConLoss(PairTerm):
    """Supervised contrastive loss ``L^sup_out`` (Khosla et al., NeurIPS 2020, Eq. 2).

    See :func:`lossweave.ops.pair_similarity.supcon_loss`. For the paper's
    two views per sample, make the model output both views' embeddings as one
    ``(2N, dim)`` output with the labels repeated. Anchors without a positive
    are left out of the mean; a batch without positive pairs gives 0.

    Args:
        temperature: ``tau`` (paper: 0.1; the authors' code: 0.07).
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

    def __init__(self, temperature=0.1, **kwargs):
        super().__init__(**kwargs)
        self.temperature = _number(temperature, "temperature", type(self).__name__, low=0.0, strict=True)

    def pair_loss(self, embeddings, labels, sample_weight=None, ref_embeddings=None, ref_labels=None,
                  ref_mask=None, exclude_self=True):
        return pair_similarity.supcon_loss(
            embeddings, labels, self.temperature, sample_weight,
            ref_embeddings=ref_embeddings, ref_labels=ref_labels, ref_mask=ref_mask, exclude_self=exclude_self,
        )

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}


@keras.saving.register_keras_serializable(package="lossweave")
class NTXentLoss(PairTerm):
    """NT-Xent, SimCLR's contrastive loss (Chen et al., ICML 2020, Eq. 1).

    Two ways to give it pairs:

    - ``on=("view1", "view2")`` (the default), two outputs of shape ``(N,
      dim)`` holding two views of the same ``N`` samples: the positive of row
      ``i`` of one view is row ``i`` of the other, the other ``2N - 2`` rows are
      its negatives, and the loss is the mean over the ``2N`` anchors
      (:func:`lossweave.ops.pair_similarity.nt_xent_views_loss`). The target
      holds class ids: views of *other* samples of the same class are then not
      negatives. An ``Objective`` always passes the term its target, so for
      plain (self-supervised) SimCLR give every sample its own id, e.g.
      ``fit(x, {"label": np.arange(len(x))})``; called directly, the term
      takes ``None`` for no labels.
    - ``on="embedding"``, one output: the positives are given by the labels and
      each positive pair is scored against the anchor's negatives
      (:func:`lossweave.ops.pair_similarity.nt_xent_loss`; with one positive
      per anchor it is the two-view loss above). This form takes a reference
      set (``CrossBatchMemory``).

    Args:
        temperature: ``tau`` (paper's default setting: 0.1; its CIFAR-10 runs: 0.5).
        on: a tuple of the two view outputs, or one embedding output.
        target: target holding the class (or sample) ids.
        validate: raise on bad rows at run time (bad rows are left out either way).

    Example:
        >>> import numpy as np
        >>> term = NTXentLoss(temperature=1.0, on=("view1", "view2"))
        >>> v = np.array([[1., 0.], [0., 1.]], "float32")
        >>> round(float(term((v, v), None)), 4)   # log(1 + 2 e^-1)
        0.5514
    """

    def __init__(self, temperature=0.1, on=("view1", "view2"), target="label", validate=True, **kwargs):
        super().__init__(on=on, target=target, validate=validate, **kwargs)
        if isinstance(self.on, tuple) and len(self.on) != 2:
            raise ValueError(
                f"NTXentLoss: on must be the names of two view outputs or of one embedding output; "
                f"received {on!r}."
            )
        self.temperature = _number(temperature, "temperature", "NTXentLoss", low=0.0, strict=True)

    @property
    def two_views(self):
        """Whether the term reads two view outputs (else one labelled embedding output)."""
        return isinstance(self.on, tuple)

    @property
    def supports_reference(self):
        return not self.two_views

    def build(self, outputs_shape):
        if not self.two_views:
            super().build(outputs_shape)
            return
        self._outputs_shape = tuple(outputs_shape)
        for name, shape in zip(self.on, outputs_shape):
            _check_view_shape(self, name, shape)
        first, second = outputs_shape
        if first[-1] != second[-1]:
            raise ValueError(
                f"NTXentLoss '{self.name}': received views of shapes {tuple(first)} and "
                f"{tuple(second)}; expected two (batch, dim) outputs with the same dim."
            )

    def pair_loss(self, embeddings, labels, sample_weight=None, ref_embeddings=None, ref_labels=None,
                  ref_mask=None, exclude_self=True):
        if self.two_views:
            if ref_embeddings is not None:
                raise ValueError(
                    f"NTXentLoss '{self.name}': a reference set needs the one-output form "
                    f"(on='embedding'); the two-view form pairs each row with its other view."
                )
            view1, view2 = embeddings
            return pair_similarity.nt_xent_views_loss(view1, view2, self.temperature, labels, sample_weight)
        return pair_similarity.nt_xent_loss(
            embeddings, labels, self.temperature, sample_weight,
            ref_embeddings=ref_embeddings, ref_labels=ref_labels, ref_mask=ref_mask, exclude_self=exclude_self,
        )

    def call(self, outputs, targets, sample_weight=None, training=None):
        if not self.two_views:
            return super().call(outputs, targets, sample_weight, training)
        clean = None
        if self.validate:
            # Without labels only the views are checked (the ids stand in as zeros).
            ids = ops.zeros((ops.shape(outputs[0])[0],), "int32") if targets is None else targets
            clean = check_pair_rows(self, tuple(outputs), ids)
        loss = self.pair_loss(outputs, targets, sample_weight)
        if clean is not None:
            loss = ops.where(clean, loss, ops.zeros_like(loss))
        return loss

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}
