"""Register tiles in explicit vectors: the products a·b, a·wᵀ and gᵀ·b of a dense layer
(G W, H Wᵀ, Gᵀ H), from cp_net's narrow layers to the autoencoder's 1000-wide ones.

The backward products of a narrow layer are G W (B×20·20×256: the input gradient) and Gᵀ X
(20×B·B×256: the weight gradient). OpenBLAS runs them 18-20 % slower than XLA's dot
(docs/benchmarks.md, "Session 12: quiet machine"), and LLVM does not vectorize a scalar
Numba loop for them well: a loop along the output row keeps its sums in memory, one load
and one store per multiply-add. Here a tile of R rows × V vectors of the output (6 × 4
zmm registers of 8 doubles on AVX-512: 6 × 32 numbers) stays in registers for the whole
sum, written in LLVM IR by a Numba intrinsic: per step p of the sum, V vector loads of
b's row p, R scalars of a broadcast, R·V fused multiply-adds (``llvm.fma``, so NaN and
±inf propagate exactly as in the BLAS: codegen/guards.py relies on it). Measured on the
2-core Zen 4 VM, one thread, B = 1000 (docs/benchmarks.md, "Session 13"): G W0 189
against OpenBLAS's 241 µs and XLA's 206; Gᵀ X 189 against 246 and 204 (float64). On the
autoencoder's float32 layers (session 14) the three kernels run at 0.97-1.02 × XLA's
time where OpenBLAS takes 1.02-1.09 ×. On the Zen 5 VM of session 17, whose FMA pipes
are twice as wide, 4-row tiles starved on b's loads; 6-row tiles (``TALL_MIN_SUM_BYTES_NN``)
run the autoencoder's G W and Gᵀ H at 0.86-1.02 × XLA's time, where OpenBLAS, which has no
kernel for that core, takes 1.7-1.9 ×.

One tile routine serves every product through its strides: step p of the sum reads
``a[a_off + r·a_row + p·a_step]`` and the vectors ``b[b_off + p·b_step + ...]``.
- out = a·b (a M×K, b K×N): a tile of rows i..i+R of out, a_row = K, a_step = 1.
- out = a·wᵀ (w N×K): the same on a panel of wᵀ packed per column tile (the vectors must
  be rows of wᵀ, which w holds as columns).
- out = gᵀ·b (g cases×M, b cases×N): rows j..j+R of out, a_row = 1, a_step = M. Step p
  reads a new cache line of g, a row of g away from the last, so these tiles prefetch g
  a few cases ahead, and the first block of cases stores its sums (no zeroing pass).
Columns left over from the whole tiles go by a tile of as many vectors as hold them, the
last masked (1000 = 15 · 64 + 40: 3 vectors, the last of 8 numbers; cp_net's 20-wide
outputs: 2, the last of 4): its lanes past the columns are neither read nor written,
which made 1000 × 20 · 20 × 20 take 0.4-0.6 × the time of session 16's zero-padded copies
and brought every narrow output of cp_net to the tiles (session 17). Rows left over go
by 4-, 2- and 1-row tiles (``_rows``). gᵀ·b with a tile's width of rows sums its
left-over columns as their transpose instead, in whole tiles.
"""

from __future__ import annotations

import llvmlite.binding as llvm
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

# Vector width of this machine's widest registers: 32 of them on AVX-512 (6 × 4 tiles
# leave room for b's 4 vectors and a broadcast), 16 on AVX2 (6 × 2 tiles: 12 + 2 + 1).
VECTOR_BYTES = 64 if "+avx512f" in llvm.get_host_cpu_features().flatten() else 32
TILE_ROWS = 6
TILE_VECTORS = 4 if VECTOR_BYTES == 64 else 2


# The tiles' shapes: rows, and width 0 (TILE_VECTORS whole vectors) or 1 to TILE_VECTORS
# vectors of which the last is masked (the columns left over from the whole tiles).
TILE_ROW_CHOICES = (TILE_ROWS, 4, 2, 1)
MASKED_WIDTHS = tuple(range(1, TILE_VECTORS + 1))


