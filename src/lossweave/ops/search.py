"""Exact k-nearest-neighbour search in gallery blocks x query chunks, with ``keras.ops`` only.

:func:`nearest` answers the ``k`` nearest gallery rows of every query without
ever building a queries x gallery array. The gallery (a NumPy array on the
host, or a tensor) goes to the device one block of ``gallery_block`` rows at a
time, and each block is searched by every chunk of ``query_block`` queries,
whose running top-``k`` is merged with the block's best. Peak memory is the
gallery where it is kept, one gallery block on the device (as given and
prepared), the queries and one ``query_block x gallery_block`` block of float32
scores. The work runs on the device of the current backend (the GPU when there
is one), and each gallery block crosses to the device once per search (not once
per query chunk).

Two functions are compiled once per shape (``jax.jit`` on JAX,
``tf.function`` on TensorFlow; eager on PyTorch): the preparation of a block
(normalised for cosine, centred and with its ``-||g||^2 / 2`` for Euclidean)
and the search of one (query chunk, gallery block) pair. The last query chunk
and the last gallery block are padded to the full size, and the width of the
running top-``k`` is rounded up to a power of two above ``k``, so that a few
compiled steps serve every call.

Distances are **smaller is closer** for every metric:

* ``"cosine"``: ``1 - cos(q, g)`` (rows L2-normalised first);
* ``"euclidean"``: ``||q - g||_2``;
* ``"dot"``: ``-q . g`` (maximum inner product search).

Inside a step a block is ranked by a score, larger is closer, that costs one
matmul and one add: ``q . g`` (cosine on normalised rows, dot) or ``q . g -
||g||^2 / 2`` (Euclidean: ``||q||^2 / 2`` is the same for every gallery row of
a query), with both sides first centred on ``center`` (for Euclidean: the
distances do not change, and the float32 expansion loses less to
cancellation). The best of a block are found in two stages: the maximum of
each group of ``group`` consecutive scores, the best groups by their maximum
(``keras.ops.top_k``), then the best scores inside those groups; the best
``width`` scores always lie in the best ``width`` groups, so the answer is the
one of a plain ``top_k`` over the block, for less work.

**Ties** (equal float32 scores): the order of the answer is by score, then by
the lower gallery position. Which of several tied rows at the last place is
kept is ``keras.ops.top_k``'s choice: the lower position on JAX and TensorFlow
(their top-k is stable), unspecified on PyTorch. ``lossweave.retrieval.Index``
re-ranks the candidates in float64 on the host, with the lower-position rule on
every backend (see its docstring).

Float32 on the device (JAX without x64 has no float64).
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


def _shape(x, what):
    shape = tuple(int(s) for s in x.shape)
    if len(shape) != 2:
        raise ValueError(f"nearest: expected {what} of shape (n, dim); received shape {shape}.")
    return shape


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


def top_width(k):
    """Width of the running top-``k``: the power of two above ``k`` (one compiled step for nearby ``k``)."""
    return _bucket(k + 1)


def group_size(block, width):
    """Scores per group of the two-stage selection: 32, fewer where the block has under ``4 x width`` groups."""
    group = 32
    while group > 1 and (block % group or block // group < 4 * width):
        group //= 2
    return group


def _normalize(x):
    return x * ops.rsqrt(ops.maximum(ops.sum(ops.square(x), axis=1, keepdims=True), 1e-30))


def _prepare(rows, real, center, *, metric):
    """A block on the device: ``(rows, bias)``, ``bias`` ``-inf`` on the padding rows past ``real``."""
    rows = ops.cast(rows, "float32")
    if metric == "cosine":
        rows = _normalize(rows)
    elif metric == "euclidean":
        rows = rows - center[None, :]
    if metric == "euclidean":
        bias = -0.5 * ops.sum(ops.square(rows), axis=1)
    else:
        bias = ops.zeros((rows.shape[0],), "float32")
    bias = ops.where(ops.arange(rows.shape[0], dtype="int32") < real, bias, -np.inf)
    return rows, bias


def _prepare_queries(queries, center, *, metric):
    queries = ops.cast(queries, "float32")
    if metric == "cosine":
        return _normalize(queries)
    if metric == "euclidean":
        return queries - center[None, :]
    return queries


def _step(best, best_positions, queries, exclude, rows, bias, offset, *, width, group, excluding,
          biased):
    """Merge one gallery block into the running top-``width`` of a query chunk.

    The matmul's ``(chunk, block)`` output is the only array of that size
    where the block needs no bias (``biased=False``: cosine or dot, no
    padding); else the bias (and the excluded position) is added inside the
    reduction over each group, which XLA fuses, and again on the few
    candidates.
    """
    products = ops.matmul(queries, ops.transpose(rows))
    n, block = products.shape

    def adjusted(values, where):  # values at block positions `where`: + bias, -inf if excluded
        if biased:
            values = values + ops.take(bias, where)
        if excluding:
            values = ops.where(where + offset == exclude[:, None], -np.inf, values)
        return values

    if group > 1:
        # The best `width` scores lie in the `width` groups of best maxima: each group outside
        # holds nothing above its maximum, and `width` groups beat that maximum.
        grouped = ops.reshape(products, (n, block // group, group))
        scores = grouped + ops.reshape(bias, (1, block // group, group)) if biased else grouped
        if excluding:
            everywhere = ops.reshape(ops.arange(block, dtype="int32"), (1, block // group, group))
            scores = ops.where(everywhere + offset == exclude[:, None, None], -np.inf, scores)
        chosen = ops.sort(ops.top_k(ops.max(scores, axis=2), width)[1], axis=1)  # position order
        candidates = ops.reshape(ops.take_along_axis(grouped, chosen[:, :, None], axis=1),
                                 (n, width * group))
        within = ops.arange(group, dtype="int32")[None, None, :]
        positions = ops.reshape(ops.cast(chosen, "int32")[:, :, None] * group + within,
                                (n, width * group))
        candidates = adjusted(candidates, positions)
    else:
        scores = adjusted(products, ops.broadcast_to(ops.arange(block, dtype="int32")[None, :], (n, block)))
        candidates, positions = ops.top_k(scores, width)
        positions = ops.cast(positions, "int32")
    # The running best first: earlier blocks, lower positions (top_k is stable on JAX and TF).
    values, order = ops.top_k(ops.concatenate([best, candidates], axis=1), width)
    merged = ops.concatenate([best_positions, positions + offset], axis=1)
    return values, ops.take_along_axis(merged, order, axis=1)


def _in_order(values, positions):
    """Rows of ``(values, positions)`` sorted by value, larger first, ties by the lower position."""
    by_position = ops.argsort(positions, axis=1)
    values = ops.take_along_axis(values, by_position, axis=1)
    positions = ops.take_along_axis(positions, by_position, axis=1)
    order = ops.argsort(-values, axis=1)  # stable on every backend
    return ops.take_along_axis(values, order, axis=1), ops.take_along_axis(positions, order, axis=1)


_compiled_step = compiled(_step, static_argnames=("width", "group", "excluding", "biased"))
_compiled_prepare = compiled(_prepare, static_argnames=("metric",))
_compiled_queries = compiled(_prepare_queries, static_argnames=("metric",))
_compiled_order = compiled(_in_order)


def top_scores(queries, gallery, width, metric="cosine", *, center=None, query_block=1024,
               gallery_block=65536, exclude=None):
    """The ``width`` best scores (larger is closer) of each query and their gallery positions.

    The engine under :func:`nearest` and ``lossweave.retrieval.Index``; see
    the module docstring for the score of each metric and what is on the
    device when.

    Args:
        queries: ``(n, dim)`` float NumPy array or tensor.
        gallery: ``(m, dim)`` float NumPy array (kept on the host, sent one
            block at a time) or tensor.
        width: scores per query, at most ``m``.
        metric: ``"cosine"``, ``"euclidean"`` or ``"dot"``.
        center: ``(dim,)`` point both sides are centred on (Euclidean only;
            the gallery mean by default).
        query_block: queries per chunk.
        gallery_block: at most this many gallery rows per block (see
            :func:`block_size`).
        exclude: optional ``(n,)`` integer gallery position to leave out for
            each query (``-1``: none).

    Returns:
        ``(scores, positions, queries)``: NumPy float32 ``(n, width)`` scores
        (``-inf`` past the rows that exist), int64 ``(n, width)`` positions,
        larger score first, ties by the lower position, and the prepared
        queries as the device saw them (NumPy float32: normalised for cosine,
        centred for Euclidean).
    """
    _check(metric, width, query_block, gallery_block)
    n, dim = _shape(queries, "queries")
    size, gallery_dim = _shape(gallery, "gallery")
    if dim != gallery_dim:
        raise ValueError(
            f"nearest: expected queries of width {gallery_dim} like the gallery; received shape "
            f"{(n, dim)}."
        )
    if width > size:
        raise ValueError(
            f"nearest: {width} neighbours need a gallery of at least {width} rows; it has {size}. "
            "Use a smaller k or add rows."
        )
    if metric == "euclidean" and center is None:
        center = np.mean(ops.convert_to_numpy(gallery), axis=0, dtype="float64")
    center = ops.convert_to_tensor(np.zeros(dim) if center is None else center, "float32")
    block = max(block_size(size, gallery_block), width)
    group = group_size(block, width)
    chunk = min(query_block, _bucket(max(n, 1)))
    chunks = -(-n // chunk)
    excluding = exclude is not None
    skip = np.full((chunks * chunk,), -1, "int32")
    if excluding:
        skip[:n] = np.asarray(ops.convert_to_numpy(exclude), "int32")
    padded = np.zeros((chunks * chunk, dim), "float32")
    padded[:n] = ops.convert_to_numpy(queries)
    prepared = [_compiled_queries(ops.convert_to_tensor(padded[i * chunk:(i + 1) * chunk]), center,
                                  metric=metric) for i in range(chunks)]
    skips = [ops.convert_to_tensor(skip[i * chunk:(i + 1) * chunk]) for i in range(chunks)]
    best = [ops.full((chunk, width), -np.inf, "float32") for _ in range(chunks)]
    positions = [ops.full((chunk, width), -1, "int32") for _ in range(chunks)]
    for start in range(0, size, block):
        rows = gallery[start:start + block]
        real = int(rows.shape[0])
        if real < block:  # pad the last block: one compiled step for every block
            rows = ops.concatenate([ops.convert_to_tensor(rows, "float32"),
                                    ops.zeros((block - real, dim), "float32")], axis=0)
        rows, bias = _compiled_prepare(ops.convert_to_tensor(rows, "float32"),
                                       ops.convert_to_tensor(real, "int32"), center, metric=metric)
        offset = ops.convert_to_tensor(start, "int32")
        for i in range(chunks):
            best[i], positions[i] = _compiled_step(
                best[i], positions[i], prepared[i], skips[i], rows, bias, offset,
                width=width, group=group, excluding=excluding,
                biased=metric == "euclidean" or real < block,
            )
    scores = np.zeros((chunks * chunk, width), "float32")
    found = np.zeros((chunks * chunk, width), "int64")
    prepared_queries = np.zeros((chunks * chunk, dim), "float32")
    for i in range(chunks):
        values, where = _compiled_order(best[i], positions[i])
        scores[i * chunk:(i + 1) * chunk] = ops.convert_to_numpy(values)
        found[i * chunk:(i + 1) * chunk] = ops.convert_to_numpy(where)
        prepared_queries[i * chunk:(i + 1) * chunk] = ops.convert_to_numpy(prepared[i])
    return scores[:n], found[:n], prepared_queries[:n]


def distances_of(scores, prepared_queries, metric):
    """Distances (smaller is closer) of :func:`top_scores`' scores, NumPy float32."""
    scores = np.asarray(scores, "float32")
    if metric == "cosine":  # float32 cos of near-equal rows may exceed 1 by an ulp: never negative
        return np.maximum(1.0 - scores, 0.0)
    if metric == "dot":
        return -scores
    norms = np.sum(np.square(prepared_queries), axis=1, keepdims=True)
    return np.sqrt(np.maximum(norms - 2.0 * scores, 0.0)).astype("float32")


