"""Σ_b ∇f_b ⊙ ∇f_b (``transforms.gradsq``) at graph level, against per-case gradients of the
full-sympy oracle: tied weights (per-case sums before squaring), branching, a custom
two-argument op, and a θ-only term inside the per-case loss."""

from __future__ import annotations

import numpy as np
import oracle
import pytest
from test_curvprop import MODELS, _values
from test_grad import rel_err

from symcurv.passes import optimize
from symcurv.runtime.reference import evaluate
from symcurv.transforms.gradsq import sum_sq_grad_graph


@pytest.mark.parametrize("name", list(MODELS))
def test_sum_of_squared_per_case_gradients(name):
    fwd = MODELS[name]().forward_graph()
    vals = _values(fwd)
    g = sum_sq_grad_graph(fwd)
    out = evaluate(g, vals)
    _, per_case = oracle.oracle_per_case(fwd, vals)
    for p in fwd.leaves("param"):
        want = (per_case[p.name] ** 2).sum(axis=0)
        got = np.asarray(out[f"sqg:{p.name}"])  # Σ_b ∇f_b², no rescaling by B
        assert rel_err(got, want) < 1e-10, (name, p.name)
        # and the mean gradient rides along, for Hessian-free's one-pass call
        assert rel_err(out[f"grad:{p.name}"], per_case[p.name].mean(axis=0)) < 1e-10


def test_tied_weights_need_no_per_case_weight_array():
    """W and W.T: the per-case gradient a_1 b_1ᵀ + b_2 a_2ᵀ is squared through the pair
    expansion (GEMMs of squares), so no batched node has W's shape."""
    fwd = MODELS["tied"]().forward_graph()
    g = optimize(sum_sq_grad_graph(fwd))  # as compiled: dead per-case proxies removed
    shapes = {p.shape for p in fwd.leaves("param") if len(p.shape) == 2}
    assert shapes
    assert not [n for n in g.nodes() if n.batched and n.shape in shapes]
    assert "outer_bsum" in {n.op for n in g.nodes()}
