"""Compile a build's kernels ahead of time, each once, several at once, in worker processes.

Numba compiles a kernel the first time it is called, and writes the machine code to the
build's on-disk cache (``kernels/shared/__pycache__``), from which every later process
loads it. The programs of a build share their kernels: each distinct kernel is one file,
``kernels/shared/<label>_<hash>.py`` (``codegen/kernel_files.py``), that every program
module calling it imports. So the unit of work is a kernel, not a program:

1. ``kernel_signatures``: a dry run of every program's driver (on call_once's 2-case
   batch) with each kernel replaced by a recorder of its argument types, and the
   driver's own BLAS steps skipped; it gives each distinct kernel and the Numba types it
   is called with (0.2 s for the autoencoder's 18 programs);
2. ``compile_kernels``: those not compiled or cached yet, largest first, are shared out
   between a few processes, each compiling one kernel at a time for its types
   (``Dispatcher.compile``), which writes it to the cache;
3. ``load_compiled``: the calling process loads the kernels the workers compiled from
   the cache (no program is run), so the Program it returns calls without compiling.

Workers are plain subprocesses (``python -m symcurv.runtime.compile_parallel BUILD_DIR
PROGRAMS``) that make the same dry run, then read kernel keys on stdin and answer one
line per kernel on stdout. Unlike a ``multiprocessing`` pool with the spawn start method,
they never re-import the caller's ``__main__``, so a user's script without an ``if
__name__ == "__main__"`` guard does not run again in each worker. The calling process
compiles kernels too, from the same queue (it is one of the workers), so on 2 cores one
subprocess is started.

Concurrency and Numba's cache: every kernel is compiled by one process, and writes only
its own file's cache entries; the shared runtime functions (``runtime/vecmath.py``) may
be cached by two workers at once, and Numba writes each cache file to a unique temporary
name and renames it into place (its caching docs: safe where a rename is atomic, as on a
local file system), so a concurrent writer (two builds into one directory) can at worst
drop another's index entry, which is then compiled again.

``SYMCURV_COMPILE_WORKERS`` sets the number of compiling processes (the caller included;
default: the CPUs this process may run on); 1 compiles serially in the caller. Where a
worker cannot be started (no ``sys.executable``, a sandbox refusing ``fork``/``exec``) or
dies, its kernels are compiled serially in the caller, and the progress line says so. A
kernel whose compile fails in a worker is compiled again in the caller, so the error the
user sees is the one a serial build raises. ``SYMCURV_COMPILE_STRICT=1`` (the test suite
sets it) turns that fallback into an error: a build that silently lost its workers once
went unnoticed for a session (a driver line the dry run could not run: docs/benchmarks.md,
"Session 16"), its result correct and its cold build 40-50 % slower.
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
from types import ModuleType

import numpy as np
from numba.core.dispatcher import Dispatcher

from symcurv.runtime.program import extra_leaves

ENV = "SYMCURV_COMPILE_WORKERS"
STRICT_ENV = "SYMCURV_COMPILE_STRICT"  # "1": a worker's failure raises (see the docstring)
_REPLY = "symcurv-compiled "  # a worker's answer line on stdout (other lines are ignored)


def call_once(prog, name: str, theta: np.ndarray | None = None) -> None:
    """Run program ``name`` once on a 2-case batch of harmless values (θ from the
    initialisers unless given, inputs in (0.1, 0.9), every direction and noise leaf 1):
    the call that makes Numba compile it (or load it from the cache)."""
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
    theta = prog.init(0) if theta is None else theta
    prog.run(name, theta, batch, check=False, v=v, extras=extras)
    if spec.get("whole"):  # that ran the whole graph; a State runs the split parts
        cached = prog.run(spec["static"], theta, batch, check=False)
        prog.run(name, theta, batch, check=False, v=v, extras={**extras, **cached})


def workers_wanted(n_jobs: int, device=None) -> int:
    """How many processes compile (the caller included): ``SYMCURV_COMPILE_WORKERS``, or
    the CPUs this process may use; never more than there are jobs. A backend without
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
    return max(1, min(n or 1, n_jobs))


