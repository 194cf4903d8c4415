"""IR invariants, checked after every stage that rewrites a graph.

A graph that breaks one of these is a bug in symcurv (a transform or pass), not in the
user's model, so the error says so and names the node and the DSL line it came from —
far better than a wrong kernel or a Numba typing error three stages later.

Invariants:
- the graph is a DAG, and every node's edges are exactly its ``inputs``;
- every op is registered, and leaves have no inputs;
- re-running the op's shape rule on the inputs gives the node's stored shape and batch flag
  (so a rewrite that swaps an operand for one of another shape is caught here);
- node names are unique (they become names in generated code);
- every output names a node of the graph.
"""

from __future__ import annotations

import networkx as nx

from symcurv import errors
from symcurv.ir.graph import Graph, Node

FIX = "this is a bug in symcurv, not in your model: please report it with the model file"


def problems(g: Graph) -> list[tuple[Node | None, str]]:
    """Every broken invariant as ``(node or None, what is wrong)``; empty when valid."""
    from symcurv.ops import REGISTRY

    found: list[tuple[Node | None, str]] = []
    if not nx.is_directed_acyclic_graph(g.nx):
        cycle = " -> ".join(u for u, _ in nx.find_cycle(g.nx))
        return [(None, f"the graph has a cycle: {cycle}")]
    names: dict[str, str] = {}
    for nid in g.topo():
        n = g[nid]
        missing = [i for i in n.inputs if i not in g]
        if missing:
            found.append((n, f"its inputs {missing} are not in the graph"))
            continue
        if set(g.nx.predecessors(nid)) != set(n.inputs):
            found.append((n, f"its edges {sorted(g.nx.predecessors(nid))} != inputs {n.inputs}"))
        if n.name in names:
            found.append((n, f"its name '{n.name}' is also used by {names[n.name]}"))
        names[n.name] = nid
        prim = REGISTRY.get(n.op)
        if prim is None:
            found.append((n, f"op '{n.op}' is not registered"))
            continue
        if prim.kernel == "leaf" and n.inputs:
            found.append((n, "a leaf with inputs"))
        try:
            shape, batched = prim.infer([g[i] for i in n.inputs], dict(n.attrs))
        except errors.ShapeError as e:
            found.append((n, f"its shape rule fails on its inputs: {e.problem}"))
            continue
        if (tuple(shape), bool(batched)) != (tuple(n.shape), n.batched):
            found.append(
                (
                    n,
                    f"stored shape {'B x ' if n.batched else ''}{n.shape} but its inputs "
                    f"give {'B x ' if batched else ''}{tuple(shape)}",
                )
            )
    for key, nid in g.outputs.items():
        if nid not in g:
            found.append((None, f"output '{key}' names {nid}, which is not in the graph"))
    return found


def validate(g: Graph, stage: str = "") -> Graph:
    """Raise :class:`errors.IRError` listing what is broken (the first 5); else return ``g``."""
    bad = problems(g)
    if not bad:
        return g
    node, what = bad[0]
    lines = [f"{n.id} '{n.name}' ({n.op}): {w}" if n is not None else w for n, w in bad[:5]]
    more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
    raise errors.IRError(
        f"graph '{g.name}'{f' after {stage}' if stage else ''} breaks an IR invariant"
        f"{more}:\n    " + "\n    ".join(lines),
        where=node.origin if node is not None and node.origin else None,
        node=f"'{node.name}'" if node is not None else None,
        fix=FIX,
    )
