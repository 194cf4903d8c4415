"""CPU emitter: a lowered program -> its Python module and its kernels' shared files.

Layout (see docs/kernel_tour.md): the program's module holds a header docstring, one
comment block per kernel naming its IR nodes and DSL lines, the line that takes each
compiled kernel from its shared file (``k1_map_logistic = kernel('map_logistic_…')``),
and a driver ``run`` that calls the kernels in order, with GEMMs as BLAS calls
(``gemm(a, b, out)``, runtime/gemm.py) into preallocated buffers. Each compiled
kernel — one ``@njit`` loop per fusion group or reduction, a map's with its scalar
function (printed once from sympy after CSE; the CUDA emitter wraps the same functions
as device functions) — is a file of its own, named after its text
(``codegen/kernel_files.py``), so programs that run the same loop share it.
"""

from __future__ import annotations

import re

from symcurv.codegen import common, guards, kernel_files
from symcurv.codegen.cpu_maps import emit_map
from symcurv.codegen.lower import Kernel, Lowered
from symcurv.codegen.schedule import Plan
from symcurv.codegen.source import Source
from symcurv.ir.graph import Graph
from symcurv.ops import REGISTRY
from symcurv.ops import lowering as lw
from symcurv.ops.registry import lowering

TARGETS = {"float64": "cpu", "float32": "cpu/float32"}  # the scalar printer per dtype
MAX_INLINE_ARGS = 30  # the most arguments Numba's inline='always' accepts (numba 0.68)


def _emit_gather(src: Source, g: Graph, k: Kernel, st: dict[str, str]) -> list[str]:
    """An op's loop nest (ops/lowering.py: Gather) once per (case, output row) pair, split
    across Numba threads by ``prange`` when built with ``parallel=True``: the op's
    innermost loop then runs over a whole row of contiguous columns, which LLVM
    vectorises, and a single large image (B = 1) still has a row per thread."""
    how = k.how
    params, body = common.gather_parts(g, k, st, ("0", str(how.cols)))
    with src.block(f"def {k.name}(B, {', '.join(params)}):"):
        batched = g[k.writes[0]].batched
        src.extend(common.gather_loop(batched, how.rows, how.cols, lambda n: f"prange({n})", False))
        src.extend("    " + line for line in body)
    return params


# ---- reductions (table: template -> loop body) -----------------------------------------
def _reduce_body(tmpl: str, x: str, out: str, batched: bool, n: int) -> list[str]:
    def row(j: str) -> str:
        return f"{x}[i, {j}]" if batched else f"{x}[{j}]"

    dst = f"{out}[i, 0]" if batched else f"{out}[0]"
    if tmpl == "sum_features":
        body = ["acc = 0.0", f"for j in range({n}):", f"    acc += {row('j')}", f"{dst} = acc"]
    elif tmpl == "logsumexp":  # one compiled function shared by every program (vecmath)
        if batched:
            return [f"vm.logsumexp_rows({x}, {out})"]
        return [f"vm.logsumexp_rows({x}.reshape((1, {n})), {out}.reshape((1, 1)))"]
    elif tmpl in ("batch_sum", "batch_mean"):
        scale = " / B" if tmpl == "batch_mean" else ""
        return [
            f"for j in range({n}):",
            f"    {out}[j] = 0.0",
            "for i in range(B):",
            f"    for j in range({n}):",
            f"        {out}[j] += {x}[i, j]",
            *([f"for j in range({n}):", f"    {out}[j] = {out}[j]{scale}"] if scale else []),
        ]
    else:
        raise NotImplementedError(tmpl)
    if batched:
        return ["for i in prange(B):"] + ["    " + b for b in body]
    return body


# ---- GEMMs and copies: one printer per lowering description (ops/lowering.py) ---------
def _mat(g: Graph, m: lw.Mat, st: dict[str, str], views: dict[str, str], per_case: str = "") -> str:
    """A GEMM operand as a numpy expression, folding a viewed transpose into ``.T``:
    ``W.T`` in the IR costs nothing. A vector (per-case rows, or one vector read as a
    column) is passed as stored; a matrix node is reshaped, even when it has one column."""
    nid, r, c, t = m.nid, m.rows, m.cols, m.transpose
    if nid in views:
        nid, r, c, t = views[nid], c, r, not t
    elif len(g[nid].shape) < 2:
        return st[nid] + (".T" if t else "")
    return f"{st[nid]}{per_case}.reshape(({r}, {c}))" + (".T" if t else "")


