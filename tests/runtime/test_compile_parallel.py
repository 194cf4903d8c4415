"""The ahead-of-time compile in worker processes (runtime/compile_parallel.py): kernels
compiled in a worker are loaded here from Numba's cache (not compiled twice), a kernel
two programs share is compiled once, and the programs compute what the reference
interpreter computes; without workers it says so and compiles here."""

from __future__ import annotations

import contextlib
import io
import re
import shutil

import models
import pytest

import symcurv as sc
from symcurv import pipeline, testing
from symcurv.runtime import compile_parallel


@pytest.fixture(scope="module")
def built_in_workers(tmp_path_factory):
    """tied's loss and grad compiled by this process and one worker: (Program, stderr)."""
    root = tmp_path_factory.mktemp("par") / "tied"
    mp = pytest.MonkeyPatch()
    mp.setenv(compile_parallel.ENV, "2")
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            prog = sc.compile(models.tied(), ("loss", "grad"), build_dir=root, progress=True)
    finally:
        mp.undo()
    return prog, err.getvalue()


BUILD_KERNEL = "symcurv_kernel_"  # the module of a build's shared kernel file


def _of_the_build(f) -> bool:
    """A kernel of the build's own files (not a helper of the package, such as
    runtime/gemm.py's ``gemm``, compiled into the package's cache once per machine)."""
    return compile_parallel.key(f).startswith(BUILD_KERNEL)


def _fresh_copy(built_in_workers, tmp_path):
    """The workers' build copied without Numba's cache and loaded: nothing compiled yet."""
    dst = tmp_path / "copy"
    shutil.copytree(
        built_in_workers[0].build_dir, dst, ignore=shutil.ignore_patterns("__pycache__")
    )
    return sc.load(dst)


def _refuse(*_a, **_k):
    """A compile worker that cannot start."""
    raise OSError("no processes in this sandbox")


def test_a_worker_compiles_and_this_process_loads_its_cache(built_in_workers):
    prog, err = built_in_workers
    assert "in 2 processes" in err and "cache missed" not in err and "serially" not in err
    # every distinct kernel of the build was compiled once: by the worker (this process
    # then loaded it from the cache the worker wrote: hits, no misses) or here (misses, no
    # hits); the package's own helpers (runtime/gemm.py) are cached once per machine
    kernels = {
        compile_parallel.key(f): f
        for name in prog.programs
        for f in compile_parallel.program_kernels(prog, name)
        if _of_the_build(f)
    }
    stats = {
        k: (sum(f.stats.cache_hits.values()), sum(f.stats.cache_misses.values()))
        for k, f in kernels.items()
    }
    from_cache = [k for k, (hits, misses) in stats.items() if hits and not misses]
    compiled_here = [k for k, (hits, misses) in stats.items() if misses and not hits]
    assert from_cache and compiled_here and len(from_cache) + len(compiled_here) == len(stats), (
        stats
    )
    assert f"{len(from_cache)} kernels in worker processes" in err
    theta, batch = prog.init(0), testing.random_batch(prog, 5)
    errs = testing.compare_to_reference(prog, theta, batch)
    assert max(errs.values()) < 1e-12, errs


def test_programs_share_one_compiled_kernel_per_distinct_loop(built_in_workers):
    """loss and grad call the same objective reduction: one function, one file, one
    compile, used by both modules."""
    prog, err = built_in_workers
    loss = set(compile_parallel.program_keys(prog, "loss"))
    grad = set(compile_parallel.program_keys(prog, "grad"))
    both = loss & grad
    assert both, (loss, grad)
    for k in (k for k in both if k.startswith(BUILD_KERNEL)):
        fs = [
            f
            for name in ("loss", "grad")
            for f in compile_parallel.program_kernels(prog, name)
            if compile_parallel.key(f) == k
        ]
        assert len({id(f) for f in fs}) == 1 and len(fs[0].overloads) == 1
    assert f"compiled 'loss' ({len(loss)} kernels, {len(both)} shared with other programs)" in err
    # the build's kernels, and the package's helpers unless Numba's cache had them already
    ours = {k for k in loss | grad if k.startswith(BUILD_KERNEL)}
    n = int(re.search(r"compiled (\d+) distinct kernels of 2 programs", err).group(1))
    assert len(ours) <= n <= len(loss | grad), (n, loss | grad)


