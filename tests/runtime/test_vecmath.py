"""runtime/vecmath: the branch-free exp and log of the CPU kernels against numpy's libm, in
ulps, over the whole double range, the subnormals and the special values; tanh against an
extended-precision tanh (glibc's own is 2 ulp off in places); and a check that they really
vectorise (the reason they exist)."""

import re
from fractions import Fraction

import numpy as np
import pytest
from vecmath_loops import check_exp
from vecmath_loops import exp_loop as _exp_loop
from vecmath_loops import log_loop as _log_loop
from vecmath_loops import tanh_loop as _tanh_loop

from symcurv.runtime import vecmath as vm


def _ulps(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    """|got − want| in units of the spacing at want; 0 where equal (NaN equal to NaN)."""
    same = (got == want) | (np.isnan(got) & np.isnan(want))
    with np.errstate(all="ignore"):
        err = np.abs(got - want) / np.spacing(np.abs(want))
    return np.where(same, 0.0, err)


SPECIAL = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1.0, -1.0, 5e-324, -5e-324])


def test_exp_within_one_ulp_over_the_whole_range():
    rng = np.random.default_rng(0)
    x = np.concatenate(
        [
            rng.uniform(-800.0, 800.0, 400_000),  # overflow and underflow on both sides
            rng.uniform(-708.4, 709.8, 400_000),  # normal results
            rng.normal(size=100_000),
            rng.uniform(-1e-8, 1e-8, 10_000),
            np.array([709.782712893384, 709.7827128933841, -708.3964185322641, -745.1332191019411]),
            np.array([-745.1332191019412, -744.44, -740.0, -720.0, 1e-300, -1e-300]),
            SPECIAL,
        ]
    )
    got = np.empty_like(x)
    _exp_loop(x, got)
    with np.errstate(over="ignore", under="ignore"):
        want = np.exp(x)
    # subnormal results: within one unit of the smallest subnormal; 0, inf, NaN as libm
    check_exp(got, want, np.float64, _ulps, max_ulps=1.0, subnormal_tol=5e-324)
    assert np.isnan(got[np.isnan(x)]).all() and got[x == np.inf][0] == np.inf


def test_log_within_one_ulp_over_every_binade():
    rng = np.random.default_rng(1)
    # random bit patterns of positive doubles: every binade, subnormals included
    bits = rng.integers(1, 0x7FF0000000000000, 1_000_000, dtype=np.int64).view(np.float64)
    x = np.concatenate(
        [
            bits,
            rng.uniform(0.5, 2.0, 300_000),
            1.0 + rng.uniform(-1e-9, 1e-9, 10_000),  # log near 1: no cancellation loss
            np.array([np.finfo(np.float64).max, np.finfo(np.float64).tiny, np.e, 2.0, 0.5]),
            -rng.uniform(0, 10, 100),  # negative → NaN
            SPECIAL,
        ]
    )
    got = np.empty_like(x)
    _log_loop(x, got)
    with np.errstate(divide="ignore", invalid="ignore"):
        want = np.log(x)
    assert (bits < np.finfo(np.float64).tiny).sum() > 0  # subnormal inputs were drawn
    assert _ulps(got, want).max() <= 1.0
    np.testing.assert_array_equal(got[~np.isfinite(want)], want[~np.isfinite(want)])


def _tanh_exact(x: np.ndarray) -> np.ndarray:
    """tanh in extended precision (x86's 64-bit-mantissa long double), else via mpmath."""
    if np.finfo(np.longdouble).nmant >= 63:
        return np.tanh(x.astype(np.longdouble))
    import mpmath

    with mpmath.workdps(30):
        return np.array([float(mpmath.tanh(mpmath.mpf(float(v)))) for v in x])


