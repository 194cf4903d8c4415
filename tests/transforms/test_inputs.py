"""Derivatives with respect to the data (``transforms.inputs``) at graph level, against
the full-sympy oracle: per-case gradients, Hessian-vector products, the exact diagonal,
CP's exact expectation (summed over unit noise vectors, as in test_curvprop) and
Becker-LeCun, on the tiny models (branching, tied weights, softmax, a two-argument custom
op) — and the gradient of Σ_b tr ∇²_x f_b with respect to θ through the ordinary ``grad``
transform (the IR is closed under differentiation: score matching needs exactly this).
"""

from __future__ import annotations

import numpy as np
import oracle
import pytest
import sympy
from models import MODELS
from test_curvprop import exact_expectation
from test_grad import rel_err

import symcurv as sc
from symcurv import errors
from symcurv.ir import outputs
from symcurv.ops import elementwise as ew
from symcurv.ops.registry import emit
from symcurv.runtime.reference import evaluate
from symcurv.transforms import grad, inputs

B = 2  # test_curvprop.exact_expectation sums over unit noise vectors of 2 cases


def _values(fwd, seed=0):
    rng = np.random.default_rng(seed)
    vals = {}
    for n in fwd.nodes():
        if n.op == "param":
            vals[n.name] = rng.normal(size=n.shape) * 0.6
        if n.op in ("input", "target"):
            vals[n.name] = rng.uniform(0.1, 0.9, size=(B, *n.shape))
    return vals


@pytest.fixture(scope="module", params=list(MODELS))
def case(request):
    fwd = MODELS[request.param]().forward_graph()
    vals = _values(fwd)
    xs = [n.name for n in inputs.data_inputs(fwd)]
    H = {x: oracle.oracle_input_hessian(fwd, vals, x) for x in xs}
    return request.param, fwd, vals, xs, H


def _key(result, x):
    return outputs.per_case(result, x).key


def test_input_grad_is_the_per_case_gradient(case):
    name, fwd, vals, xs, _ = case
    g = inputs.input_grad_graph(fwd)
    got = evaluate(g, vals)
    _, want = oracle.oracle_per_case(fwd, vals)  # per case, NOT divided by B
    for x in xs:
        assert g.output_type(_key("input_grad", x)).kind == outputs.PER_CASE
        assert rel_err(got[_key("input_grad", x)], want[x]) < 1e-10, (name, x)


def test_input_hvp_is_the_per_case_hessian_times_v(case):
    name, fwd, vals, xs, H = case
    g = inputs.input_hvp_graph(fwd)
    rng = np.random.default_rng(1)
    for x in xs:
        V = {f"V_{y}": np.zeros_like(vals[y]) for y in xs}
        V[f"V_{x}"] = rng.normal(size=vals[x].shape)
        got = evaluate(g, {**vals, **V})[_key("input_hvp", x)]
        want = np.einsum("bij,bj->bi", H[x], V[f"V_{x}"])
        assert rel_err(got, want) < 1e-10, (name, x)


def test_exact_diagonal_from_coordinate_sweeps(case):
    """Coordinate i of every case from one input-HVP along e_i (what the runtime does)."""
    name, fwd, vals, xs, H = case
    g = inputs.input_hvp_graph(fwd)
    for x in xs:
        D = vals[x].shape[1]
        d = np.empty((B, D))
        for i in range(D):
            V = {f"V_{y}": np.zeros_like(vals[y]) for y in xs}
            V[f"V_{x}"][:, i] = 1.0
            d[:, i] = evaluate(g, {**vals, **V})[_key("input_hvp", x)][:, i]
        assert rel_err(d, np.diagonal(H[x], axis1=1, axis2=2)) < 1e-10, (name, x)


@pytest.mark.parametrize("estimator", ["S", "TU"])
def test_cp_over_the_input_is_unbiased_per_case(case, estimator):
    name, fwd, vals, xs, H = case
    g = inputs.input_cp_graph(fwd, estimator)
    assert any(n.op == "noise" for n in g.nodes())
    assert all(n.attr("batched") for n in g.nodes() if n.op == "noise")  # per case only
    got = exact_expectation(g, vals)  # outputs concatenated in key order, (B, D) each
    want = np.concatenate([np.diagonal(H[x], axis1=1, axis2=2).ravel() for x in xs])
    assert rel_err(got, want) < 1e-10, name


