"""lossweave.retrieval.Index and its chunked search (lossweave.ops.search).

Reference: a NumPy brute force over the whole queries x gallery matrix in
float64, ranked by a stable sort (ties: the lower stored position). The data
are small integers where ties matter (exact in float32, so the device's
float32 scores tie exactly where NumPy's do), and blocks are tiny so that
every search crosses several query chunks and gallery blocks. The search and
its edge cases run on every backend; FAISS runs in one pass.
"""

import builtins
import importlib.util

import numpy as np
import pytest
from conftest import one_backend

from lossweave.ops.search import nearest
from lossweave.retrieval import Index, SearchResult
from lossweave.retrieval import faiss_search

METRICS = ["cosine", "euclidean", "dot"]
needs_faiss = pytest.mark.skipif(importlib.util.find_spec("faiss") is None,
                                 reason="faiss-cpu is not installed (pip install 'lossweave[faiss]')")


def numpy_search(queries, gallery, k, metric, exclude=None):
    """``(distances, positions)`` of the k nearest by the definitions, ties by lower position."""
    q, g = np.asarray(queries, "float64"), np.asarray(gallery, "float64")
    if metric == "cosine":
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
        g = g / np.linalg.norm(g, axis=1, keepdims=True)
        d = 1.0 - q @ g.T
    elif metric == "dot":
        d = -(q @ g.T)
    else:
        d = np.sqrt(((q[:, None, :] - g[None, :, :]) ** 2).sum(-1))
    if exclude is not None:
        d[np.arange(len(q)), exclude] = np.inf
    order = np.argsort(d, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d, order, axis=1), order


def _tied(seed=0, n=11, m=37, dim=3):
    """Small integer rows: many exact ties, duplicate rows, a query equal to a gallery row."""
    rng = np.random.default_rng(seed)
    gallery = rng.integers(-2, 3, size=(m, dim)).astype("float32")
    gallery[np.all(gallery == 0, axis=1)] = 1.0
    gallery[5] = gallery[20] = gallery[31]  # duplicate rows across gallery blocks
    queries = rng.integers(-2, 3, size=(n, dim)).astype("float32")
    queries[np.all(queries == 0, axis=1)] = 1.0
    queries[0] = gallery[5]
    return queries, gallery


