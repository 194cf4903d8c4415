"""How many threads the BLAS behind Numba's ``np.dot`` runs: ``blas_threads()``, callable
from compiled code, asked again on every product.

symcurv's own product kernels (runtime/gemm_narrow.py, gemm_tiles.py) run on one thread.
They beat a one-thread OpenBLAS on narrow products, but a BLAS on several threads splits
the same product across cores and wins at B = 1000 (cp_net's X W0ᵀ on the 2-core VM: 163
µs by OpenBLAS on 2 threads, 203 by the narrow kernel, 284 by OpenBLAS on 1;
docs/benchmarks.md, "Session 13"). So ``gemm`` takes its own kernels only while the BLAS
runs one thread: ``OPENBLAS_NUM_THREADS=1``, ``threadpoolctl.threadpool_limits(1)``, or a
one-core machine. The count is read from the library each time (a plain C call), so a
limit set at run time is followed.

The library is the one scipy's ``cython_blas`` (Numba's BLAS) was linked to, found by
``dladdr`` on its ``dgemm``; its thread-count function is looked up under the names
OpenBLAS (scipy's and numpy's builds, plain and 64-bit), MKL and BLIS export. A BLAS
without one answers 0, "unknown", and keeps the BLAS for every product.
"""

from __future__ import annotations

import ctypes

import llvmlite.binding as llvm
from numba import types
from numba.extending import get_cython_function_address

# The thread-count getters, library by library (each returns a C int).
_GETTERS = (
    "scipy_openblas_get_num_threads",
    "scipy_openblas_get_num_threads64_",
    "openblas_get_num_threads",
    "openblas_get_num_threads64_",
    "MKL_Get_Max_Threads",
    "bli_thread_get_num_threads",
)
_SYMBOL = "symcurv_blas_threads"


class _DlInfo(ctypes.Structure):
    _fields_ = [
        ("dli_fname", ctypes.c_char_p),
        ("dli_fbase", ctypes.c_void_p),
        ("dli_sname", ctypes.c_char_p),
        ("dli_saddr", ctypes.c_void_p),
    ]


def blas_library() -> str | None:
    """The path of the shared library that holds scipy's (so Numba's) ``dgemm``."""
    address = get_cython_function_address("scipy.linalg.cython_blas", "dgemm")
    info = _DlInfo()
    try:
        found = ctypes.CDLL(None).dladdr(ctypes.c_void_p(address), ctypes.byref(info))
    except (AttributeError, OSError):  # no dladdr (not a POSIX loader)
        return None
    return info.dli_fname.decode() if found and info.dli_fname else None


def _getter():
    """(the library's thread-count function as a ctypes object, its name), or a stand-in
    that answers 0 (unknown) and None."""
    path = blas_library()
    if path is not None:
        lib = ctypes.CDLL(path)
        for name in _GETTERS:
            if hasattr(lib, name):
                fn = getattr(lib, name)
                fn.restype, fn.argtypes = ctypes.c_int, []
                return fn, name
    return ctypes.CFUNCTYPE(ctypes.c_int)(lambda: 0), None


_GET, GETTER_NAME = _getter()  # kept referenced: compiled code calls its address
llvm.add_symbol(_SYMBOL, ctypes.cast(_GET, ctypes.c_void_p).value)
# By symbol name, as blas_syrk.py binds syrk, so that a kernel calling it can be cached.
blas_threads = types.ExternalFunction(_SYMBOL, types.int32())


def threads() -> int:
    """The BLAS's thread count now, from Python (0: unknown)."""
    return int(_GET())


# OpenBLAS's name for the kernels it chose for this core, library by library (a C string).
_CORE_NAMES = (
    "scipy_openblas_get_corename",
    "scipy_openblas_get_corename64_",
    "openblas_get_corename",
    "openblas_get_corename64_",
)


def blas_core() -> str | None:
    """OpenBLAS's name for the kernels it runs on this core ("Haswell", "SkylakeX", ...),
    or None (another BLAS). An OpenBLAS older than the core picks the newest kernels it
    knows: on the Zen 5 VM of session 17 scipy's 0.3.30 runs "Haswell"'s AVX2 kernels,
    half the speed of the AVX-512 ones (runtime/gemm.py reads this)."""
    path = blas_library()
    if path is None:
        return None
    lib = ctypes.CDLL(path)
    for name in _CORE_NAMES:
        if hasattr(lib, name):
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = ctypes.c_char_p, []
            return fn().decode()
    return None
