"""Hessian-free optimisation (Martens 2010, §3-§5), driving the compiled programs.

One iteration at θ with damping λ and l2 prior weight ℓ (objective f(θ) + ½ℓ‖θ‖²):

1. g = ∇f + ℓθ on the gradient batch (all the data by default, §4.3);
   preconditioner M = diag(F + λ + ℓ)^α, F = (1/B) Σ_b ∇f_b ⊙ ∇f_b from ``sum_sq_grad``
   on the same batch (§4.7);
2. A = G + (λ + ℓ)I (or H + (λ + ℓ)I) by products on a curvature minibatch, linearised
   once and held fixed for the whole CG run (§4.2, §4.3);
3. CG minimises φ(p) = gᵀp + ½pᵀAp from the previous run's final p times a decay (§4.5),
   stopping by Martens' progress rule (§4.4); the kept iterates are backtracked by the
   objective (§4.6);
4. ρ = (f(θ + p) − f(θ)) / (gᵀp + ½pᵀ(G + ℓI)p) — the model without λ — sets the
   Levenberg-Marquardt damping (§4.1); an Armijo line search (Martens' code) scales p;
5. θ ← θ + p, unless the objective there is not finite: then θ stays and λ is raised.

Scale: symcurv's objective is the MEAN over cases (the paper's was a sum), so G, λ and F
are all per case; the paper's preconditioner on the sum objective is this one times B^α,
and CG is invariant to the scale of M. This is also how Martens' released code scales them.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from symcurv import errors
from symcurv.optim import cg
from symcurv.optim.training import Sampler, is_number, require

CURVATURES = {"gauss_newton": "gnvp", "hessian": "hvp"}

#: where each real-valued option makes sense, in interval notation
RANGES = {
    "initial_damping": "(0, inf)",
    "l2": "[0, inf)",
    "damping_boost": "[1, inf)",
    "damping_drop": "(0, 1]",
    "warm_start_decay": "[0, 1]",
    "cg_epsilon": "[0, inf)",
    "cg_gap_ratio": "[0, inf)",
    "backtrack_gamma": "(1, inf)",
    "preconditioner_exponent": "(0, 1]",
    "line_search_c": "(0, 1)",
    "line_search_shrink": "(0, 1)",
}


def _inside(v: float, interval: str) -> bool:
    lo, hi = (float(x) for x in interval[1:-1].split(","))
    above = v >= lo if interval[0] == "[" else v > lo
    below = v <= hi if interval[-1] == "]" else v < hi
    return math.isfinite(v) and above and below


def levenberg_marquardt(
    damping: float,
    rho: float,
    boost: float = 1.5,
    drop: float = 2.0 / 3.0,
    low: float = 0.25,
    high: float = 0.75,
) -> float:
    """Martens (2010) §4.1: ρ < 1/4 → λ ← (3/2)λ; ρ > 3/4 → λ ← (2/3)λ; else λ unchanged.

    A NaN ρ (0/0: no predicted and no actual change) counts as a bad model, as in Martens'
    code. (The paper's printed text swaps the two factors; its code and the LM rule it
    cites raise λ when the model was poor.)
    """
    if not rho >= low:
        return damping * boost
    if rho > high:
        return damping * drop
    return damping


def backtrack(objective, iterates: list[tuple[int, np.ndarray]]) -> tuple[int, float, int]:
    """Martens (2010) §4.6: from the last kept CG iterate, step back to the previous kept
    one while that one's objective is no higher; ``(position, its objective, evaluations)``.

    A local walk, not a global argmin: it stops at the first iterate that beats its
    predecessor, so it usually evaluates only a few. A non-finite objective is +inf.
    """
    pos = len(iterates) - 1
    best = objective(iterates[pos][1])
    evaluations = 1
    while pos > 0:
        prev = objective(iterates[pos - 1][1])
        evaluations += 1
        if not prev <= best:
            break
        pos, best = pos - 1, prev
    return pos, best, evaluations


class HessianFree:
    """``HessianFree(prog, **options)``; drive it with :func:`symcurv.optim.fit`.

    Every option, with the paper's default (Martens 2010; "code" = his released code of
    the ICML experiments, where the paper is silent):

    - ``curvature="gauss_newton"``: products with G (``state.gnvp``, §4.2); "hessian"
      uses H (``state.hvp``). CG stops at a direction of non-positive curvature.
    - ``initial_damping=45.0`` (code; λ on the per-case scale), ``damping_boost=1.5``,
      ``damping_drop=2/3``, ``rho_low=0.25``, ``rho_high=0.75`` (§4.1).
    - ``max_cg_iterations=250`` (§7 / code), ``min_cg_iterations=1`` (code),
      ``cg_epsilon=5e-4``, ``cg_gap_ratio=0.1``, ``cg_min_gap=10`` (§4.4: k = max(10, 0.1i)).
    - ``warm_start_decay=0.95`` (code; §4.5 starts CG from the previous p; 0 = cold start).
    - ``backtracking=True``, ``backtrack_gamma=1.3`` (§4.6).
    - ``preconditioner=True``, ``preconditioner_exponent=0.75`` (§4.7); needs the
      ``sum_sq_grad`` program.
    - ``line_search=True`` (code; the paper's text does not describe it), ``line_search_c=1e-2``,
      ``line_search_shrink=0.8``, ``line_search_max_steps=60`` (code): Armijo on the
      gradient batch; when it fails, the step is rejected.
    - ``l2=0.0``: the prior ½ℓ‖θ‖² (§7: 1e-4 on MNIST*, 1e-2 on FACES*), added here to the
      objective, gradient (ℓθ), curvature (ℓI) and preconditioner.
    - ``gradient_batch_size=None``: gradient, objective, backtracking and ρ on the whole
      dataset (§4.3); an integer uses a fresh minibatch of that size instead.
    - ``default_batch_size=5000``: the curvature minibatch when ``fit`` gets no
      ``batch_size`` (Table 1's K for CURVES).
    """

    def __init__(
        self,
        prog,
        *,
        curvature: str = "gauss_newton",
        initial_damping: float = 45.0,
        damping_boost: float = 1.5,
        damping_drop: float = 2.0 / 3.0,
        rho_low: float = 0.25,
        rho_high: float = 0.75,
        max_cg_iterations: int = cg.MAX_ITERATIONS,
        min_cg_iterations: int = 1,
        cg_epsilon: float = cg.EPSILON,
        cg_gap_ratio: float = cg.GAP_RATIO,
        cg_min_gap: int = cg.MIN_GAP,
        warm_start_decay: float = 0.95,
        backtracking: bool = True,
        backtrack_gamma: float = cg.GAMMA,
        preconditioner: bool = True,
        preconditioner_exponent: float = 0.75,
        line_search: bool = True,
        line_search_c: float = 1e-2,
        line_search_shrink: float = 0.8,
        line_search_max_steps: int = 60,
        l2: float = 0.0,
        gradient_batch_size: int | None = None,
        default_batch_size: int = 5000,
    ) -> None:
        self.prog = prog
        self.curvature = curvature
        self.initial_damping = initial_damping
        self.damping_boost, self.damping_drop = damping_boost, damping_drop
        self.rho_low, self.rho_high = rho_low, rho_high
        self.max_cg_iterations, self.min_cg_iterations = max_cg_iterations, min_cg_iterations
        self.cg_epsilon, self.cg_gap_ratio, self.cg_min_gap = cg_epsilon, cg_gap_ratio, cg_min_gap
        self.warm_start_decay = warm_start_decay
        self.backtracking, self.backtrack_gamma = backtracking, backtrack_gamma
        self.preconditioner = preconditioner
        self.preconditioner_exponent = preconditioner_exponent
        self.line_search, self.line_search_c = line_search, line_search_c
        self.line_search_shrink = line_search_shrink
        self.line_search_max_steps = line_search_max_steps
        self.l2 = l2
        self.gradient_batch_size = gradient_batch_size
        self.default_batch_size = default_batch_size
        self._validate()

    def _validate(self) -> None:
        require(
            self.curvature in CURVATURES,
            "curvature",
            self.curvature,
            f"as one of {', '.join(map(repr, CURVATURES))}",
        )
        for name, interval in RANGES.items():
            v = getattr(self, name)
            require(is_number(v) and _inside(v, interval), name, v, f"in {interval}")
        require(
            is_number(self.rho_low) and is_number(self.rho_high) and self.rho_low <= self.rho_high,
            "rho_low, rho_high",
            (self.rho_low, self.rho_high),
            "as numbers with rho_low ≤ rho_high",
        )
        for name in (
            "max_cg_iterations",
            "min_cg_iterations",
            "cg_min_gap",
            "line_search_max_steps",
            "default_batch_size",
        ):
            v = getattr(self, name)
            require(isinstance(v, (int, np.integer)) and v >= 1, name, v, "as an integer ≥ 1")
        gb = self.gradient_batch_size
        require(
            gb is None or (isinstance(gb, (int, np.integer)) and gb >= 1),
            "gradient_batch_size",
            gb,
            "as None (all the data) or a positive integer",
        )
        have = getattr(self.prog, "programs", ())
        needed = [CURVATURES[self.curvature], "sum_sq_grad" if self.preconditioner else "grad"]
        for program in needed:
            if program not in have:
                hint = " or pass preconditioner=False" if program == "sum_sq_grad" else ""
                raise errors.BuildError(
                    f"HessianFree(curvature={self.curvature!r}, preconditioner="
                    f"{self.preconditioner}) needs program '{program}', which was not compiled "
                    f"(this build has {list(have)})",
                    fix=f"compile with programs=[..., {program!r}]{hint}",
                )

    def config(self) -> dict[str, Any]:
        """The options (JSON-able), as checkpoints record them."""
        keys = (
            "curvature initial_damping damping_boost damping_drop rho_low rho_high "
            "max_cg_iterations min_cg_iterations cg_epsilon cg_gap_ratio cg_min_gap "
            "warm_start_decay backtracking backtrack_gamma preconditioner "
            "preconditioner_exponent line_search line_search_c line_search_shrink "
            "line_search_max_steps l2 gradient_batch_size default_batch_size"
        ).split()
        return {k: getattr(self, k) for k in keys}

    def init(self, theta: np.ndarray) -> dict[str, Any]:
        """λ = ``initial_damping``; the warm-start direction starts at 0."""
        return {"damping": float(self.initial_damping), "direction": np.zeros_like(theta)}

    # -- the pieces of one iteration -------------------------------------------------------
    def objective(self, theta: np.ndarray, batch) -> float:
        """f(θ) + ½ℓ‖θ‖² on ``batch``; +inf where it is not finite (never an exception)."""
        try:
            if "loss" in self.prog.programs:
                f = self.prog.loss(theta, batch)
            else:
                f = self.prog.grad(theta, batch)[0]
        except errors.NonFiniteError:  # overflow at θ, or a non-finite θ itself
            return math.inf
        f += 0.5 * self.l2 * float(theta @ theta)
        return f if math.isfinite(f) else math.inf

    def gradient(self, theta: np.ndarray, batch) -> tuple[float, np.ndarray, np.ndarray | None]:
        """``(objective, g, F)``, F = (1/B)Σ_b ∇f_b ⊙ ∇f_b (None without preconditioner)."""
        if self.preconditioner:
            f, g, sq = self.prog.grad_and_sum_sq_grad(theta, batch)
            fisher = sq / len(next(iter(batch.values())))
        else:
            (f, g), fisher = self.prog.grad(theta, batch), None
        f += 0.5 * self.l2 * float(theta @ theta)
        return f, g + self.l2 * theta, fisher

    def damped_product(self, theta: np.ndarray, batch, damping: float):
        """v -> (G + (λ + ℓ)I) v (or H), on a State linearised once at (θ, batch)."""
        state = self.prog.linearize(theta, batch)
        product = state.gnvp if self.curvature == "gauss_newton" else state.hvp
        shift = damping + self.l2
        return lambda v: product(v) + shift * v

    def line_search_rate(self, objective, p, f0, slope, f1) -> tuple[float, float, int]:
        """Armijo backtracking (Martens' code): the first rate in 1, s, s², ... (s =
        ``line_search_shrink``) with f(θ + rate·p) ≤ f(θ) + c·rate·gᵀp, c = ``line_search_c``;
        ``(rate, f(θ + rate·p), evaluations)``, or ``(0, f(θ), evaluations)`` when
        ``line_search_max_steps`` shrinks do not satisfy it. ``f1`` = f(θ + p) is known."""
        rate, f, evaluations = 1.0, f1, 0
        for shrinks in range(self.line_search_max_steps + 1):
            if f <= f0 + self.line_search_c * rate * slope:
                return rate, f, evaluations
            if shrinks == self.line_search_max_steps:
                break
            rate *= self.line_search_shrink
            f = objective(p * rate)
            evaluations += 1
        return 0.0, f0, evaluations

    # -- one iteration ---------------------------------------------------------------------
    def step(
        self, theta: np.ndarray, data: Sampler, state: dict[str, Any]
    ) -> tuple[np.ndarray, dict[str, Any], dict[str, Any]]:
        """One HF iteration (module docstring); returns ``(theta, state, info)``."""
        damping = float(state["damping"])
        if self.gradient_batch_size is None:
            grad_batch = data.full()
        else:
            grad_batch = data.minibatch(self.gradient_batch_size)
        curv_batch = data.minibatch()
        f0, g, fisher = self.gradient(theta, grad_batch)
        m = None
        if fisher is not None:
            m = (fisher + damping + self.l2) ** self.preconditioner_exponent
        info: dict[str, Any] = {
            "objective": f0,
            "damping": damping,
            "rho": -math.inf,
            "accepted": False,
            "cg_iterations": 0,
            "cg_stop": "non_finite",
            "cg_chosen": 0,
            "step_rate": 0.0,
            "loss_evaluations": 0,
            "grad_norm": float(np.linalg.norm(g)),
        }
        try:
            res = cg.conjugate_gradient(
                self.damped_product(theta, curv_batch, damping),
                g,
                self.warm_start_decay * state["direction"],
                preconditioner=m,
                max_iterations=self.max_cg_iterations,
                min_iterations=self.min_cg_iterations,
                epsilon=self.cg_epsilon,
                gap_ratio=self.cg_gap_ratio,
                min_gap=self.cg_min_gap,
                gamma=self.backtrack_gamma if self.backtracking else None,
            )
        except errors.NonFiniteError:
            # a product overflowed (at a huge warm start, say): restart cold with more damping
            new_state = {"damping": damping * self.damping_boost, "direction": np.zeros_like(g)}
            return theta, new_state, info

        def objective(p: np.ndarray) -> float:
            return self.objective(theta + p, grad_batch)

        if self.backtracking:
            pos, f1, evaluations = backtrack(objective, res.iterates)
        else:
            pos, f1, evaluations = len(res.iterates) - 1, objective(res.x), 1
        chosen, p = res.iterates[pos]
        # ρ's model is the one without λ (Martens' code): φ(p) − ½λ‖p‖², φ(p) recorded by CG
        model = res.phi(chosen) - 0.5 * damping * float(p @ p)
        if not f1 - f0 <= 0:  # an increase, or a non-finite objective at θ + p
            rho = -math.inf
        elif model < 0:
            rho = (f1 - f0) / model
        else:
            rho = math.nan  # the model predicted no decrease: it is not to be trusted
        rate, f_new = 1.0, f1
        if self.line_search:
            rate, f_new, more = self.line_search_rate(objective, p, f0, float(g @ p), f1)
            evaluations += more
        new_theta = (theta + rate * p).astype(theta.dtype, copy=False)
        # never a non-finite θ: such a step is rejected, θ stays, and λ rises (ρ = −inf)
        accepted = rate > 0 and math.isfinite(f_new) and bool(np.isfinite(new_theta).all())
        new_damping = levenberg_marquardt(
            damping, rho, self.damping_boost, self.damping_drop, self.rho_low, self.rho_high
        )
        info.update(
            objective=f_new if accepted else f0,
            rho=rho,
            accepted=accepted,
            cg_iterations=res.iterations,
            cg_stop=res.stop,
            cg_chosen=chosen,
            step_rate=rate if accepted else 0.0,
            loss_evaluations=evaluations,
        )
        # §4.5: the next warm start is the final, un-backtracked CG iterate
        new_state = {"damping": new_damping, "direction": res.x}
        return (new_theta if accepted else theta), new_state, info
