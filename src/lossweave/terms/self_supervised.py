"""Two-view self-supervised terms: any tuple loss over two views, VICReg, Barlow Twins.

Each reads two outputs ``on=(view1, view2)`` of shape ``(N, dim)``: two
augmentations of the same ``N`` samples, row ``i`` of one the partner of row
``i`` of the other. :class:`SelfSupervisedLoss` turns any pair term into
such a loss (pytorch-metric-learning's ``SelfSupervisedLoss``);
:class:`VICRegLoss` and :class:`BarlowTwinsLoss` are the batch-statistics
losses of :mod:`lossweave.ops.self_supervised`. They own no state. Sample
weights follow ``docs/sample_weight.md``: a sample's weight scales the terms
it anchors (both of its views), a sample of weight 0 (or a ``missing``
target) takes part in nothing.
"""

import keras
from keras import ops

from lossweave import _backend as backend
from lossweave import arguments
from lossweave.ops import self_supervised as ssl_ops
from lossweave.terms.base import Term


def _global_views(outputs, targets, sample_weight):
    """``(view1, view2, targets, sample_weight)`` of the global batch (all-gathered under ``tf.distribute``).

    As the pair terms (``lossweave.terms.pairs``), the loss is that of the
    global batch on every engine; on one device and on JAX the tensors as they are.
    """
    view1, view2 = outputs
    return backend.all_gather((view1, view2, targets, sample_weight))


class _TwoViews(Term):
    """Two ``(N, dim)`` views; the features are checked (finite), the target is not read."""

    reads = "views"
    input_checks = "pair_rows"
    weights_per = "tuple"

    def check_inputs(self, outputs, targets):
        return super().check_inputs(outputs, None)


@keras.saving.register_keras_serializable(package="lossweave")
class SelfSupervisedLoss(Term):
    """Any pair term as a two-view self-supervised loss: pytorch-metric-learning's ``SelfSupervisedLoss``.

    The two views of sample ``j`` are each other's positives and every other
    row is a negative: with ``symmetric=True`` (PML's default) the wrapped
    term sees the ``2N`` rows ``[view1; view2]`` with the ids
    ``[0..N-1, 0..N-1]`` (every row is an anchor); with ``symmetric=False``
    the anchors are the rows of ``view1`` and their partners the rows of
    ``view2`` (a reference set: the wrapped term must take one,
    ``supports_reference``). ``SelfSupervisedLoss(NTXentLoss(temperature=t))``
    is SimCLR's loss (Chen et al. 2020, Eq. 1), the same number as
    ``TwoViewNTXentLoss``.

    The target holds ids: views of *other* samples with the same id are then
    positives too. An ``Objective`` always passes the term its target, so for
    plain self-supervision give each sample its own id
    (``fit(x, {"label": np.arange(len(x))})``, PML's ``torch.arange``); called
    directly, the term takes ``None``. Sample weights are those of the
    samples, given to both of their anchors; distances, reducers and miners
    are the wrapped term's.

    Args:
        loss: a pair term (``lossweave.terms.PairTerm``: ``ContrastiveLoss``,
            ``TripletLoss``, ``NTXentLoss``, ``SupConLoss``, ``MultiSimilarityLoss``,
            ``CircleLoss``, ...), or its serialized config.
        symmetric: every row of both views is an anchor (``True``) or the
            rows of ``view1`` only, against ``view2``.
        on: the two view outputs.
        target: the sample (or class) ids.
        **kwargs: ``validate``, ``missing`` and Layer arguments (see :class:`~lossweave.terms.Term`).

    Example:
        >>> import numpy as np
        >>> from lossweave.terms import NTXentLoss
        >>> term = SelfSupervisedLoss(NTXentLoss(temperature=1.0))
        >>> v = np.array([[1., 0.], [0., 1.]], "float32")
        >>> round(float(term((v, v), None)), 4)   # log(1 + 2 e^-1), as TwoViewNTXentLoss
        0.5514
    """

    reads = "views"
    input_checks = "pair_rows"
    weights_per = "tuple"

    def __init__(self, loss, symmetric=True, on=("view1", "view2"), target="label", **kwargs):
        if isinstance(loss, dict):
            loss = keras.saving.deserialize_keras_object(loss)
        super().__init__(on=on, target=target, **kwargs)
        if not hasattr(loss, "pair_loss") or not isinstance(loss, Term):
            raise ValueError(
                f"{type(self).__name__}: received loss={loss!r}; expected a pair term (a lossweave.terms term with "
                f"pair_loss: ContrastiveLoss, TripletLoss, NTXentLoss, SupConLoss, ...)."
            )
        self.symmetric = arguments.boolean(symmetric, "symmetric", self)
        if not self.symmetric and not getattr(loss, "supports_reference", False):
            raise ValueError(
                f"{type(self).__name__}: symmetric=False makes view2 the reference set of view1, and "
                f"{type(loss).__name__} takes no reference set; use symmetric=True or a term with "
                f"supports_reference=True (ContrastiveLoss, TripletLoss, NTXentLoss, SupConLoss, ...)."
            )
        self.loss = loss

    def build(self, outputs_shape):
        super().build(outputs_shape)
        if not self.loss.built:
            self.loss.build(tuple(outputs_shape[0]))

    def compute_loss(self, outputs, targets, sample_weight, training):
        view1, view2, targets, sample_weight = _global_views(outputs, targets, sample_weight)
        n = ops.shape(view1)[0]
        ids = ops.arange(n, dtype="int32") if targets is None else ops.reshape(targets, (-1,))
        if self.symmetric:
            weights = None if sample_weight is None else ops.concatenate([sample_weight, sample_weight], axis=0)
            return self.loss.pair_loss(ops.concatenate([view1, view2], axis=0), ops.concatenate([ids, ids], axis=0),
                                       weights)
        mask = None if sample_weight is None else ops.not_equal(ops.cast(sample_weight, "float32"), 0.0)
        return self.loss.pair_loss(view1, ids, sample_weight, ref_embeddings=view2, ref_labels=ids, ref_mask=mask,
                                   exclude_self=False)

    def get_config(self):
        return {**super().get_config(), "loss": keras.saving.serialize_keras_object(self.loss),
                "symmetric": self.symmetric}


