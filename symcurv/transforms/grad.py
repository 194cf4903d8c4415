"""Reverse mode: the gradient of a scalar node, as new nodes in the same graph.

    x̄_i = Σ_{children k} (J_k)ᵀ ȳ_k      (each child's ``vjp`` rule builds its term)

Because every rule builds ordinary IR nodes, the result can be differentiated again
(score matching and Hessian-vector products need exactly that).
"""

from __future__ import annotations

from collections.abc import Sequence

import networkx as nx

from symcurv import errors
from symcurv.ir import outputs
from symcurv.ir.graph import Graph
from symcurv.ops import REGISTRY
from symcurv.ops import elementwise as ew


def relevant_nodes(g: Graph, root: str, wrt: Sequence[str]) -> set[str]:
    """Nodes on some path from a ``wrt`` node to ``root``: the only ones that need a
    cotangent."""
    up = g.ancestors(root) | {root}
    down: set[str] = set()
    for w in wrt:
        if w in up:
            down |= nx.descendants(g.nx, w) | {w}
    return up & down


def vjp(g: Graph, root: str, wrt: Sequence[str], seed: str | None = None) -> dict[str, str | None]:
    """Add the nodes of ∂root/∂w for every ``w`` in ``wrt``; return ``{w: node or None}``
    (``None``: root does not depend on w).

    ``seed`` is the cotangent of ``root`` (default :func:`unit_seed`: 1, or 1 for every
    case when ``root`` is a per-case scalar, whose cotangents are then per case).
    """
    cot = cotangents(g, root, wrt, seed)
    return {w: cot.get(w) for w in wrt}


def unit_seed(g: Graph, root: str) -> str:
    """∂root/∂root = 1: the constant for an unbatched scalar (the batch-mean objective),
    1 for every case for a per-case scalar f_b (derivatives of each case's own f_b, as the
    derivatives with respect to the data need)."""
    r = g[root]
    if r.shape != ():
        raise errors.ModelError(
            f"cannot take the gradient of non-scalar {r.describe()}",
            where=r.origin,
            fix="differentiate a scalar objective",
        )
    one = ew.const(g, 1.0, r.origin)
    return ew.broadcast_to(g, one, (), True, r.origin) if r.batched else one


def cotangents(g: Graph, root: str, wrt: Sequence[str], seed: str | None = None) -> dict:
    """The reverse sweep itself: ``{node: ȳ}`` for every node between ``wrt`` and ``root``
    (curvature transforms need ḡ at every node, not only at the parameters)."""
    if seed is None:
        seed = unit_seed(g, root)
    live = relevant_nodes(g, root, wrt)
    cot: dict[str, str | None] = {root: seed}
    for nid in reversed(g.topo()):
        if nid not in live or cot.get(nid) is None:
            continue
        node = g[nid]
        prim = REGISTRY[node.op]
        if not node.inputs:
            continue
        if prim.vjp is None:
            raise errors.ModelError(
                f"op '{node.op}' has no vjp rule", where=node.origin, node=node.describe()
            )
        needs = [i in live for i in node.inputs]
        for x, c in zip(node.inputs, prim.vjp(g, node, cot[nid], needs)):
            if c is not None and x in live:
                cot[x] = ew.add(g, cot.get(x), c, node.origin)
    return cot


def gradient_graph(forward: Graph, objective: str = "objective") -> Graph:
    """Copy of ``forward`` with outputs ``objective`` and ``grad:<param>`` for every
    parameter (in declaration order)."""
    g = forward.copy()
    root = g.outputs[objective]
    params = g.leaves("param")
    grads = vjp(g, root, [p.id for p in params])
    g.outputs = {"objective": root}
    for p in params:
        d = grads[p.id]
        g.set_output(
            outputs.theta("grad", p.name), d if d is not None else ew.const(g, 0.0, p.origin)
        )
    return g
