"""The adaptive margin-softmax terms: AdaFace, MagFace, CurricularFace, AdaCos.

Each is a :class:`~lossweave.terms.MarginSoftmax` (class weights, Partial FC
``sample_rate``, sub-centers, float32 inside under any dtype policy) plus its
formula (:mod:`lossweave.ops.adaptive_margin`), its defaults and the hooks it
overrides. The defaults are those of the authors' released code, which
produced the published numbers; where a paper differs, the paper's variant is
an argument and the class docstring says how the two differ.

Running statistics (AdaFace's norm mean and std, CurricularFace's ``t``,
AdaCos's dynamic ``s``) are non-trainable float32 variables, saved with the
term. As in the authors' code, a training step computes them from its batch
**before** it uses them (``observe`` returns them; they travel in the call's
``MarginBatch.observed`` to the hooks that use them), uses them, and then
keeps them: the values the step used are handed back with its loss
(``Term.loss_and_state``) and the base assigns them under the term's gate, so a failed
batch (bad label, NaN feature, non-finite loss) moves nothing, and
evaluation never moves them. Nothing of a call is stored on the term
between its hooks. They are computed over the **global** batch:
under TensorFlow's ``MirroredStrategy`` every replica gathers the batch's
norms or cosines (``all_gather``/``all_reduce``), so that the replicas agree
with one device; under JAX ``keras.distribution`` the compiled step already
sees the global batch. The rows a statistic counts are those with a valid
label, finite features and a non-zero sample weight (a row of weight 0 is
absent, the library's one meaning of sample weights).
"""

import keras
from keras import ops

from lossweave import _backend as backend
from lossweave import arguments
from lossweave.ops import adaptive_margin as adaptive_ops
from lossweave.ops import margin as margin_ops
from lossweave.terms.margin import MarginSoftmax, _angle


def _rate(value, owner):
    return arguments.number(
        value, "update_rate", owner, low=0.0, low_open=True, high=1.0,
        hint="It is the weight of the batch's value in the running one: the authors' code uses 0.01, "
             "the papers write alpha = 0.99.",
    )


class BatchStatistics(MarginSoftmax):
    """A margin term with running statistics that a training step computes from its batch, uses, then keeps.

    A subclass creates its statistics with :meth:`add_statistic` in ``build``
    and gives ``statistics(batch) -> [(variable, value), ...]``, the values of
    one training step (``batch``: :class:`~lossweave.terms.margin.MarginBatch`).
    In training, ``observe`` returns those values (float32, no gradient), so
    that they are ``batch.observed`` for the call's other hooks, which read
    them with :meth:`current`; ``call`` receives them with the loss
    (``loss_and_state``) and the base assigns them under the term's gate (the
    :class:`~lossweave.terms.Term` protocol: checks, loss, gated update).
    Not a loss of its own: the base of the adaptive terms.
    """

    def statistics(self, batch):
        raise NotImplementedError(f"{type(self).__name__} must implement statistics(batch).")

    def add_statistic(self, name, initial):
        """A non-trainable float32 scalar variable, saved with the term, the same on every replica."""
        return self.add_weight(
            name=name, shape=(), initializer=keras.initializers.Constant(initial), trainable=False,
            dtype="float32", autocast=False, aggregation="only_first_replica",
        )

    def observe(self, batch):
        """``((variable, value), ...)``: this training step's statistics; ``()`` in evaluation."""
        if not batch.training:
            return ()
        return tuple((variable, ops.stop_gradient(ops.cast(value, "float32")))
                     for variable, value in self.statistics(batch))

    @staticmethod
    def current(variable, batch):
        """``variable``'s value for the call of ``batch``: the one its training step observed, else the saved one."""
        for kept, value in batch.observed or ():
            if kept is variable:
                return value
        return ops.convert_to_tensor(variable)

    def loss_and_state(self, outputs, targets, sample_weight, training):
        """The loss and the statistics it used: the base assigns them under the term's gate."""
        loss, observed = self.loss_and_observed(outputs, targets, sample_weight, training)
        return loss, observed or ()


