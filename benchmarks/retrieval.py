"""Exact top-10 retrieval: lossweave's chunked search against scikit-learn and FAISS, side by side.

    KERAS_BACKEND=jax .venv/bin/python benchmarks/retrieval.py [--sizes 10000 100000 1000000]
        [--queries 10000] [--threads 1] [--write benchmarks/RETRIEVAL.md]

At each gallery size (random normal rows, dim 128, cosine), on the same
arrays in one process: ``lossweave.retrieval.Index`` (exact, ``keras.ops`` on
the current backend's device), scikit-learn's ``NearestNeighbors`` on the
L2-normalised rows (the path ``lossweave.metrics`` took before the index),
FAISS ``IndexFlatIP`` on the normalised rows (exact), and the approximate
FAISS backends of the index (IVF, HNSW) with their recall@10 against the
exact answer. Times are build + search of all queries, after one warm-up
search (compilation) on the same shapes; the machine is small and shared, so
the ratios of one run matter more than the seconds.

Memory is the peak resident set size (RSS) above the RSS before the call,
sampled every 2 ms by a thread (``/proc/self/statm``): it sees every
allocator (NumPy, XLA, oneDNN, FAISS), which tracemalloc does not. The bound
of the target is 2 x (gallery + one block), with a block of ``query_block x
gallery_block`` float32 scores.

Targets: lossweave >= 3x faster than scikit-learn at 100k references; within
1.5x of FAISS flat; peak memory < 2 x (gallery + one block).
"""

import argparse
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import configure_threads  # noqa: E402  (imports no backend)

DIM, K = 128, 10
QUERY_BLOCK, GALLERY_BLOCK = 1024, 65536


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000],
                        help="gallery sizes (default 10000 100000; add 1000000 when time allows)")
    parser.add_argument("--queries", type=int, default=10_000, help="queries (default 10000)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of every library (default 1)")
    parser.add_argument("--no-approximate", action="store_true", help="skip FAISS IVF and HNSW")
    parser.add_argument("--write", metavar="FILE", help="write the markdown table to FILE")
    return parser.parse_args(argv)


