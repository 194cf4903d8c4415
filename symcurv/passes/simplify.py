"""Apply every op's registered peephole rule (``PrimitiveDef.simplify``) to a fixpoint.

The rules live with their ops (e.g. ``transpose``: (Wᵀ)ᵀ = W, (u vᵀ)ᵀ = v uᵀ); this pass
only walks the graph.
"""

from __future__ import annotations

from symcurv.ir.graph import Graph
from symcurv.ops import REGISTRY


def run(g: Graph) -> int:
    changed, total = True, 0
    while changed:
        changed = False
        for nid in g.topo():
            if nid not in g:
                continue
            rule = REGISTRY[g[nid].op].simplify
            if rule is None:
                continue
            new = rule(g, g[nid])
            if new is not None and new != nid:
                g.replace_uses(nid, new)
                # Drop the rewritten node now: left for DCE, its rule would fire again on
                # every sweep (a rule may emit a fresh node) and the fixpoint never comes.
                g.remove(nid)
                changed, total = True, total + 1
    return total
