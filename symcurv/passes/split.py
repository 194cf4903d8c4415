"""Split a product program into what depends only on (θ, batch) and what depends on v.

    static   the forward pass and every v-independent backward quantity (activations,
             cotangents, local curvatures): computed once by ``linearize``
    dynamic  everything downstream of the direction / noise leaves, reading the static
             values it needs as ``cached`` leaves

This is how ``State.gnvp`` runs hundreds of times per minibatch without recomputing the
forward pass (Hessian-free optimisation, Martens 2010): the frontier between the two parts
is decided from the graph (networkx descendants of the dynamic leaves), not per program.
"""

from __future__ import annotations

from symcurv.ir.graph import Graph, Node
from symcurv.ops.registry import REGISTRY, is_inlined
from symcurv.passes import dce

# leaves whose value changes from call to call on one State (their PrimitiveDef's binding):
# a direction of θ, a per-case input direction, CP noise
DYNAMIC_BINDINGS = ("v", "direction", "noise")


def is_dynamic(node: Node) -> bool:
    return REGISTRY[node.op].binding in DYNAMIC_BINDINGS


# values the dynamic part can read directly (θ, batch) or recompute inline (constants, a
# class label's one-hot row): never cached
def _free(g: Graph, node: Node) -> bool:
    if REGISTRY[node.op].binding in ("theta", "batch"):
        return True
    return is_inlined(node) and all(_free(g, g[i]) for i in node.inputs)


def split(g: Graph) -> tuple[Graph, Graph]:
    """(static, dynamic): ``static.outputs`` holds ``objective`` (when ``g`` computes it)
    and ``cache<k>`` for each frontier value; ``dynamic`` has the outputs of ``g`` and a
    ``cached`` leaf named ``cache<k>`` in place of each frontier node."""
    dyn: set[str] = set()
    for n in g.nodes():
        if is_dynamic(n):
            dyn |= g.descendants(n.id) | {n.id}
    frontier = [
        nid
        for nid in g.topo()
        if nid not in dyn and not _free(g, g[nid]) and any(c in dyn for c in g.children(nid))
    ]
    # outputs that do not depend on v at all (a parameter whose estimate is exactly 0)
    frontier += [o for o in g.outputs.values() if o not in dyn and not _free(g, g[o])]
    frontier = list(dict.fromkeys(frontier))
    static = g.copy()
    static.outputs = {f"cache{k}": nid for k, nid in enumerate(frontier)}
    dce.run(static)
    for n in static.nodes():
        if is_dynamic(n):
            static.remove(n.id)
    dynamic = g.copy()
    for k, nid in enumerate(frontier):
        n = g[nid]
        leaf = dynamic.add_node(
            "cached",
            [],
            n.shape,
            n.batched,
            {"shape": list(n.shape), "batched": n.batched, "of": n.name},
            name=f"cache{k}",
            origin=n.origin,
        )
        dynamic.replace_uses(nid, leaf.id)
    dce.run(dynamic)
    return static, dynamic
