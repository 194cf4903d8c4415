"""MAP denoising and super-resolution with an energy prior (symcurv/imaging.py, 002 §4.2-4.3):
through the compiled Fields-of-Experts energy of examples/foe.py (one image = one case)
and through closed-form energies whose minimisers are known; PSNR against scikit-image;
the errors users see."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import symcurv as sc
from symcurv import errors, imaging

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import foe  # noqa: E402

H, W = 6, 7


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """foe.tiny(): 3 filters of 3×3 over 6×7 images, loss and input_grad."""
    root = tmp_path_factory.mktemp("imaging")
    return sc.compile(foe.tiny(), programs=("loss", "input_grad"), build_dir=root, progress=False)


def smoothness_theta(prog, scale=1.0, beta=0.0):
    """Zero-sum filters (horizontal and vertical differences, a Laplacian) weighted by
    e^beta: E ≥ 0, and E = 0 exactly on constant images."""
    F = np.zeros((3, 3, 3))
    F[0, 1, 1], F[0, 1, 2] = -1.0, 1.0
    F[1, 1, 1], F[1, 2, 1] = -1.0, 1.0
    F[2] = [[0, 1, 0], [1, -4, 1], [0, 1, 0]]
    return prog.flatten({"F": scale * F.reshape(3, 9), "beta": np.full(3, beta)})


def ramp(rng, noise):
    clean = np.add.outer(np.linspace(0.2, 0.6, H), np.linspace(0.0, 0.3, W))
    return clean, clean + noise * rng.normal(size=clean.shape)


def test_the_objective_decreases_monotonically(tiny):
    rng = np.random.default_rng(0)
    theta = 0.5 * rng.normal(size=tiny.n_params)
    _, y = ramp(rng, 0.1)
    x, f = sc.denoise(tiny, y, 0.1, steps=60, theta=theta, trace=True, progress=False)
    assert x.shape == y.shape and f.shape == (61,)
    assert np.all(np.diff(f) <= 1e-12 * abs(f[0])), np.diff(f)
    assert f[-1] < f[0] - 1.0  # a real decrease (to a local minimum near 107.7)
    # the traced objective is E(x̂) + ‖x̂ − y‖²/(2σ²) of the returned image
    want = tiny.loss(theta, {"x": x.reshape(1, -1)}) + np.sum((x - y) ** 2) / (2 * 0.1**2)
    assert abs(f[-1] - want) < 1e-10 * abs(want)


def test_a_noiseless_minimum_of_the_energy_is_recovered(tiny):
    """A constant image is a global minimum (E = 0) of the zero-sum filters' energy and of
    the data term: from y itself nothing moves, and from a perturbed start the descent
    returns to y."""
    theta = smoothness_theta(tiny)
    y = np.full((H, W), 0.3)
    assert tiny.loss(theta, {"x": y.reshape(1, -1)}) < 1e-24
    assert np.array_equal(sc.denoise(tiny, y, 0.05, steps=5, theta=theta, progress=False), y)
    x0 = y + 0.02 * np.random.default_rng(1).normal(size=y.shape)
    x = sc.denoise(tiny, y, 0.05, steps=150, step=(0.3, 0.3), theta=theta, x0=x0, progress=False)
    assert np.max(np.abs(x - y)) < 1e-8


def test_denoising_with_a_smoothness_prior_raises_psnr(tiny):
    """A batch of noisy ramps (one case each, flat rows) gets closer to the clean ramps."""
    rng = np.random.default_rng(2)
    theta = smoothness_theta(tiny, beta=2.0)
    pairs = [ramp(rng, 0.05) for _ in range(4)]
    clean = np.stack([c.ravel() for c, _ in pairs])
    noisy = np.stack([n.ravel() for _, n in pairs])
    x = sc.denoise(tiny, noisy, 0.05, theta=theta, progress=False)
    assert x.shape == noisy.shape
    assert sc.psnr(x, clean) > sc.psnr(noisy, clean) + 1.5  # 26.5 dB -> 29.0 dB


def test_step_and_sign_against_a_quadratic_energy():
    """E(x) = ½‖x‖²: one step is x₁ = y − α σ² (x₀ + (x₀ − y)/σ²) (descent on E plus the data
    term), and the iteration converges to the MAP estimate y / (1 + σ²)."""
    quad = lambda x: (0.5 * np.sum(x**2), x)  # noqa: E731
    y = np.random.default_rng(3).normal(size=(4, 5))
    s = 0.5
    one = sc.denoise(quad, y, s, steps=1, step=(0.1, 0.1), progress=False)
    assert np.allclose(one, y - 0.1 * s**2 * y, atol=1e-15)
    raw = sc.denoise(quad, y, s, steps=1, step=(0.1, 0.1), step_units="raw", progress=False)
    assert np.allclose(raw, y - 0.1 * y, atol=1e-15)
    x = sc.denoise(quad, y, s, steps=400, step=(0.5, 0.5), progress=False)
    assert np.allclose(x, y / (1 + s**2), atol=1e-12)


def test_annealed_steps_are_geometric():
    a = imaging.annealed_steps((2e-2, 5e-4), 300)
    assert a[0] == 2e-2 and abs(a[-1] - 5e-4) < 1e-18 and len(a) == 300
    assert np.allclose(a[1:] / a[:-1], (5e-4 / 2e-2) ** (1 / 299))


def test_super_resolution_keeps_the_block_means_and_smooths():
    """With E = ½ Σ (neighbour differences)², the result's 2×2 means are the small image
    and it is closer to a smooth original than the starting upscaling."""
    yy, xx = np.mgrid[0:16, 0:16] / 16.0
    orig = 0.5 + 0.3 * np.sin(2.0 * xx + 1.0 * yy)
    small = sc.block_average(orig)

    def smooth(x):
        dx, dy = np.diff(x, axis=1), np.diff(x, axis=0)
        g = np.zeros_like(x)
        g[:, 1:] += dx
        g[:, :-1] -= dx
        g[1:, :] += dy
        g[:-1, :] -= dy
        return 0.5 * (np.sum(dx**2) + np.sum(dy**2)), g

    x = sc.super_resolve(smooth, small, steps=100, step=(0.1, 0.01), progress=False)
    assert x.shape == orig.shape
    assert np.allclose(sc.block_average(x), small, atol=1e-12)
    start = imaging.upscale(small)
    assert sc.psnr(x, orig) > sc.psnr(start, orig)


def test_psnr_is_scikit_images():
    metrics = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(4)
    a, b = rng.uniform(size=(8, 9)), rng.uniform(size=(8, 9))
    want = metrics.peak_signal_noise_ratio(a, b, data_range=1.0)
    assert abs(sc.psnr(b, a) - want) < 1e-10
    assert abs(sc.psnr(255 * b, 255 * a, data_range=255) - want) < 1e-10
    assert sc.psnr(a, a) == np.inf


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"sigma": 0.0}, errors.OptimizerError, "sigma = 0.0"),
        ({"sigma": float("nan")}, errors.OptimizerError, "not a positive noise level"),
        ({"steps": 0}, errors.OptimizerError, "steps = 0"),
        ({"steps": 2.5}, errors.OptimizerError, "whole number"),
        ({"step": (1e-2,)}, errors.OptimizerError, "pair of positive"),
        ({"step": (1e-2, -1.0)}, errors.OptimizerError, "pair of positive"),
        ({"step_units": "pixels"}, errors.OptimizerError, "step_units"),
        ({"y": np.zeros((5, 5))}, errors.BatchError, "42 pixels"),
        ({"y": np.full((H, W), np.nan)}, errors.BatchError, "not finite"),
        ({"theta": None}, errors.ModelError, "needs its parameters"),
        ({"x0": np.zeros((7, 6))}, errors.BatchError, "x0"),
    ],
)
def test_bad_arguments_are_refused_clearly(tiny, kwargs, error, match):
    args = {"y": np.zeros((H, W)), "sigma": 0.1, "theta": np.zeros(tiny.n_params)}
    args.update(kwargs)
    with pytest.raises(error, match=match):
        sc.denoise(tiny, progress=False, **args)


def test_other_refusals():
    with pytest.raises(errors.ModelError, match="not a Program or a callable"):
        sc.denoise("foe", np.zeros((3, 3)), 0.1, progress=False)
    with pytest.raises(errors.BatchError, match="divisible by 2"):
        sc.block_average(np.zeros((5, 4)))
    with pytest.raises(errors.BatchError, match="one 2-D image"):
        sc.super_resolve(lambda x: (0.0, 0 * x), np.zeros(4), progress=False)
