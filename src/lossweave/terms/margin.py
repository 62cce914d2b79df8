"""The margin-softmax family as terms that own their class weights.

One base, :class:`MarginSoftmax`, holds the class weights (a trainable
``(num_classes * sub_centers, dim)`` variable of the term, so ``Objective``
trains and saves it) and computes the loss; a family member overrides
small hooks (in the style of pytorch-metric-learning's large-margin losses):

- ``target_logit(cos_y, training)``: the target class's value with the margin
  (with ``reads_norms = True`` also given ``norms=``, the ``(batch,)`` L2 norms
  of the raw embeddings: AdaFace, MagFace; with ``reads_batch = True`` also
  given ``batch=``, the call's :class:`MarginBatch`: AdaFace, ElasticFace);
- ``logit_scale(embeddings)``: ``s`` (SphereFace: ``||x||``);
- ``normalizes_weights = False`` (a declaration): the logits keep the class
  weights' norms, ``s ||W_j|| cos theta_j``, and the target's scale is
  ``s ||W_y||`` (L-Softmax, ``lossweave.terms.large_margin``).

and, for the adaptive members (``lossweave.terms.adaptive_margin``), hooks
that see the call's :class:`MarginBatch` (the scaled cosines, the target
cosines, the norms, the rows that count, and what ``observe`` returned):

- ``observe(batch) -> observed``: computes the call's values (AdaFace's norm
  statistics, CurricularFace's ``t``, AdaCos's ``s``) before any margin is
  applied and **returns** them; the base puts them in ``batch.observed``,
  which every later hook of the same call reads (nothing is kept on the
  term between hooks: replicas tracing in parallel threads share no value);
- ``batch_scale(batch)``: the scale the call uses (AdaCos's dynamic ``s``);
- ``negative_logits(logits, batch)``: the non-target logits (CurricularFace's
  re-weighted hard negatives);
- ``sample_penalty(batch)``: a ``(batch,)`` term added to each row's loss
  (MagFace's ``lambda_g g(a_i)``).

``loss_and_observed(...)`` returns the loss with ``observed``, so that a term
that keeps what it observed (``BatchStatistics``: running statistics) hands
it to the base as ``Term.loss_and_state``'s values, assigned under the gate.

``sub_centers=K`` gives each class ``K`` weight vectors, the cosine to a class
being the largest of its ``K`` (sub-center ArcFace). ``cosines(embeddings)``
returns the unscaled cosines to each class.

The model itself stays label-free: ``term.logits(embeddings)`` gives the
margin-free logits ``s * cos theta`` for inference, and
``term.classifier(model)`` a Keras model that adds them as an output.
"""

import math
from typing import NamedTuple

import keras
import numpy as np
from keras import ops

from lossweave import arguments
from lossweave.ops import adaptive_margin as adaptive_ops
from lossweave.ops import large_margin as large_margin_ops
from lossweave.ops import margin as margin_ops
from lossweave.ops import sampling as sampling_ops
from lossweave.terms.table import SampledClassTable


_ADAPTIVE_HOOKS = ("observe", "batch_scale", "negative_logits", "sample_penalty")


def _angle(value, name, owner):
    """An additive angular margin in radians, in ``[0, pi)``."""
    return arguments.number(value, name, owner, low=0.0, high=math.pi, high_open=True,
                            hint="It is an angle in radians (0.5 rad is 28.6 degrees).")


def _cosine(value, name, owner):
    """An additive cosine margin, in ``[0, 2)``."""
    return arguments.number(value, name, owner, low=0.0, high=2.0, high_open=True)


