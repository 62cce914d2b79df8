"""Run lossweave's benchmarks for the current Keras backend.

    KERAS_BACKEND=jax .venv/bin/python benchmarks/run.py [--quick] [--out FILE.json]

(``make bench`` runs it once per backend.) The benchmarks, each interleaving
the things it compares in one process and reporting medians and ratios:

* ``center_update.py``: one compiled center update at 10 .. 1M classes against
  the dense distance-matrix center loss (targets: t(1M)/t(10) <= 1.5, >= 50x
  faster than dense at 100k, no classes x dim temporary);
* ``step_overhead.py``: fit step time of softmax + center loss against softmax
  alone (target <= 1.10x) and against a plain Keras model;
* ``margin.py``: fit step time of each margin-softmax term (NormFace, CosFace,
  ArcFace, combined margin, SphereFace, sub-center ArcFace) at 10k classes
  against a dense softmax head of the same size (target <= 1.3x; see
  ``MARGIN.md``);
* ``gradient.py``: fit step time of the gradient-level strategies (Sum, MGDA,
  PCGrad; MGDA in representation mode) on a shared trunk with 2 and 4 heads
  against the loss-level ``Fixed`` step (targets: <= 1.1 (1 + 2K) / 3x and
  <= 1.3x; see ``GRADIENT.md``);
* ``pairs.py``: fit step time of each pair and proxy loss (contrastive,
  triplet with each mining, lifted structure, N-pairs, multi-similarity,
  circle, SupCon, NT-Xent, XBM, Proxy Anchor, ProxyNCA) at batch 256, 512 and
  1024 against a softmax head on the same trunk (target <= 1.3x at 256), and
  the memory of one loss + gradient with its batch exponent (target < 2.5:
  batch^2, not batch^3; see ``PAIRS.md``);
* ``aggregation.py``: the time of each gradient-level strategy's aggregation
  alone (its K x K solve, or its ``aggregate_rows``) compiled as ``fit``
  compiles the step, at K = 2, 4, 10, against the fit step of the K-head
  model (target: <= 10 % of the gradient-level step; see ``MULTITASK.md``);
* ``multitask.py``: every loss-level and gradient-level strategy on the
  digits, K = 2 (a 1000x loss-scale gap) and K = 4 (class, parity, ink and a
  100x-scaled regression): the step time of each against ``Fixed`` and
  Keras's ``compile(loss=dict, loss_weights=dict)`` in the default set; with
  ``--only multitask`` also the quality (Delta_m% over 3 seeds: tens of
  minutes on a small machine, so opt-in; see ``MULTITASK.md``).

Prints markdown tables and stores the results, keyed by backend, in a JSON
file (default ``runs/bench/results.json``; other backends' entries are kept).
``--summarize FILE`` prints the tables of every backend stored in FILE.
"""

import argparse
import datetime
import json
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import configure_threads  # noqa: E402  (imports no backend)

DEFAULT_OUT = os.path.join("runs", "bench", "results.json")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: few repeats, small epochs")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"JSON results file (default {DEFAULT_OUT})")
    parser.add_argument(
        "--only", choices=("center", "step", "margin", "gradient", "pairs", "aggregation", "multitask", "retrieval"),
        help="run one benchmark (multitask: its quality runs too; retrieval: only when named)"
    )
    parser.add_argument(
        "--threads", type=int, default=1,
        help="CPU threads per backend thread pool (default 1: stable timings on a small shared "
        "machine; 0 keeps the backends' defaults)",
    )
    parser.add_argument("--dense-1m", action="store_true", help="also run the dense reference once at 1M classes (~4 GB)")
    parser.add_argument("--summarize", metavar="FILE", help="print the stored tables of every backend and exit")
    return parser.parse_args(argv)


def machine():
    import keras

    info = {
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "keras": keras.__version__,
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    backend = keras.backend.backend()
    module = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}.get(backend)
    if module:
        info[module] = __import__(module).__version__
    return info


def summarize(path):
    with open(path) as f:
        records = json.load(f)
    for backend, record in records.items():
        print(f"## {backend} ({record['date']}, {'quick' if record['quick'] else 'full'}, "
              f"threads={record['threads']}, {record['seconds']:.0f} s)\n")
        print(record["markdown"] + "\n")


def main(argv=None):
    args = parse_args(argv)
    if args.summarize:
        summarize(args.summarize)
        return 0
    configure_threads(args.threads)
    import keras

    import center_update
    import step_overhead

    backend = keras.backend.backend()
    start = time.perf_counter()
    record = {
        "backend": backend,
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": " ".join([f"KERAS_BACKEND={backend}", "python"] + sys.argv),
        "quick": args.quick,
        "threads": args.threads,
        "machine": machine(),
    }
    tables = []
    if args.only in (None, "center"):
        record["center_update"] = center_update.run(quick=args.quick, dense_1m=args.dense_1m)
        tables.append(center_update.markdown(record["center_update"]))
        print(tables[-1] + "\n", flush=True)
    if args.only in (None, "step"):
        record["step_overhead"] = step_overhead.run(quick=args.quick)
        tables.append(step_overhead.markdown(record["step_overhead"]))
        print(tables[-1] + "\n", flush=True)
    if args.only in (None, "margin"):
        import margin

        record["margin"] = margin.run(quick=args.quick)
        tables.append(margin.markdown(record["margin"]))
        print(tables[-1] + "\n", flush=True)
    if args.only in (None, "gradient"):
        import gradient

        record["gradient"] = gradient.run(quick=args.quick)
        tables.append(gradient.markdown(record["gradient"]))
        print(tables[-1] + "\n", flush=True)
    if args.only in (None, "pairs"):
        import pairs

        record["pairs"] = pairs.run(quick=args.quick)
        tables.append(pairs.markdown(record["pairs"]))
        print(tables[-1] + "\n", flush=True)
    if args.only in (None, "aggregation"):
        import aggregation

        record["aggregation"] = aggregation.run(quick=args.quick)
        tables.append(aggregation.markdown(record["aggregation"]))
        print(tables[-1] + "\n", flush=True)
    if args.only in (None, "multitask"):  # the quality (3 seeds x every strategy) only when asked for
        import multitask

        # progress lines and each case's tables as they finish (the quality takes a while)
        record["multitask"] = multitask.run(quick=args.quick, do_quality=args.only == "multitask")
        tables.append(multitask.markdown(record["multitask"]))
        print(tables[-1] + "\n", flush=True)
    if args.only == "retrieval":  # minutes at 100k references: only when asked for
        import retrieval

        record["retrieval"] = retrieval.bench(quick=args.quick)
        tables.append(retrieval.markdown(record["retrieval"]))
        print(tables[-1] + "\n", flush=True)
    record["seconds"] = time.perf_counter() - start
    targets = {}
    for name in ("center_update", "step_overhead", "margin", "gradient", "pairs", "aggregation", "multitask",
                 "retrieval"):
        targets.update(record.get(name, {}).get("targets", {}))
    record["targets"] = targets
    verdict = lambda v: "met" if v else ("n/a" if v is None else "MISSED")
    tables.append("Targets: " + "; ".join(f"{k}: {verdict(v)}" for k, v in targets.items()))
    record["markdown"] = "\n\n".join(tables)
    print(tables[-1])
    print(f"({backend}, {record['seconds']:.0f} s)")

    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        records = {}
        if os.path.exists(args.out):
            with open(args.out) as f:
                records = json.load(f)
        records[backend] = record
        with open(args.out, "w") as f:
            json.dump(records, f, indent=1, default=float)
        print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
