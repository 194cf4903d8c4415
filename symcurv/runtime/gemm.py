"""The GEMM step of the generated CPU drivers: ``gemm(a, b, out)``, out = a·b by BLAS.

The drivers are plain Python (codegen/cpu.py says why), so each product was numpy's
``np.dot(a, b, out)``. Called from Python, this compiled one-liner is Numba's ``np.dot``
instead: it calls the BLAS that scipy ships (``scipy.linalg.cython_blas``, as
``blas_syrk.py`` does) with less work per call. Measured on cp_net's products (one
thread, the 2-core Zen 4 VM, docs/benchmarks.md "Session 12"): the call costs 0.8 µs
against numpy's 1.0 at B = 1, the input gradient's 1000×20·20×256 product 243 µs against
264, a 20×1000·1000×20 product 15 µs against 25 (numpy takes its syrk path for aᵀa
there); the other shapes within 1 %. Each layout of the operands (C- or F-ordered views:
``W.reshape(...).T`` is F) is one compiled signature, cached on disk like every kernel.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def gemm(a, b, out):
    """out = a · b (2-D or 1-D float operands of one dtype; out C-contiguous)."""
    np.dot(a, b, out)


@njit(cache=True, nogil=True)
def gemm_pair(a, b1, b2, out1, out2):
    """out1 = a · b1 and out2 = a · b2 as one product a · [b1 b2] (b1, b2 of one shape):
    the BLAS reads ``a`` once and runs a kernel twice as wide (codegen/lower.py:
    ``pair_products``); the two column blocks are then copied out."""
    n = b1.shape[1]
    b = np.empty((b1.shape[0], 2 * n), dtype=b1.dtype)
    b[:, :n] = b1
    b[:, n:] = b2
    out = np.empty((a.shape[0], 2 * n), dtype=out1.dtype)
    np.dot(a, b, out)
    out1[:, :] = out[:, :n]
    out2[:, :] = out[:, n:]
