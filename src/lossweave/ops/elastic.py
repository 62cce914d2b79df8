"""ElasticFace's margins as pure functions: draw, "+" reassignment, target logits.

Boutros, Damer, Kirchbuchner and Kuijper, "ElasticFace: Elastic Margin Loss
for Deep Face Recognition", CVPR Workshops 2022 (arXiv:2109.09416). Each
training sample ``i`` gets its own margin ``m_i ~ N(m, sigma)`` (the normal
density, Eq. 3), drawn anew at every step, in place of ArcFace's or CosFace's
fixed ``m``:

- ElasticFace-Arc (Eq. 4): the target logit is ``s cos(theta_yi + m_i)``;
- ElasticFace-Cos (Eq. 5): the target logit is ``s (cos theta_yi - m_i)``
  (:func:`lossweave.ops.margin.cosface_target` takes the ``(batch,)`` margins
  as they are).

ElasticFace+ (Sec. 3, "ElasticFace+") gives the drawn margins to the samples
by their target cosine, so that a sample far from its class center gets a
large margin: :func:`plus_margins`. Its two rules (``"authors"``, the
released code; ``"paper"``, the rule the paper states) are explained there.
"""

from keras import ops, random

from lossweave.ops.margin import safe_sqrt

PLUS_ORDERS = ("authors", "paper")


def normal_margins(batch, mean, stddev, seed):
    """``(batch,)`` float32 margins drawn from ``N(mean, stddev)`` (Eq. 3), not clipped.

    As in the authors' code (``torch.normal``; the clamp to ``[m - sigma, m +
    sigma]`` there is a comment, not code), the draws are used as they are.

    Args:
        batch: the number of margins.
        mean: ``m``.
        stddev: ``sigma``; 0 gives ``m`` exactly (ArcFace / CosFace).
        seed: an int or a ``keras.random.SeedGenerator`` (advanced by one draw).

    Example:
        >>> import numpy as np
        >>> [round(float(v), 6) for v in normal_margins(3, 0.5, 0.0, seed=1)]
        [0.5, 0.5, 0.5]
    """
    return random.normal((batch,), mean=mean, stddev=stddev, dtype="float32", seed=seed)


def plus_margins(margins, cos_target, order="authors", ranked=None):
    """ElasticFace+: the drawn ``margins`` handed to the samples by their target cosine.

    Both rules sort the margins ascending and the samples by ``cos theta_yi``
    descending (closest to its class center first):

    - ``order="paper"``: the sample of the ``k``-th largest cosine gets the
      ``k``-th smallest margin, so the farther a sample is from its center,
      the larger its margin (the rule the paper states, Sec. 3);
    - ``order="authors"`` (the released code, ``utils/losses.py`` of
      github.com/fdbtrs/ElasticFace, which produced the published
      ElasticFace+ numbers): row ``i`` gets ``sorted_margins[order[i]]``,
      where ``order`` is the descending argsort of the cosines, i.e. the
      sorted margins are *gathered* by the argsort instead of scattered to
      it (``margin[idicate_cosie]``). The two agree when that permutation is
      its own inverse; in general the released rule does not give the
      largest margin to the farthest sample.

    Args:
        margins: ``(batch,)`` drawn margins.
        cos_target: ``(batch,)`` each sample's cosine to its class (no
            gradient flows through the ordering).
        order: ``"authors"`` or ``"paper"``.
        ranked: optional ``(batch,)`` bool: the rows that take part (the
            authors rank the labelled rows only). The others keep their drawn
            margin and do not move anyone else's; the ranked rows share the
            margins drawn at their own positions.

    Returns:
        ``(batch,)`` float32 margins.

    Example:
        >>> import numpy as np
        >>> m = np.array([0.3, 0.1, 0.2], "float32")          # sorted: 0.1, 0.2, 0.3
        >>> cos = np.array([0.1, 0.9, 0.5], "float32")        # descending argsort: 1, 2, 0
        >>> [round(float(v), 2) for v in plus_margins(m, cos, "paper")]
        [0.3, 0.1, 0.2]
        >>> [round(float(v), 2) for v in plus_margins(m, cos, "authors")]
        [0.2, 0.3, 0.1]
    """
    margins = ops.cast(margins, "float32")
    cos = ops.stop_gradient(ops.cast(cos_target, "float32"))
    batch = ops.shape(margins)[0]
    if ranked is None:
        ranked = ops.ones((batch,), "bool")
    # Rows out of the ranking sort after the ranked ones on both keys.
    sorted_margins = ops.sort(ops.where(ranked, margins, ops.full_like(margins, float("inf"))))
    descending = ops.cast(ops.argsort(-ops.where(ranked, cos, ops.full_like(cos, -float("inf")))), "int32")
    if order == "paper":
        slot = ops.cast(ops.argsort(descending), "int32")  # the rank of each row
    elif order == "authors":
        # Row i is the k-th ranked row (k = its position among the ranked rows); it gets the sorted
        # margin at the ranked position of the row the argsort puts k-th.
        position = ops.cumsum(ops.cast(ranked, "int32")) - 1
        k = ops.clip(position, 0, batch - 1)
        slot = ops.take(position, ops.take(descending, k))
    else:
        raise ValueError(f"plus_margins: `order` must be one of {PLUS_ORDERS}; received {order!r}.")
    assigned = ops.take(sorted_margins, ops.clip(slot, 0, batch - 1))
    return ops.where(ranked, assigned, margins)


def elastic_arc_target(cos, margins):
    """ElasticFace-Arc's target (Eq. 4): ``cos(theta + m_i)`` for ``theta`` in ``[0, pi]``.

    Written ``cos theta cos m_i - sin theta sin m_i`` (no ``arccos``: a finite
    gradient at ``cos theta = +-1``). As in the authors' code there is no
    fallback where ``theta + m_i > pi`` (this library's ArcFace switches to
    ``cos theta - m sin m`` there).

    Example:
        >>> import numpy as np
        >>> c = np.cos(np.array([1.0, 0.2], "float32"))
        >>> v = elastic_arc_target(c, np.array([0.5, 0.4], "float32"))
        >>> np.allclose(v, np.cos([1.5, 0.6]), atol=1e-6)
        True
    """
    cos = ops.cast(cos, "float32")
    margins = ops.cast(margins, "float32")
    return cos * ops.cos(margins) - safe_sqrt(1.0 - ops.square(cos)) * ops.sin(margins)
