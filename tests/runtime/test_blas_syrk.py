"""runtime/blas_syrk.py: UᵀU by BLAS syrk inside Numba, against numpy, and the CPU
emitter's choice of it for a GEMM whose operands are one buffer and its transpose."""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from symcurv.codegen import cpu
from symcurv.ops import lowering as lw
from symcurv.runtime.blas_syrk import syrk_tn


@njit(cache=False)
def _inside_numba(U, out):  # how the generated run() calls it
    syrk_tn(U, out)


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-13), (np.float32, 1e-5)])
def test_syrk_is_u_transpose_u(dtype, tol):
    rng = np.random.default_rng(0)
    U = rng.normal(size=(7, 5)).astype(dtype)
    out = np.full((5, 5), np.nan, dtype=dtype)  # every entry must be written
    _inside_numba(U, out)
    want = U.astype(np.float64).T @ U.astype(np.float64)
    assert np.abs(out - want).max() <= tol * np.abs(want).max()
    assert np.array_equal(out, out.T)


# Numba's note that np.vdot is faster on contiguous arrays: this test passes a strided view
@pytest.mark.filterwarnings("ignore::numba.core.errors.NumbaPerformanceWarning")
def test_non_contiguous_operand_and_empty_batch():
    rng = np.random.default_rng(1)
    U = rng.normal(size=(6, 8))[:, :5]  # a strided view: np.dot's path
    out = np.empty((5, 5))
    _inside_numba(U, out)
    assert np.allclose(out, U.T @ U, rtol=1e-13)
    out = np.full((3, 3), np.nan)
    _inside_numba(np.zeros((0, 3)), out)
    assert np.array_equal(out, np.zeros((3, 3)))


def test_emitter_prints_syrk_only_for_one_buffer_and_its_transpose():
    class Node:
        shape = (4, 3)

    g = {"u": Node(), "v": Node(), "o": Node()}
    st = {"u": "s1", "v": "s2", "o": "out"}
    same = lw.Gemm(lw.Mat("u", "B", 3, True), lw.Mat("u", "B", 3), lw.Mat("o", 3, 3))
    other = lw.Gemm(lw.Mat("u", "B", 3, True), lw.Mat("v", "B", 3), lw.Mat("o", 3, 3))
    assert cpu._gemm(same, g, st, {}) == ["syrk_tn(s1.reshape((B, 3)), out.reshape((3, 3)))"]
    assert cpu._gemm(other, g, st, {})[0].startswith("gemm(")
