"""float32 ``exp``, ``log`` and ``tanh`` for the CPU kernels of float32 builds, branch-free.

Why: ``runtime/vecmath.py``'s routines are float64; called on float32 elements they
promote every element to float64, so a float32 map ran at the float64 vector width (8
lanes of AVX-512 instead of 16) plus the conversions, and gained nothing from the halved
width (cp_net's float32 loss was 1.66 × JAX's float32 at B = 1000, docs/benchmarks.md).
``vecmath.exp``/``log``/``tanh`` dispatch here when their argument is float32. Every
constant is a float32 and the integer bit work is done in 32-bit LLVM code (Numba would
widen int32 arithmetic to int64), so the loops compile to 16-lane float32 vector code.

Accuracy (tests/runtime/test_vecmath32.py, against the float64 routines rounded to
float32): log within 1 ulp, exp within 1.05 ulp on normal results (exact on 0, ±inf,
NaN; within one unit of the smallest subnormal below float32's normal range), tanh within
1.1 ulp (exact on ±0, the subnormals, ±inf and NaN).

exp(x) = 2^k · exp(r), k = round(x / ln 2), r = x − k ln 2 (Cody-Waite, ln 2 split into a
    part with 8 trailing zero bits, so k·ln2_hi is exact for |k| < 256, and the rest),
    |r| ≤ ln2/2; exp(r) by its Taylor polynomial of degree 7 (truncation ≤ 5.2e-9, a tenth
    of float32's half-ulp; no division). 2^k as two exponent-field products, so subnormal
    results and overflow to inf come out of the multiplications.
log(x) = k ln 2 + log(m), m ∈ [√2/2, √2) from the exponent bits, log(m) = 2 atanh(s),
    s = f/(2 + f), f = m − 1, as f − f²/2 + s(f²/2 + R(s²)), R the degree-4 minimax of
    fdlibm's e_logf.c.
tanh(x) = x + x z N(z)/D(z), z = x², for |x| < 0.8: the 5th convergent of Lambert's
    continued fraction (truncation 3.5e-11 relative at 0.8; its integer coefficients are
    exact in float32), and sign(x)·(1 − 2/(e^(2|x|) + 1)) above, with e^(2|x|) on
    2|x| ≤ 40 only (tanh rounds to ±1 from |x| ≈ 9), so 2^k needs one exponent field.
    One division serves both.

This module must not import sympy: built programs load without it.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

F = np.float32
_I32 = ir.IntType(32)
_SQRT_HALF_BITS = 0x3F3504F3  # √2/2 as float32 bits: m's range starts here


def _i32(v: int) -> ir.Constant:
    return ir.Constant(_I32, v)


@intrinsic
def _pow2(typingctx, kf):
    """2^kf as a float32 for an integer-valued float32 kf in [-126, 127]: the exponent field."""

    def codegen(context, builder, signature, args):
        k = builder.fptosi(args[0], _I32)
        bits = builder.shl(builder.add(k, _i32(127)), _i32(23))
        return builder.bitcast(bits, ir.FloatType())

    return types.float32(types.float32), codegen


def _log_split(builder, x):
    """(bits of m, k) with x = m·2^k, m ∈ [√2/2, √2): the exponent boundary moved to √2/2."""
    hi = builder.add(builder.bitcast(x, _I32), _i32(0x3F800000 - _SQRT_HALF_BITS))
    k = builder.sub(builder.ashr(hi, _i32(23)), _i32(127))
    m = builder.add(builder.and_(hi, _i32(0x007FFFFF)), _i32(_SQRT_HALF_BITS))
    return m, k


@intrinsic
def _mantissa(typingctx, x):
    """m ∈ [√2/2, √2) with x = m·2^k, for a positive normal float32 x."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(_log_split(builder, args[0])[0], ir.FloatType())

    return types.float32(types.float32), codegen


@intrinsic
def _exponent(typingctx, x):
    """k (as a float32) with x = m·2^k, m ∈ [√2/2, √2), for a positive normal float32 x."""

    def codegen(context, builder, signature, args):
        return builder.sitofp(_log_split(builder, args[0])[1], ir.FloatType())

    return types.float32(types.float32), codegen


