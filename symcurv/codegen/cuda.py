"""CUDA emitter: a lowered program -> one Python source file of Numba-CUDA kernels.

Same input as the CPU emitter (the kernel list of ``codegen.lower`` and the buffer plan of
``codegen.schedule``), same scalar formulas (``common.emit_scalar_function``, printed with
target "cuda": ``math.exp`` instead of the CPU's vectorisable ``vm.exp``), same names and
comments. What differs is the skeleton (see docs/kernel_tour.md §8):

* each fusion group is one ``@cuda.jit`` kernel. Without a per-case sum it is a grid-stride
  loop over the flat (case, feature) index; with one (an epilogue) a row of ``lanes``
  threads takes each case and the sum is a shared-memory tree (``_segment_sum``);
* GEMMs, per-case contractions, reductions, fills and copies call the generic kernels of
  ``symcurv.runtime.cuda_kernels`` (``ck``), one per variant, with transposes folded into
  flags exactly as the CPU folds them into ``.T``;
* ``run`` has the CPU driver's signature, so ``Program`` calls either backend alike. It
  hands the numpy arguments to ``ck.run_on_device``, which copies them to device arrays
  allocated once per batch size, calls ``_launch`` (the kernels in order, over device
  arrays, with the CPU driver's variable names) and copies the results back.
"""

from __future__ import annotations

from symcurv.codegen import common
from symcurv.codegen.lower import Kernel, Lowered
from symcurv.codegen.schedule import Plan
from symcurv.codegen.source import Source
from symcurv.ir.graph import Graph
from symcurv.ops import REGISTRY
from symcurv.ops import lowering as lw
from symcurv.ops.registry import lowering
from symcurv.runtime import cuda_geometry

# The block reduction of a map's per-case sums. It is emitted into each file that needs it,
# not imported from runtime.cuda_kernels: the CUDA simulator swaps the ``cuda`` module of
# a kernel's own module for the whole launch, but of another module only per device-function
# call, which races between the simulated threads.
# the printer of the scalar formulas per dtype (symbolic/printer.py: float32 literals)
TARGETS = {"float64": "cuda", "float32": "cuda/float32"}

SEGMENT_SUM = '''
@cuda.jit(device=True)
def _segment_sum(buf, x, lanes):
    """Σ of x over each run of ``lanes`` consecutive threads (a tree in shared memory with
    a fixed order); every thread of the block must call it."""
    t = cuda.threadIdx.x
    buf[t] = x
    cuda.syncthreads()
    s = lanes // 2
    while s > 0:
        if t % lanes < s:
            buf[t] += buf[t + s]
        cuda.syncthreads()
        s //= 2
    total = buf[t - t % lanes]
    cuda.syncthreads()  # buf is free again before anyone writes it
    return total
'''


# ---- map kernels ---------------------------------------------------------------------------
def _map_parts(g: Graph, k: Kernel, st: dict[str, str]) -> tuple[list[str], str, list[str]]:
    """(kernel parameters, the call of the scalar function, its assignment targets)."""
    _, reads, outs = common.map_expressions(g, k)
    params = list(dict.fromkeys([st[r] for r in reads] + [st[w] for w in k.writes]))
    args = [common.element(g[r], k.space, st[r]) for r in reads]
    args += common.extra_arguments(outs)
    written = [w for w in k.writes if w not in k.epilogues]
    targets = [common.element(g[w], k.space, st[w]) for w in written]
    targets += [f"e{n}" for n in range(len(k.epilogues))]
    return params, f"{common.scalar_function_name(k)}({', '.join(args)})", targets


def _emit_map(src: Source, g: Graph, k: Kernel, st: dict[str, str]) -> list[str]:
    params, fcall, targets = _map_parts(g, k, st)
    batched, size = k.space
    with src.block(f"def {k.name}(B, {', '.join(params)}):"):
        if batched and size == 1:  # one value per case
            with src.block("for i in range(cuda.grid(1), B, cuda.gridsize(1)):"):
                src(f"{', '.join(targets)} = {fcall}")
        elif batched:  # consecutive threads take consecutive features: coalesced
            with src.block(f"for ij in range(cuda.grid(1), B * {size}, cuda.gridsize(1)):"):
                src(f"i = ij // {size}")
                src(f"j = ij - i * {size}")
                src(f"{', '.join(targets)} = {fcall}")
        else:
            with src.block(f"for j in range(cuda.grid(1), {size}, cuda.gridsize(1)):"):
                src(f"{', '.join(targets)} = {fcall}")
    return params


