"""The product step of the generated CPU drivers: ``gemm(a, b, out)``, out = a·b by the BLAS
or by symcurv's own kernels.

The drivers are plain Python (codegen/cpu.py says why), so each product was numpy's
``np.dot(a, b, out)``. Called from Python, this compiled one-liner is Numba's ``np.dot``
instead: it calls the BLAS that scipy ships (``scipy.linalg.cython_blas``, as
``blas_syrk.py`` does) with less work per call. Measured on cp_net's products (one
thread, the 2-core Zen 4 VM, docs/benchmarks.md "Session 12"): the call costs 0.8 µs
against numpy's 1.0 at B = 1, the input gradient's 1000×20·20×256 product 243 µs against
264, a 20×1000·1000×20 product 15 µs against 25 (numpy takes its syrk path for aᵀa
there); the other shapes within 1 %. Each layout of the operands (C- or F-ordered views:
``W.reshape(...).T`` is F) is one compiled signature, cached on disk like every kernel.

Three kinds of product skip the BLAS for symcurv's own kernels, which run them faster on
this machine (docs/benchmarks.md, "Session 13", "Session 14" and "Session 17"); which
kernel runs is decided by the operands' layouts when ``gemm`` is compiled, and by their
shapes and dtype at run time (and by the kernels OpenBLAS has for this core: where they
are its AVX2 ones on an AVX-512 machine, ``BLAS_WITHOUT_AVX512``, the limits below widen):
- a layer's forward X Wᵀ (a, bᵀ, out C-ordered): ``gemm_tiles.tiled_nt``, register tiles
  over packed panels of Wᵀ, up to 1024 columns at B ≥ 256 (16), from one tile's width
  (any width) (``takes_tiled_nt``); else, if narrow (a few tens of columns, long rows, or
  a batch of a few cases), ``gemm_narrow.narrow_nt``, blocks of dot products
  (``takes_narrow``);
- a·b into an output up to about 1000 wide (G W: a, b, out C-ordered):
  ``gemm_tiles.tiled_nn``, register tiles (``takes_tiled_nn``);
- gᵀ·b, a sum over the cases into an output up to 1000 × 1000 (Gᵀ X: g = aᵀ, b, out
  C-ordered): ``gemm_tiles.tiled_tn`` (``takes_tiled_tn``).
Every other product, and every operand that is not laid out so, goes to the BLAS. So does
every product while the BLAS runs several threads: symcurv's kernels are serial, and a
threaded BLAS is faster on these shapes at B = 1000 (runtime/blas_threads.py).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from numba import njit
from numba.extending import overload

from symcurv.runtime.blas_threads import blas_core, blas_threads
from symcurv.runtime.gemm_narrow import narrow_nt
from symcurv.runtime.gemm_tiles import (
    TILE_VECTORS,
    VECTOR_BYTES,
    tiled_nn,
    tiled_nt,
    tiled_tn,
)

# Numba caches ``gemm`` (and every function here) with the kernels it calls compiled in,
# keyed on this file's text alone: an edit of gemm_tiles.py, gemm_narrow.py or
# blas_threads.py would leave the old kernels running from the cache, in an editable
# install after a pull too. This line changes with them (tests/runtime/test_gemm.py checks
# it against ``kernels_source_hash()``), so that their edit recompiles everything here.
KERNELS_SOURCE_HASH = "d149315fc62ffd7d"
KERNEL_FILES = ("gemm_tiles.py", "gemm_narrow.py", "blas_threads.py")


def kernels_source_hash() -> str:
    """sha256 (first 16 hex digits) of the files whose kernels ``gemm`` compiles in."""
    here = Path(__file__).parent
    digest = hashlib.sha256(b"".join((here / f).read_bytes() for f in KERNEL_FILES))
    return digest.hexdigest()[:16]


# Where the narrow kernel beats OpenBLAS, read off `python benchmarks/gemm_shapes.py
# --sweep narrow_nt` on the 2-core Zen 4 VM (docs/benchmarks.md, "Session 16"): N
# columns, sums of length K, M rows with N <= 64, K >= 16, M >= 4 and K >= N *
# DEPTH_PER_COLUMN[dtype]: N <= K in float64, N <= K / 4 in float32 (the BLAS's float32
# kernel is twice as fast, and each dot product's lanes are added up at the end whatever
# K). Sessions 13-15 asked K >= 2 N and K >= 12 N, before the blocks' sums were added
# across lanes together (gemm_narrow.py).
NARROW_MAX_COLS = 64
NARROW_MIN_DEPTH = 16
NARROW_MIN_ROWS = 4  # fewer: no 4-row block runs, only single dot products
DEPTH_PER_COLUMN_FLOAT64 = 1
DEPTH_PER_COLUMN_FLOAT32 = 4

# OpenBLAS's kernels that use AVX-512, by its names for them (lower case). Where this
# machine has AVX-512 and OpenBLAS runs none of them (a core newer than the library: on
# the Zen 5 VM of session 17 scipy's OpenBLAS 0.3.30 runs "Haswell"), the tiles beat it
# on every shape below (next paragraph). Another BLAS (no core name) is taken to have them.
AVX512_BLAS_CORES = ("skylakex", "cooperlake", "sapphirerapids")
_CORE = (blas_core() or "").lower()
BLAS_WITHOUT_AVX512 = VECTOR_BYTES == 64 and _CORE != "" and _CORE not in AVX512_BLAS_CORES

# Where the tiled kernels beat OpenBLAS, from the same sweep. Against AVX-512 kernels
# (the Zen 4 VM, sessions 13-16):
# - a·b: sums at most TILED_NN_MAX_DEPTH long, at most TILED_NN_MAX_COLS columns (float64
#   stops short of 1024: b's rows 8 KB apart alias in the cache there, 1.01-1.14 × the
#   BLAS), and at least one tile's columns or else whole vectors only (a partial tile on
#   a narrow output, then a zero-padded copy, cost 1.2-1.5 ×);
# - a·wᵀ (packed panels): at least TILED_NT_MIN_ROWS rows (the panels of w are packed
#   on every call), sums TILED_NT_MIN_DEPTH to TILED_NT_MAX_DEPTH long, between one tile
#   and TILED_NT_MAX_COLS columns;
# - gᵀ·b: at most TILED_TN_MAX_ROWS rows, between one tile and TILED_TN_MAX_COLS
#   columns, over at least TILED_TN_MIN_CASES cases (float64 only to 500 × 500: beyond,
#   OpenBLAS's blocking wins, 1.01-1.14).
# Against OpenBLAS's AVX2 kernels on the Zen 5 VM (session 17, the tiles' partial last
# tile now masked vectors) the tiles took 0.15-0.67 × its time on 1000 rows (cases) at
# every width from 4 columns on, in both dtypes (float32 a·b and a·wᵀ with 4 columns:
# 0.87-1.09), and from 4 rows for a·b, 16 for a·wᵀ (packing: 2.1-2.8 × on one row), 32
# cases for gᵀ·b (a 256-row gradient: 1.0 × at 16 cases, 2.0 × at 1): narrow outputs
# and the float64 gradients up to 1000 × 1024 go to the tiles too; so do a·b up to 2000
# deep and 1500 wide (K-FAC's Kronecker solves, 784 × 1001 · 1001 × 1001: 0.48-0.62 ×).
TILED_NN_MAX_DEPTH = 2000 if BLAS_WITHOUT_AVX512 else 1000
TILED_NN_MAX_COLS_FLOAT64, TILED_NN_MAX_COLS_FLOAT32 = (
    (1500, 1500) if BLAS_WITHOUT_AVX512 else (1000, 1024)
)
TILED_NN_MIN_ROWS = 1 if BLAS_WITHOUT_AVX512 else 4  # one: see FEW_ROWS below
TILED_NT_MIN_ROWS = 16 if BLAS_WITHOUT_AVX512 else 256
TILED_NT_MIN_DEPTH, TILED_NT_MAX_DEPTH = 8, 1000
TILED_NT_MAX_COLS = 1024
TILED_TN_MAX_ROWS_FLOAT32, TILED_TN_MAX_COLS_FLOAT32 = 1000, 1024
TILED_TN_MAX_ROWS_FLOAT64, TILED_TN_MAX_COLS_FLOAT64 = (
    (1000, 1024) if BLAS_WITHOUT_AVX512 else (500, 500)
)
TILED_TN_MIN_CASES = 32 if BLAS_WITHOUT_AVX512 else 64
NARROW_OUTPUTS_TILED = BLAS_WITHOUT_AVX512  # else a tile's width of columns at least
# A batch of a few cases (fewer than FEW_ROWS), against those AVX2 kernels: the BLAS's
# call costs more than such a product, 0.57-0.91 µs for 1×20·20×20 from Python against
# 0.33-0.53 by the tiles (a·b), 0.28-0.30 by narrow_nt's dot products (a·wᵀ) and
# 0.39-0.41 for a 20 × 20 gᵀ·b over 1-4 cases (both dtypes, `/tmp/s17/m1.py`, session
# 17; a 256-row gᵀ·b over so few cases stays with the BLAS: 1.3-2.2 against 2.4-3.1).
# So a·b runs in the tiles from one row, a·wᵀ with up to NARROW_MAX_COLS columns in
# narrow_nt over any sum, gᵀ·b into at most TILED_TN_FEW_CASES_MAX_ROWS rows in the tiles.
FEW_ROWS_OWN = BLAS_WITHOUT_AVX512
FEW_ROWS = 16
TILED_TN_FEW_CASES_MAX_ROWS = 20


@njit(cache=True, nogil=True)
def gemm(a, b, out):
    """out = a · b (2-D or 1-D float operands of one dtype; out C-contiguous)."""
    _product(a, b, out)


@njit(cache=True, nogil=True)
def takes_narrow(a, b):
    """Whether a · b is narrow enough for ``narrow_nt`` (layouts aside): the limits above."""
    m, k = a.shape
    n = b.shape[1]
    if FEW_ROWS_OWN and 1 <= m < FEW_ROWS:
        return n <= NARROW_MAX_COLS and k >= 1
    per_col = DEPTH_PER_COLUMN_FLOAT64 if a.itemsize == 8 else DEPTH_PER_COLUMN_FLOAT32
    return m >= NARROW_MIN_ROWS and n <= NARROW_MAX_COLS and k >= max(NARROW_MIN_DEPTH, n * per_col)


@njit(cache=True, nogil=True)
def takes_tiled_nn(a, b):
    """Whether a · b goes to ``tiled_nn`` (layouts aside): the limits above."""
    m, k = a.shape
    n = b.shape[1]
    lanes = VECTOR_BYTES // a.itemsize
    max_cols = TILED_NN_MAX_COLS_FLOAT64 if a.itemsize == 8 else TILED_NN_MAX_COLS_FLOAT32
    wide_enough = NARROW_OUTPUTS_TILED or n >= TILE_VECTORS * lanes or n % lanes == 0
    return m >= TILED_NN_MIN_ROWS and k <= TILED_NN_MAX_DEPTH and n <= max_cols and wide_enough


@njit(cache=True, nogil=True)
def takes_tiled_tn(a, b):
    """Whether a · b with a = gᵀ goes to ``tiled_tn`` (layouts aside): the limits above."""
    m, cases = a.shape
    n = b.shape[1]
    f64 = a.itemsize == 8
    max_rows = TILED_TN_MAX_ROWS_FLOAT64 if f64 else TILED_TN_MAX_ROWS_FLOAT32
    max_cols = TILED_TN_MAX_COLS_FLOAT64 if f64 else TILED_TN_MAX_COLS_FLOAT32
    min_cols = 1 if NARROW_OUTPUTS_TILED else TILE_VECTORS * VECTOR_BYTES // a.itemsize
    enough = cases >= TILED_TN_MIN_CASES or (
        FEW_ROWS_OWN and cases >= 1 and m <= TILED_TN_FEW_CASES_MAX_ROWS
    )
    return m <= max_rows and enough and min_cols <= n <= max_cols


@njit(cache=True, nogil=True)
def takes_tiled_nt(a, b):
    """Whether a · b with b = wᵀ goes to ``tiled_nt`` (layouts aside): the limits above;
    a float32 product that ``narrow_nt`` takes goes there instead (its dot products over
    a long sum: 1000×256·256×20 0.38 × the BLAS's time against the tiles' 0.62 on the Zen
    5 VM; in float64 the tiles win, 0.45 against 0.55)."""
    m, k = a.shape
    n = b.shape[1]
    wide = TILE_VECTORS * VECTOR_BYTES // a.itemsize
    if n < wide:  # a narrow output
        if not NARROW_OUTPUTS_TILED or (a.itemsize == 4 and takes_narrow(a, b)):
            return False
    return (
        m >= TILED_NT_MIN_ROWS
        and TILED_NT_MIN_DEPTH <= k <= TILED_NT_MAX_DEPTH
        and n <= TILED_NT_MAX_COLS
    )


@njit(cache=True, nogil=True)
def _takes_nt(a, b):
    """Whether a · b with b = wᵀ goes to one of symcurv's kernels (layouts aside)."""
    return takes_tiled_nt(a, b) or takes_narrow(a, b)


