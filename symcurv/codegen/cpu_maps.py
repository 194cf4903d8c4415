"""CPU map kernels: one ``@njit`` loop per fusion group of elementwise formulas.

A map calls its scalar function (``f_<kernel>``, printed once from sympy) on every element
of its space. Rows narrower than LLVM's vector body are taken as flat loops over blocks
of rows (``_emit_blocked_map``); a map with an epilogue (a per-case sum over features)
writes a row buffer and sums it after the element loop. See docs/kernel_tour.md §4.
"""

from __future__ import annotations

from contextlib import ExitStack

from symcurv.codegen import common
from symcurv.codegen.lower import Kernel
from symcurv.codegen.source import Source
from symcurv.ir.graph import Graph

# ---- map kernels ---------------------------------------------------------------------


EPILOGUE_BLOCK = 64  # cases per row buffer of a map with an epilogue (one np.empty each)
# Rows at least this long are summed by vm.row_sum (partial sums per vector lane: 2-6 ×
# faster from 32 elements on); shorter ones by a loop in the kernel, as the call cost
# cp_net's 10-wide loss map 9.5 µs at B = 1000 (docs/benchmarks.md, "Session 14").
ROW_SUM_MIN_SIZE = 32
VECTOR_BODY = 64  # elements: a flat loop this long runs in LLVM's vector body, not its tail


