"""IR graphs: immutable nodes held in a ``networkx.DiGraph``.

A node computes ``y = f(x_1, ..., x_k)`` for ONE case. ``shape`` is the per-case shape
(``()`` scalar, ``(n,)`` vector, ``(m, n)`` matrix); ``batched`` says whether the value
carries a leading batch axis (it depends on the case) or not (parameters, constants and
anything computed from them alone). Edges run parent -> child; a node's ordered operands
live in ``Node.inputs`` because an op may use one parent twice (``x * x``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

import networkx as nx

from symcurv.ir import outputs as out_types


@dataclasses.dataclass(frozen=True)
class Node:
    id: str
    op: str
    inputs: tuple[str, ...]
    shape: tuple[int, ...]
    batched: bool
    attrs: tuple[tuple[str, Any], ...] = ()
    name: str = ""
    origin: str = ""

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def attr(self, key: str, default: Any = None) -> Any:
        for k, v in self.attrs:
            if k == key:
                return v
        return default

    def key(self) -> tuple:
        """What makes two nodes compute the same value (graph-level CSE)."""
        return (self.op, self.inputs, self.attrs)

    def describe(self) -> str:
        b = "B x " if self.batched else ""
        return f"'{self.name}' ({self.op}, shape {b}{self.shape or 'scalar'})"


def freeze_attrs(attrs: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    def frz(v: Any) -> Any:
        if isinstance(v, list):
            return tuple(frz(x) for x in v)
        return v

    return tuple(sorted((k, frz(v)) for k, v in attrs.items()))


class Graph:
    """A DAG of :class:`Node` keyed by id, plus named outputs.

    Node ids are ``n0, n1, ...`` in creation order, which makes every order we derive from
    them (topological sort with creation-order tie breaks) deterministic.
    """

    def __init__(self, name: str = "model") -> None:
        self.name = name
        self.nx = nx.DiGraph()
        self._outputs: dict[str, str] = {}
        self._types: dict[str, out_types.Output] = {}  # outputs set with a type
        self._counter = 0
        self._names: dict[str, int] = {}  # base name -> next suffix to try
        self._taken: set[str] = set()  # every name handed out or inserted

    # -- construction -------------------------------------------------------------------
    def add_node(
        self,
        op: str,
        inputs: Iterable[str],
        shape: tuple[int, ...],
        batched: bool,
        attrs: Mapping[str, Any] | None = None,
        name: str = "",
        origin: str = "",
    ) -> Node:
        nid = f"n{self._counter}"
        self._counter += 1
        node = Node(
            nid,
            op,
            tuple(inputs),
            tuple(shape),
            bool(batched),
            freeze_attrs(attrs or {}),
            self._unique(name or op),
            origin,
        )
        self.nx.add_node(nid, node=node, order=self._counter)
        for p in node.inputs:
            if p not in self.nx:
                raise KeyError(f"input {p} of {nid} is not in graph {self.name}")
            self.nx.add_edge(p, nid)
        return node

    # -- outputs ------------------------------------------------------------------------
    @property
    def outputs(self) -> dict[str, str]:
        """The program's results: key -> node id (types: :meth:`output_type`)."""
        return self._outputs

    @outputs.setter
    def outputs(self, value: Mapping[str, str]) -> None:
        self._outputs = dict(value)
        self._types = {k: t for k, t in self._types.items() if k in self._outputs}

    def set_output(self, out: out_types.Output, nid: str) -> None:
        """Name node ``nid`` as the typed result ``out`` (ir/outputs.py)."""
        self._outputs[out.key] = nid
        self._types[out.key] = out

    def output_type(self, key: str) -> out_types.Output:
        """What output ``key`` holds: its declared type, else the default for its node."""
        t = self._types.get(key)
        if t is not None:
            return t
        n = self[self._outputs[key]]
        return out_types.default(key, n.batched, n.size)

    def _unique(self, name: str) -> str:
        name = "".join(c if c.isalnum() or c == "_" else "_" for c in name) or "v"
        if name[0].isdigit():
            name = "v" + name
        k = self._names.get(name, 0)
        unique = name if k == 0 else f"{name}_{k}"
        # a suffixed name may already be taken by a node named so explicitly ("add", "add",
        # then "add_1"): go on counting rather than hand out a duplicate
        while unique in self._taken:
            k += 1
            unique = f"{name}_{k}"
        self._names[name] = k + 1
        self._taken.add(unique)
        return unique

    def insert(self, node: Node) -> Node:
        """Insert an existing node (used when copying graphs)."""
        self.nx.add_node(node.id, node=node, order=int(node.id[1:]) + 1)
        for p in node.inputs:
            self.nx.add_edge(p, node.id)
        self._counter = max(self._counter, int(node.id[1:]) + 1)
        base = node.name.rsplit("_", 1)[0] if node.name[-1:].isdigit() else node.name
        self._names[node.name] = self._names.get(node.name, 0) + 1
        self._names.setdefault(base, 1)
        self._taken.add(node.name)
        return node

    def copy(self, name: str | None = None) -> Graph:
        g = Graph(name or self.name)
        g.nx = self.nx.copy()
        g._outputs = dict(self._outputs)
        g._types = dict(self._types)
        g._counter = self._counter
        g._names = dict(self._names)
        g._taken = set(self._taken)
        return g

    # -- queries ------------------------------------------------------------------------
    def __getitem__(self, nid: str) -> Node:
        return self.nx.nodes[nid]["node"]

    def __contains__(self, nid: str) -> bool:
        return nid in self.nx

    def __len__(self) -> int:
        return self.nx.number_of_nodes()

    def nodes(self) -> list[Node]:
        return [self[n] for n in self.topo()]

    def topo(self) -> list[str]:
        order = self.nx.nodes
        return list(nx.lexicographical_topological_sort(self.nx, key=lambda n: order[n]["order"]))

    def children(self, nid: str) -> list[str]:
        return sorted(self.nx.successors(nid), key=lambda n: self.nx.nodes[n]["order"])

    def ancestors(self, nid: str) -> set[str]:
        return nx.ancestors(self.nx, nid)

    def descendants(self, nid: str) -> set[str]:
        return nx.descendants(self.nx, nid)

    def leaves(self, op: str) -> list[Node]:
        return [n for n in self.nodes() if n.op == op]

    def by_name(self, name: str) -> Node:
        for n in self.nodes():
            if n.name == name:
                return n
        raise KeyError(name)

    def replace_uses(self, old: str, new: str) -> None:
        """Point every consumer (and output) of ``old`` at ``new``."""
        for c in list(self.nx.successors(old)):
            node = self[c]
            inputs = tuple(new if i == old else i for i in node.inputs)
            self.nx.nodes[c]["node"] = dataclasses.replace(node, inputs=inputs)
            self.nx.remove_edge(old, c)
            self.nx.add_edge(new, c)
        for k, v in self.outputs.items():
            if v == old:
                self.outputs[k] = new

    def remove(self, nid: str) -> None:
        self.nx.remove_node(nid)

    # -- serialisation ------------------------------------------------------------------
    def to_json(self) -> dict:
        """Node-link data: enough to draw the graph and interpret it without sympy."""
        nodes = []
        for n in self.nodes():
            d = dataclasses.asdict(n)
            d["attrs"] = {k: v for k, v in n.attrs}
            d["inputs"] = list(n.inputs)
            d["shape"] = list(n.shape)
            nodes.append(d)
        data = {"name": self.name, "nodes": nodes, "outputs": dict(self.outputs)}
        if self._types:  # absent when untyped, so a forward graph's IR hash is unchanged
            data["output_types"] = {k: t.to_json() for k, t in sorted(self._types.items())}
        return data

    @classmethod
    def from_json(cls, data: dict) -> Graph:
        g = cls(data["name"])
        for d in data["nodes"]:
            attrs = freeze_attrs(d["attrs"])
            g.insert(
                Node(
                    d["id"],
                    d["op"],
                    tuple(d["inputs"]),
                    tuple(d["shape"]),
                    d["batched"],
                    attrs,
                    d["name"],
                    d["origin"],
                )
            )
        g.outputs = dict(data["outputs"])
        g._types = {
            k: out_types.Output.from_json(t) for k, t in data.get("output_types", {}).items()
        }
        return g

    def digest(self) -> str:
        """sha256 of the canonical JSON form: the 'IR hash' named in generated headers."""
        blob = json.dumps(self.to_json(), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]
