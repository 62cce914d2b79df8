"""Center loss and its center update, as pure functions over ``keras.ops``.

Wen, Zhang, Li & Qiao, "A Discriminative Feature Learning Approach for Deep Face
Recognition", ECCV 2016.

Normalisation used here (and by ``lossweave.terms.CenterLoss``)::

    L_C = 1/2 * mean_i ||x_i - c_{y_i}||^2            (Eq. 2, averaged over the batch)

i.e. the paper's Eq. 2 divided by the batch size m, which is what caffe-face's
``CenterLossLayer`` computes (``dot / M / 2``). How ``lambda`` maps to other
common implementations, for the same training behaviour:

=================================================  =========================================
implementation                                     equivalent lossweave ``lambda``
=================================================  =========================================
paper Eq. 2 / ``tf.nn.l2_loss(x - c)`` (a sum)     ``lambda_sum * m`` (m = batch size)
caffe-face ``CenterLossLayer``                     same ``lambda``
facenet ``reduce_mean(square(x - c))``             ``lambda_facenet * 2 / d`` (d = feature dim)
KaiyangZhou PyTorch ``CenterLoss`` (sum / m)       ``lambda_kz * 2``
=================================================  =========================================

Center update, Eq. 4 with the count normalisation of Eq. 3::

    c_j <- c_j - alpha * sum_{i: y_i = j} (c_j - x_i) / (1 + n_j)

where ``n_j`` is the number of samples of class j in the batch. Centers of
classes absent from the batch do not move. facenet's update
``c -= (1 - alfa) * (c - x)`` has no ``1 / (1 + n_j)`` term: its ``1 - alfa``
plays the role of ``alpha``. Implementations that train the centers by
gradient (KaiyangZhou's, ``CenterLoss(update="gradient")`` here) move c_j by
``lr * lambda / m * sum_i (x_i - c_j)``: no count term, and an effective alpha
tied to the learning rate.

Sample weights (the library's one rule, ``docs/sample_weight.md``): the
loss is Keras's ``sum_i w_i l_i / batch`` (the batch counts every row,
zero-weight rows included). The center update reads a weight as a selection
only: a row of non-zero weight takes part in Eq. 4 once (in the sum and in
``n_j``), whatever its value; a row of weight 0 is left out. Eq. 4 is a
running mean of each class's features, not a gradient of the weighted loss,
and the paper defines no weights; scaling its step by a weight would tie
``alpha`` to the weights' scale. ``update="gradient"`` centers do follow the
weights, through the gradient of the weighted loss.

Every update here costs O(batch x dim): it is expressed as per-sample row
deltas (``center_update_rows``) that a caller scatter-adds into the table.
"""

from keras import ops

from lossweave import _backend as backend
from lossweave.ops.labels import class_indices, finite_rows
from lossweave.ops.reducers import batch_mean


def _participating(features, valid, sample_weight):
    """Rows that count: valid labels, finite features, non-zero sample weight."""
    return _keep(valid, finite_rows(features), sample_weight)


def _keep(valid, finite, sample_weight):
    keep = ops.logical_and(valid, finite)
    if sample_weight is not None:
        sample_weight = ops.reshape(ops.cast(sample_weight, "float32"), (-1,))
        keep = ops.logical_and(keep, sample_weight != 0)
    return keep


def _prepare(features, labels, centers, sample_weight):
    num_classes = centers.shape[0]
    if len(features.shape) != 2:
        raise ValueError(
            f"center loss: received features of shape {tuple(features.shape)}; "
            f"expected a 2-D tensor (batch, dim). Flatten the embedding first."
        )
    if features.shape[-1] is not None and centers.shape[-1] != features.shape[-1]:
        raise ValueError(
            f"center loss: features have dim {features.shape[-1]} but centers have "
            f"shape {tuple(centers.shape)}; expected centers of shape "
            f"(num_classes, {features.shape[-1]})."
        )
    indices, valid = class_indices(labels, num_classes, what="center loss labels")
    features = ops.cast(features, "float32")
    return _zero_others(features, indices, _participating(features, valid, sample_weight))