def _gemm(how: lw.Gemm, g: Graph, st: dict[str, str], views: dict[str, str]) -> list[str]:
    a, b, out = (_mat(g, m, st, views) for m in (how.a, how.b, how.out))
    # UᵀU over the cases (a K-FAC factor; U a (B, n) buffer): BLAS syrk, half the work
    if how.a.rows == lw.CASES and a == f"{b}.T":
        return [f"syrk_tn({b}, {out})"]
    return [f"gemm({a}, {b}, {out})"]


def _gemm_pair(k: Kernel, g: Graph, st: dict[str, str], views: dict[str, str]) -> list[str]:
    """Two GEMMs of one operand A by two leaves B1, B2 (``Kernel.pair``) as one product
    A [B1 B2] split into their two outputs (runtime/gemm.py: ``gemm_pair``)."""
    h1, h2 = k.how, k.pair.how
    a, b1, b2, out1, out2 = (_mat(g, m, st, views) for m in (h1.a, h1.b, h2.b, h1.out, h2.out))
    return [
        f"# one product with {k.pair.name}: {a} · [{b1}, {b2}]",
        f"gemm_pair({a}, {b1}, {b2}, {out1}, {out2})",
    ]


def _uses_syrk(low: Lowered, st: dict[str, str]) -> bool:
    return any(
        isinstance(k.how, lw.Gemm) and _gemm(k.how, low.graph, st, low.views)[0].startswith("syrk")
        for k in low.kernels
    )


def _per_case_matvec(
    how: lw.PerCaseMatvec, g: Graph, st: dict[str, str], views: dict[str, str], out: str
) -> list[str]:
    hi = f"{st[how.h]}[i]" if g[how.h].batched else st[how.h]
    W = _mat(g, lw.Mat(how.W, how.rows, how.cols), st, views, "[i]")
    return ["for i in range(B):", f"    np.dot({W}, {hi}, {out}[i])"]


def _outer(how: lw.Outer, g: Graph, st: dict[str, str], out: str, batched: bool) -> list[str]:
    u, v, m, n = how.u, how.v, how.m, how.n
    ui = (lambda a: f"{st[u]}[i, {a}]") if g[u].batched else (lambda a: f"{st[u]}[{a}]")
    vi = (lambda b: f"{st[v]}[i, {b}]") if g[v].batched else (lambda b: f"{st[v]}[{b}]")
    o = f"{out}[i, a * {n} + b]" if batched else f"{out}[a * {n} + b]"
    body = [
        f"for a in range({m}):",
        f"    for b in range({n}):",
        f"        {o} = {ui('a')} * {vi('b')}",
    ]
    return (["for i in range(B):"] + ["    " + b for b in body]) if batched else body


def _gemm_lines(g: Graph, k: Kernel, st: dict[str, str], views: dict[str, str]) -> list[str]:
    node, how = g[k.nodes[0]], k.how
    if isinstance(how, lw.Gemm):
        return _gemm(how, g, st, views)
    if isinstance(how, lw.PerCaseMatvec):
        return _per_case_matvec(how, g, st, views, st[node.id])
    return _outer(how, g, st, st[node.id], node.batched)


def _copy_lines(
    g: Graph, nid: str, dst: str, st: dict[str, str], views: dict[str, str]
) -> list[str]:
    """Write node ``nid`` (a constant, a transpose, a leaf or a buffer) into array ``dst``:
    a copy is written as loops, so it becomes a small compiled kernel (``_loop_kernel``)
    rather than a slice assignment in the driver, which a compiled driver would build
    through Numba's broadcasting machinery (0.7 s of compile per copy;
    runtime/compiled_driver.py)."""
    n = g[nid]
    how = lowering(g, n) if REGISTRY[n.op].lower is not None else None
    if isinstance(how, lw.Fill):
        return [f"{dst}.fill({how.value!r})"]
    row = "[i]" if n.batched else ""
    if isinstance(how, lw.Transpose):  # dst (r × c) = srcᵀ, both stored flat per case
        r, c, src = how.rows, how.cols, st[views.get(nid, how.x)]
        body = [
            f"for a in range({r}):",
            f"    for b in range({c}):",
            f"        {dst}{row}[a * {c} + b] = {src}{row}[b * {r} + a]",
        ]
    else:
        body = [f"for j in range({n.size}):", f"    {dst}{row}[j] = {st[nid]}{row}[j]"]
    return (["for i in range(B):"] + ["    " + b for b in body]) if n.batched else body


