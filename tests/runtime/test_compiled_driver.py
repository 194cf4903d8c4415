"""The compiled drivers (runtime/compiled_driver.py, runtime/drivers.py): every program
part of three models gives the Python driver's results bit for bit at B = 1, 2 and 7; the
overload a call picks follows numpy's flags (a one-column F-typed view runs gemm's C
overload); a missing address raises before any call; the policy (python / compiled / auto,
the cache on disk, read-only arrays, a driver that fails to compile).

The builds are compiled once per module; each compiled driver costs 0.3-1 s to compile.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import models
import numpy as np
import pytest
from numba import njit, types

import symcurv as sc
from symcurv import errors, testing
from symcurv.runtime import compiled_driver, drivers
from symcurv.runtime.compiled_driver import MissingAddress, call_key, function_key
from symcurv.runtime.gemm import gemm

PROGRAMS = {  # model -> programs: maps of every kind, guards, bounds, noise, pairs, labels
    "tied": ("loss", "grad", "hvp", "gnvp", "cp_S", "input_grad", "input_hvp"),
    "branching": ("loss", "grad", "hvp", "cp_GN", "sum_sq_grad"),
    "mlp_labels": ("loss", "grad", "gnvp", "per_case_grad_norm"),
}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("compiled_driver")
    cache = {}

    def get(name):
        if name not in cache:
            m = models.mlp_labels() if name == "mlp_labels" else models.MODELS[name]()
            cache[name] = sc.compile(
                m, programs=PROGRAMS[name], build_dir=root / name, progress=False
            )
        return cache[name]

    return get


def _calls(prog, B: int):
    """Every program of ``prog`` as a call (fresh outputs each time), and its split parts
    the way a State runs them (the static part, then the dynamic part on its values)."""
    theta = prog.init(3)
    batch = testing.random_batch(prog, B, seed=1)
    rng = np.random.default_rng(2)
    v = rng.normal(size=prog.n_params)
    calls = {}
    for name in prog.programs:
        spec = prog.spec(name)
        extras = {  # input directions, and CP noise as the program's argument
            e: rng.normal(size=(B, size) if batched else (size,))
            for role in ("direction", "noise")
            for e, batched, size in prog.extra_leaves(spec, role)
        }
        kw = dict(v=v if spec.get("vectors") else None, extras=extras)
        calls[name] = lambda name=name, kw=kw: prog.run(name, theta, batch, **kw)
        if spec.get("static"):
            static = spec["static"]
            calls[static] = lambda static=static: prog.run(static, theta, batch)
            cached = prog.run(static, theta, batch)  # the dynamic part on cached values
            calls[f"{name} (cached)"] = lambda name=name, kw=kw, cached=cached: prog.run(
                name, theta, batch, **{**kw, "extras": {**kw["extras"], **cached}}
            )
    return calls


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_every_part_gives_the_python_drivers_bits(built, name):
    prog = built(name)
    for B in (1, 2, 7):
        prog._drivers.mode, prog._drivers.compiled = "python", {}
        calls = _calls(prog, B)
        expected = {k: call() for k, call in calls.items()}
        prog._drivers.mode = "compiled"
        for call in calls.values():  # the first call of each part compiles its driver
            call()
        parts = set(prog._drivers.modules)
        assert {p for p, d in prog._drivers.compiled.items() if d is not None} == parts
        misses = sum(prog._drivers.misses.values())
        for k, call in calls.items():
            got = call()
            assert sum(prog._drivers.misses.values()) == misses, f"{k}: ran in Python again"
            assert got.keys() == expected[k].keys()
            for out in got:
                np.testing.assert_array_equal(got[out], expected[k][out], err_msg=f"{k} {out}")


# ---- the overload a call picks ---------------------------------------------------------------
def _only(entries):
    """Empty the address table but for ``entries`` (call key -> address)."""
    compiled_driver.TABLE[:] = 0
    for key, address in entries.items():
        compiled_driver._insert(key, address)


def _gemm_key_and_address(layouts):
    sig = tuple(types.Array(types.float64, 2, lay) for lay in layouts)
    gemm.compile(sig)
    cres = gemm.overloads[sig]
    address = cres.library.get_pointer_to_function(cres.fndesc.llvm_func_name)
    return call_key(function_key(gemm), sig), address


def test_a_one_column_view_runs_the_c_overload_and_a_wider_one_the_f_overload():
    product = compiled_driver._intrinsic(gemm)

    @njit
    def a_times_w_t(a, w, out):  # w.T is typed F
        product(a, w.T, out)

    saved = compiled_driver.TABLE.copy()
    try:
        c_key, c_address = _gemm_key_and_address("CCC")
        f_key, f_address = _gemm_key_and_address("CFC")
        rng = np.random.default_rng(0)
        a = rng.normal(size=(5, 4))
        for rows, wanted, other in (
            (1, {c_key: c_address}, {f_key: f_address}),
            (3, {f_key: f_address}, {c_key: c_address}),
        ):
            w, out = rng.normal(size=(rows, 4)), np.zeros((5, rows))
            _only(wanted)
            a_times_w_t(a, w, out)
            np.testing.assert_allclose(out, a @ w.T, rtol=1e-14)
            _only(other)  # the other overload alone: not what Python's dispatch would run
            out[:] = 7.0
            with pytest.raises(MissingAddress, match="gemm"):
                a_times_w_t(a, w, out)
            assert (out == 7.0).all()  # raised before any product ran
    finally:
        compiled_driver.TABLE[:] = saved


def test_an_exception_in_a_called_function_propagates():
    @njit
    def refuses(x):
        if x[0] < 0:
            raise ValueError("negative")
        x[0] += 1.0

    call = compiled_driver._intrinsic(refuses)

    @njit
    def driver(x):
        call(x)

    x = np.ones(3)
    refuses(x)  # compiled, then registered
    compiled_driver.register([refuses])
    driver(x)
    assert x[0] == 3.0
    with pytest.raises(ValueError, match="negative"):
        driver(-x)


# ---- the policy ------------------------------------------------------------------------------
def test_auto_compiles_after_auto_after_calls_then_loads_from_the_cache(built, monkeypatch):
    prog = built("branching")
    module = prog._modules["loss"]
    for entry in (Path(module.__file__).parent / "__pycache__").glob("loss.run-*"):
        entry.unlink()  # (an earlier test may have compiled it)
    sites = drivers.calls_in(module)
    monkeypatch.setattr(drivers, "COMPILE_SECONDS", 2.5 * drivers.DISPATCH_SECONDS * sites)
    fresh = sc.load(prog.build_dir)
    assert fresh._drivers.switch_after("loss") == 3
    fresh._drivers.mode = "auto"
    theta, batch = fresh.init(0), testing.random_batch(fresh, 4, seed=0)
    for _ in range(2):
        fresh.loss(theta, batch)
    assert "loss" not in fresh._drivers.compiled and not drivers.cached_on_disk(module)
    expected = fresh.loss(theta, batch)  # the third call compiles
    assert fresh._drivers.compiled["loss"] is not None and drivers.cached_on_disk(module)
    assert fresh.loss(theta, batch) == expected
    again = sc.load(prog.build_dir)  # cached on disk: compiled after the first call
    again._drivers.mode = "auto"
    again.loss(theta, batch)
    assert again._drivers.compiled["loss"] is not None


def test_the_calls_a_driver_makes_are_counted_from_its_source(built):
    """calls_in reads the bytecode; the oracle reads the source's call lines."""
    prog = built("tied")
    call = re.compile(
        r"^\s+(k\d+_\w+|gemm|gemm_pair|vm\.\w+|syrk_tn)\(|all_finite_flat\(|product_bounded\("
    )
    for part, module in prog._modules.items():
        source = inspect.getsource(module.run)
        expected = sum(bool(call.search(line)) for line in source.splitlines())
        assert drivers.calls_in(module) == expected > 0, part


