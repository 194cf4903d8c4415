"""float32 builds on the CPU: the formulas stay float32 (literals print as ``F(...)``, so
vecmath's float32 routines are chosen) and every program agrees with the float64 build to
float32 precision."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import symcurv as sc

PROGRAMS = ("loss", "grad", "hvp")


def _model() -> sc.Model:
    m = sc.Model("net32")
    x, t = m.input("x", 8), m.target("t", 3, labels=True)
    W0 = m.param("W0", (5, 8), init=sc.init.normal(0.3))
    b0 = m.param("b0", 5, init=sc.init.normal(0.1))
    W1 = m.param("W1", (3, 5), init=sc.init.normal(0.3))
    m.minimize(sc.losses.softmax_cross_entropy(W1 @ sc.tanh(W0 @ x + b0), t))
    return m


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    root, m = tmp_path_factory.mktemp("f32"), _model()
    return {
        dt: sc.compile(m, PROGRAMS, build_dir=root / dt, dtype=dt, progress=False)
        for dt in ("float32", "float64")
    }


def test_float32_formulas_print_float32_literals(builds):
    shared = list((Path(builds["float32"].build_dir) / "kernels" / "shared").glob("*.py"))
    bodies = [
        ln for f in shared for ln in f.read_text().splitlines() if ln.startswith("    return ")
    ]
    assert bodies and any("F(" in ln for ln in bodies)
    wrapped = re.compile(r"F\([^()]*\)")  # F(0.5), F(B)
    bare = re.compile(r"\b\d+\.\d*")  # a float literal left outside F(...)
    assert not [ln for ln in bodies if bare.search(wrapped.sub("", ln))], bodies


def test_float32_programs_agree_with_float64(builds):
    p32, p64 = builds["float32"], builds["float64"]
    rng = np.random.default_rng(0)
    theta, v = p64.init(1), rng.normal(size=p64.n_params)
    batch = {"x": rng.normal(size=(40, 8)), "t": np.arange(40) % 3}
    b32 = {"x": batch["x"].astype(np.float32), "t": batch["t"]}
    t32, v32 = theta.astype(np.float32), v.astype(np.float32)
    l64, g64 = p64.grad(theta, batch)
    l32, g32 = p32.grad(t32, b32)
    assert g32.dtype == np.float32
    assert abs(l32 - l64) <= 1e-5 * abs(l64)
    assert np.abs(g32 - g64).max() <= 1e-5 * np.abs(g64).max()
    h64, h32 = p64.hvp(theta, batch, v), p32.hvp(t32, b32, v32)
    assert np.abs(h32 - h64).max() <= 1e-4 * np.abs(h64).max()
