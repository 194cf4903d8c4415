"""symcurv kernel reduce_bsum_5919ea96935d, shared by every program of the build that runs it.

Named after the sha256 of this file's text (its name left out): the same kernel in
two programs is this one file, compiled once; a changed kernel is another file.
Arguments, in the order the program's driver passes them (x: read, y: written):
    B, x0, y0
The program module's comment block above each call names the buffers.

Do not edit: sc.load() checks this file's sha256 against manifest.json.
"""

import math  # noqa: F401

import numpy as np  # noqa: F401
from numba import njit, prange  # noqa: F401

from symcurv.runtime import vecmath as vm  # noqa: F401  (vectorised exp, log, tanh)

PARALLEL = False  # prange loops run on Numba threads when True


@njit(cache=True, error_model='numpy')
def reduce_bsum_5919ea96935d(B, x0, y0):
    for j in range(6):
        y0[j] = 0.0
    for i in range(B):
        for j in range(6):
            y0[j] += x0[i, j]
