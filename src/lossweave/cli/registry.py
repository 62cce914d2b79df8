"""The one table of the command line's loss and weighting names.

``--loss`` and ``--weighting`` (their accepted values, their help, the
builders, ``compare``'s specs) all read :data:`LOSSES` and
:data:`WEIGHTINGS`: a new method is one entry here.

A loss entry is declarative (the terms class is looked up by name when the
objective is built, after ``--backend`` is applied, so this module imports
no Keras):

* ``kind`` says what the term reads and whether it gives class logits:
  ``"logits"`` (cross-entropy on the model's logits head), ``"margin"``
  (a margin softmax on the embedding, owning its class weights: its
  ``logits()`` are margin-free class scores) or ``"pair"`` (a pair or proxy
  loss on the embedding: no class logits; the tool's test accuracy is the
  nearest training-class mean's);
* ``options`` maps a ``TrainConfig`` field to the constructor argument it
  sets (or to a function of its value giving the arguments); a ``None``
  value keeps the paper's default;
* ``memory``: the term takes a reference set, so ``--memory M`` can wrap it
  in ``lossweave.terms.CrossBatchMemory``.

A weighting entry holds its builder
``build(term_names, center_weight, steps_per_epoch, center_warmup)``.

:data:`APPLIES` says which options a run uses, from its loss, weighting,
data and model: :func:`applicable_options` is the set, and
:func:`inapplicable` the reasons an option given explicitly cannot apply
(the command line stops on them: ``lossweave.cli.prepare.check_applicable``).
"""

import typing

from lossweave import data
from lossweave.cli.models import is_model_file

MININGS = ("semi-hard", "batch-hard", "batch-all")  # lossweave.ops.pairs.MININGS, without importing Keras


class LossEntry(typing.NamedTuple):
    """One ``--loss`` name: the terms class, its help line and how the options reach it."""

    class_name: str
    help: str
    kind: str
    options: tuple = ()
    num_classes: bool = False
    memory: bool = False


class WeightingEntry(typing.NamedTuple):
    """One ``--weighting`` name: its builder, its help line, its level and what its ``loss`` is.

    ``total`` names the quantity ``fit`` logs as ``loss`` and ``val_loss``:
    the strategy's weighted total at the loss level; at the gradient level,
    where the strategy combines gradients, not losses, the plain sum of the
    term losses (``Mean``: their mean), plus any regularizer.
    """

    build: typing.Callable  # its ``strategy`` attribute names the class in lossweave.weighting
    help: str
    total: str = None  # None: "weighted total" (loss level) or "sum of the terms" (gradient level)

    @property
    def level(self):
        """``"loss"`` or ``"gradient"``: the strategy class's own ``level`` (declared once, on the class)."""
        import lossweave as lw

        return getattr(lw.weighting, self.build.strategy).level


def _sphereface_margin(value):
    if float(value) != int(value) or value < 1:
        raise ValueError(f"--margin for sphereface and lsoftmax is the integer multiplier m >= 1; received {value!r}.")
    return {"multiplicative_margin": int(value)}


def _combined_margins(value):
    return dict(zip(("multiplicative_margin", "angular_margin", "cosine_margin"), value))


_SCALE = ("scale", "scale")
_MARGIN = ("margin", "margin")  # --margin -> the loss's own margin argument (named by kind)
_ANGULAR = ("margin", "angular_margin")