class _Worker:
    """One compiling subprocess: a name on its stdin, one reply line on its stdout."""

    def __init__(self, build_dir: str, names: list[str]) -> None:
        root = str(Path(__file__).resolve().parents[2])  # this symcurv, not another one
        path = [root, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(path))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "symcurv.runtime.compile_parallel", build_dir, ",".join(names)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )

    def compile(self, k: str) -> dict:
        """Compile kernel ``k`` (a ``key``) in the worker: ``{"seconds": s}`` or
        ``{"error": text}``; raises OSError when the worker is gone."""
        self.proc.stdin.write(k + "\n")
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


def kernel_signatures(
    prog, names: list[str], failed: list[str] | None = None
) -> dict[str, tuple[Dispatcher, list[tuple]]]:
    """``{key: (compiled function, [argument types, ...])}`` of every compiled function
    the drivers of programs ``names`` call (their kernels, and ``syrk_tn``), found by a
    dry run: each driver runs once on call_once's batch with its kernels replaced by
    recorders that note the Numba types of their arguments and compute nothing (the
    plain-Python driver's own numpy steps run on whatever the buffers hold). A kernel
    shared by several programs is one entry: one compile for all of them. A program whose
    dry run raises is appended to ``failed`` (the caller compiles it by running it, which
    raises the error a serial build would)."""
    found: dict[str, tuple[Dispatcher, list[tuple]]] = {}

    class Recorder:
        def __init__(self, f: Dispatcher) -> None:
            self.f = f

        def __call__(self, *args) -> bool:
            f, sigs = found.setdefault(key(self.f), (self.f, []))
            sig = tuple(f.typeof_pyval(a) for a in args)
            if sig not in sigs:
                sigs.append(sig)
            # a driver folds the checks' answers into its flags (``bounded &= ...``,
            # codegen/guards.py): a bool keeps that arithmetic valid in the dry run
            return False

    saved = []
    try:
        for part in {p for n in names for p in _parts(prog, n)}:
            module = prog._modules[part]
            for attr, f in list(vars(module).items()):
                if f is np:  # the driver's BLAS steps: skipped
                    stand_in = _NoBLAS()
                elif isinstance(f, ModuleType):  # vm.logsumexp_rows(...) in a driver
                    stand_in = _Recording(f, Recorder)
                elif _is_kernel(f):
                    stand_in = Recorder(f)
                else:
                    continue
                saved.append((module, attr, f))
                setattr(module, attr, stand_in)
        theta = prog.init(0)  # drawn once: the autoencoder's sparse init costs 0.1 s
        # the buffers hold whatever they held; no driver is compiled around the recorders
        with np.errstate(all="ignore"), prog._drivers.policy("python"):
            for name in names:
                try:
                    call_once(prog, name, theta)
                except Exception:  # noqa: BLE001 (compiled by running it, see above)
                    if failed is None:
                        raise
                    failed.append(name)
    finally:
        for module, attr, f in saved:
            setattr(module, attr, f)
    return found


class _NoBLAS:
    """numpy for a dry run of a driver: ``np.dot`` computes nothing (its types are
    numpy's, nothing Numba compiles), everything else is numpy's."""

    def __getattr__(self, name: str):
        return getattr(np, name)

    @staticmethod
    def dot(*_args, **_kwargs) -> None:
        return None


class _Recording:
    """A module of compiled functions (``vm``) for a dry run: its functions recorded."""

    def __init__(self, module: ModuleType, recorder) -> None:
        self.module, self.recorder = module, recorder

    def __getattr__(self, name: str):
        f = getattr(self.module, name)
        return self.recorder(f) if _is_kernel(f) else f


