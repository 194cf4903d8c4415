"""Centered gradient descent (George 2017, §6.4.1, Algorithm 2).

For a dense layer a = W h + b the weight step uses the centered input:

    ΔW = −η mean_b ∇_{a_b}ℓ (h_b − h̄)ᵀ = −η (∇_W − ∇_b h̄ᵀ),    Δb = −η ∇_b

(∇ the minibatch-mean gradients; the sign fixed to descend, DESIGN.md §3), with heavy-ball
momentum v ← μ v + Δ, θ ← θ + v. Not a reparametrisation (as mean-only batch norm is):
the forward pass is unchanged, only the direction differs. Layers without a bias and
parameters outside dense layers take the plain gradient step.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from symcurv import errors
from symcurv.optim.acp import _check_programs, layer_gradients
from symcurv.optim.training import Sampler, is_number, require


class CenteredSGD:
    """``CenteredSGD(prog, learning_rate, momentum=0.0, l2=0.0, default_batch_size=200)``."""

    def __init__(
        self,
        prog,
        learning_rate: float,
        *,
        momentum: float = 0.0,
        l2: float = 0.0,
        default_batch_size: int = 200,
    ) -> None:
        require(
            is_number(learning_rate) and math.isfinite(learning_rate) and learning_rate > 0,
            "learning_rate",
            learning_rate,
            "> 0",
        )
        require(is_number(momentum) and 0 <= momentum < 1, "momentum", momentum, "in [0, 1)")
        require(is_number(l2) and l2 >= 0, "l2", l2, "≥ 0")
        require(
            isinstance(default_batch_size, (int, np.integer)) and default_batch_size >= 1,
            "default_batch_size",
            default_batch_size,
            "as an integer ≥ 1",
        )
        _check_programs(prog, "CenteredSGD")
        self.prog, self.learning_rate, self.momentum = prog, learning_rate, momentum
        self.l2, self.default_batch_size = l2, default_batch_size
        self.layers = {k: L for k, L in prog.kfac_layers.items() if L.bias}

    def config(self) -> dict[str, Any]:
        """The options (JSON-able), as checkpoints record them."""
        keys = "learning_rate momentum l2 default_batch_size".split()
        return {k: getattr(self, k) for k in keys}

    def init(self, theta: np.ndarray) -> dict[str, Any]:
        """Zero velocity, no steps taken."""
        return {"velocity": np.zeros_like(theta), "steps": 0}

    def step(
        self, theta: np.ndarray, data: Sampler, state: dict[str, Any]
    ) -> tuple[np.ndarray, dict[str, Any], dict[str, Any]]:
        """One centered (momentum) step on a minibatch: ``(theta, state, info)``."""
        batch = data.minibatch()
        f, g = self.prog.grad(theta, batch)
        g = np.asarray(g, dtype=np.float64) + self.l2 * theta
        direction = g.copy()
        if self.layers:
            fac = self.prog.kfac_factors(theta, batch, curvature="empirical")
            for k, L in self.layers.items():
                gW, gb = layer_gradients(self.prog, g, L)
                p = self.prog.params[k]
                centered = gW - np.outer(gb, fac.layers[k].h_mean)
                direction[p["offset"] : p["offset"] + p["size"]] = centered.ravel()
        v = self.momentum * state["velocity"] - self.learning_rate * direction
        new_theta = (theta + v).astype(theta.dtype, copy=False)
        steps = int(state["steps"]) + 1
        if not np.isfinite(new_theta).all():
            raise errors.NonFiniteError(
                f"CenteredSGD diverged at step {steps}: θ left the finite numbers",
                fix="lower learning_rate",
            )
        info = {
            "objective": float(f) + 0.5 * self.l2 * float(theta @ theta),
            "grad_norm": float(np.linalg.norm(g)),
        }
        return new_theta, {"velocity": v, "steps": steps}, info