LOSSES = {
    "softmax": LossEntry("SoftmaxCrossEntropy", "softmax cross-entropy on the logits head", "logits"),
    "normface": LossEntry("NormFace", "NormFace: s cos(theta)", "margin", (_SCALE,), num_classes=True),
    "sphereface": LossEntry("SphereFace", "SphereFace: ||x|| psi(m theta), annealed; --margin: integer m",
                            "margin", (("margin", _sphereface_margin),), num_classes=True),
    "cosface": LossEntry("CosFace", "CosFace: s (cos(theta) - m); --margin: cosine m", "margin",
                         (_SCALE, ("margin", "cosine_margin")), num_classes=True),
    "arcface": LossEntry("ArcFace", "ArcFace: s cos(theta + m); --margin: radians", "margin",
                         (_SCALE, _ANGULAR), num_classes=True),
    "combined": LossEntry("CombinedMargin", "combined margin: s (cos(m1 theta + m2) - m3); --combined-margins",
                          "margin", (_SCALE, ("combined_margins", _combined_margins)), num_classes=True),
    "subcenter": LossEntry("SubCenterArcFace", "sub-center ArcFace: K sub-centers per class (--sub-centers)",
                           "margin", (_SCALE, _ANGULAR, ("sub_centers", "sub_centers")), num_classes=True),
    "elasticarc": LossEntry("ElasticArcFace", "ElasticFace-Arc: s cos(theta + m_i), m_i ~ N(m, 0.05) per sample; "
                            "--margin: mean m, radians", "margin", (_SCALE, _ANGULAR), num_classes=True),
    "elasticcos": LossEntry("ElasticCosFace", "ElasticFace-Cos: s (cos(theta) - m_i), m_i ~ N(m, 0.05) per sample; "
                            "--margin: mean cosine m", "margin", (_SCALE, ("margin", "cosine_margin")),
                            num_classes=True),
    "adaface": LossEntry("AdaFace", "AdaFace: margin adapted to the batch-normalised feature norm; --margin: m",
                         "margin", (_SCALE, _MARGIN), num_classes=True),
    "magface": LossEntry("MagFace", "MagFace: angular margin m(||x||) in [0.45, 0.8] for norms in [10, 110] "
                         "plus the norm regulariser (lambda_g 35)", "margin", (_SCALE,), num_classes=True),
    "curricular": LossEntry("CurricularFace", "CurricularFace: ArcFace margin, hard negatives re-weighted by a "
                            "running t; --margin: radians", "margin", (_SCALE, _ANGULAR), num_classes=True),
    "adacos": LossEntry("AdaCos", "AdaCos: s cos(theta), no margin, s adapted every step (dynamic); --scale: "
                        "initial s", "margin", (_SCALE,), num_classes=True),
    "triplet": LossEntry("TripletLoss", "triplet loss [d(a,p) - d(a,n) + margin]_+, --mining picks the triplets",
                         "pair", (_MARGIN, ("mining", "mining")), memory=True),
    "contrastive": LossEntry("ContrastiveLoss", "contrastive loss (Hadsell et al.); --margin: negative margin",
                             "pair", (("margin", "neg_margin"),), memory=True),
    "multisimilarity": LossEntry("MultiSimilarityLoss", "multi-similarity loss; --margin: mining epsilon",
                                 "pair", (("margin", "epsilon"),), memory=True),
    "circle": LossEntry("CircleLoss", "circle loss; --margin: relaxation m in [0, 1)", "pair",
                        (("margin", "relaxation"),), memory=True),
    "supcon": LossEntry("SupConLoss", "supervised contrastive loss (temperature 0.1)", "pair", memory=True),
    "proxyanchor": LossEntry("ProxyAnchorLoss", "Proxy-Anchor loss, one proxy per class; --margin: delta",
                             "pair", (("margin", "delta"),), num_classes=True),
    "proxynca": LossEntry("ProxyNCALoss", "ProxyNCA loss, one proxy per class", "pair", num_classes=True),
    "lifted": LossEntry("LiftedStructureLoss", "lifted structured loss (smooth bound); --margin: alpha",
                        "pair", (_MARGIN,)),
    "npairs": LossEntry("NPairsLoss", "multi-class N-pair loss with its L2 regulariser", "pair"),
    "softnn": LossEntry("SoftNearestNeighborLoss", "soft nearest neighbour loss (Frosst et al.), squared "
                        "Euclidean, temperature 1", "pair", memory=True),
    "histogram": LossEntry("HistogramLoss", "histogram loss (Ustinova & Lempitsky), 100 bins of cosine similarity",
                           "pair"),
    "rankedlist": LossEntry("RankedListLoss", "ranked list loss (Wang et al.), RLL-Simpler; --margin: m", "pair",
                            (_MARGIN,)),
    "pnp": LossEntry("PNPLoss", "PNP loss (Li et al.): negatives ranked before positives, variant O", "pair"),
    "instance": LossEntry("InstanceLoss", "instance loss as pytorch-metric-learning's (softmax over the batch's "
                          "cosines x 64); for instance ids", "pair"),
    "nca": LossEntry("NCALoss", "NCA loss (Goldberger et al.): -log of the positives' softmax mass", "pair",
                     memory=True),
    "marginloss": LossEntry("MarginLoss", "margin loss (Wu et al.) with a learned boundary beta; --margin: alpha",
                            "pair", (_MARGIN,), memory=True),
    "tupletmargin": LossEntry("TupletMarginLoss", "tuplet margin loss (Yu & Tao); --margin: radians", "pair",
                              (_ANGULAR,), memory=True),
    "angular": LossEntry("AngularLoss", "angular loss (Wang et al.), N-pair form, alpha 40 degrees", "pair"),
    "generalizedlifted": LossEntry("GeneralizedLiftedStructureLoss", "generalized lifted structure loss "
                                   "(Hermans et al.); --margin: negative margin", "pair", (("margin", "neg_margin"),),
                                   memory=True),
    "intrapairvariance": LossEntry("IntraPairVarianceLoss", "intra-pair variance loss (Yu & Tao)", "pair",
                                   memory=True),
    "snrcontrastive": LossEntry("SNRContrastiveLoss", "signal-to-noise-ratio contrastive loss (Yuan et al.); "
                                "--margin: negative margin", "pair", (("margin", "neg_margin"),), memory=True),
    "fastap": LossEntry("FastAPLoss", "FastAP (Cakir et al.): histogram-binned average precision", "pair"),
    "softtriple": LossEntry("SoftTripleLoss", "SoftTriple (Qian et al.): 10 centers per class, their regulariser; "
                            "--margin: delta", "pair", (("margin", "cosine_margin"),), num_classes=True),
    "lsoftmax": LossEntry("LargeMarginSoftmax", "L-Softmax (Liu et al. 2016): ||W|| ||x|| psi(m theta), nothing "
                          "normalised, annealed; --margin: integer m", "margin", (("margin", _sphereface_margin),),
                          num_classes=True),
}


