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
squaring, no per-case array), the same walk through θ-only nodes. The sweep is seeded at
the per-case loss f_b with cotangent 1 (the objective is its batch mean), so the graph
computes Σ_b ∇f_b ⊙ ∇f_b itself: nothing is rescaled by the batch size afterwards.
"""

from __future__ import annotations

from symcurv.ir import outputs
from symcurv.ir.graph import Graph
from symcurv.ops import elementwise as ew
from symcurv.transforms import leafform
from symcurv.transforms.curvprop import Sweep


class GradientSquares(Sweep):
    """The CP channel sweep with the per-case gradient as its only channel ``g`` (nothing
    injected), reduced at the parameters by Q(x, y) = x_g ⊙ y_g."""

    FORM: leafform.Form = (("g", "g", 1.0),)

    def __init__(self, forward: Graph, per_case: str, objective: str = "objective") -> None:
        super().__init__(forward, objective)
        g = self.g
        # ∂f_b/∂f_b = 1 for every case: the sweep carries ∇f_b itself, not ∇f_b / B
        one = ew.const(g, 1.0, g[per_case].origin)
        seed = ew.broadcast_to(g, one, g[per_case].shape, g[per_case].batched, g[per_case].origin)
        self.acc[per_case] = {"g": seed}


def sum_sq_grad_graph(forward: Graph, objective: str = "objective") -> Graph:
    """Copy of ``forward`` with outputs ``objective``, ``grad:<param>`` (the mean gradient,
    so one call serves Hessian-free's gradient and preconditioner) and ``sqg:<param>`` =
    Σ_b ∇f_b ⊙ ∇f_b restricted to each parameter."""
    from symcurv.transforms.grad import gradient_graph

    sweep = GradientSquares(gradient_graph(forward, objective), forward.outputs["per_case"])
    sweep.run()
    est = leafform.quadratic_form(sweep, GradientSquares.FORM)
    g = sweep.g
    for p in sweep.params:
        d = est[p.id]
        if d is None:  # no per-case path to this parameter (e.g. only in a θ-only term)
            d = ew.broadcast_to(g, ew.const(g, 0.0, p.origin), p.shape, False, p.origin)
        g.set_output(outputs.theta("sqg", p.name), d)
    return g