def _tile_intrinsic(prefetch: int = 0):
    """A Numba intrinsic ``tile(a, a_off, a_row, a_step, b, b_off, b_step, c, c_off, c_row,
    k, add, valid, rows, width)``: for r < rows and the V·L numbers from column 0 of c's
    tile (L per vector; V = TILE_VECTORS where width is 0, else width), c[c_off + r·c_row
    + col] (+)= Σ_{p<k} a[a_off + r·a_row + p·a_step] · b[b_off + p·b_step + col] (flat
    element offsets into each array's data; ``+=`` where ``add``, a constant False that
    LLVM folds away in a·b). Where width > 0 only the first ``valid`` lanes of the last
    vector are columns (1 ≤ valid ≤ L): its loads of b and c and its store are masked
    (``llvm.masked.load/store``: the lanes past them are neither read nor written, so a
    tile may end where the arrays do). (rows, width) picks one of the shapes compiled in
    (TILE_ROW_CHOICES × (0, *MASKED_WIDTHS)) by a switch. With ``prefetch`` = d > 0, step p
    also asks the cache for a's numbers of step p + d (``llvm.prefetch``: a hint, which
    never faults, so d steps past the end are harmless): for gᵀ·b, whose a steps by a
    whole row of g."""

    @intrinsic
    def tile(
        typingctx,
        a,
        a_off,
        a_row,
        a_step,
        b,
        b_off,
        b_step,
        c,
        c_off,
        c_row,
        k,
        add,
        valid,
        rows,
        width,
    ):
        i = types.intp  # every offset, stride and length is cast to it at the call
        sig = types.void(a, i, i, i, b, i, i, c, i, i, i, types.boolean, i, i, i)

        def codegen(context, builder, signature, args):
            rows_, width_ = args[13], args[14]
            end = builder.append_basic_block("tile.end")
            switch = builder.switch(builder.add(builder.mul(rows_, _i64(8)), width_), end)
            for rows in TILE_ROW_CHOICES:
                for width in (0, *MASKED_WIDTHS):
                    case = builder.append_basic_block(f"tile.{rows}x{width}")
                    switch.add_case(_i64(8 * rows + width), case)
                    builder.position_at_end(case)
                    _tile_body(context, builder, signature, args, rows, width, prefetch)
                    builder.branch(end)
            builder.position_at_end(end)
            return context.get_dummy_value()

        return sig, codegen

    return tile


def _tile_body(context, builder, signature, args, rows, width, prefetch):
    """The IR of one tile shape (``_tile_intrinsic``): rows × V vectors of sums in
    registers, zeros or c's numbers, k steps of V loads of b, ``rows`` broadcasts of a and
    rows·V fused multiply-adds, then the sums stored."""
    _, _, a_row_, a_step_, _, _, b_step_, _, _, c_row_, k_, add_, valid_ = args[:13]
    vectors = width or TILE_VECTORS
    a0, b0, c0 = (_element_pointer(context, builder, signature, args, j) for j in (0, 4, 7))
    vec, lanes, size, fma = _vector_kit(context, builder, signature.args[7].dtype)
    load, store = _vector_access(builder, vec, lanes, size, valid_ if width else None)

    def at(ptr, n):  # &ptr[n]
        return _at(builder, ptr, n)

    def vector_at(ptr, n):  # &ptr[n] as a pointer to a vector of `lanes` numbers
        return builder.bitcast(at(ptr, n), vec.as_pointer())

    last = vectors - 1
    c_vectors = [
        [vector_at(at(c0, builder.mul(_i64(r), c_row_)), v * lanes) for v in range(vectors)]
        for r in range(rows)
    ]
    # the sums live in allocas that LLVM promotes to registers: zeros, or c's tile
    sums = [
        [cgutils.alloca_once_value(builder, ir.Constant(vec, None)) for _ in row]
        for row in c_vectors
    ]
    with builder.if_then(add_):
        for row, cv_row in zip(sums, c_vectors):
            for v, (acc, cv) in enumerate(zip(row, cv_row)):
                builder.store(load(cv, v == last), acc)
    ask_cache = _prefetcher(builder) if prefetch else None
    with cgutils.for_range(builder, k_) as loop:
        ap = at(a0, builder.mul(loop.index, a_step_))
        bp = at(b0, builder.mul(loop.index, b_step_))
        if ask_cache:
            ask_cache(at(ap, builder.mul(_i64(prefetch), a_step_)))
        bv = [load(vector_at(bp, v * lanes), v == last) for v in range(vectors)]
        for r in range(rows):
            ar = builder.load(at(ap, builder.mul(_i64(r), a_row_)))
            av = _broadcast(builder, ar, vec, lanes)
            for v in range(vectors):
                acc = sums[r][v]
                builder.store(builder.call(fma, [av, bv[v], builder.load(acc)]), acc)
    for row, cv_row in zip(sums, c_vectors):
        for v, (acc, cv) in enumerate(zip(row, cv_row)):
            store(builder.load(acc), cv, v == last)


