"""Branch-free ``exp``, ``log`` and ``tanh`` that LLVM vectorises inside generated CPU map loops.

Why: pip-installed Numba has no SVML (numba#10404), so every ``math.exp`` in a map is a
scalar libm call (~8 ns). On the deep autoencoder that was ~30% of the loss program next to
its GEMMs. These versions use only arithmetic, selects and integer bit operations, so a map
loop over them compiles to AVX2 vector code (about 3x faster per element here; tanh, a
scalar libm call too, was a third of cp_net's gradient: 6x faster per element).

Accuracy (checked over the whole double range in ``tests/runtime/test_vecmath.py``): at most
1 ulp from ``numpy.exp``/``numpy.log`` on normal results, exact on 0, ±inf and NaN, and
correct (to 1 unit) in the subnormal range. ``tanh``: at most 1.1 ulp from the exact value
(glibc's own ``tanh``, which ``math.tanh`` calls, is off by up to 2.1 ulp on the same points),
exact on ±0, ±inf, NaN and the subnormals.

exp(x) = 2^k · exp(r),  k = round(x / ln 2),  r = x − k ln 2 (Cody-Waite: ln 2 split in a
    high part exact in k·ln2_hi and a low part), |r| ≤ ln2/2. exp(r) comes from the rational
    form 1 + r + r·c/(2 − c), c = r − r²·P(r²) with the degree-5 minimax P of Sun's fdlibm.
    k is read off the bits of x/ln2 + 1.5·2^52 (no float→int conversion, which AVX2 cannot
    vectorise), and 2^k is built as two exponent-field products so that subnormal results
    and overflow to inf come out of the multiplication itself.

log(x) = k ln 2 + log(m),  x = m·2^k with m ∈ [√2/2, √2) read off the exponent bits;
    log(m) = 2 atanh(s) with s = f/(2 + f), f = m − 1, expanded as fdlibm does:
    f − f²/2 + s(f²/2 + R(s²)), R the degree-7 minimax of Sun's fdlibm.

tanh(x) = x + x z N(z)/D(z), z = x², for |x| < 0.8: the 9th convergent of Lambert's
    continued fraction tanh x = x/(1 + z/(3 + z/(5 + …))), whose coefficients are exact
    integers (truncation error 4e-21 relative at |x| = 0.8); written as x plus a correction
    of at most a quarter of x, so the correction's rounding errors are damped.
    tanh(x) = sign(x)·(1 − 2/(e^(2|x|) + 1)) for |x| ≥ 0.8 (no cancellation: the subtracted
    term is < 0.4). Both are computed for every element and one is selected, with a single
    division for the two (the loop stays branch-free).

``exp``, ``log`` and ``tanh`` are the names the generated kernels call (``vm.exp(x)``); each
dispatches on its argument's type when Numba compiles the caller: a float32 argument goes
to the float32 routines of ``runtime/vecmath32.py`` (16 lanes, no conversions), anything
else to the float64 ones here (``exp64``, ``log64``, ``tanh64``).

This module must not import sympy: built programs load without it.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, types
from numba.extending import intrinsic, overload

from symcurv.runtime import vecmath32 as vm32


@intrinsic
def _bits_as_float(typingctx, k):
    """Reinterpret an int64 as the float64 with the same bits (an LLVM bitcast)."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.float64))

    return types.float64(types.int64), codegen


