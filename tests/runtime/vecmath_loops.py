"""Compiled loops over vecmath's exp, log and tanh, shared by test_vecmath.py (float64)
and test_vecmath32.py (float32): the dispatch by dtype happens when each loop compiles."""

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
