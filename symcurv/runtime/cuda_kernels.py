"""The model-independent CUDA kernels that generated cuda files call (imported as ``ck``).

A generated cuda file holds what is particular to its program: the scalar formulas of each
fusion group as device functions and one ``@cuda.jit`` map kernel per group. Everything
else is the same template for every model — the tiled GEMM, the batched mat-vec, the
reductions over features and over the batch, fills, copies and transposes — so it lives
here once, as plain Numba-CUDA source that can be read, tested and tuned in one place,
compiled once per process (per variant and dtype) however many programs and models use it,
and kept out of the generated files, which stay short. Each call site in a generated file
names the variant it uses (``ck.gemm(a, b, c, trans_b=True)``).

The host functions here launch on device arrays; the geometry (threads per block, GEMM
tiles, grid caps) comes from ``runtime.cuda_geometry`` and every kernel loops grid-stride,
so results never depend on the launch configuration. Reductions are shared-memory trees
with a fixed order: the same inputs give the same bits on every call.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Sequence

import numba
import numpy as np
from numba import config, cuda

from symcurv import errors
from symcurv.runtime import cuda_geometry, noise
from symcurv.runtime.backends import is_device

SIMULATED = bool(config.ENABLE_CUDASIM)
if SIMULATED:  # shared arrays must be shared by a block's threads (see cuda_simulator.py)
    from symcurv.runtime import cuda_simulator

    cuda_simulator.install()
# SYMCURV_CUDA_GEOMETRY=gpu runs the GPU geometry in the simulator too (the tests do, once)
GEOMETRY = cuda_geometry.select(SIMULATED, os.environ.get("SYMCURV_CUDA_GEOMETRY"))
THREADS = GEOMETRY.threads  # a compile-time constant of every block-reduction kernel


def available() -> bool:
    """A usable GPU, or the CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``)."""
    try:
        return bool(cuda.is_available())
    except Exception:  # a broken driver install raises instead of answering False
        return False


def require(where: str | None = None) -> None:
    """Raise a BuildError naming what to install when no GPU and no simulator is present."""
    if not available():
        raise errors.BuildError(
            "backend 'cuda' needs an NVIDIA GPU with a working driver, or the CUDA simulator",
            where=where,
            fix="install the NVIDIA driver and the CUDA toolkit for Numba (see Numba's CUDA "
            "installation docs), or set NUMBA_ENABLE_CUDASIM=1 in the environment BEFORE "
            "numba is imported to run the kernels in the (slow) simulator",
        )


# ---- launch geometry ------------------------------------------------------------------------
def blocks(n: int, threads: int = THREADS) -> int:
    """Blocks of a 1-D grid-stride launch over ``n`` items, capped."""
    return max(1, min(math.ceil(n / threads), GEOMETRY.max_blocks))


def lanes(n: int) -> int:
    """Threads per row of a row reduction over ``n`` features (a power of two)."""
    return cuda_geometry.lanes(n, GEOMETRY)


def row_blocks(rows: int, n: int) -> int:
    """Blocks of a row-reduction launch over ``rows`` rows of ``n`` features."""
    return blocks(rows, THREADS // lanes(n))


# ---- block reductions (device functions) ----------------------------------------------------
# Every thread of the block must call these (they synchronise). A row owns `lanes`
# consecutive threads; the tree halves the stride each step, so the order of the additions
# is fixed by the geometry alone.
@cuda.jit(device=True)
def segment_sum(buf, x, lanes):
    """Σ of ``x`` over each run of ``lanes`` consecutive threads, returned to all of them."""
    t = cuda.threadIdx.x
    buf[t] = x
    cuda.syncthreads()
    s = lanes // 2
    while s > 0:
        if t % lanes < s:
            buf[t] += buf[t + s]
        cuda.syncthreads()
        s //= 2
    total = buf[t - t % lanes]
    cuda.syncthreads()  # buf is free again before anyone writes it
    return total


@cuda.jit(device=True)
def segment_max(buf, x, lanes):
    """max of ``x`` over each run of ``lanes`` consecutive threads."""
    t = cuda.threadIdx.x
    buf[t] = x
    cuda.syncthreads()
    s = lanes // 2
    while s > 0:
        if t % lanes < s:
            if buf[t + s] > buf[t]:  # not max(): numba#10753 (see symbolic/printer.py)
                buf[t] = buf[t + s]
        cuda.syncthreads()
        s //= 2
    total = buf[t - t % lanes]
    cuda.syncthreads()
    return total


# ---- GEMM: C (=|+=) op(A) op(B), tiled in shared memory, register-blocked ------------------
@functools.cache
def gemm_kernel(
    trans_a: bool, trans_b: bool, accumulate: bool, dtype: str, geo: cuda_geometry.Geometry
) -> Callable:
    """One kernel per (transA, transB, accumulate, dtype, geometry): the flags are closure
    constants, so Numba compiles each variant without the untaken branches.

    A block computes a tile_m × tile_n tile of C; per k-step its threads stage
    op(A)[tile_m × tile_k] and op(B)[tile_k × tile_n] in shared memory (k-major, so the inner
    product reads rows of both), then each thread accumulates a reg_m × reg_n block of C in
    registers. A thread's rows and columns are strided by the thread-block shape, so
    neighbouring threads write neighbouring columns (coalesced) and read distinct banks.
    Loads are arranged so that consecutive threads read consecutive addresses of the stored
    (possibly transposed) operand. Out-of-range elements are staged as zeros."""
    bm, bn, bk, rm, rn = geo.tile_m, geo.tile_n, geo.tile_k, geo.reg_m, geo.reg_n
    ntx, nty = geo.gemm_threads
    nthreads = ntx * nty
    dt = numba.from_dtype(np.dtype(dtype))  # a Numba type: shared/local arrays

    @cuda.jit
    def gemm(a, b, c, M, N, K):
        sa = cuda.shared.array((bk, bm), dt)
        sb = cuda.shared.array((bk, bn), dt)
        acc = cuda.local.array((rm, rn), dt)
        ra = cuda.local.array(rm, dt)
        rb = cuda.local.array(rn, dt)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        tid = ty * ntx + tx
        for m0 in range(cuda.blockIdx.y * bm, M, cuda.gridDim.y * bm):
            for n0 in range(cuda.blockIdx.x * bn, N, cuda.gridDim.x * bn):
                for r in range(rm):
                    for s in range(rn):
                        acc[r, s] = 0
                for k0 in range(0, K, bk):
                    for e in range(tid, bm * bk, nthreads):
                        if trans_a:  # A stored K × M: consecutive threads, consecutive m
                            kk = e // bm
                            mm = e - kk * bm
                        else:  # A stored M × K: consecutive threads, consecutive k
                            mm = e // bk
                            kk = e - mm * bk
                        m = m0 + mm
                        k = k0 + kk
                        if m < M and k < K:
                            sa[kk, mm] = a[k, m] if trans_a else a[m, k]
                        else:
                            sa[kk, mm] = 0
                    for e in range(tid, bn * bk, nthreads):
                        if trans_b:  # B stored N × K
                            nn = e // bk
                            kk = e - nn * bk
                        else:  # B stored K × N
                            kk = e // bn
                            nn = e - kk * bn
                        n = n0 + nn
                        k = k0 + kk
                        if n < N and k < K:
                            sb[kk, nn] = b[n, k] if trans_b else b[k, n]
                        else:
                            sb[kk, nn] = 0
                    cuda.syncthreads()
                    for kk in range(bk):
                        for r in range(rm):
                            ra[r] = sa[kk, ty + r * nty]
                        for s in range(rn):
                            rb[s] = sb[kk, tx + s * ntx]
                        for r in range(rm):
                            for s in range(rn):
                                acc[r, s] += ra[r] * rb[s]
                    cuda.syncthreads()  # the tiles are overwritten by the next k-step
                for r in range(rm):
                    m = m0 + ty + r * nty
                    for s in range(rn):
                        n = n0 + tx + s * ntx
                        if m < M and n < N:
                            if accumulate:
                                c[m, n] += acc[r, s]
                            else:
                                c[m, n] = acc[r, s]

    return gemm


def gemm(
    a,
    b,
    c,
    trans_a: bool = False,
    trans_b: bool = False,
    accumulate: bool = False,
    geo: cuda_geometry.Geometry | None = None,
) -> None:
    """``c = op(a) @ op(b)`` (``+=`` when ``accumulate``), op(x) = xᵀ when its flag is set.
    All three are 2-D device arrays; a transposed operand is read in place, never copied."""
    geo = geo or GEOMETRY
    M, N = c.shape
    K = a.shape[0] if trans_a else a.shape[1]
    kb = b.shape[1] if trans_b else b.shape[0]
    rows_a = a.shape[1] if trans_a else a.shape[0]
    cols_b = b.shape[0] if trans_b else b.shape[1]
    if rows_a != M or cols_b != N or kb != K:  # the emitter's shapes are wrong: a symcurv bug
        raise errors.IRError(
            f"gemm of op(A) {rows_a}×{K} and op(B) {kb}×{cols_b} into C {M}×{N}",
            fix="report this with the model: the generated call does not fit its buffers",
        )
    kernel = gemm_kernel(trans_a, trans_b, accumulate, str(np.dtype(c.dtype)), geo)
    grid = (
        max(1, min(math.ceil(N / geo.tile_n), geo.max_blocks)),
        max(1, min(math.ceil(M / geo.tile_m), geo.max_blocks)),
    )
    kernel[grid, geo.gemm_threads](a, b, c, M, N, K)


# ---- per-case contractions -----------------------------------------------------------------
@cuda.jit
def _batched_matvec(w, h, out, rows, cols, trans):
    # out[i, p] = Σ_q op(W_i)[p, q] h_i[q] with W_i stored (rows, cols) in w[i]
    n_out = cols if trans else rows
    n_in = rows if trans else cols
    hb = h.shape[0] > 1
    for ip in range(cuda.grid(1), out.shape[0] * n_out, cuda.gridsize(1)):
        i = ip // n_out
        p = ip - i * n_out
        ih = i if hb else 0
        acc = 0.0
        for q in range(n_in):
            wpq = w[i, q * cols + p] if trans else w[i, p * cols + q]
            acc += wpq * h[ih, q]
        out[i, p] = acc


def batched_matvec(w, h, out, rows: int, cols: int, trans: bool = False) -> None:
    """Per case i: ``out[i] = op(W_i) h_i`` for a per-case matrix (row i of ``w`` holds W_i
    of shape (rows, cols), row-major); ``h`` with one row is shared by every case."""
    n = out.shape[0] * out.shape[1]
    _batched_matvec[blocks(n), THREADS](w, h, out, rows, cols, trans)


@cuda.jit
def _outer(u, v, out, m, n):
    ub = u.shape[0] > 1
    vb = v.shape[0] > 1
    for ie in range(cuda.grid(1), out.shape[0] * m * n, cuda.gridsize(1)):
        i = ie // (m * n)
        e = ie - i * (m * n)
        a = e // n
        out[i, e] = u[i if ub else 0, a] * v[i if vb else 0, e - a * n]


def outer(u, v, out, m: int, n: int) -> None:
    """Per case: ``out[i] = u_i v_iᵀ`` flattened row-major; a one-row operand is shared."""
    _outer[blocks(out.shape[0] * m * n), THREADS](u, v, out, m, n)


# ---- reductions --------------------------------------------------------------------------
@functools.cache
def _row_kernel(logsumexp: bool, dtype: str) -> Callable:
    """Each row of x (R, n) -> out[r, 0]: Σ_j x[r, j], or log Σ_j exp(x[r, j]) taken
    around the row's max (no overflow). ``lanes`` threads share a row."""
    dt = numba.from_dtype(np.dtype(dtype))  # a Numba type: shared/local arrays

    @cuda.jit
    def row_reduce(x, out, lanes):
        buf = cuda.shared.array(THREADS, dt)
        lane = cuda.threadIdx.x % lanes
        rows = cuda.blockDim.x // lanes
        R, n = x.shape
        for r0 in range(cuda.blockIdx.x * rows, R, cuda.gridDim.x * rows):
            r = r0 + cuda.threadIdx.x // lanes
            if logsumexp:
                m = -math.inf
                if r < R:
                    for j in range(lane, n, lanes):
                        if x[r, j] > m:
                            m = x[r, j]
                m = segment_max(buf, m, lanes)
            else:
                m = 0.0
            acc = 0.0
            if r < R:
                for j in range(lane, n, lanes):
                    acc += math.exp(x[r, j] - m) if logsumexp else x[r, j]
            acc = segment_sum(buf, acc, lanes)
            if r < R and lane == 0:
                out[r, 0] = m + math.log(acc) if logsumexp else acc

    return row_reduce


