"""The CPU emitter (``codegen/cpu.py``) on cases the golden files do not show."""

import numpy as np

import symcurv as sc
from symcurv import testing


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
    src = (tmp_path / "build" / "kernels" / "cp_S.py").read_text()
    assert "inline='never'" in src  # the wide map's formulas
    rng = np.random.default_rng(0)
    batch = {"x0": rng.uniform(0.05, 0.95, (3, 2)), "t": rng.uniform(0.05, 0.95, (3, 2))}
    errs = testing.compare_to_reference(prog, prog.init(0), batch)
    assert errs["cp_S"] < 1e-10, errs
