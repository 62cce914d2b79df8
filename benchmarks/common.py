"""Helpers shared by the benchmarks: timing, blocking on results, peak-RSS probes.

Timings on a shared machine are noisy, so every benchmark interleaves the
things it compares (A, B, A, B, ...) within one process and reports medians
and ratios of medians.
"""

import atexit
import contextlib
import importlib
import io
import os
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
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


def wall_and_cpu(fn, calls):
    """``(wall, cpu)``: two lists of the seconds of each of ``calls`` calls of ``fn()``, wall clock and process CPU."""
    wall, cpu = [], []
    for _ in range(calls):
        w, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    return wall, cpu


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


def main_alone(name, run, markdown, argv=None, **run_arguments):
    """``python benchmarks/<name>.py [--quick] [--out FILE]``: run one benchmark module on its own.

    The module has limited the thread pools at its top, before importing
    keras (``if __name__ == "__main__": configure_threads(1)``); ``run.py``
    runs every module the same way, so no module imports ``run.py``.
    ``run_arguments`` go to ``run`` (e.g. a module's own options).
    """
    import argparse

    parser = argparse.ArgumentParser(description=f"benchmarks/{name}.py (also: benchmarks/run.py --only {name})")
    parser.add_argument("--quick", action="store_true", help="smoke run: few repeats, small epochs")
    parser.add_argument("--out", help="also write the results as JSON here")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    results = run(quick=args.quick, **run_arguments)
    print(markdown(results))
    print(f"({backend()}, {time.perf_counter() - start:.0f} s)")
    if args.out:
        write_results(results, args.out)
    return 0


def load_library(revision):
    """lossweave as it was at git revision ``revision``, imported beside today's.

    ``git archive`` reads its ``src/lossweave`` (nothing in the working tree
    changes); the copy, in a temporary folder, is renamed ``lossweave_<sha>``
    (imports and registered names), so both versions live in one process.
    Returns ``(short sha, module)``.
    """
    root = subprocess.check_output(
        ["git", "rev-parse", "--show-toplevel"], cwd=os.path.dirname(os.path.abspath(__file__)), text=True
    ).strip()
    sha = subprocess.check_output(["git", "rev-parse", "--short", revision], cwd=root, text=True).strip()
    name = f"lossweave_{sha}"
    archive = subprocess.check_output(["git", "archive", sha, "src/lossweave"], cwd=root)
    folder = tempfile.mkdtemp(prefix="lossweave-before-")
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        for member in tar.getmembers():
            if not member.isfile():
                continue
            data = tar.extractfile(member).read()
            if member.name.endswith(".py"):
                data = re.sub(rb"\blossweave\b", name.encode(), data)
            path = os.path.join(folder, name, os.path.relpath(member.name, "src/lossweave"))
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)
    atexit.register(shutil.rmtree, folder, True)
    sys.path.insert(0, folder)
    return sha, importlib.import_module(name)


def xla_flops(trainable, data):
    """JAX: the flops XLA counts in the compiled train step of ``trainable`` on one batch (noise-free)."""
    import jax

    state = (
        [v.value for v in trainable.trainable_variables],
        [v.value for v in trainable.non_trainable_variables],
        [v.value for v in trainable.optimizer.variables],
        [v.value for v in trainable.metrics_variables],
    )
    with recording_checks(trainable):  # as the Objective's guard traces its step
        compiled = jax.jit(trainable.train_step).lower(state, data).compile()
    cost = compiled.cost_analysis()
    return float((cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"])


@contextlib.contextmanager
def recording_checks(trainable):
    """JAX: checks recorded in the step's state, not raised, as inside an Objective's guarded step."""
    library = sys.modules[type(trainable).__module__.split(".")[0]]
    if not hasattr(library, "Objective"):  # a plain Keras model: nothing is checked
        yield
    elif hasattr(getattr(library, "_backend", None) or getattr(library, "backend", None), "recording_checks"):
        with (getattr(library, "_backend", None) or library.backend).recording_checks():
            yield
    else:  # lossweave before the trainer move: its guard set this flag itself
        local = importlib.import_module(f"{library.__name__}.backend._jax")._local
        local.guarded = True
        try:
            yield
        finally:
            local.guarded = False