def _kept_unless(count, minimum, new, old):
    """``new`` where at least ``minimum`` rows counted, else ``old`` (a statistic of too few rows)."""
    return ops.where(count >= minimum, new, ops.convert_to_tensor(old))


@keras.saving.register_keras_serializable(package="lossweave")
class AdaFace(BatchStatistics):
    """AdaFace: a margin adapted to the feature norm, a proxy of image quality (Kim, Jain & Liu, CVPR 2022).

    Sec. 3.3 of the paper ("AdaFace: Adaptive Margin based on Norm"), its
    three formulas written out here (equation numbers not cited: they could
    not be checked against the paper's text, see ``docs/margin_softmax.md``):

    - the margin function: the target logit is ``s cos(theta_y + g_angle) - g_add``,
      a non-target ``s cos theta_j``;
    - its two parts: ``g_angle = -m ||z||^`` and ``g_add = m ||z||^ + m``;
    - the image-quality indicator ``||z||^ = clip((||z|| - mu) / (sigma / h), -1, 1)``
      (here ``sigma + eps``), the norm of the raw embedding normalised by the
      batch statistics ``mu``, ``sigma``, kept as exponential moving averages
      ``mu = alpha mu^(k) + (1 - alpha) mu^(k-1)`` (the same for ``sigma``).

    ``s`` multiplies the whole target logit here, ``s (cos(theta_y +
    g_angle) - g_add)``, as in the authors' code (the paper's display leaves
    ``g_add`` outside the scale). A high-norm (easy to recognise) sample gets an
    angular, ArcFace-like margin that emphasises hard samples; a low-norm one
    a CosFace-like margin that de-emphasises them. The norms carry no gradient.

    **The authors' code** (``mk-minchul/AdaFace``, ``head.py``), matched here:
    ``mu`` starts at 20 and ``sigma`` at 100; each training step first moves
    them with the batch's mean and unbiased std of the norms clipped to
    ``[0.001, 100]``, ``mu <- 0.01 mean + 0.99 mu`` (``t_alpha=0.01``), then
    uses them; ``eps = 1e-3`` in the std, in the cosine's clamp to ``[-1 +
    eps, 1 - eps]`` and the angle's to ``[eps, pi - eps]``; ``m = 0.4``,
    ``h = 0.333``, ``s = 64`` (their training scripts). **The paper** writes
    the average with ``alpha = 0.99`` on the batch: ``update_rate=0.99``.

    Departures: the statistics are over the global batch (the authors' DDP
    computes them per GPU and keeps rank 0's buffers), over the rows that
    count (valid label, finite, non-zero weight), and are not moved by a batch
    of fewer than 2 such rows (the std is undefined: ``torch.std`` gives NaN);
    the non-target cosines are not clamped to ``1 - eps`` (the authors' clamp
    moves them only above 0.999); the class weights start from the base's
    initializer (the authors' uniform-renorm init has the same directions'
    distribution).

    Args:
        num_classes: number of classes.
        scale: ``s`` (authors: 64).
        margin: ``m`` (authors: 0.4; the code's CLI default 0.5 is overridden by their scripts).
        h: ``h``, the concentration of the normalised norm (authors: 0.333).
        update_rate: the batch's weight in the running ``mu``, ``sigma``
            (authors' code: 0.01; the paper's ``alpha``: 0.99).
        initial_mean, initial_std: ``mu`` and ``sigma`` before the first step (authors: 20, 100).
        **kwargs: see :class:`~lossweave.terms.MarginSoftmax` (``sample_rate``, ``sub_centers``, ...).

    Example:
        >>> import numpy as np
        >>> term = AdaFace(num_classes=3)
        >>> x = np.random.default_rng(0).normal(size=(4, 8)).astype("float32")
        >>> loss = term(x, np.array([0, 1, 2, 0]), training=True)
        >>> round(float(term.norm_mean.numpy()), 4) == round(0.99 * 20 + 0.01 * float(np.linalg.norm(x, axis=1).mean()), 4)
        True
    """

    reads_norms = True
    reads_batch = True  # target_logit reads the step's mu and sigma in batch.observed

    def __init__(self, num_classes, scale=64.0, margin=0.4, h=0.333, update_rate=0.01, initial_mean=20.0,
                 initial_std=100.0, **kwargs):
        super().__init__(num_classes, scale=scale, **kwargs)
        self.margin = arguments.number(margin, "margin", self, low=0.0, high=1.5)
        self.h = arguments.positive(h, "h", self)
        self.update_rate = _rate(update_rate, self)
        self.initial_mean = arguments.number(initial_mean, "initial_mean", self)
        self.initial_std = arguments.number(initial_std, "initial_std", self, low=0.0)

    def build(self, outputs_shape):
        super().build(outputs_shape)
        self.norm_mean = self.add_statistic("norm_mean", self.initial_mean)
        self.norm_std = self.add_statistic("norm_std", self.initial_std)

    def statistics(self, batch):
        safe = adaptive_ops.adaface_safe_norms(batch.norms)
        norms, rows = backend.all_gather((safe, batch.rows))
        mean, std, count = adaptive_ops.masked_moments(norms, rows)
        return [
            (self.norm_mean, _kept_unless(count, 2.0, adaptive_ops.moving_average(self.norm_mean, mean, self.update_rate),
                                          self.norm_mean)),
            (self.norm_std, _kept_unless(count, 2.0, adaptive_ops.moving_average(self.norm_std, std, self.update_rate),
                                         self.norm_std)),
        ]

    def target_logit(self, cos_target, training=None, norms=None, batch=None):
        scaler = adaptive_ops.adaface_norm_scaler(norms, self.current(self.norm_mean, batch),
                                                  self.current(self.norm_std, batch), self.h)
        return adaptive_ops.adaface_target(cos_target, scaler, self.margin)

    def get_config(self):
        return {**super().get_config(), "margin": self.margin, "h": self.h, "update_rate": self.update_rate,
                "initial_mean": self.initial_mean, "initial_std": self.initial_std}


