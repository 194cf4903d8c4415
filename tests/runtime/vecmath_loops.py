"""Compiled loops over vecmath's exp, log and tanh, shared by test_vecmath.py (float64)
and test_vecmath32.py (float32): the dispatch by dtype happens when each loop compiles."""

import numpy as np
from numba import njit

from symcurv.runtime import vecmath as vm


@njit(error_model="numpy")
def exp_loop(x, out):
    for i in range(x.size):
        out[i] = vm.exp(x[i])


@njit(error_model="numpy")
def log_loop(x, out):
    for i in range(x.size):
        out[i] = vm.log(x[i])


@njit(error_model="numpy")
def tanh_loop(x, out):
    for i in range(x.size):
        out[i] = vm.tanh(x[i])


def check_exp(got, want, dtype, ulps, max_ulps: float, subnormal_tol: float) -> None:
    """An exp loop's results ``got`` (in ``dtype``) against float64/libm ``want``: within
    ``max_ulps`` (``ulps(got, want)``) where the result is a normal number of ``dtype``,
    within ``subnormal_tol`` (absolute) where it is subnormal, and exactly the rounded
    ``want`` elsewhere (0, inf, NaN); at least 1000 subnormal results must be tested."""
    tiny = np.finfo(dtype).tiny
    with np.errstate(over="ignore"):
        rounded = want.astype(dtype)  # inf where dtype overflows
    normal = (want >= tiny) & np.isfinite(rounded)
    assert ulps(got[normal], want[normal]).max() <= max_ulps
    sub = (want > 0) & (want < tiny)
    assert sub.sum() > 1000
    assert np.abs(got[sub] - want[sub]).max() <= subnormal_tol
    rest = ~normal & ~sub
    np.testing.assert_array_equal(got[rest], rounded[rest])