def _zero_others(features, indices, keep):
    # Zero the rows that do not count, so NaN/Inf never reach a sum or a gradient.
    return ops.where(keep[:, None], features, ops.zeros_like(features)), indices, keep


def prepare_checked(features, indices, valid, finite, sample_weight=None):
    """``(features, indices, keep)`` of the center ops from rows a term's input check has already read.

    ``features`` float32 ``(batch, dim)``, ``indices`` int32 (in range on every
    row), ``valid`` (the label is valid) and ``finite`` (the row is finite), as
    ``lossweave.terms.check.check_class_rows`` computed them; ``keep`` also
    leaves out the rows of weight 0. ``center_differences``, then
    ``center_loss_of`` and ``center_update_of``, give the values of
    ``center_loss`` and ``center_update_rows`` from one pass over the labels,
    the features and the gathered centers.
    """
    return _zero_others(features, indices, _keep(valid, finite, sample_weight))


def center_differences(features, indices, centers):
    """``x_i - c_{y_i}`` (float32 ``(batch, dim)``) of prepared rows: what Eq. 2 and Eq. 4 both read."""
    return features - ops.cast(backend.gather_rows(centers, indices), "float32")


def center_loss_of(differences, keep, sample_weight=None):
    """Eq. 2 averaged over the batch from ``center_differences``: ``1/2 * sum_i w_i ||d_i||^2 / batch`` (kept rows)."""
    per_sample = 0.5 * ops.sum(ops.square(differences), axis=-1)
    if sample_weight is not None:  # (a kept row's weight; the select zeroes the others)
        per_sample = per_sample * ops.reshape(ops.cast(sample_weight, "float32"), (-1,))
    return batch_mean(ops.where(keep, per_sample, ops.zeros_like(per_sample)))


def center_update_of(differences, indices, keep, alpha, num_classes=None):
    """``(indices, deltas)`` of Eq. 3-4 from ``center_differences``: deltas ``-alpha (c_j - x_i) / (1 + n_j)``.

    ``n_{y_i}`` (the participating rows of row i's class) is counted per
    class through a one-hot ``(batch, num_classes)`` matrix when
    ``num_classes`` is given and at most the batch size (O(batch x classes)),
    else from the ``(batch, batch)`` class equalities; both sums are exact
    (integer counts in float32), so the deltas are the same.
    """
    keep_f = ops.cast(keep, "float32")
    batch = indices.shape[0]
    if num_classes is not None and num_classes <= (batch or ONE_HOT_CLASSES):
        # (Not ops.one_hot: on PyTorch it checks the indices' range on the host, two syncs per step.)
        hot = ops.cast(ops.equal(indices[:, None], ops.arange(num_classes, dtype="int32")[None, :]), "float32")
        counts = ops.matmul(hot, ops.matmul(keep_f, hot))  # n_j per class, read at each row's class
    else:
        same = ops.cast(ops.equal(indices[:, None], indices[None, :]), "float32")
        counts = ops.sum(same * keep_f[None, :], axis=1)  # n_{y_i} among participating rows
    alpha = alpha if isinstance(alpha, (int, float)) else ops.cast(alpha, "float32")
    scale = alpha * keep_f / (1.0 + counts)
    return indices, ops.stop_gradient(differences) * scale[:, None]


# Where the batch size is unknown when traced: the class counts go one-hot up to this many classes.
ONE_HOT_CLASSES = 256


def center_loss(features, labels, centers, sample_weight=None):
    """Center loss ``1/2 * mean_i w_i ||x_i - c_{y_i}||^2`` (Wen et al. 2016, Eq. 2).

    Args:
        features: ``(batch, dim)`` deep features.
        labels: sparse ``(batch,)`` / ``(batch, 1)`` or one-hot
            ``(batch, num_classes)`` labels.
        centers: ``(num_classes, dim)`` class centers.
        sample_weight: optional ``(batch,)`` weights: ``w_i`` scales row
            ``i``'s term (``docs/sample_weight.md``).

    Returns:
        Scalar float32 loss. Rows with invalid labels or non-finite features
        contribute zero; the mean is over the whole batch (Keras's
        ``sum_over_batch_size``: ``sum_i w_i l_i / batch``).

    Example:
        >>> import numpy as np
        >>> x = np.array([[1., 0.], [0., 2.]], "float32")
        >>> c = np.zeros((3, 2), "float32")
        >>> float(center_loss(x, np.array([0, 2]), c))   # (1 + 4) / 2 / 2
        1.25
    """
    features, indices, keep = _prepare(features, labels, centers, sample_weight)
    return center_loss_of(center_differences(features, indices, centers), keep, sample_weight)


