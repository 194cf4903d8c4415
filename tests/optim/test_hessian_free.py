"""HessianFree: each rule of Martens (2010) checked where a wrong rule would fail.

Most tests run on the numpy least-squares stand-in of conftest.py (exact closed forms, no
compiling): the damping update under a controlled ρ, backtracking, the warm start, the
preconditioner, the line search, the l2 prior and the rejection of non-finite steps. The
compiled 8-4-2-4-8 deep linear autoencoder then has to reach its known optimum (PCA).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from symcurv import errors
from symcurv.optim import HessianFree, OptimizerError, Sampler, cg, fit
from symcurv.optim.hessian_free import backtrack, levenberg_marquardt


def one_step(prog, data, theta, state=None, **options):
    """One HF iteration with the whole data as gradient and curvature batch."""
    opt = HessianFree(prog, **options)
    sampler = Sampler(data, len(data["x"]), seed=0)
    state = opt.init(theta) if state is None else state
    return opt.step(theta, sampler, state)


def gradient(prog, data, theta) -> np.ndarray:
    X, t = data["x"], data["t"][:, 0]
    return X.T @ (X @ theta - t) / len(X)


def kept_objectives(prog, data, theta, res) -> list[float]:
    return [prog.loss(theta + x, data) for _, x in res.iterates]


def misleading_curvature(prog, data, factor: float = 0.1, low: int = 20) -> np.ndarray:
    """G with its ``low`` smallest eigenvalues shrunk by ``factor``: the model is right in
    the high-curvature directions CG finds first and far too optimistic in the
    low-curvature ones it finds last (Martens' case for backtracking, §4.6)."""
    w, V = np.linalg.eigh(prog.curvature(data))
    w[:low] *= factor
    return (V * w) @ V.T


# -- damping, §4.1 -----------------------------------------------------------------------------
def test_levenberg_marquardt_rule():
    lam = 6.0
    assert levenberg_marquardt(lam, 0.1) == 1.5 * lam  # a poor model: more damping
    assert levenberg_marquardt(lam, 0.9) == lam * 2 / 3  # a good model: less damping
    for rho in (0.25, 0.5, 0.75):  # the thresholds themselves leave λ alone
        assert levenberg_marquardt(lam, rho) == lam
    assert levenberg_marquardt(lam, -math.inf) == 1.5 * lam
    assert levenberg_marquardt(lam, math.nan) == 1.5 * lam


@pytest.mark.parametrize("scale", [0.45, 2 / 3, 2.0])
def test_damping_follows_the_reduction_ratio(ls, scale):
    """Curvature products scaled by c and λ → 0: converged CG steps p = −(cG)⁻¹g, so with
    a = gᵀG⁻¹g the objective changes by a(1/(2c²) − 1/c) while the model without λ
    predicts −a/(2c): ρ = 2 − 1/c, i.e. −0.22 (an increase: ρ = −inf, λ × 3/2),
    0.5 (λ kept) and 1.5 (λ × 2/3)."""
    n = 6
    prog, data = ls.Program(n, curvature_scale=scale), ls.data(n, condition=10.0)
    theta0 = np.ones(n)
    lam = 1e-9
    opts = {"initial_damping": lam, "backtracking": False, "line_search": False}
    theta1, state, info = one_step(prog, data, theta0, **opts)
    # ρ from scratch: the objective's change over the undamped model's
    p = theta1 - theta0
    g = gradient(prog, data, theta0)
    actual = prog.loss(theta1, data) - prog.loss(theta0, data)
    model = g @ p + 0.5 * p @ (scale * prog.curvature(data)) @ p
    want = 2 - 1 / scale
    if want < 0:
        assert actual > 0 and info["rho"] == -math.inf
        assert state["damping"] == pytest.approx(1.5 * lam, rel=1e-12)
    else:
        assert info["rho"] == pytest.approx(actual / model, rel=1e-9)
        assert info["rho"] == pytest.approx(want, rel=1e-6)
        factor = 1.0 if want < 0.75 else 2 / 3
        assert state["damping"] == pytest.approx(factor * lam, rel=1e-12)
    assert info["damping"] == lam  # the row records the λ the CG run used


# -- backtracking, §4.6 ------------------------------------------------------------------------
def test_backtrack_walks_back_while_the_previous_iterate_is_no_worse():
    table = {1: 1.0, 2: 3.0, 3: 2.0, 5: 4.0}
    iterates = [(i, np.array([float(i)])) for i in table]
    seen = []

    def objective(p):
        seen.append(int(p[0]))
        return table[int(p[0])]

    # from the last (4.0) back to 2.0, which beats its predecessor (3.0): not the global
    # minimum 1.0, and not the final iterate
    assert backtrack(objective, iterates) == (2, 2.0, 3)
    assert seen == [5, 3, 2]
    # non-finite objectives count as +inf: walk back through them
    inf_tail = [(i, np.array([float(i)])) for i in (1, 2, 3)]
    values = {1: 0.5, 2: math.inf, 3: math.inf}
    assert backtrack(lambda p: values[int(p[0])], inf_tail) == (0, 0.5, 3)


def test_hf_backtracks_to_the_best_kept_iterate(ls):
    n = 40
    data = ls.data(n, condition=1e4, seed=1)
    prog = ls.Program(n)
    prog.curvature_scale = misleading_curvature(prog, data)
    theta0 = np.zeros(n)
    lam = 1e-6
    opts = {"initial_damping": lam, "preconditioner": False, "warm_start_decay": 0.0}
    theta1, _, info = one_step(prog, data, theta0, **opts)
    # the same CG run, by hand
    M, g = prog.curvature_scale, gradient(prog, data, theta0)
    res = cg.conjugate_gradient(lambda v: M @ v + lam * v, g)  # HF's arithmetic exactly
    assert info["cg_iterations"] == res.iterations
    f = kept_objectives(prog, data, theta0, res)
    kept = [i for i, _ in res.iterates]
    pos = kept.index(info["cg_chosen"])
    assert 0 < pos < len(kept) - 1  # a real backtrack, not the first or the last iterate
    assert np.allclose(theta1 - theta0, res.iterates[pos][1], rtol=1e-9, atol=1e-12)
    # Martens' walk: no worse than every later kept iterate, better than the one before
    assert all(f[pos] <= later for later in f[pos + 1 :]) and f[pos - 1] > f[pos]
    assert info["objective"] == pytest.approx(f[pos], rel=1e-12)
    # without backtracking the final iterate is taken
    theta_nb, _, info_nb = one_step(prog, data, theta0, backtracking=False, **opts)
    assert info_nb["cg_chosen"] == res.iterations
    assert np.allclose(theta_nb - theta0, res.x, rtol=1e-9, atol=1e-12)
    assert info_nb["objective"] > info["objective"]


# -- warm start, §4.5 --------------------------------------------------------------------------
@pytest.mark.parametrize("decay", [0.95, 0.5])
def test_warm_start_is_the_decayed_unbacktracked_direction(ls, monkeypatch, decay):
    n = 40
    data = ls.data(n, condition=1e4, seed=1)
    prog = ls.Program(n)
    prog.curvature_scale = misleading_curvature(prog, data)
    runs = []
    real = cg.conjugate_gradient

    def spy(matvec, g, x0=None, **kw):
        res = real(matvec, g, x0, **kw)
        runs.append((x0.copy(), res))
        return res

    monkeypatch.setattr(cg, "conjugate_gradient", spy)
    opt = HessianFree(prog, initial_damping=1e-6, warm_start_decay=decay)
    sampler = Sampler(data, len(data["x"]), seed=0)
    theta, state = np.zeros(n), opt.init(np.zeros(n))
    chosen = []
    for _ in range(3):
        theta, state, info = opt.step(theta, sampler, state)
        chosen.append(info["cg_chosen"])
    assert not runs[0][0].any()  # the first run starts cold
    assert chosen[0] < runs[0][1].iterations  # ... and was backtracked
    for (_, before), (x0, _) in zip(runs, runs[1:]):
        assert np.array_equal(x0, decay * before.x)  # the final iterate, not the chosen one
    assert np.array_equal(state["direction"], runs[-1][1].x)


# -- preconditioner, §4.7 -----------------------------------------------------------------------
def test_preconditioner_is_the_fisher_diagonal_plus_damping_to_the_alpha(ls, monkeypatch):
    n = 8
    prog, data = ls.Program(n), ls.data(n, seed=2)
    theta = np.random.default_rng(0).normal(size=n)
    seen = {}
    real = cg.conjugate_gradient

    def spy(matvec, g, x0=None, **kw):
        seen.update(kw)
        return real(matvec, g, x0, **kw)

    monkeypatch.setattr(cg, "conjugate_gradient", spy)
    lam, l2 = 3.0, 0.2
    one_step(prog, data, theta, initial_damping=lam, l2=l2)
    X, t = data["x"], data["t"][:, 0]
    per_case = [(X[b] @ theta - t[b]) * X[b] for b in range(len(X))]  # ∇f_b, case by case
    fisher = np.mean([gb * gb for gb in per_case], axis=0)
    assert np.allclose(seen["preconditioner"], (fisher + lam + l2) ** 0.75, rtol=1e-12)
    one_step(prog, data, theta, preconditioner_exponent=0.5, initial_damping=lam)
    assert np.allclose(seen["preconditioner"], (fisher + lam) ** 0.5, rtol=1e-12)
    one_step(prog, data, theta, preconditioner=False)
    assert seen["preconditioner"] is None


def test_preconditioner_from_the_compiled_sum_sq_grad(autoencoder):
    """HF's F from the compiled ``grad_and_sum_sq_grad`` is the mean of the per-case
    gradients squared, each from ``prog.grad`` on a one-case batch."""
    prog = autoencoder.prog
    batch = {"x": autoencoder.train["x"][:12]}
    theta = prog.init(3)
    f, g, fisher = HessianFree(prog).gradient(theta, batch)
    per_case = [prog.grad(theta, {"x": batch["x"][b : b + 1]})[1] for b in range(12)]
    assert np.allclose(fisher, np.mean(np.square(per_case), axis=0), rtol=1e-12, atol=1e-15)
    assert np.allclose(g, np.mean(per_case, axis=0), rtol=1e-12, atol=1e-15)
    assert f == pytest.approx(prog.loss(theta, batch), rel=1e-13)


# -- line search, l2 prior, curvature choice ---------------------------------------------------
def test_armijo_line_search_takes_the_first_sufficient_rate(ls):
    """c = 1/2: the converged step p = −2G⁻¹g is twice Newton's, f(θ+p) = f(θ): rate 1
    fails Armijo's test, and the first rate 0.8ʲ that passes it is taken."""
    n = 6
    prog, data = ls.Program(n, curvature_scale=0.5), ls.data(n, condition=10.0)
    theta0 = np.ones(n)
    opts = {"initial_damping": 1e-9, "backtracking": False, "line_search": True}
    theta1, _, info = one_step(prog, data, theta0, **opts)
    g = gradient(prog, data, theta0)
    p = -np.linalg.solve(0.5 * prog.curvature(data) + 1e-9 * np.eye(n), g)
    f0 = prog.loss(theta0, data)
    rate = next(
        0.8**j
        for j in range(60)
        if prog.loss(theta0 + 0.8**j * p, data) <= f0 + 1e-2 * 0.8**j * (g @ p)
    )
    assert rate < 1 and info["step_rate"] == pytest.approx(rate, rel=1e-12)
    assert np.allclose(theta1, theta0 + rate * p, rtol=1e-8)
    assert info["accepted"] and info["objective"] < f0
    # too few shrinks allowed: the step is rejected and θ kept
    prog_far = ls.Program(n, curvature_scale=0.01)
    theta_r, _, info_r = one_step(prog_far, data, theta0, line_search_max_steps=2, **opts)
    assert np.array_equal(theta_r, theta0) and not info_r["accepted"]
    assert info_r["step_rate"] == 0.0 and info_r["objective"] == f0


def test_l2_prior_reaches_the_ridge_solution(ls):
    n, l2 = 10, 0.3
    prog, data = ls.Program(n), ls.data(n, condition=100.0, seed=3)
    opt = HessianFree(prog, l2=l2, initial_damping=1.0)
    res = fit(prog, opt, data, iterations=25, progress=False)
    ridge = prog.minimiser(data, l2=l2)
    assert np.allclose(res.theta, ridge, rtol=1e-7, atol=1e-9)
    want = prog.loss(ridge, data) + 0.5 * l2 * ridge @ ridge
    assert res.history[-1]["objective"] == pytest.approx(want, rel=1e-10)
    plain = prog.minimiser(data)
    assert np.linalg.norm(plain - ridge) > 1e-2 * np.linalg.norm(ridge)  # l2 mattered


@pytest.mark.parametrize("curvature, product", [("gauss_newton", "gnvp"), ("hessian", "hvp")])
def test_curvature_option_chooses_the_product(ls, curvature, product):
    n = 6
    prog, data = ls.Program(n), ls.data(n)
    one_step(prog, data, np.ones(n), curvature=curvature)
    other = "hvp" if product == "gnvp" else "gnvp"
    assert prog.calls[product] > 0 and prog.calls[other] == 0


# -- non-finite steps ---------------------------------------------------------------------------
def test_a_step_to_a_non_finite_objective_is_rejected(ls):
    """Curvature underestimated 50×: the first step lands past the cliff where the loss
    overflows. θ must stay, λ must rise, and later steps must get there safely."""
    n = 6
    data = ls.data(n, condition=10.0)
    probe = ls.Program(n)
    cliff = 3 * np.abs(probe.minimiser(data)).max()
    prog = ls.Program(n, curvature_scale=0.02, cliff=cliff)
    theta0, lam = np.zeros(n), 1e-3
    f0 = prog.loss(theta0, data)
    opts = {"initial_damping": lam, "backtracking": False, "line_search": False}
    theta1, state, info = one_step(prog, data, theta0, **opts)
    assert np.array_equal(theta1, theta0) and not info["accepted"]
    assert info["rho"] == -math.inf and info["objective"] == f0
    assert state["damping"] == pytest.approx(1.5 * lam)
    # carry on: every θ finite, steps accepted once λ is large enough, progress made
    res = fit(prog, HessianFree(prog, **opts), data, iterations=30, progress=False)
    accepted = [row["accepted"] for row in res.history]
    assert not accepted[0] and any(accepted)
    assert np.isfinite(res.theta).all() and np.abs(res.theta).max() <= cliff
    assert res.history[-1]["objective"] < 0.5 * f0
    # with the line search, the non-finite step is not taken either: a shorter one may be
    opts["line_search"] = True
    theta1, state, info = one_step(prog, data, theta0, **opts)
    assert info["rho"] == -math.inf and state["damping"] == pytest.approx(1.5 * lam)
    assert np.abs(theta1).max() <= cliff and info["step_rate"] < 1
    assert info["objective"] == prog.loss(theta1, data) <= f0


def test_a_cg_run_that_overflows_restarts_cold(ls):
    n = 6
    prog, data = ls.Program(n), ls.data(n)
    opt = HessianFree(prog, initial_damping=2.0)
    theta0 = np.ones(n)
    state = {"damping": 2.0, "direction": np.full(n, 1e306)}  # products of it overflow
    theta1, state, info = opt.step(theta0, Sampler(data, 50, seed=0), state)
    assert np.array_equal(theta1, theta0) and not info["accepted"]
    assert info["cg_stop"] == "non_finite" and state["damping"] == 3.0
    assert not state["direction"].any()
    theta2, _, info = opt.step(theta1, Sampler(data, 50, seed=0), state)
    assert info["accepted"] and np.isfinite(theta2).all()


# -- options ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "options, word",
    [
        ({"curvature": "fisher"}, "curvature"),
        ({"initial_damping": -1.0}, "initial_damping"),
        ({"initial_damping": 0.0}, "initial_damping"),
        ({"l2": -0.1}, "l2"),
        ({"damping_boost": 0.5}, "damping_boost"),
        ({"damping_drop": 1.5}, "damping_drop"),
        ({"warm_start_decay": math.nan}, "warm_start_decay"),
        ({"max_cg_iterations": 0}, "max_cg_iterations"),
        ({"backtrack_gamma": 1.0}, "backtrack_gamma"),
        ({"preconditioner_exponent": 0.0}, "preconditioner_exponent"),
        ({"gradient_batch_size": 0}, "gradient_batch_size"),
        ({"rho_low": 0.8, "rho_high": 0.2}, "rho_low"),
    ],
)
def test_bad_options_are_refused(ls, options, word):
    with pytest.raises(OptimizerError, match=word) as e:
        HessianFree(ls.Program(4), **options)
    assert isinstance(e.value, errors.SymcurvError) and "fix:" in str(e.value)


