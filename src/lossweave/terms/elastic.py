"""ElasticFace: ArcFace and CosFace with a margin drawn per sample (Boutros et al., CVPRW 2022).

Two terms on :class:`~lossweave.terms.MarginSoftmax`: :class:`ElasticArcFace`
and :class:`ElasticCosFace`. In training each sample's margin is drawn from
``N(m, sigma)`` by the term's own ``keras.random.SeedGenerator``, saved with
the term (``lossweave._seed_state.SavesSeedState``, through the class-sampling
mixin), so a reloaded ``.keras`` term continues the same sequence. The
formulas are in :mod:`lossweave.ops.elastic`.
"""

import keras
from keras import ops

from lossweave import arguments
from lossweave.ops import elastic as elastic_ops
from lossweave.ops import margin as margin_ops
from lossweave.terms.margin import MarginSoftmax, _angle, _cosine


class _ElasticMargin(MarginSoftmax):
    """The shared shell: the draw, the "+" reassignment and the generator.

    A subclass names its mean margin's argument (``margin_name``), the
    authors' ``sigma`` of the plain and of the "+" variant (``sigmas``) and
    the target with margins (``apply_margins``).
    """

    margin_name = None
    sigmas = (None, None)
    reads_batch = True  # "+" ranks the call's rows that count (batch.rows)

    def __init__(self, num_classes, scale, sigma, plus, plus_order, **kwargs):
        super().__init__(num_classes, scale=scale, **kwargs)
        self.plus = arguments.boolean(plus, "plus", self)
        self.plus_order = arguments.choice(plus_order, elastic_ops.PLUS_ORDERS, "plus_order", self)
        sigma = arguments.optional(
            arguments.number, sigma, "sigma", self, low=0.0,
            hint="It is the standard deviation of the margins (the authors: 0.05; 0.0175 / 0.02 for '+'); "
                 "None takes the authors' value.",
        )
        self.sigma = self.sigmas[self.plus] if sigma is None else sigma
        # One generator draws the margins (and the classes, when Partial FC samples): the sampling
        # mixin's own when sample_rate < 1, else one of the term's; SavesSeedState saves either.
        if self.seed_generator is None:
            self.seed_generator = keras.random.SeedGenerator(self.seed, name="elastic_margin_seed")

    @property
    def mean_margin(self):
        """``m``, the mean of the margins."""
        return getattr(self, self.margin_name)

    def samples(self, training):
        # The generator exists at any sample_rate here: sample classes only below 1.0.
        return bool(training) and self.sample_rate < 1.0

    def margins(self, cos_target, training=None, ranked=None):
        """``(batch,)`` margins of one call: drawn in training, ``m`` in evaluation.

        Advances the generator in training. With ``plus=True`` the draws are
        reassigned by the target cosines (:func:`lossweave.ops.elastic.plus_margins`)
        among the ``ranked`` rows (``None``: every row).
        """
        if not training:
            return ops.full_like(ops.cast(cos_target, "float32"), self.mean_margin)
        drawn = elastic_ops.normal_margins(ops.shape(cos_target)[0], self.mean_margin, self.sigma, self.seed_generator)
        if not self.plus:
            return drawn
        return elastic_ops.plus_margins(drawn, cos_target, self.plus_order, ranked)

    def target_logit(self, cos_target, training=None, batch=None):
        # "+" ranks the rows a batch statistic counts: a valid label, finite features, a non-zero
        # weight (a row of weight 0, e.g. a missing label, moves no one's margin, as the authors
        # leave out the rows of label -1).
        ranked = batch.rows if self.plus and batch is not None else None
        return self.apply_margins(cos_target, self.margins(cos_target, training, ranked))

    def get_config(self):
        return {**super().get_config(), self.margin_name: self.mean_margin, "sigma": self.sigma,
                "plus": self.plus, "plus_order": self.plus_order}


