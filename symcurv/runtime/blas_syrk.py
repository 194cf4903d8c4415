"""Symmetric rank-k products UᵀU for the compiled CPU kernels: BLAS ``dsyrk``/``ssyrk``.

A K-FAC factor is Σ_b u_b u_bᵀ = UᵀU with the cases as the rows of U (``outer_bsum`` with
the same operand twice). numpy's ``np.dot(U.T, U)`` notices the shared buffer and calls
``syrk`` — half a GEMM's multiply-adds, one triangle —, but Numba's ``np.dot`` (what the
generated ``run`` functions call) always calls ``gemm``. ``syrk_tn(U, out)`` calls the
BLAS routine that scipy exports (``scipy.linalg.cython_blas``, the same library
numpy/Numba use) through a ctypes pointer Numba can call, then mirrors the triangle.

Layout: U is C-contiguous B × n, i.e. column-major n × B with leading dimension n; with
``trans = 'N'`` syrk forms (n × B)(n × B)ᵀ = UᵀU, column-major n × n, whose upper triangle
is the C-order lower one. An operand that is not C-contiguous takes ``np.dot``.
"""

from __future__ import annotations

import llvmlite.binding as llvm
import numpy as np
from numba import njit, types
from numba.extending import get_cython_function_address

# The routines are bound by symbol name, not by a ctypes pointer held in a global: Numba
# can cache a function that calls an ExternalFunction (the symbol is added again on every
# import, before any cached kernel is loaded), but not one holding a ctypes pointer.
# void ?syrk(char *uplo, char *trans, int *n, int *k, T *alpha, T *a, int *lda, T *beta,
#            T *c, int *ldc)
_SIGNATURE = types.void(*[types.voidptr] * 10)
for _name in ("dsyrk", "ssyrk"):
    llvm.add_symbol(
        f"symcurv_{_name}", get_cython_function_address("scipy.linalg.cython_blas", _name)
    )
_dsyrk = types.ExternalFunction("symcurv_dsyrk", _SIGNATURE)
_ssyrk = types.ExternalFunction("symcurv_ssyrk", _SIGNATURE)


@njit(cache=True)
def _mirror_lower_to_upper(out):
    """out[i, j] = out[j, i] for j > i: C order's lower triangle holds the result."""
    n = out.shape[0]
    for i in range(n):
        for j in range(i + 1, n):
            out[i, j] = out[j, i]


@njit(cache=True)
def syrk_tn(U, out):
    """out = Uᵀ U (U: B × n, out: n × n, both C-contiguous float64 or float32)."""
    if not (U.flags.c_contiguous and out.flags.c_contiguous):
        np.dot(U.T, U, out)
        return
    B, n = U.shape
    ints = np.array([n, B, n, n], dtype=np.int32)  # n, k, lda, ldc
    scalars = np.array([1.0, 0.0], dtype=U.dtype)  # alpha, beta
    flags = np.array([ord("U"), ord("N")], dtype=np.uint8)  # uplo, trans
    if n == 0:
        return
    if B == 0:
        out[:] = 0.0
        return
    args = (flags[0:].ctypes, flags[1:].ctypes, ints[0:].ctypes, ints[1:].ctypes)
    a = (scalars[0:].ctypes, U.ctypes, ints[2:].ctypes, scalars[1:].ctypes)
    c = (out.ctypes, ints[3:].ctypes)
    if U.itemsize == 8:  # the pointers carry no type: the routine must match the dtype
        _dsyrk(*args, *a, *c)
    else:
        _ssyrk(*args, *a, *c)
    _mirror_lower_to_upper(out)