@njit(cache=True, nogil=True)
def _nt_ab(a, b, out):
    """out = a · b by ``tiled_nt`` or else ``narrow_nt``, which take the C-ordered bᵀ (W
    itself); the tiles first: where both take a product (32 or 64 columns) they measured
    faster (docs/benchmarks.md, "Session 14")."""
    if takes_tiled_nt(a, b):
        tiled_nt(a, b.T, out)
    else:
        narrow_nt(a, b.T, out)


@njit(cache=True, nogil=True)
def _tiled_tn_ab(a, b, out):
    """out = a · b by ``tiled_tn``, which takes the C-ordered aᵀ (G itself)."""
    tiled_tn(a.T, b, out)


# Operand layouts (a, b, out) -> (which products, the kernel as out = a·b): a kernel of
# symcurv's is compiled in only where its rows are contiguous by type. a·bᵀ: b F-ordered
# (``W.reshape(...).T`` in the drivers); a·b: all C-ordered; gᵀ·b: a F-ordered (``G.T``).
_OWN_KERNELS = {
    ("C", "F", "C"): (_takes_nt, _nt_ab),
    ("C", "C", "C"): (takes_tiled_nn, tiled_nn),
    ("F", "C", "C"): (takes_tiled_tn, _tiled_tn_ab),
}


