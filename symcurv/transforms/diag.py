"""Becker & LeCun (1988): the deterministic diagonal back-propagation, as IR nodes.

The exact recursion for the Hessian w.r.t. a node's inputs is J_iᵀ H_{y_i} J_i + M_i
(CP paper eqs. 4-6). Keeping only DIAGONALS of every intermediate Hessian gives

    d_{x_i} = (J_i ∘ J_i)ᵀ d_{y_i} + diag(M_i)

(each op's ``sq_vjp`` rule and the diagonal of its ``curvature`` terms; couplings have
zero diagonal blocks). Cheap (one extra backward sweep) and biased wherever an
intermediate Hessian is not diagonal: a baseline for CP (§8.1).
"""

from __future__ import annotations

from symcurv import errors
from symcurv.ir import outputs
from symcurv.ir.graph import Graph
from symcurv.ops import REGISTRY
from symcurv.ops import curvature as curv
from symcurv.ops import elementwise as ew
from symcurv.transforms.grad import cotangents, relevant_nodes


def becker_lecun_graph(forward: Graph, objective: str = "objective") -> Graph:
    """Copy of ``forward`` with outputs ``bl:<param>``: the Becker-LeCun diagonal."""
    g = forward.copy()
    params = g.leaves("param")
    d = becker_lecun(g, g.outputs[objective], [p.id for p in params])
    g.outputs = {}
    for p in params:
        v = d.get(p.id)
        if v is None:
            v = ew.broadcast_to(g, ew.const(g, 0.0, p.origin), p.shape, False, p.origin)
        g.set_output(outputs.theta("bl", p.name), v)
    return g


def becker_lecun(g: Graph, root: str, pids: list[str]) -> dict[str, str | None]:
    """Add the Becker-LeCun sweep from ``root`` to the leaves ``pids`` (parameters, or the
    inputs with ``root`` a per-case loss); return ``{node: diagonal}`` (None: zero)."""
    cot = cotangents(g, root, pids)
    live = relevant_nodes(g, root, pids)
    d: dict[str, str | None] = {}

    def add(x: str, v: str | None, origin: str) -> None:
        if v is not None:
            d[x] = ew.add(g, d.get(x), v, origin)

    for nid in reversed(g.topo()):
        node = g[nid]
        if nid not in live or not node.inputs:
            continue
        prim = REGISTRY[node.op]
        needs = [x in live for x in node.inputs]
        if prim.curvature is None or (d.get(nid) is not None and prim.sq_vjp is None):
            raise errors.ModelError(
                f"op '{node.op}' has no {'curvature' if prim.curvature is None else 'sq_vjp'} "
                "rule, so becker_lecun_diag cannot pass through it",
                where=node.origin,
                node=node.describe(),
                fix="register the rule beside the op, or write the objective as a mean of "
                "per-case losses",
            )
        if d.get(nid) is not None:
            for x, v in zip(node.inputs, prim.sq_vjp(g, node, d[nid], needs)):
                if x in live:
                    add(x, v, node.origin)
        for term in prim.curvature(g, node, cot[nid]):
            x = node.inputs[term.i]
            if x not in live or isinstance(term, curv.Coupling):
                continue
            if isinstance(term, curv.Diag):
                m = term.m
            else:
                m = ew.mul(g, term.c, term.diag(g), node.origin)
            add(x, ew.unbroadcast(g, m, g[x], node.origin), node.origin)
    return d
