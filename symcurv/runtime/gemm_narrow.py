"""Narrow products a·bᵀ as register-blocked dot products: out[i, j] = Σ_k a[i, k] b[j, k].

The forward product of a dense layer, X Wᵀ with X the B × K cases and W the N × K weights,
is a narrow product when the layer is narrow (N of a few tens): cp_net's 1000×256·256×20.
A BLAS packs both operands into panels and runs a micro-kernel tuned for wide, square-ish
products; with N = 20 that machinery is a large share of the work, and OpenBLAS runs the
product 12 % slower than XLA's dot (docs/benchmarks.md, "Session 12: quiet machine").

Here every output is a dot product of two rows that are already contiguous in memory (a
row of X, a row of W), so nothing is packed: a block of 4 × 4 outputs keeps 16
accumulators in vector registers while one pass over k reads 4 rows of each operand (8
loads per 16 multiply-adds), and LLVM vectorizes that pass along k (``reassoc`` lets it
split each sum into vector lanes, ``contract`` fuses the multiply-adds). Measured on the
2-core Zen 4 VM, one thread (docs/benchmarks.md, "Session 13"): 1000×256·256×20 in 207
against OpenBLAS's 280 µs (float64) and 112 against 138 (float32).

No ``nnan``/``ninf`` fast-math flags: a non-finite input must give a non-finite product,
which codegen/guards.py relies on (inf × 0 is NaN here as in the BLAS).
"""

from __future__ import annotations

from numba import njit

_FLAGS = {"reassoc", "contract"}


@njit(cache=True, nogil=True, fastmath=_FLAGS)
def narrow_nt(a, bt, out):
    """out = a · btᵀ for C-contiguous a (M × K), bt (N × K) and out (M × N): blocks of
    4 × 4 dot products, then the last columns 4 rows at a time, then the last rows."""
    m, n = out.shape
    m4, n4 = m - m % 4, n - n % 4
    for i in range(0, m4, 4):
        for j in range(0, n4, 4):
            _dots_4x4(a, bt, out, i, j)
        for j in range(n4, n):
            _dots_4x1(a, bt, out, i, j)
    for i in range(m4, m):
        for j in range(n):
            _dots_1x1(a, bt, out, i, j)


@njit(inline="always", fastmath=_FLAGS)
def _dots_4x4(a, bt, out, i, j):
    """out[i:i+4, j:j+4] = a[i:i+4] · bt[j:j+4]ᵀ, 16 sums in one pass over k."""
    a0, a1, a2, a3 = a[i], a[i + 1], a[i + 2], a[i + 3]
    b0, b1, b2, b3 = bt[j], bt[j + 1], bt[j + 2], bt[j + 3]
    z = out.dtype.type(0)  # accumulate in out's dtype (a float64 0.0 would widen float32)
    s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = z
    s20 = s21 = s22 = s23 = s30 = s31 = s32 = s33 = z
    for k in range(a.shape[1]):
        x0, x1, x2, x3 = a0[k], a1[k], a2[k], a3[k]
        y0, y1, y2, y3 = b0[k], b1[k], b2[k], b3[k]
        s00 += x0 * y0
        s01 += x0 * y1
        s02 += x0 * y2
        s03 += x0 * y3
        s10 += x1 * y0
        s11 += x1 * y1
        s12 += x1 * y2
        s13 += x1 * y3
        s20 += x2 * y0
        s21 += x2 * y1
        s22 += x2 * y2
        s23 += x2 * y3
        s30 += x3 * y0
        s31 += x3 * y1
        s32 += x3 * y2
        s33 += x3 * y3
    out[i, j], out[i, j + 1], out[i, j + 2], out[i, j + 3] = s00, s01, s02, s03
    out[i + 1, j], out[i + 1, j + 1], out[i + 1, j + 2], out[i + 1, j + 3] = s10, s11, s12, s13
    out[i + 2, j], out[i + 2, j + 1], out[i + 2, j + 2], out[i + 2, j + 3] = s20, s21, s22, s23
    out[i + 3, j], out[i + 3, j + 1], out[i + 3, j + 2], out[i + 3, j + 3] = s30, s31, s32, s33


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