def _emit_map_rows(src: Source, g: Graph, k: Kernel, st: dict[str, str]) -> list[str]:
    """A map with per-case sums: ``lanes`` threads per case, each summing its own features
    in registers; one tree per sum across the lanes. The elementwise summands (a loss's
    per-feature terms) never reach memory."""
    params, fcall, targets = _map_parts(g, k, st)
    batched, size = k.space
    rows = "B" if batched else "1"
    accs = [f"acc{n}" for n in range(len(k.epilogues))]
    with src.block(f"def {k.name}(B, lanes, {', '.join(params)}):"):
        src("part = cuda.shared.array(THREADS, FTYPE)  # one partial sum per thread")
        src("lane = cuda.threadIdx.x % lanes")
        src("rows = cuda.blockDim.x // lanes  # cases per block")
        with src.block(f"for i0 in range(cuda.blockIdx.x * rows, {rows}, cuda.gridDim.x * rows):"):
            src("i = i0 + cuda.threadIdx.x // lanes")
            for a in accs:
                src(f"{a} = 0.0")
            with src.block(f"if i < {rows}:"):
                with src.block(f"for j in range(lane, {size}, lanes):"):
                    src(f"{', '.join(targets)} = {fcall}")
                    for n, a in enumerate(accs):
                        src(f"{a} += e{n}")
            for a in accs:  # outside the `if`: every thread takes part in the tree
                src(f"{a} = _segment_sum(part, {a}, lanes)")
            with src.block(f"if i < {rows} and lane == 0:"):
                for e, a in zip(k.epilogues, accs):
                    src(f"{common.element(g[e], (batched, 1), st[e])} = {a}")
    return params


def _emit_gather(src: Source, g: Graph, k: Kernel, st: dict[str, str]) -> list[str]:
    """An op's loop nest (ops/lowering.py: Gather) for one output element per thread
    (columns ``c`` to ``c + 1`` of row ``r``) in a grid-stride loop, consecutive threads on
    consecutive elements."""
    how = k.how
    params, body = common.gather_parts(g, k, st, ("c", "c + 1"))
    with src.block(f"def {k.name}(B, {', '.join(params)}):"):
        grid = lambda n: f"range(cuda.grid(1), {n}, cuda.gridsize(1))"  # noqa: E731
        batched = g[k.writes[0]].batched
        src.extend(common.gather_loop(batched, how.rows, how.cols, grid, True))
        src.extend("    " + line for line in body)
    return params


# ---- calls of the generic kernels (runtime/cuda_kernels.py) -------------------------------------
def _rows(g: Graph, nid: str, var: str) -> str:
    """A value as a 2-D (cases, size) device array: a shared value is one row."""
    n = g[nid]
    return var if n.batched else f"{var}.reshape((1, {n.size}))"


def _tuple(names: list[str]) -> str:
    return f"({names[0]},)" if len(names) == 1 else f"({', '.join(names)})"


def _flags(**flags: bool) -> str:
    return "".join(f", {k}=True" for k, v in flags.items() if v)


def _mat(m: lw.Mat, st: dict[str, str], views: dict[str, str]) -> tuple[str, bool]:
    """(a GEMM operand as a 2-D device array, whether ck.gemm reads it transposed): per-case
    rows as stored, anything else reshaped; a viewed transpose flips the flag."""
    if m.rows == lw.CASES:
        return st[m.nid], m.transpose
    if m.nid in views:
        return _operand_of(m, st, views)
    return f"{st[m.nid]}.reshape(({m.rows}, {m.cols}))", m.transpose


def _operand_of(m: lw.Mat, st: dict[str, str], views: dict[str, str]) -> tuple[str, bool]:
    src, (r, c) = views[m.nid], (m.cols, m.rows)
    return f"{st[src]}.reshape(({r}, {c}))", not m.transpose


def _gemm_lines(g: Graph, k: Kernel, st: dict[str, str], views: dict[str, str]) -> list[str]:
    node, how = g[k.nodes[0]], k.how
    out = st[node.id]
    if isinstance(how, lw.Gemm):
        (a, ta), (b, tb), (o, _) = (_mat(m, st, views) for m in (how.a, how.b, how.out))
        return [f"ck.gemm({a}, {b}, {o}{_flags(trans_a=ta, trans_b=tb)})"]
    if isinstance(how, lw.PerCaseMatvec):  # one dot product per output
        src, r, c, trans = how.W, how.rows, how.cols, False
        if how.W in views:
            src, (c, r), trans = views[how.W], (how.rows, how.cols), True
        return [
            f"ck.batched_matvec({st[src]}, {_rows(g, how.h, st[how.h])}, {out}, {r}, {c}"
            f"{_flags(trans=trans)})"
        ]
    return [
        f"ck.outer({_rows(g, how.u, st[how.u])}, {_rows(g, how.v, st[how.v])}, "
        f"{_rows(g, node.id, out)}, {how.m}, {how.n})"
    ]


