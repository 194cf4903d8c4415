"""Graph-level common-subexpression elimination: nodes with the same op, operands and
attributes compute the same value; keep the first. (Inside fused maps, ``sympy.cse``
does the same for scalar expressions: see symbolic/printer.py.)"""

from __future__ import annotations

from symcurv.ir.graph import Graph
from symcurv.ops.registry import is_constant


def run(g: Graph) -> int:
    seen: dict[tuple, str] = {}
    removed = 0
    for nid in g.topo():
        node = g[nid]
        if not node.inputs and not is_constant(node):
            continue  # leaves are distinct by name
        key = node.key()
        if key in seen:
            g.replace_uses(nid, seen[key])
            removed += 1
        else:
            seen[key] = nid
    return removed