class MarginBatch(NamedTuple):
    """What one call of a margin term hands its adaptive hooks.

    Attributes:
        logits: ``(batch, S)`` float32 ``scale * cos theta_j`` over the step's
            classes (``S = num_classes``, or the sampled slots), before any
            margin, filtering or exclusion of unused slots.
        hit: ``(batch, S)`` bool, true at each row's target.
        in_use: ``(S,)`` bool of the sampled slots in use, or ``None`` (every class).
        cos_target: ``(batch,)`` float32 target cosines clipped to ``[-1, 1]``
            (0 where a row has no valid label).
        norms: ``(batch,)`` float32 L2 norms of the raw embeddings (with
            their gradient), or ``None`` unless the term ``reads_norms``.
        rows: ``(batch,)`` bool, the rows a batch statistic counts: a valid
            label, finite features and a non-zero sample weight.
        scale: the scale of ``logits``: a Python float or a float32 ``()`` /
            ``(batch,)`` tensor.
        training: the call's ``training`` flag.
        observed: what the term's ``observe(batch)`` returned for this call
            (``None`` before it runs, and for a term that observes nothing).
    """

    logits: object
    hit: object
    in_use: object
    cos_target: object
    norms: object
    rows: object
    scale: object
    training: object
    observed: object = None


@keras.saving.register_keras_serializable(package="lossweave")
class MarginSoftmax(SampledClassTable):
    """Base of the margin-softmax terms: normalised class weights and a margin on the target.

    The loss is softmax cross-entropy on ``logit_scale * cos theta_j`` where
    the target class's cosine is replaced by ``target_logit(cos theta_y)``.
    Cosines are float32 under any dtype policy; labels are sparse or one-hot
    and checked (a bad label raises ``InvalidInputError`` and is skipped).

    **Class-center sampling** (Partial FC, An et al., ICCVW 2021 and CVPR
    2022): with ``sample_rate < 1`` each training step keeps every positive
    class of the (global) batch plus negatives drawn uniformly without
    replacement, ``ceil(sample_rate * num_classes)`` classes in all (the
    positives only if they alone exceed that), and computes the logits over
    those classes' rows only: ``(batch, S)`` with ``S = min(num_classes,
    max(budget, batch))`` slots, the unused ones out of the softmax (see
    :mod:`lossweave.ops.sampling`). Only the sampled rows get a gradient.
    Evaluation, :meth:`logits` and :meth:`classifier` use every class.

    Args:
        num_classes: number of classes.
        scale: the scale ``s`` of the cosines.
        sub_centers: class weight vectors per class (sub-center ArcFace ``K``).
        class_weights_initializer: initializer of the class weights.
        on: model output holding the embeddings ``(batch, dim)``.
        target: target holding sparse or one-hot labels.
        validate: raise on bad rows at run time (bad rows are skipped either way).
        missing: the label of unlabelled rows (see :class:`~lossweave.terms.Term`).
        sample_rate: fraction of the classes a training step computes logits
            for, in ``(0, 1]``; 1.0 (every class) is the plain term.
        seed: int seed of the class sampling (``None``: a random one).
        negative_threshold: ``None`` (off) or a cosine in ``(0, 1)``: in
            training, a negative class whose cosine to a sample exceeds it
            gets logit 0 and no gradient (the inter-class filtering of
            Partial FC, CVPR 2022, Sec. 3.2; insightface's
            ``interclass_filtering_threshold``, 0.4 in its configs).
    """

    table_name = "class_weights"
    reads_norms = False  # True: target_logit also gets norms=, the raw embeddings' L2 norms
    reads_batch = False  # True: target_logit also gets batch=, the call's MarginBatch (with batch.observed)
    normalizes_weights = True  # False: logits s ||W_j|| cos theta_j, the target scaled by s ||W_y|| (L-Softmax)

    def __init__(
        self,
        num_classes,
        scale=64.0,
        sub_centers=1,
        class_weights_initializer="glorot_normal",
        on="embedding",
        target="label",
        **kwargs,
    ):
        super().__init__(num_classes, on=on, target=target, **kwargs)
        self.scale = arguments.positive(scale, "scale", self)
        self.sub_centers = arguments.positive_int(sub_centers, "sub_centers", self)
        self.class_weights_initializer = keras.initializers.get(class_weights_initializer)

    @property
    def rows_per_class(self):
        return self.sub_centers

    # ------------------------------------------------------------------ hooks
    def cosines(self, embeddings):
        """``(batch, num_classes)`` float32 cosines to each class (max over sub-centers)."""
        return margin_ops.subcenter_cosine_similarity(embeddings, self.class_weights, self.sub_centers)

    def target_logit(self, cos_target, training=None):
        """The target class's value before the scale; the base adds no margin.

        ``cos_target``: ``(batch,)`` float32 target cosines in ``[-1, 1]``. A
        term with ``reads_norms = True`` is also given ``norms=`` (``(batch,)``
        raw embedding norms), one with ``reads_batch = True`` ``batch=`` (the
        call's :class:`MarginBatch`, ``batch.observed`` included).
        """
        return cos_target

    def logit_scale(self, embeddings):
        """The scale of the logits: ``s``."""
        return self.scale

    def class_logits(self, embeddings, table, scale):
        """``(batch, rows)`` float32 logits over ``table`` before any margin: ``scale * cos theta_j``.

        With ``normalizes_weights = False``, ``scale * ||W_j|| cos theta_j`` (no sub-centers).
        """
        if self.normalizes_weights:
            return margin_ops.scaled_cosines(embeddings, table, scale, self.sub_centers)
        return large_margin_ops.weighted_cosines(embeddings, table, scale)

    def observe(self, batch):
        """The call's own values, computed once from its :class:`MarginBatch` before any margin.

        Whatever this returns becomes ``batch.observed`` for the later hooks
        of the same call (``batch_scale``, ``negative_logits``,
        ``target_logit`` with ``reads_batch``, ``sample_penalty``) and is the
        second value of :meth:`loss_and_observed`. Store nothing on ``self``
        here. ``None`` by default.
        """
        return None

    def batch_scale(self, batch):
        """The scale this step's logits use (``batch.logits`` are rescaled to it): ``batch.scale`` by default."""
        return batch.scale

    def negative_logits(self, logits, batch):
        """The ``(batch, S)`` scaled logits with the non-target entries as the loss uses them; unchanged by default.

        The target entries are replaced afterwards (whatever this returns there).
        """
        return logits

    def sample_penalty(self, batch):
        """A ``(batch,)`` float32 term added to each row's loss (weighted as the row is), or ``None``."""
        return None

    # ---------------------------------------------------------------- outputs
    def logits(self, embeddings):
        """Margin-free logits ``logit_scale * cos theta_j`` for inference (no labels)."""
        self.ensure_built(embeddings)
        return self.class_logits(embeddings, self.class_weights, self.logit_scale(embeddings))

    def margin_logits(self, embeddings, labels, training=None):
        """The training logits: the target entry of each row carries the margin."""
        return self._margin_logits(embeddings, labels, training)[0]

    def _margin_logits(self, embeddings, labels, training=None, sample_weight=None):
        """``(logits, target logit, valid rows, per-row penalty or None, observed)`` of the training logits.

        Fast at many classes: the scale multiplies the ``(batch, dim)``
        embeddings before the matmul, the target cosine is read by one masked
        sum and clipped to ``[-1, 1]`` alone (the only entry a margin
        transforms), and the target is written by one select; the loss then
        needs no log-softmax array or gather (``margin_cross_entropy``).
        Rows with non-finite embeddings are zeroed before the matmul (and are
        invalid), so that their gradients stay finite. A sampling training
        step (``sample_rate < 1``) computes ``(batch, S)`` logits over the
        sampled classes, in the order of the sample (see ``draw_classes``).
        ``observed`` is what ``observe`` returned (``None`` for a term that
        does not adapt).
        """
        self.ensure_built(embeddings)
        embeddings, finite = self.finite_embeddings(embeddings)
        norms = adaptive_ops.feature_norms(embeddings) if self.reads_norms else None
        scale = self.logit_scale(embeddings)
        table, labels, in_use, classes = self.training_rows(labels, training)
        logits = self.class_logits(embeddings, table, scale)
        hit, valid = margin_ops.target_mask(labels, classes)
        valid = ops.logical_and(valid, finite)
        scale = margin_ops.row_scale(scale)
        if not self.normalizes_weights:  # the target's scale: s ||x|| ||W_y||
            scale = scale * large_margin_ops.target_weight_norms(table, labels, classes)
        # The target entries: filtering keeps them and a target slot is always in use.
        scaled_target = margin_ops.masked_target(logits, hit)  # (batch,): scale * cos theta_y
        if isinstance(scale, float):
            cos_target = scaled_target / scale
        else:  # a learned scale, or SphereFace's ||x||, which may be 0 (then so is scale * cos)
            cos_target = scaled_target / ops.maximum(scale, 1e-12)
        cos_target = ops.clip(cos_target, -1.0, 1.0)
        batch = None
        if self.adapts:
            rows = valid if sample_weight is None else ops.logical_and(
                valid, ops.reshape(ops.cast(sample_weight, "float32"), (-1,)) != 0.0)
            batch = MarginBatch(logits, hit, in_use, cos_target, norms, rows, scale, training)
            batch = batch._replace(observed=self.observe(batch))
            new_scale = self.batch_scale(batch)
            if new_scale is not scale:
                logits = logits * (new_scale / ops.maximum(scale, 1e-12))
                scale = new_scale
                batch = batch._replace(logits=logits, scale=scale)
            logits = self.negative_logits(logits, batch)
        if self.filters(training):
            logits = sampling_ops.filter_negatives(logits, hit, self.negative_threshold, scale)
        if in_use is not None:
            logits = sampling_ops.exclude_unused(logits, in_use)
        extra = {"norms": norms} if self.reads_norms else {}
        if self.reads_batch:
            extra["batch"] = batch
        target = self.target_logit(cos_target, training=training, **extra) * scale
        penalty = None if batch is None else self.sample_penalty(batch)
        observed = None if batch is None else batch.observed
        return margin_ops.replace_target(logits, hit, target), target, valid, penalty, observed

    @property
    def adapts(self):
        """Whether this class reads the :class:`MarginBatch` (``reads_batch``, or an adaptive hook overridden)."""
        cls = type(self)
        overridden = any(getattr(cls, name) is not getattr(MarginSoftmax, name) for name in _ADAPTIVE_HOOKS)
        return cls.reads_batch or overridden

    def classifier(self, model, on=None, name="logits"):
        """A Keras model: ``model``'s outputs plus the margin-free logits of this term.

        Args:
            model: a functional model with the embedding output this term reads.
            on: the output holding the embeddings (default: the term's ``on``).
            name: name of the added output.

        Returns:
            ``keras.Model(model.inputs, {**outputs, name: logits})``; the logits
            layer shares this term's class weights.
        """
        on = self.on if on is None else on
        outputs = model.outputs if not isinstance(model.output, dict) else model.output
        if isinstance(outputs, dict):
            if on not in outputs:
                raise ValueError(
                    f"{type(self).__name__}.classifier: the model has no output {on!r}; "
                    f"it has {sorted(outputs)}."
                )
            embeddings, outputs = outputs[on], dict(outputs)
        elif len(outputs) == 1:
            embeddings, outputs = outputs[0], {"embedding": outputs[0]}
        else:
            raise ValueError(
                f"{type(self).__name__}.classifier: the model has {len(outputs)} unnamed outputs; "
                "give it dict outputs and pass `on`."
            )
        outputs[name] = MarginLogits(self, name=name)(embeddings)
        return keras.Model(model.inputs, outputs, name=f"{model.name}_classifier")

    def compute_loss(self, outputs, targets, sample_weight, training):
        return self.loss_and_observed(outputs, targets, sample_weight, training)[0]

    def loss_and_observed(self, outputs, targets, sample_weight, training):
        """``(loss, observed)``: the term's loss and what ``observe`` returned in the same call."""
        logits, target, valid, penalty, observed = self._margin_logits(outputs, targets, training, sample_weight)
        return margin_ops.margin_cross_entropy(logits, target, valid, sample_weight, penalty), observed

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "sub_centers": self.sub_centers}