def test_tanh_within_1_1_ulp_over_the_whole_range():
    rng = np.random.default_rng(2)
    bits = rng.integers(1, 0x7FF0000000000000, 200_000, dtype=np.int64).view(np.float64)
    x = np.concatenate(
        [
            rng.uniform(-3.0, 3.0, 300_000),  # both formulas and the switch at |x| = 0.8
            rng.uniform(0.7, 0.9, 100_000) * rng.choice([-1.0, 1.0], 100_000),
            rng.uniform(-25.0, 25.0, 20_000),  # up to where tanh rounds to ±1
            bits * rng.choice([-1.0, 1.0], bits.size),  # every binade: tiny (tanh x = x,
            rng.uniform(-1e-8, 1e-8, 10_000),  # subnormals included) and huge
            np.array([0.8, -0.8, np.nextafter(0.8, 0.0), 19.0, 22.0, 354.0, 356.0, 710.0]),
            np.array([1e300, -1e300, np.finfo(np.float64).max, 1e-310, -1e-310]),
            SPECIAL,
        ]
    )
    got = np.empty_like(x)
    _tanh_loop(x, got)
    exact = _tanh_exact(x[np.isfinite(x)])
    want = exact.astype(np.float64)
    fin = got[np.isfinite(x)]
    with np.errstate(invalid="ignore"):
        err = np.abs(fin.astype(exact.dtype) - exact) / np.spacing(np.abs(want))
    assert np.where(fin == want, 0.0, err).max() <= 1.1
    # for the tiny and the subnormal x, tanh x = x exactly; the sign of ±0 is kept
    tiny = np.abs(x) < 1e-9
    np.testing.assert_array_equal(got[tiny], x[tiny])
    assert np.signbit(got[x == 0]).sum() == np.signbit(x[x == 0]).sum() > 0
    np.testing.assert_array_equal(got[np.isinf(x)], np.sign(x[np.isinf(x)]))
    assert np.isnan(got[np.isnan(x)]).all()


def test_tanh_coefficients_are_lamberts_continued_fraction():
    """x/(1 + z/(3 + z/(5 + … z/19))), z = x², as x + x z N(z)/D(z): the integers in
    vecmath, recomputed exactly from the fraction (polynomials as coefficient lists)."""

    def add(p, q):
        n = max(len(p), len(q))
        return [(p[i] if i < len(p) else 0) + (q[i] if i < len(q) else 0) for i in range(n)]

    num, den = [Fraction(19)], [Fraction(1)]  # the tail 19 as num/den
    for k in range(8, -1, -1):  # (2k + 1) + z/(num/den) = ((2k + 1) num + z den)/num
        num, den = add([(2 * k + 1) * c for c in num], [0, *den]), num
    # tanh x / x = den/num = 1 + z N/D  =>  D = num, z N = den − num
    zn = add(den, [-c for c in num])
    assert zn[0] == 0
    assert [float(c) for c in num] == list(vm._TANH_D)
    assert [float(c) for c in zn[1:]] == list(vm._TANH_N)


@pytest.mark.parametrize("loop", [_exp_loop, _log_loop, _tanh_loop], ids=["exp", "log", "tanh"])
def test_a_loop_over_them_is_vector_code(loop):
    """The point of the module: LLVM turns the loop into packed (2- or 4-wide) float64
    instructions. Counted in the loop's assembly; a scalar libm call would show none."""
    sig = next(s for s in loop.signatures if str(s[0].dtype) == "float64")  # (shared loops)
    asm = loop.inspect_asm(sig)
    packed = re.findall(r"\bv?(?:mul|add|sub|div|fmadd\w*)pd\s", asm)
    assert len(packed) >= 10, "no packed double arithmetic: the loop did not vectorise"


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_logsumexp_rows_in_blocks_matches_a_row_by_row_reference(dtype):
    """logsumexp_rows takes vm.LSE_ROWS rows per flat exp loop: every row count (a last
    block that is partial, a single row) and width (1, narrow, wider than a vector) must
    give each row's own m + log Σ e^(x − m), with rows of very different scales and an
    infinite entry kept (−inf contributes 0, a row's +inf max is its result)."""
    rng = np.random.default_rng(3)
    for rows in (1, vm.LSE_ROWS - 1, vm.LSE_ROWS, vm.LSE_ROWS + 1, 3 * vm.LSE_ROWS + 5):
        for n in (1, 3, 10, 37):
            x = rng.standard_normal((rows, n)) * rng.choice([1e-3, 1.0, 300.0], (rows, 1))
            x = x.astype(dtype)
            if n > 1:
                x[0, 1] = -np.inf
            out = np.full((rows, 1), np.nan, dtype=dtype)
            vm.logsumexp_rows(x, out)
            x64 = x.astype(np.float64)
            m = x64.max(axis=1, keepdims=True)
            want = m + np.log(np.exp(x64 - m).sum(axis=1, keepdims=True))
            tol = 1e-14 if dtype == np.float64 else 2e-6
            np.testing.assert_allclose(out, want, rtol=tol, atol=tol)
