"""codegen/parts.py and lower.pair_products: a product program's whole graph for direct
calls, with the forward and R-forward products of one operand as one GEMM."""

from pathlib import Path

import models
import numpy as np
import pytest

import symcurv as sc
from symcurv import pipeline, testing
from symcurv.codegen import lower
from symcurv.runtime.gemm import gemm_pair


def _model() -> sc.Model:
    return models.mlp((7, 5, 3))  # x W0ᵀ: 5 columns, paired with x V_W0ᵀ


@pytest.fixture(scope="module")
def prog(tmp_path_factory):
    build = tmp_path_factory.mktemp("parts")
    return sc.compile(_model(), programs=("hvp", "gnvp", "grad"), build_dir=build, progress=False)


def _batch(B=9):
    rng = np.random.default_rng(0)
    return {"x": rng.standard_normal((B, 7)), "t": np.eye(3)[rng.integers(0, 3, B)]}


def test_hvp_and_gnvp_get_a_whole_part_that_pairs_X_W_and_X_VW(prog):
    for name in ("hvp", "gnvp"):
        whole = prog.spec(name)["whole"]
        assert whole == f"{name}.whole" and prog.spec(name)["static"] == f"{name}.static"
        text = (Path(prog.build_dir) / "kernels" / f"{name}_whole.py").read_text()
        assert "gemm_pair(in_x, p_W0_5x7.T, v_W0_5x7.T" in text
    assert "whole" not in prog.spec("grad") and prog.programs == ("gnvp", "grad", "hvp")


def test_a_direct_call_runs_the_whole_part_and_equals_the_state(prog):
    """prog.hvp runs one driver (not the static part); a State runs the split parts; both
    equal the reference interpreter's H v and G v."""
    theta, batch = prog.init(0), _batch()
    v = np.random.default_rng(1).standard_normal(prog.n_params)
    calls = []
    static = prog._modules["hvp.static"]
    run = static.run
    static.run = lambda *a: calls.append(1) or run(*a)
    try:
        direct = prog.hvp(theta, batch, v)
    finally:
        static.run = run
    assert not calls
    st = prog.linearize(theta, batch)
    np.testing.assert_allclose(direct, st.hvp(v), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(prog.gnvp(theta, batch, v), st.gnvp(v), rtol=1e-12, atol=1e-14)
    errs = testing.compare_to_reference(prog, theta, batch, v=v)
    assert max(errs.values()) < 1e-12, errs


def test_pair_products_moves_the_second_gemm_next_to_the_first():
    """On the whole hvp graph: each pair's second GEMM comes right after its first, and
    every kernel still comes after the kernels that write what it reads."""
    _fwd, graphs, _ = pipeline.program_graphs(_model(), "hvp")
    g = graphs["hvp"]
    low = lower.lower(g)
    pairs = [(i, k) for i, k in enumerate(low.kernels) if k.pair is not None]
    assert pairs
    for i, k in pairs:
        assert low.kernels[i + 1] is k.pair and k.pair.paired
    written = set()
    for k in low.kernels:
        assert all(r in written or not g[low.views.get(r, r)].inputs for r in k.reads), k.name
        written.update(k.writes)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_gemm_pair_equals_two_products(dtype):
    rng = np.random.default_rng(2)
    a = rng.standard_normal((6, 4)).astype(dtype)
    b1, b2 = (rng.standard_normal((3, 4)).astype(dtype).T for _ in range(2))  # F-ordered
    o1, o2 = np.full((6, 3), np.nan, dtype), np.full((6, 3), np.nan, dtype)
    gemm_pair(a, b1, b2, o1, o2)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(o1, a @ b1, rtol=tol, atol=tol)
    np.testing.assert_allclose(o2, a @ b2, rtol=tol, atol=tol)
