"""Reverse mode (``transforms.grad``) and forward mode (``transforms.jvp``) against oracles.

* tiny models: the reference interpreter's loss and ``gradient_graph`` gradient against the
  symbolic oracle (the whole per-case loss as one sympy expression), to 1e-10;
* the same kinds of models at realistic sizes against central differences;
* closure under differentiation: the gradient graph differentiated again gives H v, checked
  against the oracle's dense Hessian;
* ``jvp`` of the forward graph against the oracle's directional derivatives.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import oracle
import pytest
import sympy
from oracle import oracle_hessian, oracle_loss_and_grad, oracle_per_case, per_case_expr

import symcurv as sc
from symcurv.ir.graph import Graph
from symcurv.ops import elementwise as ew
from symcurv.ops.registry import emit
from symcurv.runtime.reference import evaluate
from symcurv.transforms import grad, jvp, rop


def rel_err(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.max(np.abs(a - b), initial=0.0) / max(np.max(np.abs(b), initial=0.0), 1e-300))


# ---- models (sizes are arguments: tiny for the oracle, realistic for differences) ---------
def _layer(m, name, n_out, n_in, bias=True):
    W = m.param(f"W{name}", (n_out, n_in))
    return (W, m.param(f"b{name}", n_out)) if bias else W


def gate_model(n_in=3, n_hid=2, n_out=2):
    """A custom two-argument elementwise op joining two different affine maps."""
    gate = sc.elementwise("gate", "x*tanh(y)")
    m = sc.Model("gate")
    x, t = m.input("x", n_in), m.target("t", n_out)
    W1, b1 = _layer(m, "1", n_hid, n_in)
    W2, b2 = _layer(m, "2", n_hid, n_in)
    W3 = _layer(m, "3", n_out, n_hid, bias=False)
    m.minimize(sc.losses.squared_error(W3 @ gate(W1 @ x + b1, W2 @ x + b2), t))
    return m


def branching_model(n_in=3, n_hid=2, n_out=2):
    """h feeds two branches: out = W2 h + W3 (h * h)."""
    m = sc.Model("branching")
    x, t = m.input("x", n_in), m.target("t", n_out)
    W1, b1 = _layer(m, "1", n_hid, n_in)
    W2 = _layer(m, "2", n_out, n_hid, bias=False)
    W3 = _layer(m, "3", n_out, n_hid, bias=False)
    h = sc.tanh(W1 @ x + b1)
    m.minimize(sc.losses.softmax_cross_entropy(W2 @ h + W3 @ (h * h), t))
    return m


def tied_model(n_in=3, n_hid=2, n_out=None):
    """Autoencoder with tied weights: the decoder is W.T."""
    m = sc.Model("tied")
    x = m.input("x", n_in)
    W, b = _layer(m, "", n_hid, n_in)
    c = m.param("c", n_in)
    code = sc.logistic(W @ x + b)
    m.minimize(sc.losses.sigmoid_cross_entropy(W.T @ code + c, x))
    return m


def reductions_model(n_in=3, n_hid=3, n_out=None):
    """sum, dot, softmax and logsumexp in the per-case loss, plus a parameter-only term."""
    m = sc.Model("reductions")
    x = m.input("x", n_in)
    W, b = _layer(m, "", n_hid, n_in)
    V = m.param("V", (n_hid, n_in))
    h = sc.tanh(W @ x + b)
    s = sc.softmax(h)
    loss = (
        sc.logsumexp(h)
        + 0.5 * sc.dot(h, V @ x)
        + sc.sum(s * h) * sc.sum(h)
        + 0.1 * sc.sum(sc.square(b))
    )
    m.minimize(loss)
    return m


LOSSES: dict[str, Callable] = {
    "squared_error": sc.losses.squared_error,
    "sigmoid_cross_entropy": sc.losses.sigmoid_cross_entropy,
    "softmax_cross_entropy": sc.losses.softmax_cross_entropy,
    "logcosh": lambda y, t: sc.losses.custom("logcosh", "log(cosh(y - t))", y, t),
}


def two_layer(name: str, act: Callable, loss: Callable):
    """x -> act(W1 x + b1) -> W2 (.) + b2 -> loss(., t), at any sizes."""

    def build(n_in=3, n_hid=2, n_out=2):
        m = sc.Model(name)
        x, t = m.input("x", n_in), m.target("t", n_out)
        W1, b1 = _layer(m, "1", n_hid, n_in)
        W2, b2 = _layer(m, "2", n_out, n_hid)
        m.minimize(loss(W2 @ act(W1 @ x + b1) + b2, t))
        return m

    return build


def loss_model(loss: str):
    return two_layer(f"mlp_{loss}", sc.logistic, LOSSES[loss])


# every built-in elementwise op, and + - * / ** between nodes and with scalars
ACTIVATIONS: dict[str, Callable] = {
    "tanh": sc.tanh,
    "logistic": sc.logistic,
    "exp": lambda a: sc.exp(0.5 * a),
    "log": lambda a: sc.log(1 + sc.exp(a)),
    "softplus": sc.softplus,
    "square": sc.square,
    "relu": sc.relu,
    "add_scalar": lambda a: a + 1.5 + (2.5 + a) * a,
    "sub_scalar": lambda a: (a - 0.5) * (0.25 - a),
    "mul_scalar": lambda a: 2.0 * a * 3,
    "div_scalar": lambda a: a / 3 + 2 / (1 + a * a),
    "pow_scalar": lambda a: a**2 + 0.1 * a**3 + 1.5**a + (1 + a * a) ** 0.5,
    "neg": lambda a: -a * sc.tanh(a),
    "node_ops": lambda a: (
        (a + sc.tanh(a)) * (a - sc.logistic(a))
        + a / (2 + sc.square(a))
        + (1 + sc.square(a)) ** sc.tanh(a)
    ),
}


def activation_model(act: str):
    return two_layer(f"act_{act}", ACTIVATIONS[act], sc.losses.squared_error)


MODELS: dict[str, Callable] = {
    "gate": gate_model,
    "branching": branching_model,
    "tied": tied_model,
    "reductions": reductions_model,
    **{f"loss_{k}": loss_model(k) for k in LOSSES},
    **{f"act_{k}": activation_model(k) for k in ACTIVATIONS},
}
STRUCTURAL = [
    "gate",
    "branching",
    "tied",
    "reductions",
    "loss_softmax_cross_entropy",
    "loss_logcosh",
    "act_node_ops",
    "act_relu",
    "act_softplus",
]


def random_leaves(graph: Graph, B: int, seed: int) -> dict[str, np.ndarray]:
    """Inputs and targets in (0.05, 0.95) (valid for every loss), parameters ~ N(0, 1/fan_in)."""
    rng = np.random.default_rng(seed)
    out = {}
    for n in graph.nodes():
        if n.op in ("input", "target"):
            out[n.name] = rng.uniform(0.05, 0.95, size=(B, *n.shape))
        elif n.op == "param":
            out[n.name] = rng.normal(size=n.shape) / np.sqrt(n.shape[-1])
    return out


_FORWARD: dict[str, Graph] = {}


def tiny(name: str) -> Graph:
    if name not in _FORWARD:
        _FORWARD[name] = MODELS[name]().forward_graph()
    return _FORWARD[name]


# ---- tiny models: gradient graph vs the symbolic oracle -------------------------------------
@pytest.mark.parametrize("name", list(MODELS))
def test_gradient_matches_oracle(name):
    f = tiny(name)
    leaves = random_leaves(f, B=4, seed=1)
    g = grad.gradient_graph(f)
    got = evaluate(g, leaves)
    want_loss, want_grads = oracle_loss_and_grad(f, leaves)
    assert rel_err(got["objective"], want_loss) < 1e-10
    assert set(g.outputs) == {"objective"} | {f"grad:{p.name}" for p in f.leaves("param")}
    for p, want in want_grads.items():
        assert rel_err(np.broadcast_to(got[f"grad:{p}"], want.shape), want) < 1e-10, p
        assert g[g.outputs[f"grad:{p}"]].shape == want.shape
        assert not g[g.outputs[f"grad:{p}"]].batched
    # the per-case loss of the reference interpreter, row by row
    per_case, _ = oracle_per_case(f, leaves)
    assert rel_err(evaluate(f, leaves, ["per_case"])["per_case"], per_case) < 1e-10


def test_unused_parameter_gets_zero_gradient():
    m = sc.Model("unused")
    x, t = m.input("x", 3), m.target("t", 2)
    W = m.param("W", (2, 3))
    m.param("spare", 4)
    m.minimize(sc.losses.squared_error(W @ x, t))
    with pytest.warns(sc.errors.UnusedParameterWarning, match="'spare'"):
        f = m.forward_graph()
    leaves = random_leaves(f, B=3, seed=2)
    got = evaluate(grad.gradient_graph(f), leaves)
    _, want = oracle_loss_and_grad(f, leaves)
    assert rel_err(got["grad:W"], want["W"]) < 1e-10
    assert np.all(np.broadcast_to(got["grad:spare"], (4,)) == 0) and np.all(want["spare"] == 0)


# ---- realistic sizes: gradient vs central differences ---------------------------------------
REALISTIC = [
    "gate",
    "branching",
    "tied",
    "reductions",
    *(f"loss_{k}" for k in LOSSES),
    "act_relu",
    "act_node_ops",
]


@pytest.mark.parametrize("name", REALISTIC)
def test_gradient_matches_central_differences(name):
    f = MODELS[name](50, 30, 10).forward_graph()
    leaves = random_leaves(f, B=16, seed=3)
    got = evaluate(grad.gradient_graph(f), leaves)
    params = [p.name for p in f.leaves("param")]
    g = {p: np.broadcast_to(got[f"grad:{p}"], leaves[p].shape) for p in params}

    def loss(shift: dict[str, np.ndarray], eps: float) -> float:
        moved = {k: v + eps * shift[k] if k in shift else v for k, v in leaves.items()}
        return float(evaluate(f, moved, ["objective"])["objective"])

    rng = np.random.default_rng(4)
    eps = 1e-5
    for _ in range(3):  # random directions through every parameter at once
        u = {p: rng.normal(size=leaves[p].shape) for p in params}
        fd = (loss(u, eps) - loss(u, -eps)) / (2 * eps)
        gu = sum(float(np.sum(g[p] * u[p])) for p in params)
        assert abs(fd - gu) <= 1e-6 * max(abs(gu), 1e-3), (fd, gu)
    for p in params:  # a few single coordinates of every parameter
        scale = np.max(np.abs(g[p]))
        for flat in rng.choice(leaves[p].size, size=3, replace=False):
            e = np.zeros(leaves[p].shape)
            e.flat[flat] = 1.0
            fd = (loss({p: e}, eps) - loss({p: e}, -eps)) / (2 * eps)
            assert abs(fd - g[p].flat[flat]) <= 1e-6 * max(scale, 1e-8), (p, flat)


# ---- closed under differentiation: differentiate the gradient graph again -------------------
def add_leaf(g: Graph, op: str, like, name: str) -> str:
    return emit(g, op, [], {"shape": like.shape}, name=name)


def hvp_graph(f: Graph) -> tuple[Graph, list]:
    """Gradient graph plus s = Σ_p <grad_p, v_p> and outputs ``hv:<p>`` = ∂s/∂p = (H v)_p."""
    g = grad.gradient_graph(f)
    params = g.leaves("param")
    s = None
    for p in params:
        v = add_leaf(g, "param", p, f"v_{p.name}")
        prod = ew.call(g, "mul", g.outputs[f"grad:{p.name}"], v)
        s = ew.add(g, s, emit(g, "sum", [prod]))
    hv = grad.vjp(g, s, [p.id for p in params])
    g.outputs.update({f"hv:{p.name}": hv[p.id] for p in params if hv[p.id] is not None})
    return g, params


HESSIAN_MODELS = [
    "gate",
    "branching",
    "tied",
    "reductions",
    "loss_logcosh",
    "loss_softmax_cross_entropy",
    "act_node_ops",
    "act_softplus",
    "act_relu",
]


@pytest.mark.parametrize("name", HESSIAN_MODELS)
def test_gradient_graph_differentiates_to_hvp(name):
    f = tiny(name)
    leaves = random_leaves(f, B=3, seed=5)
    g, params = hvp_graph(f)
    rng = np.random.default_rng(6)
    v = {p.name: rng.normal(size=p.shape) for p in params}
    got = evaluate(g, {**leaves, **{f"v_{k}": a for k, a in v.items()}})
    hv = np.concatenate(
        [np.broadcast_to(got.get(f"hv:{p.name}", 0.0), p.shape).ravel() for p in params]
    )
    H = oracle_hessian(f, leaves)
    want = H @ np.concatenate([v[p.name].ravel() for p in params])
    assert np.allclose(H, H.T, rtol=0, atol=1e-12)
    assert rel_err(hv, want) < 1e-10
    # and the derived graph uses only registered IR ops (it could be differentiated again)
    from symcurv.ops import REGISTRY

    assert {n.op for n in g.nodes()} <= set(REGISTRY)


# ---- forward mode ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name",
    [
        "gate",
        "branching",
        "tied",
        "reductions",
        "loss_logcosh",
        "loss_sigmoid_cross_entropy",
        "act_pow_scalar",
    ],
)
def test_jvp_matches_oracle_directional_derivatives(name):
    f = tiny(name)
    leaves = random_leaves(f, B=4, seed=7)
    _, per_case_grads = oracle_per_case(f, leaves)
    rng = np.random.default_rng(8)
    data = [n for n in f.nodes() if n.op == "input"]
    params = f.leaves("param")
    for subset in (params, data, params + data, params[:1]):
        g = f.copy()
        tangents, values = {}, {}
        for n in subset:
            tangents[n.id] = add_leaf(g, n.op, n, f"d_{n.name}")
            values[f"d_{n.name}"] = rng.normal(size=leaves[n.name].shape)
        out = jvp.jvp(g, tangents, [g.outputs["per_case"], g.outputs["objective"]])
        g.outputs = {
            "dper_case": out[g.outputs["per_case"]],
            "dobjective": out[g.outputs["objective"]],
        }
        assert g[g.outputs["dper_case"]].batched and g[g.outputs["dper_case"]].shape == ()
        got = evaluate(g, {**leaves, **values})
        want = sum(
            np.sum(
                (per_case_grads[n.name] * values[f"d_{n.name}"]).reshape(
                    len(per_case_grads[n.name]), -1
                ),
                axis=1,
            )
            for n in subset
        )
        assert rel_err(got["dper_case"], want) < 1e-10
        assert rel_err(got["dobjective"], want.mean()) < 1e-10


def test_jvp_of_gradient_graph_is_hvp():
    """Pearlmutter's R-operator: the jvp of the gradient graph along v is H v."""
    f = tiny("branching")
    leaves = random_leaves(f, B=3, seed=9)
    g = grad.gradient_graph(f)
    params = g.leaves("param")
    rng = np.random.default_rng(10)
    tangents, values = {}, {}
    for p in params:
        tangents[p.id] = add_leaf(g, "param", p, f"v_{p.name}")
        values[f"v_{p.name}"] = rng.normal(size=p.shape)
    outs = [g.outputs[f"grad:{p.name}"] for p in params]
    r = jvp.jvp(g, tangents, outs)
    g.outputs = {f"hv:{p.name}": r[o] for p, o in zip(params, outs)}
    got = evaluate(g, {**leaves, **values})
    hv = np.concatenate([np.broadcast_to(got[f"hv:{p.name}"], p.shape).ravel() for p in params])
    want = oracle_hessian(f, leaves) @ np.concatenate(
        [values[f"v_{p.name}"].ravel() for p in params]
    )
    assert rel_err(hv, want) < 1e-10