# ------------------------------------------------------------------ weightings
def _builds(class_name):
    """Marks a builder with the name of the lossweave.weighting class it builds."""

    def mark(build):
        build.strategy = class_name
        return build

    return mark


@_builds("Fixed")
def _fixed(term_names, center_weight, steps_per_epoch, center_warmup):
    import lossweave as lw

    if "center" not in term_names:
        return lw.weighting.Fixed({})
    weight = lw.schedules.LinearWarmup(center_weight, steps=center_warmup) if center_warmup else center_weight
    return lw.weighting.Fixed({"center": weight})


@_builds("Convex")
def _convex(term_names, *_):
    import lossweave as lw

    if len(term_names) != 2:
        raise ValueError(f"--weighting convex needs two terms; received {term_names}: add the center "
                         "term (--center) to a single-task run, or pick another weighting.")
    return lw.weighting.Convex(term_names[0], term_names[1], alpha=0.5, learn_alpha=True)


def _plain(class_name, **kwargs):
    """The builder of a strategy that takes no term-dependent argument."""

    def build(*_):
        import lossweave as lw

        return getattr(lw.weighting, class_name)(**kwargs)

    return _builds(class_name)(build)


@_builds("DWA")
def _dwa(term_names, center_weight, steps_per_epoch, center_warmup):
    import lossweave as lw

    return lw.weighting.DWA(steps_per_epoch=steps_per_epoch)


