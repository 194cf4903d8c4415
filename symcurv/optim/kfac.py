"""K-FAC (Martens & Grosse 2015) on the compiled factor programs (``prog.kfac_factors``).

Per dense layer a = W h + b the curvature block of (W, b) is approximated by A ⊗ G
(docs/kfac.md); every step:

1. the minibatch's factors, folded into exponential moving averages
   Â ← ε Â + (1 − ε) A, Ĝ ← ε Ĝ + (1 − ε) G (ε = ``factor_decay``; the first batch's
   factors start them), and the diagonal estimate of every parameter outside a layer;
2. every ``inverse_every`` steps the eigendecompositions Â = U_A diag(a) U_Aᵀ,
   Ĝ = U_G diag(g) U_Gᵀ in float64 (guarded: a non-finite factor keeps the previous
   decomposition, negative rounding is clipped to 0), and π = √((tr Â/dim Â)/(tr Ĝ/dim Ĝ));
3. the factored-Tikhonov direction, with ∇̄ = [∇_W, ∇_b] (n_out × (n_in + 1)) and
   γ = √(λ + η) (η = ``l2``):
       Δ = −(Ĝ + (γ/π) I)⁻¹ ∇̄ (Â + π γ I)⁻¹,  (M + cI)⁻¹ = U diag(1/(w + c)) Uᵀ
   (M&G §6.3: of the Kronecker-factored damping terms, π minimises the norm of the
   cross terms); the damped inverses are formed from the eigendecompositions when λ or
   the factors change (so a new λ needs no new decomposition) and kept until then; and
   Δ_p = −∇_p / (d_p + λ + η) for the diagonal parameters;
4. the update u = α Δ + μ δ (δ the previous update): with ``learning_rate=None`` and
   ``momentum=None`` (α, μ) minimise the exact quadratic model
   q(u) = ∇ᵀu + ½ uᵀ (G + (λ + η) I) u, a 2 × 2 system from two gnvp products on a State
   (M&G §7); a float fixes either;
5. every ``adapt_every`` steps (with ``adapt_damping``), ρ = (f(θ + u) − f(θ)) / q₀(u) on the
   same minibatch, q₀ the model without λ (G + ηI), and Levenberg-Marquardt: ρ > 3/4 →
   λ ← ω λ, ρ < 1/4 → λ ← λ / ω, ω = (19/20)^adapt_every (M&G §6.5).

A step whose update is not finite is rejected (θ stays, λ rises): never a NaN in θ.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from symcurv import errors
from symcurv.optim.training import Sampler, is_number, require
from symcurv.runtime.gemm import gemm

CURVATURES = ("exact", "curvature_prop", "fisher_mc", "empirical")


def pi_correction(A: np.ndarray, G: np.ndarray) -> float:
    """π = √((tr A / dim A) / (tr G / dim G)); 1 where either trace is not positive."""
    ta, tg = np.trace(A) / len(A), np.trace(G) / len(G)
    if not (ta > 0 and tg > 0 and math.isfinite(ta) and math.isfinite(tg)):
        return 1.0
    return math.sqrt(ta / tg)


def eigen(M: np.ndarray, previous=None):
    """``(eigenvalues ≥ 0, eigenvectors)`` of a symmetric PSD factor in float64; a
    non-finite factor (or a failed decomposition) keeps ``previous`` (the identity's if
    none)."""
    M = np.asarray(M, dtype=np.float64)
    if np.isfinite(M).all():
        try:
            w, U = np.linalg.eigh((M + M.T) / 2)
            return np.maximum(w, 0.0), U  # PSD up to rounding
        except np.linalg.LinAlgError:
            pass
    if previous is not None:
        return previous
    return np.zeros(len(M)), np.eye(len(M))


def _product(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a · b in float64 by the programs' own ``gemm`` (runtime/gemm.py), which takes
    symcurv's tiles where they beat the BLAS: a step's Kronecker solve is two products per
    layer, 1000 × 1000 · 1000 × 785 on the autoencoder, and numpy's OpenBLAS ran them at
    half the tiles' speed on the Zen 5 VM, whose core it does not know (session 17)."""
    a = np.ascontiguousarray(a, dtype=np.float64)
    b = np.ascontiguousarray(b, dtype=np.float64)
    out = np.empty((a.shape[0], b.shape[1]))
    gemm(a, b, out)
    return out


def damped_inverse(eig, shift: float) -> np.ndarray:
    """(M + shift·I)⁻¹ = U diag(1/(w + shift)) Uᵀ from M's eigendecomposition (w, U); a
    zero denominator gives a zero eigen-direction (the pseudo-inverse), never a division."""
    w, U = eig
    den = w + shift
    inv = np.where(den > 1e-300, 1.0 / np.where(den > 1e-300, den, 1.0), 0.0)
    return (U * inv) @ U.T