def nearest(queries, gallery, k, metric="cosine", *, query_block=1024, gallery_block=65536,
            exclude=None):
    """The ``k`` nearest gallery rows of each query, exact in float32, in blocks (see the module docstring).

    Args:
        queries: ``(n, dim)`` float array or tensor.
        gallery: ``(m, dim)`` float array or tensor, ``m >= k`` (``k + 1``
            with ``exclude``). A NumPy gallery stays on the host and goes to
            the device one block at a time.
        k: neighbours per query.
        metric: ``"cosine"``, ``"euclidean"`` or ``"dot"``.
        query_block: queries per chunk.
        gallery_block: at most this many gallery rows per block (see
            :func:`block_size`).
        exclude: optional ``(n,)`` integer gallery position to leave out per
            query (``-1``: none).

    Returns:
        ``(distances, indices)``: NumPy float32 ``(n, k)``, smaller is closer,
        nearest first (equal scores: lower position first), and int64
        ``(n, k)`` positions into ``gallery``.

    Example:
        >>> import numpy as np
        >>> gallery = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, 0.0]])
        >>> d, i = nearest([[2.0, 0.1]], gallery, k=3, metric="cosine")
        >>> i.tolist()  # rows 0 and 3 tie: the lower position first
        [[0, 3, 2]]
        >>> d, i = nearest([[2.0, 0.0]], gallery, k=2, metric="euclidean", gallery_block=2)
        >>> d.round(4).tolist(), i.tolist()
        ([[1.0, 1.0]], [[0, 3]])
    """
    _check(metric, k, query_block, gallery_block)
    queries = ops.convert_to_numpy(queries).astype("float32")
    if not hasattr(gallery, "shape"):  # a list: kept on the host like an array
        gallery = np.asarray(gallery, "float32")
    size = _shape(gallery, "gallery")[0]
    needed = k + (exclude is not None)
    if needed > size:
        raise ValueError(
            f"nearest: k={k} neighbours need a gallery of at least {needed} rows; it has "
            f"{size}. Use a smaller k or add rows."
        )
    width = min(top_width(k), size)
    scores, positions, prepared = top_scores(queries, gallery, width, metric,
                                             query_block=query_block, gallery_block=gallery_block,
                                             exclude=exclude)
    return distances_of(scores[:, :k], prepared, metric), positions[:, :k]