def test_python_mode_never_compiles_and_a_bad_mode_is_refused(built, monkeypatch):
    prog = built("tied")
    monkeypatch.setenv(drivers.MODE_ENV, "python")
    fresh = sc.load(prog.build_dir)
    theta, batch = fresh.init(0), testing.random_batch(fresh, 3, seed=0)
    for _ in range(3):
        fresh.loss(theta, batch)
    assert fresh._drivers.compiled == {}
    monkeypatch.setenv(drivers.MODE_ENV, "fast")
    with pytest.raises(errors.BuildError, match="SYMCURV_DRIVER"):
        sc.load(prog.build_dir)


def test_a_read_only_batch_runs_in_python_with_the_same_bits(built):
    prog = built("tied")
    prog._drivers.mode, prog._drivers.compiled = "compiled", {}
    theta, batch = prog.init(0), testing.random_batch(prog, 5, seed=0)
    prog.loss(theta, batch)  # compiles for writable arrays
    expected = prog.grad(theta, batch)[1]
    prog.grad(theta, batch)
    frozen = {k: a.copy() for k, a in batch.items()}
    for a in frozen.values():
        a.flags.writeable = False
    np.testing.assert_array_equal(prog.grad(theta, frozen)[1], expected)


def test_non_finite_data_is_refused_by_the_compiled_driver_naming_the_leaf(built):
    prog = built("tied")
    prog._drivers.mode, prog._drivers.compiled = "compiled", {}
    theta, batch = prog.init(0), testing.random_batch(prog, 4, seed=0)
    prog.grad(theta, batch)
    prog.grad(theta, batch)
    assert prog._drivers.compiled["grad"] is not None
    bad = {k: a.copy() for k, a in batch.items()}
    bad["x"][2, 1] = np.nan
    with pytest.raises(errors.NonFiniteError, match="x"):
        prog.grad(theta, bad)


