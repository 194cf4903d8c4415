"""ACP, the amortized covariance preconditioner (George 2017, §6.3-6.4, Algorithm 3).

Per dense layer a = W h + b the Fisher block is approximated by A ⊗ α I (the
pre-activation factor replaced by a multiple of the identity), A = mean_b ā āᵀ,
ā = [h; 1]. Inverting A blockwise with the covariance C = mean_b (h − h̄)(h − h̄)ᵀ gives
the update of eq. 6.3.3-6.3.4 (signs fixed: a descent step, DESIGN.md §3):

    ΔW = −(η/α) mean_b ∇_{a_b}ℓ (h_b − h̄)ᵀ (C + (λ/α) I)⁻¹
    Δb = −(η/α) mean_b ∇_{a_b}ℓ − ΔW h̄

with Tikhonov damping λ scaled by 1/α (§6.4.2). C's eigendecomposition is refreshed every
``inverse_every`` steps (the amortisation); h̄ and the gradients come from each minibatch.
α is fixed (``alpha=``) or, per layer and minibatch, the heuristic
α = max_{b, j} (∂ℓ_b/∂a_bj)² (``alpha=None``). With the heuristic, the α in the damping
λ/α is by default the one of the refresh step (``damping_alpha="refresh"``): Algorithm 3
forms inv_C, damping included, once per refresh and uses it for the next ``inverse_every``
steps, while 1/α in front follows each minibatch. ``damping_alpha="step"`` takes each
minibatch's α in the damping too; that variant is unstable: in C's near-null directions
its step is a centered gradient step of size η/λ whatever α is, and one large step makes α
huge and λ/α vanish, so that every direction C has barely seen is amplified
(docs/kfac.md, "ACP's α heuristic"). A layer without a bias is preconditioned by
A = mean_b h hᵀ alone (ΔW = −(η/α) ∇_W (A + (λ/α) I)⁻¹); parameters outside dense layers
take a plain gradient step −η ∇.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from symcurv import errors
from symcurv.optim.kfac import eigen
from symcurv.optim.training import Sampler, is_number, require


def layer_gradients(prog, g: np.ndarray, layer) -> tuple[np.ndarray, np.ndarray | None]:
    """(∇_W as n_out × n_in, ∇_b or None) from a flat gradient."""
    p = prog.params[layer.weight]
    gW = g[p["offset"] : p["offset"] + p["size"]].reshape(layer.n_out, layer.n_in)
    if not layer.bias:
        return gW, None
    q = prog.params[layer.bias]
    return gW, g[q["offset"] : q["offset"] + q["size"]]


def _check_programs(prog, opt: str) -> None:
    missing = sorted({"grad", "kfac_empirical"} - set(getattr(prog, "programs", ())))
    if missing:
        raise errors.BuildError(
            f"{opt} needs program(s) {missing}, which were not compiled",
            fix="compile with programs=['loss', 'grad', 'kfac']",
        )


class ACP:
    """``ACP(prog, alpha=None, damping=1e-3, learning_rate=0.1, inverse_every=100,
    damping_alpha="refresh", l2=0.0, default_batch_size=200)`` (module docstring); drive it
    with ``fit``."""

    def __init__(
        self,
        prog,
        *,
        alpha: float | None = None,
        damping: float = 1e-3,
        learning_rate: float = 0.1,
        inverse_every: int = 100,
        damping_alpha: str = "refresh",
        l2: float = 0.0,
        default_batch_size: int = 200,
    ) -> None:
        require(alpha is None or (is_number(alpha) and alpha > 0), "alpha", alpha, "> 0 or None")
        for name, v in (("damping", damping), ("l2", l2)):
            require(is_number(v) and math.isfinite(v) and v >= 0, name, v, "≥ 0")
        require(
            is_number(learning_rate) and learning_rate > 0, "learning_rate", learning_rate, "> 0"
        )
        for name, v in (
            ("inverse_every", inverse_every),
            ("default_batch_size", default_batch_size),
        ):
            require(isinstance(v, (int, np.integer)) and v >= 1, name, v, "as an integer ≥ 1")
        require(
            damping_alpha in ("refresh", "step"),
            "damping_alpha",
            damping_alpha,
            "'refresh' (Algorithm 3's inv_C) or 'step'",
        )
        _check_programs(prog, "ACP")
        self.damping_alpha = damping_alpha
        self.prog, self.alpha, self.damping = prog, alpha, damping
        self.learning_rate, self.inverse_every = learning_rate, inverse_every
        self.l2, self.default_batch_size = l2, default_batch_size
        self.layers = prog.kfac_layers

    def config(self) -> dict[str, Any]:
        """The options (JSON-able), as checkpoints record them."""
        keys = "alpha damping learning_rate inverse_every damping_alpha l2 default_batch_size"
        keys = keys.split()
        return {k: getattr(self, k) for k in keys}

    def init(self, theta: np.ndarray) -> dict[str, Any]:
        """No step taken yet (C is decomposed on the first)."""
        return {"steps": 0}

    def _damping_alpha(self, state: dict[str, Any], k: str, alpha: float) -> float:
        """The α of the damping λ/α: the refresh step's (while it was a usable positive
        number) or this minibatch's."""
        at_refresh = state.get(f"a:{k}")
        if self.damping_alpha == "step" or not at_refresh or not math.isfinite(at_refresh):
            return alpha
        return float(at_refresh)

    def step(
        self, theta: np.ndarray, data: Sampler, state: dict[str, Any]
    ) -> tuple[np.ndarray, dict[str, Any], dict[str, Any]]:
        """One ACP update on a minibatch: ``(theta, state, info)``."""
        state = dict(state)
        steps = int(state["steps"]) + 1
        batch = data.minibatch()
        f, g = self.prog.grad(theta, batch)
        g = np.asarray(g, dtype=np.float64) + self.l2 * theta
        t0 = time.perf_counter()
        fac = self.prog.kfac_factors(theta, batch, curvature="empirical")
        t_factors = time.perf_counter() - t0
        t0 = time.perf_counter()
        if (steps - 1) % self.inverse_every == 0:
            for k, L in self.layers.items():
                lf = fac.layers[k]
                n = L.n_in
                S = lf.A[:n, :n]
                M = S - np.outer(lf.h_mean, lf.h_mean) if L.bias else S  # C, or A alone
                prev = (state[f"e:{k}"], state[f"U:{k}"]) if f"e:{k}" in state else None
                state[f"e:{k}"], state[f"U:{k}"] = eigen(M, prev)
                top = self.alpha if self.alpha is not None else lf.max_sq_grad
                state[f"a:{k}"] = float(top) if top else math.nan  # nan: none usable
        t_inverse = time.perf_counter() - t0
        step = -self.learning_rate * g
        alphas = {}
        for k, L in self.layers.items():
            lf = fac.layers[k]
            alpha = self.alpha if self.alpha is not None else lf.max_sq_grad
            if not alpha or not math.isfinite(alpha):  # no gradient reaches a: nothing to do
                continue
            alphas[k] = alpha
            gW, gb = layer_gradients(self.prog, g, L)
            centered = gW - np.outer(gb, lf.h_mean) if L.bias else gW
            w, U = state[f"e:{k}"], state[f"U:{k}"]
            dW = -(self.learning_rate / alpha) * (
                ((centered @ U) / (w + self.damping / self._damping_alpha(state, k, alpha))) @ U.T
            )
            p = self.prog.params[k]
            step[p["offset"] : p["offset"] + p["size"]] = dW.ravel()
            if L.bias:
                q = self.prog.params[L.bias]
                db = -(self.learning_rate / alpha) * gb - dW @ lf.h_mean
                step[q["offset"] : q["offset"] + q["size"]] = db
        new_theta = (theta + step).astype(theta.dtype, copy=False)
        info = {
            "objective": float(f) + 0.5 * self.l2 * float(theta @ theta),
            "grad_norm": float(np.linalg.norm(g)),
            "alpha_min": min(alphas.values(), default=math.nan),
            "alpha_max": max(alphas.values(), default=math.nan),
            "time_factors": t_factors,
            "time_inverse": t_inverse,
        }
        state["steps"] = steps
        if not np.isfinite(new_theta).all():
            raise errors.NonFiniteError(
                f"ACP diverged at step {steps}: θ left the finite numbers",
                fix="raise damping or lower learning_rate (or fix alpha)",
            )
        return new_theta, state, info