def key(f: Dispatcher) -> str:
    """A compiled function's name, the same in every process that loads the build."""
    return f"{f.py_func.__module__}:{f.py_func.__qualname__}"


def cold(found: dict[str, tuple[Dispatcher, list[tuple]]]) -> list[str]:
    """The keys of ``found`` that neither this process nor Numba's cache holds compiled,
    largest first (the order that balances the processes best)."""
    return sorted(
        (k for k, (f, sigs) in found.items() if not _compiled_or_cached(f, sigs)),
        key=lambda k: (-_weight(*found[k]), k),
    )


def compile_kernels(
    prog,
    names: list[str],
    found: dict[str, tuple[Dispatcher, list[tuple]]],
    order: list[str],
    done: Callable[[str, float, str], None],
    n_workers: int,
) -> tuple[str | None, set[str]]:
    """Compile the kernels ``order`` (keys of ``found``, from ``kernel_signatures(prog,
    names)``), each once, in ``n_workers`` processes, the caller one of them.
    ``done(key, seconds, where)`` is called as each is compiled (``where``: "worker" or
    "here"), one call at a time. Returns why it fell back to fewer processes, if it did
    (None otherwise), and the keys the workers compiled (this process then loads them
    from Numba's cache)."""
    n_workers = max(1, min(n_workers, len(order)))
    todo: queue.Queue[str] = queue.Queue()
    for k in order:
        todo.put(k)
    lock = threading.Lock()

    def report(k: str, seconds: float, where: str) -> None:
        with lock:
            done(k, seconds, where)

    fallback: list[str] = []
    retry: list[str] = []  # failed in a worker: compiled here, so the caller sees the error
    in_workers: set[str] = set()

    def serve(worker: _Worker) -> None:
        try:
            while True:
                try:
                    k = todo.get_nowait()
                except queue.Empty:
                    break
                try:
                    reply = worker.compile(k)
                except (OSError, ValueError) as e:  # gone, or an unreadable reply
                    fallback.append(f"a compile worker failed ({e})")
                    todo.put(k)
                    break
                if "error" in reply:
                    retry.append(k)
                else:
                    in_workers.add(k)
                    report(k, reply["seconds"], "worker")
        finally:
            worker.close()

    threads = []
    for _ in range(n_workers - 1):
        try:
            worker = _Worker(str(prog.build_dir), names)
        except OSError as e:
            fallback.append(f"no compile worker could be started ({e})")
            break
        threads.append(threading.Thread(target=serve, args=(worker,), daemon=True))
        threads[-1].start()

    def here(k: str) -> None:
        t = time.perf_counter()
        f, sigs = found[k]
        for sig in sigs:
            f.compile(sig)
        report(k, time.perf_counter() - t, "here")

    while True:  # the caller compiles from the same queue
        try:
            k = todo.get_nowait()
        except queue.Empty:
            if not any(t.is_alive() for t in threads):
                if todo.empty():
                    break
                continue
            time.sleep(0.05)
            continue
        try:
            here(k)
        except BaseException:
            while not todo.empty():  # the workers stop after their current kernel
                todo.get_nowait()
            raise
    for t in threads:
        t.join()
    for k in retry:  # raises the compile error as a serial build would
        here(k)
    reason = "; ".join(dict.fromkeys(fallback)) or None
    if reason and os.environ.get(STRICT_ENV) == "1":
        raise RuntimeError(f"the parallel compile fell back to this process: {reason}")
    return reason, in_workers


def compile_by_running(prog, names: list[str]):
    """``(name, seconds)`` as each program is compiled in this process by running it once:
    for a backend whose kernels are not plain Numba CPU functions (a GPU's launch
    drivers), which neither the dry run nor worker processes serve."""
    theta = prog.init(0)
    for name in names:
        t = time.perf_counter()
        call_once(prog, name, theta)
        yield name, time.perf_counter() - t