def _reduce_line(g: Graph, k: Kernel, st: dict[str, str]) -> str:
    x, out = k.reads[0], k.writes[0]
    if k.template in ("batch_sum", "batch_mean"):
        return f'ck.batch_reduce("{k.template}", {st[x]}, {st[out]})'
    if k.template in ("sum_features", "logsumexp"):
        return f'ck.row_reduce("{k.template}", {_rows(g, x, st[x])}, {_rows(g, out, st[out])})'
    raise NotImplementedError(k.template)


def _copy_lines(
    g: Graph, nid: str, dst: str, st: dict[str, str], views: dict[str, str]
) -> list[str]:
    """Write node ``nid`` (a constant, a transpose, a leaf or a buffer) into device array
    ``dst``."""
    n = g[nid]
    how = lowering(g, n) if REGISTRY[n.op].lower is not None else None
    if isinstance(how, lw.Fill):
        return [f"ck.fill({dst}, {how.value!r})"]
    if isinstance(how, lw.Transpose):
        r, c = how.rows, how.cols
        src = views.get(nid, how.x)
        rows = (lambda v: v) if n.batched else (lambda v: f"{v}.reshape((1, {r * c}))")
        return [f"ck.transpose({rows(st[src])}, {rows(dst)}, {r}, {c})"]
    return [f"ck.copy({st[nid]}, {dst})"]


# ---- launch configuration (symcurv info, comments) --------------------------------------------
def launch(g: Graph, k: Kernel, geo: cuda_geometry.Geometry = cuda_geometry.GPU) -> list[str]:
    """[threads per block, grid] of kernel ``k`` on ``geo``, as text in the model's sizes."""
    node = g[k.writes[0]] if k.writes else g[k.nodes[0]]

    def elements(size: int) -> str:
        return f"B·{size}" if node.batched and size > 1 else ("B" if node.batched else str(size))

    if k.kind == "map":
        batched, size = k.space
        if k.epilogues:
            return list(cuda_geometry.row_launch("B" if batched else "1", size, geo))
        return list(cuda_geometry.flat_launch(elements(size), geo))
    if k.kind == "reduce":
        n = g[k.reads[0]].size
        if k.template in ("batch_sum", "batch_mean"):
            return list(cuda_geometry.column_launch(n, geo))
        return list(cuda_geometry.row_launch("B" if g[k.reads[0]].batched else "1", n, geo))
    if isinstance(k.how, lw.Gemm):  # a tiled GEMM over the output matrix
        return list(cuda_geometry.gemm_launch(str(k.how.out.rows), str(k.how.out.cols), geo))
    # per-case matvec (one output per thread), outer, fill, copy
    return list(cuda_geometry.flat_launch(elements(node.size), geo))


def launches(low: Lowered) -> list[list[str]]:
    """[kernel, threads per block, grid] for every kernel, in order (the manifest)."""
    return [[k.name, *launch(low.graph, k)] for k in low.kernels]


