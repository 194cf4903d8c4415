"""Where a compiled program first went non-finite, found from the build's own artifacts.

A generated driver (``run`` on the CPU, whose Python source Numba keeps as ``py_func``;
``_launch`` on CUDA) is plain Python: each kernel
call sits below a call-site comment ``# k3_map_add_1  (file:line)``, and the kernel's
comment block says which IR nodes it writes into which buffer
(``# k3_map_add_1: map -> add_1 [s4], sum_ty [s5]``) and its DSL lines. Re-running the
driver under ``sys.settrace`` and looking at those buffers after each kernel finds the
first kernel whose output is not finite — in the build's own dtype, on its own backend —
without the reference interpreter, so the error path imports neither the ops nor sympy
(the runtime's invariant, docs/architecture.md). A fused map keeps its intermediates in
registers: the node named is the first stored value that went non-finite, with the
kernel's other members listed beside it.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from pathlib import Path

import numpy as np

from symcurv.runtime import backends

_HEADER = re.compile(r"^# (k\d+_\w+): .*? -> (.*)$")
_WRITE = re.compile(r"(\S+) \[([^\]]+)\]")
_CALL = re.compile(r"^\s+# (k\d+_\w+)  \(")


@dataclasses.dataclass
class Kernel:
    """One kernel's comment block: what it writes where, its IR nodes and DSL lines."""

    name: str
    writes: list[tuple[str, str]]  # (node name, buffer variable)
    nodes: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (id, name)
    origins: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Hit:
    """The first non-finite value: its kernel, node (name, id) and buffer."""

    kernel: Kernel
    node: str
    node_id: str | None
    buffer: str


def kernels_of(source: str) -> dict[str, Kernel]:
    """The comment blocks of a generated kernel file, by kernel name."""
    out: dict[str, Kernel] = {}
    current = None
    for line in source.splitlines():
        m = _HEADER.match(line)
        if m:
            current = Kernel(m.group(1), _WRITE.findall(m.group(2)))
            out[current.name] = current
        elif current is not None and line.startswith("#   IR nodes: "):
            current.nodes = [tuple(p.split(" ", 1)) for p in line[14:].split(", ")]
        elif current is not None and line.startswith("#   DSL: "):
            current.origins.append(line[9:])
        elif not line.startswith("#"):
            current = None
    return out


def call_sites(source: str, first_line: int) -> dict[int, str]:
    """Line number -> the kernel whose call it belongs to, for the driver's lines (from
    each call-site comment to the next; the output copies belong to none)."""
    owner: dict[int, str] = {}
    current = None
    for no, line in enumerate(source.splitlines()[first_line - 1 :], start=first_line):
        m = _CALL.match(line)
        if m:
            current = m.group(1)
        elif line.strip().startswith("# output ") or (line and not line[0].isspace()):
            current = None
        if current is not None:
            owner[no] = current
    return owner


class _Found(Exception):
    pass


def first_non_finite(module, args: list) -> Hit | None:
    """Run ``module``'s driver on ``args`` (the arguments of its ``run``) with a tracer
    that checks each kernel's written buffers as soon as the kernel is done; the first
    non-finite one, or None when every buffer stays finite."""
    source = Path(module.__file__).read_text()
    kernels = kernels_of(source)
    launch = getattr(module, "_launch", None)  # cuda: run copies, then calls _launch
    entry = module.run if launch is not None else getattr(module.run, "py_func", module.run)
    code = (launch or entry).__code__
    owner = call_sites(source, code.co_firstlineno)
    state: dict = {"kernel": None, "hit": None}

    def check(frame, name: str) -> None:
        k = kernels.get(name)
        if k is None:
            return
        ids = {n: i for i, n in k.nodes}
        for node, var in k.writes:
            a = frame.f_locals.get(var)
            if a is None:
                continue
            host = a.copy_to_host() if backends.is_device(a) else np.asarray(a)
            if not np.isfinite(host).all():
                state["hit"] = Hit(k, node, ids.get(node), var)
                raise _Found

    def local(frame, event, arg):
        if event in ("line", "return"):
            now = owner.get(frame.f_lineno) if event == "line" else None
            done = state["kernel"]
            if done is not None and now != done:
                check(frame, done)
            state["kernel"] = now
        return local

    def calls(frame, event, arg):
        return local if frame.f_code is code else None

    previous = sys.gettrace()
    sys.settrace(calls)
    try:
        entry(*args)
    except _Found:
        pass
    finally:
        sys.settrace(previous)
    return state["hit"]


def locate(prog, modules, program: str, theta, batch, v=None, noise=None):
    """``(the first non-finite stored value or None, the part it is in)`` of a call of
    ``program`` on ``prog`` (host arrays; ``modules``: the loaded kernel files by program):
    a split program's static part is traced first, then the program on its values."""
    extras = dict(noise or {})
    static = prog.spec(program).get("static")
    if static:
        hit, outs = _traced(prog, modules[static], static, theta, batch, v, {})
        if hit is not None:
            return hit, static
        extras.update(outs)
    return _traced(prog, modules[program], program, theta, batch, v, extras)[0], program


def _traced(prog, module, program: str, theta, batch, v, extras):
    """Run ``program`` once under the tracer on fresh output and scratch arrays."""
    spec, dtype = prog.spec(program), prog.dtype
    arrays = [np.asarray(batch[n], dtype=dtype) for n in spec["leaves"]]
    B = arrays[0].shape[0] if arrays else 1

    def zeros(batched, size):
        return np.zeros((B, size) if batched else (size,), dtype)

    vectors = [np.asarray(v, dtype=dtype)] if spec.get("vectors") else []
    outs = {p: zeros(False, prog.n_params) for p in spec["out_flat"]}
    outs.update({k: zeros(batched, size) for k, batched, size in spec["out_plain"]})
    host = [prog.device.to_host(extras[e[0]]) for e in spec.get("extras", [])]
    args = [
        np.asarray(theta, dtype=dtype),
        *vectors,
        *arrays,
        *[np.asarray(a, dtype=dtype) for a in host],
        *outs.values(),
        *[zeros(batched, size) for _name, batched, size in spec["slots"]],
    ]
    return first_non_finite(module, args), outs


def describe(build_dir, program: str, hit: Hit) -> tuple[str, str]:
    """``(node, DSL line)`` of a hit: the node's op and origin from ``graph.json`` read as
    plain JSON (no IR classes), the kernel's comment otherwise."""
    op, origin = None, None
    try:
        data = json.loads((Path(build_dir) / "graph.json").read_text())
        graph = data["programs"][program.split(".")[0]]
        # a static or whole part's nodes are the full program's (split keeps their ids)
        node = next(n for n in graph["nodes"] if n["id"] == hit.node_id)
        op, origin = node["op"], node.get("origin")
    except Exception:  # a build without its graphs: the kernel's comment is enough
        pass
    members = [n for _, n in hit.kernel.nodes if n != hit.node]
    label = f"'{hit.node}'" + (f" ({op})" if op else "")
    if members:
        label += f", computed in kernel {hit.kernel.name} with {', '.join(members)}"
    where = origin or "; ".join(hit.kernel.origins) or f"program '{program}'"
    if origin and len(hit.kernel.origins) > 1:
        others = [o for o in hit.kernel.origins if o != origin]
        where += "".join(f"; {o}" for o in others)
    return label, where