def _vector_access(builder, vec, lanes, size, valid):
    """(load(ptr, last), store(value, ptr, last)) of one vector: plain, or where ``valid``
    (an LLVM i64) is given and ``last`` holds, masked to its first ``valid`` lanes (the
    others load as zeros and are not stored)."""
    if valid is None:
        return (
            lambda ptr, last: builder.load(ptr, align=size),
            lambda value, ptr, last: builder.store(value, ptr, align=size),
        )
    number = "f64" if size == 8 else "f32"
    mask_type, i32 = ir.VectorType(ir.IntType(1), lanes), ir.IntType(32)
    masked_load = cgutils.get_or_insert_function(
        builder.module,
        ir.FunctionType(vec, [vec.as_pointer(), i32, mask_type, vec]),
        f"llvm.masked.load.v{lanes}{number}.p0",
    )
    masked_store = cgutils.get_or_insert_function(
        builder.module,
        ir.FunctionType(ir.VoidType(), [vec, vec.as_pointer(), i32, mask_type]),
        f"llvm.masked.store.v{lanes}{number}.p0",
    )
    lane_ids = ir.Constant(ir.VectorType(ir.IntType(64), lanes), list(range(lanes)))
    bound = _broadcast(builder, valid, ir.VectorType(ir.IntType(64), lanes), lanes)
    mask, align, zero = builder.icmp_signed("<", lane_ids, bound), ir.Constant(i32, size), None

    def load(ptr, last):
        if not last:
            return builder.load(ptr, align=size)
        return builder.call(masked_load, [ptr, align, mask, ir.Constant(vec, zero)])

    def store(value, ptr, last):
        if not last:
            return builder.store(value, ptr, align=size)
        return builder.call(masked_store, [value, ptr, align, mask])

    return load, store


def _element_pointer(context, builder, signature, args, j):
    """&array[offset] for the array argument j, whose flat element offset is argument j + 1."""
    data = context.make_array(signature.args[j])(context, builder, args[j]).data
    return builder.gep(data, [args[j + 1]])


def _prefetcher(builder):
    """A function that emits ``llvm.prefetch(ptr)`` for a read kept in every cache level
    (prefetcht0 on x86)."""
    i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
    fn = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]), "llvm.prefetch.p0i8"
    )
    read, keep_everywhere, data = (ir.Constant(i32, n) for n in (0, 3, 1))
    return lambda ptr: builder.call(fn, [builder.bitcast(ptr, i8p), read, keep_everywhere, data])


def _i64(n: int) -> ir.Constant:
    return ir.Constant(ir.IntType(64), n)


def _at(builder, ptr, n):
    """&ptr[n] for an LLVM value or a Python int n."""
    return builder.gep(ptr, [n if isinstance(n, ir.Value) else _i64(n)])


def _vector_kit(context, builder, number):
    """(the vector type, its lanes, the bytes of one number, ``llvm.fma`` on that vector)
    for the Numba float type ``number`` at this machine's VECTOR_BYTES."""
    size = number.bitwidth // 8
    lanes = VECTOR_BYTES // size
    vec = ir.VectorType(context.get_data_type(number), lanes)
    fma = cgutils.get_or_insert_function(
        builder.module,
        ir.FunctionType(vec, [vec, vec, vec]),
        f"llvm.fma.v{lanes}{'f64' if size == 8 else 'f32'}",
    )
    return vec, lanes, size, fma


def _broadcast(builder, scalar, vec, lanes):
    """The vector (scalar, scalar, ...): insert at lane 0, shuffle lane 0 everywhere."""
    undef = ir.Constant(vec, ir.Undefined)
    first = builder.insert_element(undef, scalar, ir.Constant(ir.IntType(32), 0))
    zeros = ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes)
    return builder.shuffle_vector(first, undef, zeros)


_tile = _tile_intrinsic()
# gᵀ·b's tiles read g down a column, a cache line per step a whole row of g apart
# (4000 bytes for a 1000-wide float32 layer), which the hardware's prefetchers follow
# late: asking for the line PREFETCH_STEPS cases ahead made the 1000-wide weight
# gradients 1-4.5 % faster with their operands out of cache, as in a program (medians of
# 25 paired calls, both dtypes; the narrow 20 × 256 and 250-row ones unchanged); 24 to
# 64 steps all did as well.
PREFETCH_STEPS = 32
_tile_far = _tile_intrinsic(PREFETCH_STEPS)


