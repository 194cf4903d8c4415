"""Gauss-Newton-vector products (``transforms.gauss_newton``) against independent oracles, in
the reference interpreter (no Numba):

* the oracle itself: ``oracle_gauss_newton`` (J and H_L from sympy) is symmetric PSD, and
  equals the oracle's Hessian exactly where GN is exact (an output linear in θ; zero
  residuals of a squared error) and differs from it elsewhere;
* tiny models (branching, tied weights, softmax / sigmoid cross-entropy, a custom
  two-argument op, custom convex losses): ``gnvp:<param>`` for random directions against
  the oracle's G times v, to 1e-10; at realistic sizes G v = H v for an output linear in θ;
* accepted splits (constant and data weights, a penalty written as a loss of a parameter)
  against the oracle, and every refusal (no loss, a non-convex custom loss, θ outside a
  loss, a θ-dependent target, a non-linear combination of losses) as a ``LossError`` that
  names the loss or node and the DSL line, also through ``program_graph``; ``hvp_graph``
  still works for every refused objective (the errors' advice).
"""

from __future__ import annotations

import numpy as np
import pytest
from oracle import flat_params, oracle_gauss_newton, oracle_hessian
from test_grad import LOSSES, MODELS, random_leaves, rel_err, tiny, two_layer
from test_rop import bind, hvp_flat, random_direction

import symcurv as sc
from symcurv import errors, pipeline
from symcurv.ir.graph import Graph
from symcurv.ops import REGISTRY
from symcurv.runtime.reference import evaluate
from symcurv.transforms import gauss_newton as gn
from symcurv.transforms import rop


def gnvp_flat(g: Graph, forward: Graph, leaves, v) -> np.ndarray:
    """G v from ``gnvp_graph`` ``g``, flat in the oracle's (declaration, C) order."""
    got = evaluate(g, {**leaves, **bind(v)})
    params = forward.leaves("param")
    return flat_params(
        forward, {p.name: np.broadcast_to(got[f"gnvp:{p.name}"], p.shape) for p in params}
    )


def assert_psd(G: np.ndarray) -> None:
    scale = np.abs(G).max()
    assert np.allclose(G, G.T, rtol=0, atol=1e-12 * scale)
    assert np.linalg.eigvalsh(G).min() >= -1e-10 * scale


def check_against_oracle(f: Graph, B: int = 3, seed: int = 41) -> np.ndarray:
    leaves = random_leaves(f, B=B, seed=seed)
    before = f.digest()
    g = gn.gnvp_graph(f)
    assert f.digest() == before  # a derived copy: the forward graph is untouched
    G = oracle_gauss_newton(f, leaves)
    for s in (seed + 1, seed + 2):
        v = random_direction(f, s)
        want = G @ flat_params(f, v)
        assert np.abs(want).max() > 1e-3  # a non-trivial check
        assert rel_err(gnvp_flat(g, f, leaves, v), want) < 1e-10, s
    return G


def poisson_model(n_in=3, n_hid=2, n_out=2):
    loss = lambda y, t: sc.losses.custom("gn_poisson", "exp(y) - t*y", y, t)
    return two_layer("mlp_poisson", sc.tanh, loss)(n_in, n_hid, n_out)


def quartic_model(n_in=3, n_hid=2, n_out=2):
    loss = lambda y, t: sc.losses.custom("gn_quartic", "(y - t)**4", y, t)
    return two_layer("mlp_quartic", sc.tanh, loss)(n_in, n_hid, n_out)


def linear_output_model(loss: str):
    """y = W x + b (linear in θ): the Gauss-Newton matrix IS the Hessian."""

    def build(n_in=3, n_hid=None, n_out=2):
        m = sc.Model(f"linear_{loss}")
        x, t = m.input("x", n_in), m.target("t", n_out)
        W, b = m.param("W", (n_out, n_in)), m.param("b", n_out)
        m.minimize(LOSSES[loss](W @ x + b, t))
        return m

    return build


