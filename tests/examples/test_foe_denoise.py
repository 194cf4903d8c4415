"""examples/foe_denoise.py: the train/test split, the whitening filter, the patch pipeline
and the baseline table on tiny crops (every tuned denoiser must beat the noisy input)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("skimage")
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
import foe_denoise as fd  # noqa: E402


def test_the_split_and_the_whitening_filter():
    assert not set(fd.TRAIN) & set(fd.TEST)
    assert abs(fd.LAPLACIAN_5x5.sum()) < 1e-12 and abs(np.linalg.norm(fd.LAPLACIAN_5x5) - 1) < 1e-12
    img = fd.grey("camera")
    assert img.shape == (512, 512) and 0.0 <= img.min() and img.max() <= 1.0
    w = fd.whiten(img)
    assert w.shape == (508, 508)
    assert np.allclose(fd.whiten(np.full((9, 9), 0.7)), 0.0)  # flat regions whiten to zero
    # one whitened pixel, written out: Σ_uv L[u, v] img[r + u − 2, c + v − 2]
    r, c = 100, 200
    assert (
        abs(w[r - 2, c - 2] - np.sum(fd.LAPLACIAN_5x5 * img[r - 2 : r + 3, c - 2 : c + 3])) < 1e-12
    )


def test_patches_come_from_the_whitened_training_images():
    P = fd.patches(8, 14, seed=3, names=("brick", "coins"))
    assert P.shape == (14, 64) and np.all(np.isfinite(P))
    assert np.array_equal(P, fd.patches(8, 14, seed=3, names=("brick", "coins")))
    brick = fd.whiten(fd.grey("brick"))
    windows = np.lib.stride_tricks.sliding_window_view(brick, (8, 8)).reshape(-1, 64)
    assert np.any(np.all(np.isclose(windows, P[0]), axis=1))  # the first crop is brick's


def test_every_tuned_baseline_beats_the_noisy_image():
    s = 25 / 256
    res = fd.baseline_table(size=24, draws=2, sigmas=(s,), tests=("camera",), progress=False)
    noisy = res["noisy", s, "camera"][0]
    for name in fd.BASELINES:
        assert res[name, s, "camera"][0] > noisy + 1.0, (name, res[name, s, "camera"], noisy)
    text = fd.markdown(res, sigmas=(s,), tests=("camera",))
    assert "| NL-means |" in text and "± " in text


def test_superresolution_baselines():
    """Restoring each 2×2 block's mean is the orthogonal projection onto the images with
    those means, a set holding the original: it can only bring the start closer."""
    res = fd.superres_table(32, tests=("camera", "coffee"))
    for t in ("camera", "coffee"):
        start, restored = (
            res["bilinear + low-pass", t],
            res["bilinear + low-pass, means restored", t],
        )
        assert restored >= start and np.isfinite(res["bicubic", t])
    assert "| bicubic |" in fd.superres_markdown(res, tests=("camera", "coffee"))