def center_update_rows(features, labels, centers, alpha, sample_weight=None):
    """Per-sample row deltas of the center update (Wen et al. 2016, Eq. 3-4).

    Returns ``(indices, deltas)`` such that scatter-adding ``deltas`` into the
    rows ``indices`` of ``centers`` (duplicates summed) gives::

        c_j <- c_j - alpha * sum_{i: y_i = j} (c_j - x_i) / (1 + n_j)

    ``n_j`` counts the batch rows of class j that take part (valid label,
    finite features, non-zero sample weight); rows that do not take part get a
    zero delta. A non-zero weight's value does not enter the update (see the
    module docstring). Cost: O(batch x dim) plus a count of O(batch x min(batch,
    num_classes)).

    Args:
        features: ``(batch, dim)`` features.
        labels: sparse or one-hot labels.
        centers: ``(num_classes, dim)`` current centers.
        alpha: center learning rate in [0, 1] (float or scalar tensor).
        sample_weight: optional ``(batch,)``; rows with weight 0 are left out,
            the others take part once.

    Returns:
        ``(indices, deltas)``: int32 ``(batch,)`` and float32 ``(batch, dim)``.

    Example:
        >>> import numpy as np
        >>> idx, d = center_update_rows(np.array([[2., 2.]], "float32"),
        ...                             np.array([1]), np.zeros((3, 2), "float32"), 1.0)
        >>> int(idx[0]), [float(v) for v in d[0]]   # halfway: alpha / (1 + 1)
        (1, [1.0, 1.0])
    """
    features, indices, keep = _prepare(features, labels, centers, sample_weight)
    differences = center_differences(features, indices, centers)
    return center_update_of(differences, indices, keep, alpha, centers.shape[0])


def center_update(features, labels, centers, alpha, sample_weight=None):
    """The updated centers after one Eq. 4 step, as a new tensor.

    A pure function for custom training loops (``jax.grad``, ``GradientTape``);
    building a new table costs O(num_classes x dim). A stateful caller that
    wants O(batch x dim) should scatter ``center_update_rows`` into its
    variable in place, as ``lossweave.terms.CenterLoss`` does.

    Example:
        >>> import numpy as np
        >>> c = center_update(np.array([[2., 0.], [4., 0.]], "float32"),
        ...                   np.array([1, 1]), np.zeros((2, 2), "float32"), 0.5)
        >>> [float(v) for v in c[1]]   # 0.5 * (2 + 4) / (1 + 2)
        [1.0, 0.0]
    """
    indices, deltas = center_update_rows(features, labels, centers, alpha, sample_weight)
    table = ops.scatter(indices[:, None], deltas, ops.shape(centers))
    return ops.cast(centers, "float32") + table


def center_loss_and_update(features, labels, centers, alpha, sample_weight=None):
    """``(loss, new_centers)``: the TF1 snippet's ``loss, centers_update_op`` as values.

    The loss is computed with the centers *before* the update, as in the paper
    (Algorithm 1: loss at iteration t, then c^{t+1}).

    Example:
        >>> import numpy as np
        >>> loss, c = center_loss_and_update(np.ones((2, 2), "float32"), np.array([0, 1]),
        ...                                  np.zeros((2, 2), "float32"), alpha=0.5)
        >>> float(loss), [float(v) for v in c[0]]
        (1.0, [0.25, 0.25])
    """
    loss = center_loss(features, labels, centers, sample_weight)
    new_centers = center_update(features, labels, centers, alpha, sample_weight)
    return loss, new_centers