@pytest.mark.parametrize(
    "missing, options",
    [("gnvp", {}), ("hvp", {"curvature": "hessian"}), ("sum_sq_grad", {})],
)
def test_a_missing_program_says_how_to_compile_it(ls, missing, options):
    programs = [p for p in ("loss", "grad", "gnvp", "hvp", "sum_sq_grad") if p != missing]
    with pytest.raises(errors.BuildError, match=f"'{missing}'") as e:
        HessianFree(ls.Program(4, programs=programs), **options)
    assert f"programs=[..., '{missing}']" in str(e.value)
    if missing == "sum_sq_grad":
        assert "preconditioner=False" in str(e.value)
        HessianFree(ls.Program(4, programs=programs), preconditioner=False)  # then it is fine


# -- the compiled deep linear autoencoder ------------------------------------------------------
def pca_optimum(X: np.ndarray, code: int) -> tuple[float, np.ndarray]:
    """min over rank-``code`` maps P of mean ½‖Px − x‖² = ½ Σ of the discarded eigenvalues
    of the (uncentred: no biases) second moment S = XᵀX/N; and the top eigenvectors."""
    w, V = np.linalg.eigh(X.T @ X / len(X))
    order = np.argsort(w)[::-1]
    return 0.5 * w[order[code:]].sum(), V[:, order[:code]]


