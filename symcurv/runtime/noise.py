"""Counter-based noise for Curvature Propagation, the same numbers on every backend.

CP injects fresh noise at every curved node of every case (Martens, Sutskever & Swersky
2012, §4-§5). The noise is a pure function of its coordinates, never a sequential stream:

    value(seed, draw d, stream s, element j) = N_t(Philox4x32-10(counter = (c_lo, c_hi, d, s),
                                                                  key = (seed_lo, seed_hi)))
    c = j // n, t = j mod n   (n elements per call: 128 Rademacher, 2 Gaussian)

Philox4x32-10 (Salmon, Moraes, Dror & Shaw, "Parallel random numbers: as easy as 1, 2, 3",
SC 2011; the generator of cuRAND and Random123) turns a 128-bit counter and a 64-bit key
into four 32-bit words by ten rounds of 32×32 → 64-bit multiplications and xors. N_t maps
the words to element t of the block:

- Rademacher: ±1 from one of the 128 bits, so one call serves 128 consecutive elements;
- Gaussian: Box-Muller, (z, z') = √(−2 ln u₁) (cos 2πu₂, sin 2πu₂), with u₁ ∈ (0, 1] from
  words 0-1 and u₂ ∈ [0, 1) from words 2-3 (53 bits each): one call, two elements.

Because element j's value depends on nothing but (seed, d, s, j), a CPU loop, a GPU grid of
any shape and this file's pure-Python functions all give the same array: the CPU and CUDA
backends draw the same noise from the same seed, and a GPU draws it on the device (no
B × n array crosses the bus). The functions below are plain Python on ``np.uint64``
scalars; every product is of two 32-bit values and every sum stays below 2⁶⁴, so nothing
overflows — in Numba (CPU and CUDA, which compile these same functions), in the CUDA
simulator and in the interpreter alike.
"""

from __future__ import annotations

import math

import numba
import numpy as np

ROUNDS = 10
M0, M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)  # Philox multipliers
W0, W1 = np.uint64(0x9E3779B9), np.uint64(0xBB67AE85)  # Weyl key increments
MASK32 = np.uint64(0xFFFFFFFF)
SHIFT32, SHIFT31, SHIFT21, SHIFT11 = np.uint64(32), np.uint64(31), np.uint64(21), np.uint64(11)
TWO_M53 = 2.0**-53
TWO_PI = 2.0 * math.pi
ONE = np.uint64(1)
KINDS = {"rademacher": 0, "gaussian": 1}
PER_BLOCK = (128, 2)  # elements per Philox call: Rademacher bits, Box-Muller pairs


def philox4x32_10(c0, c1, c2, c3, k0, k1):
    """Philox4x32-10 of the counter (c0, c1, c2, c3) under the key (k0, k1): four 32-bit
    words (all arguments and results are np.uint64 holding 32-bit values). Round r maps
    (c0, c1, c2, c3) → (hi(M1·c2) ⊕ c1 ⊕ k0, lo(M1·c2), hi(M0·c0) ⊕ c3 ⊕ k1, lo(M0·c0)),
    and the key gains the Weyl increments before every round but the first."""
    for r in range(ROUNDS):
        if r > 0:
            k0 = (k0 + W0) & MASK32
            k1 = (k1 + W1) & MASK32
        p0 = M0 * c0
        p1 = M1 * c2
        c0, c1, c2, c3 = (
            (p1 >> SHIFT32) ^ c1 ^ k0,
            p1 & MASK32,
            (p0 >> SHIFT32) ^ c3 ^ k1,
            p0 & MASK32,
        )
    return c0, c1, c2, c3


def rademacher_bit(w0, w1, w2, w3, t):
    """±1 from bit ``t`` (0-127) of the 128 bits w0..w3: one Philox call serves 128 cases."""
    w = w0 if t < 32 else (w1 if t < 64 else (w2 if t < 96 else w3))
    return 1.0 - 2.0 * float((w >> np.uint64(t & 31)) & ONE)


