"""Narrow products a·bᵀ as register-blocked dot products: out[i, j] = Σ_k a[i, k] b[j, k].

The forward product of a dense layer, X Wᵀ with X the B × K cases and W the N × K weights,
is a narrow product when the layer is narrow (N of a few tens): cp_net's 1000×256·256×20.
A BLAS packs both operands into panels and runs a micro-kernel tuned for wide, square-ish
products; with N = 20 that machinery is a large share of the work, and OpenBLAS runs the
product 12 % slower than XLA's dot (docs/benchmarks.md, "Session 12: quiet machine").

Here every output is a dot product of two rows that are already contiguous in memory (a
row of X, a row of W), so nothing is packed: a block of 4 × 4 outputs keeps 16 vectors of
partial sums in registers while one pass along k reads 4 rows of each operand (8 vector
loads per 16 fused multiply-adds). Measured on the 2-core Zen 4 VM, one thread
(docs/benchmarks.md, "Session 13"): 1000×256·256×20 in 207 against OpenBLAS's 280 µs
(float64) and 112 against 138 (float32), with the pass left to LLVM's vectorizer; the
columns and rows left over from the blocks still are (``reassoc`` lets it split each sum
into vector lanes, ``contract`` fuses the multiply-adds).

Each of a block's 16 dot products ends as a vector of partial sums, one per lane, to be
added across the lanes. LLVM's reduction of one vector takes log2(lanes) shuffle-and-add
steps for one number; the 4 × 4 blocks are therefore written in LLVM IR (``_dots``,
a Numba intrinsic like gemm_tiles.py's tiles), whose 16 vectors are added across lanes
together: each step adds the halves of two vectors into one (``_halve``), so 16 vectors
of 16 lanes become one vector of the 16 sums in 15 steps of two shuffles and an add,
stored as four rows of 4. A sum whose length is not a whole number of vectors ends in one
masked step (``llvm.masked.load``: the lanes past the row's end read as zeros, never
touched). That fixed cost per output was a sixth of cp_net's float32 X W0ᵀ (session 16,
medians of 200 calls: 113 → 95 µs in float32, 200 → 186 in float64).

No ``nnan``/``ninf`` fast-math flags: a non-finite input must give a non-finite product,
which codegen/guards.py relies on (inf × 0 is NaN here as in the BLAS; ``llvm.fma``
propagates NaN and ±inf; a masked-off lane adds 0 · 0 to its partial sum, which changes
nothing).
"""

from __future__ import annotations

from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from symcurv.runtime.gemm_tiles import _at, _element_pointer, _i64, _vector_access, _vector_kit

_FLAGS = {"reassoc", "contract"}
_I32 = ir.IntType(32)
BLOCK = 4  # a block of BLOCK × BLOCK dot products: 16 sums ≥ the lanes of any vector


def _lane_vector(values: list[int]) -> ir.Constant:
    return ir.Constant(ir.VectorType(_I32, len(values)), values)


