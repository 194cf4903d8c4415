"""Linear CG as Hessian-free runs it (numpy only): exact in n steps, φ tracked correctly,
Martens' termination rule (§4.4) on φ sequences built so that a wrong k, ε or sign test
changes the stopping iteration, the kept iterates of §4.6, negative curvature."""

from __future__ import annotations

import math

import numpy as np
import pytest

from symcurv.optim import cg


def quadratic(n: int, condition: float = 1e3, seed: int = 0):
    """(A, g): A symmetric positive definite with eigenvalues spread over ``condition``."""
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    A = (Q * np.logspace(0, -np.log10(condition), n)) @ Q.T
    return 0.5 * (A + A.T), rng.normal(size=n)


def phi(A, g, x) -> float:
    return float(g @ x + 0.5 * x @ A @ x)


def first_stop(phis, **kw) -> int | None:
    return next((i for i in range(1, len(phis)) if cg.martens_stop(phis, i, **kw)), None)


# -- CG itself ----------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", ["plain", "preconditioned", "warm_start"])
def test_cg_minimises_a_quadratic_exactly_in_n_steps(variant):
    n = 12
    A, g = quadratic(n, condition=10.0)  # well conditioned: rounding keeps CG exact
    rng = np.random.default_rng(1)
    kw = {"epsilon": 0.0}  # Martens' rule off: run until n
    if variant == "preconditioned":
        kw["preconditioner"] = rng.uniform(0.5, 2.0, size=n)
    if variant == "warm_start":
        kw["x0"] = rng.normal(size=n)
    exact = np.linalg.solve(A, -g)
    res = cg.conjugate_gradient(lambda v: A @ v, g, max_iterations=n, **kw)
    assert res.iterations <= n
    assert np.linalg.norm(res.x - exact) < 1e-8 * np.linalg.norm(exact)
    assert res.phis[-1] == pytest.approx(phi(A, g, exact), rel=1e-10)
    # and n is needed: one step fewer is still far off (the spectrum is spread)
    short = cg.conjugate_gradient(lambda v: A @ v, g, max_iterations=n - 2, **kw)
    assert np.linalg.norm(short.x - exact) > 1e-6 * np.linalg.norm(exact)


def test_phi_is_tracked_from_the_residual_and_decreases():
    A, g = quadratic(30, condition=1e4)
    x0 = np.random.default_rng(2).normal(size=30)
    res = cg.conjugate_gradient(lambda v: A @ v, g, x0, epsilon=0.0, max_iterations=25)
    assert res.phis[0] == pytest.approx(phi(A, g, x0), rel=1e-12)
    for i, x in res.iterates:
        assert res.phi(i) == pytest.approx(phi(A, g, x), rel=1e-10, abs=1e-12)
    assert all(b <= a + 1e-12 for a, b in zip(res.phis, res.phis[1:]))  # CG's monotonicity


def test_iterates_are_kept_at_ceil_gamma_powers():
    A, g = quadratic(60, condition=1e5)
    res = cg.conjugate_gradient(lambda v: A @ v, g, epsilon=0.0, max_iterations=45)
    powers = {math.ceil(cg.GAMMA**j) for j in range(40)}
    want = sorted({i for i in powers if i <= res.iterations} | {res.iterations})
    assert [i for i, _ in res.iterates] == want
    assert cg.GAMMA == 1.3 and want[:9] == [1, 2, 3, 4, 5, 7, 9, 11, 14]
    # each kept x_i is CG's i-th iterate: a run stopped at i ends there
    for i, x in res.iterates:
        alone = cg.conjugate_gradient(lambda v: A @ v, g, epsilon=0.0, max_iterations=i)
        assert np.array_equal(alone.x, x)
    assert res.x is res.iterates[-1][1]
    no_storage = cg.conjugate_gradient(
        lambda v: A @ v, g, epsilon=0.0, max_iterations=45, gamma=None
    )
    assert [i for i, _ in no_storage.iterates] == [45]


def test_preconditioning_helps_a_badly_scaled_quadratic():
    A0, g = quadratic(40, condition=10.0)
    d = np.logspace(0, 3, 40)
    A = A0 * np.outer(d, d)  # D A0 D: the axis-aligned scaling a diagonal M removes
    exact = np.linalg.solve(A, -g)
    plain = cg.conjugate_gradient(lambda v: A @ v, g, epsilon=0.0, max_iterations=10)
    pre = cg.conjugate_gradient(
        lambda v: A @ v, g, epsilon=0.0, max_iterations=10, preconditioner=np.diag(A).copy()
    )
    gap = [r.phis[-1] - phi(A, g, exact) for r in (plain, pre)]
    assert gap[1] < 1e-3 * gap[0]