# ---- the driver: plain Python, each loop a compiled kernel -------------------------------
_NAME = re.compile(r"\b[A-Za-z_]\w*\b")


def _loop_kernel(
    name: str, lines: list[str], known: list[str], kernels: dict[str, tuple[list[str], list[str]]]
) -> list[str]:
    """The driver's line(s) for a step. A step that loops over the batch or the features
    (a reduction, a per-case product, an outer product, a transposed copy) becomes a
    compiled kernel ``name(B, <the driver variables it uses>)``, recorded in ``kernels``;
    a step of one call (a BLAS ``gemm``, a fill, a copy) stays in the driver."""
    if not any(ln.lstrip().startswith("for ") for ln in lines):
        return lines
    used = set(_NAME.findall("\n".join(lines)))
    params = [v for v in known if v in used]
    kernels[name] = (params, lines)
    return [f"{name}(B, {', '.join(params)})"]


def _driver(
    low: Lowered,
    plan: Plan,
    kernel_params: dict[str, list[str]],
    guarded: dict[str, list[str]],
    bounded: dict[str, tuple[str, str, str]],
):
    """The driver's body (after its docstring) and the loop kernels it calls."""
    g, st = low.graph, plan.storage
    views = common.view_lines(low, plan)
    known = [*common.driver_signature(plan), *[ln.split(" = ")[0] for ln in views]]
    loops: dict[str, tuple[list[str], list[str]]] = {}

    def reduce_lines(k: Kernel) -> list[str]:
        x, out = k.reads[0], k.writes[0]
        body = _reduce_body(k.template, st[x], st[out], g[x].batched, g[x].size)
        return _loop_kernel(k.name, body, known, loops)

    def copy(k: Kernel) -> list[str]:
        lines = _copy_lines(g, k.nodes[0], st[k.writes[0]], st, low.views)
        return _loop_kernel(k.name, lines, known, loops)

    def copy_output(nid: str, dst: str) -> list[str]:
        lines = _copy_lines(g, nid, dst, st, low.views)
        # a constant output (e.g. the zero gradient of an unused parameter) has no storage
        return _loop_kernel(f"copy_{st.get(nid, nid)}", lines, known, loops)

    def gemm(k: Kernel) -> list[str]:
        if k.paired:  # computed by its pair's first GEMM, just above
            return ["# (computed with the GEMM above as one product)"]
        lines = (
            _gemm_pair(k, g, st, low.views)
            if k.pair is not None
            else _loop_kernel(k.name, _gemm_lines(g, k, st, low.views), known, loops)
        )
        if k.name in guarded:
            lines = [*lines, guards.guard_line(st[k.writes[0]])]
        return [*lines, guards.bound_line(*bounded[k.name])] if k.name in bounded else lines

    calls = {
        "map": lambda k: [f"{k.name}(B, {', '.join(kernel_params[k.name])})"],
        "gather": lambda k: [f"{k.name}(B, {', '.join(kernel_params[k.name])})"],
        "gemm": gemm,
        "reduce": reduce_lines,
        "fill": copy,
        "copy": copy,
    }
    steps = common.driver_calls(low, plan, calls, copy_output)
    views, matrices, steps = _matrix_views(views, steps)
    body = [common.batch_size_line(plan), *views, *matrices]
    if guarded:
        body.append(f"{guards.FLAG} = False")
    if bounded:
        body.append(f"{guards.BOUND_FLAG} = True")
    body += steps
    flags = [f for f, used in ((guards.FLAG, guarded), (guards.BOUND_FLAG, bounded)) if used]
    if flags:
        body.append(f"return {', '.join(flags)}")
    return body, loops


_RESHAPE = re.compile(r"\b(\w+)\.reshape\(\((\d+), (\d+)\)\)")  # a GEMM operand's view


def _matrix_name(x: str, rows: str, cols: str) -> str:
    return f"{x}_{rows}x{cols}"


