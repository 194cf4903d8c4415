"""The compiled derivatives with respect to the data: input_grad, input_hvp and
input_diag_hessian (exact, Becker-LeCun, CP S/TU) on Program and State, against the sympy
oracle, central differences, the reference interpreter and a statistical test of CP's
unbiasedness; the errors users see."""

from __future__ import annotations

import numpy as np
import oracle
import pytest
from scipy import stats

import symcurv as sc
from symcurv import errors, pipeline, testing
from symcurv.runtime import build

B = 4
INPUT_PROGRAMS = ("input_grad", "input_hvp", "input_diag_S", "input_diag_TU", "input_bl")


def two_inputs():
    """Two inputs (one also a target of the loss), branching through a two-argument op."""
    gate = sc.elementwise("gate_in", "x*tanh(y)")
    m = sc.Model("two_inputs")
    x, u = m.input("x", 3), m.input("u", 2)
    t = m.target("t", 2)
    W = m.param("W", (2, 3), init=sc.init.normal(0.6))
    U = m.param("U", (2, 2), init=sc.init.normal(0.6))
    h = sc.tanh(W @ x)
    y = gate(h, U @ u) + h * h
    m.minimize(sc.losses.softmax_cross_entropy(y, t) + 0.1 * sc.dot(u, u))
    return m


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    m = two_inputs()
    prog = sc.compile(
        m,
        programs=("loss", "input_grad", "input_diag_hessian"),
        build_dir=tmp_path_factory.mktemp("inputs") / "b",
        progress=False,
    )
    rng = np.random.default_rng(2)
    theta = prog.init(0) + 0.3 * rng.normal(size=prog.n_params)
    batch = testing.random_batch(prog, B, seed=3)
    fwd = m.forward_graph()
    leaves = {**batch, **prog.unflatten(theta)}
    H = {x: oracle.oracle_input_hessian(fwd, leaves, x) for x in ("x", "u")}
    _, per_case = oracle.oracle_per_case(fwd, leaves)
    return prog, theta, batch, H, per_case


def test_the_compiled_input_programs_match_the_reference(built):
    prog, theta, batch, *_ = built
    errs = testing.compare_to_reference(prog, theta, batch)
    assert set(errs) >= set(INPUT_PROGRAMS)
    assert max(errs.values()) < 1e-12, errs


@pytest.mark.parametrize("x", ["x", "u"])
def test_input_grad_hvp_and_exact_diagonal_against_the_oracle(built, x):
    prog, theta, batch, H, per_case = built
    assert testing.rel_error(prog.input_grad(theta, batch, wrt=x), per_case[x]) < 1e-10
    V = np.random.default_rng(4).normal(size=batch[x].shape)
    want = np.einsum("bij,bj->bi", H[x], V)
    assert testing.rel_error(prog.input_hvp(theta, batch, V, wrt=x), want) < 1e-10
    d = prog.input_diag_hessian(theta, batch, wrt=x, method="exact")
    assert testing.rel_error(d, np.diagonal(H[x], axis1=1, axis2=2)) < 1e-10


def test_input_grad_against_central_differences(built):
    """f_b per case, NOT divided by B: the loss of a one-case batch is f_b itself."""
    prog, theta, batch, *_ = built
    g = prog.input_grad(theta, batch, wrt="x")
    eps = 1e-6
    for b in range(B):
        for i in range(3):
            one = {k: v[b : b + 1].copy() for k, v in batch.items()}
            one["x"][0, i] += eps
            up = prog.loss(theta, one)
            one["x"][0, i] -= 2 * eps
            fd = (up - prog.loss(theta, one)) / (2 * eps)
            assert abs(fd - g[b, i]) < 1e-7 * max(1.0, abs(g[b, i]))