@keras.saving.register_keras_serializable(package="lossweave")
class ElasticArcFace(_ElasticMargin):
    """ElasticFace-Arc: ``s cos(theta_y + m_i)``, ``m_i ~ N(m, sigma)`` per sample (Boutros et al., CVPRW 2022).

    Boutros, Damer, Kirchbuchner and Kuijper, "ElasticFace: Elastic Margin
    Loss for Deep Face Recognition" (arXiv:2109.09416), Eq. 4 with the normal
    density of Eq. 3: ArcFace (Deng et al. 2019, Eq. 3) whose angular margin
    is drawn anew for every sample at every training step. ``plus=True`` is
    ElasticFace-Arc+: the drawn margins are sorted and handed out by the
    samples' target cosines (see :func:`lossweave.ops.elastic.plus_margins`
    for the two rules: ``plus_order="authors"``, the released code's and
    the default, or ``"paper"``, the rule the paper states: the farther a
    sample from its class center, the larger its margin).

    Defaults are the authors' released configuration (``config/config.py``
    of github.com/fdbtrs/ElasticFace): ``s = 64``, ``m = 0.5``, ``sigma =
    0.05``, and ``sigma = 0.0175`` for "+" (``sigma=None`` picks these; the
    class signature there says 0.0125, which is not what the runs used). As
    in their code, the target is ``cos(theta + m_i)`` everywhere: no
    fallback past ``theta + m_i > pi`` (unlike :class:`ArcFace`), and the
    drawn margins are not clipped.

    **Where it departs.** Evaluation (``training`` false: ``evaluate``,
    ``margin_logits`` without ``training=True``) uses the mean margin ``m``
    and draws nothing; the authors' code has no evaluation mode for the
    loss (their header is used in training only, inference reads the
    backbone's features). Sample weights follow the library's one rule
    (``docs/sample_weight.md``); for "+" a row of weight 0 (or with a
    missing or invalid label) is left out of the ranking, as the authors
    leave out rows of label -1. One generator draws the margins and, with
    ``sample_rate < 1``, the Partial FC classes; draws differ between
    backends (each has its own random generator) but not between runs of
    one seed on one backend.

    Args:
        num_classes: number of classes.
        scale: ``s`` (paper: 64).
        angular_margin: the mean ``m`` of the angular margins, radians (paper: 0.5).
        sigma: their standard deviation (``None``: 0.05, or 0.0175 with ``plus``).
        plus: ElasticFace-Arc+ (margins ordered by the target cosines).
        plus_order: ``"authors"`` or ``"paper"`` (used with ``plus=True``).
        **kwargs: see :class:`MarginSoftmax` (``sample_rate``, ``seed``: the
            seed of the margins' generator, ...).

    Example:
        >>> import numpy as np
        >>> term = ElasticArcFace(num_classes=3, scale=1.0, seed=0, class_weights_initializer="identity")
        >>> x, y = np.array([[1., 0., 0.]], "float32"), np.array([0])
        >>> round(float(term.margin_logits(x, y)[0, 0]), 4)   # evaluation: the mean margin, cos(0.5)
        0.8776
        >>> term.sigma, ElasticArcFace(num_classes=3, plus=True).sigma
        (0.05, 0.0175)
    """

    margin_name = "angular_margin"
    sigmas = (0.05, 0.0175)

    def __init__(self, num_classes, scale=64.0, angular_margin=0.5, sigma=None, plus=False, plus_order="authors",
                 **kwargs):
        super().__init__(num_classes, scale, sigma, plus, plus_order, **kwargs)
        self.angular_margin = _angle(angular_margin, "angular_margin", self)

    def apply_margins(self, cos_target, margins):
        return elastic_ops.elastic_arc_target(cos_target, margins)


@keras.saving.register_keras_serializable(package="lossweave")
class ElasticCosFace(_ElasticMargin):
    """ElasticFace-Cos: ``s (cos theta_y - m_i)``, ``m_i ~ N(m, sigma)`` per sample (Boutros et al., CVPRW 2022).

    Eq. 5 of Boutros et al., "ElasticFace" (arXiv:2109.09416), with the normal
    density of Eq. 3: CosFace (Wang et al. 2018, Eq. 4) whose cosine margin
    is drawn anew for every sample at every training step; ``plus=True`` is
    ElasticFace-Cos+ (see :class:`ElasticArcFace` and
    :func:`lossweave.ops.elastic.plus_margins`). Defaults are the authors'
    released configuration: ``s = 64``, ``m = 0.35``, ``sigma = 0.05``, and
    ``sigma = 0.02`` for "+"; the drawn margins are not clipped. Evaluation,
    sample weights, the generator: as :class:`ElasticArcFace`.

    Args:
        num_classes: number of classes.
        scale: ``s`` (paper: 64).
        cosine_margin: the mean ``m`` of the cosine margins (paper: 0.35).
        sigma: their standard deviation (``None``: 0.05, or 0.02 with ``plus``).
        plus: ElasticFace-Cos+ (margins ordered by the target cosines).
        plus_order: ``"authors"`` or ``"paper"`` (used with ``plus=True``).
        **kwargs: see :class:`MarginSoftmax`.

    Example:
        >>> import numpy as np
        >>> term = ElasticCosFace(num_classes=3, scale=1.0, sigma=0.0, class_weights_initializer="identity")
        >>> x, y = np.array([[1., 0., 0.]], "float32"), np.array([0])
        >>> [round(float(v), 2) for v in term.margin_logits(x, y, training=True)[0]]   # sigma 0: CosFace
        [0.65, 0.0, 0.0]
    """

    margin_name = "cosine_margin"
    sigmas = (0.05, 0.02)

    def __init__(self, num_classes, scale=64.0, cosine_margin=0.35, sigma=None, plus=False, plus_order="authors",
                 **kwargs):
        super().__init__(num_classes, scale, sigma, plus, plus_order, **kwargs)
        self.cosine_margin = _cosine(cosine_margin, "cosine_margin", self)

    def apply_margins(self, cos_target, margins):
        return margin_ops.cosface_target(cos_target, margins)