def test_without_workers_it_compiles_here_and_says_so(built_in_workers, tmp_path, capsys):
    """A worker that cannot start: the programs compile in this process, and the progress
    line says why."""
    prog = _fresh_copy(built_in_workers, tmp_path)

    mp = pytest.MonkeyPatch()
    mp.setattr(compile_parallel, "_Worker", _refuse)
    mp.setenv(compile_parallel.ENV, "2")
    mp.setenv(compile_parallel.STRICT_ENV, "0")  # a user's build (the suite sets it to 1)
    try:
        pipeline.warm(prog, progress=True)
    finally:
        mp.undo()
    err = capsys.readouterr().err
    assert "compiled serially in this process: no compile worker could be started" in err
    assert "compiled 'loss'" in err and "compiled 'grad'" in err
    assert "0 kernels in worker processes" in err
    kernels = compile_parallel.program_kernels(prog, "grad")
    assert all(f.overloads for f in kernels if _of_the_build(f))
    assert not compile_parallel.to_compile(prog, ["loss", "grad"])  # compiled here now


def test_in_strict_mode_a_worker_that_cannot_start_is_an_error(
    built_in_workers, tmp_path, monkeypatch
):
    """``SYMCURV_COMPILE_STRICT=1`` (this suite's setting): the same fallback raises."""
    prog = _fresh_copy(built_in_workers, tmp_path)

    monkeypatch.setattr(compile_parallel, "_Worker", _refuse)
    monkeypatch.setenv(compile_parallel.ENV, "2")
    monkeypatch.setenv(compile_parallel.STRICT_ENV, "1")
    with pytest.raises(RuntimeError, match="fell back to this process: no compile worker"):
        pipeline.warm(prog, progress=False)


def test_workers_wanted_follows_the_variable_and_the_program_count(monkeypatch):
    monkeypatch.setenv(compile_parallel.ENV, "1")
    assert compile_parallel.workers_wanted(18) == 1
    monkeypatch.setenv(compile_parallel.ENV, "8")
    assert compile_parallel.workers_wanted(3) == 3 and compile_parallel.workers_wanted(18) == 8


def test_a_backend_without_workers_compiles_by_running_each_program(
    built_in_workers, tmp_path, capsys
):
    """A GPU's kernels are launched, not called: no dry run, no workers; each program
    is compiled here by one call (checked on the CPU build with such a device)."""
    prog = _fresh_copy(built_in_workers, tmp_path)

    class Launched:
        compiles_ahead, compiles_in_workers = True, False

    prog.device = Launched()
    pipeline.warm(prog, progress=True)
    err = capsys.readouterr().err
    assert "compiled 'loss' (" in err and "compiled 'grad' (" in err and "processes" not in err
    assert all(
        f.overloads for n in ("loss", "grad") for f in compile_parallel.program_kernels(prog, n)
    )


def test_a_driver_the_dry_run_cannot_run_is_compiled_by_running_it(
    built_in_workers, tmp_path, monkeypatch
):
    """Should a driver fail while its kernels are stand-ins (a step that needs real
    values), its program is compiled by running it once, and works; the workers are not
    asked to repeat its dry run (theirs would fail too, and the build would go serial)."""
    prog = _fresh_copy(built_in_workers, tmp_path)
    module = prog._modules["loss"]
    real_run = module.run

    def needs_real_kernels(*args):
        if any(type(f).__name__ == "Recorder" for f in vars(module).values()):  # dry run
            raise RuntimeError("a value the dry run does not compute")
        return real_run(*args)

    handed = []
    real_compile = compile_parallel.compile_kernels

    def compile_kernels(prog, names, *rest):
        handed.append(list(names))
        return real_compile(prog, names, *rest)

    monkeypatch.setattr(module, "run", needs_real_kernels)
    monkeypatch.setattr(compile_parallel, "compile_kernels", compile_kernels)
    monkeypatch.setenv(compile_parallel.ENV, "2")
    pipeline.warm(prog, progress=False)
    assert handed == [["grad"]]
    assert all(f.overloads for f in compile_parallel.program_kernels(prog, "loss"))
    errs = testing.compare_to_reference(prog, prog.init(0), testing.random_batch(prog, 3))
    assert max(errs.values()) < 1e-12, errs