def _matrix_views(views: list[str], steps: list[str]) -> tuple[list[str], list[str], list[str]]:
    """(the view lines the steps read, one line per matrix view ``x_RxC = x.reshape((R,
    C))`` of the steps' GEMM operands, the steps reading them by name). In Python each
    view is a call (a reshape ~0.2 µs, a slice ~0.1 µs); cp_net's hvp reshaped 13 views 32
    times per call, and sliced 24 views where 13 are read. A flat view read only through
    its matrices is sliced into them (``p_W0_20x256 = theta[0:5120].reshape((20, 256))``);
    one no step reads is left out."""
    matrices: dict[str, str] = {}

    def name(m: re.Match) -> str:
        matrices.setdefault(_matrix_name(*m.groups()), m.group(0))
        return _matrix_name(*m.groups())

    steps = [_RESHAPE.sub(name, ln) for ln in steps]
    text = "\n".join(steps)
    kept = []
    for ln in views:
        var, expr = ln.split(" = ", 1)
        if re.search(rf"\b{var}\b", text):
            kept.append(ln)
            continue
        for mat, view in matrices.items():  # read only through matrices, or not at all
            if view.startswith(f"{var}."):
                matrices[mat] = expr + view[len(var) :]
    return kept, [f"{mat} = {view}" for mat, view in matrices.items()], steps


def _emit_loop_kernel(src: Source, name: str, params: list[str], lines: list[str]) -> None:
    # parallel only where a loop is a prange (Numba warns about parallel=True without one)
    threads = ", parallel=PARALLEL" if any("prange(" in ln for ln in lines) else ""
    src(f"@njit(cache=True{threads}, error_model='numpy')")
    with src.block(f"def {name}(B, {', '.join(params)}):"):
        src.extend(lines)


# ---- the files: the program's module and its kernels' shared files ---------------------
def _shared_header(parallel: bool, dtype: str) -> list[str]:
    """The lines of a shared kernel file between its docstring and its functions."""
    lines = [
        "import math  # noqa: F401",
        "",
        "import numpy as np  # noqa: F401",
        "from numba import njit, prange  # noqa: F401",
        "",
        "from symcurv.runtime import vecmath as vm  # noqa: F401  (vectorised exp, log, tanh)",
        "",
        f"PARALLEL = {parallel!r}  # prange loops run on Numba threads when True",
    ]
    if dtype == "float32":  # the formulas' literals (symbolic/printer.py: CpuFloat32Printer)
        lines.append(
            "F = np.float32  # literals print as F(...): a bare 0.5 would make a formula float64"
        )
    return lines


def _scalar_function(g: Graph, k: Kernel, dtype: str) -> list[str]:
    # error_model="numpy": x/0 gives inf (caught by Program's non-finite check, which
    # names the node) instead of a ZeroDivisionError from inside Numba; it also drops
    # the per-element zero test (about 8% off a logistic map). inline='always' puts the
    # formulas into the map's loop in Numba IR, so LLVM sees one loop body and
    # vectorises it (as separate functions, vm.log(1 + vm.exp(.)) exceeded LLVM's
    # inlining budget and every element became a scalar call: 4x slower). Numba's IR
    # inliner refuses a call of more than 30 arguments ("Calling a closure with *args
    # is unsupported"): a map reading more (a CP sweep's pair map over many noise and
    # cached values) keeps its formulas as a separate compiled function.
    inline = "always" if len(k.reads) + 1 <= MAX_INLINE_ARGS else "never"  # + 1: B
    return [
        f"@njit(cache=True, inline={inline!r}, error_model='numpy')",
        *common.emit_scalar_function(g, k, TARGETS[dtype]),
    ]


def _compiled(
    low: Lowered, st: dict[str, str], loops: dict[str, tuple[list[str], list[str]]], dtype: str
) -> dict[str, kernel_files.Compiled]:
    """Every compiled kernel of the program as the emitters print it, by name: the maps,
    the gathers and the driver's loop steps (``loops``, emptied here)."""
    g = low.graph
    out: dict[str, kernel_files.Compiled] = {}
    for k in low.kernels:
        src, helpers = Source(), []
        if k.kind in ("map", "gather"):
            if k.kind == "map":
                helpers.append(_scalar_function(g, k, dtype))
            src("@njit(cache=True, parallel=PARALLEL, error_model='numpy')")
            (emit_map if k.kind == "map" else _emit_gather)(src, g, k, st)
        elif k.name in loops:
            _emit_loop_kernel(src, k.name, *loops.pop(k.name))
        else:
            continue  # a step of one numpy call, in the driver
        writes = {st[w] for w in k.writes if w in st}
        out[k.name] = kernel_files.Compiled(k.name, [*helpers, src.lines], writes)
    for name, (params, lines) in loops.items():  # an output copied by a loop: its first
        src = Source()  # parameter is the destination (copy_output's lines write dst)
        _emit_loop_kernel(src, name, params, lines)
        dst = re.match(r"\s*(\w+)", next(ln for ln in lines if "=" in ln and "for" not in ln))
        writes = {dst.group(1)} if dst else set()
        out[name] = kernel_files.Compiled(name, [src.lines], writes)
    loops.clear()
    return out