def row_reduce(template: str, x, out) -> None:
    """``sum_features`` or ``logsumexp`` of every row of ``x`` (R, n) into ``out`` (R, 1)."""
    R, n = x.shape
    kernel = _row_kernel(template == "logsumexp", str(np.dtype(out.dtype)))
    kernel[row_blocks(R, n), THREADS](x, out, lanes(n))


@functools.cache
def _column_kernel(dtype: str) -> Callable:
    """out[j] = Σ_i x[i, j] / divisor. A block takes a strip of ``width`` columns; its
    ``THREADS // width`` row lanes each sum every so-many rows, then a tree over the lanes."""
    dt = numba.from_dtype(np.dtype(dtype))  # a Numba type: shared/local arrays

    @cuda.jit
    def column_sum(x, out, width, divisor):
        buf = cuda.shared.array(THREADS, dt)
        t = cuda.threadIdx.x
        col = t % width
        lane = t // width
        n_lanes = cuda.blockDim.x // width
        B, n = x.shape
        for j0 in range(cuda.blockIdx.x * width, n, cuda.gridDim.x * width):
            j = j0 + col
            acc = 0.0
            if j < n:
                for i in range(lane, B, n_lanes):
                    acc += x[i, j]
            buf[t] = acc
            cuda.syncthreads()
            s = n_lanes // 2
            while s > 0:
                if lane < s:
                    buf[t] += buf[t + s * width]
                cuda.syncthreads()
                s //= 2
            if lane == 0 and j < n:
                out[j] = buf[t] / divisor
            cuda.syncthreads()

    return column_sum


