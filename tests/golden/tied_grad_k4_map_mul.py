"""symcurv kernel map_mul_4c7dd149d0f5, shared by every program of the build that runs it.

Named after the sha256 of this file's text (its name left out): the same kernel in
two programs is this one file, compiled once; a changed kernel is another file.
Arguments, in the order the program's driver passes them (x: read, y: written):
    B, x0, x1, x2, x3, y0, y1
The program module's comment block above each call names the buffers.

Do not edit: sc.load() checks this file's sha256 against manifest.json.
"""

import math  # noqa: F401

import numpy as np  # noqa: F401
from numba import njit, prange  # noqa: F401

from symcurv.runtime import vecmath as vm  # noqa: F401  (vectorised exp, log, tanh)

PARALLEL = False  # prange loops run on Numba threads when True


@njit(cache=True, inline='always', error_model='numpy')
def f_map_mul_4c7dd149d0f5(a0, a1, a2, a3):
    """The scalar formulas of map_mul_4c7dd149d0f5 (one element)."""
    t0 = a0 + a1
    t1 = vm.exp(-abs(t0))
    t2 = t1 + 1.0
    return a3*(-t1*(1.0 if t0 > 0 else (-1.0 if t0 < 0 else 0.0))/t2 - a2 + (1.0 if t0 > 0 else (0.5 if t0 == 0 else 0.0))), -t0*a2 + vm.log(t2) + max(0.0, t0)


@njit(cache=True, parallel=PARALLEL, error_model='numpy')
def map_mul_4c7dd149d0f5(B, x0, x1, x2, x3, y0, y1):
    # rows in blocks of 64: one flat loop of 384 elements per block, long
    # enough to vectorise whole (a 6-wide row is not); the last may be shorter
    tile_x1 = np.empty(384, dtype=x1.dtype)
    for e in range(384):
        tile_x1[e] = x1[e % 6]
    flat_x0 = x0.reshape(-1)
    flat_x2 = x2.reshape(-1)
    flat_y0 = y0.reshape(-1)
    for blk in prange((B + 63) // 64):
        o = blk * 384
        rep_x3 = np.empty(384, dtype=x3.dtype)
        for c in range(min(64, B - blk * 64)):
            for j in range(6):
                rep_x3[c * 6 + j] = x3[blk * 64 + c, 0]
        row_y1 = np.empty(384, dtype=y1.dtype)
        for e in range(min(384, B * 6 - o)):
            flat_y0[o + e], row_y1[e] = f_map_mul_4c7dd149d0f5(flat_x0[o + e], tile_x1[e], flat_x2[o + e], rep_x3[e])
        # each case's sums over its row of the block buffers
        for c in range(min(64, B - blk * 64)):
            acc = 0.0
            for j in range(6):
                acc += row_y1[c * 6 + j]
            y1[blk * 64 + c, 0] = acc
