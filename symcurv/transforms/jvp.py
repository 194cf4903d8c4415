"""Forward mode: tangents pushed through a graph, as new nodes in the same graph.

    ẏ_i = Σ_j J_{i,j} ẋ_j      (each node's ``jvp`` rule builds its term)

``jvp`` of the gradient graph is Pearlmutter's R-operator (HVP, a later issue).
"""

from __future__ import annotations

from symcurv.ir.graph import Graph
from symcurv.ops import REGISTRY


def jvp(g: Graph, tangents: dict[str, str], outputs: list[str]) -> dict[str, str | None]:
    """Given tangent nodes for some leaves, add the nodes of the tangents of ``outputs``."""
    import networkx as nx

    live: set[str] = set()
    for x in tangents:
        live |= nx.descendants(g.nx, x) | {x}
    need: set[str] = set()
    for o in outputs:
        need |= g.ancestors(o) | {o}
    tan: dict[str, str | None] = dict(tangents)
    for nid in g.topo():
        if nid in tan or nid not in live or nid not in need:
            continue
        node = g[nid]
        if not node.inputs:
            continue
        ins = [tan.get(i) for i in node.inputs]
        tan[nid] = None if all(t is None for t in ins) else REGISTRY[node.op].jvp(g, node, ins)
    return {o: tan.get(o) for o in outputs}