@pytest.mark.parametrize("metric", METRICS)
def test_search_equals_the_numpy_reference_with_ties_across_blocks(metric):
    queries, gallery = _tied()
    labels = np.arange(len(gallery)) % 4
    index = Index(metric=metric, query_block=4, gallery_block=8)
    index.add(gallery, labels=labels, ids=100 + np.arange(len(gallery)))
    for k in (1, 6, 37):
        result = index.search(queries, k)
        distances, positions = numpy_search(queries, gallery, k, metric)
        if metric == "cosine":  # ties of 1 - cos only where float32 normalization reproduces them
            np.testing.assert_allclose(result.distances, distances, atol=1e-6)
            continue
        np.testing.assert_array_equal(result.indices, positions)
        np.testing.assert_allclose(result.distances, distances, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(result.labels, labels[positions])
        np.testing.assert_array_equal(result.ids, 100 + positions)
        assert result.distances.dtype == np.float32 and result.indices.dtype == np.int64


def test_cosine_ties_and_duplicates_go_to_the_lower_position():
    # Exactly representable unit directions: rows 1, 3 and 4 point the same way.
    gallery = np.array([[0.0, 1.0], [2.0, 0.0], [0.0, 3.0], [1.0, 0.0], [4.0, 0.0], [1.0, 1.0]])
    index = Index(metric="cosine", gallery_block=2)
    index.add(gallery)
    result = index.search([[5.0, 0.0], [0.0, 0.5]], k=4)
    np.testing.assert_array_equal(result.indices, [[1, 3, 4, 5], [0, 2, 5, 1]])
    np.testing.assert_allclose(result.distances[0], [0, 0, 0, 1 - np.sqrt(0.5)], atol=1e-6)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_continuous_data_and_leave_one_out(metric):
    rng = np.random.default_rng(1)
    gallery = rng.normal(size=(50, 8))
    index = Index(metric=metric, query_block=16, gallery_block=16)
    index.add(gallery)
    result = index.search(gallery, 5, exclude=np.arange(50))
    distances, positions = numpy_search(gallery, gallery, 5, metric, exclude=np.arange(50))
    np.testing.assert_array_equal(result.indices, positions)
    np.testing.assert_allclose(result.distances, distances, atol=1e-5)
    assert not np.any(result.indices == np.arange(50)[:, None])
    # The pure op agrees with the index.
    d, i = nearest(gallery[:7], gallery, 5, metric, query_block=3, gallery_block=9)
    np.testing.assert_array_equal(np.asarray(i), numpy_search(gallery[:7], gallery, 5, metric)[1])


def test_a_failed_add_leaves_the_index_as_it_was():
    index = Index(metric="cosine")
    index.add([[1.0, 0.0], [0.0, 1.0]], labels=[3, 4], ids=[7, 8])
    before = (index.embeddings.copy(), index.labels.copy(), index.ids.copy())
    bad_calls = [
        (dict(embeddings=[[1.0, np.nan]], labels=[1]), "NaN or infinite"),
        (dict(embeddings=[[1.0, np.inf]], labels=[1]), "NaN or infinite"),
        (dict(embeddings=[[1e39, 1.0]], labels=[1]), "NaN or infinite"),  # overflows float32
        (dict(embeddings=[[1.0, 0.0, 2.0]], labels=[1]), "width 2"),
        (dict(embeddings=[[1.0, 0.0], [1.0, 1.0]], labels=[1]), r"one label per row \(2,\)"),
        (dict(embeddings=[[1.0, 0.0]]), "need labels too"),
        (dict(embeddings=[[1.0, 0.0]], labels=["a"]), "one kind"),
        (dict(embeddings=[[1.0, 0.0], [1.0, 1.0]], labels=[1, 2], ids=[9]), "one id per row"),
        (dict(embeddings=[[1.0, 0.0], [1.0, 1.0]], labels=[1, 2], ids=[9, 9]), "distinct"),
        (dict(embeddings=[[1.0, 0.0]], labels=[1], ids=[8]), "already stored"),
        (dict(embeddings=[[0.0, 0.0]], labels=[1]), "non-zero"),
        (dict(embeddings=[1.0, 0.0], labels=[1]), r"shape \(n, dim\)"),
    ]
    for kwargs, match in bad_calls:
        with pytest.raises(ValueError, match=match):
            index.add(**kwargs)
        np.testing.assert_array_equal(index.embeddings, before[0])
        np.testing.assert_array_equal(index.labels, before[1])
        np.testing.assert_array_equal(index.ids, before[2])
    assert index.search([[1.0, 0.1]], 1).ids.tolist() == [[7]]


def test_bad_searches_are_refused():
    index = Index(metric="euclidean")
    with pytest.raises(ValueError, match="the index is empty"):
        index.search([[1.0, 2.0]], 1)
    index.add([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    with pytest.raises(ValueError, match="k=4 neighbours need at least 4 stored rows; the index has 3"):
        index.search([[1.0, 2.0]], 4)
    with pytest.raises(ValueError, match="besides the excluded row"):
        index.search([[1.0, 2.0]], 3, exclude=[0])
    with pytest.raises(ValueError, match=r"width 2 like the stored rows; received shape \(1, 3\)"):
        index.search([[1.0, 2.0, 3.0]], 1)
    with pytest.raises(ValueError, match="NaN or infinite"):
        index.search([[np.nan, 2.0]], 1)
    with pytest.raises(ValueError, match="`k` must be an int >= 1"):
        index.search([[1.0, 2.0]], 0)
    with pytest.raises(ValueError, match="`metric` must be one of"):
        Index(metric="manhattan")


def test_remove_ids_len_and_running_ids():
    index = Index(metric="euclidean", gallery_block=2)
    index.add(np.arange(10.0).reshape(5, 2), labels=["a", "b", "c", "d", "e"])
    index.remove([1, 3])
    assert len(index) == 3 and index.dim == 2 and index.metric == "euclidean"
    assert index.ids.tolist() == [0, 2, 4] and index.labels.tolist() == ["a", "c", "e"]
    result = index.search([[2.0, 3.0]], 2)  # nearest stored rows: [0, 1] and [4, 5]
    assert result.indices.tolist() == [[0, 1]] and result.ids.tolist() == [[0, 2]]
    assert result.labels.tolist() == [["a", "c"]]
    with pytest.raises(ValueError, match="not stored"):
        index.remove([3])
    assert len(index) == 3
    index.add([[100.0, 100.0]], labels=["f"])
    assert index.ids.tolist() == [0, 2, 4, 5]  # ids are never reused
    distances, indices, labels, ids = index.search([[99.0, 100.0]], 1)
    assert ids.tolist() == [[5]] and distances.tolist() == [[1.0]]


def test_save_and_load_answer_the_same(tmp_path):
    queries, gallery = _tied(seed=2)
    index = Index(metric="dot", query_block=5, gallery_block=16)
    index.add(gallery, labels=np.arange(len(gallery)) % 3)
    index.remove([4])
    path = tmp_path / "model.index.npz"
    index.save(path)
    loaded = Index.load(path)
    assert loaded.get_config() == index.get_config() and len(loaded) == len(index)
    a, b = index.search(queries, 5), loaded.search(queries, 5)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    loaded.add([[1.0, 2.0, 3.0]], labels=[1])
    assert loaded.ids[-1] == len(gallery)  # the running id continues after the reload
    Index(metric="cosine").save(tmp_path / "empty.npz")
    assert len(Index.load(tmp_path / "empty.npz")) == 0


# ------------------------------------------------------------ backend-independent
@one_backend
@needs_faiss
def test_config_round_trip_and_result_repr():
    index = Index(metric="euclidean", backend="faiss-hnsw", query_block=8, gallery_block=64,
                  nlist=4, nprobe=2, hnsw_m=8, ef_construction=20, ef_search=30, seed=3)
    assert Index.from_config(index.get_config()).get_config() == index.get_config()
    result = SearchResult(np.zeros((2, 3), "float32"), np.zeros((2, 3), "int64"), None,
                          np.zeros((2, 3), "int64"))
    assert repr(result) == "SearchResult(2 queries x 3 neighbours, labels=False)"


@one_backend
@needs_faiss
@pytest.mark.parametrize("metric", METRICS)
def test_faiss_flat_equals_the_exact_search(metric, tmp_path):
    rng = np.random.default_rng(3)
    gallery, queries = rng.normal(size=(300, 16)), rng.normal(size=(20, 16))
    exact, flat = Index(metric=metric), Index(metric=metric, backend="faiss-flat")
    for index in (exact, flat):
        index.add(gallery, labels=np.arange(300) % 7)
    a, b = exact.search(queries, 10), flat.search(queries, 10)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_allclose(a.distances, b.distances, atol=1e-4)
    np.testing.assert_array_equal(a.labels, b.labels)
    c = flat.search(queries, 3, exclude=b.indices[:, 0])
    np.testing.assert_array_equal(c.indices, b.indices[:, 1:4])
    flat.save(tmp_path / "flat.npz")
    np.testing.assert_array_equal(Index.load(tmp_path / "flat.npz").search(queries, 10).indices,
                                  b.indices)


@one_backend
@needs_faiss
@pytest.mark.parametrize("backend", ["faiss-ivf", "faiss-hnsw"])
def test_approximate_backends_find_most_neighbours_and_reload(backend, tmp_path):
    rng = np.random.default_rng(4)
    gallery, queries = rng.normal(size=(2000, 16)), rng.normal(size=(50, 16))
    index = Index(metric="euclidean", backend=backend, nlist=16, nprobe=8)
    index.add(gallery)
    result = index.search(queries, 10)
    truth = numpy_search(queries, gallery, 10, "euclidean")[1]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(result.indices, truth)])
    assert 0.6 < recall <= 1.0
    index.save(tmp_path / "approx.npz")
    np.testing.assert_array_equal(Index.load(tmp_path / "approx.npz").search(queries, 10).indices,
                                  result.indices)


@one_backend
def test_without_faiss_the_error_says_what_to_install(monkeypatch):
    real_import = builtins.__import__

    def no_faiss(name, *args, **kwargs):
        if name == "faiss":
            raise ImportError("No module named 'faiss'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_faiss)
    with pytest.raises(ImportError, match=r'pip install "lossweave\[faiss\]"'):
        Index(backend="faiss-ivf")
    with pytest.raises(ImportError, match="backend='exact'"):
        faiss_search.import_faiss()


# ---------------------------------------------------------- float64 re-rank
def _coincident(seed, n, m, dim, spread):
    """Rows about one point, apart by ``spread`` (relative): their float32 scores cannot tell them apart."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=dim)
    gallery = base + spread * rng.normal(size=(m, dim))
    queries = base + spread * rng.normal(size=(n, dim))
    return queries, gallery


def float64_search(queries, gallery, k, metric):
    """Positions of the k nearest by ``||q - g||`` in float64 (normalised rows for cosine), ties by lower position."""
    q, g = np.asarray(queries, "float64"), np.asarray(gallery, "float64")
    if metric == "cosine":
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
        g = g / np.linalg.norm(g, axis=1, keepdims=True)
    d = np.sqrt(((q[:, None, :] - g[None, :, :]) ** 2).sum(-1))
    return np.lexsort((np.broadcast_to(np.arange(len(g)), d.shape), d), axis=1)[:, :k], q, g


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_rerank_equals_scikit_learn_float64_below_float32_resolution(metric):
    from sklearn.neighbors import NearestNeighbors

    cases = [  # float64 rows 1e-9 apart in 2-D (arcface's on the README), stored in float64;
        # float32 rows a few ulps apart, stored as given (float32)
        (_coincident(5, 12, 120, 2, 1e-9), "float64"),
        (tuple(x.astype("float32") for x in _coincident(6, 12, 120, 8, 3e-7)), "float32"),
    ]
    for (queries, gallery), dtype in cases:
        index = Index(metric=metric, dtype=dtype, query_block=8, gallery_block=64)
        index.add(gallery)
        result = index.search(queries, 10)
        truth, q, g = float64_search(queries, gallery, 10, metric)
        np.testing.assert_array_equal(result.indices, truth)
        # scikit-learn (a k-d tree in float64) finds the same distances; its ties are its own.
        distances = NearestNeighbors(n_neighbors=10).fit(g).kneighbors(q)[0]
        expected = 0.5 * distances ** 2 if metric == "cosine" else distances
        np.testing.assert_allclose(result.distances, expected, rtol=1e-6, atol=0)
        if dtype == "float64":  # the float32 search alone cannot tell these rows apart
            assert not np.array_equal(nearest(queries, gallery, 10, metric)[1], truth)


def test_rerank_widens_the_search_until_it_is_exact():
    from lossweave.retrieval.index import rerank

    queries, gallery = _coincident(7, 5, 200, 3, 1e-10)
    index = Index(metric="dot", dtype="float64", gallery_block=64)
    index.add(gallery)
    result = index.search(queries, 4, exclude=[3, 0, 9, -1, 199])
    d = -(queries @ gallery.T)
    d[[0, 1, 2], [3, 0, 9]] = np.inf
    d[4, 199] = np.inf
    order = np.lexsort((np.broadcast_to(np.arange(200), d.shape), d), axis=1)[:, :4]
    np.testing.assert_array_equal(result.indices, order)
    # Sixteen float32 candidates of 200 nearly equal rows cannot prove the answer exact.
    scores = np.full((5, 16), np.float32(-(d[0, 0]))), np.tile(np.arange(16), (5, 1))
    _, _, exact = rerank(queries, gallery, *scores, 4, "dot", np.zeros(3), 1.0)
    assert not exact.any()
    assert rerank(queries, gallery, *scores, 4, "dot", np.zeros(3), 1.0, everything=True)[2].all()


def test_float64_storage_keeps_the_rows_and_reloads(tmp_path):
    rows = 1.0 + 1e-12 * np.arange(6.0).reshape(3, 2)
    index = Index(metric="euclidean", dtype="float64")
    index.add(rows)
    assert index.embeddings.dtype == np.float64 and np.array_equal(index.embeddings, rows)
    index.save(tmp_path / "f64.npz")
    loaded = Index.load(tmp_path / "f64.npz")
    assert loaded.dtype == "float64" and np.array_equal(loaded.embeddings, rows)
    assert loaded.search(rows[2:] + 1e-13, 3).indices.tolist() == [[2, 1, 0]]
    with pytest.raises(ValueError, match="`dtype` must be one of"):
        Index(dtype="float16")