# ---- the file ----------------------------------------------------------------------------------
def emit(
    program: str,
    low: Lowered,
    plan: Plan,
    *,
    model: str,
    dtype: str,
    ir_hash: str,
    version: str,
    parallel: bool = False,
) -> str:
    """The CUDA source file of one program part (``parallel`` is a cpu option: ignored,
    the grid is the parallelism; ``sc.compile`` refuses it for cuda)."""
    g, st = low.graph, plan.storage
    src = Source()
    src.extend(
        common.header_lines(
            program,
            low,
            model=model,
            backend="cuda (Numba-CUDA)",
            dtype=dtype,
            version=version,
            ir_hash=ir_hash,
        )
    )
    src()
    src("import math  # noqa: F401")
    src()
    src("import numpy as np  # noqa: F401")
    src(f"from numba import cuda, {dtype}  # noqa: F401")
    src()
    src("from symcurv.runtime import cuda_kernels as ck  # noqa: F401  (GEMM, reductions, copies)")
    src()
    src(f"DTYPE = np.{dtype}  # host and device arrays")
    if dtype == "float32":
        src("F = np.float32  # literals print as F(...): a bare 0.5 would make a formula float64")
    src(f"FTYPE = {dtype}  # the same as a Numba type (shared-memory arrays)")
    src("THREADS = ck.THREADS  # threads per block of maps (runtime/cuda_geometry.py)")
    src("_DEVICE = {}  # batch size -> device arrays in _launch's argument order, reused")
    src()
    maps = [k for k in low.kernels if k.kind == "map"]
    if any(k.epilogues for k in maps):
        src.extend(SEGMENT_SUM.splitlines())
        src()
    for k in maps:
        src()
        # The formulas of the CPU file, printed with math.exp/math.log; inlined into the
        # kernel's loop so the compiler sees one body.
        src("@cuda.jit(device=True, inline=True)")
        src.extend(common.emit_scalar_function(g, k, TARGETS[dtype]))
        src()
    kernel_params: dict[str, list[str]] = {}
    for k in low.kernels:
        src()
        src.extend(common.kernel_comment(g, k, st))
        threads, grid = launch(g, k)
        src(f"#   launch: {threads} threads per block; grid {grid}")
        if k.kind == "map":
            src("@cuda.jit(cache=True)")
            emit_map = _emit_map_rows if k.epilogues else _emit_map
            kernel_params[k.name] = emit_map(src, g, k, st)
            src()
        elif k.kind == "gather":
            src("@cuda.jit(cache=True)")
            kernel_params[k.name] = _emit_gather(src, g, k, st)
            src()
    src()
    sig = common.driver_signature(plan)
    src()
    with src.block(f"def _launch(B, {', '.join(sig)}):"):
        src('"""The kernels in order, over device arrays (named as in the CPU driver)."""')
        src.extend(common.view_lines(low, plan))

        def map_launch(k: Kernel) -> list[str]:
            args = ", ".join(kernel_params[k.name])
            batched, size = k.space
            if k.epilogues:
                rows = "B" if batched else "1"
                return [
                    f"{k.name}[ck.row_blocks({rows}, {size}), THREADS](B, ck.lanes({size}), {args})"
                ]
            n = ("B" if size == 1 else f"B * {size}") if batched else f"{size}"
            return [f"{k.name}[ck.blocks({n}), THREADS](B, {args})"]

        def gather_launch(k: Kernel) -> list[str]:
            size = k.how.size
            n = f"B * {size}" if g[k.writes[0]].batched else f"{size}"
            return [f"{k.name}[ck.blocks({n}), THREADS](B, {', '.join(kernel_params[k.name])})"]

        copy = lambda k: _copy_lines(g, k.nodes[0], st[k.writes[0]], st, low.views)  # noqa: E731
        calls = {
            "map": map_launch,
            "gather": gather_launch,
            "gemm": lambda k: _gemm_lines(g, k, st, low.views),
            "reduce": lambda k: [_reduce_line(g, k, st)],
            "fill": copy,
            "copy": copy,
        }
        src.extend(
            common.driver_calls(
                low, plan, calls, lambda nid, dst: _copy_lines(g, nid, dst, st, low.views)
            )
        )
    src()
    src()
    n_in = 1 + len(plan.vectors) + len(plan.leaves) + len(plan.extras)
    n_out = len(plan.out_flat) + len(plan.out_plain)
    inputs, outputs = sig[:n_in], sig[n_in : n_in + n_out]
    scratch = [f"(B, {s.size})" if s.batched else f"({s.size},)" for s in plan.slots]
    with src.block(f"def run({', '.join(sig)}):"):
        src(f'"""Run program {program!r} on the GPU, with the CPU driver\'s arguments.')
        src()
        src("Host inputs are copied to device arrays (allocated once per batch size and")
        src("reused), the kernels run there, and the results are copied back into out_*;")
        src("an argument that is a device array already (a State's cache, CP noise) is used")
        src('in place. The host scratch s* is not used: the scratch lives on the device."""')
        src(common.batch_size_line(plan))
        with src.block("ck.run_on_device("):
            src("_launch,")
            src("_DEVICE,")
            src("B,")
            src(f"inputs={_tuple(inputs)},")
            src(f"outputs={_tuple(outputs)},")
            src(f"scratch=[{', '.join(scratch)}],")
            src("dtype=DTYPE,")
        src(")")
    return src.text()
