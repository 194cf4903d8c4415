"""Curvature Propagation (``transforms.curvprop``) and Becker-LeCun (``transforms.diag``)
at graph level, against the full-sympy oracle.

Every CP estimate is a quadratic form zᵀ A z in the noise (S Sᵀ, T Uᵀ), so its expectation
under any noise with E[z zᵀ] = I is tr(A) = Σ_k f(e_k): summing the estimate over the unit
noise vectors gives the EXACT expectation. That is the unbiasedness oracle here — no
sampling tolerance at all — and a wrong skip rule or factor shows up as a plain mismatch
(``test_a_wrong_skip_rule_is_caught`` proves the check has teeth).
"""

from __future__ import annotations

import numpy as np
import oracle
import pytest
from test_grad import branching_model, gate_model, reductions_model, rel_err, tied_model

import symcurv as sc
from symcurv import errors
from symcurv.runtime.reference import evaluate
from symcurv.transforms import curvprop
from symcurv.transforms.curvprop import cp_graph
from symcurv.transforms.diag import becker_lecun_graph

B = 2
MODELS = {
    "gate": gate_model,  # custom two-argument elementwise op
    "branching": branching_model,  # h feeds two branches; softmax cross-entropy
    "tied": tied_model,  # W and W.T
    "reductions": reductions_model,  # softmax, logsumexp, dot, a θ-only term
    "shared_vector": lambda: shared_vector_model(),  # W x and W q, q a parameter vector
}


def shared_vector_model():
    """W used on a per-case x and on a parameter vector q: the θ-diagonal's per-case pair
    (u_b, q) has a shared right factor, Σ_b u_b qᵀ = (Σ_b u_b) qᵀ (a leafform bug found by
    tests/codegen/test_compiled_rules.py: it emitted a batch GEMM of an unbatched q)."""
    m = sc.Model("shared_vector")
    x, t = m.input("x", 3), m.target("t", 2)
    W, q = m.param("W", (2, 3)), m.param("q", 3)
    m.minimize(sc.losses.squared_error(sc.tanh(W @ x + W @ q), t))
    return m


def _values(fwd, seed=0):
    rng = np.random.default_rng(seed)
    vals = {}
    for n in fwd.nodes():
        if n.op == "param":
            vals[n.name] = rng.normal(size=n.shape) * 0.7
        if n.op in ("input", "target"):
            vals[n.name] = rng.uniform(0.1, 0.9, size=(B, *n.shape))
    return vals


def _flat(g, out):
    return np.concatenate([np.ravel(out[k]) for k in g.outputs])


def exact_expectation(g, vals):
    """Σ_k estimate(e_k) over every unit noise vector: E[estimate] exactly."""
    leaves = [n for n in g.nodes() if n.op == "noise"]
    shapes = [((B,) if n.attr("batched") else ()) + n.shape for n in leaves]
    sizes = [int(np.prod(s)) for s in shapes]
    total = None
    for k in range(sum(sizes)):
        flat = np.zeros(sum(sizes))
        flat[k] = 1.0
        v, off = dict(vals), 0
        for n, s, sz in zip(leaves, shapes, sizes):
            v[n.name] = flat[off : off + sz].reshape(s)
            off += sz
        e = _flat(g, evaluate(g, v))
        total = e if total is None else total + e
    return total


@pytest.fixture(scope="module", params=list(MODELS))
def case(request):
    fwd = MODELS[request.param]().forward_graph()
    vals = _values(fwd)
    return request.param, fwd, vals, np.diag(oracle.oracle_hessian(fwd, vals))


@pytest.mark.parametrize("estimator", ["S", "TU"])
def test_cp_is_unbiased_exactly(case, estimator):
    name, fwd, vals, d = case
    g = cp_graph(fwd, estimator)
    assert any(n.op == "noise" for n in g.nodes())
    assert rel_err(exact_expectation(g, vals), d) < 1e-10, name


