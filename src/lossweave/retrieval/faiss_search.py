"""FAISS search behind :class:`lossweave.retrieval.Index`: flat (exact), IVF and HNSW (approximate).

Optional: ``pip install "lossweave[faiss]"`` (``faiss-cpu``). FAISS runs on
the host CPU with its own threads, not on the Keras device. This module maps
the index's metrics onto FAISS's (Johnson, Douze & Jégou, "Billion-scale
similarity search with GPUs", IEEE Trans. Big Data 2019; Malkov & Yashunin,
"Efficient and robust approximate nearest neighbor search using Hierarchical
Navigable Small World graphs", TPAMI 2018) and its answers onto the index's
convention (distances smaller is closer):

* ``"cosine"``: rows L2-normalised, inner product; distance ``1 - ip``.
* ``"dot"``: inner product; distance ``-ip``.
* ``"euclidean"``: FAISS's L2 returns squared distances; distance ``sqrt``.

Where an approximate index finds fewer than ``k`` rows for a query (IVF with
few probed lists, HNSW with a small ``ef_search``), the missing places hold
position ``-1`` and distance ``inf``. Ties between equal distances are
broken as FAISS breaks them (not necessarily by the lower position, unlike the
exact search).
"""

import numpy as np

KINDS = ("faiss-flat", "faiss-ivf", "faiss-hnsw")


def import_faiss():
    """The ``faiss`` module, or an ``ImportError`` that says what to install."""
    try:
        import faiss
    except ImportError as error:
        raise ImportError(
            "the FAISS search backends ('faiss-flat', 'faiss-ivf', 'faiss-hnsw') need FAISS, which "
            "is not installed. Install it with `pip install \"lossweave[faiss]\"` (or `pip install "
            "faiss-cpu`), or use backend='exact' (keras.ops on the current device)."
        ) from error
    return faiss


def _prepared(x, metric):
    x = np.ascontiguousarray(x, dtype="float32")
    if metric == "cosine":
        x = np.ascontiguousarray(x / np.linalg.norm(x, axis=1, keepdims=True), dtype="float32")
    return x


def build(embeddings, metric, kind, *, nlist, nprobe, hnsw_m, ef_construction, ef_search, seed):
    """A FAISS index of ``embeddings`` (``(m, dim)``) for ``metric`` and ``kind``.

    IVF trains its coarse quantizer (k-means, seeded) on the embeddings
    themselves with ``min(nlist, m // 39)`` lists (at least one): FAISS asks
    for 39 training points per list.
    """
    faiss = import_faiss()
    x = _prepared(embeddings, metric)
    dim = x.shape[1]
    measure = faiss.METRIC_L2 if metric == "euclidean" else faiss.METRIC_INNER_PRODUCT
    if kind == "faiss-flat":
        index = faiss.IndexFlatL2(dim) if metric == "euclidean" else faiss.IndexFlatIP(dim)
    elif kind == "faiss-hnsw":
        index = faiss.IndexHNSWFlat(dim, hnsw_m, measure)
        index.hnsw.efConstruction = ef_construction
        index.hnsw.efSearch = ef_search
    else:
        lists = max(1, min(nlist, x.shape[0] // 39))
        quantizer = faiss.IndexFlatL2(dim) if metric == "euclidean" else faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, lists, measure)
        index.cp.seed = seed
        index.train(x)
        index.nprobe = min(nprobe, lists)
    if x.shape[0]:
        index.add(x)
    return index


def search(index, queries, k, metric):
    """``(distances, positions)`` of the ``k`` nearest, NumPy float32 and int64, nearest first."""
    scores, positions = index.search(_prepared(queries, metric), k)
    positions = positions.astype("int64")
    if metric == "euclidean":
        distances = np.sqrt(np.maximum(scores, 0.0))
    elif metric == "cosine":
        distances = 1.0 - scores
    else:
        distances = -scores
    distances = np.where(positions < 0, np.inf, distances).astype("float32")
    return distances, positions


def serialize(index):
    """The FAISS index as a uint8 array (stored by ``Index.save``)."""
    return import_faiss().serialize_index(index)


def deserialize(data):
    """The FAISS index of :func:`serialize`'s bytes."""
    return import_faiss().deserialize_index(np.asarray(data, dtype="uint8"))
