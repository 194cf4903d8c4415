"""Register tiles in explicit vectors: the products a·b and aᵀ·b whose output is wide and
whose sum is short or whose operand a is narrow (cp_net's G W0 and Gᵀ X).

The backward products of a narrow layer are G W (B×20·20×256: the input gradient) and Gᵀ X
(20×B·B×256: the weight gradient). OpenBLAS runs them 18-20 % slower than XLA's dot
(docs/benchmarks.md, "Session 12: quiet machine"), and LLVM does not vectorize a scalar
Numba loop for them well: a loop along the output row keeps its sums in memory, one load
and one store per multiply-add. Here a tile of R rows × V vectors of the output (4 × 4
zmm registers of 8 doubles on AVX-512: 4 × 32 numbers) stays in registers for the whole
sum, written in LLVM IR by a Numba intrinsic: per step p of the sum, V vector loads of
b's row p, R scalars of a broadcast, R·V fused multiply-adds (``llvm.fma``, so NaN and
±inf propagate exactly as in the BLAS: codegen/guards.py relies on it). Measured on the
2-core Zen 4 VM, one thread, B = 1000 (docs/benchmarks.md, "Session 13"): G W0 189
against OpenBLAS's 241 µs and XLA's 206; Gᵀ X 189 against 246 and 204 (float64).

One tile routine serves both products through its strides: step p of the sum reads
``a[a_off + r·a_row + p·a_step]`` and the vectors ``b[b_off + p·b_step + ...]``.
- out = a·b (a M×K, b K×N): a tile of rows i..i+R of out, a_row = K, a_step = 1.
- out = gᵀ·b (g cases×M, b cases×N): rows j..j+R of out, a_row = 1, a_step = M.
Columns left over from the tiles go by one-vector tiles, then by plain loops, as do the
rows left over.
"""

from __future__ import annotations

import llvmlite.binding as llvm
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

# Vector width of this machine's widest registers: 32 of them on AVX-512 (4 × 4 tiles
# leave room for the 4 + 4 operands), 16 on AVX2 (4 × 2 tiles).
VECTOR_BYTES = 64 if "+avx512f" in llvm.get_host_cpu_features().flatten() else 32
TILE_ROWS = 4
TILE_VECTORS = 4 if VECTOR_BYTES == 64 else 2


def _tile_intrinsic(rows: int, vectors: int, accumulate: bool):
    """A Numba intrinsic ``tile(a, a_off, a_row, a_step, b, b_off, b_step, c, c_off,
    c_row, k)``: for r < rows and the vectors·L numbers from column 0 of c's tile,
    c[c_off + r·c_row + col] (+)= Σ_{p<k} a[a_off + r·a_row + p·a_step] · b[b_off + p·b_step
    + col] (flat element offsets into each array's data; L numbers per vector; ``+=``
    where ``accumulate``)."""

    @intrinsic
    def tile(typingctx, a, a_off, a_row, a_step, b, b_off, b_step, c, c_off, c_row, k):
        i = types.intp  # every offset, stride and length is cast to it at the call
        sig = types.void(a, i, i, i, b, i, i, c, i, i, i)

        def codegen(context, builder, signature, args):
            _, _, a_row_, a_step_, _, _, b_step_, _, _, c_row_, k_ = args
            a0, b0, c0 = (_element_pointer(context, builder, signature, args, j) for j in (0, 4, 7))
            size = signature.args[7].dtype.bitwidth // 8
            lanes = VECTOR_BYTES // size
            vec = ir.VectorType(context.get_data_type(signature.args[7].dtype), lanes)
            fma = cgutils.get_or_insert_function(
                builder.module,
                ir.FunctionType(vec, [vec, vec, vec]),
                f"llvm.fma.v{lanes}{'f64' if size == 8 else 'f32'}",
            )

            def at(ptr, n):  # &ptr[n]
                return builder.gep(ptr, [n if isinstance(n, ir.Value) else _i64(n)])

            def vector_at(ptr, n):  # &ptr[n] as a pointer to a vector of `lanes` numbers
                return builder.bitcast(at(ptr, n), vec.as_pointer())

            c_vectors = [
                [vector_at(at(c0, builder.mul(_i64(r), c_row_)), v * lanes) for v in range(vectors)]
                for r in range(rows)
            ]
            # the sums live in allocas that LLVM promotes to registers
            start = [
                [
                    builder.load(cv, align=size) if accumulate else ir.Constant(vec, None)
                    for cv in row
                ]
                for row in c_vectors
            ]
            sums = [[cgutils.alloca_once_value(builder, s0) for s0 in row] for row in start]
            with cgutils.for_range(builder, k_) as loop:
                ap = at(a0, builder.mul(loop.index, a_step_))
                bp = at(b0, builder.mul(loop.index, b_step_))
                bv = [builder.load(vector_at(bp, v * lanes), align=size) for v in range(vectors)]
                for r in range(rows):
                    ar = builder.load(at(ap, builder.mul(_i64(r), a_row_)))
                    av = _broadcast(builder, ar, vec, lanes)
                    for v in range(vectors):
                        acc = sums[r][v]
                        builder.store(builder.call(fma, [av, bv[v], builder.load(acc)]), acc)
            for row, cv_row in zip(sums, c_vectors):
                for acc, cv in zip(row, cv_row):
                    builder.store(builder.load(acc), cv, align=size)
            return context.get_dummy_value()

        return sig, codegen

    return tile