def batch_reduce(template: str, x, out) -> None:
    """``batch_sum`` (Σ over the cases) or ``batch_mean`` of ``x`` (B, n) into ``out`` (n,)."""
    B, n = x.shape
    width = cuda_geometry.column_width(n, GEOMETRY)
    divisor = float(B) if template == "batch_mean" else 1.0
    kernel = _column_kernel(str(np.dtype(out.dtype)))
    kernel[blocks(n, width), THREADS](x, out, width, divisor)


# ---- fills and copies ------------------------------------------------------------------------
@cuda.jit
def _fill(x, value):
    for e in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        x[e] = value


@cuda.jit
def _copy(src, dst):
    for e in range(cuda.grid(1), dst.shape[0], cuda.gridsize(1)):
        dst[e] = src[e]


@cuda.jit
def _transpose(src, dst, r, c):
    # dst[i] viewed (r, c) = (src[i] viewed (c, r))ᵀ
    for ie in range(cuda.grid(1), dst.shape[0] * r * c, cuda.gridsize(1)):
        i = ie // (r * c)
        e = ie - i * (r * c)
        a = e // c
        b = e - a * c
        dst[i, e] = src[i, b * r + a]


def flat(x):
    """A 1-D view of a contiguous device array."""
    return x.reshape((x.size,))


