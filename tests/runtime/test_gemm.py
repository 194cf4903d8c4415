"""runtime/gemm.py: the drivers' product step, out = a·b for every operand layout they
pass, by the BLAS or by symcurv's own kernels (gemm_narrow.py, gemm_tiles.py), which run
only while the BLAS runs one thread (blas_threads.py): the tests of those kernels set that
with threadpoolctl, as the benchmarks do with OPENBLAS_NUM_THREADS=1."""

import itertools
import os
import subprocess
import sys

import numpy as np
import pytest
import threadpoolctl
from threadpoolctl import threadpool_limits

from symcurv.runtime import blas_threads
from symcurv.runtime import gemm as gemm_module
from symcurv.runtime.gemm import (
    DEPTH_PER_COLUMN_FLOAT32,
    DEPTH_PER_COLUMN_FLOAT64,
    NARROW_MAX_COLS,
    NARROW_MIN_DEPTH,
    NARROW_MIN_ROWS,
    PAIR_MIN_ROWS,
    TILED_NN_MAX_COLS_FLOAT32,
    TILED_NN_MAX_COLS_FLOAT64,
    TILED_NN_MAX_DEPTH,
    TILED_NN_MIN_ROWS,
    TILED_NT_MAX_COLS,
    TILED_NT_MAX_DEPTH,
    TILED_NT_MIN_DEPTH,
    TILED_NT_MIN_ROWS,
    TILED_TN_MAX_COLS_FLOAT32,
    TILED_TN_MAX_COLS_FLOAT64,
    TILED_TN_MAX_ROWS_FLOAT32,
    TILED_TN_MAX_ROWS_FLOAT64,
    TILED_TN_MIN_CASES,
    gemm,
    gemm_pair,
    takes_narrow,
    takes_tiled_nn,
    takes_tiled_nt,
    takes_tiled_tn,
)
from symcurv.runtime.gemm_narrow import narrow_nt
from symcurv.runtime.gemm_tiles import (
    CASE_BLOCK,
    TALL_MIN_SUM_BYTES_NN,
    TALL_MIN_SUM_BYTES_NT,
    TILE_ROWS,
    TILE_VECTORS,
    VECTOR_BYTES,
    tiled_nn,
    tiled_nt,
    tiled_tn,
)


def test_gemm_is_recompiled_when_a_kernel_it_calls_changes():
    """Numba keys gemm's cache on gemm.py's text only, with the kernels compiled in: the
    hash of their files, written in gemm.py, must be current, or an edit of a kernel would
    leave the old one running from the cache."""
    current = gemm_module.kernels_source_hash()
    assert gemm_module.KERNELS_SOURCE_HASH == current, (
        f"one of runtime/{', runtime/'.join(gemm_module.KERNEL_FILES)} changed: set "
        f'KERNELS_SOURCE_HASH = "{current}" in runtime/gemm.py'
    )


@pytest.fixture
def serial_blas():
    """A one-thread BLAS for the test's duration: gemm then takes symcurv's kernels."""
    with threadpool_limits(limits=1, user_api="blas"):
        assert blas_threads.threads() == 1
        yield


def test_the_blas_core_is_one_threadpoolctl_reports():
    """The name of OpenBLAS's kernels for this core, read through the library behind
    Numba's BLAS, is one threadpoolctl reads from the OpenBLAS libraries loaded; it decides
    the float64 gᵀ·b limit."""
    core = blas_threads.blas_core()
    info = threadpoolctl.threadpool_info()
    assert core in {i.get("architecture") for i in info if i["internal_api"] == "openblas"}
    big = takes_tiled_tn(np.empty((1000, 1000)).T, np.empty((1000, 784)))
    assert big == gemm_module.BLAS_WITHOUT_AVX512