class _Products:
    """G v on a State linearised once per step (made on first use), each named direction
    computed once."""

    def __init__(self, prog, theta, batch) -> None:
        self.prog, self.theta, self.batch = prog, theta, batch
        self.state, self.memo = None, {}

    def __call__(self, key: str, v: np.ndarray) -> np.ndarray:
        if key not in self.memo:
            if self.state is None:
                self.state = self.prog.linearize(self.theta, self.batch)
            self.memo[key] = np.asarray(self.state.gnvp(v), dtype=np.float64)
        return self.memo[key]


class KFAC:
    """``KFAC(prog, **options)``; drive it with :func:`symcurv.optim.fit`. The program
    needs ``grad``, ``kfac`` (both factor programs), ``loss`` and ``gnvp``.

    Options: ``curvature="curvature_prop"`` (G's kind: "exact", "curvature_prop",
    "fisher_mc", "empirical"), ``learning_rate=None`` and ``momentum=None`` (None: from
    the 2×2 quadratic model), ``damping=1e-3`` (λ's start), ``adapt_damping=True``,
    ``adapt_every=5``, ``min_damping=1e-8``, ``factor_decay=0.95``, ``factors_every=1``,
    ``inverse_every=20``, ``norm_constraint=None`` (kfac-jax's: Δ scaled so that
    lr² |∇ᵀΔ| = ΔᵀF̂Δ lr² ≤ norm_constraint, the update's squared F̂-norm),
    ``l2=0.0``, ``seed=0`` (the factor noise of step k is drawn from (seed, k)),
    ``default_batch_size=1000``.
    """

    def __init__(
        self,
        prog,
        *,
        curvature: str = "curvature_prop",
        learning_rate: float | None = None,
        momentum: float | None = None,
        damping: float = 1e-3,
        adapt_damping: bool = True,
        adapt_every: int = 5,
        min_damping: float = 1e-8,
        factor_decay: float = 0.95,
        factors_every: int = 1,
        inverse_every: int = 20,
        norm_constraint: float | None = None,
        l2: float = 0.0,
        seed: int = 0,
        default_batch_size: int = 1000,
    ) -> None:
        require(curvature in CURVATURES, "curvature", curvature, f"as one of {CURVATURES}")
        for name, v in (("learning_rate", learning_rate), ("norm_constraint", norm_constraint)):
            require(v is None or (is_number(v) and v > 0), name, v, "> 0 or None")
        require(
            momentum is None or (is_number(momentum) and 0 <= momentum < 1),
            "momentum",
            momentum,
            "in [0, 1) or None",
        )
        for name, v in (("damping", damping), ("l2", l2), ("min_damping", min_damping)):
            require(is_number(v) and math.isfinite(v) and v >= 0, name, v, "≥ 0")
        require(
            is_number(factor_decay) and 0 <= factor_decay < 1,
            "factor_decay",
            factor_decay,
            "in [0, 1)",
        )
        for name, v in (
            ("inverse_every", inverse_every),
            ("factors_every", factors_every),
            ("adapt_every", adapt_every),
            ("default_batch_size", default_batch_size),
        ):
            require(isinstance(v, (int, np.integer)) and v >= 1, name, v, "as an integer ≥ 1")
        need = {"grad", "kfac_cp" if curvature in ("curvature_prop", "exact") else "kfac_empirical"}
        if adapt_damping:
            need.add("loss")
        if learning_rate is None or momentum is None or adapt_damping:
            need.add("gnvp")
        missing = sorted(need - set(getattr(prog, "programs", ())))
        if missing:
            raise errors.BuildError(
                f"KFAC needs program(s) {missing}, which were not compiled",
                fix="compile with programs=['loss', 'grad', 'gnvp', 'kfac']",
            )
        self.prog = prog
        self.curvature = curvature
        self.learning_rate, self.momentum = learning_rate, momentum
        self.damping, self.adapt_damping, self.adapt_every = damping, adapt_damping, adapt_every
        self.min_damping = min_damping
        self.factor_decay, self.factors_every = factor_decay, factors_every
        self.inverse_every, self.norm_constraint = inverse_every, norm_constraint
        self.l2, self.seed, self.default_batch_size = l2, seed, default_batch_size
        self.layers = prog.kfac_layers
        covered = {n for L in self.layers.values() for n in (L.weight, L.bias) if n}
        self.diagonal_params = [p for p in prog.params if p not in covered]

    def config(self) -> dict[str, Any]:
        """The options (JSON-able), as checkpoints record them."""
        keys = (
            "curvature learning_rate momentum damping adapt_damping adapt_every min_damping "
            "factor_decay factors_every inverse_every norm_constraint l2 seed default_batch_size"
        ).split()
        return {k: getattr(self, k) for k in keys}

    def init(self, theta: np.ndarray) -> dict[str, Any]:
        """λ = ``damping``, no factors yet, no previous update."""
        return {"damping": float(self.damping), "steps": 0, "delta": np.zeros_like(theta)}

    # -- pieces -------------------------------------------------------------------------------
    def _slices(self, name: str) -> slice:
        p = self.prog.params[name]
        return slice(p["offset"], p["offset"] + p["size"])

    def _update_factors(self, theta, batch, state, steps: int) -> None:
        f = self.prog.kfac_factors(theta, batch, self.curvature, seed=[self.seed, steps])
        new = {f"A:{k}": L.A for k, L in f.layers.items()}
        new.update({f"G:{k}": L.G for k, L in f.layers.items()})
        new.update(
            {f"D:{k}": np.asarray(d, dtype=np.float64).ravel() for k, d in f.diagonal.items()}
        )
        eps = self.factor_decay
        for k, v in new.items():
            old = state.get(k)
            state[k] = v if old is None else eps * old + (1 - eps) * v

    def _invert(self, state) -> None:
        for k in self.layers:
            prev_A = (state[f"eA:{k}"], state[f"UA:{k}"]) if f"eA:{k}" in state else None
            prev_G = (state[f"eG:{k}"], state[f"UG:{k}"]) if f"eG:{k}" in state else None
            state[f"eA:{k}"], state[f"UA:{k}"] = eigen(state[f"A:{k}"], prev_A)
            state[f"eG:{k}"], state[f"UG:{k}"] = eigen(state[f"G:{k}"], prev_G)
            state[f"pi:{k}"] = np.array(pi_correction(state[f"A:{k}"], state[f"G:{k}"]))

    def direction(self, g: np.ndarray, state, damping: float) -> np.ndarray:
        """Δ = −F̂⁻¹ g: the factored-Tikhonov Kronecker solve per layer, the damped
        diagonal elsewhere (module docstring)."""
        self._damped_inverses(state, damping)
        out = np.zeros(g.shape, dtype=np.float64)
        for k, L in self.layers.items():
            sw = self._slices(k)
            V = g[sw].reshape(L.n_out, L.n_in)
            if L.bias:
                V = np.hstack([V, g[self._slices(L.bias)].reshape(-1, 1)])
            D = _product(_product(state[f"IG:{k}"], V), state[f"IA:{k}"])  # (eigenbasis: four)
            out[sw] = -D[:, : L.n_in].ravel()
            if L.bias:
                out[self._slices(L.bias)] = -D[:, -1]
        for p in self.diagonal_params:
            sl = self._slices(p)
            den = state[f"D:{p}"] + damping + self.l2
            out[sl] = np.where(den > 0, -g[sl] / np.where(den > 0, den, 1.0), 0.0)
        return out

    def _damped_inverses(self, state, damping: float) -> None:
        """(Ĝ + (γ/π) I)⁻¹ and (Â + π γ I)⁻¹ per layer, from the eigendecompositions, kept
        in the state until λ changes or the factors are decomposed again (the same
        matrices as the solve in the eigenbases, U_G [(U_Gᵀ ∇̄ U_A) / ((g + γ/π)(a + πγ)ᵀ)] U_Aᵀ,
        two GEMMs cheaper per step)."""
        if float(state.get("inverses_at", math.nan)) == damping:
            return
        gamma = math.sqrt(damping + self.l2)
        for k in self.layers:
            pi = float(state[f"pi:{k}"])
            state[f"IA:{k}"] = damped_inverse((state[f"eA:{k}"], state[f"UA:{k}"]), pi * gamma)
            state[f"IG:{k}"] = damped_inverse((state[f"eG:{k}"], state[f"UG:{k}"]), gamma / pi)
        state["inverses_at"] = float(damping)

    def _coefficients(self, g, Delta, delta, products, damping):
        """(α, μ) of u = αΔ + μδ: the fixed options, or the minimiser of the damped
        quadratic model (a 2×2 system; 1×1 while δ = 0 or μ is fixed)."""
        lr, mu = self.learning_rate, self.momentum
        if lr is not None and mu is not None:
            return lr, mu
        shift = damping + self.l2
        CD = products("Delta", Delta) + shift * Delta
        if mu is None and np.any(delta):
            Cd = products("delta", delta) + shift * delta
            M = np.array([[Delta @ CD, Delta @ Cd], [delta @ CD, delta @ Cd]])
            rhs = -np.array([g @ Delta, g @ delta])
            if lr is not None:  # μ alone: minimise over μ with α fixed
                return lr, float((rhs[1] - lr * M[1, 0]) / M[1, 1]) if M[1, 1] > 0 else 0.0
            try:
                a, m = np.linalg.solve(M, rhs)
                if np.isfinite([a, m]).all():
                    return float(a), float(m)
            except np.linalg.LinAlgError:
                pass
        if lr is not None:
            return lr, 0.0 if mu is None else mu
        mu = 0.0 if mu is None else mu
        # α alone (μ fixed, or no previous update): minimise q(αΔ + μδ) over α
        slope = float(g @ Delta)
        if mu and np.any(delta):
            slope += mu * float(Delta @ (products("delta", delta) + shift * delta))
        curv = float(Delta @ CD)
        return (-slope / curv if curv > 0 else 0.0), mu

    # -- one iteration --------------------------------------------------------------------
    def step(
        self, theta: np.ndarray, data: Sampler, state: dict[str, Any]
    ) -> tuple[np.ndarray, dict[str, Any], dict[str, Any]]:
        """One K-FAC iteration (module docstring): ``(theta, state, info)``."""
        state = dict(state)
        steps = int(state["steps"]) + 1
        damping = float(state["damping"])
        batch = data.minibatch()
        f0, g = self.prog.grad(theta, batch)
        f0 += 0.5 * self.l2 * float(theta @ theta)
        g = np.asarray(g, dtype=np.float64) + self.l2 * theta
        t0 = time.perf_counter()
        if (steps - 1) % self.factors_every == 0:
            self._update_factors(theta, batch, state, steps)
        t_factors = time.perf_counter() - t0
        t0 = time.perf_counter()
        inverted = (steps - 1) % self.inverse_every == 0
        if inverted:
            self._invert(state)
            state["inverses_at"] = math.nan
        self._damped_inverses(state, damping)
        t_inverse = time.perf_counter() - t0
        Delta = self.direction(g, state, damping)
        if self.norm_constraint is not None:  # cap lr² ΔᵀF̂Δ = lr² |∇ᵀΔ|
            size = abs(float(g @ Delta)) * (self.learning_rate or 1.0) ** 2
            if size > self.norm_constraint:
                Delta *= math.sqrt(self.norm_constraint / size)
        delta = np.asarray(state["delta"], dtype=np.float64)
        products = _Products(self.prog, theta, batch)
        alpha, mu = self._coefficients(g, Delta, delta, products, damping)
        u = alpha * Delta + mu * delta
        info: dict[str, Any] = {
            "objective": f0,
            "damping": damping,
            "rho": math.nan,
            "learning_rate": alpha,
            "momentum": mu,
            "accepted": False,
            "grad_norm": float(np.linalg.norm(g)),
            "time_factors": t_factors,
            "time_inverse": t_inverse,
        }
        new_theta = (theta + u).astype(theta.dtype, copy=False)
        if not (np.isfinite(u).all() and np.isfinite(new_theta).all()):
            state.update(damping=damping / 0.95**self.adapt_every, steps=steps)
            state["delta"] = np.zeros_like(theta)
            info["rho"] = -math.inf
            return theta, state, info
        new_damping = damping
        if self.adapt_damping and steps % self.adapt_every == 0:
            if "Delta" in products.memo and (mu == 0 or "delta" in products.memo):
                Gu = alpha * products.memo["Delta"] + mu * products.memo.get("delta", 0.0)
            else:  # fixed α and μ: one more product
                Gu = products("u", u)
            q = float(g @ u) + 0.5 * float(u @ Gu)
            q += 0.5 * self.l2 * float(u @ u)
            try:
                f1 = self.prog.loss(new_theta, batch) + 0.5 * self.l2 * float(new_theta @ new_theta)
            except errors.NonFiniteError:
                f1 = math.inf
            rho = (f1 - f0) / q if q < 0 else math.nan
            info["rho"] = rho
            if not math.isfinite(f1):  # overflow at θ + u: reject, as a non-finite update
                state.update(damping=damping / 0.95**self.adapt_every, steps=steps)
                state["delta"] = np.zeros_like(theta)
                info["rho"] = -math.inf
                return theta, state, info
            omega = 0.95**self.adapt_every  # (19/20)^T₁
            if rho > 0.75:
                new_damping = max(damping * omega, self.min_damping)
            elif not rho >= 0.25:
                new_damping = damping / omega
        state.update(damping=new_damping, steps=steps)
        state["delta"] = u.astype(theta.dtype)
        info["accepted"] = True
        return new_theta, state, info