def test_pca_constant_is_the_programs_objective(autoencoder):
    """The optimum's constant checked on the compiled loss: the PCA network scores it."""
    prog, train = autoencoder.prog, autoencoder.train
    optimum, U = pca_optimum(train["x"], autoencoder.code)
    I42 = np.eye(4, 2)
    pca = {"W0": I42 @ U.T, "W1": I42.T, "W2": I42, "W3": U @ I42.T}  # W3W2W1W0 = UUᵀ
    assert prog.loss(prog.flatten(pca), train) == pytest.approx(optimum, rel=1e-12)


@pytest.mark.parametrize("curvature", ["gauss_newton", "hessian"])
def test_hf_reaches_the_linear_autoencoder_optimum(autoencoder, curvature):
    prog, train, test = autoencoder.prog, autoencoder.train, autoencoder.test
    optimum, _ = pca_optimum(train["x"], autoencoder.code)
    opt = HessianFree(prog, curvature=curvature)
    res = fit(prog, opt, train, iterations=60, batch_size=200, progress=False, eval_data=test)
    final = prog.loss(res.theta, train)
    assert optimum * (1 - 1e-9) <= final <= 1.01 * optimum
    assert res.history[-1]["objective"] == pytest.approx(final, rel=1e-12)
    assert res.history[0]["objective"] > 2 * optimum  # it did start far away
    assert all(np.isfinite(row["test_objective"]) for row in res.history)