def test_a_driver_that_fails_to_compile_stays_in_python_with_a_warning(built, monkeypatch):
    prog = built("tied")

    def fails(module):
        raise NotImplementedError("no such construct")

    monkeypatch.setattr(compiled_driver, "compile_driver", fails)
    prog._drivers.mode, prog._drivers.compiled = "compiled", {}
    theta, batch = prog.init(0), testing.random_batch(prog, 3, seed=0)
    monkeypatch.setenv(drivers.STRICT_ENV, "0")
    with pytest.warns(RuntimeWarning, match="keeps its Python driver.*no such construct"):
        prog.loss(theta, batch)
    assert prog._drivers.compiled["loss"] is None
    prog.loss(theta, batch)  # no second attempt
    prog._drivers.compiled = {}
    monkeypatch.setenv(drivers.STRICT_ENV, "1")
    with pytest.raises(RuntimeError, match="no such construct"):
        prog.loss(theta, batch)


def test_a_build_under_compiled_drivers_compiles_none_in_its_dry_run(tmp_path, monkeypatch):
    """The build's dry run replaces the kernels by recorders (compile_parallel.py): a driver
    compiled then would call them, fail, and leave the Program in Python for good."""
    monkeypatch.setenv(drivers.MODE_ENV, "compiled")
    prog = sc.compile(models.mlp(), programs=("loss",), build_dir=tmp_path, progress=False)
    assert prog._drivers.compiled == {}
    theta, batch = prog.init(0), testing.random_batch(prog, 3, seed=0)
    expected = prog.loss(theta, batch)
    assert prog._drivers.compiled["loss"] is not None
    assert prog.loss(theta, batch) == expected


# Numba notes that one of the build's prange loops could not be parallelised (the build's
# own, with or without a compiled driver)
@pytest.mark.filterwarnings("ignore::numba.core.errors.NumbaPerformanceWarning")
def test_a_parallel_build_runs_its_prange_kernels_from_the_compiled_driver(tmp_path):
    """parallel=True kernels start Numba's thread pool inside their own machine code, which
    the compiled driver calls like any other."""
    prog = sc.compile(
        models.tied(), programs=("grad",), build_dir=tmp_path, parallel=True, progress=False
    )
    theta, batch = prog.init(0), testing.random_batch(prog, 64, seed=0)
    prog._drivers.mode = "python"
    expected = prog.grad(theta, batch)[1]
    prog._drivers.mode = "compiled"
    prog.grad(theta, batch)
    assert prog._drivers.compiled["grad"] is not None
    np.testing.assert_array_equal(prog.grad(theta, batch)[1], expected)
    assert not prog._drivers.misses


def test_python_mode_runs_the_python_driver_even_where_one_is_compiled(built, monkeypatch):
    """The build's dry run sets it to run its recorders (compile_parallel.kernel_signatures):
    a compiled driver would call the kernels past them and record nothing."""
    prog = built("tied")
    prog._drivers.mode, prog._drivers.compiled = "compiled", {}
    theta, batch = prog.init(0), testing.random_batch(prog, 3, seed=0)
    prog.loss(theta, batch)
    assert prog._drivers.compiled["loss"] is not None
    module, calls = prog._modules["loss"], []
    run = module.run
    monkeypatch.setattr(module, "run", lambda *a: calls.append(1) or run(*a))
    prog.loss(theta, batch)
    assert not calls  # compiled
    prog._drivers.mode = "python"
    prog.loss(theta, batch)
    assert calls == [1]
