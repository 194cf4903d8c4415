"""Fields of Experts (Roth & Black 2009) as Kingma & LeCun (2010, eq. 9) train it:

    E(x) = Σ_p Σ_{i=1..M} α_i g(w̃_iᵀ x_(p)),   α_i = exp β_i,   g(z) = log((c z)² / 2 + 1),

p running over every position where a k × k patch x_(p) fits the image (a "valid"
correlation: sc.conv2d), c = e^1.5 (fixed), M = 24 filters of 5 × 5, w̃_i = w_i / ‖w_i‖
(002 §4: the PoE's filters are L2-normalised "to prevent a large portion from vanishing",
and the FoE takes "α_i and g(.) as in our PoE model"; ``normalize=False`` keeps them free).
One case is one whole image, flat (row-major), so the same model serves training on crops
and MAP denoising of a full photograph (sc.denoise). With Y the per-case (M, positions)
response matrix, E = Σ_p (g(Y)ᵀ α)_p.

The model is trained on WHITENED images x_w = L ⋆ x (002 §4.2; L the 5 × 5 Laplacian of
examples/foe_denoise.py). Its prior on a raw image x is then E(L ⋆ x) (up to a constant:
the whitening is linear), an FoE over x with the composed k + 4 filters w̃_i ⋆ L:
``raw_image_theta`` computes them for ``model(size=k + 4, normalize=False)``.

    symcurv build examples/foe.py -o build/foe
"""

import numpy as np
import sympy
from scipy import signal

import symcurv as sc

C = sympy.exp(sympy.Rational(3, 2))  # the Student-t's fixed horizontal scale, c = e^1.5
student = sc.elementwise("student_t", lambda z: sympy.log((C * z) ** 2 / 2 + 1))


def model(image=(64, 64), filters=24, size=5, name="foe", std=0.1, normalize=True):
    """The FoE energy over one ``image = (H, W)`` picture (flat input ``x`` of H·W pixels);
    parameters ``F`` (filters, size²), one filter per row (unit-normalised inside the
    energy when ``normalize``), and ``beta`` (filters,)."""
    H, W = image
    m = sc.Model(name)
    x = m.input("x", H * W)
    F = m.param("F", (filters, size * size), init=sc.init.normal(std))
    beta = m.param("beta", filters, init=sc.init.zeros())
    Fn = sc.normalize_rows(F) if normalize else F
    Y = sc.conv2d(Fn, x, image=(H, W))  # (filters, positions): w̃_iᵀ x_(p)
    m.energy(sc.sum(student(Y).T @ sc.exp(beta)))
    return m


def whitened_model(image=(64, 64), filters=24, size=5, whitening=5, name="foe_whitened"):
    """The prior on a RAW ``image`` of a model trained on whitened images: E(s · L ⋆ x), the
    energy of ``model`` (unit-normalised filters) on the whitened image s · (L ⋆ x), H − l + 1
    by W − l + 1 pixels (L the l × l whitening filter, s the training data's scale; both
    parameters here, set by ``whitened_theta``). The same energy as ``model(size=k + l − 1,
    normalize=False)`` with ``raw_image_theta``'s composed filters, at M·k² + l²
    multiply-adds per pixel instead of M·(k + l − 1)²: a third of the work for k = l = 5."""
    H, W = image
    m = sc.Model(name)
    x = m.input("x", H * W)
    L = m.param("L", (1, whitening * whitening), init=sc.init.normal(0.1))
    s = m.param("s", 1, init=sc.init.normal(1.0))
    F = m.param("F", (filters, size * size), init=sc.init.normal(0.1))
    beta = m.param("beta", filters, init=sc.init.zeros())
    # (1, positions)ᵀ @ (s,): the single response map as a flat image, times s
    white = sc.conv2d(L, x, image=(H, W)).T @ s
    inner = (H - whitening + 1, W - whitening + 1)
    Y = sc.conv2d(sc.normalize_rows(F), white, image=inner)
    m.energy(sc.sum(student(Y).T @ sc.exp(beta)))
    return m


def whitened_theta(prog, theta, whitening: np.ndarray, scale: float) -> dict:
    """``whitened_model``'s parameters from a model trained on whitened data (``prog``,
    ``theta``), the whitening filter and the data scale s."""
    p = prog.unflatten(theta)
    return {"L": whitening.reshape(1, -1), "s": np.array([scale]), "F": p["F"], "beta": p["beta"]}


def unit_filters(F: np.ndarray) -> np.ndarray:
    """The filters the energy applies: rows of ``F`` scaled to unit length."""
    return F / np.linalg.norm(F, axis=1, keepdims=True)


def raw_image_theta(prog, theta, whitening: np.ndarray, normalize=True) -> dict:
    """{"F", "beta"} of ``model(size=k + l − 1, normalize=False)`` whose energy on a raw
    image x equals the trained model's energy on the whitened L ⋆ x (L = ``whitening``,
    l × l): w ⋆ (L ⋆ x) = (w ∗ L) ⋆ x, the full convolution of the filter with L."""
    p = prog.unflatten(theta)
    k = int(round(np.sqrt(p["F"].shape[1])))
    F = unit_filters(p["F"]) if normalize else p["F"]
    composed = [signal.convolve2d(f.reshape(k, k), whitening) for f in F]
    return {"F": np.stack([c.ravel() for c in composed]), "beta": p["beta"].copy()}


def tiny():
    """3 filters of 3 × 3 on 6 × 7 images: for tests."""
    return model(image=(6, 7), filters=3, size=3, name="foe_tiny", std=0.5)