# ---- the oracle itself -----------------------------------------------------------------------
@pytest.mark.parametrize("loss", ["softmax_cross_entropy", "sigmoid_cross_entropy", "logcosh"])
def test_oracle_gauss_newton_is_the_hessian_for_an_output_linear_in_theta(loss):
    f = linear_output_model(loss)().forward_graph()
    leaves = random_leaves(f, B=4, seed=31)
    G = oracle_gauss_newton(f, leaves)
    assert_psd(G)
    assert rel_err(G, oracle_hessian(f, leaves)) < 1e-12


def test_oracle_gauss_newton_is_the_hessian_at_zero_residual():
    """Squared error: H = G + Σ_k (y_k − t_k) ∇²y_k, so G = H exactly where t = y(θ), and
    not elsewhere (the comparison can fail)."""
    f = tiny("gate")
    leaves = random_leaves(f, B=3, seed=32)
    G = oracle_gauss_newton(f, leaves)
    assert_psd(G)
    H = oracle_hessian(f, leaves)
    assert rel_err(G, H) > 1e-3
    y = f[f.outputs["per_case"]].inputs[0]
    probe = f.copy()
    probe.outputs = {"y": y}
    exact = {**leaves, "t": evaluate(probe, leaves)["y"]}
    assert rel_err(oracle_gauss_newton(f, exact), oracle_hessian(f, exact)) < 1e-12


# ---- gnvp_graph against the oracle --------------------------------------------------------
GN_MODELS = [
    "branching",  # h feeds two branches, softmax cross-entropy
    "tied",  # W and W.T, sigmoid cross-entropy
    "loss_softmax_cross_entropy",
    "gate",  # custom two-argument elementwise op, squared error
    "loss_logcosh",  # custom loss
]


@pytest.mark.parametrize("name", GN_MODELS)
def test_gnvp_matches_oracle_gauss_newton(name):
    G = check_against_oracle(tiny(name))
    assert_psd(G)


@pytest.mark.parametrize("build", [poisson_model, quartic_model], ids=["poisson", "quartic"])
def test_gnvp_of_custom_convex_losses(build):
    assert_psd(check_against_oracle(build().forward_graph()))


def test_gnvp_graph_contract():
    f = tiny("tied")
    g = gn.gnvp_graph(f)
    params = f.leaves("param")
    assert set(g.outputs) == {f"gnvp:{p.name}" for p in params}
    for p in params:
        out = g[g.outputs[f"gnvp:{p.name}"]]
        assert out.shape == p.shape and not out.batched, p.name
    assert sorted((d.name, d.attr("param")) for d in g.leaves("direction")) == sorted(
        (f"v_{p.name}", p.name) for p in params
    )
    assert {n.op for n in g.nodes()} <= set(REGISTRY)
    leaves = random_leaves(f, B=2, seed=33)
    assert np.all(gnvp_flat(g, f, leaves, {p.name: np.zeros(p.shape) for p in params}) == 0)


@pytest.mark.parametrize("loss", ["softmax_cross_entropy", "sigmoid_cross_entropy"])
def test_gnvp_is_hvp_for_an_output_linear_in_theta_at_realistic_size(loss):
    f = linear_output_model(loss)(40, None, 10).forward_graph()
    leaves = random_leaves(f, B=12, seed=34)
    v = random_direction(f, 35)
    gv = gnvp_flat(gn.gnvp_graph(f), f, leaves, v)
    hv = hvp_flat(rop.hvp_graph(f), f, leaves, v)
    assert rel_err(gv, hv) < 1e-12


def test_gnvp_differs_from_hvp_for_a_nonlinear_network():
    f = MODELS["gate"](40, 20, 10).forward_graph()
    leaves = random_leaves(f, B=12, seed=36)
    v = random_direction(f, 37)
    gv = gnvp_flat(gn.gnvp_graph(f), f, leaves, v)
    hv = hvp_flat(rop.hvp_graph(f), f, leaves, v)
    assert rel_err(gv, hv) > 1e-3
    assert flat_params(f, v) @ gv > 0  # vᵀ G v ≥ 0