_LN2_HI = F(6.9314575195e-01)  # 0x3f317200: 8 trailing zero bits, k·_LN2_HI exact
_LN2_LO = F(1.4286067653e-06)  # ln 2 − _LN2_HI
_INV_LN2 = F(1.4426950409)
_SHIFTER = F(12582912.0)  # 1.5·2^23: y + SHIFTER rounds y to an integer
_HALF, _ONE, _TWO = F(0.5), F(1.0), F(2.0)
_E2, _E3, _E4, _E5, _E6, _E7 = (F(1.0 / f) for f in (2, 6, 24, 120, 720, 5040))  # 1/n!
_EXP_LO, _EXP_HI = F(-104.0), F(89.0)  # beyond: e^x rounds to 0 or overflows anyway
# log(1+f) = f − f²/2 + s(f²/2 + R(s²)) (fdlibm e_logf.c)
_LG1, _LG2 = F(0.66666662693), F(0.40000972152)
_LG3, _LG4 = F(0.28498786688), F(0.24279078841)
_TWO25 = F(33554432.0)
_SMALLEST_NORMAL = F(1.17549435e-38)
_INF = F(np.inf)
_NAN = F(np.nan)
# tanh x = x + x z N(z)/D(z): Lambert's continued fraction x/(1 + z/(3 + … z/11))
# (tests/runtime/test_vecmath32.py re-derives these integers from the fraction)
_TANH_N = (-3465.0, -189.0, -1.0)
_TANH_D = (10395.0, 4725.0, 210.0, 1.0)
_N0, _N1, _N2 = (F(c) for c in _TANH_N)
_D0, _D1, _D2, _D3 = (F(c) for c in _TANH_D)
_TANH_SMALL = F(0.8)
_TANH_EXP_MAX = F(40.0)  # 2|x| clamped here: tanh is ±1 in float32 long before


# fastmath={"contract"}: fused multiply-adds (one rounding for two; vecmath.exp64 says why
# the flag survives inlining into kernels compiled without it)
@njit(cache=True, error_model="numpy", fastmath={"contract"})
def _exp_reduced(y):
    """(exp(r), k) with y = k ln 2 + r, |r| ≤ ln2/2 (float32; k as an integer-valued float)."""
    kf = (y * _INV_LN2 + _SHIFTER) - _SHIFTER  # round(y / ln 2)
    r = (y - kf * _LN2_HI) - kf * _LN2_LO
    # 1 + (r + r²Q(r)): the rounding of the small tail r²Q(r) barely reaches the sum
    p = _ONE + (r + r * r * (_E2 + r * (_E3 + r * (_E4 + r * (_E5 + r * (_E6 + r * _E7))))))
    return p, kf


@njit(cache=True, error_model="numpy", fastmath={"contract"})
def exp32(x):
    """e^x for a float32 x to 1.05 ulp, branch-free."""
    y = x if x > _EXP_LO else _EXP_LO  # NaN fails both and is restored at the end
    y = y if y < _EXP_HI else _EXP_HI
    p, kf = _exp_reduced(y)
    k1 = (kf * _HALF + _SHIFTER) - _SHIFTER  # 2^k = 2^k1·2^k2, both halves normal
    out = p * _pow2(k1) * _pow2(kf - k1)
    return out if x == x else x


@njit(cache=True, error_model="numpy", fastmath={"contract"})
def log32(x):
    """ln x for a float32 x to 1 ulp, branch-free; log(0) = -inf, log(x<0) = NaN."""
    tiny = x < _SMALLEST_NORMAL
    xs = x * _TWO25 if tiny else x  # subnormals: scale into the normal range first
    m = _mantissa(xs)
    kf = _exponent(xs) - (F(25.0) if tiny else F(0.0))
    f = m - _ONE
    s = f / (_TWO + f)
    z = s * s
    w = z * z
    rz = z * (_LG1 + w * _LG3) + w * (_LG2 + w * _LG4)
    hfsq = _HALF * f * f
    out = kf * _LN2_HI - ((hfsq - (s * (hfsq + rz) + kf * _LN2_LO)) - f)
    out = out if x < _INF else x  # +inf, and NaN (fails the comparison) passes through
    out = out if x > F(0.0) else (-_INF if x == F(0.0) else _NAN)
    return out if x == x else x


@njit(cache=True, error_model="numpy", fastmath={"contract"})
def _lambert(z):
    """(N(z), D(z)) of tanh's continued fraction, in float32."""
    return _N0 + z * (_N1 + z * _N2), _D0 + z * (_D1 + z * (_D2 + z * _D3))


@njit(cache=True, error_model="numpy", fastmath={"contract"})
def tanh32(x):
    """tanh x for a float32 x to 1.1 ulp, branch-free."""
    ax = abs(x)
    small = ax < _TANH_SMALL
    z = x * x
    n, d = _lambert(z)
    p, kf = _exp_reduced(min(ax + ax, _TANH_EXP_MAX))
    e = p * _pow2(kf)
    # one division serves both branches: q = x z N/D (small) or 2/(e + 1) (large)
    q = (x * z * n if small else _TWO) / (d if small else e + _ONE)
    big = _ONE - q
    y = x + q if small else (big if x > F(0.0) else -big)
    return y if ax > F(0.0) else x  # ±0 keeps its sign; NaN passes
