"""The plain-numpy interpreter of any IR graph: the living specification.

Every compiled program is compared against it in the tests. It evaluates each node with
its primitive's ``impl`` (composites included, so it is independent of the decompositions
codegen uses). Values use natural shapes: a batched value is ``(B, *shape)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from symcurv.ir.graph import Graph


def evaluate(
    graph: Graph,
    leaves: Mapping[str, np.ndarray],
    outputs: Iterable[str] | None = None,
    *,
    keep_all: bool = False,
) -> dict[str, np.ndarray]:
    """Evaluate ``graph`` with leaf values keyed by leaf NAME (parameters in their own
    shape, inputs and targets as ``(B, n)`` arrays; a direction of a curvature product by
    ``"v:<param>"``, shaped like the parameter; CP noise and cached values by their leaf
    name). Returns the named outputs (or every
    node by id with ``keep_all``)."""
    from symcurv.ops import REGISTRY

    batch = [np.shape(v)[0] for v in leaves.values() if np.ndim(v) >= 1]
    vals: dict[str, np.ndarray] = {}
    wanted = list(graph.outputs) if outputs is None else list(outputs)
    need: set[str] = set()
    for o in wanted:
        nid = graph.outputs[o]
        need |= graph.ancestors(nid) | {nid}
    inputs_b = [
        np.shape(leaves[n.name])[0]
        for n in graph.nodes()
        if REGISTRY[n.op].binding == "batch" and n.name in leaves
    ]
    B = inputs_b[0] if inputs_b else (batch[0] if batch else 1)
    for nid in graph.topo():
        if nid not in need and not keep_all:
            continue
        node = graph[nid]
        binding = REGISTRY[node.op].binding
        if binding and binding != "v":  # leaves bound by name
            if node.name not in leaves:
                raise KeyError(f"no value for leaf '{node.name}'")
            vals[nid] = np.asarray(leaves[node.name], dtype=np.float64)
            continue
        if binding == "v":  # bound as "v:<param>"
            key = "v:" + node.attr("param")
            if key not in leaves:
                raise KeyError(f"no value for direction '{key}'")
            vals[nid] = np.asarray(leaves[key], dtype=np.float64)
            continue
        args = [vals[i] for i in node.inputs]
        arg_nodes = [graph[i] for i in node.inputs]
        prim = REGISTRY[node.op]
        extra = {"batch": B} if prim.batch_impl else {}
        with np.errstate(all="ignore"):
            vals[nid] = np.asarray(prim.impl(node, args, arg_nodes, **extra), dtype=np.float64)
    if keep_all:
        return vals
    return {o: vals[graph.outputs[o]] for o in wanted}
