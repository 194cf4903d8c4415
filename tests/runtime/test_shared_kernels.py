"""The shared kernel files at run time (runtime/shared_kernels.py, Numba's cache beside
them): a changed model built into the same directory never runs a kernel of the old one,
and two builds of one model into one directory at once leave a cache that later loads
use whole."""

import os
import subprocess
import sys
import textwrap

import numpy as np

import symcurv as sc
from symcurv import testing
from symcurv.runtime import compile_parallel


def _net(activation):
    m = sc.Model("swap")
    x = m.input("x", 3)
    t = m.target("t", 2)
    W = m.param("W", (2, 3), init=sc.init.normal(0.5))
    b = m.param("b", 2, init=sc.init.zeros())
    m.minimize(sc.losses.squared_error(activation(W @ x + b), t))
    return m


def test_a_changed_model_in_the_same_directory_runs_its_own_kernels(tmp_path):
    """logistic -> tanh in the same layer, same directory, same process: the map's file
    is another one, so neither the cache nor the imported module of the old kernel is
    used, and the loss is the new model's."""
    batch = {"x": np.full((3, 3), 0.3), "t": np.full((3, 2), 0.2)}
    old = sc.compile(_net(sc.logistic), ("loss",), build_dir=tmp_path, progress=False)
    old_keys = set(compile_parallel.program_keys(old, "loss"))
    new = sc.compile(_net(sc.tanh), ("loss",), build_dir=tmp_path, progress=False)
    new_keys = set(compile_parallel.program_keys(new, "loss"))
    assert old_keys - new_keys and new_keys - old_keys  # the activation's map changed
    errs = testing.compare_to_reference(new, new.init(0), batch)
    assert errs["loss"] < 1e-12, errs
    assert abs(new.loss(new.init(0), batch) - old.loss(old.init(0), batch)) > 1e-3


def test_two_builds_into_one_directory_at_once_leave_a_whole_cache(tmp_path):
    """Two processes compile the same model into one directory at the same time (one
    compiling process each); a third loads every kernel from the cache they wrote (hits,
    no misses) and computes the reference's values."""
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {os.path.dirname(__file__) + "/.."!r})
        import models, symcurv as sc
        sc.compile(models.tied(), ("loss", "grad"), build_dir={str(tmp_path)!r}, progress=False)
    """)
    env = dict(os.environ, **{compile_parallel.ENV: "1"})
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env) for _ in range(2)]
    assert [p.wait(timeout=600) for p in procs] == [0, 0]
    check = textwrap.dedent(f"""
        import symcurv as sc
        from symcurv import testing
        from symcurv.runtime import compile_parallel as cp
        prog = sc.load({str(tmp_path)!r})
        errs = testing.compare_to_reference(prog, prog.init(0), testing.random_batch(prog, 4))
        assert max(errs.values()) < 1e-12, errs
        kernels = {{f for n in prog.programs for f in cp.program_kernels(prog, n)}}
        misses = [cp.key(f) for f in kernels if sum(f.stats.cache_misses.values())]
        hits = [cp.key(f) for f in kernels if sum(f.stats.cache_hits.values())]
        assert not misses and len(hits) == len(kernels), (misses, hits)
        print("ok", len(kernels))
    """)
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0 and out.stdout.startswith("ok"), out.stderr[-3000:]
