"""Timing helpers shared by the benchmark scripts (never used by the tests)."""

from __future__ import annotations

import os
import platform
import time

import numpy as np


def best_of(fn, repeat: int = 7, number: int = 1) -> float:
    """Median seconds per call over ``repeat`` rounds of ``number`` calls, after one
    warm-up call (the median resists the odd scheduler hiccup better than the mean)."""
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - t) / number)
    return float(np.median(times))


def interleaved(fns: dict, repeat: int = 7) -> dict:
    """Median seconds per call of each function, calling them round-robin so that a noisy
    (shared, throttled) machine slows all of them alike and the RATIOS stay meaningful."""
    for fn in fns.values():
        fn()
    times = {k: [] for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return {k: float(np.median(v)) for k, v in times.items()}


def blocks(fns: dict, rounds: int = 7, block: int = 3) -> dict:
    """Per round, the best of ``block`` consecutive calls of each function in turn; returns
    {name: [seconds per round]}. Consecutive calls warm what a function's first call after
    another one pays for (caches, parked BLAS threads); rounds close in time let a ratio of
    two functions be taken per round, which cancels the slow phases of a shared VM."""
    for fn in fns.values():
        fn()
    out = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            best = float("inf")
            for _ in range(block):
                t = time.perf_counter()
                fn()
                best = min(best, time.perf_counter() - t)
            out[k].append(best)
    return out


def machine() -> str:
    """One line naming the machine: CPU model, cores, BLAS, numba/numpy versions."""
    import numba

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    blas = "?"
    try:
        cfg = np.show_config(mode="dicts")
        blas = cfg["Build Dependencies"]["blas"]["name"]
    except Exception:  # older numpy: no dict mode
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"numpy {np.__version__} ({blas}), numba {numba.__version__}"
    )


def table(rows: list[list], header: list[str]) -> str:
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in [header, *cells]) for i in range(len(header))]
    out = [" | ".join(h.ljust(w) for h, w in zip(header, widths))]
    out.append("-|-".join("-" * w for w in widths))
    out += [" | ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells]
    return "\n".join(out)


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f}"


def pinned_env(threads: int, env: dict | None = None) -> dict:
    """An environment for a benchmark subprocess that runs on ``threads`` threads whatever the
    library: BLAS (OpenBLAS/MKL/OpenMP), Numba's pool and XLA's CPU client. Use it for every
    side of a comparison so that none of them gets more cores than another."""
    env = dict(os.environ if env is None else env)
    n = str(int(threads))
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env[k] = n
    xla = [f for f in env.get("XLA_FLAGS", "").split() if "multi_thread_eigen" not in f]
    if int(threads) == 1:  # XLA has no thread-count flag; one thread is its Eigen pool off
        xla += ["--xla_cpu_multi_thread_eigen=false", "intra_op_parallelism_threads=1"]
    env["XLA_FLAGS"] = " ".join(xla)
    env["SYMCURV_BENCH_CPUS"] = ",".join(str(c) for c in sorted(os.sched_getaffinity(0))[: int(n)])
    return env


def pin_to_cpus() -> None:
    """In a subprocess started with :func:`pinned_env`: restrict this process (and the threads
    it starts) to the CPUs the parent chose, so every side runs on the same cores."""
    cpus = os.environ.get("SYMCURV_BENCH_CPUS")
    if cpus:
        os.sched_setaffinity(0, {int(c) for c in cpus.split(",")})


def median_time(fn, repeat: int = 7, min_time: float = 2e-3) -> float:
    """Median seconds per call over ``repeat`` measurements after two warm-up calls; each
    measurement runs enough back-to-back calls to last ``min_time`` (so that microsecond
    calls are not timed at the clock's resolution)."""
    fn()
    t = time.perf_counter()
    fn()
    first = time.perf_counter() - t
    number = max(1, int(min_time / max(first, 1e-7)))
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - t) / number)
    return float(np.median(times))