@intrinsic
def _float_as_bits(typingctx, x):
    """Reinterpret a float64 as the int64 with the same bits (an LLVM bitcast)."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.int64))

    return types.int64(types.float64), codegen


_LN2_HI = 6.93147180369123816490e-01  # ln 2 with its low 32 bits zero: k·_LN2_HI is exact
_LN2_LO = 1.90821492927058770002e-10  # ln 2 − _LN2_HI
_INV_LN2 = 1.44269504088896338700e00
_SHIFTER = 6755399441055744.0  # 1.5·2^52: x + SHIFTER rounds x to an integer in the low bits
_SHIFTER_BITS = 0x4338000000000000
# exp(r) = 1 + r + r·c/(2 − c), c = r − r²(P1 + r²(P2 + …)) (fdlibm e_exp.c)
_P1 = 1.66666666666666019037e-01
_P2 = -2.77777777770155933842e-03
_P3 = 6.61375632143793436117e-05
_P4 = -1.65339022054652515390e-06
_P5 = 4.13813679705723846039e-08
# log(1+f) = f − f²/2 + s(f²/2 + R(s²)), s = f/(2+f) (fdlibm e_log.c)
_LG1 = 6.666666666666735130e-01
_LG2 = 3.999999999940941908e-01
_LG3 = 2.857142874366239149e-01
_LG4 = 2.222219843214978396e-01
_LG5 = 1.818357216161805012e-01
_LG6 = 1.531383769920937332e-01
_LG7 = 1.479819860511658591e-01
# tanh x = x + x z N(z)/D(z), z = x²: Lambert's continued fraction, 9th convergent
# (tests/runtime/test_vecmath.py re-derives these integers from the fraction)
_TANH_N = (-218243025.0, -16081065.0, -289575.0, -1430.0, -1.0)
_TANH_D = (654729075.0, 310134825.0, 18918900.0, 315315.0, 1485.0, 1.0)
_TANH_SMALL = 0.8  # below: the continued fraction; above: 1 − 2/(e^(2|x|) + 1)
_TANH_EXP_MAX = 60.0  # 2|x| clamped here: e^60 ≫ 2^54, so 1 − 2/(e + 1) rounds to 1
_TWO54 = 18014398509481984.0
_SMALLEST_NORMAL = 2.2250738585072014e-308


# fastmath={"contract"}: a·b + c may become one fused multiply-add (one rounding instead of
# two, so the error bounds below still hold; exp 23 % faster per element). The flag is on
# the instructions, so it survives LLVM's inlining into a kernel compiled without it.
@njit(cache=True, error_model="numpy", fastmath={"contract"})
def _exp_reduced(y):
    """(e^r, k) with y = k ln 2 + r, |r| ≤ ln2/2, for |y| ≤ 1000 (k an int64)."""
    shifted = y * _INV_LN2 + _SHIFTER
    kf = shifted - _SHIFTER  # round(y / ln 2) as a float
    k = _float_as_bits(shifted) - _SHIFTER_BITS  # the same integer, read off the bits
    r = (y - kf * _LN2_HI) - kf * _LN2_LO
    r2 = r * r
    c = r - r2 * (_P1 + r2 * (_P2 + r2 * (_P3 + r2 * (_P4 + r2 * _P5))))
    return 1.0 + (r + r * c / (2.0 - c)), k


@njit(cache=True, error_model="numpy", fastmath={"contract"})
def exp64(x):
    """e^x to 1 ulp, branch-free (selects only), so calling loops vectorise."""
    # Clamp so that k stays within two exponent fields; beyond ±1000 the result is 0 or inf
    # anyway. NaN fails both comparisons and is restored at the end.
    y = x if x > -1000.0 else -1000.0
    y = y if y < 1000.0 else 1000.0
    er, k = _exp_reduced(y)
    # 2^k = 2^k1 · 2^k2 with both halves normal: |k| ≤ 1443 would overflow one field.
    k1 = k >> 1
    k2 = k - k1
    out = er * _bits_as_float((k1 + 1023) << 52) * _bits_as_float((k2 + 1023) << 52)
    return out if x == x else x


@njit(cache=True, error_model="numpy", fastmath={"contract"})
def log64(x):
    """ln x to 1 ulp, branch-free; log(0) = -inf, log(x<0) = NaN, log(inf) = inf."""
    tiny = x < _SMALLEST_NORMAL
    xs = x * _TWO54 if tiny else x  # subnormals: scale into the normal range first
    bits = _float_as_bits(xs)
    # Move the exponent boundary to √2/2 so that m ∈ [√2/2, √2) and |f| ≤ 0.41.
    hi = (bits >> 32) + (0x3FF00000 - 0x3FE6A09E)
    k = (hi >> 20) - 0x3FF - (54 if tiny else 0)
    hi = (hi & 0x000FFFFF) + 0x3FE6A09E
    m = _bits_as_float((hi << 32) | (bits & 0xFFFFFFFF))
    f = m - 1.0
    s = f / (2.0 + f)
    z = s * s
    w = z * z
    rz = w * (_LG2 + w * (_LG4 + w * _LG6)) + z * (_LG1 + w * (_LG3 + w * (_LG5 + w * _LG7)))
    hfsq = 0.5 * f * f
    kf = _bits_as_float(k + _SHIFTER_BITS) - _SHIFTER  # int → float without cvtsi2sd
    out = kf * _LN2_HI - ((hfsq - (s * (hfsq + rz) + kf * _LN2_LO)) - f)
    out = out if x < np.inf else x  # +inf, and NaN (fails the comparison) passes through
    out = out if x > 0.0 else (-np.inf if x == 0.0 else np.nan)
    return out if x == x else x


_N0, _N1, _N2, _N3, _N4 = _TANH_N
_D0, _D1, _D2, _D3, _D4, _D5 = _TANH_D


@njit(cache=True, error_model="numpy", fastmath={"contract"})
def _lambert(z):
    """(N(z), D(z)) of tanh's continued fraction (fused multiply-adds: see exp64)."""
    n = _N0 + z * (_N1 + z * (_N2 + z * (_N3 + z * _N4)))
    d = _D0 + z * (_D1 + z * (_D2 + z * (_D3 + z * (_D4 + z * _D5))))
    return n, d


