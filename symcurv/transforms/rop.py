"""Hessian-vector products by Pearlmutter's R-operator, as new nodes in the same IR.

    H v = R_v{∇θ L} = d/dr ∇θ L(θ + r v) |_{r=0}

i.e. the forward-mode derivative (``jvp``) of the gradient graph along v: a forward R-sweep
(the tangents of the activations) and a reverse R-sweep (the tangents of the cotangents),
both built by the ops' own ``jvp`` rules applied to the nodes ``grad`` made. The direction
v enters as one ``direction`` leaf per parameter, read from a flat vector like θ.
"""

from __future__ import annotations

from symcurv.ir import outputs
from symcurv.ir.graph import Graph
from symcurv.ops import elementwise as ew
from symcurv.transforms.grad import gradient_graph
from symcurv.transforms.jvp import jvp


def add_directions(g: Graph) -> dict[str, str]:
    """One ``direction`` leaf per parameter (named ``v_<param>``): {param id: direction id}."""
    out = {}
    for p in g.leaves("param"):
        d = g.add_node(
            "direction",
            [],
            p.shape,
            False,
            {"param": p.name, "shape": list(p.shape)},
            name=f"v_{p.name}",
            origin=p.origin,
        )
        out[p.id] = d.id
    return out


def hvp_graph(forward: Graph, objective: str = "objective") -> Graph:
    """Copy of ``forward`` with outputs ``hvp:<param>`` = (H v) restricted to each
    parameter, H the Hessian of the objective w.r.t. all of θ."""
    g = gradient_graph(forward, objective)
    params = g.leaves("param")
    dirs = add_directions(g)
    grads = [g.outputs[f"grad:{p.name}"] for p in params]
    tangents = jvp(g, dirs, grads)
    g.outputs = {}
    for p, gr in zip(params, grads):
        t = tangents[gr]
        g.set_output(
            outputs.theta("hvp", p.name), t if t is not None else ew.const(g, 0.0, p.origin)
        )
    return g