@keras.saving.register_keras_serializable(package="lossweave")
class CurricularFace(BatchStatistics):
    """CurricularFace: ArcFace's margin and hard negatives re-weighted by a running ``t`` (Huang et al., CVPR 2020).

    The target logit is ArcFace's ``s cos(theta_y + m)`` (Eq. 8, with
    ArcFace's ``cos theta - m sin m`` past ``theta + m > pi``); a negative is
    ``s N(t, cos theta_j)`` (Eq. 9): ``cos theta_j`` where it is below
    ``cos(theta_y + m)``, else ``cos theta_j (t + cos theta_j)``. ``t``, the
    running mean of the target cosine (Eq. 10), starts at 0 (easy samples
    first: hard negatives are damped) and grows as training makes the target
    cosines larger (hard negatives emphasised). ``t`` has no gradient.

    **The authors' code** (``HuangYG123/CurricularFace``, ``head/metrics.py``),
    matched here: ``t`` starts at 0; each training step first moves it with
    the batch's mean target cosine, ``t <- 0.01 mean + 0.99 t``, then uses it;
    ``m = 0.5``, ``s = 64``. **The paper** writes ``t = alpha r + (1 - alpha)
    t`` with ``alpha = 0.99`` on the batch's ``r``: ``update_rate=0.99``.
    Departures: ``t`` is the mean over the global batch's rows that count (the
    authors' code: each process's own batch, every row).

    Args:
        num_classes: number of classes.
        scale: ``s`` (authors: 64).
        angular_margin: ``m`` in radians (authors: 0.5).
        update_rate: the batch's weight in the running ``t`` (authors' code: 0.01; paper: 0.99).
        initial_t: ``t`` before the first step (authors: 0).
        **kwargs: see :class:`~lossweave.terms.MarginSoftmax`.

    Example:
        >>> import numpy as np
        >>> term = CurricularFace(num_classes=3, scale=1.0, class_weights_initializer="identity")
        >>> x = np.array([[1., 0., 0.], [0., 1., 0.]], "float32")
        >>> _ = term(x, np.array([0, 1]), training=True)
        >>> round(float(term.t.numpy()), 4)   # 0.01 * mean(cos theta_y = 1)
        0.01
    """

    def __init__(self, num_classes, scale=64.0, angular_margin=0.5, update_rate=0.01, initial_t=0.0, **kwargs):
        super().__init__(num_classes, scale=scale, **kwargs)
        self.angular_margin = _angle(angular_margin, "angular_margin", self)
        self.update_rate = _rate(update_rate, self)
        self.initial_t = arguments.number(initial_t, "initial_t", self, low=-1.0, high=1.0)

    def build(self, outputs_shape):
        super().build(outputs_shape)
        self.t = self.add_statistic("t", self.initial_t)

    def statistics(self, batch):
        weight = ops.cast(batch.rows, "float32")
        total = backend.all_reduce(ops.sum(ops.stop_gradient(batch.cos_target) * weight), "sum")
        count = backend.all_reduce(ops.sum(weight), "sum")
        mean = total / ops.maximum(count, 1.0)
        return [(self.t, _kept_unless(count, 1.0, adaptive_ops.moving_average(self.t, mean, self.update_rate),
                                      self.t))]

    def target_logit(self, cos_target, training=None):
        return margin_ops.arcface_target(cos_target, self.angular_margin)

    def negative_logits(self, logits, batch):
        boundary = adaptive_ops.curricular_boundary(batch.cos_target, self.angular_margin)
        return adaptive_ops.curricular_negatives(logits, boundary, self.current(self.t, batch), batch.scale)

    def get_config(self):
        return {**super().get_config(), "angular_margin": self.angular_margin, "update_rate": self.update_rate,
                "initial_t": self.initial_t}