def _energy_one_layer():
    m = sc.Model("one_layer")
    x = m.input("x", 4)
    W = m.param("W", (5, 4), init=sc.init.normal(0.5))
    b = m.param("b", 5, init=sc.init.normal(0.5))
    m.minimize(sc.sum(sc.softplus(W @ x + b)) + sc.dot(x, x) * 0.5)
    return m


def test_becker_lecun_is_exact_with_one_nonlinear_layer():
    """f = Σ_k g(w_kᵀx + b_k) + ½‖x‖²: ∇²_x f = Wᵀ diag(g'') W + I, whose diagonal
    Σ_k W_ki² g''_k + 1 is what the diagonal recursion computes — exactly."""
    fwd = _energy_one_layer().forward_graph()
    vals = _values(fwd)
    H = oracle.oracle_input_hessian(fwd, vals, "x")
    assert np.abs(H - np.diagonal(H, axis1=1, axis2=2)[:, :, None] * np.eye(4)).max() > 1e-2
    got = evaluate(inputs.input_becker_lecun_graph(fwd), vals)[_key("input_bl", "x")]
    assert rel_err(got, np.diagonal(H, axis1=1, axis2=2)) < 1e-10


def test_becker_lecun_is_biased_with_two_nonlinear_layers(case):
    """Through two tanh layers (mlp) the intermediate Hessians are not diagonal: the
    deterministic recursion differs from the exact diagonal (documented as biased)."""
    name, fwd, vals, xs, H = case
    got = evaluate(inputs.input_becker_lecun_graph(fwd), vals)
    err = max(rel_err(got[_key("input_bl", x)], np.diagonal(H[x], axis1=1, axis2=2)) for x in xs)
    if name in ("mlp", "branching", "all_ops"):
        assert err > 1e-3, name


def test_trace_of_the_input_hessian_differentiated_again():
    """∂/∂θ Σ_b Σ_i (∇²_x f_b)_ii through the ordinary gradient transform, checked against
    sympy differentiating the expanded per-case loss three times."""
    m = sc.Model("small")
    x, t = m.input("x", 3), m.target("t", 2)
    W1 = m.param("W1", (2, 3), init=sc.init.normal(0.5))
    W2 = m.param("W2", (2, 2), init=sc.init.normal(0.5))
    m.minimize(sc.losses.softmax_cross_entropy(W2 @ sc.tanh(W1 @ x), t))
    fwd = m.forward_graph()
    vals = _values(fwd)
    # the graph: s = Σ_b V_bᵀ (∇²_x f_b) V_b, then ∂s/∂θ by grad.vjp; at V = e_i, summed
    g = inputs.input_hvp_graph(fwd)
    hv = g.outputs[_key("input_hvp", "x")]
    V = g.by_name("V_x").id
    s = emit(g, "sum", [ew.mul(g, hv, V)], name="vHv")
    total = emit(g, "batch_sum", [s], name="trace")
    params = g.leaves("param")
    dtheta = grad.vjp(g, total, [p.id for p in params])
    g.outputs = {p.name: dtheta[p.id] for p in params}
    got = {p.name: 0.0 for p in params}
    for i in range(3):
        e = np.zeros((B, 3))
        e[:, i] = 1.0
        out = evaluate(g, {**vals, "V_x": e})
        got = {k: got[k] + out[k] for k in got}
    # oracle: expand f_b, take tr ∇²_x f_b, differentiate by every θ symbol, sum the cases
    expr, syms = oracle.per_case_expr(fwd)
    tr = sum(sympy.diff(expr, s, 2) for s in syms["x"].ravel())
    args = [s for n in ("x", "t") for s in syms[n].ravel()]
    for p in params:
        want = np.zeros(p.shape)
        for idx in np.ndindex(*p.shape):
            d = sympy.diff(tr, syms[p.name][idx])
            sub = {
                s: float(vals[p2.name][j])
                for p2 in params
                for j, s in np.ndenumerate(syms[p2.name])
            }
            f = sympy.lambdify(args, d.xreplace(sub), "numpy")
            cols = [vals["x"][:, k] for k in range(3)] + [vals["t"][:, k] for k in range(2)]
            want[idx] = np.sum(np.broadcast_to(f(*cols), (B,)))
        assert rel_err(got[p.name], want) < 1e-10, p.name


def test_a_model_without_inputs_is_refused():
    m = sc.Model("no_data")
    w = m.param("w", 3, init=sc.init.normal(1.0))
    m.minimize(sc.dot(w, w))
    with pytest.raises(errors.NotApplicableError, match="no per-case input"):
        inputs.input_grad_graph(m.forward_graph())
