"""Exact top-10 retrieval: lossweave's chunked search against scikit-learn and FAISS, side by side.

    KERAS_BACKEND=jax .venv/bin/python benchmarks/retrieval.py [--sizes 10000 100000 1000000]
        [--queries 10000] [--threads 1] [--no-approximate] [--write benchmarks/RETRIEVAL.md]

At each gallery size (random normal rows, dim 128, cosine), on the same
arrays in one process: ``lossweave.retrieval.Index`` (exact, ``keras.ops`` on
the current backend's device), scikit-learn's ``NearestNeighbors`` on the
L2-normalised rows (the path ``lossweave.metrics`` took before the index),
FAISS ``IndexFlatIP`` on the normalised rows (exact), and the approximate
FAISS backends of the index (IVF, HNSW) with their recall@10 against the
exact answer. Times are build + search of all queries, after one warm-up
search (compilation) on the same shapes; the machine is small and shared, so
the ratios of one run matter more than the seconds. Above 100k references
scikit-learn is left out (its brute force takes an hour at 1M on one thread)
and so is HNSW (its graph takes most of an hour to build at 1M on one
thread); the table says so.

Memory is the peak resident set size (RSS) above the RSS before the call,
sampled every 2 ms by a thread (``/proc/self/statm``): it sees every
allocator (NumPy, XLA, oneDNN, FAISS), which tracemalloc does not. The bound
of the target is 2 x (gallery + one block), with a block of ``query_block x
gallery block`` float32 scores, the gallery block being the one the index
uses at that size (``lossweave.ops.search.block_size``).

``--write FILE`` replaces this backend's section of FILE (between
``<!-- retrieval:BACKEND -->`` markers) and keeps the others, so that one
file holds the run of every backend.

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
LARGEST_SKLEARN = LARGEST_HNSW = 100_000
FLOOR_OPS = "floor: keras.ops.matmul alone, in query blocks (no top-k)"
FLOOR_BLAS = "floor: NumPy (BLAS) matmul alone, in query blocks (no top-k)"


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


def methods(gallery, queries, threads, approximate, size=None):
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

    def floor_ops():
        from keras import ops

        rows = ops.convert_to_tensor(_normalized(gallery))
        for start in range(0, len(queries), QUERY_BLOCK):
            chunk = ops.convert_to_tensor(_normalized(queries[start:start + QUERY_BLOCK]))
            ops.convert_to_numpy(ops.matmul(chunk, ops.transpose(rows))[:, :1])  # waits for it
        return None

    def floor_blas():
        rows = _normalized(gallery)
        for start in range(0, len(queries), QUERY_BLOCK):
            _normalized(queries[start:start + QUERY_BLOCK]) @ rows.T
        return None

    def flat_ip():
        index = faiss.IndexFlatIP(DIM)
        index.add(_normalized(gallery))
        return index.search(_normalized(queries), K)[1]

    size = len(gallery) if size is None else size
    table = {"lossweave exact": ours()}
    if size <= LARGEST_SKLEARN:
        table["scikit-learn NearestNeighbors"] = sklearn
    table["FAISS IndexFlatIP"] = flat_ip
    if size <= LARGEST_SKLEARN:  # the floor of every exact search: the matrix product alone
        table[FLOOR_OPS] = floor_ops
        table[FLOOR_BLAS] = floor_blas
    if approximate:
        lists = max(1, min(1024, int(4 * len(gallery) ** 0.5), len(gallery) // 39))
        table[f"lossweave faiss-ivf (nlist {lists}, nprobe 16)"] = ours("faiss-ivf", nlist=lists, nprobe=16)
        if size <= LARGEST_HNSW:
            table["lossweave faiss-hnsw (M 32, ef 64)"] = ours("faiss-hnsw", hnsw_m=32, ef_search=64)
    return table


def run(sizes, n_queries, threads, approximate):
    import keras
    import numpy as np

    from lossweave.ops.search import block_size

    rows = []
    rng = np.random.default_rng(0)
    queries = rng.normal(size=(n_queries, DIM)).astype("float32")
    for size in sizes:
        gallery = rng.normal(size=(size, DIM)).astype("float32")
        table = methods(gallery, queries, threads, approximate)
        # Warm-up: ours on the timed shapes (compilation), the others' thread pools on a few
        # queries; then the timed runs in turn.
        methods(gallery, queries[:QUERY_BLOCK], threads, False)["lossweave exact"]()
        for name, function in methods(gallery, queries[:8], threads, False, size).items():
            if name != "lossweave exact":
                function()
        results = {}
        for name, function in table.items():
            indices, seconds, peak = measured(function)
            results[name] = (None if indices is None else np.asarray(indices), seconds, peak)
            print(f"{size:>9} {name:<45} {seconds:8.2f} s {peak / 2**20:8.0f} MiB", flush=True)
        truth = results["FAISS IndexFlatIP"][0]
        block = block_size(size, GALLERY_BLOCK)
        bound = 2 * (size * DIM * 4 + min(QUERY_BLOCK, n_queries) * block * 4)
        for name, (indices, seconds, peak) in results.items():
            recall = None if indices is None else float(
                np.mean([len(set(a) & set(b)) / K for a, b in zip(indices, truth)]))
            rows.append({"size": size, "method": name, "seconds": seconds, "peak": peak,
                         "recall": recall, "bound": bound})
    return {"backend": keras.backend.backend(), "queries": n_queries, "threads": threads, "rows": rows,
            "sizes": list(sizes), "approximate": approximate}


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
                     f"{r['peak'] / 2**20:.0f} | {bound} | "
                     f"{'' if r['recall'] is None else format(r['recall'], '.3f')} |")
    skipped = [f"scikit-learn above {LARGEST_SKLEARN:,} references (hours on one thread)"]
    if record.get("approximate", True):
        skipped.append(f"HNSW above {LARGEST_HNSW:,} references (its build alone takes most of an hour)")
    if max(record.get("sizes", [0])) > LARGEST_SKLEARN:
        lines += ["", "Not run: " + "; ".join(skipped) + "."]
    lines += ["", "Targets: " + "; ".join(f"{k}: {v}" for k, v in target_lines(record).items())]
    return "\n".join(lines)


def target_lines(record):
    """Each target: met or MISSED, with the measured ratio (by how much)."""
    by = {(r["size"], r["method"]): r for r in record["rows"]}
    verdicts = targets_of(record)
    lines = {}
    for name, met in verdicts.items():
        word = "met" if met else ("n/a" if met is None else "MISSED")
        detail = ""
        if name.startswith(">= 3x") and met is not None:
            ratio = (by[(100_000, "scikit-learn NearestNeighbors")]["seconds"]
                     / by[(100_000, "lossweave exact")]["seconds"])
            detail = f" ({ratio:.2f}x)"
        elif name.startswith("within 1.5x") and met is not None:
            detail = " (" + ", ".join(
                f"{s:,}: {by[(s, 'lossweave exact')]['seconds'] / by[(s, 'FAISS IndexFlatIP')]['seconds']:.2f}x FAISS time"
                for s in sorted({r['size'] for r in record['rows']})) + ")"
        elif name.startswith("peak memory") and met is not None:
            detail = " (" + ", ".join(
                f"{s:,}: {by[(s, 'lossweave exact')]['peak'] / by[(s, 'lossweave exact')]['bound']:.2f} of the bound"
                for s in sorted({r['size'] for r in record['rows']})) + ")"
        lines[name] = word + detail
    return lines


def targets_of(record):
    by = {(r["size"], r["method"]): r for r in record["rows"]}
    out = {}
    if (100_000, "scikit-learn NearestNeighbors") in by:
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
        command = (f"KERAS_BACKEND={record['backend']} .venv/bin/python benchmarks/retrieval.py "
                   f"--sizes {' '.join(map(str, args.sizes))} --queries {args.queries}"
                   f"{' --no-approximate' if args.no_approximate else ''} --write {args.write}")
        write_section(args.write, record["backend"],
                      f"## {record['backend']}\n\nWritten by `{command}`.\n\n{table}\n")
    return 0


def write_section(path, name, text):
    """Replace section ``name`` of the markdown file at ``path`` (create it), keeping the rest."""
    begin, end = f"<!-- retrieval:{name} -->", f"<!-- /retrieval:{name} -->"
    try:
        with open(path) as handle:
            content = handle.read()
    except FileNotFoundError:
        content = "# Retrieval benchmark\n\nWritten by `benchmarks/retrieval.py`; see its docstring for what is measured.\n"
    block = f"{begin}\n{text}{end}"
    if begin in content and end in content:
        content = content[:content.index(begin)] + block + content[content.index(end) + len(end):]
    else:
        content = content.rstrip("\n") + "\n\n" + block + "\n"
    with open(path, "w") as handle:
        handle.write(content)


if __name__ == "__main__":
    sys.exit(main())
