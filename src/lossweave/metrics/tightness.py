"""How tight the classes of an embedding are: the intra- over inter-class distance ratio."""

import numpy as np

from lossweave.metrics import _checks


def ratio_from_centers(embeddings, centers, rows, metric="euclidean"):
    """The distance ratio of rows to given centers; the arithmetic behind :func:`distance_ratio`.

    ``intra`` is the mean distance of each row to its center ``centers[rows[i]]``,
    ``inter`` the mean distance between two different rows of ``centers``.
    Nothing is validated and NaN values propagate (``nan`` comes out), which
    is what :func:`lossweave.report.class_distance_ratio` wants for a diverged
    run.

    Args:
        embeddings: ``(n, dim)`` float array (unit rows for ``"cosine"``).
        centers: ``(K, dim)`` float array, ``K >= 2`` (unit rows for ``"cosine"``).
        rows: ``(n,)`` index of each row's center in ``centers``.
        metric: ``"euclidean"`` (``d`` the Euclidean distance) or ``"cosine"``
            (``d(a, b) = 1 - a . b`` on unit vectors).

    Returns:
        ``intra / inter``; ``inf`` if the centers coincide while the rows
        spread, ``nan`` if everything coincides.

    Example:
        >>> x = np.array([[0., 1.], [0., -1.], [10., 1.], [10., -1.]])
        >>> ratio_from_centers(x, np.array([[0., 0.], [10., 0.]]), np.array([0, 0, 1, 1]))
        0.1
    """
    own = centers[rows]
    if metric == "euclidean":
        intra = float(np.linalg.norm(embeddings - own, axis=1).mean())
        pairwise = np.linalg.norm(centers[:, None, :] - centers[None, :, :], axis=-1)
    else:
        intra = float(np.mean(1.0 - np.sum(embeddings * own, axis=1)))
        pairwise = 1.0 - centers @ centers.T
    inter = float(pairwise[np.triu_indices(centers.shape[0], k=1)].mean())
    if inter <= 0.0:
        return float("nan") if intra <= 0.0 else float("inf")
    return max(intra, 0.0) / inter


def distance_ratio(embeddings, labels, metric="cosine"):
    """Intra-class over inter-class distance of an embedding (lower is tighter).

    .. math::

        r = \\frac{\\frac{1}{n} \\sum_i d(x_i, c_{y_i})}
                  {\\frac{2}{K(K-1)} \\sum_{j < k} d(c_j, c_k)}

    the mean distance of a sample to its class center divided by the mean
    distance between two of the ``K`` class centers. ``metric="euclidean"``:
    ``d`` is the Euclidean distance and ``c_j`` the mean of class ``j``; this
    equals :func:`lossweave.report.features.class_distance_ratio` (no
    centers). ``metric="cosine"``: ``d(a, b) = 1 - cos(a, b)`` and ``c_j`` the
    mean direction of class ``j`` (the normalized mean of the normalized rows).
    The ratio is invariant to scaling the whole embedding (and, for cosine, to
    scaling each row). It is the tightness measure behind center loss (Wen et
    al., "A Discriminative Feature Learning Approach for Deep Face
    Recognition", ECCV 2016): compact classes, separated centers.

    Args:
        embeddings: ``(n, dim)`` array.
        labels: ``(n,)`` integer classes; at least two distinct.
        metric: ``"cosine"`` or ``"euclidean"``.

    Returns:
        The ratio as a float: ``inf`` if all centers coincide while samples
        spread, ``nan`` if everything coincides or (cosine) a class's rows
        cancel out so it has no mean direction.

    Raises:
        ValueError: bad shapes, NaN values, fewer than two classes, or (cosine)
            a zero row.

    Example:
        >>> x = np.array([[0., 1.], [0., -1.], [10., 1.], [10., -1.]])
        >>> distance_ratio(x, [0, 0, 1, 1], metric="euclidean")
        0.1
        >>> x = np.array([[1., 0.1], [1., -0.1], [-1., 0.1], [-1., -0.1]])
        >>> r = distance_ratio(x, [0, 0, 1, 1], metric="cosine")  # (1 - cos 5.7 deg) / (1 - cos 180 deg)
        >>> bool(np.isclose(r, (1 - 1 / np.sqrt(1.01)) / 2))
        True
    """
    embeddings, labels = _checks.check_set(embeddings, labels, metric)
    classes, inverse = np.unique(labels, return_inverse=True)
    inverse = inverse.reshape(-1)
    counts = np.bincount(inverse)
    sums = np.zeros((classes.size, embeddings.shape[1]))
    np.add.at(sums, inverse, embeddings)
    centers = sums / counts[:, None]
    if metric == "cosine":
        norms = np.linalg.norm(centers, axis=1, keepdims=True)
        if np.any(norms == 0):
            return float("nan")
        centers = centers / norms
    return ratio_from_centers(embeddings, centers, inverse, metric)
