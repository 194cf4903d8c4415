"""Where a cold build's compile time goes (issue 15, goal 3): CPU seconds per phase, per
kernel and per Numba pass, in one process (SYMCURV_COMPILE_WORKERS=1, so every compile
is seen here).

    python benchmarks/compile_profile.py                      # the autoencoder, all programs
    python benchmarks/compile_profile.py --model cp_net --programs loss,grad

CPU seconds (``time.process_time``) rather than wall seconds, so a busy machine moves the
numbers less. Numba's event API times each top-level compile (``numba:compile``), each
compiler pass (``numba:run_pass``: typing, lowering to LLVM IR …) and the time spent
holding the LLVM lock (``numba:llvm_lock``: LLVM's optimisation and code generation);
writing the cache is timed around ``Cache.save_overload``. Also printed: the program
modules' kernel calls against the distinct kernels the build compiles
(``codegen/kernel_files.py``).
"""

from __future__ import annotations

import argparse
import collections
import importlib
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
os.environ["SYMCURV_COMPILE_WORKERS"] = "1"

from numba.core import caching, event  # noqa: E402

from symcurv import pipeline  # noqa: E402
from symcurv.runtime import build as build_dir  # noqa: E402
from symcurv.runtime import compile_parallel  # noqa: E402


class Timings(event.Listener):
    """CPU seconds of Numba's compile events, nested events counted once (outermost)."""

    def __init__(self) -> None:
        self.stack: list[tuple[str, dict, float]] = []
        self.kernels: list[tuple[str, float]] = []
        self.passes: dict[str, float] = collections.defaultdict(float)
        self.llvm = 0.0

    def on_start(self, ev) -> None:
        self.stack.append((ev.kind, ev.data, time.process_time()))

    def on_end(self, ev) -> None:
        kind, data, t0 = self.stack.pop()
        dt = time.process_time() - t0
        if kind == "numba:compile" and not any(k == kind for k, _, _ in self.stack):
            self.kernels.append((data["dispatcher"].py_func.__name__, dt))
        elif kind == "numba:run_pass":
            self.passes[data["name"].split(" [")[0]] += dt
        elif kind == "numba:llvm_lock":
            self.llvm += dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="autoencoder", help="a module of examples/")
    ap.add_argument("--programs", default="all")
    args = ap.parse_args()
    model = importlib.import_module(args.model).model()
    saving = [0.0]
    save = caching.Cache.save_overload

    def timed_save(self, *a, **k):
        t = time.process_time()
        try:
            return save(self, *a, **k)
        finally:
            saving[0] += time.process_time() - t

    caching.Cache.save_overload = timed_save
    with tempfile.TemporaryDirectory() as tmp:
        t = time.process_time()
        root = pipeline.build(model, args.programs, build_dir=tmp, progress=False)
        t_build = time.process_time() - t
        t = time.process_time()
        prog = build_dir.load(root)
        t_load = time.process_time() - t
        names = list(prog.programs)
        t = time.process_time()
        found = compile_parallel.kernel_signatures(prog, names)
        t_dry = time.process_time() - t
        calls = sum(len(compile_parallel.program_keys(prog, n)) for n in names)
        timings = Timings()
        kinds = ("numba:compile", "numba:run_pass", "numba:llvm_lock")
        t = time.process_time()
        with (
            event.install_listener(kinds[0], timings),
            event.install_listener(kinds[1], timings),
            event.install_listener(kinds[2], timings),
        ):
            pipeline.warm(prog, progress=False)
        t_warm = time.process_time() - t
    compiled = sum(dt for _, dt in timings.kernels)
    print(f"model {args.model}, programs {args.programs}: {len(names)} programs")
    print(f"kernel calls in the program modules: {calls}; distinct kernels: {len(found)}")
    print(
        f"CPU s: build (files) {t_build:.2f}, sc.load {t_load:.2f}, dry run {t_dry:.2f}, "
        f"warm {t_warm:.2f} (compiles {compiled:.2f} in {len(timings.kernels)}, of which "
        f"LLVM {timings.llvm:.2f}, cache writes {saving[0]:.2f})"
    )
    top = sorted(timings.passes.items(), key=lambda kv: -kv[1])[:6]
    print("Numba passes (CPU s):", ", ".join(f"{k} {v:.2f}" for k, v in top))
    slow = sorted(timings.kernels, key=lambda kv: -kv[1])[:5]
    print("slowest kernels (CPU s):", ", ".join(f"{k} {v:.2f}" for k, v in slow))
    print(f"load average: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
