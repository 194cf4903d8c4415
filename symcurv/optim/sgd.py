"""First-order baselines on ``prog.grad``: SGD with (Nesterov) momentum, and Adam.

Both minimise the objective f(θ) + ½ℓ‖θ‖² (ℓ = ``l2``, the same prior as HessianFree's)
on one minibatch per step, drawn by ``fit``'s sampler. Their state is only arrays and a
step count, so checkpoints resume them exactly.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from symcurv import errors
from symcurv.optim.training import Sampler, is_number, require


def _prior(theta: np.ndarray, f: float, g: np.ndarray, l2: float) -> tuple[float, np.ndarray]:
    """(f + ½ℓ‖θ‖², g + ℓθ)."""
    if l2:
        return f + 0.5 * l2 * float(theta @ theta), g + l2 * theta
    return f, g


def _diverged(opt: str, step: int, e: Exception | None = None) -> errors.NonFiniteError:
    why = f": {e}" if e is not None else ": θ left the finite numbers"
    return errors.NonFiniteError(
        f"{opt} diverged at step {step}{why}",
        fix="lower learning_rate (or restart from the last checkpoint with a smaller one)",
    )


def _check_common(learning_rate: float, l2: float, default_batch_size: int) -> None:
    require(
        is_number(learning_rate) and math.isfinite(learning_rate) and learning_rate > 0,
        "learning_rate",
        learning_rate,
        "> 0",
    )
    require(is_number(l2) and math.isfinite(l2) and l2 >= 0, "l2", l2, "≥ 0")
    require(
        isinstance(default_batch_size, (int, np.integer)) and default_batch_size >= 1,
        "default_batch_size",
        default_batch_size,
        "as an integer ≥ 1",
    )


def _check_grad_program(prog, opt: str) -> None:
    if "grad" not in getattr(prog, "programs", ()):
        raise errors.BuildError(
            f"{opt} needs program 'grad', which was not compiled "
            f"(this build has {list(getattr(prog, 'programs', ()))})",
            fix="compile with programs=[..., 'grad']",
        )


class SGD:
    """Minibatch SGD with momentum (Polyak's heavy ball, or Nesterov's look-ahead):

        v ← μv − η∇f(θ + [μv if nesterov]);   θ ← θ + v

    (Sutskever et al. 2013's form of Nesterov momentum). Options: ``learning_rate`` η,
    ``momentum`` μ ∈ [0, 1), ``nesterov=False``, ``l2=0.0``, ``default_batch_size=100``.
    """

    def __init__(
        self,
        prog,
        *,
        learning_rate: float = 0.01,
        momentum: float = 0.9,
        nesterov: bool = False,
        l2: float = 0.0,
        default_batch_size: int = 100,
    ) -> None:
        _check_common(learning_rate, l2, default_batch_size)
        require(is_number(momentum) and 0 <= momentum < 1, "momentum", momentum, "in [0, 1)")
        _check_grad_program(prog, "SGD")
        self.prog = prog
        self.learning_rate, self.momentum, self.nesterov = learning_rate, momentum, nesterov
        self.l2, self.default_batch_size = l2, default_batch_size

    def config(self) -> dict[str, Any]:
        """The options (JSON-able), as checkpoints record them."""
        keys = ("learning_rate", "momentum", "nesterov", "l2", "default_batch_size")
        return {k: getattr(self, k) for k in keys}

    def init(self, theta: np.ndarray) -> dict[str, Any]:
        """Zero velocity, no steps taken."""
        return {"velocity": np.zeros_like(theta), "steps": 0}

    def step(
        self, theta: np.ndarray, data: Sampler, state: dict[str, Any]
    ) -> tuple[np.ndarray, dict[str, Any], dict[str, Any]]:
        """One (Nesterov) momentum step on a minibatch: ``(theta, state, info)``."""
        v, steps = state["velocity"], int(state["steps"]) + 1
        at = theta + self.momentum * v if self.nesterov else theta
        try:
            f, g = _prior(at, *self.prog.grad(at, data.minibatch()), self.l2)
        except errors.NonFiniteError as e:
            raise _diverged("SGD", steps, e) from e
        v = self.momentum * v - self.learning_rate * g
        new_theta = theta + v
        if not np.isfinite(new_theta).all():
            raise _diverged("SGD", steps)
        info = {"objective": f, "grad_norm": float(np.linalg.norm(g))}
        return new_theta, {"velocity": v, "steps": steps}, info


class Adam:
    """Adam (Kingma & Ba 2015) with bias correction, t = 1, 2, ...:

        m ← β₁m + (1−β₁)g;  s ← β₂s + (1−β₂)g⊙g;
        θ ← θ − η (m / (1−β₁ᵗ)) / (√(s / (1−β₂ᵗ)) + ε)

    Options (the paper's defaults): ``learning_rate=1e-3``, ``beta1=0.9``, ``beta2=0.999``,
    ``eps=1e-8``; ``l2=0.0`` (added to the gradient, as for SGD), ``default_batch_size=100``.
    """

    def __init__(
        self,
        prog,
        *,
        learning_rate: float = 1e-3,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        l2: float = 0.0,
        default_batch_size: int = 100,
    ) -> None:
        _check_common(learning_rate, l2, default_batch_size)
        for name, b in (("beta1", beta1), ("beta2", beta2)):
            require(is_number(b) and 0 <= b < 1, name, b, "in [0, 1)")
        require(is_number(eps) and eps > 0, "eps", eps, "> 0")
        _check_grad_program(prog, "Adam")
        self.prog = prog
        self.learning_rate, self.beta1, self.beta2, self.eps = learning_rate, beta1, beta2, eps
        self.l2, self.default_batch_size = l2, default_batch_size

    def config(self) -> dict[str, Any]:
        """The options (JSON-able), as checkpoints record them."""
        keys = ("learning_rate", "beta1", "beta2", "eps", "l2", "default_batch_size")
        return {k: getattr(self, k) for k in keys}

    def init(self, theta: np.ndarray) -> dict[str, Any]:
        """Zero first and second moments, no steps taken."""
        return {"m": np.zeros_like(theta), "s": np.zeros_like(theta), "steps": 0}

    def step(
        self, theta: np.ndarray, data: Sampler, state: dict[str, Any]
    ) -> tuple[np.ndarray, dict[str, Any], dict[str, Any]]:
        """One Adam step (bias-corrected moments) on a minibatch: ``(theta, state, info)``."""
        t = int(state["steps"]) + 1
        try:
            f, g = _prior(theta, *self.prog.grad(theta, data.minibatch()), self.l2)
        except errors.NonFiniteError as e:
            raise _diverged("Adam", t, e) from e
        m = self.beta1 * state["m"] + (1 - self.beta1) * g
        s = self.beta2 * state["s"] + (1 - self.beta2) * (g * g)
        m_hat = m / (1 - self.beta1**t)
        s_hat = s / (1 - self.beta2**t)
        new_theta = theta - self.learning_rate * m_hat / (np.sqrt(s_hat) + self.eps)
        if not np.isfinite(new_theta).all():
            raise _diverged("Adam", t)
        info = {"objective": f, "grad_norm": float(np.linalg.norm(g))}
        return new_theta, {"m": m, "s": s, "steps": t}, info
