"""Exact k-nearest-neighbour search in query chunks x gallery blocks, with ``keras.ops`` only.

:func:`nearest` answers ``k`` nearest gallery rows of every query without ever
building a queries x gallery array: the queries go through in chunks of
``query_block`` rows, and each chunk keeps a running top-``k`` that is merged
with the best ``k`` of one gallery block (``gallery_block`` rows) at a time.
Peak memory is the gallery plus O(query_block x gallery_block) scores; the
work runs on the device of the current backend (the GPU when there is one).
One (query chunk, gallery block) step is compiled once per shape
(``jax.jit`` on JAX, ``tf.function`` on TensorFlow; eager on PyTorch): the
last query chunk and the last gallery block are padded to the full size so
that every step has the same shapes, and small query counts and ``k`` are
rounded up to powers of two (the best ``k`` of the best ``2^j >= k`` are the same rows),
so that a few compiled steps serve every call.

Distances are **smaller is closer** for every metric:

* ``"cosine"``: ``1 - cos(q, g)`` (rows L2-normalised first);
* ``"euclidean"``: ``||q - g||_2``;
* ``"dot"``: ``-q . g`` (maximum inner product search).

Inside a step the blocks are ranked by a score, larger is closer, that costs
one matmul and one add: ``q . g`` (cosine on normalised rows, dot) or ``2 q . g -
||g||^2`` (Euclidean: ``||q||^2`` is the same for every gallery row of a
query). The distances are computed from the scores of the ``k`` found.

**Ties** (equal scores) are broken by the lower gallery position, on every
backend: ``keras.ops.top_k`` is stable on JAX and TensorFlow but not on
PyTorch (``torch.topk``), so a block whose ``k``-th and ``(k+1)``-th best
scores are equal takes its ``k`` by an explicit rule (every score above the
``k``-th, then the tied ones in position order), and the running merge is a
stable sort in which the earlier blocks come first.

Float32 throughout (the device's precision; JAX without x64 has no float64).
Euclidean scores come from the expansion ``2 q.g - ||g||^2``: centre both
sides on a common point first (e.g. the gallery mean: distances do not change)
when the rows lie far from the origin, as :mod:`lossweave.metrics` does.
"""


import numpy as np
from keras import ops

from lossweave._backend.compiled import compiled

METRICS = ("cosine", "euclidean", "dot")


def _check(metric, k, query_block, gallery_block):
    if metric not in METRICS:
        raise ValueError(f"nearest: received metric={metric!r}; expected one of {METRICS}.")
    for name, value in (("k", k), ("query_block", query_block), ("gallery_block", gallery_block)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"nearest: expected a positive integer {name}; received {value!r}.")


def _rows(x, what):
    x = ops.cast(ops.convert_to_tensor(x), "float32")
    if len(x.shape) != 2:
        raise ValueError(f"nearest: expected {what} of shape (n, dim); received shape {tuple(x.shape)}.")
    return x


def _normalize(x):
    return x * ops.rsqrt(ops.maximum(ops.sum(ops.square(x), axis=1, keepdims=True), 1e-24))


class GalleryBlocks:
    """The gallery on the device, cut in blocks of equal size (the last one padded).

    Build it once with :func:`gallery_blocks` and search it many times with
    :func:`search_blocks` (``lossweave.retrieval.Index`` keeps one).

    Attributes:
        blocks: list of ``(rows, bias)`` float32 tensors, ``(block, dim)``
            and ``(block,)``: rows L2-normalised for cosine; the bias added to
            ``q . g`` is ``-||g||^2`` for Euclidean, 0 otherwise, and
            ``-inf`` on the padding rows.
        size: the number of gallery rows (without the padding).
        block: rows per block.
        dim: the row width.
        metric: the metric the rows were prepared for.
    """

    def __init__(self, blocks, size, block, dim, metric):
        self.blocks = blocks
        self.size = size
        self.block = block
        self.dim = dim
        self.metric = metric


def _bucket(n):
    """The power of two at or above ``n``: shapes in buckets, so that few steps are compiled."""
    return 1 << max(int(n) - 1, 0).bit_length()