def load_compiled(
    found: dict[str, tuple[Dispatcher, list[tuple]]], from_workers: set[str]
) -> list[str]:
    """Load the machine code of the kernels the workers compiled (``from_workers``, keys
    of ``found``) from the cache they wrote, into this process, without running any
    program; the keys Numba had to compile again (a cache miss: a file system where the
    workers' cache is not visible here)."""
    missed = []
    for k in sorted(from_workers):
        f, sigs = found[k]
        for sig in sigs:
            f.compile(sig)
        if sum(f.stats.cache_misses.values()):
            missed.append(k)
    return missed


def to_compile(prog, names: list[str]) -> list[str]:
    """The programs of ``names`` with a kernel that neither this process nor Numba's
    cache holds compiled already."""
    return [
        n
        for n in names
        if not all(_compiled_or_cached(f, [], loaded=True) for f in program_kernels(prog, n))
    ]


def _parts(prog, name: str) -> list[str]:
    """Program ``name``'s modules: itself, its static part and its whole graph (direct
    calls, codegen/parts.py), where built."""
    spec = prog.manifest["programs"][name]
    return [name, *[spec[r] for r in ("static", "whole") if spec.get(r)]]


def _is_kernel(f) -> bool:
    """A compiled function a driver calls (not the scalar formulas inlined into a map)."""
    return isinstance(f, Dispatcher) and f.targetoptions.get("inline") != "always"


def program_kernels(prog, name: str) -> list[Dispatcher]:
    """The compiled functions program ``name``'s drivers call: what its first call
    compiles."""
    return [f for p in _parts(prog, name) for f in vars(prog._modules[p]).values() if _is_kernel(f)]


def program_keys(prog, name: str) -> list[str]:
    """The ``key`` of each kernel call in program ``name``'s drivers."""
    return [key(f) for f in program_kernels(prog, name)]


def _compiled_or_cached(f: Dispatcher, sigs: list[tuple], loaded: bool = False) -> bool:
    """Is ``f`` compiled in this process for ``sigs`` already (for some signature, with
    ``loaded``), or does Numba's cache hold an index for it written after its source?
    (A guess that only decides whether a compile is worth scheduling: Numba still
    checks every entry.)"""
    if (f.overloads and loaded) or (sigs and all(s in f.overloads for s in sigs)):
        return True
    src = Path(f.py_func.__code__.co_filename)
    index = list((src.parent / "__pycache__").glob(f"{src.stem}.{f.__name__}-*.nbi"))
    return bool(index) and max(i.stat().st_mtime for i in index) >= src.stat().st_mtime


SIGNATURE_BASE = 1500  # characters of source a compile costs however short the source


def _weight(f: Dispatcher, sigs: list[tuple]) -> int:
    """A kernel's expected compile cost, for the schedule: its source's length plus a
    fixed part, once per signature (runtime/gemm.py's one line is compiled for each
    operand layout, and Numba's BLAS call is not short: compiled last, its signatures
    kept the other process idle at the end of a build)."""
    import inspect

    try:
        n = len(inspect.getsource(f.py_func))
    except (OSError, TypeError):
        n = 0
    return (n + SIGNATURE_BASE) * max(len(sigs), 1)


def _serve(build_dir: str, names: list[str]) -> None:
    """A worker: load the build, find its kernels' signatures (the same dry run as the
    caller's), then compile each kernel named on stdin (by ``key``)."""
    from symcurv.runtime import build

    prog = build.load(build_dir)
    found = kernel_signatures(prog, names)
    for line in sys.stdin:
        k = line.strip()
        t = time.perf_counter()
        try:
            f, sigs = found[k]
            for sig in sigs:
                f.compile(sig)
            reply = {"seconds": time.perf_counter() - t}
        except Exception as e:  # noqa: BLE001 (reported; the caller compiles it again)
            reply = {"error": f"{type(e).__name__}: {e}"}
        print(_REPLY + json.dumps(reply), flush=True)


if __name__ == "__main__":
    _serve(sys.argv[1], sys.argv[2].split(","))
