"""Replace composite nodes (losses, softmax) by their decompositions into primitives the
emitters know. Transforms saw the composite as one node with its own rules; kernels only
need the primitives."""

from __future__ import annotations

from symcurv.ir.graph import Graph
from symcurv.ops import REGISTRY


def run(g: Graph) -> int:
    count = 0
    for nid in g.topo():
        node = g[nid]
        prim = REGISTRY[node.op]
        if prim.kernel == "composite":
            g.replace_uses(nid, prim.decompose(g, node))
            count += 1
    return count
