"""Proxy losses as terms that own their proxies (Proxy Anchor, ProxyNCA / ProxyNCA++).

Each term holds one proxy per class, a trainable float32 ``(num_classes,
dim)`` variable of the term (``term.proxies``), so ``Objective`` trains and
saves it exactly like the class weights of the margin terms. Labels are
sparse or one-hot and checked (a bad label raises ``InvalidInputError`` and
the step changes nothing).

**The proxies' learning rate.** Both papers train the proxies much faster
than the network: Proxy Anchor with a 100x learning rate (AdamW, the
authors' ``train.py``), ProxyNCA++ with its "fast moving proxies" (Adam, 4e2
against 4e-3 in the authors' configs). A Keras optimizer has one learning
rate for every variable, and a Layer cannot give its own variables another
one without touching the optimizer, so these terms take no
``proxy_lr_multiplier``. What does the same inside the term:

- **Adam, AdamW, RMSprop and the like** (steps invariant to the scale of the
  gradient): the losses depend on the proxies through ``p / ||p||`` only, so
  the gradient at ``p / k`` is ``k`` times the one at ``p``, and Adam with
  learning rate ``lr`` from proxies initialised ``k`` times smaller follows
  *exactly* the path of Adam with ``k * lr`` from the original ones (scaled
  by ``1/k``; up to Adam's epsilon, which shrinks ``k`` times in effect, and
  decoupled weight decay, which is not multiplied). For the papers' 100x,
  divide the initializer's standard deviation by 100, e.g.
  ``proxies_initializer=keras.initializers.VarianceScaling(2.0 / 100**2,
  "fan_in", "untruncated_normal")`` for Proxy Anchor (tested in
  ``tests/test_proxy.py``).
- **SGD** (with or without momentum): the step is ``lr`` times the gradient,
  so initialising ``k`` times smaller multiplies the proxies' rate by
  ``k**2``: divide by 10 for 100x.

Anything else (a different schedule for the proxies, gradient clipping that
should spare them) needs a custom optimizer or train step.
"""

import keras
from keras import ops

from lossweave import arguments
from lossweave import distances as distance_objects
from lossweave.ops import proxy as proxy_ops
from lossweave.terms.sampling import replica_gather
from lossweave.terms.table import SampledClassTable


class _ProxyTerm(SampledClassTable):
    """Base of the proxy terms: the ``(num_classes, dim)`` proxies on the class-table base.

    Subclasses implement ``proxy_loss(embeddings, labels, sample_weight,
    proxies, mask, negative_threshold)`` on float32 embeddings whose
    non-finite rows are zeroed (and weighted 0): ``proxies`` are the rows in
    play (a class-center sample in a training step with ``sample_rate < 1``,
    with ``labels`` remapped into it and ``mask`` its slots in use; else every
    proxy and ``mask=None``).
    """

    table_name = "proxies"

    def __init__(self, num_classes, proxies_initializer, distance=None, on="embedding", target="label", **kwargs):
        super().__init__(num_classes, on=on, target=target, **kwargs)
        self.proxies_initializer = keras.initializers.get(proxies_initializer)
        self.distance = None if distance is None else distance_objects.get(distance, self)

    def distance_config(self):
        return {"distance": keras.saving.serialize_keras_object(self.distance)}

    def compute_loss(self, outputs, targets, sample_weight, training):
        self.ensure_built(outputs)
        # Rows with NaN/Inf are zeroed and weighted 0, so that their gradients stay finite.
        embeddings, finite = self.finite_embeddings(outputs)
        weight = finite  # a bool mask: the ops' unweighted path
        if sample_weight is not None:
            weight = ops.cast(finite, "float32") * ops.reshape(ops.cast(sample_weight, "float32"), (-1,))
        proxies, targets, mask, _ = self.training_rows(targets, training)
        threshold = self.negative_threshold if self.filters(training) else None
        return self.proxy_loss(embeddings, targets, weight, proxies, mask, threshold)

    def proxy_loss(self, embeddings, labels, sample_weight, proxies, mask=None, negative_threshold=None):
        """The hook each proxy loss implements: its loss from the checked embeddings and labels."""
        raise NotImplementedError(f"{type(self).__name__} must implement proxy_loss.")