WEIGHTINGS = {
    "fixed": WeightingEntry(_fixed, "weights 1 and lambda (--center-weight, --center-warmup)"),
    "convex": WeightingEntry(_convex, "learned convex combination of the two terms"),
    "uncertainty": WeightingEntry(_plain("Uncertainty"), "homoscedastic uncertainty (Kendall et al.)"),
    "dwa": WeightingEntry(_dwa, "dynamic weight average (Liu et al.)"),
    "rlw": WeightingEntry(_plain("RLW", seed=0), "random loss weighting (Lin et al.)"),
    "gls": WeightingEntry(_plain("GLS"), "geometric loss strategy (Chennupati et al.)"),
    "famo": WeightingEntry(_plain("FAMO"), "fast adaptive multitask optimization (Liu et al.)"),
    "mgda": WeightingEntry(_plain("MGDA"), "gradient level: min-norm point of the term gradients (Sener & Koltun)"),
    "pcgrad": WeightingEntry(_plain("PCGrad", seed=0), "gradient level: project off conflicting gradients (Yu et al.)"),
    "cagrad": WeightingEntry(_plain("CAGrad"), "gradient level: best worst-term improvement near the mean "
                             "gradient (Liu et al.)"),
    "nashmtl": WeightingEntry(_plain("NashMTL"), "gradient level: Nash bargaining weights, G w = 1/w "
                              "(Navon et al.)"),
    "imtlg": WeightingEntry(_plain("IMTLG"), "gradient level: equal projections on the unit gradients "
                            "(IMTL-G, Liu et al.)"),
    "aligned-mtl": WeightingEntry(_plain("AlignedMTL"), "gradient level: gradients aligned to condition number 1 "
                                  "(Senushkin et al.)"),
    "config": WeightingEntry(_plain("ConFIG"), "gradient level: conflict-free direction with equal cosines "
                             "(Liu, Chu & Thuerey)"),
    "gradvac": WeightingEntry(_plain("GradVac", seed=0), "gradient level: cosines raised to running targets "
                              "(Gradient Vaccine, Wang et al.)"),
    "graddrop": WeightingEntry(_plain("GradDrop", seed=0), "gradient level: one sign kept per element "
                               "(Gradient Sign Dropout, Chen et al.)"),
    "moco": WeightingEntry(_plain("MoCo"), "gradient level: tracked gradients, weights on the simplex "
                           "(Fernando et al.)"),
    "db-mtl": WeightingEntry(_plain("DBMTL"), "gradient level: log losses, gradients at the largest norm "
                             "(dual balancing, Lin et al.)"),
    "gradnorm": WeightingEntry(_plain("GradNorm"), "gradient level: weights learned from the last shared "
                               "layer's gradient norms (Chen et al.)"),
    "upgrad": WeightingEntry(_plain("UPGrad"), "gradient level: mean of the gradients' projections onto their "
                             "dual cone (Quinton & Rey)"),
    "dualproj": WeightingEntry(_plain("DualProj"), "gradient level: mean gradient projected onto the dual cone "
                               "(Quinton & Rey)"),
    "gradient-mean": WeightingEntry(_plain("Mean"), "gradient level: mean of the term gradients",
                                    total="mean of the terms"),
    "gradient-sum": WeightingEntry(_plain("Sum"), "gradient level: sum of the term gradients"),
}


def help_lines(table):
    """``"name: help"`` of every entry of ``table``, joined for an option's help.

    Example:
        >>> help_lines(LOSSES).startswith("softmax: softmax cross-entropy on the logits head; normface:")
        True
    """
    return "; ".join(f"{name}: {entry.help}" for name, entry in table.items())


def names(table):
    """The names of ``table`` in their order.

    Example:
        >>> names(WEIGHTINGS)[:3]
        ('fixed', 'convex', 'uncertainty')
    """
    return tuple(table)


