"""Score matching (transforms/score_matching.py) at graph level, against the full-sympy
oracle: the objective J = mean_b Σ_i ½(∂E/∂x_i)² − ∂²E/∂x_i² + λ(∂²E/∂x_i²)² and its
θ-gradient, with sympy differentiating the expanded energy three times, on three tiny
energies (one nonlinear layer, two layers, a custom two-argument op):

- ``exact`` equals the oracle everywhere; ``becker_lecun`` equals it on the one-layer
  energy (Kingma & LeCun's case) and differs on the other two (its bias, measured);
- ``S`` and ``TU``: the mean over fixed seeds of J and ∂J/∂θ (the reference interpreter on
  the counter-based noise) is within 4.5 standard errors of the oracle.
"""

from __future__ import annotations

import functools

import numpy as np
import oracle
import pytest
import sympy
from test_grad import rel_err

import symcurv as sc
from symcurv.passes import optimize
from symcurv.runtime import case_expansion
from symcurv.runtime import noise as noise_module
from symcurv.runtime.reference import evaluate
from symcurv.transforms.grad import gradient_graph

B, REG = 3, 0.3
SEEDS = 200


def one_layer():
    """Σ_k e^{a_k} log(1 + (w_kᵀx)²): the product of Student-t experts in miniature."""
    m = sc.Model("sm_one")
    x = m.input("x", 3)
    W = m.param("W", (2, 3), init=sc.init.normal(0.6))
    a = m.param("a", 2, init=sc.init.normal(0.3))
    m.energy(sc.dot(sc.exp(a), sc.log(1 + sc.square(W @ x))))
    return m


def two_layer():
    """Σ log(1 + (V tanh(W x + b))²): a nonlinearity between x and the last layer."""
    m = sc.Model("sm_two")
    x = m.input("x", 2)
    W = m.param("W", (2, 2), init=sc.init.normal(0.8))
    b = m.param("b", 2, init=sc.init.normal(0.3))
    V = m.param("V", (2, 2), init=sc.init.normal(0.8))
    m.energy(sc.sum(sc.log(1 + sc.square(V @ sc.tanh(W @ x + b)))))
    return m


def two_arg():
    """Σ gate(W x, U x) + ½‖x‖² with gate(u, v) = u·tanh(v): a custom two-argument op whose
    operands both depend on x (cross terms of the Hessian)."""
    gate = sc.elementwise("gate_sm", "u*tanh(v)", args=("u", "v"))
    m = sc.Model("sm_gate")
    x = m.input("x", 2)
    W = m.param("W", (2, 2), init=sc.init.normal(0.8))
    U = m.param("U", (2, 2), init=sc.init.normal(0.8))
    m.energy(sc.sum(gate(W @ x, U @ x)) + 0.5 * sc.dot(x, x))
    return m


def poe():
    """Kingma & LeCun's product of Student-t experts: Σ_k e^{β_k} g(w̃_kᵀ x), w̃_k the k-th
    row of W normalised (sc.normalize_rows), g(z) = log(1 + (cz)²/2), c = e^{1.5}."""
    student = sc.elementwise("student_t_sm", lambda z: sympy.log((sympy.exp(1.5) * z) ** 2 / 2 + 1))
    m = sc.Model("sm_poe")
    x = m.input("x", 2)
    W = m.param("W", (2, 2), init=sc.init.normal(0.8))
    beta = m.param("beta", 2, init=sc.init.normal(0.3))
    m.energy(sc.dot(sc.exp(beta), student(sc.normalize_rows(W) @ x)))
    return m


ENERGIES = {"one_layer": one_layer, "two_layer": two_layer, "two_arg": two_arg, "poe": poe}
ONE_NONLINEAR_LAYER = ("one_layer", "poe")  # Becker-LeCun is exact for these


def _values(fwd, seed=1):
    rng = np.random.default_rng(seed)
    vals = {}
    for n in fwd.nodes():
        if n.op == "param":
            vals[n.name] = rng.normal(size=n.shape) * 0.7
        if n.op == "input":
            vals[n.name] = rng.normal(size=(B, *n.shape))
    return vals


def oracle_sm(fwd, vals, reg):
    """(J, {param: ∂J/∂param}) from the expanded energy: s_i = ∂E/∂x_i, d_i = ∂²E/∂x_i²,
    J_b = Σ_i ½ s_i² − d_i + λ d_i², differentiated by sympy, averaged over the cases."""
    E, syms = oracle.per_case_expr(fwd)
    xs = list(syms["x"].ravel())
    J = 0
    for xi in xs:
        s, d = sympy.diff(E, xi), sympy.diff(E, xi, 2)
        J += s**2 / 2 - d + reg * d**2
    params = fwd.leaves("param")
    theta = {s: float(vals[p.name][idx]) for p in params for idx, s in np.ndenumerate(syms[p.name])}
    cols = [vals["x"][:, k] for k in range(len(xs))]

    def per_case(expr):
        f = sympy.lambdify(xs, expr.xreplace(theta), "numpy")
        return np.broadcast_to(np.asarray(f(*cols), dtype=float), (B,))

    obj = float(per_case(J).mean())
    grads = {}
    for p in params:
        grads[p.name] = np.zeros(p.shape)
        for idx, s in np.ndenumerate(syms[p.name]):
            grads[p.name][idx] = per_case(sympy.diff(J, s)).mean()
    return obj, grads


