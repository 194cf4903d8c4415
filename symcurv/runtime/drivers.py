"""Which driver runs a program on the CPU: the generated ``run`` called from Python, or
the same code compiled (runtime/compiled_driver.py).

The Python driver costs nothing to start and Numba's dispatch on every kernel call (cp_net's
hvp: 27 µs of driver against 13 compiled, at B = 1). The compiled driver costs a compile the
first time (0.3-1.4 s per program part on the 2-core VM, then cached beside its module:
9 ms to load). Both call the same compiled kernels for the same argument types, so their
results are equal bit for bit. So a program switches to the compiled driver

- at once (from its second call in the process: the first, in Python, loads every kernel
  overload the compiled driver calls) when its compiled driver is cached on disk;
- else once the dispatch its calls have paid in this process would have paid for the
  compile (``switch_after``: ``COMPILE_SECONDS`` over ``DISPATCH_SECONDS`` per compiled call
  in ``run``; cp_net's hvp, 42 calls: after 53 000 calls). Compiling at once would lose a
  second to every short run; never compiling would lose 19 µs per call forever; switching
  when the two are equal never costs more than twice the better choice made in hindsight
  (the ski-rental rule), and the next process loads the driver from the cache.

``SYMCURV_DRIVER`` overrides this: ``python`` (never compile), ``compiled`` (from the second
call, compiling if need be), ``auto`` (the default above). A driver that fails to compile
stays in Python with a ``RuntimeWarning`` (an error under ``SYMCURV_COMPILE_STRICT=1``, as
the test suite runs). The cold build is not slowed: nothing here runs before a call.
"""

from __future__ import annotations

import dis
import math
import os
import time
import warnings
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

from numba import typeof

from symcurv import errors
from symcurv.runtime import compiled_driver

MODE_ENV = "SYMCURV_DRIVER"
MODES = ("auto", "python", "compiled")
COMPILE_SECONDS = 1.0  # a driver's compile (0.3-1.4 s on the 2-core VM, "Session 18")
DISPATCH_SECONDS = 0.45e-6  # Numba's dispatch of one kernel call from Python
MAX_MISSES = 3  # calls that met an overload not loaded yet, before a part stays in Python
STRICT_ENV = "SYMCURV_COMPILE_STRICT"  # as runtime/compile_parallel.py (which imports Program)


def mode() -> str:
    """The driver policy ``SYMCURV_DRIVER`` asks for (default ``auto``)."""
    want = os.environ.get(MODE_ENV, "auto") or "auto"
    if want not in MODES:
        raise errors.BuildError(
            f"{MODE_ENV}={want!r}",
            where="the environment",
            fix=f"set {MODE_ENV} to one of {', '.join(MODES)}, or unset it",
        )
    return want


def calls_in(module: ModuleType) -> int:
    """How many calls of compiled functions ``module.run`` makes: the loads of their names
    (compiled_driver.compiled_names) in its bytecode."""
    names = compiled_driver.compiled_names(module)
    loads = ("LOAD_GLOBAL", "LOAD_ATTR", "LOAD_METHOD")
    return sum(i.opname in loads and i.argval in names for i in dis.get_instructions(module.run))


def cached_on_disk(module: ModuleType) -> bool:
    """Is a compiled ``run`` of ``module`` in Numba's cache beside it (its index file)?"""
    path = Path(module.__file__)
    return any((path.parent / "__pycache__").glob(f"{path.stem}.run-*.nbi"))


