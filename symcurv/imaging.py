"""Image restoration with an energy prior: MAP denoising and 2×2 super-resolution (002 §4.2-4.3).

An energy model E(x; θ) (an unnormalised −log p(x), e.g. examples/foe.py's Fields of
Experts over a whole image) is a prior; with white Gaussian noise of standard deviation σ
the negative log-posterior of a clean image x given the noisy y is, up to a constant,

    f(x) = E(x) + ‖x − y‖² / (2σ²).

``denoise`` runs steepest descent on f from x₀ = y (002 §4.2 with its sign fixed, DESIGN.md
§3: the paper ascends log p(x | y), i.e. descends f):

    x ← x − α_t σ² ∇f(x) = x − α_t (σ² ∇_x E(x) + x − y),

α_t annealed geometrically from ``step[0]`` to ``step[1]`` over the steps. The step is
measured in units of σ² (``step_units="sigma2"``, the default): the raw step
x ← x − α_t ∇f(x) of the paper's α = 2·10⁻² diverges at its own noise level on
intensities in [0, 1] (σ = 5/256: α/σ² = 52 > 2, the data term alone overshoots), while
α σ² keeps the data term's contraction 1 − α_t in (0, 1) at every σ and moves the
image the same way (the same minimiser, the same descent direction).
``step_units="raw"`` takes the formula literally.

``super_resolve`` (002 §4.3): from the 2×2 block means ``small`` of an image, start at a
bilinear upscaling smoothed by a 3×3 binomial low-pass filter, then repeat (1) a step down
the energy, x ← x − α_t ∇_x E(x), and (2) restoring each block's mean to ``small``.

Intensities are in [0, 1] (scikit-image's ``img_as_float``); ``psnr`` uses that range by
default. Nothing is clipped: clip the result yourself if you need valid pixel values.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import ndimage
from tqdm.auto import tqdm

from symcurv import errors
from symcurv.runtime import per_case
from symcurv.runtime.program import Program

Energy = Program | Callable[[np.ndarray], tuple[float, np.ndarray]]


class _Prior:
    """E and ∇_x E of a compiled energy (θ fixed) or of a callable, on arrays shaped like
    the user's image: one case per image, the image flat."""

    def __init__(self, energy: Energy, theta, wrt: str | None, shape: tuple[int, ...]) -> None:
        self.shape = shape
        if isinstance(energy, Program):
            if theta is None:
                raise errors.ModelError(
                    f"the energy program '{energy.name}' needs its parameters",
                    where="sc.denoise/sc.super_resolve",
                    fix="pass theta=... (e.g. prog.init(0) or a trained θ)",
                )
            self.prog, self.theta = energy, np.asarray(theta, dtype=np.float64)
            self.x = per_case.input_name(energy.inputs, wrt, energy.name)
            width = energy.inputs[self.x]["size"]
            self.cases = _cases(shape, width, energy.name)
        elif callable(energy):
            self.prog, self.fn = None, energy
        else:
            raise errors.ModelError(
                f"the energy is {type(energy).__name__}, not a Program or a callable",
                where="sc.denoise/sc.super_resolve",
                fix="pass sc.compile(model, programs=('loss', 'input_grad')) with theta=..., "
                "or a function x -> (E(x), ∇E(x))",
            )

    def grad(self, x: np.ndarray) -> np.ndarray:
        """∂E/∂x of every image (the sum of the per-image energies' gradients)."""
        if self.prog is None:
            return np.asarray(self.fn(x)[1], dtype=np.float64).reshape(self.shape)
        batch = {self.x: x.reshape(self.cases, -1)}
        return self.prog.input_grad(self.theta, batch, wrt=self.x).reshape(self.shape)

    def value(self, x: np.ndarray) -> float:
        """E summed over the images."""
        if self.prog is None:
            return float(self.fn(x)[0])
        batch = {self.x: x.reshape(self.cases, -1)}
        return self.cases * float(self.prog.loss(self.theta, batch))


