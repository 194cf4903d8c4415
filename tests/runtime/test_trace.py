"""A non-finite result names its node and DSL line from the build's own kernels
(runtime/trace.py): in a fresh process that never imports sympy, on the CPU kernels of
the build's dtype, a static part's fault found in the static part."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import symcurv as sc
from symcurv import errors
from symcurv.runtime import trace

ROOT = Path(__file__).resolve().parents[2]


def _line(offset: int = 0) -> str:
    """``test_trace.py:<n>`` of the caller's line + offset (the DSL line of a node)."""
    f = sys._getframe(1)
    return f"test_trace.py:{f.f_lineno + offset}"


@pytest.fixture(scope="module")
def log_model(tmp_path_factory):
    """tanh, then log of an affine map: the log's value is non-finite on negative data, its
    derivatives 1/(W x) on zero data (where the value is -inf too)."""
    m = sc.Model("log_net")
    x = m.input("x", 3)
    W = m.param("W", (2, 3), init=sc.init.constant(0.5))
    h = sc.tanh(W @ x)
    line = _line(1)
    a = sc.log(h + 1.5) + sc.log(W @ x)
    m.minimize(sc.sum(a))
    root = tmp_path_factory.mktemp("trace") / "log_net"
    prog = sc.compile(m, programs=("loss", "grad", "hvp"), build_dir=root, progress=False)
    return prog, line


def test_error_names_node_and_line_in_a_process_without_sympy(log_model):
    prog, line = log_model
    script = textwrap.dedent(
        f"""
        import sys, numpy as np
        import symcurv.runtime.build as b
        from symcurv import errors
        prog = b.load({str(prog.build_dir)!r})
        theta = prog.init(0)
        assert np.isfinite(prog.loss(theta, {{"x": np.ones((4, 3))}}))
        for call in (lambda: prog.loss(theta, {{"x": -np.ones((4, 3))}}),
                     lambda: prog.hvp(theta, {{"x": np.zeros((4, 3))}}, np.ones(6)),
                     lambda: prog.linearize(theta, {{"x": np.zeros((4, 3))}}).hvp(np.ones(6))):
            try:
                call()
                print("no error")
            except errors.NonFiniteError as e:
                print("ERROR|" + str(e.node) + "|" + str(e.where))
        print("sympy loaded:", "sympy" in sys.modules)
        """
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "sympy loaded: False" in lines, out.stdout
    errs = [ln.split("|") for ln in lines if ln.startswith("ERROR|")]
    assert len(errs) == 3, out.stdout
    for _, node, where in errs:
        assert "log" in node and line in where, (node, where)


def test_the_first_bad_kernel_is_found_not_a_later_one(log_model):
    """log(W x) is non-finite, log(tanh(W x) + 1.5) is not: the traced buffers name the
    log of the affine map; an output that only inherits the NaN is not named."""
    prog, line = log_model
    theta = prog.init(0)
    with pytest.raises(errors.NonFiniteError) as e:
        prog.grad(theta, {"x": -np.ones((4, 3))})
    assert "log" in e.value.node and line in e.value.where
    assert "first go non-finite" in str(e.value)
    module = prog._modules["grad"]
    kernels = trace.kernels_of(Path(module.__file__).read_text())
    assert kernels and all(k.writes and k.origins for k in kernels.values())


def test_cuda_driver_is_traced_in_the_simulator(tmp_path):
    """On cuda the tracer follows ``_launch`` and copies each kernel's device buffers back.
    The simulator runs device math as Python's ``math`` (log(-1) raises there), so the
    non-finite value is a product overflowing to inf, which never raises."""
    script = textwrap.dedent(
        f"""
        import sys, numpy as np, symcurv as sc
        from symcurv import errors
        m = sc.Model("sq_net")
        x = m.input("x", 3)
        W = m.param("W", (2, 3), init=sc.init.constant(0.5))
        a = sc.square(W @ x) + sc.tanh(W @ x)  # LINE
        m.minimize(sc.sum(a))
        prog = sc.compile(m, programs=("loss",), backend="cuda",
                          build_dir={str(tmp_path / "b")!r}, progress=False)
        try:
            prog.loss(prog.init(0), {{"x": np.full((4, 3), 1e200)}})
        except errors.NonFiniteError as e:
            print("ERROR|" + e.node + "|" + e.where)
        """
    )
    path = tmp_path / "sq_model.py"
    path.write_text(script)
    line = next(i for i, s in enumerate(script.splitlines(), 1) if s.endswith("# LINE"))
    env = dict(os.environ, PYTHONPATH=str(ROOT), NUMBA_ENABLE_CUDASIM="1")
    out = subprocess.run(
        [sys.executable, str(path)], capture_output=True, text=True, env=env, timeout=600
    )
    errs = [ln.split("|") for ln in out.stdout.splitlines() if ln.startswith("ERROR|")]
    assert len(errs) == 1, out.stdout + out.stderr
    _, node, where = errs[0]
    assert "square" in node and f"sq_model.py:{line}" in where, (node, where)