def gaussian_pair(w0, w1, w2, w3):
    """Box-Muller: two independent N(0, 1) values (r cos 2πu₂, r sin 2πu₂), r = √(−2 ln u₁),
    on two 53-bit uniforms u₁ = (a + 1)·2⁻⁵³ ∈ (0, 1] (the log stays finite) and u₂ ∈ [0, 1)."""
    a = (w0 << SHIFT21) | (w1 >> SHIFT11)
    b = (w2 << SHIFT21) | (w3 >> SHIFT11)
    r = math.sqrt(-2.0 * math.log((float(a) + 1.0) * TWO_M53))
    angle = TWO_PI * float(b) * TWO_M53
    return r * math.cos(angle), r * math.sin(angle)


def noise_at(j: int, draw: int, stream: int, seed_key: tuple[int, int], kind: str) -> float:
    """The definition, one element at a time (tests compare every fill with it): element
    ``j`` of a flat array lies in Philox block j // n_k (n_k = 128 for Rademacher, 2 for
    Gaussian) at position j mod n_k."""
    per = PER_BLOCK[KINDS[kind]]
    words = philox4x32_10(
        np.uint64((j // per) & 0xFFFFFFFF),
        np.uint64((j // per) >> 32),
        np.uint64(draw),
        np.uint64(stream),
        np.uint64(seed_key[0]),
        np.uint64(seed_key[1]),
    )
    if kind == "rademacher":
        return rademacher_bit(*words, j % per)
    return gaussian_pair(*words)[j % per]


def key(seed) -> tuple[int, int]:
    """The Philox key of a seed: a non-negative integer's low and high 32 bits (taken mod
    2⁶⁴); a sequence of non-negative integers is hashed to 64 bits by numpy's
    ``SeedSequence`` (so ``[run, sample]`` seeds independent streams); ``None`` draws a
    fresh 64-bit seed from the operating system's entropy. A negative integer raises
    ValueError (numpy refuses them too: -1 taken mod 2⁶⁴ would silently alias 2⁶⁴ − 1),
    anything else TypeError."""
    if seed is None:
        s = int(np.random.SeedSequence().generate_state(1, np.uint64)[0])
    elif isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        if seed < 0:
            raise ValueError(f"seed must be non-negative, not {seed}")
        s = int(seed) % 2**64
    elif _is_int_sequence(seed):
        s = int(np.random.SeedSequence([int(x) for x in seed]).generate_state(1, np.uint64)[0])
    else:
        raise TypeError(
            f"seed must be an integer, a sequence of non-negative integers or None, not {seed!r}"
        )
    return s & 0xFFFFFFFF, s >> 32


def _is_int_sequence(seed) -> bool:
    return (
        isinstance(seed, (list, tuple))
        and len(seed) > 0
        and all(
            isinstance(x, (int, np.integer)) and not isinstance(x, bool) and x >= 0 for x in seed
        )
    )


# ---- the fills: the same functions, compiled by Numba -----------------------------------------
_philox = numba.njit(cache=True)(philox4x32_10)
_bit = numba.njit(cache=True)(rademacher_bit)
_pair = numba.njit(cache=True)(gaussian_pair)


@numba.njit(cache=True)
def fill_block(out, c, draw, stream, k0, k1, kind):
    """Philox block ``c`` of the flat array ``out``: elements c·n ... c·n + n − 1 (n = 128
    Rademacher or 2 Gaussian), the end of the array excepted. The CPU fill calls it from a
    serial loop, the CUDA kernel (runtime/cuda_kernels.py) from a grid-stride loop."""
    n = out.shape[0]
    u = np.uint64(c)
    w0, w1, w2, w3 = _philox(u & MASK32, u >> SHIFT32, draw, stream, k0, k1)
    if kind == 0:
        j0 = c * 128
        m = n - j0 if n - j0 < 128 else 128  # (no two-argument min on CUDA, numba#10753)
        for t in range(m):
            out[j0 + t] = _bit(w0, w1, w2, w3, t)
    else:
        z0, z1 = _pair(w0, w1, w2, w3)
        out[2 * c] = z0
        if 2 * c + 1 < n:
            out[2 * c + 1] = z1


@numba.njit(cache=True)
def _fill_cpu(out, draw, stream, k0, k1, kind):
    # Serial, like symcurv's maps (docs/benchmarks.md, "Threads"): a prange loop here woke
    # Numba's OpenMP workers while OpenBLAS's were still spinning after the GEMMs, and on
    # 2 cores each launch cost 3-8 ms (a 1000 x 20 array fills in 17 µs alone), 3/4 of
    # cp_net's st.cp_diag("S"); serially the 3 M values of the autoencoder take a few ms.
    per = 128 if kind == 0 else 2
    for c in range((out.shape[0] + per - 1) // per):
        fill_block(out, c, draw, stream, k0, k1, kind)


def fill_arguments(draw: int, stream: int, seed_key: tuple[int, int], kind: str) -> tuple:
    """The scalar arguments of the fill kernels (CPU here, CUDA in cuda_kernels)."""
    k0, k1 = seed_key
    return np.uint64(draw), np.uint64(stream), np.uint64(k0), np.uint64(k1), KINDS[kind]


def draw_cpu(shape, dtype, seed_key: tuple[int, int], draw: int, stream: int, kind: str):
    """A host array of noise: element j of the flattened (row-major) array is
    ``noise_at(j, draw, stream, seed_key, kind)``."""
    out = np.empty(shape, dtype=dtype)
    _fill_cpu(out.reshape(-1), *fill_arguments(draw, stream, seed_key, kind))
    return out


# ---- the case-number seam: rows of a larger batch's noise (sc.distributed) -------------------
@numba.njit(cache=True)
def _fill_rows(out, rows, draw, stream, k0, k1, kind):
    # row r of out (width n) is elements rows[r]·n ... rows[r]·n + n − 1 of the flat array a
    # whole batch would draw: the Philox blocks overlapping that range, cut to it
    n = out.shape[1]
    per = 128 if kind == 0 else 2
    for r in range(out.shape[0]):
        g0 = rows[r] * n
        for c in range(g0 // per, (g0 + n - 1) // per + 1):
            u = np.uint64(c)
            w0, w1, w2, w3 = _philox(u & MASK32, u >> SHIFT32, draw, stream, k0, k1)
            if kind == 0:
                for t in range(128):
                    j = c * 128 + t - g0
                    if 0 <= j < n:
                        out[r, j] = _bit(w0, w1, w2, w3, t)
            else:
                z0, z1 = _pair(w0, w1, w2, w3)
                if 0 <= 2 * c - g0 < n:
                    out[r, 2 * c - g0] = z0
                if 0 <= 2 * c + 1 - g0 < n:
                    out[r, 2 * c + 1 - g0] = z1


def draw_rows(rows, width: int, dtype, seed_key: tuple[int, int], draw: int, stream: int, kind):
    """Rows ``rows`` of the (B, width) noise array a batch of B > max(rows) cases draws:
    ``out[r, i] = noise_at(rows[r]·width + i, ...)``. A shard of a larger dataset (or any
    subset of a batch) draws exactly the one-process numbers of its cases with it, because
    the noise is indexed by the case's number in the whole batch, not by its position in
    the shard (``State.case_numbers``)."""
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    if rows.ndim != 1 or (rows.size and rows.min() < 0):
        raise ValueError(f"rows must be a 1-D array of non-negative case numbers, not {rows!r}")
    out = np.empty((rows.shape[0], int(width)), dtype=dtype)
    _fill_rows(out, rows, *fill_arguments(draw, stream, seed_key, kind))
    return out


class GeneratorRows:
    """Rows ``rows`` of what a numpy ``Generator`` draws for a whole batch: ``random`` and
    ``standard_normal`` of shape (n, ...) return rows ``rows`` of the (max(rows) + 1, ...)
    draw. A Generator fills an array element by element in order, so row r of an (N, k)
    draw is the same for every N > r: a shard of a larger batch draws its cases' numbers of
    the one-process draw (K-FAC's sampled targets on sc.distributed's shards)."""

    def __init__(self, rng: np.random.Generator, rows) -> None:
        self.rng, self.rows = rng, np.asarray(rows, dtype=np.int64)

    def _rows(self, method: str, shape) -> np.ndarray:
        n = int(self.rows.max()) + 1 if self.rows.size else 0
        return getattr(self.rng, method)((n, *tuple(shape)[1:]))[self.rows]

    def random(self, shape) -> np.ndarray:
        return self._rows("random", shape)

    def standard_normal(self, shape) -> np.ndarray:
        return self._rows("standard_normal", shape)
