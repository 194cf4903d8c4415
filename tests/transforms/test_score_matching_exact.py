"""The exact score-matching diagonal over expanded cases (runtime/case_expansion.py): its
build does not grow with D, and the compiled programs a user calls with the real batch
answer for the real cases — J and ∂J/∂θ against the full-sympy oracle, hvp against central
differences of the compiled gradient, a State like the Program, shards combining like
DataParallel's, per-case programs refused, bad batches named in the user's terms."""

from __future__ import annotations

import numpy as np
import pytest
from test_grad import rel_err
from test_score_matching import B, one_layer, oracle_sm

import symcurv as sc
from symcurv import errors
from symcurv.codegen import lower
from symcurv.pipeline import program_graph
from symcurv.runtime import case_expansion

REG = 0.3


def chain(D: int) -> sc.Model:
    """Σ_k e^{a_k} log(1 + (w_kᵀ tanh(V x))²): two layers, any width D."""
    m = sc.Model(f"chain{D}")
    x = m.input("x", D)
    V = m.param("V", (D, D), init=sc.init.normal(0.3))
    W = m.param("W", (3, D), init=sc.init.normal(0.3))
    a = m.param("a", 3, init=sc.init.zeros())
    m.energy(sc.dot(sc.exp(a), sc.log(1 + sc.square(W @ sc.tanh(V @ x)))))
    return m


@pytest.mark.parametrize("program", ["loss", "grad", "hvp"])
def test_the_build_does_not_grow_with_D(program):
    """The same number of nodes and of kernels at D = 4 and D = 16 (before: D sweeps).
    Constants are not counted: the scale D of the expanded objective folds into a
    neighbour for some D (×2 at D = 4) and stays a node for others."""
    sizes = []
    for D in (4, 16):
        _, g = program_graph(sc.score_matching(chain(D), reg=REG, diag="exact"), program)
        nodes = sum(n.op != "const" for n in g.nodes())
        sizes.append((nodes, len(lower.lower(g).kernels)))
    assert sizes[0] == sizes[1], sizes


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    m = one_layer()  # D = 3, the oracle's tiny energy
    sm = sc.score_matching(m, reg=REG, diag="exact")
    prog = sc.compile(sm, ("grad", "hvp"), build_dir=tmp_path_factory.mktemp("x"), progress=False)
    rng = np.random.default_rng(1)
    theta = prog.init(0) + 0.3 * rng.normal(size=prog.n_params)
    batch = {"x": rng.normal(size=(B, 3))}  # the oracle's B = 3 cases
    return m, prog, theta, batch


def test_objective_and_gradient_against_the_oracle(built):
    m, prog, theta, batch = built
    J, dJ = oracle_sm(m.forward_graph(), {**prog.unflatten(theta), **batch}, REG)
    f, g = prog.grad(theta, batch)
    assert abs(f - J) < 1e-11 * abs(J)
    assert rel_err(g, prog.flatten(dJ)) < 1e-11


def test_hvp_and_state(built):
    _, prog, theta, batch = built
    v = np.random.default_rng(2).normal(size=prog.n_params)
    eps = 1e-5
    fd = (prog.grad(theta + eps * v, batch)[1] - prog.grad(theta - eps * v, batch)[1]) / (2 * eps)
    hv = prog.hvp(theta, batch, v)
    assert rel_err(hv, fd) < 1e-6
    st = prog.linearize(theta, batch)
    assert np.allclose(st.hvp(v), hv, rtol=1e-12, atol=0)
    assert st.grad()[0] == prog.grad(theta, batch)[0]


def test_shards_combine_like_the_whole_batch(built):
    """DataParallel's rule: the batch's mean is the shards' means weighted by their sizes
    (each shard expands its own cases)."""
    _, prog, theta, batch = built
    x = batch["x"]
    (f1, g1), (f2, g2) = (prog.grad(theta, {"x": part}) for part in (x[:1], x[1:]))
    f, g = prog.grad(theta, batch)
    assert np.isclose(f, (f1 + 2 * f2) / 3, rtol=1e-13)
    assert np.allclose(g, (g1 + 2 * g2) / 3, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("call", ["per_case_grad", "sum_sq_grad", "input_grad"])
def test_per_case_programs_are_refused(built, call):
    _, prog, theta, batch = built
    with pytest.raises(errors.NotApplicableError, match="expanded cases") as e:
        getattr(prog, call)(theta, batch)
    assert "fix:" in str(e.value) and call in str(e.value)


def test_a_bad_batch_is_named_in_the_users_terms(built):
    _, prog, theta, _ = built
    with pytest.raises(errors.BatchError, match="'x'") as e:
        prog.grad(theta, {"x": np.zeros((B, 4))})
    assert "3" in str(e.value)  # the width the model wants, not an expanded shape
    with pytest.raises(errors.NonFiniteError, match=r"batch\['x'\]\[0, 0\] = nan"):
        prog.grad(theta, {"x": np.full((2, 3), np.nan)})
    # a direction is checked once: before the expanded rows run in chunks, or by the State
    v, batch = np.ones(prog.n_params), {"x": np.full((2, 3), 0.5)}
    v[1] = np.inf
    for product in (lambda: prog.hvp(theta, batch, v), lambda: prog.linearize(theta, batch).hvp(v)):
        with pytest.raises(errors.NonFiniteError, match=r"v\[1\] is not finite"):
            product()


def test_chunks_of_expanded_rows_combine_to_the_whole(built, monkeypatch):
    """A checked call runs the B·D expanded rows in chunks (case_expansion.run_in_chunks);
    chunks of 2 rows split the D = 3 rows of a case and still give the whole batch's
    result (the State runs the whole expanded batch at once: the reference here)."""
    _, prog, theta, batch = built
    v = np.random.default_rng(4).normal(size=prog.n_params)
    st = prog.linearize(theta, batch)
    per_row = sum(size for _, batched, size in prog.spec("grad")["slots"] if batched) * 8
    monkeypatch.setattr(case_expansion, "BUDGET", 2 * per_row)
    assert case_expansion.chunk_rows(prog, "grad") == 2
    f, g = prog.grad(theta, batch)
    assert np.isclose(f, st.grad()[0], rtol=1e-13)
    assert np.allclose(g, st.grad()[1], rtol=1e-12, atol=1e-14)
    assert np.allclose(prog.hvp(theta, batch, v), st.hvp(v), rtol=1e-12, atol=1e-14)


def test_a_state_too_large_for_its_budget_is_refused(built, monkeypatch):
    """A State holds all B·D expanded rows (no chunks): over ``STATE_BUDGET`` it is refused
    before anything is expanded, naming the largest batch that fits; at that size it runs."""
    _, prog, theta, batch = built
    per_case = 3 * max(case_expansion.row_bytes(prog, p) for p in ("grad", "hvp"))
    monkeypatch.setattr(case_expansion, "STATE_BUDGET", 2 * per_case)
    with pytest.raises(errors.BatchError, match="at most 2 cases") as e:
        prog.linearize(theta, batch)  # B = 3 cases
    assert "fix:" in str(e.value) and "batch_size=2" in str(e.value)
    st = prog.linearize(theta, {"x": batch["x"][:2]})
    assert np.isclose(st.grad()[0], prog.grad(theta, {"x": batch["x"][:2]})[0], rtol=1e-13)
