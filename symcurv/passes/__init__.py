"""Graph -> graph passes that prepare a derived graph for lowering.

``optimize`` runs them in order: simplify (registered peephole rules), expand composites
into their primitive decompositions, graph-level CSE, dead-code elimination.
"""

from __future__ import annotations

from symcurv.ir.graph import Graph
from symcurv.passes import cse, dce, expand, simplify


def optimize(g: Graph) -> Graph:
    g = g.copy()
    simplify.run(g)
    expand.run(g)
    cse.run(g)
    simplify.run(g)
    dce.run(g)
    return g