@keras.saving.register_keras_serializable(package="lossweave")
class MarginLogits(keras.layers.Layer):
    """Margin-free logits of a margin term as a layer (shares the term's class weights).

    Example:
        >>> import numpy as np
        >>> term = CosFace(num_classes=3)
        >>> tuple(MarginLogits(term)(np.ones((2, 4), "float32")).shape)
        (2, 3)
    """

    def __init__(self, term, **kwargs):
        arguments.check_keywords(self, kwargs)
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.term = term

    def build(self, input_shape):
        if not self.term.built:
            self.term.build(tuple(input_shape))

    def call(self, embeddings):
        return self.term.logits(embeddings)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.term.num_classes)

    def get_config(self):
        return {**super().get_config(), "term": keras.saving.serialize_keras_object(self.term)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["term"] = keras.saving.deserialize_keras_object(config["term"])
        return cls(**config)


@keras.saving.register_keras_serializable(package="lossweave")
class NormFace(MarginSoftmax):
    """NormFace: softmax on scaled cosines, no margin (Wang et al., "NormFace", ACM MM 2017).

    Logits ``s * cos theta_j`` with L2-normalised embeddings and class weights
    (Eq. 7-8). The paper learns ``s`` (Sec. 3.3) and shows it must be large
    enough for the loss to go low (Prop. 2: ``s >= (n - 1)/n * log((n - 1) P /
    (1 - P))`` for ``n`` classes and target probability ``P``; 16 serves up to
    tens of thousands of classes at ``P`` = 0.9). ``learn_scale=True`` learns it.

    Args:
        num_classes: number of classes.
        scale: ``s`` (or its initial value with ``learn_scale=True``).
        learn_scale: learn ``s`` as a trainable float32 variable.
        **kwargs: see :class:`MarginSoftmax`.

    Example:
        >>> import numpy as np
        >>> term = NormFace(num_classes=3, scale=10.0)
        >>> loss = term(np.ones((2, 4), "float32"), np.array([0, 2]))
        >>> bool(np.isfinite(float(loss)))
        True
    """

    def __init__(self, num_classes, scale=16.0, learn_scale=False, **kwargs):
        super().__init__(num_classes, scale=scale, **kwargs)
        self.learn_scale = arguments.boolean(learn_scale, "learn_scale", self)

    def build(self, outputs_shape):
        super().build(outputs_shape)
        if self.learn_scale:
            self.learned_scale = self.add_weight(
                name="scale", shape=(), initializer=keras.initializers.Constant(self.scale),
                trainable=True, dtype="float32", autocast=False,
            )

    def logit_scale(self, embeddings):
        return self.learned_scale if self.learn_scale else self.scale

    def get_config(self):
        return {**super().get_config(), "learn_scale": self.learn_scale}


@keras.saving.register_keras_serializable(package="lossweave")
class CosFace(MarginSoftmax):
    """CosFace / AM-Softmax: ``s * (cos theta_y - m)`` (Wang et al., CVPR 2018, Eq. 4).

    Args:
        num_classes: number of classes.
        scale: ``s`` (paper: 64).
        cosine_margin: the additive cosine margin ``m`` (unitless, paper: 0.35).
        **kwargs: see :class:`MarginSoftmax`.

    Example:
        >>> import numpy as np
        >>> term = CosFace(num_classes=3, scale=1.0, cosine_margin=0.35, class_weights_initializer="identity")
        >>> x = np.array([[1., 0., 0.]], "float32")
        >>> [round(float(v), 2) for v in term.margin_logits(x, np.array([0]))[0]]
        [0.65, 0.0, 0.0]
    """

    def __init__(self, num_classes, scale=64.0, cosine_margin=0.35, **kwargs):
        super().__init__(num_classes, scale=scale, **kwargs)
        self.cosine_margin = _cosine(cosine_margin, "cosine_margin", self)

    def target_logit(self, cos_target, training=None):
        return margin_ops.cosface_target(cos_target, self.cosine_margin)

    def get_config(self):
        return {**super().get_config(), "cosine_margin": self.cosine_margin}


@keras.saving.register_keras_serializable(package="lossweave")
class ArcFace(MarginSoftmax):
    """ArcFace: ``s * cos(theta_y + m)`` (Deng et al., CVPR 2019, Eq. 3).

    Past ``theta_y + m > pi`` the target is ``cos theta_y - m sin m`` so that it
    keeps falling as the angle grows (see :func:`lossweave.ops.margin.arcface_target`).

    Args:
        num_classes: number of classes.
        scale: ``s`` (paper: 64).
        angular_margin: the additive angular margin ``m`` in radians (paper: 0.5, ~28.6 deg).
        easy_margin: apply the margin only where ``cos theta_y > 0``.
        **kwargs: see :class:`MarginSoftmax` (``sub_centers`` for sub-center ArcFace).

    Example:
        >>> import numpy as np
        >>> term = ArcFace(num_classes=3, scale=1.0, angular_margin=0.5, class_weights_initializer="identity")
        >>> x = np.array([[1., 0., 0.]], "float32")   # theta_y = 0: target cos(0.5)
        >>> round(float(term.margin_logits(x, np.array([0]))[0, 0]), 4)
        0.8776
    """

    def __init__(self, num_classes, scale=64.0, angular_margin=0.5, easy_margin=False, **kwargs):
        super().__init__(num_classes, scale=scale, **kwargs)
        self.angular_margin = _angle(angular_margin, "angular_margin", self)
        self.easy_margin = arguments.boolean(easy_margin, "easy_margin", self)

    def target_logit(self, cos_target, training=None):
        return margin_ops.arcface_target(cos_target, self.angular_margin, self.easy_margin)

    def get_config(self):
        return {**super().get_config(), "angular_margin": self.angular_margin, "easy_margin": self.easy_margin}


@keras.saving.register_keras_serializable(package="lossweave")
class CombinedMargin(MarginSoftmax):
    """The combined margin ``s * (cos(m1 theta_y + m2) - m3)`` (Deng et al., CVPR 2019, Eq. 4).

    ``(m1, m2, m3) = (1, m, 0)`` is ArcFace, ``(1, 0, m)`` CosFace; the default
    ``(1.0, 0.3, 0.2)`` is the paper's best combination.

    Args:
        num_classes: number of classes.
        scale: ``s`` (paper: 64).
        multiplicative_margin: ``m1``, the multiplicative angular margin (in [1, 10]).
        angular_margin: ``m2``, the additive angular margin in radians.
        cosine_margin: ``m3``, the additive cosine margin.
        **kwargs: see :class:`MarginSoftmax`.

    Example:
        >>> import numpy as np
        >>> term = CombinedMargin(num_classes=2, scale=1.0, class_weights_initializer="identity")
        >>> x = np.array([[1., 0.]], "float32")
        >>> round(float(term.margin_logits(x, np.array([0]))[0, 0]), 4)   # cos(0.3) - 0.2
        0.7553
    """

    def __init__(self, num_classes, scale=64.0, multiplicative_margin=1.0, angular_margin=0.3, cosine_margin=0.2,
                 **kwargs):
        super().__init__(num_classes, scale=scale, **kwargs)
        self.multiplicative_margin = arguments.number(
            multiplicative_margin, "multiplicative_margin", self, low=1.0, high=10.0
        )
        self.angular_margin = _angle(angular_margin, "angular_margin", self)
        self.cosine_margin = _cosine(cosine_margin, "cosine_margin", self)

    def target_logit(self, cos_target, training=None):
        return margin_ops.combined_margin_target(
            cos_target, self.multiplicative_margin, self.angular_margin, self.cosine_margin
        )

    def get_config(self):
        return {**super().get_config(), "multiplicative_margin": self.multiplicative_margin,
                "angular_margin": self.angular_margin, "cosine_margin": self.cosine_margin}


@keras.saving.register_keras_serializable(package="lossweave")
class SubCenterArcFace(ArcFace):
    """Sub-center ArcFace: ``K`` sub-centers per class, max cosine over them (Deng et al., ECCV 2020).

    Each class has ``K`` weight vectors; the cosine to a class is the largest
    cosine to its sub-centers (Sec. 3.1), then ArcFace's margin applies. Noisy
    samples gather around non-dominant sub-centers: :meth:`noisy_samples`
    lists the samples whose angle to their class's dominant sub-center exceeds
    a threshold (the paper drops those beyond 75 degrees, Sec. 3.2).

    Args:
        num_classes: number of classes.
        sub_centers: ``K`` (paper: 3).
        scale: ``s`` (paper: 64).
        angular_margin: the additive angular margin in radians (paper: 0.5).
        **kwargs: see :class:`ArcFace`.

    Example:
        >>> import numpy as np
        >>> term = SubCenterArcFace(num_classes=4, sub_centers=3)
        >>> tuple(term(np.ones((2, 5), "float32"), np.array([1, 3])).shape)
        ()
    """

    def __init__(self, num_classes, sub_centers=3, scale=64.0, angular_margin=0.5, **kwargs):
        super().__init__(num_classes, scale=scale, angular_margin=angular_margin, sub_centers=sub_centers, **kwargs)

    def dominant_angles(self, embeddings, labels):
        """Angle (radians) of each sample to the dominant sub-center of its class.

        The dominant sub-center of a class is the one nearest to most of the
        class's samples among ``embeddings`` (Sec. 3.2). NumPy in and out.

        Returns:
            ``(angles, dominant)``: float ``(n,)`` angles and int
            ``(num_classes,)`` index of each class's dominant sub-center (0 for
            classes absent from ``labels``).
        """
        x = np.asarray(embeddings, dtype="float64")
        y = np.asarray(labels).reshape(-1)
        if x.ndim != 2 or y.shape != (x.shape[0],):
            raise ValueError(
                f"SubCenterArcFace.dominant_angles: expected embeddings (n, dim) and labels (n,); "
                f"received {x.shape} and {np.asarray(labels).shape}."
            )
        if y.size and (y.min() < 0 or y.max() >= self.num_classes or not np.all(y == np.floor(y))):
            raise ValueError(
                f"SubCenterArcFace.dominant_angles: labels must be integers in [0, {self.num_classes}); "
                f"received values in [{y.min()}, {y.max()}]."
            )
        y = y.astype("int64")
        w = np.asarray(keras.ops.convert_to_numpy(self.class_weights), dtype="float64")
        w = w / np.maximum(np.linalg.norm(w, axis=1, keepdims=True), 1e-12)
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        k = self.sub_centers
        own = w.reshape(self.num_classes, k, -1)[y]            # (n, K, dim)
        cos = np.clip(np.einsum("nd,nkd->nk", x, own), -1.0, 1.0)
        nearest = cos.argmax(axis=1)
        votes = np.zeros((self.num_classes, k), dtype="int64")
        np.add.at(votes, (y, nearest), 1)
        dominant = votes.argmax(axis=1)
        angles = np.arccos(cos[np.arange(len(y)), dominant[y]])
        return angles, dominant

    def noisy_samples(self, embeddings, labels, threshold=math.radians(75.0)):
        """Indices of likely mislabelled samples, farthest first.

        Args:
            embeddings: ``(n, dim)`` NumPy embeddings.
            labels: ``(n,)`` integer labels.
            threshold: angle to the dominant sub-center, in radians (paper:
                75 degrees).

        Returns:
            ``(indices, angles)``: int indices of the samples beyond the
            threshold, sorted by decreasing angle, and their angles.
        """
        angles, _ = self.dominant_angles(embeddings, labels)
        beyond = np.flatnonzero(angles > threshold)
        order = beyond[np.argsort(-angles[beyond], kind="stable")]
        return order, angles[order]


@keras.saving.register_keras_serializable(package="lossweave")
class SphereFace(MarginSoftmax):
    """SphereFace / A-Softmax (Liu et al., CVPR 2017): multiplicative angular margin.

    Class weights are normalised, embeddings are not: the logits are
    ``||x|| cos theta_j`` and the target's is ``||x|| psi(theta_y)`` with the
    monotonic ``psi(theta) = (-1)^k cos(m theta) - 2k`` (Eq. 6). As in the
    authors' code, the margin is annealed: the target logit is
    ``||x|| (lambda cos theta_y + psi(theta_y)) / (1 + lambda)`` with
    ``lambda = max(lambda_min, base (1 + gamma t)^-power)`` at training step
    ``t`` (the term's own ``iterations`` counter, saved with it).

    Args:
        num_classes: number of classes.
        multiplicative_margin: the integer multiplier ``m`` of the angle (paper: 4).
        base, gamma, power, lambda_min: the annealing of ``lambda`` (paper's
            code: 1000, 0.12, 1, 5). ``lambda_min=0`` reaches the pure margin.
        **kwargs: see :class:`MarginSoftmax`, but no ``scale``: the scale is
            ``||x||`` (a given ``scale`` is refused).

    Example:
        >>> import numpy as np
        >>> term = SphereFace(num_classes=3, base=0.0, lambda_min=0.0, class_weights_initializer="identity")
        >>> x = np.array([[2., 0., 0.]], "float32")   # theta_y = 0: psi = cos(0) = 1
        >>> [round(float(v), 4) for v in term.margin_logits(x, np.array([0]))[0]]
        [2.0, 0.0, 0.0]
    """

    def __init__(self, num_classes, multiplicative_margin=4, base=1000.0, gamma=0.12, power=1.0, lambda_min=5.0,
                 **kwargs):
        if "scale" in kwargs:
            raise TypeError(
                f"SphereFace: received scale={kwargs['scale']!r}; SphereFace takes no `scale`: its logits are "
                f"scaled by the feature norm ||x|| (Eq. 6). Drop `scale`, or use NormFace / CosFace / ArcFace "
                f"for a fixed scale."
            )
        super().__init__(num_classes, scale=1.0, **kwargs)
        self.multiplicative_margin = arguments.positive_int(multiplicative_margin, "multiplicative_margin", self)
        self.base, self.gamma, self.power, self.lambda_min = (
            arguments.number(value, name, self, low=0.0)
            for name, value in (("base", base), ("gamma", gamma), ("power", power), ("lambda_min", lambda_min))
        )

    def build(self, outputs_shape):
        super().build(outputs_shape)
        self.iterations = self.add_weight(
            name="iterations", shape=(), initializer="zeros", trainable=False, dtype="int32", autocast=False
        )

    def annealing(self):
        """The current ``lambda``."""
        return margin_ops.sphereface_lambda(self.iterations, self.base, self.gamma, self.power, self.lambda_min)

    def target_logit(self, cos_target, training=None):
        lam = self.annealing()
        return (lam * cos_target + margin_ops.sphereface_psi(cos_target, self.multiplicative_margin)) / (1.0 + lam)

    def logit_scale(self, embeddings):
        x = ops.cast(embeddings, "float32")  # ||x||, with a zero (finite) gradient at a zero row
        return margin_ops.safe_sqrt(ops.sum(ops.square(x), axis=-1, keepdims=True))

    def update_state(self, outputs, targets, sample_weight):
        self.iterations.assign_add(ops.ones((), "int32"))

    def get_config(self):
        config = super().get_config()
        config.pop("scale")
        config.update(
            {"multiplicative_margin": self.multiplicative_margin, "base": self.base, "gamma": self.gamma,
             "power": self.power,
             "lambda_min": self.lambda_min}
        )
        return config
