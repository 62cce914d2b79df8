"""The objectives the command line tool builds: a classification term, center loss, a weighting.

``loss`` picks the classification term: ``softmax`` (cross-entropy on the
model's logits head), a margin-softmax term on the embedding, which owns its
class weights, or a pair or proxy loss on the embedding (no class logits).
``center`` adds center loss on the embedding (weighted ``center_weight``
under the ``fixed`` weighting). ``weighting`` picks how the terms are
combined. The names, their help and their builders are
``lossweave.cli.registry``'s.

``compare`` names objectives with short specs: ``softmax``, ``arcface``,
``triplet``, ``softmax+center:0.003`` (a classification term, optionally
``+center:LAMBDA``, or ``+center`` under a weighting that sets the weights
itself).
"""

import numpy as np

from lossweave.cli import registry

LOSSES = registry.LOSSES  # name -> LossEntry(class_name, help, kind, ...)
WEIGHTINGS = registry.names(registry.WEIGHTINGS)


def classifier_name(loss):
    """The term name the classification loss gets in the Objective (and in the logs)."""
    return loss


def has_logits_head(loss):
    """Whether the model of ``loss`` needs a logits head (only softmax reads one)."""
    return LOSSES[loss].kind == "logits"


def class_scores(loss):
    """Where the test class scores come from: ``"head"``, ``"term"`` (margin) or ``"means"`` (pair)."""
    return {"logits": "head", "margin": "term", "pair": "means"}[LOSSES[loss].kind]


def classification_term(loss, num_classes, *, scale=None, margin=None, combined_margins=None, sub_centers=3,
                        mining=None, memory=None):
    """The term of ``loss``; ``None`` values keep the paper's defaults.

    ``memory`` wraps a pair term in ``CrossBatchMemory(term, memory_size=memory)``.
    """
    options = {"scale": scale, "margin": margin, "combined_margins": combined_margins,
               "sub_centers": sub_centers, "mining": mining}
    return registry.build_loss(loss, num_classes, options, memory=memory)


def build_weighting(name, term_names, center_weight, steps_per_epoch, center_warmup=0):
    """The weighting strategy ``name`` over ``term_names`` (classification term first).

    Under ``fixed``, ``center_warmup > 0`` ramps the center weight linearly
    from 0 to ``center_weight`` over that many steps. An unknown name raises
    ``ValueError`` naming the choices.
    """
    return registry.build_weighting(name, term_names, center_weight, steps_per_epoch, center_warmup)


def build_objective(model, num_classes, *, loss="softmax", center=None, center_weight=0.0, alpha=0.5,
                    weighting="fixed", steps_per_epoch=1, center_warmup=0, tasks=None, **term_options):
    """``Objective(model, {classification term, [tasks], [center]}, weighting)``.

    Args:
        model: the model (dict outputs with ``embedding`` and, for softmax, ``logits``).
        num_classes: number of classes.
        loss: a key of ``LOSSES``.
        center: whether to add the center term (``None``: when ``center_weight > 0``).
        center_weight: lambda, the center term's weight under ``weighting="fixed"``.
        alpha: center learning rate.
        weighting: one of ``WEIGHTINGS``.
        steps_per_epoch: training steps per epoch (DWA).
        center_warmup: steps of a linear warm-up of the center weight (fixed weighting).
        tasks: ``{target: num_classes or None}`` of a multi-task data set's other
            targets, one term each (``lossweave.cli.tasks``; the model has their heads).
        **term_options: ``scale``, ``margin``, ``combined_margins``, ``sub_centers``,
            ``mining``, ``memory`` (see ``classification_term``).
    """
    import lossweave as lw
    from lossweave.cli.tasks import task_terms

    terms = {classifier_name(loss): classification_term(loss, num_classes, **term_options)}
    terms.update(task_terms(tasks or {}))
    if center if center is not None else center_weight > 0:
        terms["center"] = lw.terms.CenterLoss(num_classes=num_classes, alpha=alpha, on="embedding")
    strategy = build_weighting(weighting, list(terms), center_weight, steps_per_epoch, center_warmup)
    return lw.Objective(model, terms, weighting=strategy)


def class_means(embedding, labels, num_classes):
    """``(num_classes, dim)`` means of the rows of each class; NaN rows for absent classes.

    Example:
        >>> class_means(np.array([[0., 2.], [2., 2.], [5., 5.]]), np.array([0, 0, 2]), 3).tolist()
        [[1.0, 2.0], [nan, nan], [5.0, 5.0]]
    """
    embedding = np.asarray(embedding, dtype="float64")
    means = np.full((num_classes, embedding.shape[-1]), np.nan)
    for c in np.unique(labels):
        means[c] = embedding[labels == c].mean(axis=0)
    return means


def nearest_mean_scores(embedding, means):
    """Cosine similarity of each row to each class mean; ``-inf`` for classes without a mean.

    The class scores of a loss without class logits (a pair or proxy loss):
    their argmax is the nearest-class-mean classifier in the embedding.

    Example:
        >>> means = np.array([[1., 0.], [np.nan, np.nan], [0., 2.]])
        >>> nearest_mean_scores(np.array([[3., 1.]]), means).round(3).tolist()
        [[0.949, -inf, 0.316]]
    """
    def unit(v):
        return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)

    present = ~np.isnan(means).any(axis=-1)
    scores = unit(np.asarray(embedding, dtype="float64")) @ unit(np.nan_to_num(means)).T
    return np.where(present[None, :], scores, -np.inf)


def predicted_logits(objective, loss, outputs, means=None):
    """Class scores of the test outputs, or ``None`` when there are none.

    The model's head (softmax), the margin term's margin-free logits, or for
    a pair or proxy loss the cosine similarity to ``means``, the training
    classes' mean embeddings (``None``: no scores).
    """
    import keras

    source = class_scores(loss)
    if source == "head":
        return np.asarray(outputs["logits"])
    if source == "means":
        return None if means is None else nearest_mean_scores(outputs["embedding"], means)
    term = objective.terms[classifier_name(loss)]
    return keras.ops.convert_to_numpy(term.logits(keras.ops.convert_to_tensor(outputs["embedding"])))


def parse_spec(text):
    """``"arcface+center:0.003"`` -> ``{"loss": "arcface", "center": True, "center_weight": 0.003}``.

    The ``TrainConfig`` fields the spec sets: ``+center`` without a weight
    leaves ``center_weight`` to the options.

    Example:
        >>> parse_spec("softmax+center:0.01")
        {'loss': 'softmax', 'center': True, 'center_weight': 0.01}
        >>> parse_spec("cosface"), parse_spec("cosface+center")
        ({'loss': 'cosface', 'center': False}, {'loss': 'cosface', 'center': True})
    """
    parts = [p.strip() for p in str(text).split("+")]
    loss, center, center_weight = None, False, None
    for part in parts:
        name, colon, value = part.partition(":")
        if name == "center" and not colon:
            center = True
        elif name == "center":
            center = True
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
                f"optionally +center:LAMBDA (or +center)."
            )
    if loss is None:
        raise ValueError(f"objective {text!r}: needs a classification loss ({', '.join(LOSSES)}).")
    return {"loss": loss, "center": center, **({} if center_weight is None else {"center_weight": center_weight})}
