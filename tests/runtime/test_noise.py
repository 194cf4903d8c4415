"""runtime/noise.py: the counter-based CP noise (Philox4x32-10).

Oracles: Random123's published known-answer vectors for Philox4x32-10 (independent of this
code), the element-by-element definition ``noise_at`` interpreted in Python against the
compiled parallel fill, and statistical tests with fixed seeds for the noise itself.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from symcurv.runtime import noise

# Random123 kat_vectors: "philox4x32 10" counter[4] key[2] -> output[4]
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]


@pytest.mark.parametrize("counter, key, want", KAT)
def test_philox_known_answers(counter, key, want):
    args = [np.uint64(x) for x in (*counter, *key)]
    assert [int(w) for w in noise.philox4x32_10(*args)] == list(want)  # interpreted
    assert [int(w) for w in noise._philox(*args)] == list(want)  # compiled by Numba


@pytest.mark.parametrize("kind", ["rademacher", "gaussian"])
@pytest.mark.parametrize("shape", [(3, 131), (1,), (257,)])
def test_the_parallel_fill_is_the_definition_element_by_element(kind, shape):
    key = noise.key(2**40 + 7)  # a seed with both key words non-zero
    got = noise.draw_cpu(shape, np.float64, key, 4, 9, kind)
    want = [noise.noise_at(j, 4, 9, key, kind) for j in range(int(np.prod(shape)))]
    assert got.shape == shape and np.array_equal(got.reshape(-1), want)


def test_float32_draws_are_the_float64_draws_rounded():
    key = noise.key(5)
    g64 = noise.draw_cpu((4, 50), np.float64, key, 0, 1, "gaussian")
    g32 = noise.draw_cpu((4, 50), np.float32, key, 0, 1, "gaussian")
    assert g32.dtype == np.float32 and np.array_equal(g32, g64.astype(np.float32))


def _z(mean, var, n):
    return mean / math.sqrt(var / n)


def test_rademacher_noise_is_balanced_and_uncorrelated():
    n = 200_000
    a = noise.draw_cpu(n, np.float64, noise.key(1), 0, 0, "rademacher")
    assert set(np.unique(a)) == {-1.0, 1.0}
    assert abs(_z(a.mean(), 1.0, n)) < 4.5
    # neighbours (inside a 32-bit word, across words and blocks) are independent
    for lag in (1, 31, 32, 127, 128):
        assert abs(_z((a[:-lag] * a[lag:]).mean(), 1.0, n - lag)) < 4.5, lag


def test_gaussian_noise_has_the_normal_moments():
    n = 200_000
    z = noise.draw_cpu(n, np.float64, noise.key(2), 0, 0, "gaussian")
    assert np.isfinite(z).all()
    assert abs(_z(z.mean(), 1.0, n)) < 4.5
    assert abs(_z(z.var() - 1.0, 2.0, n)) < 4.5  # Var(z²) = 2
    assert abs(_z((z**4).mean() - 3.0, 96.0, n)) < 4.5  # Var(z⁴) = 105 − 9
    # the Box-Muller pair (cos, sin) and neighbouring pairs are uncorrelated
    for lag in (1, 2):
        assert abs(_z((z[:-lag] * z[lag:]).mean(), 1.0, n - lag)) < 4.5, lag
    # tails: P(|z| > 3) = 0.0027
    p = 2 * 0.5 * math.erfc(3 / math.sqrt(2))
    assert abs(_z((np.abs(z) > 3).mean() - p, p * (1 - p), n)) < 4.5


def test_streams_draws_and_seeds_give_independent_noise():
    n = 50_000
    base = noise.draw_cpu(n, np.float64, noise.key(3), 0, 0, "rademacher")
    others = [
        noise.draw_cpu(n, np.float64, noise.key(3), 1, 0, "rademacher"),  # next draw
        noise.draw_cpu(n, np.float64, noise.key(3), 0, 1, "rademacher"),  # next stream
        noise.draw_cpu(n, np.float64, noise.key(4), 0, 0, "rademacher"),  # next seed
        noise.draw_cpu(n, np.float64, noise.key(3 + 2**32), 0, 0, "rademacher"),  # high word
    ]
    for o in others:
        assert abs(_z((base * o).mean(), 1.0, n)) < 4.5


def test_seed_keys():
    assert noise.key(0) == (0, 0)
    assert noise.key(2**32 + 5) == (5, 1)
    assert noise.key(2**64 + 3) == (3, 0)  # taken mod 2**64
    with pytest.raises(ValueError, match="non-negative"):
        noise.key(-1)  # refused, not aliased to 2**64 - 1
    assert noise.key(None) != noise.key(None)  # fresh entropy each time
    assert noise.key([1, 2]) == noise.key((1, 2)) != noise.key([2, 1])  # hashed sequences
    for bad in (1.5, [1, -2], [], True, "7"):
        with pytest.raises(TypeError):
            noise.key(bad)
