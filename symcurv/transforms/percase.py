"""Per-case gradients ∇f_b and their norms ‖∇f_b‖, f_b the per-case loss of case b.

Both reuse the sweep of transforms/gradsq.py (the per-case gradient as the one channel of
the Curvature Propagation machinery), stopping before its squares are summed over the batch.
At a parameter the sweep holds the per-case gradient as a list of terms, each either a
rank-one pair (u, v) standing for u_b v_bᵀ (W used in W @ h) or a per-case value x_b:

    ∇_W f_b = Σ_k u_k,b v_k,bᵀ + Σ_m x_m,b

``per_case_grad`` materialises that sum (a B × |W| array per parameter, the answer asked
for). ``per_case_grad_norm`` never does: the squared Frobenius norm expands pairwise,

    ‖Σ_k u_k v_kᵀ‖² = Σ_{k,l} (u_k · u_l)(v_k · v_l)

(for W used once per case, ‖s_b‖² ‖h_b‖²), the same pair expansion as ``sum_sq_grad`` with
a per-case dot product in place of the batch GEMM, so the largest per-case array is a
layer's activations, never a weight's size. Pairs with a per-case value x_m are per-case
dot products of the materialised term (only tied weights reused through a θ-only node
other than a transpose produce those, exactly as in ``sum_sq_grad``).

As in gradsq.py the sweep is seeded with 1 at each case's f_b, so the graph holds ∇f_b
itself: nothing is rescaled by the batch size afterwards.
"""

from __future__ import annotations

from symcurv import errors
from symcurv.ir import outputs
from symcurv.ir.graph import Graph
from symcurv.ops import elementwise as ew
from symcurv.ops.registry import emit
from symcurv.transforms import leafform
from symcurv.transforms.gradsq import GradientSquares


def _dot(g: Graph, a: str, b: str, origin: str) -> str:
    """Per-case u_b · v_b (a batched scalar)."""
    prod = ew.call(g, "mul", a, b, name="pp", origin=origin)
    return emit(g, "sum", [prod], name="dot", origin=origin)


def _sweep(forward: Graph, objective: str) -> GradientSquares:
    from symcurv.transforms.grad import gradient_graph

    sweep = GradientSquares(gradient_graph(forward, objective), forward.outputs["per_case"])
    sweep.run()  # fills sweep.case: per parameter, the per-case terms of ∇f_b
    return sweep


def per_case_grad_graph(forward: Graph, objective: str = "objective") -> Graph:
    """Copy of ``forward`` with outputs ``pcg:<param>``: ∇f_b restricted to each
    parameter, one row per case (parameters no per-case path reaches have no output; their
    per-case gradient is zero)."""
    sweep = _sweep(forward, objective)
    g = sweep.g
    g.outputs = {}
    for p in sweep.params:
        total = None
        for t in sweep.case.get(p.id, []):
            total = ew.add(g, total, leafform.materialise(g, t, p.origin)["g"], p.origin)
        if total is not None:
            g.set_output(outputs.per_case("pcg", p.name), total)
    return g


def per_case_grad_norm_graph(forward: Graph, objective: str = "objective") -> Graph:
    """Copy of ``forward`` with the output ``pcgn``: ‖∇f_b‖² per case, by the pair
    expansion above (no per-case gradient array)."""
    sweep = _sweep(forward, objective)
    g = sweep.g
    total = None
    for p in sweep.params:
        terms = [t for t in sweep.case.get(p.id, []) if "g" in t.parts]
        o = p.origin
        for k, tk in enumerate(terms):
            for l_ in range(k, len(terms)):
                tl = terms[l_]
                if tk.kind == "outer" and tl.kind == "outer":
                    (u1, v1), (u2, v2) = tk.parts["g"], tl.parts["g"]
                    q = ew.call(g, "mul", _dot(g, u1, u2, o), _dot(g, v1, v2, o), origin=o)
                else:
                    a = leafform.materialise(g, tk, o)["g"]
                    b = leafform.materialise(g, tl, o)["g"]
                    q = _dot(g, a, b, o)
                if l_ != k:  # the (k, l) and (l, k) terms
                    q = ew.mul(g, ew.const(g, 2.0, o), q, o)
                total = ew.add(g, total, q, o)
    if total is None:
        root = g[g.outputs[objective]]
        raise errors.ModelError(
            "per_case_grad_norm: no parameter reaches the per-case loss, so every ∇f_b is 0",
            where=root.origin,
            node=root.describe(),
            fix="minimize a per-case loss that depends on the model's parameters",
        )
    g.outputs = {}
    g.set_output(outputs.per_case("pcgn"), total)
    return g
