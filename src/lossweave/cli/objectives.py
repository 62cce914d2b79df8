"""The objectives the command line tool builds: a classification term, center loss, a weighting.

``loss`` picks the classification term: ``softmax`` (cross-entropy on the
model's logits head) or a margin-softmax term on the embedding, which owns its
class weights. ``center_weight > 0`` adds center loss on the embedding.
``weighting`` picks how the terms are combined.

``compare`` names objectives with short specs: ``softmax``, ``arcface``,
``softmax+center:0.003`` (a classification term, optionally ``+center:LAMBDA``).
"""

import numpy as np

# name -> (terms class name or None for softmax, what it is)
LOSSES = {
    "softmax": (None, "softmax cross-entropy on the logits head"),
    "normface": ("NormFace", "NormFace: s cos(theta)"),
    "sphereface": ("SphereFace", "SphereFace: ||x|| psi(m theta), annealed"),
    "cosface": ("CosFace", "CosFace: s (cos(theta) - m)"),
    "arcface": ("ArcFace", "ArcFace: s cos(theta + m)"),
    "combined": ("CombinedMargin", "combined margin: s (cos(m1 theta + m2) - m3)"),
    "subcenter": ("SubCenterArcFace", "sub-center ArcFace: K sub-centers per class"),
}
WEIGHTINGS = ("fixed", "convex", "uncertainty", "dwa", "rlw", "gls", "famo")


def classifier_name(loss):
    """The term name the classification loss gets in the Objective (and in the logs)."""
    return "softmax" if loss == "softmax" else loss


def classification_term(loss, num_classes, *, scale=None, margin=None, combined_margins=None, sub_centers=3):
    """The term of ``loss``; ``None`` values keep the paper's defaults."""
    import lossweave as lw

    class_name, _ = LOSSES[loss]
    if class_name is None:
        return lw.terms.SoftmaxCrossEntropy(on="logits")
    kwargs = {"num_classes": num_classes, "on": "embedding"}
    if scale is not None and loss != "sphereface":
        kwargs["scale"] = scale
    if margin is not None and loss in ("cosface", "arcface", "subcenter"):
        kwargs["margin"] = margin
    if margin is not None and loss == "sphereface":
        if float(margin) != int(margin) or margin < 1:
            raise ValueError(f"--margin for sphereface is the integer multiplier m >= 1; received {margin!r}.")
        kwargs["margin"] = int(margin)
    if loss == "combined" and combined_margins is not None:
        kwargs.update(zip(("m1", "m2", "m3"), combined_margins))
    if loss == "subcenter":
        kwargs["sub_centers"] = sub_centers
    return getattr(lw.terms, class_name)(**kwargs)


def build_weighting(name, term_names, center_weight, steps_per_epoch, center_warmup=0):
    """The weighting strategy ``name`` over ``term_names`` (classification term first).

    Under ``fixed``, ``center_warmup > 0`` ramps the center weight linearly
    from 0 to ``center_weight`` over that many steps.
    """
    import lossweave as lw

    if name == "fixed":
        if "center" not in term_names:
            return lw.weighting.Fixed({})
        weight = lw.schedules.LinearWarmup(center_weight, steps=center_warmup) if center_warmup else center_weight
        return lw.weighting.Fixed({"center": weight})
    if name == "convex":
        if len(term_names) != 2:
            raise ValueError("--weighting convex needs two terms: set --center-weight > 0.")
        return lw.weighting.Convex(term_names[0], term_names[1], alpha=0.5, trainable=True)
    if name == "uncertainty":
        return lw.weighting.Uncertainty()
    if name == "dwa":
        return lw.weighting.DWA(steps_per_epoch=steps_per_epoch)
    if name == "rlw":
        return lw.weighting.RLW(seed=0)
    if name == "gls":
        return lw.weighting.GLS()
    return lw.weighting.FAMO()


def build_objective(model, num_classes, *, loss="softmax", center_weight=0.0, alpha=0.5,
                    weighting="fixed", steps_per_epoch=1, center_warmup=0, **term_options):
    """``Objective(model, {classification term, [center]}, weighting)``.

    Args:
        model: the model (dict outputs with ``embedding`` and, for softmax, ``logits``).
        num_classes: number of classes.
        loss: a key of ``LOSSES``.
        center_weight: lambda of the center term (0: no center term); the fixed
            weight under ``weighting="fixed"``, else it only adds the term.
        alpha: center learning rate.
        weighting: one of ``WEIGHTINGS``.
        steps_per_epoch: training steps per epoch (DWA).
        center_warmup: steps of a linear warm-up of the center weight (fixed weighting).
        **term_options: ``scale``, ``margin``, ``combined_margins``, ``sub_centers``.
    """
    import lossweave as lw

    terms = {classifier_name(loss): classification_term(loss, num_classes, **term_options)}
    if center_weight > 0:
        terms["center"] = lw.terms.CenterLoss(num_classes=num_classes, alpha=alpha, on="embedding")
    strategy = build_weighting(weighting, list(terms), center_weight, steps_per_epoch, center_warmup)
    return lw.Objective(model, terms, weighting=strategy)


def predicted_logits(objective, loss, outputs):
    """Logits of the test outputs: the model's head, or the margin term's margin-free logits."""
    import keras

    if loss == "softmax":
        return np.asarray(outputs["logits"])
    term = objective.terms[classifier_name(loss)]
    return keras.ops.convert_to_numpy(term.logits(keras.ops.convert_to_tensor(outputs["embedding"])))


def parse_spec(text):
    """``"arcface+center:0.003"`` -> ``{"loss": "arcface", "center_weight": 0.003}``.

    Example:
        >>> parse_spec("softmax+center:0.01")
        {'loss': 'softmax', 'center_weight': 0.01}
        >>> parse_spec("cosface")
        {'loss': 'cosface', 'center_weight': 0.0}
    """
    parts = [p.strip() for p in str(text).split("+")]
    loss, center_weight = None, 0.0
    for part in parts:
        name, _, value = part.partition(":")
        if name == "center":
            try:
                center_weight = float(value)
            except ValueError:
                raise ValueError(f"objective {text!r}: expected center:LAMBDA with a number; received {part!r}.") from None
            if not np.isfinite(center_weight) or center_weight <= 0:
                raise ValueError(f"objective {text!r}: the center weight must be > 0; received {value!r}.")
        elif name in LOSSES and not value:
            if loss is not None:
                raise ValueError(f"objective {text!r}: two classification losses ({loss}, {name}); give one.")
            loss = name
        else:
            raise ValueError(
                f"objective {text!r}: unknown part {part!r}; expected one of {', '.join(LOSSES)}, "
                f"optionally +center:LAMBDA."
            )
    if loss is None:
        raise ValueError(f"objective {text!r}: needs a classification loss ({', '.join(LOSSES)}).")
    return {"loss": loss, "center_weight": center_weight}