def _own_kernel(a, b, out):
    """(which products, kernel) for these operand types, or (None, None): the BLAS."""
    if not (a.ndim == b.ndim == out.ndim == 2):
        return None, None
    return _OWN_KERNELS.get((a.layout, b.layout, out.layout), (None, None))


def _own_runs(a, b, out):
    """Does ``gemm`` run out = a · b by one of symcurv's kernels now? (typed below)"""
    raise NotImplementedError("compiled only")


def _product(a, b, out):
    """out = a · b, by one of symcurv's kernels or the BLAS (typed by the overload below)."""
    raise NotImplementedError("compiled only")


@overload(_own_runs)
def _own_runs_typed(a, b, out):
    takes, kernel = _own_kernel(a, b, out)
    if kernel is None:
        return lambda a, b, out: False
    return lambda a, b, out: blas_threads() == 1 and takes(a, b)


@overload(_product)
def _product_typed(a, b, out):
    kernel = _own_kernel(a, b, out)[1]
    if kernel is None:
        return lambda a, b, out: np.dot(a, b, out)

    def own_or_blas(a, b, out):
        if _own_runs(a, b, out):
            kernel(a, b, out)
        else:
            np.dot(a, b, out)

    return own_or_blas


# Fewer rows than this: a pair runs as two products. Packing [b1 b2] and copying the two
# halves out costs more than reading a twice (cp_net, B = 1: 7.8 against 1.6 µs; equal at
# B = 8; at B = 100 the pair wins, 40 against 60: benchmarks in docs/benchmarks.md).
PAIR_MIN_ROWS = 64