def fill(x, value: float) -> None:
    _fill[blocks(x.size), THREADS](flat(x), value)


def copy(src, dst) -> None:
    _copy[blocks(dst.size), THREADS](flat(src), flat(dst))


def transpose(src, dst, r: int, c: int) -> None:
    """Row by row: dst[i] (r × c) = src[i]ᵀ (src[i] is c × r); 2-D arrays, one row per case."""
    _transpose[blocks(dst.size), THREADS](src, dst, r, c)


# ---- the host side of a generated driver -----------------------------------------------------
def device_arrays(cache: dict, B: int, shapes: Sequence[tuple[int, ...]], dtype) -> list:
    """Device arrays of ``shapes`` for batch size ``B``, allocated on the first call with
    this B and reused by every later one (a few batch sizes are kept, like Program's host
    scratch)."""
    arrays = cache.get(B)
    if arrays is None:
        if len(cache) >= 4:
            cache.pop(next(iter(cache)))
        arrays = [cuda.device_array(s, dtype=dtype) for s in shapes]
        cache[B] = arrays
    return arrays


def to_device(a, dtype):
    """A device copy of a host array in ``dtype`` (a device array is returned as it is)."""
    return a if is_device(a) else cuda.to_device(np.ascontiguousarray(a, dtype=dtype))


