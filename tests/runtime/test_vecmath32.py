"""runtime/vecmath32: the float32 exp, log and tanh that float32 CPU builds call (through
``vecmath.exp``/``log``/``tanh``), in float32 ulps against float64 references (numpy's
libm in float64, tanh in extended precision) over the whole float32 range, the subnormals
and the special values; and checks that a loop over them is 16-lane float32 vector code
and that the float64 path is unchanged by the dispatch."""

import re
from fractions import Fraction

import numpy as np
import pytest
from vecmath_loops import check_exp
from vecmath_loops import exp_loop as _exp_loop
from vecmath_loops import log_loop as _log_loop
from vecmath_loops import tanh_loop as _tanh_loop

from symcurv.runtime import vecmath as vm
from symcurv.runtime import vecmath32 as vm32


def _ulps32(got: np.ndarray, want64: np.ndarray) -> np.ndarray:
    """|got − want| in float32 ulps at want (want in float64 or better); 0 where got is
    want rounded to float32 (NaN equal to NaN)."""
    rounded = want64.astype(np.float32)
    same = (got == rounded) | (np.isnan(got) & np.isnan(rounded))
    with np.errstate(all="ignore"):
        spacing = np.spacing(np.abs(rounded)).astype(want64.dtype)
        err = np.abs(got.astype(want64.dtype) - want64) / spacing
    return np.where(same, 0.0, err).astype(np.float64)


SPECIAL = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1.0, -1.0, 1e-45, -1e-45], np.float32)
TINY32 = float(np.finfo(np.float32).tiny)


def _run(loop, x: np.ndarray) -> np.ndarray:
    out = np.empty_like(x)
    loop(x, out)
    assert out.dtype == np.float32
    return out


def test_exp32_within_1_05_ulp_over_the_whole_range():
    rng = np.random.default_rng(10)
    x = np.concatenate(
        [
            rng.uniform(-110.0, 95.0, 300_000),  # overflow and underflow on both sides
            rng.uniform(-87.3, 88.7, 300_000),  # normal results
            rng.normal(size=100_000),
            rng.uniform(-1e-6, 1e-6, 10_000),
            [88.72283, 88.72284, -87.33654, -103.97, -103.28, 1e-30, -1e-30],
        ]
    ).astype(np.float32)
    x = np.concatenate([x, SPECIAL])
    got = _run(_exp_loop, x)
    want = np.exp(x.astype(np.float64))
    # subnormal results: within one smallest subnormal; 0, inf, NaN: the rounded value
    check_exp(got, want, np.float32, _ulps32, max_ulps=1.05, subnormal_tol=1.5e-45)


def test_log32_within_one_ulp_over_every_binade():
    rng = np.random.default_rng(11)
    bits = rng.integers(1, 0x7F800000, 400_000, dtype=np.int32).view(np.float32)
    x = np.concatenate(
        [
            bits,  # every binade, subnormals included
            rng.uniform(0.5, 2.0, 200_000).astype(np.float32),
            (1.0 + rng.uniform(-1e-6, 1e-6, 10_000)).astype(np.float32),  # near 1
            np.array([np.finfo(np.float32).max, TINY32, np.e, 2.0, 0.5], np.float32),
            -rng.uniform(0, 10, 100).astype(np.float32),  # negative → NaN
            SPECIAL,
        ]
    )
    got = _run(_log_loop, x)
    with np.errstate(divide="ignore", invalid="ignore"):
        want = np.log(x.astype(np.float64))
    assert (bits < TINY32).sum() > 0  # subnormal inputs were drawn
    assert _ulps32(got, want).max() <= 1.0
    bad = ~np.isfinite(want)
    np.testing.assert_array_equal(got[bad], want[bad].astype(np.float32))


def test_tanh32_within_1_1_ulp_over_the_whole_range():
    rng = np.random.default_rng(12)
    bits = rng.integers(1, 0x7F800000, 200_000, dtype=np.int32).view(np.float32)
    x = np.concatenate(
        [
            rng.uniform(-3.0, 3.0, 300_000),  # both formulas and the switch at |x| = 0.8
            rng.uniform(0.7, 0.9, 100_000) * rng.choice([-1.0, 1.0], 100_000),
            rng.uniform(-12.0, 12.0, 20_000),  # up to where tanh rounds to ±1
            bits * rng.choice([-1.0, 1.0], bits.size),  # every binade, tiny and huge
            [0.8, -0.8, np.nextafter(np.float32(0.8), np.float32(0)), 9.0, 20.0, 1e30, 3e38],
        ]
    ).astype(np.float32)
    x = np.concatenate([x, SPECIAL])
    got = _run(_tanh_loop, x)
    fin = np.isfinite(x)
    want = np.tanh(x[fin].astype(np.longdouble))  # extended precision where the platform has it
    assert _ulps32(got[fin], want).max() <= 1.1
    tiny = np.abs(x) < 1e-6  # tanh x = x exactly, subnormals included; ±0 keeps its sign
    np.testing.assert_array_equal(got[tiny], x[tiny])
    assert np.signbit(got[x == 0]).sum() == np.signbit(x[x == 0]).sum() > 0
    np.testing.assert_array_equal(got[np.isinf(x)], np.sign(x[np.isinf(x)]))
    assert np.isnan(got[np.isnan(x)]).all()


def _add(p, q):
    n = max(len(p), len(q))
    return [(p[i] if i < len(p) else 0) + (q[i] if i < len(q) else 0) for i in range(n)]


def test_tanh32_coefficients_are_lamberts_continued_fraction():
    """x/(1 + z/(3 + z/(5 + … z/11))), z = x², as x + x z N(z)/D(z): the integers in
    vecmath32, recomputed exactly from the fraction (polynomials as coefficient lists)."""
    num, den = [Fraction(11)], [Fraction(1)]  # the tail 11 as num/den
    for k in range(4, -1, -1):  # (2k + 1) + z/(num/den) = ((2k + 1) num + z den)/num
        num, den = _add([(2 * k + 1) * c for c in num], [0, *den]), num
    zn = _add(den, [-c for c in num])  # tanh x / x = den/num = 1 + z N/D
    assert zn[0] == 0
    assert [float(c) for c in num] == list(vm32._TANH_D)
    assert [float(c) for c in zn[1:]] == list(vm32._TANH_N)
    assert all(float(np.float32(c)) == c for c in vm32._TANH_D + vm32._TANH_N)  # exact in f32


@pytest.mark.parametrize("loop", [_exp_loop, _log_loop, _tanh_loop], ids=["exp", "log", "tanh"])
def test_a_float32_loop_is_float32_vector_code(loop):
    """Dispatched on float32, the loop is packed single-precision arithmetic and converts
    nothing to double (the float64 routine would: cvtps2pd and packed-double work)."""
    x = np.linspace(0.1, 2.0, 64, dtype=np.float32)
    loop(x, np.empty_like(x))
    sig = next(s for s in loop.signatures if str(s[0].dtype) == "float32")
    asm = loop.inspect_asm(sig)
    assert len(re.findall(r"\bv?(?:mul|add|sub|div|fmadd\w*)ps\s", asm)) >= 8
    assert not re.search(r"\bv?cvtps2pd\b|\bv?(?:mul|add|div)pd\b", asm)


def test_python_calls_dispatch_by_dtype():
    assert vm.tanh(np.float32(0.5)) == vm32.tanh32(np.float32(0.5))
    assert vm.tanh(0.5) == vm.tanh64(0.5) != vm.tanh(np.float32(0.5))
    assert vm.exp(1.0) == vm.exp64(1.0) and vm.log(np.float32(2.0)) == vm32.log32(np.float32(2.0))