def memory_losses():
    """The losses ``--memory`` can wrap (their term takes a reference set)."""
    return tuple(name for name, entry in LOSSES.items() if entry.memory)


def build_loss(name, num_classes, options, memory=None):
    """The term of ``--loss name``, ``options`` a ``{TrainConfig field: value}`` dict.

    Args:
        name: a key of :data:`LOSSES`.
        num_classes: class count (terms with class weights or proxies).
        options: option values; ``None`` (or a missing key) keeps the paper's default.
        memory: ``CrossBatchMemory`` size around the term, or ``None``.

    Raises:
        ValueError: an option value the term rejects, or ``memory`` for a term
            without a reference set.
    """
    import lossweave as lw

    entry = LOSSES[name]
    if entry.kind == "logits":
        kwargs = {"on": "logits"}
    else:
        kwargs = {"on": "embedding"}
    if entry.num_classes:
        kwargs["num_classes"] = num_classes
    for field, argument in entry.options:
        value = options.get(field)
        if value is None:
            continue
        kwargs.update(argument(value) if callable(argument) else {argument: value})
    term = getattr(lw.terms, entry.class_name)(**kwargs)
    if memory is None:
        return term
    if not entry.memory:
        raise ValueError(f"--memory wraps a loss that takes a reference set ({', '.join(memory_losses())}); "
                         f"received --loss {name}.")
    return lw.terms.CrossBatchMemory(term, memory_size=memory)


def build_weighting(name, term_names, center_weight, steps_per_epoch, center_warmup=0):
    """The strategy of ``--weighting name`` over ``term_names`` (classification term first).

    Raises:
        ValueError: a name not in :data:`WEIGHTINGS` (naming the choices), or
            a strategy that does not fit the terms (``convex`` needs two).
    """
    if name not in WEIGHTINGS:
        raise ValueError(f"unknown weighting {name!r}; choose from: {', '.join(WEIGHTINGS)}.")
    return WEIGHTINGS[name].build(list(term_names), center_weight, steps_per_epoch, center_warmup)


def total_label(weighting):
    """What ``loss`` and ``val_loss`` are under ``--weighting weighting``.

    Example:
        >>> total_label("fixed"), total_label("mgda"), total_label("gradient-mean")
        ('weighted total', 'sum of the terms', 'mean of the terms')
    """
    entry = WEIGHTINGS[weighting]
    return entry.total or ("weighted total" if entry.level == "loss" else "sum of the terms")


# ------------------------------------------------------------------ which options a run uses
# Data sets with targets beside the class label (lossweave.cli.tasks): their tasks are the
# terms a weighting combines, so they get a center term only when --center asks for one.
MULTI_TASK_DATA = ("multitask",)


def center_requested(config):
    """Whether the run asks for a center term: ``--center``/``--no-center``, else all but multi-task data."""
    return config.center if config.center is not None else config.data not in MULTI_TASK_DATA


def has_center(config):
    """Whether the objective of ``config`` has a center term (under ``fixed``, a weight > 0 too).

    Example:
        >>> from lossweave.cli.options import TrainConfig
        >>> has_center(TrainConfig()), has_center(TrainConfig(data="multitask"))
        (True, False)
        >>> has_center(TrainConfig(center_weight=0.0)), has_center(TrainConfig(center_weight=0.0, weighting="mgda"))
        (False, True)
    """
    return center_requested(config) and (config.weighting != "fixed" or config.center_weight > 0)


class Rule(typing.NamedTuple):
    """When an option is used (``applies(config)``), and why not otherwise (``why(config)``, with the fix)."""

    applies: typing.Callable
    why: typing.Callable