# ---- which objectives have a split ---------------------------------------------------------
def small_model(objective) -> Graph:
    """x (3) -> tanh(W x + b) -> objective(m, x, t, W, b, y) with t of width 2."""
    m = sc.Model("split")
    x, t = m.input("x", 3), m.target("t", 2)
    W, b = m.param("W", (2, 3)), m.param("b", 2)
    m.minimize(objective(x, t, W, b, sc.tanh(W @ x + b)))
    return m.forward_graph()


SE, SMCE = sc.losses.squared_error, sc.losses.softmax_cross_entropy
ACCEPTED = {
    "constant_factors": lambda x, t, W, b, y: 2 * SE(y, t) + SMCE(W @ x, t) / 4 + 3,
    "data_weight": lambda x, t, W, b, y: sc.sum(x) * SE(y, t),
    "divided_by_data": lambda x, t, W, b, y: SE(y, t) / sc.dot(x, x),
    "penalty_as_a_loss": lambda x, t, W, b, y: SE(y, t) + 0.1 * SE(b, 0 * t),
}


@pytest.mark.parametrize("case", list(ACCEPTED))
def test_accepted_splits_match_the_oracle(case):
    f = small_model(ACCEPTED[case])
    losses = gn.check_split(f, f.outputs["objective"])
    assert losses and all(REGISTRY[L.op].family == "loss" for L in losses)
    assert_psd(check_against_oracle(f, seed=42))


def refused(objective, match: str) -> str:
    """The LossError of ``gnvp_graph`` for a small model (also raised by ``program_graph``,
    before any code is generated); ``hvp_graph`` of the same objective still works."""
    m = sc.Model("refused")
    x, t = m.input("x", 3), m.target("t", 2)
    W, b = m.param("W", (2, 3)), m.param("b", 2)
    m.minimize(objective(x, t, W, b, sc.tanh(W @ x + b)))
    f = m.forward_graph()
    with pytest.raises(errors.LossError, match=match) as info:
        gn.gnvp_graph(f)
    with pytest.raises(errors.LossError, match=match):
        pipeline.program_graph(m, "gnvp")
    assert isinstance(info.value, errors.SymcurvError)
    rop.hvp_graph(f)
    msg = str(info.value)
    # the DSL line: every objective here is a one-line lambda
    assert f"test_gauss_newton.py:{objective.__code__.co_firstlineno}: " in msg
    assert "fix:" in msg and "hvp" in msg
    return msg


@pytest.mark.parametrize(
    "name, expr, d2",
    [
        ("gn_cauchy", "log(1 + (y - t)**2)", "(t - y)**2"),  # concave for |y − t| > 1
        ("gn_cubic", "(y - t)**3", "6*y"),
    ],
)
def test_non_convex_custom_loss_is_refused(name, expr, d2):
    msg = refused(
        lambda x, t, W, b, y: sc.losses.custom(name, expr, W @ x + b, t),
        match=f"cannot prove that custom loss '{name}' is convex",
    )
    assert f"node '{name}' (separable_loss" in msg
    assert "sc.losses.custom(name, expr, W @ x + b, t)" in msg
    assert d2 in msg  # the second derivative sympy could not prove ≥ 0


@pytest.mark.parametrize(
    "name, expr",
    [
        ("gn_logcosh", "log(cosh(y - t))"),
        ("gn_quartic_ok", "(y - t)**4"),
        ("gn_poisson_ok", "exp(y) - t*y"),
        ("gn_linear", "t*y"),  # H_L = 0: convex, and its G is 0
    ],
)
def test_convex_custom_losses_are_accepted(name, expr):
    f = small_model(lambda x, t, W, b, y: sc.losses.custom(name, expr, y, t))
    (L,) = gn.check_split(f, f.outputs["objective"])
    gn.check_convex(L)
    assert L.name == name


def test_no_loss_is_refused():
    msg = refused(
        lambda x, t, W, b, y: sc.sum(sc.square(y)),
        match="the objective has no loss from sc.losses",
    )
    assert "sc.sum(sc.square(y))" in msg


