"""What the CPU and CUDA emitters share: scalar formulas, names, the header and comments.

Both emitters start from the same lowered kernel list and buffer plan (DESIGN.md §2): a
fusion group's formulas are built here once (``map_expressions``) and printed once per
target by ``symbolic.printer``; only the loop and grid skeletons differ per backend. The
driver's argument list, the parameter views of θ and the comment blocks naming IR nodes and
DSL lines are the same text in both files, so a kernel reads the same on either backend.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

import sympy

from symcurv.codegen.lower import Kernel, Lowered
from symcurv.codegen.schedule import Plan, leaf_var, var_name
from symcurv.ir import outputs
from symcurv.ir.graph import Graph, Node
from symcurv.ops import REGISTRY
from symcurv.ops.elementwise import B_SYMBOL, INDEX_SYMBOL
from symcurv.ops.registry import is_inlined
from symcurv.symbolic import printer

_RESERVED = {
    "abs",
    "max",
    "min",
    "math",
    "vm",
    "float",
    "B",
    "i",
    "j",
    "range",
    "prange",
    "np",
    "acc",
    "k",
    "int",
    "len",
    "sum",
}


def arg_name(node: Node) -> str:
    """A scalar function's argument for ``node``: its DSL name unless that would shadow a
    name the function uses (``math``, ``vm``, the cse temporaries ``t0, t1, …``)."""
    clash = node.name in _RESERVED or re.fullmatch(r"tmp.*|t\d+", node.name)
    return node.name + "_" if clash else node.name


def map_expressions(g: Graph, k: Kernel) -> tuple[list[sympy.Symbol], list[str], list[sympy.Expr]]:
    """The scalar formulas of a fusion group: (argument symbols, their node ids, outputs:
    one per written member, then one per epilogue's summand)."""
    syms = {r: sympy.Symbol(arg_name(g[r]), real=True) for r in k.reads}
    expr: dict[str, sympy.Expr] = {}

    def operand(i: str) -> sympy.Expr:
        if i in expr:
            return expr[i]
        n = g[i]
        if is_inlined(n) and i not in syms:  # a literal or a one-hot row, recomputed here
            return REGISTRY[n.op].scalar(n, [operand(x) for x in n.inputs])
        return syms[i]

    for m in k.nodes:
        if m in k.epilogues:
            continue
        node = g[m]
        expr[m] = REGISTRY[node.op].scalar(node, [operand(i) for i in node.inputs])
    outs = [expr[w] for w in k.writes if w not in k.epilogues]
    outs += [operand(g[e].inputs[0]) for e in k.epilogues]
    return list(syms.values()), list(syms), outs


def uses_batch_size(outs: list[sympy.Expr]) -> bool:
    """Does a formula need the batch size B (the mean's 1/B seed)?"""
    return any(o.has(B_SYMBOL) for o in outs)


def uses_index(outs: list[sympy.Expr]) -> bool:
    """Does a formula need the feature index j of its element (a one-hot row [c = j])?"""
    return any(o.has(INDEX_SYMBOL) for o in outs)


def extra_arguments(outs: list[sympy.Expr]) -> list[str]:
    """The loop's own values a map's scalar function takes after its operands: the batch
    size ``B`` and the feature index ``j``, when its formulas read them."""
    return (["B"] if uses_batch_size(outs) else []) + (["j"] if uses_index(outs) else [])


def element(node: Node, space: tuple[bool, int], var: str) -> str:
    """``var``'s element at case ``i``, feature ``j`` of a map over ``space``: a batched
    value is indexed ``[i, j]``, a shared one ``[j]``; a scalar (size 1) in a wider map is
    broadcast with index 0."""
    batched, size = space
    j = "j" if node.size == size and size > 1 else "0"
    return f"{var}[i, {j}]" if node.batched else f"{var}[{j}]"


def scalar_function_name(k: Kernel) -> str:
    return "f_" + k.name


def emit_scalar_function(g: Graph, k: Kernel, target: str = "cpu") -> list[str]:
    """The fusion group's formulas as one plain function (after CSE), printed for
    ``target`` ("cpu": exp/log through vecmath; "cuda": math.exp/math.log)."""
    args, _, outs = map_expressions(g, k)
    args = args + ([B_SYMBOL] if uses_batch_size(outs) else [])
    args = args + ([INDEX_SYMBOL] if uses_index(outs) else [])
    nodes = ", ".join(f"{g[m].name}" for m in k.nodes)
    return printer.scalar_function(
        scalar_function_name(k),
        args,
        outs,
        doc=f"Scalar formulas of {k.name}: {nodes}.",
        target=target,
    )


# ---- the file's text around the kernels ---------------------------------------------------
def header_lines(
    program: str, low: Lowered, *, model: str, backend: str, dtype: str, version: str, ir_hash: str
) -> list[str]:
    """The module docstring: what was built, from what, and every kernel in order."""
    g = low.graph
    lines = [
        '"""symcurv generated kernels.',
        "",
        f"model:    {model}",
        f"program:  {program}",
        f"backend:  {backend}",
        f"dtype:    {dtype}",
        f"symcurv:  {version}",
        f"IR hash:  {ir_hash}",
        "",
        "Kernels in execution order:",
    ]
    for k in low.kernels:
        lines.append(f"  {k.name:<34} {', '.join(g[n].name for n in k.nodes)}"[:100])
    lines += ["", "Do not edit: sc.load() checks this file's sha256 against manifest.json.", '"""']
    return lines


def kernel_comment(g: Graph, k: Kernel, st: dict[str, str]) -> list[str]:
    """The block above a kernel: what it writes (and where), its IR nodes, its DSL lines."""
    kind = k.kind if k.template in (k.kind, "gemm") else f"{k.kind} {k.template}"
    lines = [
        f"# {k.name}: {kind} -> {', '.join(f'{g[w].name} [{st.get(w, w)}]' for w in k.writes)}",
        f"#   IR nodes: {', '.join(f'{n} {g[n].name}' for n in k.nodes)}",
    ]
    lines += [f"#   DSL: {o}" for o in k.origins(g)]
    return lines


def call_site_comment(g: Graph, k: Kernel) -> str:
    """The driver's one-line reminder at each kernel call: its name and DSL file:line."""
    where = "; ".join(":".join(o.split(":", 2)[:2]) for o in k.origins(g))
    return f"# {k.name}  ({where or 'derived'})"


def driver_signature(plan: Plan) -> list[str]:
    """``run``'s arguments, the same on every backend (``Program._run`` passes them):
    θ, direction vectors, the batch, CP noise / cached values, outputs, scratch slots."""
    return [
        "theta",
        *plan.vectors,
        *[leaf_var(n) for n in plan.leaves],
        *[leaf_var(e[0]) for e in plan.extras],
        *[f"out_{p}" for p in plan.out_flat],
        *[f"out_{var_name(k)}" for k in plan.out_plain],
        *[s.name for s in plan.slots],
    ]


def view_lines(low: Lowered, plan: Plan) -> list[str]:
    """Named views of the flat vectors: each parameter in θ, each direction in v, and each
    parameter's block of a flat output (a gradient). Slicing works alike on numpy arrays
    and on Numba device arrays, so both drivers use these lines."""
    g, st = low.graph, plan.storage
    lines = []
    bound = {b: [n for n in g.nodes() if REGISTRY[n.op].binding == b] for b in ("theta", "v")}
    for n in bound["theta"]:
        off, size = plan.param_offsets[n.name]
        lines.append(f"p_{n.name} = theta[{off}:{off + size}]")
    for n in bound["v"]:
        off, size = plan.param_offsets[n.attr("param")]
        lines.append(f"{st[n.id]} = v[{off}:{off + size}]")
    for key, nid in list(low.output_of.items()):
        out = g.output_type(key)
        if out.kind == outputs.THETA:
            off, size = plan.param_offsets[out.block]
            lines.append(f"{st[nid]} = out_{out.result}[{off}:{off + size}]")
    return lines


def copy_destination(g: Graph, key: str, plan: Plan) -> str:
    """Where an output that no kernel writes directly is copied to."""
    out = g.output_type(key)
    if out.kind == outputs.THETA:
        off, size = plan.param_offsets[out.block]
        return f"out_{out.result}[{off}:{off + size}]"
    return f"out_{var_name(key)}"


def batch_size_line(plan: Plan) -> str:
    """``B = ...``: the number of cases, from the first batch array (1 without one)."""
    return f"B = {leaf_var(plan.leaves[0])}.shape[0]" if plan.leaves else "B = 1"


def driver_calls(
    low: Lowered,
    plan: Plan,
    calls: Mapping[str, Callable[[Kernel], list[str]]],
    copy: Callable[[str, str], list[str]],
) -> list[str]:
    """The body of a driver after its views: every kernel in order, each behind its
    call-site comment and written by the backend's line builder for its kind
    (``calls[kind](kernel)``), then the outputs no kernel writes directly
    (``copy(node id, destination)``). Only the builders differ per backend."""
    g = low.graph
    lines = []
    for k in low.kernels:
        lines.append(call_site_comment(g, k))
        lines.extend(calls[k.kind](k))
    for key, nid in low.copies.items():
        lines.append(f"# output {key} is {g[nid].name}: copied")
        lines.extend(copy(nid, copy_destination(g, key, plan)))
    return lines


# ---- gather kernels (ops/lowering.py: Gather): the op's loop nest over spans of output rows --
class GatherIO:
    """How a gather body reaches its buffers (ops/lowering.py: Gather documents the calls):
    the per-case ones indexed by case ``i``, the shared ones by the flat index alone; and
    the span of columns ``c0 <= c < c1`` of output row ``r`` this iteration computes."""

    def __init__(self, g: Graph, k: Kernel, st: dict[str, str], columns: tuple[str, str]):
        self.g, self.st, self.how = g, st, k.how
        self.output = g[k.writes[0]]
        self.c0, self.c1 = columns

    def _at(self, node: Node, index: str) -> str:
        return f"{self.st[node.id]}[i, {index}]" if node.batched else f"{self.st[node.id]}[{index}]"

    def read(self, k: int, index: str) -> str:
        return self._at(self.g[self.how.operands[k]], index)

    def span(self, k: int, start: str, n: int | str) -> str:
        return self._at(self.g[self.how.operands[k]], f"{start}:{start} + {n}")

    def out(self, index: str) -> str:
        return self._at(self.output, index)

    def out_span(self, start: str, n: int | str) -> str:
        return self._at(self.output, f"{start}:{start} + {n}")


def gather_parts(
    g: Graph, k: Kernel, st: dict[str, str], columns: tuple[str, str]
) -> tuple[list[str], list[str]]:
    """(kernel parameters, the loop body for columns ``columns`` of output row ``r`` of case
    ``i``) of a gather kernel. The body is the op's own text, printed unchanged on both
    backends; only the loop around it and the span of columns differ."""
    how = k.how
    params = list(dict.fromkeys([st[r] for r in how.operands] + [st[k.writes[0]]]))
    return params, how.body(GatherIO(g, k, st, columns))


def gather_loop(batched: bool, rows: int, cols: int, over, per_element: bool) -> list[str]:
    """The head of a gather kernel's loop: ``over(n)`` is the backend's iteration over
    ``range(n)`` (``prange(n)``, or a CUDA grid-stride range). One iteration per (case,
    output row) pair — the body then spans the row — or, ``per_element``, per (case, row,
    column) triple, naming the column ``c``."""
    if not per_element:
        if not batched:
            return [f"for r in {over(rows)}:  # output rows"]
        return [
            f"for ir in {over(f'B * {rows}')}:  # (case, output row) pairs",
            f"    i = ir // {rows}",
            f"    r = ir - i * {rows}",
        ]
    size = rows * cols
    head = [f"for irc in {over(f'B * {size}' if batched else str(size))}:  # output elements"]
    if batched:
        head += [f"    i = irc // {size}", f"    r = (irc - i * {size}) // {cols}"]
        return head + [f"    c = irc - i * {size} - r * {cols}"]
    return head + [f"    r = irc // {cols}", f"    c = irc - r * {cols}"]