def _element_pointer(context, builder, signature, args, j):
    """&array[offset] for the array argument j, whose flat element offset is argument j + 1."""
    data = context.make_array(signature.args[j])(context, builder, args[j]).data
    return builder.gep(data, [args[j + 1]])


def _i64(n: int) -> ir.Constant:
    return ir.Constant(ir.IntType(64), n)


def _broadcast(builder, scalar, vec, lanes):
    """The vector (scalar, scalar, ...): insert at lane 0, shuffle lane 0 everywhere."""
    undef = ir.Constant(vec, ir.Undefined)
    first = builder.insert_element(undef, scalar, ir.Constant(ir.IntType(32), 0))
    zeros = ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes)
    return builder.shuffle_vector(first, undef, zeros)


# (rows, vectors): the main tiles, then one vector wide for the columns left over, then
# one row for the rows left over; stored (a·b, one pass) or added (gᵀ·b, case blocks)
_tile = _tile_intrinsic(TILE_ROWS, TILE_VECTORS, accumulate=False)
_tile_1 = _tile_intrinsic(TILE_ROWS, 1, accumulate=False)
_row = _tile_intrinsic(1, 1, accumulate=False)
_tile_add = _tile_intrinsic(TILE_ROWS, TILE_VECTORS, accumulate=True)
_tile_1_add = _tile_intrinsic(TILE_ROWS, 1, accumulate=True)
_row_add = _tile_intrinsic(1, 1, accumulate=True)

# Cases per pass of gᵀ·b: a panel of b (this many rows × one tile's columns, 128 KB in
# float64 on AVX-512) stays in the 1 MB L2 cache while every row tile of the output reads it.
CASE_BLOCK = 512


@njit(cache=True, nogil=True)
def tiled_nn(a, b, out):
    """out = a · b for C-contiguous a (M × K), b (K × N), out (M × N), N a multiple of the
    vector width: each row tile of a is read once (its sums are short), b stays in cache."""
    m, k = a.shape
    n = b.shape[1]
    lanes = VECTOR_BYTES // out.itemsize
    wide = TILE_VECTORS * lanes
    n_wide = n - n % wide
    for i in range(0, m - m % TILE_ROWS, TILE_ROWS):
        for q in range(0, n_wide, wide):
            _tile(a, i * k, k, 1, b, q, n, out, i * n + q, n, k)
        for q in range(n_wide, n, lanes):
            _tile_1(a, i * k, k, 1, b, q, n, out, i * n + q, n, k)
    for i in range(m - m % TILE_ROWS, m):
        for q in range(0, n, lanes):
            _row(a, i * k, k, 1, b, q, n, out, i * n + q, n, k)


@njit(cache=True, nogil=True)
def tiled_tn(g, b, out):
    """out = gᵀ · b for C-contiguous g (cases × M), b (cases × N), out (M × N), N a
    multiple of the vector width: a sum over the cases (a weight gradient Gᵀ X), in blocks
    of ``CASE_BLOCK`` cases added into out."""
    cases, m = g.shape
    n = b.shape[1]
    lanes = VECTOR_BYTES // out.itemsize
    wide = TILE_VECTORS * lanes
    n_wide, m_tiles = n - n % wide, m - m % TILE_ROWS
    out[:, :] = 0
    for c0 in range(0, cases, CASE_BLOCK):
        kc = min(CASE_BLOCK, cases - c0)
        for q in range(0, n_wide, wide):
            for j in range(0, m_tiles, TILE_ROWS):
                _tile_add(g, c0 * m + j, 1, m, b, c0 * n + q, n, out, j * n + q, n, kc)
        for q in range(n_wide, n, lanes):
            for j in range(0, m_tiles, TILE_ROWS):
                _tile_1_add(g, c0 * m + j, 1, m, b, c0 * n + q, n, out, j * n + q, n, kc)
        for j in range(m_tiles, m):
            for q in range(0, n, lanes):
                _row_add(g, c0 * m + j, 1, m, b, c0 * n + q, n, out, j * n + q, n, kc)
