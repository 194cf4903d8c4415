"""The CPU emitter (``codegen/cpu.py``) on cases the golden files do not show."""

import numpy as np
import pytest

import symcurv as sc
from symcurv import errors, testing


def test_a_map_with_more_than_30_reads_compiles(tmp_path):
    """Found by tests/fuzz (issue 20): CP(S) through two x ↦ (1 + x²)^tanh(x) layers fuses
    a pair map reading 41 noise and cached values, and Numba's inline='always' refuses a
    call of more than 30 arguments ("Calling a closure with *args is unsupported"), so the
    build failed in its warm-up compile. Such a map's formulas are now a separate function."""
    m = sc.Model("wide_map")
    x0 = m.input("x0", 2)
    t = m.target("t", 2)
    W0 = m.param("W0", (2, 2), init=sc.init.normal(0.5))
    h0 = W0 @ x0
    h1 = (1 + sc.square(h0)) ** sc.tanh(h0)
    h2 = (1 + sc.square(h1)) ** sc.tanh(h1)
    m.minimize(sc.losses.squared_error(h2, t))
    prog = sc.compile(m, programs=("cp_S",), build_dir=tmp_path / "build", progress=False)
    shared = (tmp_path / "build" / "kernels" / "shared").glob("*.py")  # the kernels' files
    assert any("inline='never'" in f.read_text() for f in shared)  # the wide map's formulas
    rng = np.random.default_rng(0)
    batch = {"x0": rng.uniform(0.05, 0.95, (3, 2)), "t": rng.uniform(0.05, 0.95, (3, 2))}
    errs = testing.compare_to_reference(prog, prog.init(0), batch)
    assert errs["cp_S"] < 1e-10, errs


def test_the_zero_gradient_of_an_unused_parameter_is_copied(tmp_path):
    """Found by tests/fuzz after the plain-Python driver (session 10): a parameter that
    does not reach the objective has a constant zero gradient, an output with no storage of
    its own, and naming its copy kernel after that storage raised KeyError in the emitter.
    The gradient must be the reference's (zero in W2's entry)."""
    m = sc.Model("unused_param")
    x0 = m.input("x0", 2)
    t = m.target("t", 1)
    W0 = m.param("W0", (1, 2), init=sc.init.normal(0.5))
    W1 = m.param("W1", (1, 1), init=sc.init.normal(0.8))
    W2 = m.param("W2", (1, 1), init=sc.init.normal(0.8))
    h1 = W1 @ (W0 @ x0)
    _ = W2 @ h1  # computed, never used by the loss
    m.minimize(sc.losses.squared_error(h1, t))
    with pytest.warns(errors.UnusedParameterWarning, match="'W2'"):
        prog = sc.compile(m, programs=("grad",), build_dir=tmp_path / "b", progress=False)
    rng = np.random.default_rng(0)
    batch = {"x0": rng.uniform(0.05, 0.95, (3, 2)), "t": rng.uniform(0.05, 0.95, (3, 1))}
    errs = testing.compare_to_reference(prog, prog.init(0), batch)
    assert errs["grad"] < 1e-12, errs
    assert prog.grad(prog.init(0), batch)[1][3] == 0.0  # W2's entry


def test_a_narrow_map_with_per_case_scalars_runs_in_blocks(tmp_path):
    """A 10-wide softmax map reads per-case scalars (the row's logsumexp, the target's
    row sum) beside full rows; since session 12 such a map runs as flat loops over blocks
    of EPILOGUE_BLOCK rows with the scalars repeated along their rows (``rep_*``), not one
    10-element loop per row. Batch sizes below, at and across a block (the last one
    partial) must give the reference's grad and input gradient."""
    m = sc.Model("narrow_softmax")
    x = m.input("x", 5)
    t = m.target("t", 10)
    W = m.param("W", (10, 5), init=sc.init.normal(0.5))
    b = m.param("b", 10, init=sc.init.normal(0.1))
    m.minimize(sc.losses.softmax_cross_entropy(W @ sc.tanh(x) + b, t))
    progs = ("grad", "input_grad")
    prog = sc.compile(m, programs=progs, build_dir=tmp_path / "b", progress=False)
    shared = [f.read_text() for f in (tmp_path / "b" / "kernels" / "shared").glob("*.py")]
    assert any("rep_" in s and "for blk in prange" in s for s in shared)
    rng = np.random.default_rng(1)
    for B in (1, 63, 64, 130):
        batch = {"x": rng.standard_normal((B, 5)), "t": np.eye(10)[rng.integers(0, 10, B)]}
        errs = testing.compare_to_reference(prog, prog.init(0), batch)
        assert max(errs[p] for p in progs) < 1e-12, (B, errs)


@pytest.mark.parametrize("width", [10, 40])
def test_a_narrow_map_with_a_per_case_sum_runs_in_blocks(tmp_path, width):
    """A map that also sums each row (an epilogue: a loss's per-case total) over rows
    narrower than a vector body runs, since session 17, as flat loops over blocks of
    EPILOGUE_BLOCK rows whose summands go into a block buffer, each case's row then summed
    (by a loop, or from 32 wide by vm.row_sum), as the row loops did before. Batch sizes
    below, at and across a block (the last one partial) must give the reference's loss,
    grad and hvp."""
    m = sc.Model(f"narrow_sum_{width}")
    x = m.input("x", 5)
    t = m.target("t", width)
    W = m.param("W", (width, 5), init=sc.init.normal(0.5))
    b = m.param("b", width, init=sc.init.normal(0.1))
    m.minimize(sc.losses.squared_error(W @ sc.tanh(x) + b, t))
    progs = ("loss", "grad", "hvp")
    prog = sc.compile(m, programs=progs, build_dir=tmp_path / "b", progress=False)
    shared = [f.read_text() for f in (tmp_path / "b" / "kernels" / "shared").glob("*.py")]
    summed = [s for s in shared if "each case's sums over its row" in s]
    assert summed and all("for blk in prange" in s for s in summed)
    assert any("vm.row_sum(row_" in s for s in summed) == (width >= 32)
    rng = np.random.default_rng(2)
    for B in (1, 63, 64, 130):
        batch = {"x": rng.standard_normal((B, 5)), "t": rng.standard_normal((B, width))}
        errs = testing.compare_to_reference(prog, prog.init(0), batch)
        assert max(errs[p] for p in progs) < 1e-12, (B, errs)