def block_size(size, gallery_block):
    """Rows per gallery block: at most ``gallery_block``, the gallery cut in equal blocks.

    The fewest blocks of at most ``gallery_block`` rows, each rounded up to a
    multiple of 1024 rows where that stays within ``gallery_block`` (little
    padding, few compiled shapes).
    """
    count = max(1, -(-size // gallery_block))
    rows = max(1, -(-size // count))
    rounded = -(-rows // 1024) * 1024
    return rounded if rounded <= gallery_block else rows


def gallery_blocks(gallery, metric="cosine", block=65536):
    """The gallery ``(m, dim)`` as device blocks of ``block`` rows for :func:`search_blocks`."""
    _check(metric, 1, 1, block)
    gallery = _rows(gallery, "gallery")
    size, dim = int(gallery.shape[0]), int(gallery.shape[1])
    if metric == "cosine":
        gallery = _normalize(gallery)
    blocks = []
    for start in range(0, size, block):
        rows = gallery[start:start + block]
        real = int(rows.shape[0])
        bias = -ops.sum(ops.square(rows), axis=1) if metric == "euclidean" else ops.zeros((real,))
        if real < block:  # pad the last block: one compiled step for every block
            rows = ops.concatenate([rows, ops.zeros((block - real, dim), "float32")], axis=0)
            bias = ops.concatenate([bias, ops.full((block - real,), -np.inf, "float32")], axis=0)
        blocks.append((rows, bias))
    return GalleryBlocks(blocks, size, block, dim, metric)


def _block_scores(queries, rows, bias, metric):
    """``(n, block)`` scores, larger is closer (``-inf`` on padding rows)."""
    scores = ops.matmul(queries, ops.transpose(rows))
    if metric == "euclidean":
        scores = 2.0 * scores
    return scores + bias[None, :]


def _take(x, indices):
    return ops.take_along_axis(x, indices, axis=1)


def _tied_top_k(scores, k, kth):
    """The ``k`` best of each row, ties at the ``k``-th score (``kth``, ``(n,)``) taken in position order.

    Returns their positions in increasing order. Every score above the
    ``k``-th best is in; of those equal to it, the ones of lowest position
    fill the remaining places.
    """
    kth = kth[:, None]
    above = scores > kth
    tied = ops.cast(scores == kth, "int32")
    room = k - ops.sum(ops.cast(above, "int32"), axis=1, keepdims=True)
    chosen = above | ((ops.cumsum(tied, axis=1) <= room) & (tied > 0))
    width = scores.shape[1]
    # Exactly k chosen, each keyed by a distinct positive number that falls with its position
    # (float32, exact below 2^24 rows: XLA's CPU top_k of int32 is a full sort, ~100x slower).
    key = ops.where(chosen, width - ops.arange(width, dtype="float32")[None, :], 0.0)
    return ops.top_k(key, k)[1]


def _step(best, best_positions, queries, exclude, rows, bias, offset, *, k, metric, excluding):
    """Merge one gallery block into the running top-``k`` of a query chunk."""
    scores = _block_scores(queries, rows, bias, metric)
    width = scores.shape[1]
    if excluding:
        positions = offset + ops.arange(width, dtype="int32")
        scores = ops.where(positions[None, :] == exclude[:, None], -np.inf, scores)
    if width > k:
        # The block's best k + 1: a superset of its best k whichever tied rows top_k keeps at
        # the (k+1)-th place, since k rows beat that one. (Reductions, not slices, of top_k's
        # outputs: XLA turns a sliced top_k into a full sort.)
        values, found = ops.top_k(scores, k + 1)
        column = ops.arange(k + 1)[None, :]
        kth = ops.min(ops.where(column < k, values, np.inf), axis=1)
        after = ops.min(values, axis=1)
        # A tie across the k-th place: which tied rows top_k keeps is the backend's choice.
        tie = ops.any((kth == after) & (after > -np.inf))
        found = ops.cond(
            tie,
            lambda: _tied_top_k(scores, k + 1, after),
            lambda: ops.sort(found, axis=1),
        )
    else:
        found = ops.broadcast_to(ops.arange(width, dtype="int32")[None, :], (scores.shape[0], width))
    # Running best first (lower positions), the block's in position order: a stable sort by
    # score then breaks every tie by the lower position.
    candidates = ops.concatenate([best, _take(scores, found)], axis=1)
    candidate_positions = ops.concatenate([best_positions, ops.cast(found, "int32") + offset], axis=1)
    order = ops.argsort(-candidates, axis=1)[:, :k]
    return _take(candidates, order), _take(candidate_positions, order)


_compiled_step = compiled(_step, static_argnames=("k", "metric", "excluding"))


def _distances(scores, queries, metric):
    if metric == "cosine":  # float32 cos of near-equal rows may exceed 1 by an ulp: never a negative distance
        return ops.maximum(1.0 - scores, 0.0)
    if metric == "dot":
        return -scores
    squared = ops.sum(ops.square(queries), axis=1, keepdims=True) - scores
    return ops.sqrt(ops.maximum(squared, 0.0))


def search_blocks(queries, blocks, k, *, query_block=1024, exclude=None):
    """The ``k`` nearest rows of prepared :class:`GalleryBlocks` for each query.

    Args:
        queries: ``(n, dim)`` float array or tensor.
        blocks: a :class:`GalleryBlocks` of at least ``k`` rows (``k + 1``
            where ``exclude`` is given); any block size.
        k: neighbours per query.
        query_block: queries per chunk.
        exclude: optional ``(n,)`` integer gallery position to leave out for
            each query (``-1``: none), e.g. the query itself in
            leave-one-out retrieval.

    Returns:
        ``(distances, indices)``: float32 ``(n, k)`` distances, nearest first,
        and int32 ``(n, k)`` gallery positions.
    """
    _check(blocks.metric, k, query_block, 1)
    queries = _rows(queries, "queries")
    n = int(queries.shape[0])
    if queries.shape[1] != blocks.dim:
        raise ValueError(
            f"nearest: expected queries of width {blocks.dim} like the gallery; received shape "
            f"{tuple(queries.shape)}."
        )
    needed = k + (exclude is not None)
    if needed > blocks.size:
        raise ValueError(
            f"nearest: k={k} neighbours need a gallery of at least {needed} rows; it has "
            f"{blocks.size}. Use a smaller k or add rows."
        )
    if blocks.metric == "cosine":
        queries = _normalize(queries)
    excluding = exclude is not None
    exclude = ops.full((n,), -1, "int32") if exclude is None else ops.cast(exclude, "int32")
    chunk = min(query_block, _bucket(n))
    found = _bucket(k)  # the best k of the best `found`: one compiled step for nearby k
    distances, indices = [], []
    for start in range(0, n, chunk):
        rows = queries[start:start + chunk]
        skip = exclude[start:start + chunk]
        real = int(rows.shape[0])
        if real < chunk:  # pad the last chunk: one compiled step for every chunk
            rows = ops.concatenate([rows, ops.zeros((chunk - real, blocks.dim), "float32")], axis=0)
            skip = ops.concatenate([skip, ops.full((chunk - real,), -1, "int32")], axis=0)
        best = ops.full((chunk, found), -np.inf, "float32")
        best_positions = ops.full((chunk, found), -1, "int32")
        for b, (gallery, bias) in enumerate(blocks.blocks):
            offset = ops.convert_to_tensor(b * blocks.block, "int32")
            best, best_positions = _compiled_step(
                best, best_positions, rows, skip, gallery, bias, offset,
                k=found, metric=blocks.metric, excluding=excluding,
            )
        distances.append(_distances(best[:real, :k], rows[:real], blocks.metric))
        indices.append(best_positions[:real, :k])
    if not distances:
        return ops.zeros((0, k), "float32"), ops.zeros((0, k), "int32")
    return ops.concatenate(distances, axis=0), ops.concatenate(indices, axis=0)


def nearest(queries, gallery, k, metric="cosine", *, query_block=1024, gallery_block=65536,
            exclude=None):
    """The ``k`` nearest gallery rows of each query, exact, in chunks (see the module docstring).

    Args:
        queries: ``(n, dim)`` float array or tensor.
        gallery: ``(m, dim)`` float array or tensor, ``m >= k``.
        k: neighbours per query.
        metric: ``"cosine"``, ``"euclidean"`` or ``"dot"``.
        query_block: queries per chunk.
        gallery_block: at most this many gallery rows per block (see
            :func:`block_size`).
        exclude: optional ``(n,)`` integer gallery position to leave out per
            query (``-1``: none).

    Returns:
        ``(distances, indices)``: float32 ``(n, k)``, smaller is closer,
        nearest first (ties: lower position first), and int32 ``(n, k)``
        positions into ``gallery``.

    Example:
        >>> import numpy as np
        >>> from keras import ops
        >>> gallery = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, 0.0]])
        >>> d, i = nearest([[2.0, 0.1]], gallery, k=3, metric="cosine")
        >>> ops.convert_to_numpy(i).tolist()  # rows 0 and 3 tie: the lower position first
        [[0, 3, 2]]
        >>> d, i = nearest([[2.0, 0.0]], gallery, k=2, metric="euclidean", gallery_block=2)
        >>> ops.convert_to_numpy(d).round(4).tolist(), ops.convert_to_numpy(i).tolist()
        ([[1.0, 1.0]], [[0, 3]])
    """
    _check(metric, k, query_block, gallery_block)
    gallery = _rows(gallery, "gallery")
    size = int(gallery.shape[0])
    blocks = gallery_blocks(gallery, metric, block_size(size, gallery_block))
    return search_blocks(queries, blocks, k, query_block=query_block, exclude=exclude)