@keras.saving.register_keras_serializable(package="lossweave")
class ProxyAnchorLoss(_ProxyTerm):
    """Proxy Anchor loss (Kim, Kim, Cho & Kwak, CVPR 2020, Eq. 4).

    Each proxy is an anchor over the batch: cosine similarities ``s(x, p)``
    of L2-normalised embeddings and proxies, the positive part averaged over
    the proxies that have a positive in the batch (``|P+|``), the negative
    part over all proxies (see :func:`lossweave.ops.proxy_anchor_loss`)::

        1/|P+| sum_{p in P+} log(1 + sum_{x in X_p+} exp(-alpha (s(x, p) - delta)))
      + 1/|P|  sum_{p in P}  log(1 + sum_{x in X_p-} exp( alpha (s(x, p) + delta)))

    The proxies start as the authors' (``kaiming_normal_(mode="fan_out")`` of
    a PyTorch ``(classes, dim)`` tensor): normal with standard deviation
    ``sqrt(2 / num_classes)``, which is Keras's ``VarianceScaling(2.0,
    "fan_in", "untruncated_normal")`` (Keras counts the first axis as fan-in).
    The paper trains them with a 100x learning rate: see the module
    docstring for how to get that with a Keras optimizer.

    Sample weights follow the library's one rule (``docs/sample_weight.md``;
    Eq. 4 defines none): a sample's weight scales its share of each proxy's
    term, weights all ``c`` give ``c`` times the loss, and weight 0 (or a
    ``missing`` label) removes the sample from every sum.

    Eq. 4 is no mean over samples, so under a ``tf.distribute`` strategy each
    replica all-gathers the per-proxy sums (O(replicas x classes)): the sums,
    ``P+`` and the loss are those of the global batch, and training equals one
    device's (tested on two replicas). JAX's ``DataParallel`` step is global.

    Args:
        num_classes: number of classes (proxies).
        delta: the margin ``delta`` of the similarities (paper: 0.1).
        scale: the scale ``alpha`` of the similarities (paper: 32).
        proxies_initializer: initializer of the proxies; ``None`` for the
            authors' (above).
        distance: ``None`` for the paper's cosine similarity, or a
            :mod:`lossweave.distances` object or name: ``s`` is then its
            similarity, or minus its distance (``negative_threshold`` filters that ``s``).
        on: model output holding the embeddings ``(batch, dim)``.
        target: target holding sparse or one-hot labels.
        **kwargs: ``validate``, ``missing`` (see :class:`~lossweave.terms.Term`), and
            ``sample_rate``, ``seed`` and ``negative_threshold``: the
            class-center sampling and inter-class filtering of Partial FC
            (see :class:`lossweave.terms.MarginSoftmax`; a sampling step
            averages the negative part over the sampled proxies), and Layer
            arguments.

    Example:
        >>> import numpy as np
        >>> term = ProxyAnchorLoss(num_classes=3, delta=0.0, scale=1.0, proxies_initializer="identity")
        >>> x = np.eye(3, dtype="float32")   # x_i = p_i: log(1 + e^-1) + log(1 + 2 e^0)
        >>> round(float(term(x, np.array([0, 1, 2]))), 4)
        1.4119
    """

    weights_per = "tuple"  # Eq. 4 is no mean over samples

    def __init__(self, num_classes, delta=0.1, scale=32.0, proxies_initializer=None, distance=None, on="embedding",
                 target="label", **kwargs):
        if proxies_initializer is None:
            proxies_initializer = keras.initializers.VarianceScaling(2.0, "fan_in", "untruncated_normal")
        super().__init__(num_classes, proxies_initializer, distance, on=on, target=target, **kwargs)
        self.delta = arguments.number(delta, "delta", self, low=0.0)
        self.scale = arguments.positive(scale, "scale", self)

    def proxy_loss(self, embeddings, labels, sample_weight, proxies, mask=None, negative_threshold=None):
        # Eq. 4's sums are over the global batch under tf.distribute (a no-op on one device and on JAX).
        return proxy_ops.proxy_anchor_loss(
            embeddings, proxies, labels, delta=self.delta, scale=self.scale, sample_weight=sample_weight,
            gather=replica_gather(), mask=mask, negative_threshold=negative_threshold, metric=self.distance,
        )

    def get_config(self):
        return {**super().get_config(), "delta": self.delta, "scale": self.scale, **self.distance_config()}


