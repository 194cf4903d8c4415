"""Elementwise fusion: group map nodes into loop nests.

A group is a set of ``map`` nodes (elementwise, broadcasts) over one iteration space
``(batched, size)``; one kernel evaluates all of them per element, so intermediates live
in registers. A feature ``sum`` of a group member may join as an *epilogue* (accumulated
in the same loop: Σ_k ℓ(y_k, t_k) never materialises ℓ). Merges that would create a cycle
between kernels are refused (checked on the condensed graph with networkx).
Constants and ``inline`` ops (a class label's one-hot row) are not grouped: they are
recomputed inside every map that reads them.
"""

from __future__ import annotations

import dataclasses

import networkx as nx

from symcurv.ir.graph import Graph, Node
from symcurv.ops import REGISTRY
from symcurv.ops import lowering as lw
from symcurv.ops.registry import is_inlined, lowering


def space(node: Node) -> tuple[bool, int]:
    return node.batched, node.size


def is_map(node: Node) -> bool:
    return REGISTRY[node.op].kernel == "map" and not is_inlined(node)


def is_sum_epilogue_candidate(g: Graph, node: Node) -> bool:
    """A per-case sum over features, which a map kernel can accumulate as it goes."""
    if REGISTRY[node.op].lower is None:
        return False
    how = lowering(g, node)
    return isinstance(how, lw.Reduce) and how.name == "sum_features"


@dataclasses.dataclass
class Group:
    gid: int
    members: list[str]
    epilogues: list[str]
    space: tuple[bool, int]


def fusion_groups(g: Graph) -> list[Group]:
    order = g.topo()
    group_of: dict[str, int] = {}
    groups: dict[int, Group] = {}
    counter = iter(range(1 << 30))

    def acyclic() -> bool:
        cg = nx.DiGraph()
        for u, v in g.nx.edges:
            a, b = group_of.get(u, u), group_of.get(v, v)
            if a != b:
                cg.add_edge(a, b)
        return nx.is_directed_acyclic_graph(cg)

    def reads_epilogue(a: Group, b: Group) -> bool:
        """Does a member of ``a`` read an epilogue (a finished sum) of ``b``?"""
        return any(i in b.epilogues for m in a.members for i in g[m].inputs)

    def merge(into: Group, other: Group) -> bool:
        # A sum is complete only after the loop: no member of the merged loop may read it.
        if reads_epilogue(into, other) or reads_epilogue(other, into):
            return False
        saved = dict(group_of)
        for m in other.members + other.epilogues:
            group_of[m] = into.gid
        if acyclic():
            into.members += other.members
            into.epilogues += other.epilogues
            del groups[other.gid]
            return True
        group_of.clear()
        group_of.update(saved)
        return False

    for nid in order:
        node = g[nid]
        parents = [group_of[p] for p in node.inputs if p in group_of]
        if is_map(node):
            grp = Group(next(counter), [nid], [], space(node))
            groups[grp.gid] = grp
            group_of[nid] = grp.gid
            for pg in dict.fromkeys(parents):
                cand = groups.get(pg)
                if cand is None or cand.space != grp.space or cand.gid == grp.gid:
                    continue
                if merge(cand, grp):
                    grp = cand
        elif is_sum_epilogue_candidate(g, node) and parents:
            cand = groups.get(parents[0])
            if (
                cand is not None
                and cand.space[0] == node.batched
                and node.inputs[0] in cand.members
            ):
                group_of[nid] = cand.gid
                if acyclic():
                    cand.epilogues.append(nid)
                else:
                    del group_of[nid]
    pos = {n: i for i, n in enumerate(order)}
    out = []
    for grp in groups.values():
        grp.members.sort(key=pos.__getitem__)
        grp.epilogues.sort(key=pos.__getitem__)
        out.append(grp)
    out.sort(key=lambda gr: pos[gr.members[0]])
    return out