# ---- the oracle itself: its chain rule over sympy's cse program vs one big sympy.diff -------
@pytest.mark.parametrize("name", ["gate", "tied", "act_softplus"])
def test_oracle_agrees_with_direct_differentiation(name):
    f = tiny(name)
    leaves = random_leaves(f, B=2, seed=11)
    expr, symbols = per_case_expr(f)
    leaf_nodes = [n for n in f.nodes() if n.op in ("input", "target", "param")]
    args = [s for n in leaf_nodes for s in symbols[n.name].ravel()]
    params = [s for n in leaf_nodes if n.op == "param" for s in symbols[n.name].ravel()]
    k = len(params)
    pairs = [(i, j) for i, j in np.random.default_rng(12).integers(0, k, size=(6, 2))]
    first = [sympy.diff(expr, p) for p in params]
    second = [oracle.clean(sympy.diff(first[i], params[j])) for i, j in pairs]
    fn = sympy.lambdify(args, [expr, *first, *second], modules="numpy", cse=True)
    vals = []
    for n in leaf_nodes:
        v = leaves[n.name]
        vals += list(v.ravel()) if n.op == "param" else list(v.reshape(len(v), -1).T)
    out = [np.broadcast_to(np.asarray(o, dtype=np.float64), (2,)).mean() for o in fn(*vals)]
    loss, grads = oracle_loss_and_grad(f, leaves)
    assert rel_err(loss, out[0]) < 1e-13
    assert rel_err(np.concatenate([g.ravel() for g in grads.values()]), out[1 : 1 + k]) < 1e-13
    H = oracle_hessian(f, leaves)
    assert rel_err([H[i, j] for i, j in pairs], out[1 + k :]) < 1e-12