def _halve(builder, x, y, seg: int, lanes: int):
    """One step of adding many vectors across their lanes at once: x and y each hold
    lanes/seg partial sums of ``seg`` lanes each; the result holds all of them, x's first,
    in half as many lanes each (every segment's two halves added)."""
    lo, hi = [], []
    for base in (0, lanes):  # x's lanes, then y's, in shufflevector's numbering
        for s in range(base, base + lanes, seg):
            lo += range(s, s + seg // 2)
            hi += range(s + seg // 2, s + seg)
    return builder.fadd(
        builder.shuffle_vector(x, y, _lane_vector(lo)),
        builder.shuffle_vector(x, y, _lane_vector(hi)),
    )


@intrinsic
def _dots(typingctx, a, a_off, a_row, b, b_off, b_row, c, c_off, c_row, k):
    """``_dots(a, a_off, a_row, b, b_off, b_row, c, c_off, c_row, k)``: for r, q < BLOCK,
    c[c_off + r·c_row + q] = Σ_{p<k} a[a_off + r·a_row + p] · b[b_off + q·b_row + p]
    (flat element offsets; each row of a and b contiguous along p)."""
    i = types.intp  # every offset, stride and length is cast to it at the call
    sig = types.void(a, i, i, b, i, i, c, i, i, i)

    def codegen(context, builder, signature, args):
        a_row_, b_row_, c_row_, k_ = args[2], args[5], args[8], args[9]
        a0, b0, c0 = (_element_pointer(context, builder, signature, args, j) for j in (0, 3, 6))
        vec, lanes, size, fma = _vector_kit(context, builder, signature.args[6].dtype)

        def at(ptr, n):  # &ptr[n]
            return _at(builder, ptr, n)

        a_rows = [at(a0, builder.mul(_i64(r), a_row_)) for r in range(BLOCK)]
        b_rows = [at(b0, builder.mul(_i64(q), b_row_)) for q in range(BLOCK)]
        zero = ir.Constant(vec, None)
        # the sums live in allocas that LLVM promotes to registers
        sums = [cgutils.alloca_once_value(builder, zero) for _ in range(BLOCK * BLOCK)]

        def step(load):  # one vector of the sum: 8 loads, 16 fused multiply-adds
            av, bv = [load(p) for p in a_rows], [load(p) for p in b_rows]
            for r in range(BLOCK):
                for q in range(BLOCK):
                    acc = sums[r * BLOCK + q]
                    builder.store(builder.call(fma, [av[r], bv[q], builder.load(acc)]), acc)

        def vector_at(ptr, n):
            return builder.bitcast(at(ptr, n), vec.as_pointer())

        whole = builder.sdiv(k_, _i64(lanes))
        with cgutils.for_range(builder, whole) as loop:
            off = builder.mul(loop.index, _i64(lanes))
            step(lambda p: builder.load(vector_at(p, off), align=size))
        off = builder.mul(whole, _i64(lanes))
        left = builder.sub(k_, off)
        with builder.if_then(builder.icmp_signed(">", left, _i64(0))):
            masked_load = _vector_access(builder, vec, lanes, size, left)[0]  # first `left` lanes
            step(lambda p: masked_load(vector_at(p, off), True))
        # across the lanes: 16 vectors -> 16 / lanes vectors of one sum per lane, in order
        vectors, seg = [builder.load(s) for s in sums], lanes
        while seg > 1:
            vectors = [
                _halve(builder, x, y, seg, lanes) for x, y in zip(vectors[::2], vectors[1::2])
            ]
            seg //= 2
        row_type = ir.VectorType(vec.element, BLOCK)
        for r in range(BLOCK):
            v, start = divmod(r * BLOCK, lanes)
            lanes_of_row = _lane_vector(list(range(start, start + BLOCK)))
            row = builder.shuffle_vector(vectors[v], vectors[v], lanes_of_row)
            dst = builder.bitcast(at(c0, builder.mul(_i64(r), c_row_)), row_type.as_pointer())
            builder.store(row, dst, align=size)
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True, nogil=True, fastmath=_FLAGS)
def narrow_nt(a, bt, out):
    """out = a · btᵀ for C-contiguous a (M × K), bt (N × K) and out (M × N): blocks of
    4 × 4 dot products, then the last columns 4 rows at a time, then the last rows."""
    m, n = out.shape
    k = a.shape[1]
    m4, n4 = m - m % 4, n - n % 4
    for i in range(0, m4, 4):
        for j in range(0, n4, 4):
            _dots(a, i * k, k, bt, j * k, k, out, i * n + j, n, k)
        for j in range(n4, n):
            _dots_4x1(a, bt, out, i, j)
    for i in range(m4, m):
        for j in range(n):
            _dots_1x1(a, bt, out, i, j)


@njit(inline="always", fastmath=_FLAGS)
def _dots_4x1(a, bt, out, i, j):
    """out[i:i+4, j] = a[i:i+4] · bt[j]: a column left over from the 4-wide blocks."""
    a0, a1, a2, a3, b = a[i], a[i + 1], a[i + 2], a[i + 3], bt[j]
    z = out.dtype.type(0)
    s0 = s1 = s2 = s3 = z
    for k in range(a.shape[1]):
        y = b[k]
        s0 += a0[k] * y
        s1 += a1[k] * y
        s2 += a2[k] * y
        s3 += a3[k] * y
    out[i, j], out[i + 1, j], out[i + 2, j], out[i + 3, j] = s0, s1, s2, s3


@njit(inline="always", fastmath=_FLAGS)
def _dots_1x1(a, bt, out, i, j):
    """out[i, j] = a[i] · bt[j]: a row left over from the 4-row blocks."""
    x, y = a[i], bt[j]
    s = out.dtype.type(0)
    for k in range(a.shape[1]):
        s += x[k] * y[k]
    out[i, j] = s
