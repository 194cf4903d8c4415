"""The sum of squared per-case gradients, Σ_b ∇f_b ⊙ ∇f_b, without a B × |θ| array.

Hessian-free's diagonal preconditioner (Martens 2010 §4.7) is diag(Σ_b ∇f_b ⊙ ∇f_b + λ)^α,
f_b the loss of case b: the per-case scalar passed to ``m.minimize`` (the objective is
(1/B) Σ_b f_b; a term of θ alone inside it is part of every f_b). The per-case gradient
at a weight used once per case is the rank-one δ_b h_bᵀ, so the sum of squares is one
GEMM of squares:

    Σ_b (δ_b h_bᵀ)² = (δ ⊙ δ)ᵀ (h ⊙ h)

This is the Curvature Propagation sweep (transforms/curvprop.py) with the per-case
gradient as its one channel instead of noise: the same per-case terms at the parameters,
the same pair expansion for tied weights (W and W.T: Σ_b (Σ_k a_k b_kᵀ)² summed before
squaring, no per-case array), the same walk through θ-only nodes. The sweep is seeded
where a per-case value meets the batch reduction of the objective with the objective's
own cotangent there, ∂objective/∂x_b = (1/B) ∂f_b/∂x_b for the mean; the graph therefore
computes Σ_b (∇f_b / B)², and the runtime multiplies by B² (it alone knows B).
"""

from __future__ import annotations

from symcurv.ir.graph import Graph, Node
from symcurv.ops import REGISTRY
from symcurv.ops import elementwise as ew
from symcurv.transforms.curvprop import Sweep


class GradientSquares(Sweep):
    """The CP sweep with the per-case gradient as its only channel ("SQ")."""

    def __init__(self, forward: Graph, objective: str = "objective") -> None:
        super().__init__(forward, "SQ", objective)
        g = self.g
        for nid in self.live:
            node = g[nid]
            if node.batched or not node.inputs:
                continue
            # an unbatched node reading per-case values: the batch reduction of the
            # objective. Its operand's share of the gradient is the per-case ∇f_b / B.
            needs = [x in self.live and g[x].batched for x in node.inputs]
            if not any(needs) or self.cot.get(nid) is None:
                continue
            pulled = REGISTRY[node.op].vjp(g, node, self.cot[nid], needs)
            for i, (x, c) in enumerate(zip(node.inputs, pulled)):
                if c is not None and needs[i]:
                    self.acc.setdefault(x, {})
                    self.acc[x]["re"] = ew.add(g, self.acc[x].get("re"), c, node.origin)

    def _injects(self, node: Node) -> bool:
        return False  # no noise: the seeded gradient is the only thing swept


def sum_sq_grad_graph(forward: Graph, objective: str = "objective") -> Graph:
    """Copy of ``forward`` with outputs ``objective``, ``grad:<param>`` (the mean gradient,
    so one call serves Hessian-free's gradient and preconditioner) and ``sqg:<param>`` =
    Σ_b (∇f_b / B)² restricted to each parameter."""
    from symcurv.transforms.grad import gradient_graph

    sweep = GradientSquares(gradient_graph(forward, objective), "objective")
    est = sweep.run()
    g = sweep.g
    outputs = dict(g.outputs)
    for p in sweep.params:
        d = est[p.id]
        if d is None:  # no per-case path to this parameter (e.g. only in a θ-only term)
            d = ew.broadcast_to(g, ew.const(g, 0.0, p.origin), p.shape, False, p.origin)
        outputs[f"sqg:{p.name}"] = d
    g.outputs = outputs
    return g