# θ-dependent terms beside the losses: (objective, the node named, its DSL text)
OUTSIDE = {
    "weight_decay": (
        lambda x, t, W, b, y: SE(y, t) + 0.1 * sc.sum(sc.square(b)),
        "'mul'",
        "0.1 * sc.sum(sc.square(b))",
    ),
    "bare_penalty": (
        lambda x, t, W, b, y: SE(W @ x, t) + sc.sum(sc.square(b)),
        "'sum'",
        "sc.sum(sc.square(b))",
    ),
    "output_term": (  # dot(y, t) = sum(y * t)
        lambda x, t, W, b, y: SE(y, t) - sc.dot(y, t),
        "'sum'",
        "sc.dot(y, t)",
    ),
}


@pytest.mark.parametrize("case", list(OUTSIDE))
def test_parameters_outside_a_loss_are_refused(case):
    objective, node, text = OUTSIDE[case]
    msg = refused(objective, match="depends on the parameters and enters the objective outside")
    assert f"node {node}" in msg and text in msg


def test_parameter_dependent_target_is_refused():
    msg = refused(
        lambda x, t, W, b, y: SE(y, b),
        match="the target of loss 'squared_error' depends on the parameters",
    )
    assert "node 'b' (param" in msg and "SE(y, b)" in msg


# (objective, the node named with its expression)
NON_LINEAR = {
    "log": (lambda x, t, W, b, y: sc.log(SE(y, t) + 1), "'log' (log(z))"),
    "square": (lambda x, t, W, b, y: sc.square(SE(y, t)), "'square' (z**2)"),
    "product": (lambda x, t, W, b, y: SE(y, t) * SMCE(W @ x, t), "'mul' (x*y)"),
    "ratio": (lambda x, t, W, b, y: SE(y, t) / SMCE(W @ x, t), "'div' (x/y)"),
    "data_over_loss": (lambda x, t, W, b, y: sc.sum(x) / SE(y, t), "'div' (x/y)"),
}


@pytest.mark.parametrize("case", list(NON_LINEAR))
def test_non_linear_combinations_of_losses_are_refused(case):
    objective, node = NON_LINEAR[case]
    msg = refused(objective, match="combines losses non-linearly")
    assert f"node {node.split(' ')[0]}" in msg and node in msg


@pytest.mark.parametrize("combine", ["sub", "neg", "negative_constant"])
def test_a_negatively_weighted_loss_is_refused(combine):
    """G = Σ c_L Jᵀ H_L J is PSD only for c_L ≥ 0."""
    m = sc.Model("negw")
    x, t = m.input("x", 3), m.target("t", 2)
    W = m.param("W", (2, 3))
    L1 = sc.losses.squared_error(W @ x, t)
    L2 = sc.losses.squared_error(sc.tanh(W @ x), t)
    obj = {"sub": L1 - L2, "neg": L1 + (-L2), "negative_constant": L1 + (-2.0) * L2}[combine]
    m.minimize(obj)
    with pytest.raises(errors.LossError, match="negative weight"):
        gn.gnvp_graph(m.forward_graph())


# custom elementwise functions combine losses by the same rule as the built-ins: the op's
# own ``loss_weight`` (sympy decides affinity and the weights' sign), not a list of names
_twice_plus = sc.elementwise("gn_twice_plus", "2*z + 3")
_half_minus = sc.elementwise("gn_minus_half", "1 - z/2")
_mix = sc.elementwise("gn_mix", lambda u, w: u + 3 * w)
_cube = sc.elementwise("gn_cube_of", "z**3")


def test_a_custom_function_affine_in_its_losses_is_accepted():
    f = small_model(lambda x, t, W, b, y: _twice_plus(SE(y, t)) + _mix(SE(y, t), SMCE(W @ x, t)))
    assert len(gn.check_split(f, f.outputs["objective"])) == 3  # SE twice, SMCE once
    assert_psd(check_against_oracle(f, seed=43))


def test_a_custom_function_negating_a_loss_is_refused():
    refused(lambda x, t, W, b, y: _half_minus(SE(y, t)), match="negative weight")


def test_a_custom_function_non_linear_in_a_loss_is_refused():
    msg = refused(lambda x, t, W, b, y: _cube(SE(y, t)), match="combines losses non-linearly")
    assert "gn_cube_of" in msg