def test_state_reuses_its_forward_pass_for_every_input_product(built):
    prog, theta, batch, H, _ = built
    st = prog.linearize(theta, batch)
    V = np.random.default_rng(5).normal(size=batch["u"].shape)
    first = st.input_hvp(V, wrt="u")
    assert set(st._cache) == {"input_hvp"}
    assert np.array_equal(st.input_hvp(V, wrt="u"), first)
    assert testing.rel_error(st.input_grad("u"), prog.input_grad(theta, batch, "u")) == 0.0


@pytest.mark.parametrize("estimator", ["S", "TU"])
def test_cp_over_the_input_is_unbiased_per_case(built, estimator):
    """The mean of n draws is within z* standard errors of the exact diagonal of EVERY
    case's own Hessian (Bonferroni at family-wise level 1e-3 over all entries)."""
    prog, theta, batch, H, _ = built
    st = prog.linearize(theta, batch)
    n = 300
    draws = np.array(
        [st.input_diag_hessian("x", estimator, seed=500 + k) for k in range(n)]
    )  # (n, B, D)
    exact = np.diagonal(H["x"], axis1=1, axis2=2)
    se = draws.std(axis=0, ddof=1) / np.sqrt(n)
    z_star = stats.norm.ppf(1 - 1e-3 / (2 * 2 * exact.size))
    varies = se > 1e-12
    assert varies.any()
    z = np.abs(draws.mean(axis=0) - exact)[varies] / se[varies]
    assert z.max() < z_star, (z.max(), z_star)
    # samples= averages that many draws: closer to the exact diagonal than one draw
    many = st.input_diag_hessian("x", estimator, samples=64, seed=9)
    assert many.shape == exact.shape
    assert np.abs(many - exact).mean() < np.abs(draws[0] - exact).mean() + 1e-12


def test_becker_lecun_over_the_input_is_deterministic_and_biased_here(built):
    prog, theta, batch, H, _ = built
    bl = prog.input_diag_hessian(theta, batch, wrt="x", method="becker_lecun")
    again = prog.input_diag_hessian(theta, batch, wrt="x", method="becker_lecun")
    assert np.array_equal(bl, again)
    exact = np.diagonal(H["x"], axis1=1, axis2=2)
    assert testing.rel_error(bl, exact) > 1e-3  # two nonlinear layers between x and the sum


def test_wrong_wrt_method_and_direction_are_clear_errors(built):
    prog, theta, batch, *_ = built
    with pytest.raises(errors.ModelError, match="is a target"):
        prog.input_grad(theta, batch, wrt="t")
    with pytest.raises(errors.ModelError, match="wrt is needed"):
        prog.input_grad(theta, batch)  # two inputs: say which
    with pytest.raises(errors.ModelError, match="not an input"):
        prog.input_grad(theta, batch, wrt="W")
    with pytest.raises(errors.ModelError, match="unknown input_diag_hessian method"):
        prog.input_diag_hessian(theta, batch, wrt="x", method="GN")
    with pytest.raises(errors.BatchError, match="one direction per case"):
        prog.input_hvp(theta, batch, np.ones(3), wrt="x")
    V = np.ones((B, 3))
    V[1, 2] = np.nan
    with pytest.raises(errors.NonFiniteError, match="not finite"):
        prog.input_hvp(theta, batch, V, wrt="x")


def test_models_without_data_skip_the_input_programs(tmp_path):
    m = sc.Model("no_data")
    w = m.param("w", 2, init=sc.init.normal(1.0))
    t = m.target("t", 2)
    m.minimize(sc.losses.squared_error(w, t))
    # build and load without compiling: the skipped programs are decided at build time
    prog = build.load(pipeline.build(m, "all", build_dir=tmp_path / "b", progress=False))
    assert "input_grad" not in prog.programs
    assert "no per-case input" in prog.manifest["skipped"]["input_grad"]
    with pytest.raises(errors.NotApplicableError, match="does not exist for this model"):
        prog.run("input_grad", prog.init(0), {"t": np.ones((2, 2))})
