"""Compile a build's programs ahead of time, several at once, in worker processes.

Numba compiles a program the first time it runs, and writes the machine code to the
build's on-disk cache (``kernels/__pycache__``), from which every later process loads it.
Each program is its own module (``kernels/<program>.py``, plus ``<program>_static.py``
for a split one), so programs compile independently: this module runs the 2-case call
that compiles one program in each of a few worker processes at a time, and then makes the
same call in the calling process, which now loads the machine code from the cache
instead of compiling it (``sc.load`` + first call, as any later process would).

Workers are plain subprocesses (``python -m symcurv.runtime.compile_parallel BUILD_DIR``)
that read program names on stdin and answer one line per program on stdout. Unlike a
``multiprocessing`` pool with the spawn start method, they never re-import the caller's
``__main__``, so a user's script without an ``if __name__ == "__main__"`` guard does not
run again in each worker. The calling process compiles programs too, from the same queue
(it is one of the workers), so on 2 cores one subprocess is started.

Concurrency and Numba's cache: every program writes only its own modules' cache files;
the shared runtime functions (``runtime/vecmath.py``) may be cached by two workers at
once, and Numba writes each cache file to a unique temporary name and renames it into
place (its caching docs: safe where a rename is atomic, as on a local file system), so a
concurrent writer can at worst drop another's index entry, which is then recompiled.

``SYMCURV_COMPILE_WORKERS`` sets the number of compiling processes (the caller included;
default: the CPUs this process may run on); 1 compiles serially in the caller. Where a
worker cannot be started (no ``sys.executable``, a sandbox refusing ``fork``/``exec``) or
dies, its programs are compiled serially in the caller, and the progress line says so. A
program whose compile fails in a worker is compiled again in the caller, so the error the
user sees is the one a serial build raises.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from symcurv.runtime.program import extra_leaves

ENV = "SYMCURV_COMPILE_WORKERS"
_REPLY = "symcurv-compiled "  # a worker's answer line on stdout (other lines are ignored)


def call_once(prog, name: str) -> None:
    """Run program ``name`` once on a 2-case batch of harmless values (θ from the
    initialisers, inputs in (0.1, 0.9), every direction and noise leaf 1): the call that
    makes Numba compile it (or load it from the cache)."""
    rng = np.random.default_rng(0)
    batch = {
        n: rng.uniform(0.1, 0.9, size=(2, d["size"])).astype(prog.dtype)
        for n, d in prog.inputs.items()
    }
    spec = prog.manifest["programs"][name]
    extras = {
        e: np.ones((2, size) if batched else (size,), dtype=prog.dtype)
        for role in ("noise", "direction")
        for e, batched, size in extra_leaves(spec, role)
    }
    v = np.ones(prog.n_params, dtype=prog.dtype)
    prog._run(name, prog.init(0), batch, check=False, v=v, extras=extras)


def workers_wanted(n_programs: int, device=None) -> int:
    """How many processes compile (the caller included): ``SYMCURV_COMPILE_WORKERS``, or
    the CPUs this process may use; never more than there are programs. A backend without
    ``compiles_in_workers`` (a GPU: untested with several processes) compiles here."""
    if device is not None and not getattr(device, "compiles_in_workers", False):
        return 1
    env = os.environ.get(ENV, "").strip()
    if env:
        try:
            n = int(env)
        except ValueError:
            n = 1
    else:
        n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(n or 1, n_programs))


class _Worker:
    """One compiling subprocess: a name on its stdin, one reply line on its stdout."""

    def __init__(self, build_dir: str) -> None:
        root = str(Path(__file__).resolve().parents[2])  # this symcurv, not another one
        path = [root, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(path))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "symcurv.runtime.compile_parallel", build_dir],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )

    def compile(self, name: str) -> dict:
        """Compile ``name`` in the worker: ``{"seconds": s}`` or ``{"error": text}``;
        raises OSError when the worker is gone."""
        self.proc.stdin.write(name + "\n")
        self.proc.stdin.flush()
        for line in self.proc.stdout:
            if line.startswith(_REPLY):
                return json.loads(line[len(_REPLY) :])
        raise OSError(f"the compile worker exited (status {self.proc.wait()})")

    def close(self) -> None:
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()


def compile_programs(
    prog,
    names: list[str],
    done: Callable[[str, float, str], None],
    n_workers: int,
) -> str | None:
    """Compile ``names`` (largest first) in ``n_workers`` processes, the caller one of
    them, then load every program in the caller from Numba's cache. ``done(name,
    seconds, where)`` is called as each program is compiled (``where``: "worker" or
    "here"), from the thread that waited for it, one call at a time. Returns why it fell
    back to fewer processes, if it did (None otherwise)."""
    order = to_compile(prog, names)
    ready = [n for n in names if n not in order]  # no worker needed
    n_workers = max(1, min(n_workers, len(order)))
    todo: queue.Queue[str] = queue.Queue()
    for name in order:
        todo.put(name)
    lock = threading.Lock()

    def report(name: str, seconds: float, where: str) -> None:
        with lock:
            done(name, seconds, where)

    fallback: list[str] = []
    retry: list[str] = []  # failed in a worker: compiled here, so the caller sees the error

    def serve(worker: _Worker) -> None:
        try:
            while True:
                try:
                    name = todo.get_nowait()
                except queue.Empty:
                    break
                try:
                    reply = worker.compile(name)
                except (OSError, ValueError) as e:  # gone, or an unreadable reply
                    fallback.append(f"a compile worker failed ({e})")
                    todo.put(name)
                    break
                if "error" in reply:
                    retry.append(name)
                else:
                    report(name, reply["seconds"], "worker")
        finally:
            worker.close()

    threads = []
    for _ in range(n_workers - 1):
        try:
            worker = _Worker(str(prog.build_dir))
        except OSError as e:
            fallback.append(f"no compile worker could be started ({e})")
            break
        threads.append(threading.Thread(target=serve, args=(worker,), daemon=True))
        threads[-1].start()

    for name in ready:  # while the workers start
        t = time.perf_counter()
        call_once(prog, name)
        report(name, time.perf_counter() - t, "here")
    while True:  # the caller compiles from the same queue
        try:
            name = todo.get_nowait()
        except queue.Empty:
            if not any(t.is_alive() for t in threads):
                if todo.empty():
                    break
                continue
            time.sleep(0.05)
            continue
        t = time.perf_counter()
        try:
            call_once(prog, name)
        except BaseException:
            while not todo.empty():  # the workers stop after their current program
                todo.get_nowait()
            raise
        report(name, time.perf_counter() - t, "here")
    for t in threads:
        t.join()
    for name in retry:  # raises the compile error as a serial build would
        t = time.perf_counter()
        call_once(prog, name)
        done(name, time.perf_counter() - t, "here")
    return "; ".join(dict.fromkeys(fallback)) or None


def load_compiled(prog, names: list[str]) -> list[str]:
    """Call each program once in this process so its machine code is loaded from the
    cache the workers wrote; the names of those Numba had to compile again (a cache
    miss: a file system where the workers' cache is not visible here)."""
    missed = []
    for name in names:
        call_once(prog, name)
        if any(sum(f.stats.cache_misses.values()) for f in _kernels(prog, name)):
            missed.append(name)
    return missed


def to_compile(prog, names: list[str]) -> list[str]:
    """The programs of ``names`` that neither this process nor Numba's cache holds
    compiled already, largest first (the order that balances the workers best)."""
    cold = [n for n in names if not _compiled_or_cached(prog, n)]
    return sorted(cold, key=lambda n: -_size(prog, n))


def _kernels(prog, name: str) -> list:
    """The compiled functions of program ``name``'s modules (not the scalar formulas
    inlined into them): what its first call compiles."""
    from numba.core.dispatcher import Dispatcher

    spec = prog.manifest["programs"][name]
    parts = [name, *([spec["static"]] if spec.get("static") else [])]
    return [
        f
        for p in parts
        for f in vars(prog._modules[p]).values()
        if isinstance(f, Dispatcher) and f.targetoptions.get("inline") != "always"
    ]


def _compiled_or_cached(prog, name: str) -> bool:
    """Is program ``name`` compiled in this process already, or does Numba's cache hold
    an entry for each of its functions written after its source? (A guess that only
    decides whether a worker is worth starting: Numba still checks every entry.)"""
    kernels = _kernels(prog, name)
    if all(f.overloads for f in kernels):
        return True
    for f in kernels:
        src = Path(f.py_func.__code__.co_filename)
        index = list((src.parent / "__pycache__").glob(f"{src.stem}.{f.__name__}-*.nbi"))
        if not index or max(i.stat().st_mtime for i in index) < src.stat().st_mtime:
            return False
    return True


def _size(prog, name: str) -> int:
    """Kernels a program compiles (its static part's included): the schedule's weight."""
    spec = prog.manifest["programs"][name]
    static = prog.manifest["programs"].get(spec.get("static", ""), {})
    return len(spec["kernels"]) + len(static.get("kernels", []))


def _serve(build_dir: str) -> None:
    """A worker: load the build, then compile each program named on stdin."""
    from symcurv.runtime import build

    prog = build.load(build_dir)
    for line in sys.stdin:
        name = line.strip()
        t = time.perf_counter()
        try:
            call_once(prog, name)
            reply = {"seconds": time.perf_counter() - t}
        except Exception as e:  # noqa: BLE001 (reported; the caller compiles it again)
            reply = {"error": f"{type(e).__name__}: {e}"}
        print(_REPLY + json.dumps(reply), flush=True)


if __name__ == "__main__":
    _serve(sys.argv[1])
