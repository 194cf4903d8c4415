"""runtime/gemm.py: the drivers' BLAS step, out = a·b for every operand layout they pass."""

import numpy as np
import pytest

from symcurv.runtime.gemm import gemm


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_gemm_equals_numpy_on_the_layouts_a_driver_passes(dtype):
    """C and F (a transposed view of a reshaped parameter), a matrix-vector product, an
    output that is a reshaped view of flat storage (codegen/cpu.py: ``_mat`` passes no
    other layouts)."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((7, 5)).astype(dtype)
    flat = rng.standard_normal(15).astype(dtype)
    W = flat.reshape((3, 5))
    G = rng.standard_normal((7, 3)).astype(dtype)
    cases = [
        (X, W.T, np.empty((7, 3), dtype)),  # X Wᵀ: F-ordered view
        (G, W, np.empty((7, 5), dtype)),  # G W
        (G.T, X, np.empty(15, dtype).reshape((3, 5))),  # Gᵀ X into flat storage
        (X, flat[:5], np.empty(7, dtype)),  # matrix-vector
    ]
    tol = 1e-12 if dtype == np.float64 else 1e-5
    for a, b, out in cases:
        out[...] = np.nan
        gemm(a, b, out)
        np.testing.assert_allclose(out, np.dot(a, b), rtol=tol, atol=tol)