@keras.saving.register_keras_serializable(package="lossweave")
class MagFace(MarginSoftmax):
    """MagFace: a magnitude-aware angular margin and a magnitude regulariser (Meng et al., CVPR 2021).

    The loss of a sample is ``-log softmax(s cos(theta_y + m(a)))_y + lambda_g g(a)``
    (Eq. 3) with ``a = ||x||`` the norm of the raw embedding, ``m(a) = (u_m -
    l_m) / (u_a - l_a) (a - l_a) + l_m`` increasing and ``g(a) = 1 / a + a /
    u_a^2`` (Sec. 3.3 and 4.1). The gradient flows through ``a`` into both:
    the norm learns to measure quality. No state.

    **The authors' code** (``IrvingMeng/MagFace``, ``models/magface.py`` and
    ``run/trainer.py``), matched here: ``a`` is clipped to ``[l_a, u_a]``
    before ``m`` and ``g`` see it (no gradient outside); the margin is
    applied only where ``cos theta_y > 0`` (``MagLinear``'s ``easy_margin=True``,
    its default there); ``l_a = 10``, ``u_a = 110``, ``l_m = 0.45``, ``u_m =
    0.8``, ``lambda_g = 35`` (``run/run.sh``; the trainer's CLI default is
    20), ``s = 64``; the loss is the cross-entropy plus ``lambda_g`` times the
    batch mean of ``g``. ``easy_margin=False`` gives ArcFace's rule past
    ``theta + m > pi`` instead. The authors check ``lambda_g >= s k u_a^2
    l_a^2 / (u_a^2 - l_a^2)`` with ``k = (u_m - l_m) / (u_a - l_a)`` (the
    paper's condition for a unique optimal norm); the constructor refuses a
    smaller ``lambda_g`` unless ``check_lambda=False``.

    Args:
        num_classes: number of classes.
        scale: ``s`` (authors: 64).
        lower_norm, upper_norm: ``l_a``, ``u_a`` (authors: 10, 110).
        lower_margin, upper_margin: ``l_m``, ``u_m`` in radians (authors: 0.45, 0.8).
        lambda_g: the weight of ``g(a)`` (authors: 35).
        easy_margin: the margin only where ``cos theta_y > 0`` (authors: True).
        check_lambda: refuse a ``lambda_g`` below the paper's bound.
        **kwargs: see :class:`~lossweave.terms.MarginSoftmax`.

    Example:
        >>> import numpy as np
        >>> term = MagFace(num_classes=3, scale=1.0, class_weights_initializer="identity", check_lambda=False)
        >>> x = np.array([[60., 0., 0.]], "float32")   # a = 60: m = 0.45 + 0.35 * 50 / 100 = 0.625
        >>> round(float(term.margin_logits(x, np.array([0]))[0, 0]), 4) == round(float(np.cos(0.625)), 4)
        True
    """

    reads_norms = True

    def __init__(self, num_classes, scale=64.0, lower_norm=10.0, upper_norm=110.0, lower_margin=0.45,
                 upper_margin=0.8, lambda_g=35.0, easy_margin=True, check_lambda=True, **kwargs):
        super().__init__(num_classes, scale=scale, **kwargs)
        self.lower_norm = arguments.positive(lower_norm, "lower_norm", self)
        self.upper_norm = arguments.number(
            upper_norm, "upper_norm", self, low=self.lower_norm, low_open=True,
            hint="It is u_a, the largest norm the margin and the regulariser see (> lower_norm).")
        self.lower_margin = _angle(lower_margin, "lower_margin", self)
        self.upper_margin = _angle(upper_margin, "upper_margin", self)
        self.lambda_g = arguments.number(lambda_g, "lambda_g", self, low=0.0)
        self.easy_margin = arguments.boolean(easy_margin, "easy_margin", self)
        self.check_lambda = arguments.boolean(check_lambda, "check_lambda", self)
        bound = self.minimum_lambda_g()
        if self.check_lambda and self.lambda_g < bound:
            raise ValueError(
                f"MagFace: received lambda_g={self.lambda_g!r}; the paper's condition needs lambda_g >= "
                f"s k u_a^2 l_a^2 / (u_a^2 - l_a^2) = {bound:.4g} for these scale, norms and margins. Raise "
                f"lambda_g, or pass check_lambda=False to train with it anyway."
            )

    def minimum_lambda_g(self):
        """The paper's lower bound on ``lambda_g`` (the authors' ``min_lambda``)."""
        k = (self.upper_margin - self.lower_margin) / (self.upper_norm - self.lower_norm)
        l2, u2 = self.lower_norm ** 2, self.upper_norm ** 2
        return self.scale * k * u2 * l2 / (u2 - l2)

    def target_logit(self, cos_target, training=None, norms=None):
        return adaptive_ops.magface_target(cos_target, norms, self.lower_norm, self.upper_norm, self.lower_margin,
                                           self.upper_margin, self.easy_margin)

    def sample_penalty(self, batch):
        return self.lambda_g * adaptive_ops.magface_regularizer(batch.norms, self.lower_norm, self.upper_norm)

    def get_config(self):
        return {**super().get_config(), "lower_norm": self.lower_norm, "upper_norm": self.upper_norm,
                "lower_margin": self.lower_margin, "upper_margin": self.upper_margin, "lambda_g": self.lambda_g,
                "easy_margin": self.easy_margin, "check_lambda": self.check_lambda}