def _rows_per_block(size: int) -> int:
    """Rows per block of a blocked map: the fewest r whose r·size is at least VECTOR_BODY
    and a multiple of 16 (whole vector iterations of any width up to 16)."""
    r = -(-VECTOR_BODY // size)
    while (r * size) % 16 and r < VECTOR_BODY:
        r += 1
    return r


def _blockable(g: Graph, k: Kernel, reads: list[str], outs: list) -> bool:
    """A batched map over rows narrower than VECTOR_BODY whose results are full rows or
    per-case sums of them (epilogues) and whose operands are full rows, shared values or
    per-case scalars (the feature index j would not survive flattening)."""
    batched, size = k.space
    rows = [w for w in k.writes if w not in k.epilogues]
    return (
        batched
        and 1 < size < VECTOR_BODY
        and not common.uses_index(outs)
        and all(g[w].batched and g[w].size == size for w in rows)
        and all(g[e].batched and g[e].size == 1 for e in k.epilogues)
        and all(g[r].size in (size, 1) or not g[r].batched for r in reads)
        # per-case scalars alone (a broadcast) gain nothing from the repeat buffers
        and any(g[r].size == size for r in reads)
    )


def _emit_blocked_map(src: Source, g: Graph, k: Kernel, st: dict[str, str]) -> list[str]:
    """A narrow map (cp_net's 20-wide tanh rows) as flat loops over blocks of rows.

    With one loop per row of 20 elements, LLVM's vector body (up to 32 elements on AVX-512
    machines) never runs and every element goes through the loop's remainder: cp_net's
    tanh maps ran at 3 ns per element against 2 ns in a long loop. Here the rows are taken
    r at a time as one flat loop of r·size elements (the arrays are C-contiguous rows);
    a shared row operand (a bias) is tiled r times once per call, and a per-case scalar
    (a softmax row's logsumexp) is repeated along its row into a block buffer (cp_net's
    10-wide softmax map: 5 ns per element in row loops, 2 in blocks); an epilogue's
    summands go into a block buffer whose rows are summed after the loop (cp_net's 10-wide
    softmax R-op map of the hvp: 34 µs at B = 1000 in row loops, float32); without any of
    these, all B·size elements are one loop. One loop either way, so the formulas are
    compiled once (LLVM makes its vector body and remainder of it, as for a row loop)."""
    _, reads, outs = common.map_expressions(g, k)
    params = list(dict.fromkeys([st[r] for r in reads] + [st[w] for w in k.writes]))
    _, size = k.space
    rows_written = [st[w] for w in k.writes if w not in k.epilogues]
    flat = list(
        dict.fromkeys([st[x] for x in reads if g[x].batched and g[x].size == size] + rows_written)
    )
    tiled = list(dict.fromkeys(st[x] for x in reads if not g[x].batched and g[x].size == size))
    repeated = list(dict.fromkeys(st[x] for x in reads if g[x].batched and g[x].size == 1))
    sums = [st[e] for e in k.epilogues]
    # a block buffer per block of rows (written there: one per block, also under prange)
    r = max(_rows_per_block(size), EPILOGUE_BLOCK if repeated or sums else 1)
    n = r * size

    def line(at: str) -> str:  # the map's assignment at flat index ``at`` of the rows
        def element(x: str) -> str:
            if g[x].batched:
                return f"flat_{st[x]}[{at}]" if g[x].size == size else f"rep_{st[x]}[e]"
            return f"tile_{st[x]}[e]" if g[x].size == size else f"{st[x]}[0]"

        args = [element(x) for x in reads] + common.extra_arguments(outs)
        lhs = ", ".join([f"flat_{w}[{at}]" for w in rows_written] + [f"row_{e}[e]" for e in sums])
        return f"{lhs} = {common.scalar_function_name(k)}({', '.join(args)})"

    with src.block(f"def {k.name}(B, {', '.join(params)}):"):
        if tiled or repeated or sums:
            src(f"# rows in blocks of {r}: one flat loop of {n} elements per block, long")
            src(f"# enough to vectorise whole (a {size}-wide row is not); the last may be shorter")
        else:
            src(f"# the rows as one flat loop: long enough to vectorise (a {size}-wide row is not)")
        for t in tiled:
            src(f"tile_{t} = np.empty({n}, dtype={t}.dtype)")
            with src.block(f"for e in range({n}):"):
                src(f"tile_{t}[e] = {t}[e % {size}]")
        for a in flat:
            src(f"flat_{a} = {a}.reshape(-1)")
        if not (tiled or repeated or sums):  # every row operand is per case: one flat loop
            with src.block(f"for e in prange(B * {size}):"):
                src(line("e"))
            return params
        with src.block(f"for blk in prange((B + {r - 1}) // {r}):"):
            src(f"o = blk * {n}")
            _repeat_scalars(src, repeated, r, size)
            for e in sums:
                src(f"row_{e} = np.empty({n}, dtype={e}.dtype)")
            with src.block(f"for e in range(min({n}, B * {size} - o)):"):
                src(line("o + e"))
            _sum_rows(src, sums, r, size)
    return params


def _sum_rows(src: Source, sums: list[str], r: int, size: int) -> None:
    """After a block's loop: each epilogue's per-case total, the sum of its row in the
    block buffer ``row_x``, in order along the row as ``emit_map``'s row loop adds it."""
    if not sums:
        return
    src("# each case's sums over its row of the block buffers")
    with src.block(f"for c in range(min({r}, B - blk * {r})):"):
        for e in sums:
            _row_total(src, f"{e}[blk * {r} + c, 0]", f"row_{e}", size, f"c * {size}")


def _row_total(src: Source, dst: str, row: str, size: int, start: str | None = None) -> None:
    """``dst`` = the sum of ``row[start + j]`` for j < size (the whole ``row`` without a
    start): from ROW_SUM_MIN_SIZE elements by ``vm.row_sum``, a vectorised float64 sum
    (runtime/vecmath.py), else by a loop in order along the row."""
    if size >= ROW_SUM_MIN_SIZE:
        src(f"{dst} = vm.row_sum({row if start is None else f'{row}[{start}:{start} + {size}]'})")
        return
    src("acc = 0.0")
    with src.block(f"for j in range({size}):"):
        src(f"acc += {row}[{'j' if start is None else f'{start} + j'}]")
    src(f"{dst} = acc")


def _repeat_scalars(src: Source, repeated: list[str], r: int, size: int) -> None:
    """Inside a block of r rows: each per-case scalar x[i, 0] repeated along its row into
    ``rep_x`` (r·size elements), so that the flat loop reads every operand at [e]."""
    if not repeated:
        return
    for x in repeated:
        src(f"rep_{x} = np.empty({r * size}, dtype={x}.dtype)")
    with src.block(f"for c in range(min({r}, B - blk * {r})):"):
        with src.block(f"for j in range({size}):"):
            for x in repeated:
                src(f"rep_{x}[c * {size} + j] = {x}[blk * {r} + c, 0]")


def emit_map(src: Source, g: Graph, k: Kernel, st: dict[str, str]) -> list[str]:
    _, reads, outs = common.map_expressions(g, k)
    if _blockable(g, k, reads, outs):
        return _emit_blocked_map(src, g, k, st)
    params = list(dict.fromkeys([st[r] for r in reads] + [st[w] for w in k.writes]))
    batched, size = k.space
    call_args = [common.element(g[r], k.space, st[r]) for r in reads]
    call_args += common.extra_arguments(outs)
    written = [w for w in k.writes if w not in k.epilogues]
    targets = [common.element(g[w], k.space, st[w]) for w in written]
    # An epilogue (a sum over features, e.g. a loss's per-case total) is summed from a row
    # buffer after the element loop, not accumulated inside it: an fp accumulator in the
    # loop forbids vectorising the formulas. A long row's sum is ``vm.row_sum``: float64
    # partial sums per vector lane (a single accumulator is a chain of dependent adds).
    rows = [f"row{e}" for e, _ in enumerate(k.epilogues)]
    lhs = targets + [f"{r}[j]" for r in rows]
    fcall = f"{common.scalar_function_name(k)}({', '.join(call_args)})"
    with src.block(f"def {k.name}(B, {', '.join(params)}):"), ExitStack() as loops:
        if batched and rows:  # the row buffers once per block of cases, not per case
            c = EPILOGUE_BLOCK
            src(f"# cases in blocks of {c}: one row buffer per block (an allocation per case")
            src("# costs as much as the arithmetic of a narrow row)")
            loops.enter_context(src.block(f"for blk in prange((B + {c - 1}) // {c}):"))
        elif batched:
            loops.enter_context(src.block("for i in prange(B):"))
        for r, e in zip(rows, k.epilogues):  # in the program's dtype: float32 stays float32
            src(f"{r} = np.empty({size}, dtype={st[e]}.dtype)")
        if batched and rows:
            loops.enter_context(src.block(f"for i in range(blk * {c}, min(B, blk * {c} + {c})):"))
        with src.block(f"for j in range({size}):"):
            src(f"{', '.join(lhs)} = {fcall}")
        for e, r in zip(k.epilogues, rows):
            _row_total(src, common.element(g[e], (batched, 1), st[e]), r, size)
    return params