def test_a_number_as_exponent_is_differentiable_at_zero():
    """Found by tests/fuzz (issue 20): ``v ** 2`` was the two-argument pow x**y, whose
    ∂/∂x sympy writes as y*x**y/x, 0/0 = NaN wherever v = 0 — the gradient, H v and every
    CP estimate of ``relu(a) ** 2`` were NaN for each a < 0. Now ``v ** c`` is z**c."""
    m = sc.Model("relu_squared")
    x = m.input("x", 2)
    W = m.param("W", (2, 2))
    m.minimize(sc.sum(sc.relu(W @ x) ** 2 + 0.5 * (W @ x) ** 3))
    f = m.forward_graph()
    leaves = {"x": np.array([[0.5, 0.5], [0.2, 0.7]]), "W": np.array([[1.0, 1.0], [-1.0, -1.0]])}
    _, want = oracle_loss_and_grad(f, leaves)
    assert rel_err(evaluate(grad.gradient_graph(f), leaves)["grad:W"], want["W"]) < 1e-12
    v = np.array([[0.3, -1.0], [2.0, 0.5]])
    got = evaluate(rop.hvp_graph(f), {**leaves, "v:W": v})["hvp:W"]
    assert rel_err(np.ravel(got), oracle_hessian(f, leaves) @ v.ravel()) < 1e-12