@njit(cache=True, nogil=True)
def _rows(a, a_off, a_row, a_step, b, b_off, b_step, c, c_off, c_row, k, add, m, cols, tall, far):
    """c[c_off + i·c_row + col] (+)= Σ_{p<k} a[a_off + i·a_row + p·a_step] · b[b_off +
    p·b_step + col] for every row i < m and col < cols (at most one whole tile): a whole
    tile's vectors, or as many as hold the columns with the last masked. TILE_ROWS rows
    at a time where ``tall`` (a long sum), else 4; the rows left over 4, 2 and 1 at a
    time (a one-row tile keeps one chain of fused multiply-adds in flight per vector,
    waiting on each: the leftovers in as few tiles as possible). ``far``: the tiles that
    prefetch a (gᵀ·b, whose a steps by a whole row of g)."""
    lanes = VECTOR_BYTES // c.itemsize
    width = 0 if cols == TILE_VECTORS * lanes else (cols + lanes - 1) // lanes
    valid = cols - (width - 1) * lanes if width else lanes
    i = 0
    while i < m:
        left, ai, ci = m - i, a_off + i * a_row, c_off + i * c_row
        rows = 1
        if tall and left >= TILE_ROWS:
            rows = TILE_ROWS
        elif left >= 4:
            rows = 4
        elif left >= 2:
            rows = 2
        if far:
            _tile_far(
                a, ai, a_row, a_step, b, b_off, b_step, c, ci, c_row, k, add, valid, rows, width
            )
        else:
            _tile(a, ai, a_row, a_step, b, b_off, b_step, c, ci, c_row, k, add, valid, rows, width)
        i += rows


# Sums at least this long (in bytes of one row of a: 32 float64 or 64 float32 steps) run
# in TILE_ROWS-row tiles, shorter ones in 4-row tiles. Six rows of 4 vectors (24 of the
# 32 registers) read b's vectors once per 24 multiply-adds instead of 16, which the
# 2-core Zen 5 VM's two full-width FMA pipes need: its L2 could not feed 4-row tiles
# (docs/benchmarks.md, "Session 17": a·b and gᵀ·b on the autoencoder's layers 0.68-0.83 ×
# the time). Over short sums the wider tile lost (1000 × K · K × 256, float64 K = 16 1.23 ×,
# float32 K = 32 1.13 ×), and a·wᵀ, whose packed panel already streams, gains only over
# long sums (0.92-0.97 × at K ≥ 250, 1.02-1.06 × at K ≤ 64 in float64).
TALL_MIN_SUM_BYTES_NN = 256
TALL_MIN_SUM_BYTES_NT = 512

# Cases per pass of gᵀ·b: a panel of b (this many rows × one tile's columns, 128 KB in
# float64 on AVX-512) stays in the 1 MB L2 cache while every row tile of the output reads it.
CASE_BLOCK = 512


@njit(cache=True, nogil=True)
def tiled_nn(a, b, out):
    """out = a · b for C-contiguous a (M × K), b (K × N), out (M × N), column tile by
    column tile: b's K × (one tile) panel stays in cache while every row tile of a reads
    it (a's rows stream in order, which the prefetcher follows); the last tile, if
    partial, through masked vectors."""
    m, k = a.shape
    n = b.shape[1]
    wide = TILE_VECTORS * VECTOR_BYTES // out.itemsize
    tall = k * out.itemsize >= TALL_MIN_SUM_BYTES_NN
    for q in range(0, n, wide):
        _rows(a, 0, k, 1, b, q, n, out, q, n, k, False, m, min(wide, n - q), tall, False)


@njit(cache=True, nogil=True)
def _fill(x, j0, j1):
    """x[:, j0:j1] = 0."""
    for r in range(x.shape[0]):
        for c in range(j0, j1):
            x[r, c] = 0


@njit(cache=True, nogil=True)
def tiled_tn(g, b, out):
    """out = gᵀ · b for C-contiguous g (cases × M), b (cases × N), out (M × N): a sum over
    the cases (a weight gradient Gᵀ X), in blocks of ``CASE_BLOCK`` cases added into out.
    The columns left over from the whole tiles (N = 784 = 12 · 64 + 16) go as their
    transpose where out has a tile's width of rows (``_tn_left_transposed``), else by a
    tile of masked vectors."""
    m = g.shape[1]
    n = b.shape[1]
    wide = TILE_VECTORS * VECTOR_BYTES // out.itemsize
    n_wide = n - n % wide
    if n_wide < n and m >= wide:
        _tn_tiles(g, b, out, n_wide)
        _tn_left_transposed(g, b, out, n_wide)
    else:
        _tn_tiles(g, b, out, n)