def _loss_rule(field, what):
    """An option that reaches the term of the losses whose entry maps ``field``."""
    def users():
        return [name for name, entry in LOSSES.items() if any(f == field for f, _ in entry.options)]

    return Rule(lambda c: c.loss in users(),
                lambda c: f"{what} of --loss {', '.join(users())}; --loss {c.loss} has none: leave it out")


def _output_why(config):
    """Why ``--embedding-output`` or ``--logits-output`` cannot apply: a built-in model, or no logits read."""
    if not is_model_file(config.model):
        return f"names an output of a .keras --model; the built-in --model {config.model} has its own: leave it out"
    return f"--loss {config.loss} reads no logits head (only softmax does): leave it out"


def _center_why(what):
    """Why a center option cannot apply: no fixed weighting, no center term, or a zero weight."""
    def why(config):
        if config.weighting != "fixed":
            return (f"{what}, used by --weighting fixed only; --weighting {config.weighting} sets the "
                    "weights itself: leave it out")
        if config.center is False:
            return f"{what}; --no-center leaves the center term out: give one of the two, not both"
        if not center_requested(config):
            return (f"{what}; --data {config.data} has no center term unless asked: give --center too, or "
                    "leave it out")
        return f"{what}, which --center-weight 0 removes: leave it out"

    return why


# option name -> Rule; an option not listed applies to every run.
APPLIES = {
    "data-path": Rule(lambda c: data.takes_path(c.data),
                      lambda c: f"--data {c.data} is bundled and reads no file; use --data idx, npz or folder "
                                "for your own files"),
    "embedding-output": Rule(lambda c: is_model_file(c.model), _output_why),
    "logits-output": Rule(lambda c: is_model_file(c.model) and LOSSES[c.loss].kind == "logits", _output_why),
    "embedding-dim": Rule(lambda c: not is_model_file(c.model),
                          lambda c: f"sizes a built-in model's embedding; --model {c.model} has its own: leave "
                                    "it out"),
    "scale": _loss_rule("scale", "the scale s"),
    "margin": _loss_rule("margin", "the margin"),
    "combined-margins": _loss_rule("combined_margins", "the m1, m2, m3"),
    "sub-centers": _loss_rule("sub_centers", "the sub-centers per class"),
    "mining": _loss_rule("mining", "the triplet mining"),
    "memory": Rule(lambda c: LOSSES[c.loss].memory,
                   lambda c: f"wraps a loss that takes a reference set ({', '.join(memory_losses())}); "
                             f"received --loss {c.loss}"),
    "center-weight": Rule(lambda c: c.weighting == "fixed" and center_requested(c),
                          _center_why("the center term's fixed weight")),
    "center-warmup": Rule(lambda c: c.weighting == "fixed" and has_center(c),
                          _center_why("ramps the center term's fixed weight")),
    "alpha": Rule(has_center, lambda c: "the center learning rate; the run has no center term: leave it out, "
                                        "or add the term (--center, and --center-weight > 0 under fixed)"),
    "tensorboard-every": Rule(lambda c: c.tensorboard is not None,
                              lambda c: "says how often --tensorboard writes; give --tensorboard DIR too, "
                                        "or leave it out"),
}


def applicable_options(config):
    """The names of the options that ``config``'s run uses (a ``TrainConfig``).

    The command line refuses an option given explicitly outside this set;
    the report's configuration table shows only these.

    Example:
        >>> from lossweave.cli.options import TrainConfig
        >>> sorted({"mining", "margin", "alpha"} & applicable_options(TrainConfig(loss="triplet", center_weight=0.0)))
        ['margin', 'mining']
        >>> "center-weight" in applicable_options(TrainConfig(weighting="mgda"))
        False
    """
    return {name for name in config.to_dict() if name not in APPLIES or APPLIES[name].applies(config)}


def inapplicable(config, names):
    """``[(name, reason)]`` of the options among ``names`` that ``config``'s run does not use."""
    return [(name, APPLIES[name].why(config)) for name in names
            if name in APPLIES and not APPLIES[name].applies(config)]