@keras.saving.register_keras_serializable(package="lossweave")
class VICRegLoss(_TwoViews):
    """VICReg: variance-invariance-covariance regularisation (Bardes, Ponce & LeCun, ICLR 2022, Eq. 1-6).

    ``lambda s(Z, Z') + mu [v(Z) + v(Z')] / 2 + nu [c(Z) + c(Z')]``: see
    :func:`lossweave.ops.self_supervised.vicreg_loss` for the terms, the two
    places where it follows the authors' code and pytorch-metric-learning
    rather than the printed Eq. 5-6, and the meaning of sample weights (a
    batch statistic counts the rows of non-zero weight). Defaults are the
    paper's and pytorch-metric-learning's. No ``distance`` (the invariance is
    a mean squared error), ``reducer`` or ``miner``: the loss has no tuples
    (pytorch-metric-learning refuses a distance too).

    Args:
        invariance_lambda: ``lambda``, the weight of the invariance term.
        variance_mu: ``mu``, the weight of the variance term.
        covariance_v: ``nu``, the weight of the covariance term.
        eps: ``epsilon`` of ``sqrt(Var + eps)``.
        on: the two view outputs.
        target: read by an ``Objective`` (``missing`` rows get weight 0); the loss uses no labels.
        **kwargs: ``validate``, ``missing`` and Layer arguments (see :class:`~lossweave.terms.Term`).

    Example:
        >>> import numpy as np
        >>> z = np.array([[1., 0.], [-1., 0.], [0., 2.], [0., -2.]], "float32")
        >>> round(float(VICRegLoss(eps=0.0)((z, z), None)), 4)
        2.2938
    """

    def __init__(self, invariance_lambda=25.0, variance_mu=25.0, covariance_v=1.0, eps=1e-4,
                 on=("view1", "view2"), target="label", **kwargs):
        super().__init__(on=on, target=target, **kwargs)
        self.invariance_lambda = arguments.number(invariance_lambda, "invariance_lambda", self, low=0.0)
        self.variance_mu = arguments.number(variance_mu, "variance_mu", self, low=0.0)
        self.covariance_v = arguments.number(covariance_v, "covariance_v", self, low=0.0)
        self.eps = arguments.number(eps, "eps", self, low=0.0)

    def compute_loss(self, outputs, targets, sample_weight, training):
        view1, view2, _, sample_weight = _global_views(outputs, targets, sample_weight)
        return ssl_ops.vicreg_loss(view1, view2, self.invariance_lambda, self.variance_mu, self.covariance_v,
                                   self.eps, sample_weight)

    def get_config(self):
        return {**super().get_config(), "invariance_lambda": self.invariance_lambda,
                "variance_mu": self.variance_mu, "covariance_v": self.covariance_v, "eps": self.eps}


@keras.saving.register_keras_serializable(package="lossweave")
class BarlowTwinsLoss(_TwoViews):
    """Barlow Twins: cross-correlation towards the identity (Zbontar et al., ICML 2021, Eq. 1-2).

    ``sum_i (1 - C_ii)^2 + lambda sum_{i != j} C_ij^2`` over the
    cross-correlation ``C`` of the two views standardised along the batch
    (:func:`lossweave.ops.self_supervised.barlow_twins_loss`). ``lambda``
    defaults to the paper's ``5e-3`` (the authors' code: 0.0051);
    pytorch-metric-learning has no Barlow Twins loss. No ``distance``,
    ``reducer`` or ``miner``: the loss has no tuples.

    Args:
        redundancy_lambda: ``lambda``, the weight of the off-diagonal (redundancy) terms.
        eps: added to each feature's variance before standardising (``BatchNorm1d``'s 1e-5).
        on: the two view outputs.
        target: read by an ``Objective`` (``missing`` rows get weight 0); the loss uses no labels.
        **kwargs: ``validate``, ``missing`` and Layer arguments (see :class:`~lossweave.terms.Term`).

    Example:
        >>> import numpy as np
        >>> z = np.array([[1., 1.], [-1., -1.]], "float32")
        >>> round(float(BarlowTwinsLoss(redundancy_lambda=1.0, eps=0.0)((z, z), None)), 4)
        2.0
    """

    def __init__(self, redundancy_lambda=0.005, eps=1e-5, on=("view1", "view2"), target="label", **kwargs):
        super().__init__(on=on, target=target, **kwargs)
        self.redundancy_lambda = arguments.number(redundancy_lambda, "redundancy_lambda", self, low=0.0)
        self.eps = arguments.number(eps, "eps", self, low=0.0)

    def compute_loss(self, outputs, targets, sample_weight, training):
        view1, view2, _, sample_weight = _global_views(outputs, targets, sample_weight)
        return ssl_ops.barlow_twins_loss(view1, view2, self.redundancy_lambda, self.eps, sample_weight)

    def get_config(self):
        return {**super().get_config(), "redundancy_lambda": self.redundancy_lambda, "eps": self.eps}
