"""An index of reference embeddings: add, search the ``k`` nearest, remove, save and load.

The exact search is :func:`lossweave.ops.search.top_scores`': ``keras.ops`` on
the current backend's device, the stored rows sent one gallery block
(``gallery_block`` rows) at a time and searched by every chunk of
``query_block`` queries with a running top-``k``, so that memory is the one
copy of the stored rows on the host plus O(query_block x gallery_block), never
queries x gallery. Its float32 candidates are then re-ranked exactly in
float64 on the host (:func:`rerank`). The FAISS backends (``pip install
"lossweave[faiss]"``) answer the same calls on the CPU: ``"faiss-flat"``
(exact), ``"faiss-ivf"`` and ``"faiss-hnsw"`` (approximate).
"""

import io
import json

import numpy as np

from lossweave import arguments
from lossweave.ops import search as chunked
from lossweave.retrieval import faiss_search

METRICS = chunked.METRICS
BACKENDS = ("exact", *faiss_search.KINDS)
DTYPES = ("float32", "float64")
# Float32 rounding (unit roundoff 2^-24) of a score on the device, per unit of its scale and per
# term of its dot product, with a safety factor of 4 (normalisation, centring, the bias).
_ROUNDOFF = 4.0 * 2.0 ** -24
_OWNER = "Index"
_FORMAT = 1


class SearchResult:
    """What :meth:`Index.search` returns: the ``k`` nearest stored rows of each query, nearest first.

    Attributes:
        distances: ``(n, k)`` float32, smaller is closer (see :class:`Index`).
        indices: ``(n, k)`` int64 positions into the stored rows
            (``index.embeddings[indices]``); ``-1`` where an approximate
            backend found fewer than ``k``.
        labels: ``(n, k)`` labels of those rows, or None if the index has no
            labels.
        ids: ``(n, k)`` int64 ids of those rows (``-1`` where the position
            is ``-1``).
    """

    def __init__(self, distances, indices, labels, ids):
        self.distances = distances
        self.indices = indices
        self.labels = labels
        self.ids = ids

    def __iter__(self):  # distances, indices, labels, ids = index.search(queries, k)
        return iter((self.distances, self.indices, self.labels, self.ids))

    def __repr__(self):
        n, k = self.distances.shape
        return f"SearchResult({n} queries x {k} neighbours, labels={self.labels is not None})"


