"""Lowering: an optimised IR graph -> an ordered list of kernels over named buffers.

Kernel kinds (the emitters have one printer per kind and description, never one per op):
  map     a fusion group: per element, evaluate its members' scalar formulas
          (+ feature-sum epilogues)
  gemm    what the op's ``lower`` rule describes (ops/lowering.py: Gemm, PerCaseMatvec,
          Outer), transposed operands folded into the BLAS call
  reduce  a named reduction loop (sum_features, logsumexp, batch_sum, ...)
  fill    a constant written into a buffer; copy: a value (or transpose) copied
Every op-specific fact comes from the registry (``lower``, ``view``, ``scalar``).

Storage is canonical: a batched value is a ``(B, size)`` array, an unbatched one a 1-D
``(size,)`` array (a scalar has size 1); matrices are reshaped views of these.
"""

from __future__ import annotations

import dataclasses

from symcurv.codegen import fuse
from symcurv.ir.graph import Graph, Node
from symcurv.ops import REGISTRY
from symcurv.ops import lowering as lw
from symcurv.ops.registry import is_constant, is_inlined, lowering


@dataclasses.dataclass
class Kernel:
    name: str
    kind: str  # map | gemm | reduce | fill | copy
    template: str
    nodes: list[str]  # IR nodes this kernel computes
    reads: list[str]  # materialised nodes it reads
    writes: list[str]  # materialised nodes it writes
    epilogues: list[str] = dataclasses.field(default_factory=list)
    space: tuple[bool, int] = (False, 1)
    how: lw.Lowering | None = None  # what a non-map kernel computes (the op's lower rule)
    # a GEMM computed together with this one as one product (``pair_products``): set on
    # the first of the two; the second has ``paired`` set
    pair: Kernel | None = dataclasses.field(default=None, repr=False, compare=False)
    paired: bool = False

    def origins(self, g: Graph) -> list[str]:
        return list(dict.fromkeys(g[n].origin for n in self.nodes if g[n].origin))


@dataclasses.dataclass
class Lowered:
    graph: Graph
    kernels: list[Kernel]
    views: dict[str, str]  # transpose node -> the node it views (not materialised)
    output_of: dict[str, str]  # output key -> node id holding it
    copies: dict[str, str]  # output key -> node to copy from (when shared/leaf/view)


def _is_view(g: Graph, node: Node, consumers: dict[str, list[str]], outputs: set[str]) -> bool:
    """A view op (a transpose) read only by GEMMs is folded into their operands."""
    return (
        REGISTRY[node.op].view
        and node.id not in outputs
        and all(
            not REGISTRY[g[c].op].view
            and REGISTRY[g[c].op].lower is not None
            and lowering(g, g[c]).kind == "gemm"
            for c in consumers[node.id]
        )
    )


def lower(g: Graph) -> Lowered:
    order = g.topo()
    pos = {n: i for i, n in enumerate(order)}
    consumers = {n: g.children(n) for n in order}
    outputs_by_node: dict[str, list[str]] = {}
    for k, v in g.outputs.items():
        outputs_by_node.setdefault(v, []).append(k)
    out_nodes = set(outputs_by_node)

    views = {n: g[n].inputs[0] for n in order if _is_view(g, g[n], consumers, out_nodes)}
    groups = fuse.fusion_groups(g)
    in_group = {m: grp for grp in groups for m in grp.members + grp.epilogues}
    kernels: list[Kernel] = []

    for grp in groups:
        members = set(grp.members) | set(grp.epilogues)
        reads: list[str] = []
        for m in grp.members:
            for i in _stored_operands(g, g[m].inputs):
                if i not in members and i not in reads:
                    reads.append(i)
        writes = [
            m for m in grp.members if m in out_nodes or any(c not in members for c in consumers[m])
        ]
        writes += grp.epilogues
        kernels.append(
            Kernel(
                "",
                "map",
                "map",
                grp.members + grp.epilogues,
                reads,
                writes,
                list(grp.epilogues),
                grp.space,
            )
        )
    for nid in order:
        node = g[nid]
        if nid in in_group or nid in views or not node.inputs or is_inlined(node):
            continue
        how = lowering(g, node)
        kernels.append(Kernel("", how.kind, how.template, [nid], list(node.inputs), [nid], how=how))
    # inlined values needed in a buffer (read by a non-map kernel, or an output): a
    # literal is filled, any other inlined op written by a map kernel of its own
    wanted = [r for k in kernels if k.kind != "map" for r in k.reads]
    wanted += [n for n in out_nodes if g[n].inputs and is_inlined(g[n])]
    for r in dict.fromkeys(wanted):
        if not is_inlined(g[r]) or any(r in kk.writes for kk in kernels):
            continue
        if is_constant(g[r]):
            how = lowering(g, g[r])
            kernels.append(Kernel("", how.kind, how.template, [r], [], [r], how=how))
        else:
            reads = _stored_operands(g, g[r].inputs)
            kernels.append(Kernel("", "map", "map", [r], reads, [r], [], fuse.space(g[r])))
    # order kernels topologically by their first node (the condensed graph is acyclic)
    kernels = pair_products(g, _schedule(g, kernels, pos, views), views)

    output_of: dict[str, str] = {}
    copies: dict[str, str] = {}
    written = {w for k in kernels for w in k.writes}
    for nid, keys in outputs_by_node.items():
        first, *rest = keys
        if nid in written:
            output_of[first] = nid
        else:
            copies[first] = nid
        for k in rest:
            copies[k] = nid
    for i, k in enumerate(kernels):
        head = g[k.writes[0]].name if k.writes else g[k.nodes[-1]].name
        k.name = f"k{i}_{k.kind}_{head}"
    return Lowered(g, kernels, views, output_of, copies)


