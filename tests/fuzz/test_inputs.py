"""Random models: the derivatives with respect to the data and the per-case gradients,
against oracles built from the forward graph alone.

* input_grad: central differences of each case's own loss f_b in its input x_b;
* input_hvp: the dense per-case input Hessian assembled from its products is symmetric and
  equals central differences of the (checked) input gradient; the exact diagonal is its
  diagonal;
* input CP (S, TU): the EXACT expectation of one draw (summed over unit noise vectors)
  equals that diagonal for every case;
* per_case_grad: each row is the gradient graph run on that case alone, and its norm is
  per_case_grad_norm's.

Tolerances as in test_reference.py: central differences of step 1e-5 on values bounded by
30 err by ≤ 1e-9 relative; identities exact in exact arithmetic are checked to 1e-9.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given

from symcurv.ir import outputs
from symcurv.runtime.reference import evaluate
from symcurv.transforms import grad, inputs, percase

from . import strategies
from .checks import noise_shapes, prefixed, rel_err, with_theta
from .test_reference import SEEDS, case

B = 2


def _key(result: str, x: str) -> str:
    return outputs.per_case(result, x).key


def _per_case_loss(f, leaves) -> np.ndarray:
    return np.broadcast_to(evaluate(f, leaves, ["per_case"])["per_case"], (B,))


@given(spec=strategies.model_specs(), seed=SEEDS)
def test_input_derivatives(spec, seed):
    f, vals, theta = case(spec, seed, B)
    leaves = with_theta(f, vals, theta)
    xs = [x.name for x in inputs.data_inputs(f)]
    gi = evaluate(inputs.input_grad_graph(f), leaves)
    hg = inputs.input_hvp_graph(f)
    h = 1e-5
    for x in xs:
        D = vals[x].shape[1]
        # ∂f_b/∂x_b by central differences of the forward graph, every case at once
        fd = np.empty((B, D))
        for i in range(D):
            up, dn = dict(leaves), dict(leaves)
            up[x] = vals[x] + h * np.eye(D)[i]
            dn[x] = vals[x] - h * np.eye(D)[i]
            fd[:, i] = (_per_case_loss(f, up) - _per_case_loss(f, dn)) / (2 * h)
        got = gi[_key("input_grad", x)]
        assert np.max(np.abs(got - fd)) <= 1e-7 * max(np.max(np.abs(fd)), 1e-3), x
        # the per-case Hessian, column i = input_hvp along e_i (other inputs' V = 0)
        H = np.empty((B, D, D))
        for i in range(D):
            V = {f"V_{y}": np.zeros_like(vals[y]) for y in xs}
            V[f"V_{x}"][:, i] = 1.0
            H[:, :, i] = evaluate(hg, {**leaves, **V})[_key("input_hvp", x)]
        scale = max(np.max(np.abs(H)), 1e-3)
        assert np.max(np.abs(H - H.transpose(0, 2, 1))) <= 1e-9 * scale, x
        gg = inputs.input_grad_graph(f)
        for i in range(D):
            up, dn = dict(leaves), dict(leaves)
            up[x] = vals[x] + h * np.eye(D)[i]
            dn[x] = vals[x] - h * np.eye(D)[i]
            col = (
                evaluate(gg, up)[_key("input_grad", x)] - evaluate(gg, dn)[_key("input_grad", x)]
            ) / (2 * h)
            assert np.max(np.abs(H[:, :, i] - col)) <= 1e-7 * scale, (x, i)
        # CP over the data: exact expectation per case, for both estimators
        d = np.diagonal(H, axis1=1, axis2=2)
        for est in inputs.CP_ESTIMATORS:
            g = inputs.input_cp_graph(f, est)
            key = _key(f"input_diag_{est}", x)
            shapes = noise_shapes(g, B)
            sizes = [int(np.prod(s)) for _, s in shapes]
            total = np.zeros((B, D))
            for k in range(sum(sizes)):
                unit, off, z = np.zeros(sum(sizes)), 0, {}
                unit[k] = 1.0
                for (name, shape), size in zip(shapes, sizes):
                    z[name] = unit[off : off + size].reshape(shape)
                    off += size
                total += evaluate(g, {**leaves, **z}, [key])[key]
            assert np.max(np.abs(total - d)) <= 1e-9 * scale, (x, est)


@given(spec=strategies.model_specs(), seed=SEEDS)
def test_per_case_gradients(spec, seed):
    f, vals, theta = case(spec, seed, B)
    leaves = with_theta(f, vals, theta)
    g = percase.per_case_grad_graph(f)
    out = evaluate(g, leaves)
    gg = grad.gradient_graph(f)
    data = {n.name for n in f.nodes() if n.op in ("input", "target")}
    sq = np.zeros(B)
    for b in range(B):
        one = {k: (v[b : b + 1] if k in data else v) for k, v in vals.items()}
        want = prefixed(gg, f, one, "grad", theta)  # the mean over one case is f_b
        rows = [
            np.reshape(out[k][b], -1) if (k := _key("pcg", p.name)) in out else np.zeros(p.size)
            for p in f.leaves("param")
        ]
        assert rel_err(np.concatenate(rows), want) < 1e-10, b
        sq[b] = want @ want
    norm2 = evaluate(percase.per_case_grad_norm_graph(f), leaves)["pcgn"]
    assert rel_err(np.broadcast_to(norm2, (B,)), sq) < 1e-10
