"""symcurv kernel map_logistic_8a6096cfb3ae, shared by every program of the build that runs it.

Named after the sha256 of this file's text (its name left out): the same kernel in
two programs is this one file, compiled once; a changed kernel is another file.
Arguments, in the order the program's driver passes them (x: read, y: written):
    B, x0, x1, y0, y1
The program module's comment block above each call names the buffers.

Do not edit: sc.load() checks this file's sha256 against manifest.json.
"""

import math  # noqa: F401

import numpy as np  # noqa: F401
from numba import njit, prange  # noqa: F401

from symcurv.runtime import vecmath as vm  # noqa: F401  (vectorised exp, log, tanh)

PARALLEL = False  # prange loops run on Numba threads when True


@njit(cache=True, inline='always', error_model='numpy')
def f_map_logistic_8a6096cfb3ae(a0, a1):
    """The scalar formulas of map_logistic_8a6096cfb3ae (one element)."""
    texp0 = vm.exp(a0 + a1)
    t0 = (1.0/(1.0 + (1.0/texp0)))
    return t0, t0/(texp0 + 1.0)


@njit(cache=True, parallel=PARALLEL, error_model='numpy')
def map_logistic_8a6096cfb3ae(B, x0, x1, y0, y1):
    # rows in blocks of 32: one flat loop of 96 elements per block, long
    # enough to vectorise whole (a 3-wide row is not); the last may be shorter
    tile_x1 = np.empty(96, dtype=x1.dtype)
    for e in range(96):
        tile_x1[e] = x1[e % 3]
    flat_x0 = x0.reshape(-1)
    flat_y0 = y0.reshape(-1)
    flat_y1 = y1.reshape(-1)
    for blk in prange((B + 31) // 32):
        o = blk * 96
        for e in range(min(96, B * 3 - o)):
            flat_y0[o + e], flat_y1[o + e] = f_map_logistic_8a6096cfb3ae(flat_x0[o + e], tile_x1[e])