def _stored_operands(g: Graph, inputs: list[str]) -> list[str]:
    """The stored values a map reads for these operands: an inlined operand (a literal, a
    one-hot row) is recomputed in place from its own operands."""
    out: list[str] = []
    for i in inputs:
        if not is_inlined(g[i]):
            out.append(i)
        else:
            out += [r for r in _stored_operands(g, g[i].inputs) if r not in out]
    return list(dict.fromkeys(out))


def _schedule(
    g: Graph, kernels: list[Kernel], pos: dict[str, int], views: dict[str, str]
) -> list[Kernel]:
    import networkx as nx

    owner = {n: i for i, k in enumerate(kernels) for n in k.nodes}
    dg = nx.DiGraph()
    dg.add_nodes_from(range(len(kernels)))
    for i, k in enumerate(kernels):
        for n in k.nodes:
            for p in g[n].inputs:
                j = owner.get(p)
                if j is not None and j != i:
                    dg.add_edge(j, i)
        for r in k.reads:  # reads through views
            j = owner.get(r)
            if j is None and r in views:
                j = owner.get(views[r])
            if j is not None and j != i:
                dg.add_edge(j, i)
    first = {i: min(pos[n] for n in k.nodes) for i, k in enumerate(kernels)}
    order = nx.lexicographical_topological_sort(dg, key=first.__getitem__)
    return [kernels[i] for i in order]


def pair_products(g: Graph, kernels: list[Kernel], views: dict[str, str]) -> list[Kernel]:
    """Pair GEMMs that multiply one per-case operand by two leaves of one shape: an hvp's
    forward X W0ᵀ and R-forward X V_W0ᵀ read X twice; as one product X [W0; V_W0]ᵀ the
    BLAS reads it once and runs a wider, faster kernel (cp_net, B = 1000: 490 µs against
    2 × 285, docs/benchmarks.md "Session 12"). The second GEMM moves to just after the
    first — legal because everything it reads is a leaf, written by no kernel — and the
    first gets ``pair``; an emitter may compute them together (cpu) or one by one."""
    kernels = list(kernels)
    for i, k in enumerate(kernels):
        if k.paired or k.pair is not None or not _pairable(g, k, views):
            continue
        for j in range(i + 1, len(kernels)):
            m = kernels[j]
            if not m.paired and m.pair is None and _pairs_with(g, k, m, views):
                kernels.insert(i + 1, kernels.pop(j))
                k.pair, m.paired = m, True
                break
    return kernels


PAIR_MAX_COLS = 64  # products at most this wide are paired (see _pairable)


def _pairable(g: Graph, k: Kernel, views: dict[str, str]) -> bool:
    """A narrow GEMM of a per-case operand by a leaf matrix (a parameter, a direction,
    noise). Narrow: cp_net's 20-column products run faster twice as wide, but the
    autoencoder's 1000-column ones already run at the BLAS's speed, and copying the
    paired product out made its hvp 2 % slower."""
    if not isinstance(k.how, lw.Gemm) or k.how.a.rows != lw.CASES:
        return False
    if k.how.out.cols > PAIR_MAX_COLS:
        return False
    b = g[views.get(k.how.b.nid, k.how.b.nid)]
    return not b.inputs and len(b.shape) == 2


def _pairs_with(g: Graph, k: Kernel, m: Kernel, views: dict[str, str]) -> bool:
    """``m`` multiplies ``k``'s operand by another leaf of the same shape and layout."""
    if not _pairable(g, m, views) or m.how.a != k.how.a:
        return False
    b1, b2 = k.how.b, m.how.b
    same = (b1.rows, b1.cols, b1.transpose) == (b2.rows, b2.cols, b2.transpose)
    return same and b1.nid != b2.nid and k.how.out.cols == m.how.out.cols