def _rss():
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measured(function):
    """``(result, seconds, peak RSS above the start in bytes)`` of ``function()``."""
    start_rss, peak, done = _rss(), [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    result = function()
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    return result, seconds, max(peak[0], _rss()) - start_rss


def _normalized(x):
    import numpy as np

    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype("float32")


def methods(gallery, queries, threads, approximate):
    """name -> function returning the (n, K) neighbour positions, building its index inside."""
    import faiss
    from sklearn.neighbors import NearestNeighbors

    from lossweave.retrieval import Index

    faiss.omp_set_num_threads(threads)

    def ours(backend="exact", **kwargs):
        def run():
            index = Index(metric="cosine", backend=backend, query_block=QUERY_BLOCK,
                          gallery_block=GALLERY_BLOCK, **kwargs)
            index.add(gallery)
            return index.search(queries, K).indices
        return run

    def sklearn():
        index = NearestNeighbors(n_neighbors=K, n_jobs=threads).fit(_normalized(gallery))
        return index.kneighbors(_normalized(queries), return_distance=False)

    def flat_ip():
        index = faiss.IndexFlatIP(DIM)
        index.add(_normalized(gallery))
        return index.search(_normalized(queries), K)[1]

    table = {"lossweave exact": ours(), "scikit-learn NearestNeighbors": sklearn,
             "FAISS IndexFlatIP": flat_ip}
    if approximate:
        lists = max(1, min(1024, int(4 * len(gallery) ** 0.5), len(gallery) // 39))
        table[f"lossweave faiss-ivf (nlist {lists}, nprobe 16)"] = ours("faiss-ivf", nlist=lists, nprobe=16)
        table["lossweave faiss-hnsw (M 32, ef 64)"] = ours("faiss-hnsw", hnsw_m=32, ef_search=64)
    return table


def run(sizes, n_queries, threads, approximate):
    import keras
    import numpy as np

    rows = []
    rng = np.random.default_rng(0)
    queries = rng.normal(size=(n_queries, DIM)).astype("float32")
    for size in sizes:
        gallery = rng.normal(size=(size, DIM)).astype("float32")
        table = methods(gallery, queries, threads, approximate)
        # Warm-up on the timed shapes (compilation, thread pools), then the timed runs in turn.
        warm = methods(gallery, queries[:QUERY_BLOCK], threads, False)
        for function in warm.values():
            function()
        results = {}
        for name, function in table.items():
            indices, seconds, peak = measured(function)
            results[name] = (np.asarray(indices), seconds, peak)
            print(f"{size:>9} {name:<45} {seconds:8.2f} s {peak / 2**20:8.0f} MiB", flush=True)
        truth = results["FAISS IndexFlatIP"][0]
        block = min(GALLERY_BLOCK, 1 << (size - 1).bit_length())
        bound = 2 * (size * DIM * 4 + QUERY_BLOCK * block * 4)
        for name, (indices, seconds, peak) in results.items():
            recall = float(np.mean([len(set(a) & set(b)) / K for a, b in zip(indices, truth)]))
            rows.append({"size": size, "method": name, "seconds": seconds, "peak": peak,
                         "recall": recall, "bound": bound})
    return {"backend": keras.backend.backend(), "queries": n_queries, "threads": threads, "rows": rows}


def markdown(record):
    lines = [
        f"Exact top-{K} cosine search, {record['queries']} queries x dim {DIM}, "
        f"{record['backend']} backend, {record['threads']} thread(s); time = build + search; "
        "memory = peak RSS above the start (sampled every 2 ms); ratios against lossweave exact "
        "at the same size.",
        "",
        "| references | method | seconds | vs lossweave | peak MiB | bound MiB | recall@10 |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    ours = {r["size"]: r for r in record["rows"] if r["method"] == "lossweave exact"}
    for r in record["rows"]:
        ratio = r["seconds"] / ours[r["size"]]["seconds"]
        bound = f"{r['bound'] / 2**20:.0f}" if r["method"] == "lossweave exact" else ""
        lines.append(f"| {r['size']:,} | {r['method']} | {r['seconds']:.2f} | {ratio:.2f}x | "
                     f"{r['peak'] / 2**20:.0f} | {bound} | {r['recall']:.3f} |")
    targets = targets_of(record)
    verdict = lambda v: "met" if v else ("n/a" if v is None else "MISSED")
    lines += ["", "Targets: " + "; ".join(f"{k}: {verdict(v)}" for k, v in targets.items())]
    return "\n".join(lines)


def targets_of(record):
    by = {(r["size"], r["method"]): r for r in record["rows"]}
    out = {}
    if (100_000, "lossweave exact") in by:
        ours = by[(100_000, "lossweave exact")]
        out[">= 3x faster than scikit-learn at 100k"] = (
            by[(100_000, "scikit-learn NearestNeighbors")]["seconds"] / ours["seconds"] >= 3.0)
    sizes = sorted({r["size"] for r in record["rows"]})
    out["within 1.5x of FAISS flat (every size)"] = all(
        by[(s, "lossweave exact")]["seconds"] <= 1.5 * by[(s, "FAISS IndexFlatIP")]["seconds"]
        for s in sizes) if sizes else None
    out["peak memory < 2 x (gallery + one block)"] = all(
        by[(s, "lossweave exact")]["peak"] < by[(s, "lossweave exact")]["bound"] for s in sizes
    ) if sizes else None
    return out


def bench(quick=False):
    """``benchmarks/run.py --only retrieval``: 10k (quick) or 10k and 100k references, with targets."""
    record = run([10_000] if quick else [10_000, 100_000], 2_000 if quick else 10_000, 1, True)
    record["targets"] = {f"retrieval: {k}": v for k, v in targets_of(record).items()}
    return record


def main(argv=None):
    args = parse_args(argv)
    configure_threads(args.threads)
    record = run(args.sizes, args.queries, args.threads, not args.no_approximate)
    table = markdown(record)
    print(table)
    if args.write:
        with open(args.write, "w") as handle:
            handle.write("# Retrieval benchmark\n\nWritten by `benchmarks/retrieval.py` ("
                         f"`KERAS_BACKEND={record['backend']} .venv/bin/python benchmarks/retrieval.py "
                         f"--sizes {' '.join(map(str, args.sizes))} --queries {args.queries} "
                         f"--write {args.write}`); see its docstring for what is measured.\n\n"
                         + table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
