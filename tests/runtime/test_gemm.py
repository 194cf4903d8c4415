"""runtime/gemm.py: the drivers' BLAS step, out = a·b for every operand layout they pass."""

import numpy as np
import pytest

from symcurv.runtime.gemm import (
    DEPTH_PER_COLUMN_FLOAT32,
    DEPTH_PER_COLUMN_FLOAT64,
    NARROW_MAX_COLS,
    NARROW_MIN_DEPTH,
    NARROW_MIN_ROWS,
    gemm,
    gemm_pair,
    takes_narrow,
)


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


def _depth(dtype, n):
    """The shortest sum for which n columns are narrow."""
    per_col = DEPTH_PER_COLUMN_FLOAT64 if dtype == np.float64 else DEPTH_PER_COLUMN_FLOAT32
    return max(NARROW_MIN_DEPTH, n * per_col)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_which_products_are_narrow(dtype):
    """The narrow kernel takes long rows times a few columns, by dtype; the BLAS the rest."""

    def narrow(m, k, n):
        return takes_narrow(np.empty((m, k), dtype), np.empty((n, k), dtype).T)

    wide, rows = NARROW_MAX_COLS, NARROW_MIN_ROWS
    assert narrow(1000, _depth(dtype, wide), wide)
    assert narrow(rows, _depth(dtype, 1), 1)
    assert not narrow(1000, _depth(dtype, wide) - 1, wide)  # sums too short for N columns
    assert not narrow(1000, _depth(dtype, 1) - 1, 1)  # sums too short for any
    assert not narrow(1000, 10 * _depth(dtype, wide), wide + 1)  # too wide
    assert not narrow(rows - 1, _depth(dtype, 1), 1)  # too few rows
    assert narrow(1000, 256, 20)  # cp_net's first layer, both dtypes


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_narrow_products_equal_numpy_with_every_remainder(dtype):
    """Rows and columns left over from the 4 × 4 blocks (m % 4, n % 4 = 0-3), through
    ``gemm`` and ``gemm_pair`` as a driver calls them (W a transposed C-ordered array)."""
    rng = np.random.default_rng(1)
    k = _depth(dtype, 21)
    tol = 1e-12 if dtype == np.float64 else 2e-5
    for m in range(NARROW_MIN_ROWS, NARROW_MIN_ROWS + 4):
        for n in (1, 2, 3, 4, 5, 6, 7, 18, 21):
            X = rng.standard_normal((m, k + 3)).astype(dtype)
            W1, W2 = (rng.standard_normal((n, k + 3)).astype(dtype) for _ in range(2))
            assert takes_narrow(X, W1.T)
            out1, out2 = np.full((m, n), np.nan, dtype), np.full((m, n), np.nan, dtype)
            gemm(X, W1.T, out1)
            np.testing.assert_allclose(out1, X @ W1.T, rtol=tol, atol=tol * k)
            out1[...] = np.nan
            gemm_pair(X, W1.T, W2.T, out1, out2)
            np.testing.assert_allclose(out1, X @ W1.T, rtol=tol, atol=tol * k)
            np.testing.assert_allclose(out2, X @ W2.T, rtol=tol, atol=tol * k)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_narrow_products_pass_non_finite_numbers_on(dtype):
    """What the batch guard relies on (codegen/guards.py): NaN or ±inf anywhere in a row of
    X makes that row of X Wᵀ non-finite, inf under an all-zero weight included (inf·0 =
    NaN), as the BLAS does; the fast-math flags allow no shortcut past it."""
    k = _depth(dtype, 9)
    rng = np.random.default_rng(2)
    W = rng.standard_normal((9, k)).astype(dtype)
    W[:, 5] = 0.0
    for bad in (np.nan, np.inf, -np.inf):
        for row, col in ((0, 0), (9, 5), (10, k - 1), (3, 17)):
            X = rng.standard_normal((11, k)).astype(dtype)
            X[row, col] = bad
            out = np.empty((11, 9), dtype)
            gemm(X, W.T, out)
            assert not np.isfinite(out[row]).any(), (bad, row, col)
            assert np.isfinite(np.delete(out, row, axis=0)).all()