def test_gn_estimator_is_unbiased_for_diag_of_G(case):
    name, fwd, vals, _ = case
    if name == "reductions":  # no loss: no Gauss-Newton split
        with pytest.raises(errors.LossError, match="no loss"):
            cp_graph(fwd, "GN")
        return
    G = oracle.oracle_gauss_newton(fwd, vals)
    g = cp_graph(fwd, "GN")
    assert rel_err(exact_expectation(g, vals), np.diag(G)) < 1e-10, name


def test_a_wrong_skip_rule_is_caught(monkeypatch):
    """Skipping every bilinear coupling (the naive rule, right for plain MLPs) is biased on
    the tied model, where W.T @ code couples W with a value computed from W."""
    fwd = tied_model().forward_graph()
    vals = _values(fwd)
    d = np.diag(oracle.oracle_hessian(fwd, vals))
    monkeypatch.setattr(
        curvprop.Sweep,
        "_keep",
        lambda self, node, term: (
            not isinstance(term, curvprop.curv.Coupling) and node.inputs[term.i] in self.live
        ),
    )
    assert rel_err(exact_expectation(cp_graph(fwd, "S"), vals), d) > 1e-3


def test_couplings_of_disjoint_parameters_are_skipped():
    """In an MLP every W @ h has W a leaf not feeding h: no coupling noise at all, only
    the tanh and loss nodes inject (one noise leaf each)."""
    m = sc.Model("mlp")
    x, t = m.input("x", 3), m.target("t", 2)
    W1, W2 = m.param("W1", (4, 3)), m.param("W2", (2, 4))
    m.minimize(sc.losses.squared_error(W2 @ sc.tanh(W1 @ x), t))
    g = cp_graph(m.forward_graph(), "S")
    noise = [n for n in g.nodes() if n.op == "noise"]
    assert sorted(n.shape for n in noise) == [(2,), (4,)]
    # and the weight diagonals are single GEMMs of squares (no per-case |W| arrays)
    assert not [n for n in g.nodes() if n.op == "outer" and n.batched and n.id in _live(g)]


def _live(g):
    live = set()
    for o in g.outputs.values():
        live |= g.ancestors(o) | {o}
    return live


def test_tied_weights_are_summed_per_case_without_a_per_case_matrix():
    g = cp_graph(tied_model(n_in=5, n_hid=3).forward_graph(), "S")
    live = _live(g)
    assert not [n for n in g.nodes() if n.op == "outer" and n.batched and n.id in live]
    assert len([n for n in g.nodes() if n.op == "outer_bsum" and n.id in live]) >= 3


def test_becker_lecun_is_exact_with_one_hidden_layer_and_biased_with_more(case):
    name, fwd, vals, d = case
    g = becker_lecun_graph(fwd)
    got = _flat(g, evaluate(g, vals))
    m = sc.Model("one")
    x, t = m.input("x", 3), m.target("t", 2)
    W, b = m.param("W", (2, 3)), m.param("b", 2)
    m.minimize(sc.losses.squared_error(sc.tanh(W @ x + b), t))
    f1 = m.forward_graph()
    v1 = _values(f1)
    g1 = becker_lecun_graph(f1)
    assert rel_err(_flat(g1, evaluate(g1, v1)), np.diag(oracle.oracle_hessian(f1, v1))) < 1e-12
    if name in ("branching", "tied"):  # intermediate Hessians are not diagonal there
        assert rel_err(got, d) > 1e-2


def test_curvature_above_the_batch_mean_is_refused():
    m = sc.Model("logmean")
    x, t = m.input("x", 2), m.target("t", 2)
    W = m.param("W", (2, 2))
    per_case = sc.losses.squared_error(W @ x, t)
    m.minimize(sc.elementwise("logp", "log(1 + z)")(per_case))
    fwd = m.forward_graph()
    try:
        g = cp_graph(fwd, "S")
    except errors.ModelError as e:
        assert "batch reduction" in str(e)
    else:  # the DSL puts the log per case: then the estimate must simply be exact
        vals = _values(fwd)
        d = np.diag(oracle.oracle_hessian(fwd, vals))
        assert rel_err(exact_expectation(g, vals), d) < 1e-10


def test_unknown_estimator():
    with pytest.raises(errors.ModelError, match="unknown CP estimator"):
        cp_graph(gate_model().forward_graph(), "XY")