def emit(
    program: str,
    low: Lowered,
    plan: Plan,
    *,
    model: str,
    dtype: str,
    ir_hash: str,
    version: str,
    parallel: bool,
) -> kernel_files.Emitted:
    """The program's module (header, each kernel's comment block and the name of its
    shared kernel, the driver ``run``) and the shared kernel files it loads
    (``codegen/kernel_files.py``)."""
    g, st = low.graph, plan.storage
    kernel_params: dict[str, list[str]] = {}
    for k in low.kernels:
        if k.kind == "map":
            kernel_params[k.name] = list(
                dict.fromkeys([st[r] for r in k.reads] + [st[w] for w in k.writes])
            )
        elif k.kind == "gather":
            kernel_params[k.name] = common.gather_parts(g, k, st, ("0", str(k.how.cols)))[0]
    guarded = guards.guarded_leaves(low)  # {GEMM kernel: batch leaves it checks}
    bounded = guards.bounded_outputs(low, plan)  # {GEMM kernel: (output, a, b)}
    body, loops = _driver(low, plan, kernel_params, guarded, bounded)
    compiled = _compiled(low, st, loops, dtype)
    header = _shared_header(parallel, dtype)
    shared: dict[str, str] = {}
    names: dict[str, tuple[str, list[str]]] = {}  # kernel -> (shared name, its arrays)
    for kname, c in compiled.items():
        sname, text, params = kernel_files.shared_file(c, header)
        shared[sname] = text
        names[kname] = (sname, params)

    src = Source()
    src.extend(
        common.header_lines(
            program,
            low,
            model=model,
            backend="cpu (Numba)",
            dtype=dtype,
            version=version,
            ir_hash=ir_hash,
        )
    )
    src()
    src("import numpy as np  # noqa: F401")
    src()
    src("from symcurv.runtime import vecmath as vm  # noqa: F401  (logsumexp_rows)")
    src("from symcurv.runtime.gemm import gemm  # noqa: F401  (out = a·b by BLAS)")
    if any(k.pair is not None for k in low.kernels):
        src("from symcurv.runtime.gemm import gemm_pair  # noqa: F401  (a·[b1 b2]: two products)")
    if guarded:
        src(f"from symcurv.runtime.validate import {guards.CHECK}  # noqa: F401  (batch guards)")
    if bounded:
        src(f"from symcurv.runtime.validate import {guards.BOUND}  # noqa: F401  (output bounds)")
    if _uses_syrk(low, st):
        src("from symcurv.runtime.blas_syrk import syrk_tn  # noqa: F401  (UᵀU by BLAS syrk)")
    src("from symcurv.runtime.shared_kernels import importer")
    src()
    src(f"kernel = importer(__file__)  # loads kernels/{kernel_files.SHARED}/<name>.py")

    def alias(kname: str) -> None:
        sname, params = names[kname]
        src(f"{kname} = kernel({sname!r})  # ({', '.join(['B', *params])})")

    for k in low.kernels:
        src()
        src.extend(common.kernel_comment(g, k, st))
        if k.name in names:
            alias(k.name)
    for kname in names:
        if kname not in {k.name for k in low.kernels}:  # an output copied by a loop
            src()
            src(f"# {kname}: an output's copy")
            alias(kname)
    src()
    src()
    # The driver is plain Python, not compiled at build time: Numba compiles a function
    # together with every function it calls (their code is linked into its module and
    # optimised again), so a compiled driver cost as much as all its kernels together a
    # second time; called from Python, each kernel is compiled once. Its price is the
    # dispatch of each call (about 0.45 µs a kernel), so a program called often runs this
    # same function compiled, each call made at its kernel's address
    # (runtime/compiled_driver.py, runtime/drivers.py).
    sig = common.driver_signature(plan)
    with src.block(f"def run({', '.join(sig)}):"):
        src(
            f'"""Run program {program!r}: inputs/targets are (B, n) arrays, θ is flat; '
            f"results are written into out_* arrays; s* are scratch buffers."
            f'{guards.returns_doc(guarded, bounded)}"""'
        )
        src.extend(body)
    return kernel_files.Emitted(src.text(), shared)