@keras.saving.register_keras_serializable(package="lossweave")
class ProxyNCALoss(_ProxyTerm):
    """ProxyNCA (Movshovitz-Attias et al., ICCV 2017) and ProxyNCA++ (Teh, DeVries & Taylor, ECCV 2020).

    NCA over proxies with L2-normalised embeddings and proxies and squared
    Euclidean distances ``d`` (see :func:`lossweave.ops.proxy_nca_loss`):

    - ``ProxyNCALoss(n)`` is the 2017 loss, ``-log(exp(-d(x, p_y)) /
      sum_{z != y} exp(-d(x, p_z)))``: temperature 1 and the positive proxy
      *not* in the denominator (so the loss can be negative);
    - ``ProxyNCALoss(n, temperature=1/9, include_positive=True)`` is
      ProxyNCA++'s loss: softmax cross-entropy over all proxies of
      ``-d / T`` with its low temperature ``T = 1/9``. Its other parts are
      not the loss's: global max pooling belongs to the model, and its fast
      moving proxies to the optimizer (see the module docstring).

    The proxies start normal with standard deviation 1/8, as in the
    ProxyNCA++ authors' code (also their ProxyNCA baseline). The loss is the
    mean over the batch of the sample-weighted per-sample losses.

    Args:
        num_classes: number of classes (proxies).
        temperature: ``T`` dividing the distances (ProxyNCA: 1, ProxyNCA++: 1/9): ``1 / scale``
            of the logits, named as the papers name it.
        include_positive: the positive proxy in the denominator (ProxyNCA++).
        squared: squared Euclidean distances (both papers) or Euclidean ones.
        proxies_initializer: initializer of the proxies; ``None`` for normal
            with standard deviation 1/8.
        distance: ``None`` for the distance ``squared`` says (of L2-normalised
            vectors), or a :mod:`lossweave.distances` object or name, whose
            distance ``d`` gives the logits ``-d / T`` (a similarity: ``s / T``);
            pytorch-metric-learning's ``ProxyNCALoss`` is
            ``distance=SquaredEuclideanDistance(normalize_embeddings=True)``, the
            default's values. ``squared`` chooses the default only (it is not
            used with a distance); ``negative_threshold`` then filters the
            logits' ``-d`` (a similarity ``s``) as it filters cosines.
        on: model output holding the embeddings ``(batch, dim)``.
        target: target holding sparse or one-hot labels.
        **kwargs: ``validate``, ``missing`` (see :class:`~lossweave.terms.Term`), and
            ``sample_rate``, ``seed`` and ``negative_threshold``: the
            class-center sampling and inter-class filtering of Partial FC
            (see :class:`lossweave.terms.MarginSoftmax`; a sampling step
            averages the negative part over the sampled proxies), and Layer
            arguments.

    Example:
        >>> import numpy as np
        >>> x, y = np.eye(3, dtype="float32")[:1], np.array([0])   # x = p_0: d = 0, 2, 2
        >>> nca = ProxyNCALoss(num_classes=3, proxies_initializer="identity")
        >>> round(float(nca(x, y)), 4)   # 0 + log(2 e^-2)
        -1.3069
        >>> plus = ProxyNCALoss(num_classes=3, temperature=1 / 9, include_positive=True,
        ...                     proxies_initializer="identity")
        >>> round(float(plus(np.array([[1., 1., 0.]], "float32"), y)), 4)   # halfway to p_1: ~log 2
        0.6931
    """

    def __init__(self, num_classes, temperature=1.0, include_positive=False, squared=True, proxies_initializer=None,
                 distance=None, on="embedding", target="label", **kwargs):
        if proxies_initializer is None:
            proxies_initializer = keras.initializers.RandomNormal(stddev=0.125)
        super().__init__(num_classes, proxies_initializer, distance, on=on, target=target, **kwargs)
        self.temperature = arguments.positive(temperature, "temperature", self)
        self.include_positive = arguments.boolean(include_positive, "include_positive", self)
        self.squared = arguments.boolean(squared, "squared", self)


    def proxy_loss(self, embeddings, labels, sample_weight, proxies, mask=None, negative_threshold=None):
        return proxy_ops.proxy_nca_loss(
            embeddings, proxies, labels, temperature=self.temperature, include_positive=self.include_positive,
            squared=self.squared, sample_weight=sample_weight, mask=mask, negative_threshold=negative_threshold,
            metric=self.distance,
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {"temperature": self.temperature, "include_positive": self.include_positive, "squared": self.squared,
             **self.distance_config()}
        )
        return config