@functools.cache
def _case(name):
    m = ENERGIES[name]()
    fwd = m.forward_graph()
    vals = _values(fwd)
    return name, m, vals, oracle_sm(fwd, vals, REG)


@pytest.fixture(params=list(ENERGIES))
def energy(request):
    return _case(request.param)


@pytest.fixture(params=[n for n in ENERGIES if n != "poe"])  # poe: one_layer's structure
def cp_energy(request):
    return _case(request.param)


def expanded(g, vals):
    """The leaves as the runtime binds them: for the exact diagonal's graph (one basis
    leaf) the B·D expanded cases (b, i) — x_b repeated D times, the rows e_i tiled B times
    (runtime/case_expansion.py); the leaves themselves otherwise."""
    basis = [n for n in g.leaves("input_direction") if n.attr("basis") is not None]
    if not basis:
        return dict(vals)
    D = vals["x"].shape[1]
    (x,) = case_expansion.expand([vals["x"]], D)
    return {**vals, "x": x, basis[0].name: case_expansion.basis_rows(len(x), D, np.float64)}


def sm_grad_graph(m, diag, reg=REG):
    """The ``grad`` program's graph of the score-matching model, after the passes."""
    return optimize(gradient_graph(sc.score_matching(m, reg=reg, diag=diag).forward_graph()))


def run_sm(g, vals, seed=None):
    """J and ∂J/∂θ from the graph ``g`` by the reference interpreter, the noise leaves
    drawn like the runtime's (stream k of draw 0 under ``seed``, any fixed stream order
    gives independent leaves)."""
    leaves = expanded(g, vals)
    key = noise_module.key(seed)
    for s, n in enumerate(g.leaves("noise")):
        shape = ((B,) if n.batched else ()) + n.shape
        leaves[n.name] = noise_module.draw_cpu(shape, np.float64, key, 0, s, "rademacher")
    out = evaluate(g, leaves)
    params = [n.name for n in g.leaves("param")]
    return float(out["objective"]), {p: out[f"grad:{p}"] for p in params}


@pytest.mark.parametrize("diag", ["exact", "becker_lecun"])
def test_deterministic_diagonals_against_the_oracle(energy, diag):
    name, m, vals, (J, dJ) = energy
    got_J, got_dJ = run_sm(sm_grad_graph(m, diag), vals)
    errs = [abs(got_J - J) / abs(J)] + [rel_err(got_dJ[p], dJ[p]) for p in dJ]
    if diag == "exact" or name in ONE_NONLINEAR_LAYER:
        assert max(errs) < 1e-10, (name, diag, errs)
    else:  # Becker-LeCun's bias: the off-diagonal intermediate Hessians it drops
        assert max(errs) > 1e-3, (name, errs)


@pytest.mark.parametrize("est", ["S", "TU"])
def test_cp_objective_and_gradient_are_unbiased(cp_energy, est):
    """z-test over SEEDS fixed seeds of J and every component of ∂J/∂θ."""
    name, m, vals, (J, dJ) = cp_energy
    g = sm_grad_graph(m, est)
    draws = [run_sm(g, vals, seed=s) for s in range(SEEDS)]
    flat = np.array([[j, *np.concatenate([g[p].ravel() for p in dJ])] for j, g in draws])
    want = np.array([J, *np.concatenate([dJ[p].ravel() for p in dJ])])
    se = flat.std(axis=0, ddof=1) / np.sqrt(len(flat))
    z = (flat.mean(axis=0) - want) / np.maximum(se, 1e-12)
    assert np.all(np.abs(z) < 4.5), (name, est, z)
    assert flat.std(axis=0)[0] > 0  # it is an estimate: the draws differ


def test_the_hessian_of_the_score_matching_objective():
    """hvp (the R-operator) applies to the score-matching graph like to any loss: H v
    against central differences of ∂J/∂θ (both by the reference interpreter)."""
    from symcurv.transforms.rop import hvp_graph

    _, m, vals, _ = _case("two_arg")
    sm = sc.score_matching(m, reg=REG, diag="exact")
    h = optimize(hvp_graph(sm.forward_graph()))
    g = sm_grad_graph(m, "exact")
    rng = np.random.default_rng(3)
    v = {p: rng.normal(size=vals[p].shape) for p in m.params}
    leaves = dict(expanded(h, vals), **{f"v:{p}": v[p] for p in m.params})
    got = evaluate(h, leaves)
    eps = 1e-5
    plus = run_sm(g, {**vals, **{p: vals[p] + eps * v[p] for p in m.params}})[1]
    minus = run_sm(g, {**vals, **{p: vals[p] - eps * v[p] for p in m.params}})[1]
    for p in m.params:
        want = (plus[p] - minus[p]) / (2 * eps)
        assert rel_err(got[f"hvp:{p}"], want) < 1e-6, p
