"""Becker-LeCun's diagonal over θ of a score-matching model: the SM objective's graph
broadcasts shared values over the cases (``batch_broadcast``), whose squared pullback
(J∘J)ᵀ d the diagonal needs (issue 17: it had none, so ``becker_lecun_diag`` failed).

Oracle: an energy whose SM objective is separable in θ — E(x) = Σ_i e^{β_i} q(x_i),
q(z) = z²/2 one elementwise op (x reaches E along one path), gives
J_b = Σ_i ½ e^{2β_i} x_bi² − e^{β_i} + λ e^{2β_i}: each β_i reaches J_b through a sum of
terms each of one scalar chain, where Becker-LeCun is the exact Hessian diagonal — here
both in closed form and by central differences of the compiled gradient. (Written as
``x * x`` the energy would reach ∂E/∂x along two paths, whose cross term Becker-LeCun
drops: biased, as documented.)"""

from __future__ import annotations

import numpy as np

import symcurv as sc
from symcurv import testing


def test_becker_lecun_over_theta_of_a_score_matching_model(tmp_path):
    m = sc.Model("sep_energy")
    x = m.input("x", 3)
    beta = m.param("beta", 3, init=sc.init.zeros())
    half_square = sc.elementwise("half_square", lambda z: z**2 / 2)
    m.energy(sc.sum(sc.exp(beta) * half_square(x)))
    sm = sc.score_matching(m, reg=0.3, diag="becker_lecun")
    prog = sc.compile(sm, ("grad", "becker_lecun_diag"), build_dir=tmp_path, progress=False)
    rng = np.random.default_rng(0)
    theta, batch = 0.3 * rng.normal(size=3), {"x": rng.normal(size=(5, 3))}
    bl = prog.becker_lecun_diag(theta, batch)
    eps, fd = 1e-5, np.zeros(3)
    for i in range(3):
        e = np.zeros(3)
        e[i] = eps
        fd[i] = (prog.grad(theta + e, batch)[1][i] - prog.grad(theta - e, batch)[1][i]) / (2 * eps)
    assert testing.rel_error(bl, fd) < 1e-7
    # and the closed form: ∂²/∂β_i² mean_b J_b = 2 e^{2β_i} mean_b x_bi² − e^{β_i} + 4λ e^{2β_i}
    want = (
        2 * np.exp(2 * theta) * (batch["x"] ** 2).mean(0) - np.exp(theta) + 1.2 * np.exp(2 * theta)
    )
    assert testing.rel_error(bl, want) < 1e-10
