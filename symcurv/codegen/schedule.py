"""Buffer planning for a lowered program: which array holds each materialised value.

Leaves are the program's arguments (parameters are views of the flat θ), outputs are
views of the caller's result arrays, and every other value gets a *slot*: an array
allocated once per batch size and reused by later values of the same storage shape once
its last reader has run (liveness over the kernel order).
"""

from __future__ import annotations

import dataclasses

from symcurv.codegen.lower import Lowered
from symcurv.ir import outputs
from symcurv.ops import REGISTRY


@dataclasses.dataclass
class Slot:
    name: str
    batched: bool
    size: int


@dataclasses.dataclass
class Plan:
    storage: dict[str, str]  # node id -> variable name in the driver
    slots: list[Slot]
    out_flat: list[str]  # flat result vectors, e.g. ["grad"]
    out_plain: dict[str, tuple[bool, int]]  # other outputs: key -> (batched, size)
    param_offsets: dict[str, tuple[int, int]]
    leaves: list[str]  # input/target names, in argument order
    vectors: list[str] = dataclasses.field(default_factory=list)  # flat inputs after θ: ["v"]
    # CP noise, input directions and cached static values, after the batch:
    # [name, batched, size, role] with role one of EXTRA_ROLES' values
    extras: list[list] = dataclasses.field(default_factory=list)


# leaves the runtime binds by name after the batch (their PrimitiveDef's binding)
EXTRA_ROLES = ("noise", "direction", "cached")


def leaf_var(name: str) -> str:
    """The kernel variable of input/target ``name``: prefixed, like ``p_`` for parameters,
    so that no DSL name (``B``, ``i``, ``theta``, ``s0``, ``np``…) can shadow generated code."""
    return f"in_{name}"


def var_name(key: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in key)


def plan(low: Lowered, params: dict[str, tuple[int, int]]) -> Plan:
    """``params``: name -> (offset, size) in θ."""
    g = low.graph
    storage: dict[str, str] = {}
    leaves: list[str] = []
    extras: list[list] = []
    for n in g.nodes():
        binding = REGISTRY[n.op].binding
        if binding == "theta":
            storage[n.id] = f"p_{n.name}"
        elif binding == "v":
            storage[n.id] = f"v_{n.attr('param')}"
        elif binding == "batch":
            storage[n.id] = leaf_var(n.name)
            leaves.append(n.name)
        elif binding in EXTRA_ROLES:
            storage[n.id] = leaf_var(n.name)
            extras.append([n.name, n.batched, n.size, binding])
    out_flat: list[str] = []
    out_plain: dict[str, tuple[bool, int]] = {}
    for key in list(low.output_of) + list(low.copies):
        out = g.output_type(key)
        if out.kind == outputs.THETA:  # every block of one result fills one flat vector
            if out.result not in out_flat:
                out_flat.append(out.result)
        else:
            n = g[low.output_of.get(key) or low.copies[key]]
            out_plain[key] = (n.batched, n.size)
    for key, nid in low.output_of.items():
        storage[nid] = f"out_{var_name(key)}"

    last_use: dict[str, int] = {}
    for i, k in enumerate(low.kernels):
        for r in k.reads:
            last_use[r] = i
            if r in low.views:
                last_use[low.views[r]] = i
    free: dict[tuple[bool, int], list[str]] = {}
    slots: list[Slot] = []
    for i, k in enumerate(low.kernels):
        for w in k.writes:
            if w in storage:
                continue
            n = g[w]
            key = (n.batched, n.size)
            if free.get(key):
                storage[w] = free[key].pop()
            else:
                s = Slot(f"s{len(slots)}", n.batched, n.size)
                slots.append(s)
                storage[w] = s.name
        for r in dict.fromkeys(k.reads):
            for x in (r, low.views.get(r)):
                if (
                    x is not None
                    and last_use.get(x) == i
                    and x in storage
                    and storage[x].startswith("s")
                    and storage[x][1:].isdigit()
                ):
                    n = g[x]
                    free.setdefault((n.batched, n.size), []).append(storage[x])
    vectors = ["v"] if any(REGISTRY[n.op].binding == "v" for n in g.nodes()) else []
    return Plan(storage, slots, out_flat, out_plain, params, leaves, vectors, extras)
