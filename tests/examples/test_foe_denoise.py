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


def test_help_and_combining_saved_parts(tmp_path, capsys):
    """The command line documents every option; a long run split into parts (``--save``)
    prints as one set of tables (``--combine``): rows of both parts, the tuned parameters."""
    import example_modules  # noqa: PLC0415 - beside this file

    assert "--whole" in example_modules.assert_help_is_complete(fd)
    s = 25 / 256
    base = {("noisy", s, "moon"): (20.0, 0.1), ("TV (Chambolle)", s, "moon"): (30.0, 0.2)}
    base["params"] = {("TV (Chambolle)", s): 0.12}
    foe = {("FoE", s, "moon"): (31.5, 0.3), "params": {}}
    sr = {("bicubic", "moon"): 40.0}, {("FoE", "moon"): 41.0, ("step scale", "FoE"): 0.01}
    parts = []
    for n, (d, r) in enumerate(((base, sr[0]), (foe, sr[1]))):
        parts.append(tmp_path / f"part{n}.pkl")
        parts[-1].write_bytes(__import__("pickle").dumps((d, r)))
    fd.main(["--combine", *map(str, parts)])
    out = capsys.readouterr().out
    assert "| FoE | 31.50 ± 0.30 |" in out and "| TV (Chambolle) | 30.00 ± 0.20 |" in out
    assert "| bicubic | 40.00 |" in out and "| FoE | 41.00 |" in out and "σ=25: 0.12" in out