def _cases(shape: tuple[int, ...], width: int, name: str) -> int:
    """How many images of ``width`` pixels an array of ``shape`` holds: one image of any
    shape with ``width`` pixels, or rows of ``width`` pixels (a batch of flat images)."""
    size = math.prod(shape)
    if size == width:
        return 1
    if len(shape) == 2 and shape[1] == width:
        return shape[0]
    raise errors.BatchError(
        f"an image of shape {shape} does not fit the energy '{name}', whose input has "
        f"{width} pixels",
        where="sc.denoise/sc.super_resolve",
        fix=f"pass one image of {width} pixels (e.g. (H, W) with H·W = {width}) or a "
        f"(B, {width}) batch of flat images, or build the model for this image size",
    )


def annealed_steps(step: tuple[float, float], steps: int) -> np.ndarray:
    """α_t = α₀ (α₁/α₀)^{t/(steps−1)}, t = 0 … steps−1: geometric from α₀ to α₁."""
    a0, a1 = step
    if steps == 1:
        return np.array([a0])
    return a0 * (a1 / a0) ** (np.arange(steps) / (steps - 1))


def _check_settings(sigma: float | None, steps: Any, step: Any, units: str) -> None:
    where = "sc.denoise/sc.super_resolve"
    if sigma is not None and not (isinstance(sigma, int | float) and 0 < sigma < math.inf):
        raise errors.OptimizerError(
            f"sigma = {sigma!r} is not a positive noise level",
            where=where,
            fix="pass the noise's standard deviation in image units, e.g. 25/255",
        )
    if isinstance(steps, bool) or not isinstance(steps, int | np.integer) or steps < 1:
        raise errors.OptimizerError(
            f"steps = {steps!r} is not a positive whole number", where=where, fix="e.g. steps=300"
        )
    ok = isinstance(step, tuple | list) and len(step) == 2
    if not ok or not all(isinstance(a, int | float) and 0 < a < math.inf for a in step):
        raise errors.OptimizerError(
            f"step = {step!r} is not a pair of positive step sizes",
            where=where,
            fix="pass (first, last), e.g. step=(2e-2, 5e-4); equal values: a constant step",
        )
    if units not in ("sigma2", "raw"):
        raise errors.OptimizerError(
            f"step_units = {units!r}", where=where, fix='use "sigma2" (default) or "raw"'
        )


def _image(y, what: str) -> np.ndarray:
    y = np.asarray(y, dtype=np.float64)
    if y.ndim == 0 or y.size == 0 or not np.all(np.isfinite(y)):
        raise errors.BatchError(
            f"the {what} is empty, a scalar or not finite (NaN/inf pixels)",
            where="sc.denoise/sc.super_resolve",
            fix="pass a finite image array with intensities in [0, 1]",
        )
    return y


def denoise(
    energy: Energy,
    y,
    sigma: float,
    steps: int = 300,
    step: tuple[float, float] = (2e-2, 5e-4),
    *,
    theta=None,
    wrt: str | None = None,
    x0=None,
    step_units: str = "sigma2",
    progress: bool = True,
    trace: bool = False,
):
    """MAP estimate of the clean image(s) behind ``y`` under the prior ``energy`` and white
    Gaussian noise of standard deviation ``sigma``: ``steps`` steps of steepest descent on
    f(x) = E(x) + ‖x − y‖²/(2σ²) from ``x0`` (default y),
    x ← x − α_t σ² ∇f(x) with α_t geometric from ``step[0]`` to ``step[1]``
    (``step_units="raw"``: x ← x − α_t ∇f(x)). See the module docstring.

    ``energy``: a compiled energy model (a Program with ``input_grad``, and ``loss`` when
    ``trace``) with its parameters ``theta``, or a function x -> (E(x), ∇E(x)) on arrays
    shaped like ``y``. ``y``: one image of the model's input size (any shape, e.g. (H, W))
    or a (B, H·W) batch of flat images, one case each. Returns x̂ shaped like ``y``; with
    ``trace=True`` also f before each step and after the last (steps + 1 values, a forward
    pass each). ``progress``: a tqdm bar on stderr."""
    _check_settings(sigma, steps, step, step_units)
    y = _image(y, "noisy image y")
    prior = _Prior(energy, theta, wrt, y.shape)
    x = y.copy() if x0 is None else _image(x0, "starting image x0").copy()
    if x.shape != y.shape:
        raise errors.BatchError(
            f"x0 has shape {x.shape}, y {y.shape}", where="sc.denoise", fix="pass x0 like y"
        )
    scale = sigma**2 if step_units == "sigma2" else 1.0
    inv_var = 1.0 / sigma**2

    def objective(x: np.ndarray) -> float:
        return prior.value(x) + 0.5 * inv_var * float(np.sum((x - y) ** 2))

    values = [objective(x)] if trace else []
    bar = tqdm(annealed_steps(step, steps), desc="denoise", disable=not progress, file=sys.stderr)
    for alpha in bar:
        x -= alpha * scale * (prior.grad(x) + inv_var * (x - y))
        if trace:
            values.append(objective(x))
            bar.set_postfix(objective=f"{values[-1]:.6g}", refresh=False)
    bar.close()
    return (x, np.array(values)) if trace else x


