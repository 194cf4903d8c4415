"""The ahead-of-time compile in worker processes (runtime/compile_parallel.py): programs
compiled in a worker are loaded here from Numba's cache (not compiled twice) and compute
what the reference interpreter computes; without workers it says so and compiles here."""

from __future__ import annotations

import contextlib
import io
import shutil

import models
import pytest
from numba.core.dispatcher import Dispatcher

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


def test_a_worker_compiles_and_this_process_loads_its_cache(built_in_workers):
    prog, err = built_in_workers
    assert "in 2 processes" in err and "in a worker process" in err and "2/2" in err
    assert "cache missed" not in err and "serially" not in err
    # the worker's program: every kernel function of its module came from the cache the
    # worker wrote (hits, no misses); the other one was compiled here (misses). The
    # scalar functions inlined into the kernels are never compiled on their own.
    stats = {
        part: [
            f.stats
            for f in vars(m).values()
            if isinstance(f, Dispatcher) and f.targetoptions.get("inline") != "always"
        ]
        for part, m in prog._modules.items()
    }
    from_cache = [
        p
        for p, st in stats.items()
        if all(sum(s.cache_hits.values()) and not sum(s.cache_misses.values()) for s in st)
    ]
    compiled_here = [p for p, st in stats.items() if any(sum(s.cache_misses.values()) for s in st)]
    assert len(from_cache) == 1 and len(compiled_here) == 1, stats
    assert f"compiled '{from_cache[0]}' (" in err and "in a worker process" in err
    theta, batch = prog.init(0), testing.random_batch(prog, 5)
    errs = testing.compare_to_reference(prog, theta, batch)
    assert max(errs.values()) < 1e-12, errs


def test_without_workers_it_compiles_here_and_says_so(built_in_workers, tmp_path, capsys):
    """A worker that cannot start: the programs compile in this process, and the progress
    line says why."""
    dst = tmp_path / "copy"
    shutil.copytree(
        built_in_workers[0].build_dir, dst, ignore=shutil.ignore_patterns("__pycache__")
    )
    prog = sc.load(dst)

    def refuse(*_a, **_k):
        raise OSError("no processes in this sandbox")

    mp = pytest.MonkeyPatch()
    mp.setattr(compile_parallel, "_Worker", refuse)
    mp.setenv(compile_parallel.ENV, "2")
    try:
        pipeline.warm(prog, progress=True)
    finally:
        mp.undo()
    err = capsys.readouterr().err
    assert "compiled serially in this process: no compile worker could be started" in err
    assert "compiled 'loss'" in err and "compiled 'grad'" in err
    assert "in a worker process" not in err
    assert all(f.overloads for f in compile_parallel._kernels(prog, "grad"))
    assert not compile_parallel.to_compile(prog, ["loss", "grad"])  # compiled here now


def test_workers_wanted_follows_the_variable_and_the_program_count(monkeypatch):
    monkeypatch.setenv(compile_parallel.ENV, "1")
    assert compile_parallel.workers_wanted(18) == 1
    monkeypatch.setenv(compile_parallel.ENV, "8")
    assert compile_parallel.workers_wanted(3) == 3 and compile_parallel.workers_wanted(18) == 8
