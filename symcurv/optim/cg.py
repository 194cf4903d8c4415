"""Linear conjugate gradient on the quadratic model, as Hessian-free optimisation runs it.

Martens (2010) §4.4 uses the sign convention of the model itself: CG minimises

    φ(x) = q(x) − q(0) = gᵀx + ½ xᵀA x,        A = G + λI (or H + λI), g = ∇f(θ),

whose minimiser solves A x = −g. φ is tracked at no extra cost from the residual
r = A x + g (the gradient of φ): φ(x) = ½ xᵀ(r + g). Three things differ from textbook CG:

- termination on the relative progress of φ, not on ‖r‖ (§4.4, :func:`martens_stop`);
- the iterates at i = ⌈γʲ⌉ are kept for CG-iteration backtracking (§4.6);
- an optional diagonal preconditioner M (§4.7): CG then runs on the variable C x with
  M = CᵀC, which only changes y = M⁻¹r below.

This module is numpy only: ``matvec`` is any function v -> A v.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np

from symcurv import errors

#: Martens (2010) §4.4: ε, the tolerated relative progress per iteration.
EPSILON = 5e-4
#: §4.4: the look-back k = max(MIN_GAP, ⌈GAP_RATIO·i⌉).
GAP_RATIO = 0.1
MIN_GAP = 10
#: §4.6: iterates kept at ⌈γʲ⌉.
GAMMA = 1.3
#: Martens' released code (the ICML runs): at most 250 CG iterations per HF iteration.
MAX_ITERATIONS = 250


@dataclasses.dataclass
class CGResult:
    """What one CG run hands back.

    ``x`` is the final iterate (the warm start of the next run, §4.5, never backtracked);
    ``iterates`` lists ``(i, x_i)`` at the kept indices ⌈γʲ⌉ plus the final one, in
    increasing i; ``phis[i]`` = φ(x_i) for i = 0 (the start) ... ``iterations``;
    ``stop`` says why CG stopped: "progress" (Martens' rule), "max_iterations",
    "converged" (residual vanished: the exact minimiser) or "negative_curvature"
    (dᵀA d ≤ 0, only possible with an indefinite A such as an undamped Hessian).
    """

    x: np.ndarray
    iterates: list[tuple[int, np.ndarray]]
    phis: list[float]
    iterations: int
    stop: str

    def phi(self, i: int) -> float:
        """φ(x_i) = gᵀx_i + ½ x_iᵀA x_i, recorded while CG ran."""
        return self.phis[i]


def look_back(i: int, gap_ratio: float = GAP_RATIO, min_gap: int = MIN_GAP) -> int:
    """k = max(min_gap, ⌈gap_ratio · i⌉): how many iterations back the progress is measured."""
    # round first: 0.1 * 30 is 3.0000000000000004 in floating point, whose ceiling is 4
    return max(int(min_gap), math.ceil(round(gap_ratio * i, 9)))


def martens_stop(
    phis: list[float],
    i: int,
    epsilon: float = EPSILON,
    gap_ratio: float = GAP_RATIO,
    min_gap: int = MIN_GAP,
) -> bool:
    """Martens (2010) §4.4: stop at iteration i when

        i > k  and  φ(x_i) < 0  and  (φ(x_i) − φ(x_{i−k})) / φ(x_i) < k·ε,

    k = max(min_gap, ⌈gap_ratio·i⌉): the average relative reduction of φ per iteration over
    the last k iterations fell below ε. ``phis[j]`` = φ(x_j), ``phis[0]`` the start.
    """
    k = look_back(i, gap_ratio, min_gap)
    if i <= k or not phis[i] < 0:
        return False
    return (phis[i] - phis[i - k]) / phis[i] < k * epsilon


def kept_indices(gamma: float = GAMMA, up_to: int = MAX_ITERATIONS) -> list[int]:
    """The distinct ⌈γʲ⌉ ≤ up_to, j = 0, 1, ... (1, 2, 3, 4, 5, 7, 9, 11, 14, ... for γ = 1.3)."""
    if not gamma > 1:
        raise ValueError(f"gamma = {gamma} must be > 1")
    out: list[int] = []
    j = 0
    while (i := math.ceil(gamma**j)) <= up_to:
        if not out or i != out[-1]:
            out.append(i)
        j += 1
    return out


def conjugate_gradient(
    matvec: Callable[[np.ndarray], np.ndarray],
    g: np.ndarray,
    x0: np.ndarray | None = None,
    *,
    preconditioner: np.ndarray | None = None,
    max_iterations: int = MAX_ITERATIONS,
    min_iterations: int = 1,
    epsilon: float = EPSILON,
    gap_ratio: float = GAP_RATIO,
    min_gap: int = MIN_GAP,
    gamma: float | None = GAMMA,
) -> CGResult:
    """Minimise φ(x) = gᵀx + ½ xᵀA x by (preconditioned) linear CG from ``x0`` (0 if None).

    ``preconditioner`` is the diagonal of M (all positive); ``epsilon = 0`` disables
    Martens' termination (CG then runs to ``max_iterations`` or exact convergence);
    ``gamma = None`` keeps only the final iterate (no backtracking storage). Each
    iteration costs one ``matvec``; a non-zero ``x0`` costs one more. A non-finite
    quantity (an overflowing product, say) raises :class:`~symcurv.errors.NonFiniteError`.
    """
    # overflows are caught by _finite with a clear error: no numpy warnings on the way
    with np.errstate(over="ignore", invalid="ignore"):
        g = np.asarray(g, dtype=np.float64)
        if x0 is None or not np.any(x0):
            x = np.zeros_like(g)
            r = g.copy()  # A·0 + g: no product needed for the cold start
        else:
            x = np.array(x0, dtype=np.float64)
            r = matvec(x) + g
        m = None if preconditioner is None else np.asarray(preconditioner, dtype=np.float64)
        y = r / m if m is not None else r
        d = -y
        ry = ry0 = _finite(r @ y, "the initial residual", 0)
        phis = [0.5 * _finite(x @ (r + g), "φ(x0)", 0)]
        keep = set(kept_indices(gamma, max_iterations)) if gamma is not None else set()
        iterates: list[tuple[int, np.ndarray]] = []
        stop, i = "max_iterations", 0
        if ry == 0.0:  # x0 is already the exact minimiser (or g = 0)
            stop = "converged"
        while stop != "converged" and i < max_iterations:
            Ad = matvec(d)
            dAd = _finite(d @ Ad, "the curvature dᵀAd", i + 1)
            if not dAd > 0:
                stop = "negative_curvature"  # CG's step length would be meaningless
                break
            alpha = ry / dAd
            x = x + alpha * d
            r = r + alpha * Ad
            y = r / m if m is not None else r
            ry_new = _finite(r @ y, "the residual", i + 1)
            d = -y + (ry_new / ry) * d
            ry = ry_new
            i += 1
            phis.append(0.5 * float(x @ (r + g)))
            if i in keep:
                iterates.append((i, x))  # x is rebound, never updated in place: no copy needed
            if i >= min_iterations and martens_stop(phis, i, epsilon, gap_ratio, min_gap):
                stop = "progress"
                break
            if ry <= 1e-30 * ry0:  # the residual vanished: x is the minimiser to rounding
                stop = "converged"
        if not iterates or iterates[-1][0] != i:
            iterates.append((i, x))
    return CGResult(x=x, iterates=iterates, phis=phis, iterations=i, stop=stop)


def _finite(value, what: str, i: int) -> float:
    """``float(value)``, or a NonFiniteError: CG cannot recover from an overflow itself."""
    value = float(value)
    if not math.isfinite(value):
        raise errors.NonFiniteError(
            f"conjugate gradient: {what} is not finite at iteration {i}",
            fix="raise the damping, or start from a smaller x0 (a huge warm start overflows)",
        )
    return value