class Drivers:
    """The drivers of one Program's CPU modules: ``run(part, *args)`` calls the compiled one
    where there is one, else the Python ``run`` (and counts the call)."""

    def __init__(self, modules: dict[str, ModuleType], backend: str) -> None:
        self.modules = modules
        self.mode = mode() if backend == "cpu" else "python"
        self.compiled: dict[str, object] = {}  # part -> dispatcher, or None: stays Python
        self.calls: Counter = Counter()
        self.misses: Counter = Counter()
        self._switch_after: dict[str, int] = {}

    @contextmanager
    def policy(self, mode: str):
        """Run under ``mode`` for a while (the build's dry run: ``python``, around its
        recorders; ``compile_all``: ``compiled``)."""
        saved, self.mode = self.mode, mode
        try:
            yield
        finally:
            self.mode = saved

    def run(self, part: str, *args):
        driver = self.compiled.get(part) if self.mode != "python" else None
        if driver is not None:
            try:
                return driver(*args)
            except compiled_driver.MissingAddress:  # an overload not loaded in this process:
                pass  # the Python driver loads it (every kernel overwrites what it writes)
            except TypeError:  # argument types it was not compiled for (a read-only array)
                return self.modules[part].run(*args)
            result = self.modules[part].run(*args)
            compiled_driver.register(compiled_driver.driver_functions(self.modules[part]))
            self.misses[part] += 1
            if self.misses[part] >= MAX_MISSES:  # (never seen: every overload is registered)
                self.compiled[part] = self._give_up(part, "an overload stayed missing")
            return result
        result = self.modules[part].run(*args)
        if self.mode != "python" and part not in self.compiled:
            self.calls[part] += 1
            if self._due(part):
                self.compiled[part] = self._compile(part, args)
        return result

    def _due(self, part: str) -> bool:
        n = self.calls[part]
        if self.mode == "compiled" or n >= self.switch_after(part):
            return True
        return n == 1 and cached_on_disk(self.modules[part])

    def switch_after(self, part: str) -> int:
        """The calls after which ``auto`` compiles ``part``'s driver (see the docstring);
        worked out once per part (reading the bytecode takes longer than a call)."""
        if part not in self._switch_after:
            sites = max(calls_in(self.modules[part]), 1)
            self._switch_after[part] = math.ceil(COMPILE_SECONDS / (DISPATCH_SECONDS * sites))
        return self._switch_after[part]

    def _compile(self, part: str, args):
        """The compiled driver of ``part`` for these arguments' types (compiled now, or
        loaded from the cache), or None with a warning where it cannot be compiled."""
        module = self.modules[part]
        if getattr(module.run, "__code__", None) is None or module.run.__closure__:
            return None  # not the generated run (a stand-in put there at run time)
        try:
            driver = compiled_driver.compile_driver(module)
            driver.compile(tuple(typeof(a) for a in args))
            driver.disable_compile()  # other types (a read-only batch) run in Python
            compiled_driver.register(compiled_driver.driver_functions(module))
            return driver
        except Exception as e:
            return self._give_up(part, f"{type(e).__name__}: {(str(e) or ' ').splitlines()[0]}", e)

    def _give_up(self, part: str, why: str, error: Exception | None = None) -> None:
        """Stay in Python for ``part`` (a warning; an error under SYMCURV_COMPILE_STRICT)."""
        if os.environ.get(STRICT_ENV) == "1":
            raise RuntimeError(f"program part '{part}': compiled driver: {why}") from error
        warnings.warn(
            f"program part '{part}' keeps its Python driver ({why})", RuntimeWarning, stacklevel=4
        )


def compile_all(prog) -> float:
    """Compile the driver of every part of ``prog``'s programs into its build (``symcurv
    build --drivers``): each program called once on a 2-case batch with the ``compiled``
    policy, so that every later process runs the compiled drivers from its second call.
    Returns the seconds it took."""
    from symcurv.runtime.compile_parallel import call_once  # (it imports Program)

    if prog.backend != "cpu":
        raise errors.BuildError(
            f"compiled drivers are for cpu builds, not {prog.backend}",
            where=prog.build_dir,
            fix="drop --drivers (a GPU build's driver launches its kernels)",
        )
    start, theta = time.perf_counter(), prog.init(0)
    with prog._drivers.policy("compiled"):
        for name in prog.programs:
            call_once(prog, name, theta)
    return time.perf_counter() - start
