"""Helpers shared by the benchmarks: timing, blocking on results, peak-RSS probes.

Timings on a shared machine are noisy, so every benchmark interleaves the
things it compares (A, B, A, B, ...) within one process and reports medians
and ratios of medians.
"""

import os
import statistics
import time


def configure_threads(threads):
    """Limit every backend's CPU thread pools to ``threads`` (0: leave the defaults).

    Must run before keras (and so the backend) is imported. On a small shared
    machine a parallel region waits for its slowest thread, and a thread that
    is not scheduled stalls it for a whole time slice: with two busy cores,
    PyTorch's default two threads turned a 1 ms center update into 200 ms.
    """
    if not threads:
        return
    n = str(threads)
    os.environ.setdefault("OMP_NUM_THREADS", n)
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", n)
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", n)
    if threads == 1:
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = (flags + " --xla_cpu_multi_thread_eigen=false").strip()
    if os.environ.get("KERAS_BACKEND") == "torch":
        import torch

        torch.set_num_threads(threads)


def backend():
    import keras

    return keras.backend.backend()


def block(value):
    """Wait until a result is computed (JAX dispatches asynchronously; TF and torch CPU are sync)."""
    if backend() == "jax":
        import jax

        jax.block_until_ready(value)
    return value


def timed(fn, *args):
    """``(seconds, result)`` of one call, blocked until its result is ready."""
    start = time.perf_counter()
    result = block(fn(*args))
    return time.perf_counter() - start, result


def median(values):
    return statistics.median(values) if values else float("nan")


# ----------------------------------------------------------------- peak RSS
# Linux only: writing "5" to /proc/self/clear_refs resets the peak RSS (VmHWM)
# to the current RSS, so VmHWM - VmRSS after some calls is the largest amount
# of memory they held at once (temporaries included), as seen by the kernel.


def _status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def rss_probe_available():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        _status_kib("VmHWM")
        return True
    except OSError:
        return False


def _release_free_heap():
    """Give freed heap pages back to the OS, so a new temporary must raise the RSS."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def peak_rss_growth_mib(fn, repeats=3):
    """Peak RSS above the starting RSS (MiB) while calling ``fn()`` ``repeats`` times."""
    _release_free_heap()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    start = _status_kib("VmRSS")
    for _ in range(repeats):
        fn()
    return (_status_kib("VmHWM") - start) / 1024.0


def interleaved_rounds(run, variants, rounds):
    """Run ``run(variant) -> [step seconds]`` for every variant, ``rounds`` times.

    The order alternates each round (A, B, ... then ..., B, A) so that drifts of
    a shared machine fall on every variant alike. Returns ``(times, per_round)``:
    all step times per variant, and the median of each round per variant.
    """
    times = {v: [] for v in variants}
    per_round = {v: [] for v in variants}
    for r in range(rounds):
        for variant in variants if r % 2 == 0 else variants[::-1]:
            steps = run(variant)
            times[variant] += steps
            per_round[variant].append(median(steps))
    return times, per_round


def fmt_ms(seconds):
    if seconds != seconds:  # NaN
        return "n/a"
    ms = seconds * 1e3
    return f"{ms:.3f}" if ms < 10 else f"{ms:.1f}"


def write_results(results, out):
    """Write ``results`` as JSON to ``out`` (folders made; NumPy numbers as floats) and say where."""
    import json
    import os

    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump(results, f, indent=1, default=float)
    print(f"results: {out}")