def test_the_blas_thread_count_is_read_on_every_call():
    """The count gemm asks follows a limit set at run time, from Python and compiled."""
    assert blas_threads.GETTER_NAME is not None, "this BLAS exports no thread count"
    with threadpool_limits(limits=1, user_api="blas"):
        assert blas_threads.threads() == 1
        assert _compiled_threads() == 1
    assert blas_threads.threads() >= 1


def _compiled_threads():
    from numba import njit

    return njit(lambda: blas_threads.blas_threads())()


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
    assert narrow(1000, 256, 20)  # cp_net's first layer, both dtypes
    # a few rows: too few for the blocks against a BLAS with AVX-512 kernels; where it has
    # none, any sum into at most NARROW_MAX_COLS columns (its call costs more)
    few = gemm_module.FEW_ROWS_OWN
    assert narrow(rows - 1, _depth(dtype, 1), 1) == few
    for m in (1, 3, gemm_module.FEW_ROWS - 1):
        assert narrow(m, 10, 20) == few and narrow(m, 1, wide) == few
        assert not narrow(m, 10, wide + 1)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_narrow_products_equal_numpy_with_every_remainder(dtype, serial_blas):
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
            narrow_nt(X, W1, out1)  # the kernel itself, whatever the BLAS's threads
            np.testing.assert_allclose(out1, X @ W1.T, rtol=tol, atol=tol * k)
            out1[...] = np.nan
            gemm_pair(X, W1.T, W2.T, out1, out2)
            np.testing.assert_allclose(out1, X @ W1.T, rtol=tol, atol=tol * k)
            np.testing.assert_allclose(out2, X @ W2.T, rtol=tol, atol=tol * k)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_narrow_blocks_equal_numpy_for_every_sum_length(dtype):
    """The 4 × 4 blocks' sums in whole vectors and a masked last step: lengths from one
    vector to many, a whole number of vectors or 1 and lanes − 1 past it (past a row's
    end lies the next row: a lane the mask let through would add its numbers)."""
    lanes = _lanes(dtype)
    rng = np.random.default_rng(7)
    tol = 1e-12 if dtype == np.float64 else 2e-5
    for k in sorted({lanes, lanes + 1, 2 * lanes - 1, 3 * lanes, 3 * lanes + 1, 16, 17, 100}):
        X, W = (rng.standard_normal((8, k)).astype(dtype) for _ in range(2))
        out = np.full((8, 8), np.nan, dtype)
        narrow_nt(X, W, out)
        np.testing.assert_allclose(out, X @ W.T, rtol=tol, atol=tol * k)


_AVX2 = """
import llvmlite.binding as llvm
_host = llvm.get_host_cpu_features
class _NoAvx512:  # this machine as an AVX2 one: gemm_tiles reads the flags at import
    def flatten(self):
        return ",".join(f for f in _host().flatten().split(",") if not f.startswith("+avx512"))
llvm.get_host_cpu_features = _NoAvx512
import numpy as np
import symcurv.runtime.gemm_narrow as gn
import symcurv.runtime.gemm_tiles as gt
assert (gt.VECTOR_BYTES, gt.TILE_VECTORS) == (32, 2)  # 8 float32 / 4 float64 lanes, 6 × 2
rng = np.random.default_rng(0)
for dt, tol in ((np.float32, 2e-5), (np.float64, 1e-12)):
    for k in (4, 5, 8, 9, 17, 31, 100):
        for m, n in ((4, 4), (8, 20), (13, 7)):
            a, b = rng.standard_normal((m, k)).astype(dt), rng.standard_normal((n, k)).astype(dt)
            out = np.full((m, n), np.nan, dt)
            gn.narrow_nt(a, b, out)
            np.testing.assert_allclose(out, a @ b.T, rtol=tol, atol=tol * k)
    # rows and columns left over, short and tall sums, gᵀ·b's transposed columns (m = 20)
    for m, k, n in ((11, 20, 37), (9, 130, 21), (6, 300, 8), (20, 70, 37)):
        a, b = rng.standard_normal((m, k)).astype(dt), rng.standard_normal((k, n)).astype(dt)
        for kernel, args in ((gt.tiled_nn, (a, b)), (gt.tiled_nt, (a, b.T.copy()))):
            out = np.full((m, n), np.nan, dt)
            kernel(*args, out)
            np.testing.assert_allclose(out, a @ b, rtol=tol, atol=tol * k)
        g, x = rng.standard_normal((k, m)).astype(dt), rng.standard_normal((k, n)).astype(dt)
        out = np.full((m, n), np.nan, dt)
        gt.tiled_tn(g, x, out)
        np.testing.assert_allclose(out, g.T @ x, rtol=tol, atol=tol * k)
"""