def run_on_device(
    launch: Callable,
    cache: dict,
    B: int,
    inputs: Sequence,
    outputs: Sequence,
    scratch: Sequence[tuple[int, ...]],
    dtype,
) -> None:
    """What every generated ``run`` does: copy the host inputs to their device arrays (once
    per call), zero the device outputs (the CPU driver writes into Program's zeroed arrays,
    and a parameter that nothing reaches keeps its 0), ``launch(B, *inputs, *outputs,
    *scratch)`` over device arrays, and copy the outputs back into the given numpy arrays.

    An input or output that is already a device array is used in place: nothing crosses
    the bus for it (a State's θ, batch and cached static values; CP noise drawn on the
    device; a static part's outputs that a State keeps on the device)."""
    shapes = [np.shape(a) for a in (*inputs, *outputs)] + list(scratch)
    dev = device_arrays(cache, B, shapes, dtype)  # a program's shapes depend on B alone
    n_in, n_out = len(inputs), len(outputs)
    args = list(dev)
    for i, a in enumerate((*inputs, *outputs)):
        if is_device(a):
            args[i] = a
        elif i < n_in:
            dev[i].copy_to_device(np.ascontiguousarray(a, dtype=dtype))
    for d in args[n_in : n_in + n_out]:
        fill(d, 0.0)
    launch(B, *args)
    for host, d in zip(outputs, args[n_in : n_in + n_out]):
        if not is_device(host):
            d.copy_to_host(host)


# ---- CP noise: runtime/noise.py's block writer, compiled as a device function ---------------
# (Numba-CUDA compiles an @njit function called from a kernel for the device; the simulator
# runs Python, where only the plain function can take its stand-in arrays.)
_fill_block = noise.fill_block.py_func if SIMULATED else noise.fill_block


@cuda.jit
def _noise(out, draw, stream, k0, k1, kind):
    per = 128 if kind == 0 else 2
    for c in range(cuda.grid(1), (out.shape[0] + per - 1) // per, cuda.gridsize(1)):
        _fill_block(out, c, draw, stream, k0, k1, kind)


def draw_noise(shape, dtype, seed_key: tuple[int, int], draw: int, stream: int, kind: str):
    """A device array of CP noise, equal element for element to ``noise.draw_cpu`` with the
    same arguments (drawn on the device: no host array, no copy)."""
    out = cuda.device_array(shape, dtype=dtype)
    per = noise.PER_BLOCK[noise.KINDS[kind]]
    n_blocks = -(-out.size // per)
    arguments = noise.fill_arguments(draw, stream, seed_key, kind)
    _noise[blocks(n_blocks), THREADS](flat(out), *arguments)
    return out
