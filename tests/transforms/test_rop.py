"""Hessian-vector products (``transforms.rop.hvp_graph``, Pearlmutter's R-operator) against
independent oracles, in the reference interpreter (no Numba):

* tiny models (branching, tied weights W and W.T, softmax cross-entropy, a custom
  two-argument elementwise op, a custom loss, every reduction): the ``hvp:<param>`` outputs
  for a random direction against the symbolic oracle's dense Hessian (the whole per-case
  loss expanded in sympy and differentiated twice) times v, to 1e-10;
* realistic sizes: against central differences of the gradient graph, and the symmetry
  uᵀ(H v) = vᵀ(H u);
* the graph's contract: one ``direction`` leaf ``v_<param>`` per parameter bound as
  ``"v:<param>"``, outputs exactly ``hvp:<param>`` shaped like their parameter and not
  batched, the forward graph left untouched, only registered ops (it could be
  differentiated again), a zero product for an unused parameter.
"""

from __future__ import annotations

import numpy as np
import pytest
from oracle import flat_params, oracle_hessian
from test_grad import MODELS, random_leaves, rel_err, tiny

import symcurv as sc
from symcurv.ir.graph import Graph
from symcurv.ops import REGISTRY
from symcurv.runtime.reference import evaluate
from symcurv.transforms import grad, rop


def random_direction(graph: Graph, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {p.name: rng.normal(size=p.shape) for p in graph.leaves("param")}


def bind(v: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A direction as the reference interpreter reads it: ``"v:<param>"``."""
    return {f"v:{k}": a for k, a in v.items()}


def hvp_flat(g: Graph, forward: Graph, leaves, v) -> np.ndarray:
    """H v from ``hvp_graph`` ``g``, flat in the oracle's (declaration, C) order."""
    got = evaluate(g, {**leaves, **bind(v)})
    params = forward.leaves("param")
    return flat_params(
        forward, {p.name: np.broadcast_to(got[f"hvp:{p.name}"], p.shape) for p in params}
    )


# ---- tiny models: hvp_graph against the symbolic oracle's Hessian ---------------------------
HVP_MODELS = [
    "branching",  # h feeds two branches, softmax cross-entropy
    "tied",  # W and W.T in one per-case loss
    "loss_softmax_cross_entropy",
    "gate",  # custom two-argument elementwise op x*tanh(y)
    "loss_logcosh",  # custom loss
    "reductions",  # sum, dot, softmax, logsumexp and a parameter-only term: no loss at all
]


@pytest.mark.parametrize("name", HVP_MODELS)
def test_hvp_matches_oracle_hessian(name):
    f = tiny(name)
    before = f.digest()
    leaves = random_leaves(f, B=3, seed=21)
    g = rop.hvp_graph(f)
    assert f.digest() == before  # a derived copy: the forward graph is untouched
    H = oracle_hessian(f, leaves)
    assert np.allclose(H, H.T, rtol=0, atol=1e-12 * np.abs(H).max())
    for seed in (22, 23):  # two directions: the product is linear in v, not a cached column
        v = random_direction(f, seed)
        want = H @ flat_params(f, v)
        assert np.abs(want).max() > 1e-3  # a non-trivial check
        assert rel_err(hvp_flat(g, f, leaves, v), want) < 1e-10, (name, seed)


@pytest.mark.parametrize("name", ["tied", "gate"])
def test_hvp_along_one_parameter_is_a_block_column(name):
    """v non-zero in one parameter only: every parameter's output is that block column of H
    (a direction bound to the wrong parameter or a missing cross term shows here)."""
    f = tiny(name)
    leaves = random_leaves(f, B=2, seed=24)
    g = rop.hvp_graph(f)
    H = oracle_hessian(f, leaves)
    params = f.leaves("param")
    for p in params:
        v = {q.name: np.zeros(q.shape) for q in params}
        v[p.name] = np.random.default_rng(25).normal(size=p.shape)
        assert rel_err(hvp_flat(g, f, leaves, v), H @ flat_params(f, v)) < 1e-10, p.name


def test_hvp_graph_contract():
    f = tiny("tied")
    g = rop.hvp_graph(f)
    params = f.leaves("param")
    assert set(g.outputs) == {f"hvp:{p.name}" for p in params}
    for p in params:
        out = g[g.outputs[f"hvp:{p.name}"]]
        assert out.shape == p.shape and not out.batched, p.name
    dirs = g.leaves("direction")
    assert sorted((d.name, d.attr("param"), d.shape) for d in dirs) == sorted(
        (f"v_{p.name}", p.name, p.shape) for p in params
    )
    assert {n.op for n in g.nodes()} <= set(REGISTRY)
    leaves = random_leaves(f, B=2, seed=26)
    with pytest.raises(KeyError, match="v:W"):  # the direction is read as "v:<param>"
        evaluate(g, leaves)
    zero = {p.name: np.zeros(p.shape) for p in params}
    assert np.all(hvp_flat(g, f, leaves, zero) == 0)


def test_unused_parameter_gets_a_zero_product():
    m = sc.Model("unused")
    x, t = m.input("x", 3), m.target("t", 2)
    W = m.param("W", (2, 3))
    m.param("spare", 4)
    m.minimize(sc.losses.softmax_cross_entropy(sc.tanh(W @ x), t))
    with pytest.warns(sc.errors.UnusedParameterWarning, match="'spare'"):
        f = m.forward_graph()
    leaves = random_leaves(f, B=3, seed=27)
    g = rop.hvp_graph(f)
    v = random_direction(f, 28)
    got = evaluate(g, {**leaves, **bind(v)})
    assert np.all(np.broadcast_to(got["hvp:spare"], (4,)) == 0)
    H = oracle_hessian(f, leaves)
    assert rel_err(hvp_flat(g, f, leaves, v), H @ flat_params(f, v)) < 1e-10


# ---- realistic sizes: central differences of the gradient graph ----------------------------
@pytest.mark.parametrize("name", ["branching", "tied", "gate", "loss_softmax_cross_entropy"])
def test_hvp_matches_central_differences_of_the_gradient(name):
    f = MODELS[name](40, 20, 10).forward_graph()
    leaves = random_leaves(f, B=12, seed=29)
    params = [p.name for p in f.leaves("param")]
    g_grad, g_hvp = grad.gradient_graph(f), rop.hvp_graph(f)

    def gradient(v: dict[str, np.ndarray], eps: float) -> np.ndarray:
        moved = {k: a + eps * v[k] if k in v else a for k, a in leaves.items()}
        got = evaluate(g_grad, moved)
        return flat_params(
            f, {p: np.broadcast_to(got[f"grad:{p}"], leaves[p].shape) for p in params}
        )

    u, v = random_direction(f, 30), random_direction(f, 31)
    hv, hu = hvp_flat(g_hvp, f, leaves, v), hvp_flat(g_hvp, f, leaves, u)
    eps = 1e-5
    fd = (gradient(v, eps) - gradient(v, -eps)) / (2 * eps)
    assert np.linalg.norm(hv - fd) <= 1e-7 * np.linalg.norm(fd), name
    # H is symmetric: uᵀ(H v) = vᵀ(H u)
    a, b = flat_params(f, u) @ hv, flat_params(f, v) @ hu
    assert abs(a - b) <= 1e-11 * np.linalg.norm(hv) * np.linalg.norm(flat_params(f, u))