@njit(cache=True, error_model="numpy", fastmath={"contract"})
def tanh64(x):
    """tanh x to 1.1 ulp, branch-free; exact on ±0, subnormals, ±inf (±1) and NaN."""
    ax = abs(x)
    small = ax < _TANH_SMALL
    z = x * x
    n, d = _lambert(z)
    # e^(2|x|) on 2|x| ≤ 60 only (tanh rounds to ±1 from |x| ≈ 19.1): one exponent field, no
    # clamps, and a body small enough for LLVM to inline tanh into a kernel's loop
    er, k = _exp_reduced(min(ax + ax, _TANH_EXP_MAX))
    e = er * _bits_as_float((k + 1023) << 52)
    # one division serves both branches: q = x z N/D (small) or 2/(e + 1) (large)
    q = (x * z * n if small else 2.0) / (d if small else e + 1.0)
    y = x + q if small else math.copysign(1.0 - q, x)
    return y if ax > 0.0 else x  # ±0 keeps its sign (x + q would give +0); NaN passes


# ---- one name per function for every dtype: what the generated kernels call -------------
# ``vm.exp(x)`` in a kernel resolves at typing time: float32 → vecmath32's float32 routine
# (16 lanes), anything else → the float64 one. Called from Python, the stubs do the same.
def exp(x):
    """e^x (float32 in float32: ``vecmath32.exp32``; else float64: ``exp64``)."""
    return vm32.exp32(x) if isinstance(x, np.float32) else exp64(x)


def log(x):
    """ln x (float32 in float32: ``vecmath32.log32``; else float64: ``log64``)."""
    return vm32.log32(x) if isinstance(x, np.float32) else log64(x)


def tanh(x):
    """tanh x (float32 in float32: ``vecmath32.tanh32``; else float64: ``tanh64``)."""
    return vm32.tanh32(x) if isinstance(x, np.float32) else tanh64(x)


@overload(exp, jit_options={"error_model": "numpy"})
def _exp_typed(x):
    return (lambda x: vm32.exp32(x)) if x == types.float32 else (lambda x: exp64(x))


@overload(log, jit_options={"error_model": "numpy"})
def _log_typed(x):
    return (lambda x: vm32.log32(x)) if x == types.float32 else (lambda x: log64(x))


@overload(tanh, jit_options={"error_model": "numpy"})
def _tanh_typed(x):
    return (lambda x: vm32.tanh32(x)) if x == types.float32 else (lambda x: tanh64(x))


# fastmath={"reassoc"} on this loop only: LLVM may keep one partial sum per vector lane and
# add them at the end, so the loop vectorises. NaN and ±inf still propagate (no nnan/ninf).
@njit(cache=True, error_model="numpy", fastmath={"reassoc"})
def row_sum(row):
    """Σ_j row[j] in float64, whatever row's dtype: a map's epilogue (a loss's per-case
    total, codegen/cpu_maps.py). A single accumulator is a chain of dependent adds, 3
    cycles each: the float32 autoencoder's sigmoid cross-entropy map (1000 × 784, one
    thread) took 1.6 ms so and takes 1.0 with this sum (2.2 before, with its row buffer in
    float64). The order of the additions differs from left to right, so the result may
    differ in its last bits."""
    acc = 0.0
    for j in range(row.shape[0]):
        acc += row[j]
    return acc


LSE_ROWS = 8  # rows per block of logsumexp_rows: a flat exp loop of 8·n elements


@njit(cache=True, error_model="numpy")
def logsumexp_rows(x, out):
    """out[i, 0] = m_i + log Σ_j e^(x[i, j] − m_i), m_i = max_j x[i, j], for every row i.

    One compiled function for every program's logsumexp (a softmax loss's normaliser)
    rather than a loop in each generated driver: inside a driver of dozens of calls, LLVM
    did not inline ``exp`` and each element was a scalar call (98 ns per 10-wide row on
    cp_net). Rows are taken LSE_ROWS at a time: their shifted entries x[i, j] − m_i go
    into one buffer, whose exps are one flat loop (a 10-wide row alone never fills
    AVX-512's vector body: 37 µs → 21 µs for cp_net's 1000 rows), summed row by row after
    it (an fp accumulator inside the exp loop would keep it scalar) into float64 sums,
    whose logs are one flat loop over all rows at the end (a log per row in the row loop
    was a scalar call: 22.7 → 14.5 µs in float32, 25.8 → 18.8 in float64, session 16)."""
    rows, n = x.shape
    d = np.empty(LSE_ROWS * n, dtype=x.dtype)  # float32 rows: float32 exps (vecmath32)
    sums = np.empty(rows, dtype=np.float64)
    m = out.reshape(-1)  # the row maxima first, then the results
    for i0 in range(0, rows, LSE_ROWS):
        r = min(LSE_ROWS, rows - i0)
        for c in range(r):
            top = x[i0 + c, 0]
            for j in range(1, n):
                top = max(top, x[i0 + c, j])
            m[i0 + c] = top
            for j in range(n):
                d[c * n + j] = x[i0 + c, j] - top
        for e in range(r * n):
            d[e] = exp(d[e])
        for c in range(r):
            acc = 0.0
            for j in range(n):
                acc += d[c * n + j]
            sums[i0 + c] = acc
    for i in range(rows):
        m[i] = m[i] + log(sums[i])