def test_kernels_at_the_avx2_width_equal_numpy(tmp_path):
    """On a machine without AVX-512 the vectors hold 8 or 4 numbers: the narrow blocks' lane
    sums end in 2 or 4 vectors, the tiles are 6 × 2 vectors. Compiled so in a fresh process
    that reads the CPU's flags without AVX-512, with its own Numba cache (a cached narrower
    kernel must never serve this machine's runs)."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    subprocess.run([sys.executable, "-c", _AVX2], env=env, check=True, timeout=600)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_narrow_products_pass_non_finite_numbers_on(dtype, serial_blas):
    """What the batch guard relies on (codegen/guards.py): NaN or ±inf anywhere in a row of
    X makes that row of X Wᵀ non-finite, inf under an all-zero weight included (inf·0 =
    NaN), as the BLAS does; the fast-math flags allow no shortcut past it."""
    k = _depth(dtype, 9) + 3  # a masked last step in both dtypes (19, 39)
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


def _lanes(dtype):
    return VECTOR_BYTES // np.dtype(dtype).itemsize


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_which_products_are_tiled(dtype):
    """a·b and a·wᵀ into an output up to about 1000 wide and gᵀ·b over many cases into
    an output up to 1000 × 1000 (float64: 500 × 500 against a BLAS with AVX-512 kernels)
    take the tiled kernels, column tails included, and narrow outputs too where the BLAS
    runs no AVX-512 kernels; the BLAS the rest."""
    lanes, e = _lanes(dtype), np.empty
    wide = TILE_VECTORS * lanes
    f64 = dtype == np.float64
    nn_cols = TILED_NN_MAX_COLS_FLOAT64 if f64 else TILED_NN_MAX_COLS_FLOAT32
    tn_rows = TILED_TN_MAX_ROWS_FLOAT64 if f64 else TILED_TN_MAX_ROWS_FLOAT32
    tn_cols = TILED_TN_MAX_COLS_FLOAT64 if f64 else TILED_TN_MAX_COLS_FLOAT32

    def nn(m, k, n):
        return takes_tiled_nn(e((m, k), dtype), e((k, n), dtype))

    def nt(m, k, n):
        return takes_tiled_nt(e((m, k), dtype), e((n, k), dtype).T)

    def tn(m, cases, n):
        return takes_tiled_tn(e((cases, m), dtype).T, e((cases, n), dtype))

    narrow = gemm_module.NARROW_OUTPUTS_TILED  # the BLAS runs no AVX-512 kernels here
    assert nn(1000, 20, 256) and tn(20, 1000, 256)  # cp_net's G W0 and Gᵀ X
    # cp_net's X W0ᵀ: narrow_nt's dot products in float32; the tiles' in float64 where
    # they take narrow outputs
    assert nt(1000, 256, 20) == (narrow and f64)
    assert nn(1000, 250, 500) and tn(250, 1000, 500)  # the autoencoder's: column tails
    assert nt(1000, 784, 1000) and nt(1000, 500, 250)
    rows = TILED_NN_MIN_ROWS
    assert nn(rows, TILED_NN_MAX_DEPTH, lanes) and not nn(rows - 1, 20, lanes)
    # narrow outputs, or a partial vector past them: the tiles' where they take them
    for n in (1, lanes - 1, lanes + 4, 20):
        assert nn(1000, 20, n) == narrow and tn(20, 1000, n) == narrow
        assert nt(1000, 10, n) == narrow  # a short sum: narrow_nt's in neither dtype
    assert nn(1000, 20, 2 * lanes) and nn(1000, 20, wide + 4)  # whole vectors; a tile
    assert not nn(1000, TILED_NN_MAX_DEPTH + 1, 256)  # sums too long
    assert nn(1000, 20, nn_cols) and not nn(1000, 20, nn_cols + 1)
    assert nn(1000, 20, 256 + 1) and tn(20, 1000, 256 + 1)  # a tail of one column
    assert nt(TILED_NT_MIN_ROWS, TILED_NT_MIN_DEPTH, wide) and nt(1000, 100, wide + 1)
    assert not nt(TILED_NT_MIN_ROWS - 1, 100, 256)  # too few rows for packing w
    assert not nt(1000, TILED_NT_MIN_DEPTH - 1, 256)
    assert nt(1000, TILED_NT_MAX_DEPTH, TILED_NT_MAX_COLS)
    assert not nt(1000, TILED_NT_MAX_DEPTH + 1, 256) and not nt(1000, 100, TILED_NT_MAX_COLS + 1)
    assert tn(20, 1000, tn_cols) and not tn(20, 1000, tn_cols + 1)
    assert tn(tn_rows, 1000, 256) and not tn(tn_rows + 1, 1000, 256)
    few_rows = gemm_module.TILED_TN_FEW_CASES_MAX_ROWS
    assert tn(30, TILED_TN_MIN_CASES, 256) and not tn(30, TILED_TN_MIN_CASES - 1, 256)
    # few cases: into a narrow gradient where the BLAS runs no AVX-512 kernels
    for cases in (1, TILED_TN_MIN_CASES - 1):
        assert tn(few_rows, cases, 256) == gemm_module.FEW_ROWS_OWN
        assert not tn(few_rows + 1, cases, 256)
    assert nn(1, 20, 20) == gemm_module.FEW_ROWS_OWN  # one case's G W
    assert tn(30, 1000, 256)  # two rows past the tiles: one pair


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_tiled_products_equal_numpy_with_every_remainder(dtype, serial_blas):
    """Rows left over from the tiles (0 to TILE_ROWS - 1: by 4-, 2- and 1-row tiles), over
    sums short (4-row tiles) and long (TILE_ROWS-row tiles); columns left over from the
    wide tiles (a tile of 1 to TILE_VECTORS vectors, the last masked to 1 to lanes
    numbers; or for gᵀ·b with many rows as the transpose), outputs narrower than a tile;
    for gᵀ·b cases over several blocks of CASE_BLOCK: the kernels themselves, and
    ``gemm`` with the layouts a driver passes (G W0: all C; Gᵀ X: G.T) wherever it takes
    them. A masked lane that wrote would show in the next row or past the output's end,
    where a guard of NaN-free numbers follows it."""
    rng = np.random.default_rng(3)
    lanes = _lanes(dtype)
    wide = TILE_VECTORS * lanes
    tol = 1e-12 if dtype == np.float64 else 2e-5
    cases = 2 * CASE_BLOCK + 7
    # sums short of the tall tiles' (4-row tiles) and long enough for them in a·b and a·wᵀ
    itemsize = np.dtype(dtype).itemsize
    depths = (20, -(-max(TALL_MIN_SUM_BYTES_NN, TALL_MIN_SUM_BYTES_NT) // itemsize) + 1)
    assert 20 * itemsize < min(TALL_MIN_SUM_BYTES_NN, TALL_MIN_SUM_BYTES_NT)
    # gᵀ·b with a tile's width of rows or more sums its left-over columns as their
    # transpose, whose own columns (out's rows) have every remainder too
    for m in [*range(TILE_ROWS, 2 * TILE_ROWS), wide, wide + lanes + 3]:
        # the last tile: none, 1 and 3 whole vectors, 1 number, 2 vectors but one number,
        # 3 vectors and one number (4 vectors, the last masked to one lane)
        tails = (0, lanes, 3 * lanes, 1, 2 * lanes - 1, 3 * lanes + 1)
        narrow = (1, lanes - 1, lanes + 4)  # only a tile of masked vectors
        widths = [*narrow, *(wide + t for t in tails), 2 * wide + 2 * lanes - 1]
        for n, k in itertools.product(widths, depths):
            a = rng.standard_normal((m, k)).astype(dtype)
            b = rng.standard_normal((k, n)).astype(dtype)
            g = rng.standard_normal((cases, m)).astype(dtype)
            x = rng.standard_normal((cases, n)).astype(dtype)
            if n >= wide or gemm_module.NARROW_OUTPUTS_TILED:  # gemm's too
                assert takes_tiled_nn(a, b) and takes_tiled_tn(g.T, x)
            for product, args, want, atol in (
                (tiled_nn, (a, b), a @ b, tol * k),
                (tiled_nt, (a, b.T.copy()), a @ b, tol * k),
                (tiled_tn, (g, x), g.T @ x, tol * cases),
                (gemm, (a, b), a @ b, tol * k),
                (gemm, (g.T, x), g.T @ x, tol * cases),
            ):
                buffer = np.full(want.size + 2 * wide, np.nan, dtype)
                buffer[want.size :] = 7.0  # the guard
                out = buffer[: want.size].reshape(want.shape)
                product(*args, out)
                msg = f"{m}×{k}×{n}"
                np.testing.assert_allclose(out, want, rtol=tol, atol=atol, err_msg=msg)
                assert (buffer[want.size :] == 7.0).all(), msg
    # a·wᵀ through gemm (enough rows for it), W a transposed C-ordered array as in a driver
    for m in (TILED_NT_MIN_ROWS, TILED_NT_MIN_ROWS + 3):
        for n in (wide, wide + 1, 3 * wide - lanes):
            X = rng.standard_normal((m, 30)).astype(dtype)
            W = rng.standard_normal((n, 30)).astype(dtype)
            assert takes_tiled_nt(X, W.T)
            out = np.full((m, n), np.nan, dtype)
            gemm(X, W.T, out)
            np.testing.assert_allclose(out, X @ W.T, rtol=tol, atol=tol * 30, err_msg=f"{m}×{n}")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_tiled_products_pass_non_finite_numbers_on(dtype, serial_blas):
    """NaN or ±inf in an operand makes every output it reaches non-finite (inf·0 = NaN
    included) and no other: the fused multiply-adds are IEEE, as in the BLAS."""
    rng = np.random.default_rng(4)
    lanes = _lanes(dtype)
    n = TILE_VECTORS * lanes + lanes + 3  # a wide tile, a one-vector tile and a tail
    for bad in (np.nan, np.inf, -np.inf):
        for row, col in ((0, 0), (5, 7), (2, 19), (7, 3), (10, 11)):
            # G W: rows 6-9 left over as a 4-row tile, row 10 alone
            G = rng.standard_normal((TILE_ROWS + 5, 20)).astype(dtype)
            W = rng.standard_normal((20, n)).astype(dtype)
            W[col] = 0.0  # the bad entry meets zeros only
            G[row, col] = bad
            for product, w in ((gemm, W), (tiled_nn, W), (tiled_nt, W.T.copy())):
                out = np.empty(G.shape[:1] + (n,), dtype)
                product(G, w, out)
                assert not np.isfinite(out[row]).any(), (bad, row, col)  # the tail too
                assert np.isfinite(np.delete(out, row, axis=0)).all()
            cases = CASE_BLOCK + 3  # Gᵀ X, the bad case in either block
            # 11 rows: left-over columns by one-vector tiles and the tail; a tile's width
            # and 2 more: as the transpose (the bad entry then among its scalars)
            for m in (TILE_ROWS + 5, n - lanes + 2):
                X = rng.standard_normal((cases, n)).astype(dtype)
                Gc = rng.standard_normal((cases, m)).astype(dtype)
                # a column of the wide tile, of the one-vector tile, of the tail
                bad_case, x_col = (row * 97) % cases, (col, n - lanes - 1, n - 1)[row % 3]
                X[bad_case, x_col] = bad
                for product, g in ((gemm, Gc.T), (tiled_tn, Gc)):
                    out = np.empty((m, n), dtype)
                    product(g, X, out)
                    assert not np.isfinite(out[:, x_col]).any(), (bad, bad_case, x_col, m)
                    assert np.isfinite(np.delete(out, x_col, axis=1)).all()
                Gc[bad_case, row], X[bad_case, x_col] = bad, 1.0  # now in g: out's row
                for product, g in ((gemm, Gc.T), (tiled_tn, Gc)):
                    out = np.empty((m, n), dtype)
                    product(g, X, out)
                    assert not np.isfinite(out[row]).any(), (bad, bad_case, row, m)
                    assert np.isfinite(np.delete(out, row, axis=0)).all()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("threads", [1, 2])
def test_a_pair_equals_two_products_however_it_runs(dtype, threads):
    """``gemm_pair`` packs [b1 b2] for many rows of a wide-enough a, runs two products for
    few rows or narrow operands; every way gives a·b1 and a·b2."""
    rng = np.random.default_rng(5)
    tol = 1e-12 if dtype == np.float64 else 2e-5
    with threadpool_limits(limits=threads, user_api="blas"):
        for m in (1, PAIR_MIN_ROWS - 1, PAIR_MIN_ROWS, 3 * PAIR_MIN_ROWS + 1):
            for k, n in ((20, 20), (_depth(dtype, 20), 20), (7, 100)):
                a = rng.standard_normal((m, k)).astype(dtype)
                W1, W2 = (rng.standard_normal((n, k)).astype(dtype) for _ in range(2))
                out1, out2 = np.full((m, n), np.nan, dtype), np.full((m, n), np.nan, dtype)
                gemm_pair(a, W1.T, W2.T, out1, out2)
                np.testing.assert_allclose(out1, a @ W1.T, rtol=tol, atol=tol * k)
                np.testing.assert_allclose(out2, a @ W2.T, rtol=tol, atol=tol * k)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_a_few_cases_equal_numpy_however_they_run(dtype, serial_blas):
    """A batch of 1 to FEW_ROWS cases through ``gemm`` with the layouts a driver passes:
    G W (a·b), H Wᵀ (a·wᵀ, narrow dot products) and Gᵀ H (gᵀ·b over the cases), by
    symcurv's kernels where the BLAS runs no AVX-512 kernels, else by the BLAS."""
    rng = np.random.default_rng(8)
    tol = 1e-12 if dtype == np.float64 else 2e-5
    for cases in (1, 2, 3, 5, gemm_module.FEW_ROWS - 1):
        for k, n in ((20, 20), (256, 20), (20, 256), (10, 3)):
            a, w = rng.standard_normal((cases, k)).astype(dtype), rng.standard_normal((n, k))
            w = w.astype(dtype)
            h = rng.standard_normal((cases, n)).astype(dtype)
            for x, y, shape in ((a, w.T, (cases, n)), (a, w.T.copy(), (cases, n))):
                out = np.full(shape, np.nan, dtype)
                gemm(x, y, out)
                np.testing.assert_allclose(out, x @ y, rtol=tol, atol=tol * k)
            out = np.full((k, n), np.nan, dtype)
            gemm(a.T, h, out)
            np.testing.assert_allclose(out, a.T @ h, rtol=tol, atol=tol * cases)
