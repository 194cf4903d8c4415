"""Dead-code elimination: drop every node no output depends on (leaves are kept: they are
the program's signature)."""

from __future__ import annotations

from symcurv.ir.graph import Graph


def run(g: Graph) -> int:
    live: set[str] = set()
    for o in g.outputs.values():
        live |= g.ancestors(o) | {o}
    dead = [n for n in g.topo() if n not in live and g[n].inputs]
    dead += [n for n in g.topo() if n not in live and g[n].op == "const"]
    for n in dead:
        g.remove(n)
    return len(dead)