@njit(cache=True, nogil=True)
def gemm_pair(a, b1, b2, out1, out2):
    """out1 = a · b1 and out2 = a · b2 as one product a · [b1 b2] (b1, b2 of one shape):
    the BLAS reads ``a`` once and runs a kernel twice as wide (codegen/lower.py:
    ``pair_products``); the two column blocks are then copied out. Two products instead
    for few rows, and wherever one of symcurv's kernels takes the product: ``narrow_nt``
    reads ``a`` in blocks of 4 rows that stay in cache, so a second pass costs what the
    copies would (measured: 411 against 414 µs, float64), and two ``tiled_nt`` products
    beat the BLAS's pair by 5-14 % on the autoencoder's layers (session 14: 29.9 against
    34.7 ms for 1000×784·784×2000, float32)."""
    if a.shape[0] < PAIR_MIN_ROWS or _own_runs(a, b1, out1):
        _product(a, b1, out1)
        _product(a, b2, out2)
        return
    k, n = b1.shape
    b = np.empty((k, 2 * n), dtype=b1.dtype)
    # plain loops, not slice assignments, which Numba compiles through its broadcasting
    # machinery (seconds of the first build after an install)
    for r in range(k):
        for c in range(n):
            b[r, c] = b1[r, c]
            b[r, n + c] = b2[r, c]
    out = np.empty((a.shape[0], 2 * n), dtype=out1.dtype)
    np.dot(a, b, out)
    for r in range(a.shape[0]):
        for c in range(n):
            out1[r, c] = out[r, c]
            out2[r, c] = out[r, n + c]