def test_negative_curvature_stops_cg():
    A = np.diag([2.0, 1.0, -1.0])
    # the first direction −g has dᵀAd = 2 + 1 − 9 < 0: no step may be taken along it
    res = cg.conjugate_gradient(lambda v: A @ v, np.array([1.0, 1.0, 3.0]), epsilon=0.0)
    assert res.stop == "negative_curvature" and res.iterations == 0
    assert not res.x.any() and res.phis == [0.0]
    # a later direction of negative curvature: CG keeps the progress made before it
    g = np.array([1.0, 1.0, 0.5])
    res = cg.conjugate_gradient(lambda v: A @ v, g, epsilon=0.0)
    assert res.stop == "negative_curvature" and res.iterations >= 1
    assert res.phis[-1] < 0 and res.phis[-1] == pytest.approx(phi(A, g, res.x))


# -- Martens' termination rule, §4.4 --------------------------------------------------------------
def test_paper_constants():
    assert (cg.EPSILON, cg.GAP_RATIO, cg.MIN_GAP) == (5e-4, 0.1, 10)
    assert [cg.look_back(i) for i in (1, 100, 101, 150, 300)] == [10, 10, 11, 15, 30]


@pytest.mark.parametrize("epsilon", [cg.EPSILON, 5e-3, 2e-4])
def test_epsilon_sets_the_stop_on_a_linear_decrease(epsilon):
    """φ_i = −(i + ½): the relative progress over the last k iterations is k / (i + ½),
    below k·ε exactly from i + ½ > 1/ε on, whatever k is."""
    phis = [-(i + 0.5) for i in range(3 * round(1 / epsilon))]
    phis[0] = 0.0
    assert first_stop(phis, epsilon=epsilon) == math.ceil(1 / epsilon - 0.5)


@pytest.mark.parametrize("plateau", [20, 60, 200])
def test_look_back_k_sets_the_stop_after_a_plateau(plateau):
    """φ falls fast (by a factor e^½ per iteration) until iteration m, then stays flat: any
    window [i − k, i] that still holds a fall shows a relative progress ≥ 1 − e^−½, far
    above kε, so CG stops exactly at the first i whose window lies on the plateau:
    i − k(i) ≥ m. With k = max(10, ⌈0.1 i⌉) that is m + 10 for small m, later for large m."""
    phis = [-math.exp(0.5 * min(i, plateau)) for i in range(4 * plateau)]

    def rule(min_gap: int) -> int:
        return next(i for i in range(1, 4 * plateau) if i - max(min_gap, -(-i // 10)) >= plateau)

    stop = first_stop(phis)
    assert stop == rule(10)
    if plateau <= 90:
        assert stop == plateau + 10
    else:  # where a fixed k = 10 would have stopped at m + 10
        assert stop > plateau + 10
    assert first_stop(phis, min_gap=5) == rule(5)
    if plateau > 50:  # where k = ⌈0.1 i⌉ > 10: a larger ratio looks further back
        assert first_stop(phis, gap_ratio=0.2) > stop


def test_no_stop_before_iteration_k_plus_one():
    """No progress at all (a warm start already at φ's minimum): the earliest stop is
    i = k + 1 = 11 — not i = k, where φ_i − φ_{i−k} is already 0."""
    phis = [-1.0] * 40
    assert first_stop(phis) == cg.MIN_GAP + 1
    assert first_stop(phis, min_gap=4) == 5


def test_no_stop_while_phi_is_positive():
    """A warm start can begin at φ > 0 (§4.5); tiny relative progress there must not stop
    CG: with φ_i = 10 − 10⁻³ i the ratio (φ_i − φ_{i−k}) / φ_i is < 0 < kε while φ > 0."""
    phis = [10.0 - 1e-3 * i for i in range(20000)]
    stop = first_stop(phis)
    assert stop is not None and phis[stop] < 0
    assert all(not cg.martens_stop(phis, i) for i in range(1, 10001))


def test_cg_stops_where_the_rule_first_holds():
    A, g = quadratic(400, condition=1e6, seed=3)
    res = cg.conjugate_gradient(lambda v: A @ v, g, max_iterations=1000)
    assert res.stop == "progress" and res.iterations < 1000
    assert res.iterations == first_stop(res.phis)
    looser = cg.conjugate_gradient(lambda v: A @ v, g, max_iterations=1000, epsilon=5e-3)
    assert looser.iterations < res.iterations
    capped = cg.conjugate_gradient(lambda v: A @ v, g, max_iterations=15)
    assert capped.iterations == 15 and capped.stop == "max_iterations"