def block_average(x, factor: int = 2) -> np.ndarray:
    """The image of ``factor`` × ``factor`` block means (002 §4.3's down-sampling); the
    image's sides must be multiples of ``factor``."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] % factor or x.shape[1] % factor:
        raise errors.BatchError(
            f"block_average needs a 2-D image with sides divisible by {factor}, got {x.shape}",
            where="sc.block_average",
            fix=f"crop the image to multiples of {factor}",
        )
    h, w = x.shape[0] // factor, x.shape[1] // factor
    return x.reshape(h, factor, w, factor).mean(axis=(1, 3))


def restore_means(x: np.ndarray, small: np.ndarray, factor: int) -> np.ndarray:
    """x plus, in each block, the constant that makes the block's mean the small pixel."""
    return x + np.kron(small - block_average(x, factor), np.ones((factor, factor)))


def upscale(small, factor: int = 2) -> np.ndarray:
    """002 §4.3's first approximation: linear (bilinear) upscaling, then a 3×3 binomial
    low-pass filter ([1, 2, 1]/4 ⊗ [1, 2, 1]/4) against false high frequencies."""
    small = _image(small, "small image")
    up = ndimage.zoom(small, factor, order=1, mode="nearest", grid_mode=True)
    k = np.array([1.0, 2.0, 1.0]) / 4.0
    return ndimage.convolve(up, np.outer(k, k), mode="nearest")


def super_resolve(
    energy: Energy,
    small,
    steps: int = 200,
    step: tuple[float, float] = (2e-2, 5e-4),
    *,
    theta=None,
    wrt: str | None = None,
    factor: int = 2,
    progress: bool = True,
):
    """An image ``factor`` times larger whose ``factor`` × ``factor`` block means are
    ``small`` (a 2-D image), guided by the prior ``energy`` (002 §4.3): from
    ``upscale(small)`` with its block means restored, ``steps`` times (1) x ← x − α_t ∇_x E(x)
    (α_t geometric from ``step[0]`` to ``step[1]``), (2) restore each block's mean.
    ``energy`` and ``theta`` as in :func:`denoise` (the model's input is the LARGE image)."""
    _check_settings(None, steps, step, "raw")
    small = _image(small, "small image")
    if small.ndim != 2:
        raise errors.BatchError(
            f"super_resolve needs one 2-D image, got shape {small.shape}",
            where="sc.super_resolve",
            fix="pass the (h, w) image of block means",
        )
    x = restore_means(upscale(small, factor), small, factor)
    prior = _Prior(energy, theta, wrt, x.shape)
    bar = tqdm(
        annealed_steps(step, steps), desc="super_resolve", disable=not progress, file=sys.stderr
    )
    for alpha in bar:
        x = restore_means(x - alpha * prior.grad(x), small, factor)
    bar.close()
    return x


def psnr(x, reference, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB, 10 log₁₀(data_range² / mean((x − reference)²)),
    for intensities in [0, ``data_range``] (default [0, 1]; use 255 for 8-bit values)."""
    x, reference = np.asarray(x, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    if x.shape != reference.shape:
        raise errors.BatchError(
            f"psnr of shapes {x.shape} and {reference.shape}",
            where="sc.psnr",
            fix="compare images of the same shape",
        )
    mse = float(np.mean((x - reference) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(data_range**2 / mse)