@keras.saving.register_keras_serializable(package="lossweave")
class AdaCos(BatchStatistics):
    """AdaCos: no margin, an adaptive scale of the cosine logits (Zhang et al., CVPR 2019).

    Logits ``s cos theta_j`` with ``s`` chosen so that the target
    probability responds to the angle where it matters. Fixed
    (``dynamic=False``): ``s_f = sqrt(2) log(C - 1)`` (Eq. 12). Dynamic
    (Algorithm 1): ``s`` starts at ``s_f`` and each training step sets
    ``s^(t) = log B_avg^(t) / cos(min(pi/4, theta_med^(t)))`` (Eq. 16), with
    ``B_avg^(t) = 1/N sum_i sum_{k != y_i} exp(s^(t-1) cos theta_ik)`` over
    the batch (Eq. 15) and ``theta_med^(t)`` the median of its target angles,
    and uses it for its own logits (as Algorithm 1 and the common
    implementation, ``4uiiurz1/pytorch-adacos``, do). ``s`` has no gradient.
    The inference logits (:meth:`logits`) use the saved ``s``.

    The paper's authors released no code; this follows Algorithm 1 and the
    common implementation: the median of an even count is the lower middle
    value (``torch.median``); the target cosine is clamped to ``[-1 + 1e-7,
    1 - 1e-7]`` before ``arccos``. Departures from that implementation: ``s``
    is a saved variable moved only in training (it moves ``s`` in every
    labelled forward pass, evaluation included), over the global batch's rows
    that count (``N`` counts them); with Partial FC sampling (``sample_rate <
    1``) the sum over negatives runs over the sampled classes and is scaled
    by ``(C - 1) / (S - 1)`` (``S`` the classes in use), an unbiased estimate
    of the sum over every class for uniformly drawn negatives. A batch whose
    ``s`` comes out non-finite or non-positive (no negatives: one class) keeps ``s``.

    Args:
        num_classes: number of classes (``C >= 3`` for the default scale).
        scale: ``s_f`` (or the initial dynamic ``s``); ``None`` (default) for
            ``sqrt(2) log(C - 1)``.
        dynamic: adapt ``s`` every training step (Algorithm 1); ``False``: the fixed ``s_f``.
        **kwargs: see :class:`~lossweave.terms.MarginSoftmax`.

    Example:
        >>> import numpy as np
        >>> term = AdaCos(num_classes=100)
        >>> round(term.scale, 4)   # sqrt(2) log 99
        6.4985
        >>> x = np.random.default_rng(0).normal(size=(8, 16)).astype("float32")
        >>> _ = term(x, np.arange(8), training=True)
        >>> bool(float(term.adaptive_scale.numpy()) != term.scale)
        True
    """

    def __init__(self, num_classes, scale=None, dynamic=True, **kwargs):
        classes = arguments.positive_int(num_classes, "num_classes", self)
        if scale is None and classes < 3:
            raise ValueError(
                f"AdaCos: received num_classes={num_classes!r} and scale=None; the default scale sqrt(2) "
                f"log(C - 1) needs num_classes >= 3 (it is 0 at C = 2). Give a scale for fewer classes."
            )
        if scale is None:
            scale = adaptive_ops.adacos_fixed_scale(classes)
        super().__init__(num_classes, scale=scale, **kwargs)
        self.dynamic = arguments.boolean(dynamic, "dynamic", self)

    def build(self, outputs_shape):
        super().build(outputs_shape)
        if self.dynamic:
            self.adaptive_scale = self.add_statistic("adaptive_scale", self.scale)

    def logit_scale(self, embeddings):
        if not self.dynamic:
            return self.scale
        # A copy: the step's gated assignment moves the variable in place (PyTorch), after the forward
        # pass has kept this value for the backward pass.
        return ops.copy(self.adaptive_scale)

    def statistics(self, batch):
        if not self.dynamic:
            return []
        log_b, count = adaptive_ops.adacos_log_b_avg(batch.logits, batch.hit, batch.rows, batch.scale, batch.in_use,
                                                     backend.all_reduce)
        if batch.in_use is not None:  # sampled negatives: scale their sum to every class's
            in_use = ops.sum(ops.cast(batch.in_use, "float32"))
            log_b = log_b + ops.log((self.num_classes - 1.0) / ops.maximum(in_use - 1.0, 1.0))
        angles, rows = backend.all_gather((adaptive_ops.adacos_target_angles(batch.cos_target), batch.rows))
        new = adaptive_ops.adacos_dynamic_scale(log_b, adaptive_ops.lower_median(angles, rows))
        usable = ops.logical_and(count >= 1.0, ops.logical_and(ops.isfinite(new), new > 0.0))
        return [(self.adaptive_scale, ops.where(usable, new, ops.convert_to_tensor(self.adaptive_scale)))]

    def batch_scale(self, batch):
        if not (self.dynamic and batch.training):
            return batch.scale
        return self.current(self.adaptive_scale, batch)

    def get_config(self):
        return {**super().get_config(), "dynamic": self.dynamic}