class Index:
    """Reference embeddings with labels and ids, searched for the ``k`` nearest of each query.

    Distances are **smaller is closer** for every metric: ``"cosine"`` gives
    ``1 - cos(q, r)`` (rows L2-normalised; a zero row is refused),
    ``"euclidean"`` the L2 distance ``||q - r||`` and ``"dot"`` the negated
    inner product ``-q . r`` (maximum inner product search).

    ``backend="exact"`` searches on the device of the current Keras backend
    with ``keras.ops`` (:mod:`lossweave.ops.search`) in float32: the stored
    rows stay on the host, one copy, and go to the device one block at a time
    (memory O(gallery + query_block x gallery_block)). The candidates it finds
    are **re-ranked exactly in float64** on the host (:func:`rerank`), with
    **ties broken by the lower stored position** on every backend: the answer
    is that of a float64 brute force over the stored rows (scikit-learn's
    ``NearestNeighbors`` on the same rows), also where neighbours differ below
    float32's resolution. Store float64 rows (``dtype="float64"``) to rank
    float64 embeddings exactly; float32 (the default) halves the memory. The FAISS backends need ``faiss-cpu``
    (``pip install "lossweave[faiss]"``): ``"faiss-flat"`` is exact,
    ``"faiss-ivf"`` (``nlist`` lists, ``nprobe`` probed) and ``"faiss-hnsw"``
    (``hnsw_m`` links, ``ef_construction``, ``ef_search``) are approximate;
    their ties follow FAISS. A FAISS index is built at the first search after
    a change (IVF trains on the stored rows then).

    Rows are kept in the order they were added (``remove`` closes the gaps);
    ``indices`` of a search are positions into that order and ``ids`` are
    the stable names of the rows (running integers unless given). An ``add``
    that fails (NaN/Inf rows, another width, labels or ids of the wrong
    length, an id already stored) raises and leaves the index as it was.

    ``save(path)`` writes one ``.npz`` file (rows, labels, ids, settings and a
    built FAISS index); keep it beside the model, e.g. ``model.keras`` and
    ``model.index.npz``: the ``.keras`` file holds the network that makes the
    embeddings, the index the references it searches. ``Index.load(path)``
    answers the same searches.

    This is the ``index`` / ``lookup`` of TensorFlow Similarity
    (``tensorflow_similarity.indexer.Indexer``) rebuilt on Keras 3; unlike it,
    the exact search is chunked on the device instead of an NMSLib or FAISS
    graph in host memory, and labels may be any integers or strings.

    Args:
        metric: ``"cosine"``, ``"euclidean"`` or ``"dot"``.
        backend: ``"exact"``, ``"faiss-flat"``, ``"faiss-ivf"`` or ``"faiss-hnsw"``.
        query_block: queries per chunk of the exact search.
        gallery_block: stored rows per block of the exact search (at most).
        dtype: ``"float32"`` or ``"float64"``, how the rows are stored on
            the host (and re-ranked from); the device searches in float32.
        nlist: IVF lists (at most one per 39 stored rows).
        nprobe: IVF lists probed per query.
        hnsw_m: HNSW links per node.
        ef_construction: HNSW build-time search width.
        ef_search: HNSW query-time search width.
        seed: seed of IVF's k-means.

    Example:
        >>> index = Index(metric="cosine")
        >>> index.add([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], labels=["cat", "dog", "fox"])
        >>> result = index.search([[0.9, 0.2]], k=2)
        >>> result.labels.tolist(), result.ids.tolist()
        ([['cat', 'fox']], [[0, 2]])
        >>> [round(float(d), 3) for d in result.distances[0]]  # 1 - cos
        [0.024, 0.156]
        >>> index.remove([0])
        >>> len(index), index.search([[0.9, 0.2]], k=1).labels.tolist()
        (2, [['fox']])
    """

    def __init__(self, metric="cosine", backend="exact", query_block=1024, gallery_block=65536,
                 nlist=100, nprobe=8, hnsw_m=32, ef_construction=64, ef_search=64, seed=0,
                 dtype="float32"):
        self.metric = arguments.choice(metric, METRICS, "metric", _OWNER)
        self.backend = arguments.choice(backend, BACKENDS, "backend", _OWNER)
        self.query_block = arguments.positive_int(query_block, "query_block", _OWNER)
        self.gallery_block = arguments.positive_int(gallery_block, "gallery_block", _OWNER)
        self.dtype = arguments.choice(dtype, DTYPES, "dtype", _OWNER)
        self.nlist = arguments.positive_int(nlist, "nlist", _OWNER)
        self.nprobe = arguments.positive_int(nprobe, "nprobe", _OWNER)
        self.hnsw_m = arguments.positive_int(hnsw_m, "hnsw_m", _OWNER)
        self.ef_construction = arguments.positive_int(ef_construction, "ef_construction", _OWNER)
        self.ef_search = arguments.positive_int(ef_search, "ef_search", _OWNER)
        self.seed = arguments.integer(seed, "seed", _OWNER)
        if self.backend != "exact":
            faiss_search.import_faiss()  # say what to install now, not at the first search
        self._embeddings = None
        self._labels = None
        self._ids = np.zeros((0,), "int64")
        self._next_id = 0
        self._searcher = None  # the exact search's statistics or a FAISS index, rebuilt after a change

    # ------------------------------------------------------------------ state
    def __len__(self):
        return 0 if self._embeddings is None else int(self._embeddings.shape[0])

    @property
    def dim(self):
        """Width of the stored rows (None before the first ``add``)."""
        return None if self._embeddings is None else int(self._embeddings.shape[1])

    @property
    def embeddings(self):
        """``(len, dim)`` stored rows (``dtype``), as added (not normalised)."""
        return self._embeddings if self._embeddings is not None else np.zeros((0, 0), self.dtype)

    @property
    def labels(self):
        """``(len,)`` labels of the stored rows, or None when the index has none."""
        return self._labels

    @property
    def ids(self):
        """``(len,)`` int64 ids of the stored rows."""
        return self._ids

    def get_config(self):
        return {
            "metric": self.metric, "backend": self.backend, "query_block": self.query_block,
            "gallery_block": self.gallery_block, "nlist": self.nlist, "nprobe": self.nprobe,
            "hnsw_m": self.hnsw_m, "ef_construction": self.ef_construction,
            "ef_search": self.ef_search, "seed": self.seed, "dtype": self.dtype,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"Index(metric={self.metric!r}, backend={self.backend!r}, rows={len(self)}, dim={self.dim})"

    # ------------------------------------------------------------- add/remove
    def add(self, embeddings, labels=None, ids=None):
        """Store rows (with their labels and ids); on any error nothing is stored.

        Args:
            embeddings: ``(n, dim)`` finite numbers (NumPy or array-like);
                ``dim`` as the rows already stored.
            labels: ``(n,)`` integers or strings; required when the index
                has labels, refused when it has rows without.
            ids: ``(n,)`` distinct integers not already stored; running
                integers when None.

        Raises:
            ValueError: what is wrong and how to fix it.
        """
        rows = self._check_rows(embeddings, "embeddings")
        n = rows.shape[0]
        labels = self._check_labels(labels, n)
        ids = self._check_ids(ids, n)
        # Every check passed: now change the state.
        self._embeddings = rows if self._embeddings is None else np.concatenate([self._embeddings, rows])
        if labels is not None:
            self._labels = labels if self._labels is None else np.concatenate([self._labels, labels])
        self._ids = np.concatenate([self._ids, ids])
        self._next_id = max(self._next_id, int(ids.max()) + 1) if n else self._next_id
        self._searcher = None

    def remove(self, ids):
        """Remove the rows of ``ids`` (every one must be stored); the others keep their order.

        Raises:
            ValueError: an id that is not stored (nothing is removed then).
        """
        ids = self._as_ids(ids, "ids")
        missing = np.setdiff1d(ids, self._ids)
        if missing.size:
            raise ValueError(
                f"Index.remove: {missing.size} of the {ids.size} ids are not stored (e.g. "
                f"{missing[:5].tolist()}); nothing was removed. Stored ids: index.ids."
            )
        keep = ~np.isin(self._ids, ids)
        self._embeddings = self._embeddings[keep]
        self._ids = self._ids[keep]
        if self._labels is not None:
            self._labels = self._labels[keep]
        self._searcher = None

    def _check_rows(self, embeddings, name):
        rows = np.asarray(embeddings)
        if rows.dtype == object or not (np.issubdtype(rows.dtype, np.number) or rows.dtype == bool):
            raise ValueError(f"Index: expected numeric {name}; received dtype {rows.dtype}.")
        if rows.ndim == 1 and rows.size == 0:
            rows = rows.reshape(0, self.dim or 0)
        if rows.ndim != 2:
            raise ValueError(
                f"Index: expected {name} of shape (n, dim); received shape {rows.shape}. "
                "Add a batch axis for a single row (x[None, :])."
            )
        if self.dim is not None and rows.shape[1] != self.dim:
            raise ValueError(
                f"Index: expected {name} of width {self.dim} like the stored rows; received shape "
                f"{rows.shape}. Use the same model (and layer) for the references and the queries."
            )
        with np.errstate(over="ignore", invalid="ignore"):
            rows = rows.astype(self.dtype)  # a copy: the index owns its rows
        finite = np.all(np.isfinite(rows.astype("float32", copy=False)), axis=1)
        if not finite.all():
            raise ValueError(
                f"Index: {name} contain NaN or infinite values (in float32) in "
                f"{int(np.sum(~finite))} of {rows.shape[0]} rows, e.g. row "
                f"{int(np.argmin(finite))}; nothing was added. Drop or fix those rows."
            )
        if self.metric == "cosine" and rows.shape[0]:
            zero = ~np.any(rows != 0, axis=1)
            if zero.any():
                raise ValueError(
                    f"Index: metric='cosine' needs non-zero {name}, but {int(zero.sum())} rows are "
                    "all zeros (no direction); nothing was added. Use metric='euclidean' or drop them."
                )
        return rows

    def _check_labels(self, labels, n):
        if labels is None:
            if self._labels is not None:
                raise ValueError(
                    f"Index.add: the stored rows have labels, so these {n} need labels too; "
                    "received labels=None."
                )
            return None
        if len(self) and self._labels is None:
            raise ValueError(
                "Index.add: the stored rows have no labels, so new rows cannot have them; create "
                "the index with labels from the first add, or add these without labels."
            )
        labels = np.asarray(labels)
        if labels.ndim == 2 and labels.shape[1] == 1:
            labels = labels[:, 0]
        if labels.ndim != 1 or labels.shape[0] != n:
            raise ValueError(
                f"Index.add: expected one label per row ({n},); received labels of shape "
                f"{labels.shape}."
            )
        if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype.kind in "U"):
            raise ValueError(
                f"Index.add: expected integer or string labels; received dtype {labels.dtype}."
            )
        if self._labels is not None and (labels.dtype.kind == "U") != (self._labels.dtype.kind == "U"):
            raise ValueError(
                f"Index.add: received {labels.dtype} labels, but the stored labels are "
                f"{self._labels.dtype}; use one kind (integers or strings)."
            )
        return labels.astype("int64") if labels.dtype.kind != "U" else labels

    @staticmethod
    def _as_ids(ids, what):
        ids = np.asarray(ids)
        if ids.ndim == 0:
            ids = ids[None]
        if ids.ndim != 1 or (ids.size and not np.issubdtype(ids.dtype, np.integer)):
            raise ValueError(
                f"Index: expected {what} as a 1-D array of integers; received shape {ids.shape} "
                f"and dtype {ids.dtype}."
            )
        return ids.astype("int64")

    def _check_ids(self, ids, n):
        if ids is None:
            return np.arange(self._next_id, self._next_id + n, dtype="int64")
        ids = self._as_ids(ids, "ids")
        if ids.shape[0] != n:
            raise ValueError(f"Index.add: expected one id per row ({n}); received {ids.shape[0]} ids.")
        unique, counts = np.unique(ids, return_counts=True)
        if np.any(counts > 1):
            raise ValueError(
                f"Index.add: ids must be distinct; received {unique[counts > 1][:5].tolist()} more "
                "than once. Nothing was added."
            )
        taken = np.intersect1d(ids, self._ids)
        if taken.size:
            raise ValueError(
                f"Index.add: ids {taken[:5].tolist()} are already stored; remove them first or "
                "pick new ids. Nothing was added."
            )
        return ids

    # ----------------------------------------------------------------- search
    def search(self, queries, k, *, exclude=None):
        """The ``k`` nearest stored rows of each query, nearest first.

        Args:
            queries: ``(n, dim)`` finite numbers.
            k: neighbours per query, at most ``len(index)`` (``len - 1``
                with ``exclude``).
            exclude: optional ``(n,)`` stored position to leave out for each
                query (``-1``: none), e.g. the query itself when the stored
                rows are searched with themselves (leave-one-out).

        Returns:
            A :class:`SearchResult`.

        Raises:
            ValueError: an empty index, ``k`` larger than the stored rows,
                queries of another width, NaN/Inf queries.
        """
        k = arguments.positive_int(k, "k", "Index.search")
        if not len(self):
            raise ValueError("Index.search: the index is empty; add reference rows first.")
        queries = self._check_rows(queries, "queries")
        n = queries.shape[0]
        needed = k + (exclude is not None)
        if needed > len(self):
            raise ValueError(
                f"Index.search: k={k} neighbours{' besides the excluded row' if exclude is not None else ''} "
                f"need at least {needed} stored rows; the index has {len(self)}. Use a smaller k or "
                "add rows."
            )
        if exclude is not None:
            exclude = self._as_ids(exclude, "exclude")
            if exclude.shape[0] != n:
                raise ValueError(
                    f"Index.search: expected one excluded position per query ({n}); received "
                    f"{exclude.shape[0]}."
                )
        if self.backend == "exact":
            distances, indices = self._exact(queries, k, exclude)
        else:
            distances, indices = self._faiss(queries, k, exclude)
        return self._result(distances, indices)

    def _statistics(self):
        """``(center, largest norm, rounding)`` of the stored rows (cached until they change).

        ``center`` (float32, as the device uses it) is the mean for Euclidean
        and 0 otherwise; the largest norm of the rows about it bounds the
        float32 error of a score (:func:`rerank`), and so does ``rounding``,
        the largest norm of the rows themselves, where float64 rows are
        rounded to float32 before they are centred (0 otherwise).
        """
        if self._searcher is None:
            rows = self._embeddings
            center = np.zeros(rows.shape[1], "float32")
            if self.metric == "euclidean":
                center = np.mean(rows, axis=0, dtype="float64").astype("float32")
            squares, raw = 0.0, 0.0
            for start in range(0, len(rows), 65536):  # no float64 copy of every row at once
                block = rows[start:start + 65536].astype("float64")  # a copy: never centre the rows
                raw = max(raw, float(np.max(np.einsum("ij,ij->i", block, block))))
                block -= center
                squares = max(squares, float(np.max(np.einsum("ij,ij->i", block, block))))
            rounding = np.sqrt(raw) if self.metric == "euclidean" and self.dtype == "float64" else 0.0
            self._searcher = (center, float(np.sqrt(squares)), float(rounding))
        return self._searcher

    def _exact(self, queries, k, exclude):
        """The float32 search on the device, then :func:`rerank`, widened where not yet exact."""
        center, norm, rounding = self._statistics()
        size = len(self)
        distances = np.zeros((queries.shape[0], k), "float32")
        indices = np.zeros((queries.shape[0], k), "int64")
        todo = np.arange(queries.shape[0])
        width = min(chunked.top_width(k + max(4, k // 2)), size)
        while todo.size:
            skip = None if exclude is None else exclude[todo]
            scores, positions, prepared = chunked.top_scores(
                queries[todo], self._embeddings, width, self.metric, center=center,
                query_block=self.query_block, gallery_block=self.gallery_block, exclude=skip,
            )
            d, i, exact = rerank(queries[todo], self._embeddings, scores, positions, k, self.metric,
                                 center, norm, rounding=rounding, everything=width == size)
            distances[todo[exact]], indices[todo[exact]] = d[exact], i[exact]
            todo = todo[~exact]
            width = min(4 * width, size)
        return distances, indices

    def _faiss(self, queries, k, exclude):
        if self._searcher is None:
            self._searcher = faiss_search.build(
                self._embeddings, self.metric, self.backend, nlist=self.nlist, nprobe=self.nprobe,
                hnsw_m=self.hnsw_m, ef_construction=self.ef_construction,
                ef_search=self.ef_search, seed=self.seed,
            )
        if exclude is None:
            return faiss_search.search(self._searcher, queries, k, self.metric)
        distances, indices = faiss_search.search(self._searcher, queries, k + 1, self.metric)
        # Drop the excluded position where it was found, else the (k+1)-th.
        drop = indices == exclude[:, None]
        drop[:, -1] |= ~drop.any(axis=1)
        keep = ~drop
        return (distances[keep].reshape(-1, k), indices[keep].reshape(-1, k))

    def _result(self, distances, indices):
        found = indices >= 0
        safe = np.where(found, indices, 0)
        ids = np.where(found, self._ids[safe], -1)
        labels = None
        if self._labels is not None:
            labels = self._labels[safe]
            if not found.all():
                labels = np.where(found, labels, "" if labels.dtype.kind == "U" else -1)
        return SearchResult(distances.astype("float32"), indices, labels, ids)

    # -------------------------------------------------------------- save/load
    def save(self, path):
        """Write the index to one ``.npz`` file at ``path`` (the name is kept as given).

        Keep it beside the model that makes the embeddings (``model.keras``
        and ``model.index.npz``); :meth:`load` reads it back.
        """
        arrays = {
            "config": np.array(json.dumps({"format": _FORMAT, "config": self.get_config(),
                                           "next_id": self._next_id, "dim": self.dim})),
            "embeddings": self.embeddings,
            "ids": self._ids,
        }
        if self._labels is not None:
            arrays["labels"] = self._labels
        if self.backend != "exact" and len(self):
            if self._searcher is None:
                self._faiss(self._embeddings[:1], 1, None)
            arrays["faiss"] = faiss_search.serialize(self._searcher)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        with open(path, "wb") as handle:
            handle.write(buffer.getvalue())

    @classmethod
    def load(cls, path):
        """The index that :meth:`save` wrote to ``path``."""
        with np.load(path, allow_pickle=False) as data:
            header = json.loads(str(data["config"]))
            if header.get("format") != _FORMAT:
                raise ValueError(
                    f"Index.load: {path} has format {header.get('format')!r}; this lossweave reads "
                    f"format {_FORMAT}."
                )
            index = cls.from_config(header["config"])
            if header["dim"] is not None:
                index._embeddings = data["embeddings"].astype(index.dtype)
            index._ids = data["ids"].astype("int64")
            index._labels = data["labels"] if "labels" in data else None
            index._next_id = int(header["next_id"])
            if "faiss" in data:
                index._searcher = faiss_search.deserialize(data["faiss"])
        return index


def rerank(queries, rows, scores, positions, k, metric, center, norm, *, rounding=0.0,
           everything=False, chunk=256):
    """The exact ``k`` nearest of each query among float32 candidates, re-ranked in float64 on the host.

    The device's float32 scores ``s`` (larger is closer: ``q.r`` on
    normalised rows for cosine, ``q.r - ||r||^2 / 2`` about ``center`` for
    Euclidean, ``q.r`` for dot; :mod:`lossweave.ops.search`) of the best
    ``width`` rows of each query are recomputed in float64 from the stored
    rows, and the candidates are sorted by their float64 distance, ties by
    the lower stored position. Distances are computed as scikit-learn's
    ``NearestNeighbors`` computes them: the Euclidean norm of the difference
    (of the L2-normalised rows for cosine, where ``1 - cos = ||a - b||^2 /
    2``), so that nearly coincident rows are told apart.

    The answer is **exact** for a query when its ``k``-th float64 score
    exceeds its last candidate's float32 score by more than the float32
    error bound ``tol = 4 u (dim + 16) scale`` (``u = 2^-24``; ``scale`` is
    1 for cosine, ``||q|| N`` for dot and ``||q|| N + N^2 / 2`` for
    Euclidean, ``N`` the largest row norm about ``center``, plus ``(||q|| + N)
    R + N ||q||`` where float64 rows of largest norm ``R`` are rounded to
    float32 before they are centred; Higham, "Accuracy
    and Stability of Numerical Algorithms", 2002, Eq. 3.5 for the dot
    product): every row left out scored at most the last candidate in float32,
    so at most ``tol`` more in exact arithmetic, and ``k`` candidates beat
    that. ``Index.search`` searches again, wider, for the other queries.

    Args:
        queries: ``(n, dim)`` queries as given (float32 or float64).
        rows: ``(m, dim)`` stored rows.
        scores: ``(n, width)`` float32 device scores, larger first (``-inf``:
            no row).
        positions: ``(n, width)`` their positions into ``rows``.
        k: neighbours to return, ``k <= width``.
        metric: ``"cosine"``, ``"euclidean"`` or ``"dot"``.
        center: ``(dim,)`` float32 centre of the Euclidean scores.
        norm: ``N``, the largest norm of ``rows - center``.
        rounding: ``R``, the largest norm of ``rows`` (Euclidean on float64
            rows), else 0.
        everything: the candidates are every row (exact whatever the bound).
        chunk: queries re-ranked at a time (memory ``chunk x width x dim``
            float64).

    Returns:
        ``(distances, indices, exact)``: float32 ``(n, k)`` distances,
        nearest first, int64 ``(n, k)`` positions, and a bool ``(n,)``: the
        answer is proven exact.
    """
    n, width = scores.shape
    dim = rows.shape[1]
    distances = np.zeros((n, k), "float32")
    indices = np.zeros((n, k), "int64")
    exact = np.zeros((n,), bool)
    center = np.asarray(center, "float64")
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        q = np.asarray(queries[start:stop], "float64")
        found = scores[start:stop] > -np.inf
        r = rows[np.where(found, positions[start:stop], 0)]  # (chunk, width, dim), as stored
        if metric == "cosine":
            q = q / np.sqrt(np.einsum("nd,nd->n", q, q))[:, None]
            r = r / np.sqrt(np.einsum("nwd,nwd->nw", r, r, dtype="float64"))[:, :, None]
        if metric == "dot":
            key = -np.einsum("nd,nwd->nw", q, r, dtype="float64")
            score = -key
            scale = np.sqrt(np.einsum("nd,nd->n", q, q)) * norm
        else:
            difference = q[:, None, :] - r  # float64; a difference, not an expansion
            key = np.sqrt(np.einsum("nwd,nwd->nw", difference, difference))  # ||q - r||
            if metric == "cosine":
                score = 1.0 - 0.5 * np.square(key)
                scale = np.ones(stop - start)
            else:
                qc = np.sqrt(np.einsum("nd,nd->n", q - center, q - center))
                score = 0.5 * (np.square(qc)[:, None] - np.square(key))
                scale = qc * norm + 0.5 * norm ** 2
                if rounding:
                    scale = scale + (qc + norm) * rounding + norm * np.sqrt(np.einsum("nd,nd->n", q, q))
        key = np.where(found, key, np.inf)
        order = np.lexsort((np.where(found, positions[start:stop], np.iinfo("int64").max), key),
                           axis=1)[:, :k]
        best = np.take_along_axis(key, order, axis=1)
        distances[start:stop] = 0.5 * np.square(best) if metric == "cosine" else best
        indices[start:stop] = np.take_along_axis(positions[start:stop], order, axis=1)
        kth = np.take_along_axis(np.where(found, score, -np.inf), order[:, -1:], axis=1)[:, 0]
        last = scores[start:stop, -1].astype("float64")
        tolerance = _ROUNDOFF * (dim + 16) * scale
        exact[start:stop] = everything | (kth > last + tolerance)
    return distances, indices, exact