@njit(cache=True, nogil=True)
def _tn_tiles(g, b, out, n_end):
    """out[:, :n_end] = gᵀ · b[:, :n_end]: whole tiles, then the columns left over by a
    tile of masked vectors; out's rows TILE_ROWS at a time, then 4, 2, 1. The first case
    block stores its sums and the others add theirs: out is not zeroed first (a pass over
    it, and its zeros read back: 1-2 % of a 1000 × 784 weight gradient written into new
    memory)."""
    cases, m = g.shape
    n = b.shape[1]
    wide = TILE_VECTORS * VECTOR_BYTES // out.itemsize
    if cases == 0:
        _fill(out, 0, n_end)
    for c0 in range(0, cases, CASE_BLOCK):
        kc, add = min(CASE_BLOCK, cases - c0), c0 > 0
        for q in range(0, n_end, wide):
            cols = min(wide, n_end - q)
            _rows(g, c0 * m, 1, m, b, c0 * n + q, n, out, q, n, kc, add, m, cols, True, True)


@njit(cache=True, nogil=True)
def _tn_left_transposed(g, b, out, n0):
    """out[:, n0:] = gᵀ · b[:, n0:] for the r columns past the whole tiles (r < one tile),
    as its transpose b[:, n0:]ᵀ · g: b's r columns, copied into a cases × r panel, take
    the scalars' place and g's M-wide rows the vectors', so whole tiles sum them. Tiles
    over out's own rows instead read a new line of g at every case for a few products;
    this way the 1000 × 500 and 500 × 250 weight gradients took 0.95 × the time, the
    784 × 1000 one 0.98 ×, the 1000 × 784 one (a single vector left over) 1.01 × (float32,
    medians of 25 paired calls with the operands out of cache; float64 0.95-1.01 ×)."""
    cases, m = g.shape
    r = b.shape[1] - n0
    panel = np.empty((cases, r), out.dtype)
    for p in range(cases):
        for c in range(r):
            panel[p, c] = b[p, n0 + c]
    out_t = np.empty((r, m), out.dtype)
    _tn_tiles(panel, g, out_t, m)
    for j in range(m):
        for c in range(r):
            out[j, n0 + c] = out_t[c, j]


@njit(cache=True, nogil=True)
def tiled_nt(a, w, out):
    """out = a · wᵀ for C-contiguous a (M × K), w (N × K), out (M × N): a layer's forward
    product H Wᵀ. Column tile by column tile, the tile's K × (one tile) panel of wᵀ is
    packed first (``_pack_transposed``: the tiles read whole vectors of a row of wᵀ,
    which are columns of w), then every row tile of a reads it from cache; the last tile,
    if partial, through masked vectors (784 = 12 · 64 + 16: one vector; 250 = 3 · 64 +
    58: four, the last of 10 columns)."""
    m, k = a.shape
    n = w.shape[0]
    wide = TILE_VECTORS * VECTOR_BYTES // out.itemsize
    panel = np.empty((k, wide), out.dtype)
    tall = k * out.itemsize >= TALL_MIN_SUM_BYTES_NT
    for q in range(0, n, wide):
        cols = min(wide, n - q)
        _pack_transposed(w, q, cols, panel)
        _rows(a, 0, k, 1, panel, 0, wide, out, q, n, k, False, m, cols, tall, False)


PACK_DEPTH = 16  # rows of the panel per pass: the 16 numbers read from each of w's rows


@njit(cache=True, nogil=True)
def _pack_transposed(w, q, cols, panel):
    """panel[p, c] = w[q + c, p] for c < cols (the columns past them are masked off in the
    tiles, never read). In passes of PACK_DEPTH rows of the
    panel, so that each of w's rows is read a cache line at a time while the panel's rows
    are written whole (measured: 0.26 ms for a 1000 × 784 float32 w against 0.50 for
    a loop along w's rows)."""
    k = panel.shape[0]
    for p0 in range(0, k - k % PACK_DEPTH, PACK_DEPTH):
        for c in range(cols):
            for p in range(p0, p0 + PACK_DEPTH):
                panel[p, c] = w[q + c, p]
    for p in range(k - k % PACK_DEPTH, k):
        for c in range(cols):
            panel[p, c] = w[q + c, p]
