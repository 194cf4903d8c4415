"""Dead-code elimination: drop every node no output depends on (leaves are kept: they are
the program's signature)."""

from __future__ import annotations

from symcurv.ir.graph import Graph
from symcurv.ops.registry import is_constant


def run(g: Graph) -> int:
    live: set[str] = set()
    for o in g.outputs.values():
        live |= g.ancestors(o) | {o}
    dead = [n for n in g.topo() if n not in live and g[n].inputs]
    dead += [n for n in g.topo() if n not in live and is_constant(g[n])]
    for n in dead:
        g.remove(n)
    return len(dead)
