"""K-FAC factors as compiled programs (``prog.kfac_factors``) and the optimizers built on
them (``sc.optim.KFAC``, ``ACP``, ``CenteredSGD``), on two small compiled models.

Oracles: the exact G of a layer with a bias equals the Gauss-Newton block of that bias
(``prog.gauss_newton``, dense from gnvp columns); A against numpy's forward pass; the
empirical kind against the reference interpreter running the same graph (whose maths
tests/transforms/test_kfac_factors.py checks against sympy); the sampled kinds by a z-test
over fixed seeds against the exact G.
"""

from __future__ import annotations

import numpy as np
import pytest

import symcurv as sc
from symcurv import errors, testing

B = 40


def _net():
    """x(3) → tanh(W1 x + b1)(4) → W2 h + b2 (3) → softmax cross-entropy; and a θ-only
    free parameter (g, a scale on the output) outside any dense layer."""
    m = sc.Model("kfac_net")
    x, t = m.input("x", 3), m.target("t", 3)
    W1, b1 = m.param("W1", (4, 3), init=sc.init.normal(0.8)), m.param("b1", 4)
    W2, b2 = m.param("W2", (3, 4), init=sc.init.normal(0.8)), m.param("b2", 3)
    s = m.param("s", 3, init=sc.init.constant(1.0))
    m.minimize(sc.losses.softmax_cross_entropy(s * (W2 @ sc.tanh(W1 @ x + b1) + b2), t))
    return m


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    prog = sc.compile(
        _net(),
        programs=("loss", "grad", "gnvp", "kfac"),
        build_dir=tmp_path_factory.mktemp("kfac") / "net",
        progress=False,
    )
    rng = np.random.default_rng(0)
    theta = prog.init(1)
    t = rng.dirichlet(np.ones(3), size=B)
    batch = {"x": rng.normal(size=(B, 3)), "t": t}
    return prog, theta, batch


def _block(prog, M, name):
    p = prog.params[name]
    sl = slice(p["offset"], p["offset"] + p["size"])
    return M[sl, sl]


def test_layers_and_coverage(net):
    prog, theta, batch = net
    layers = prog.kfac_layers
    assert [(k, v.bias, v.n_in, v.n_out) for k, v in layers.items()] == [
        ("W1", "b1", 3, 4),
        ("W2", "b2", 4, 3),
    ]
    f = prog.kfac_factors(theta, batch, curvature="empirical")
    assert set(f.diagonal) == {"s"}  # the one parameter outside a dense layer
    assert f.layers["W1"].A.shape == (4, 4) and f.layers["W2"].G.shape == (3, 3)


def test_A_against_numpy_and_exact_G_against_the_gauss_newton_blocks(net):
    prog, theta, batch = net
    P = prog.unflatten(theta)
    f = prog.kfac_factors(theta, batch, curvature="exact")
    x = batch["x"]
    h = np.tanh(x @ P["W1"].T + P["b1"])
    for W, inp in (("W1", x), ("W2", h)):
        abar = np.hstack([inp, np.ones((B, 1))])
        assert np.allclose(f.layers[W].A, abar.T @ abar / B, rtol=1e-12, atol=1e-14)
    GN = prog.gauss_newton(theta, batch)
    # s scales the output, so b2's block is the G of W2's pre-activation (before s)
    for W, b in (("W1", "b1"), ("W2", "b2")):
        want = _block(prog, GN, b)
        assert np.max(np.abs(f.layers[W].G - want)) <= 1e-10 * np.max(np.abs(want)), W
    assert np.allclose(f.diagonal["s"], np.diag(_block(prog, GN, "s")), rtol=1e-10, atol=0)


def test_empirical_equals_the_reference_interpreter(net):
    from symcurv.runtime.reference import evaluate
    from symcurv.transforms.kfac import kfac_graph

    prog, theta, batch = net
    f = prog.kfac_factors(theta, batch, curvature="empirical")
    leaves = {**prog.unflatten(theta), **batch, "target_t": batch["t"]}
    ref = evaluate(kfac_graph(_net().forward_graph(), "empirical"), leaves)
    for W, n in (("W1", 4), ("W2", 3)):
        want = np.asarray(ref[f"kfac_G:{W}"]).reshape(n, n)
        assert np.allclose(f.layers[W].G, want, rtol=1e-10, atol=1e-14)
    assert np.allclose(f.diagonal["s"], np.ravel(ref["kfac_diag:s"]), rtol=1e-10)


@pytest.mark.parametrize("curvature", ["curvature_prop", "fisher_mc"])
def test_sampled_kinds_are_unbiased(net, curvature):
    """z-test: over 300 fixed seeds the mean of each G entry (and the diagonal of s) is
    within 5 standard errors of the exact value; a biased kind (empirical) is not."""
    prog, theta, batch = net
    exact = prog.kfac_factors(theta, batch, curvature="exact")
    draws = [prog.kfac_factors(theta, batch, curvature=curvature, seed=k) for k in range(300)]

    def z(getter, ex):
        xs = np.stack([getter(d) for d in draws])
        se = xs.std(axis=0, ddof=1) / np.sqrt(len(xs)) + 1e-12 * np.max(np.abs(ex))
        return np.max(np.abs(xs.mean(axis=0) - ex) / se)

    for W in ("W1", "W2"):
        assert z(lambda d, W=W: d.layers[W].G, exact.layers[W].G) < 5.0, W
    assert z(lambda d: d.diagonal["s"], exact.diagonal["s"]) < 5.0
    # the test has teeth: the empirical Fisher (true targets, not one-hot) is biased here
    emp = prog.kfac_factors(theta, batch, curvature="empirical").layers["W2"].G
    assert np.max(np.abs(emp - exact.layers["W2"].G)) > 0.1 * np.max(np.abs(exact.layers["W2"].G))


def _labels_net():
    """_net with class labels: its loss reads one_hot(c), an inlined op of the label leaf."""
    m = sc.Model("kfac_labels")
    x, c = m.input("x", 3), m.target("t", 3, labels=True)
    W1, b1 = m.param("W1", (4, 3), init=sc.init.normal(0.8)), m.param("b1", 4)
    W2, b2 = m.param("W2", (3, 4), init=sc.init.normal(0.8)), m.param("b2", 3)
    s = m.param("s", 3, init=sc.init.constant(1.0))
    m.minimize(sc.losses.softmax_cross_entropy(s * (W2 @ sc.tanh(W1 @ x + b1) + b2), c))
    return m


def test_labels_targets_are_sampled_by_fisher_mc_and_read_by_empirical(net, tmp_path):
    """With labels=True the loss's target is one_hot(c), not a leaf: fisher_mc must still
    draw targets (it once silently returned the empirical Fisher), and the empirical kind
    must equal the one-hot model's with the same rows."""
    prog, theta, batch = net
    lp = sc.compile(_labels_net(), programs=("kfac",), build_dir=tmp_path / "l", progress=False)
    labels = np.random.default_rng(5).integers(0, 3, B)
    lbatch, obatch = {"x": batch["x"], "t": labels}, {"x": batch["x"], "t": np.eye(3)[labels]}
    emp = lp.kfac_factors(theta, lbatch, curvature="empirical")
    want = prog.kfac_factors(theta, obatch, curvature="empirical")
    for W in ("W1", "W2"):
        assert np.allclose(emp.layers[W].G, want.layers[W].G, rtol=1e-12, atol=1e-15), W
    exact = prog.kfac_factors(theta, obatch, curvature="exact").layers["W2"].G
    draws = np.stack(
        [lp.kfac_factors(theta, lbatch, "fisher_mc", seed=k).layers["W2"].G for k in range(200)]
    )
    se = draws.std(axis=0, ddof=1) / np.sqrt(len(draws)) + 1e-12 * np.max(np.abs(exact))
    assert np.max(np.abs(draws.mean(axis=0) - exact) / se) < 5.0
    assert np.max(np.abs(draws[0] - emp.layers["W2"].G)) > 1e-6  # sampled, not the labels


def test_bad_curvature_and_seed_name_the_fix(net):
    prog, theta, batch = net
    with pytest.raises(errors.ModelError, match="choose one of exact"):
        prog.kfac_factors(theta, batch, curvature="kflr")
    with pytest.raises(errors.ModelError, match="seed"):
        prog.kfac_factors(theta, batch, seed="x")


def test_info_lists_the_blocks_and_draw_shows_them(net, tmp_path):
    import io

    from symcurv import cli

    prog = net[0]
    buf = io.StringIO()
    cli.info(prog.build_dir, out=buf)
    text = buf.getvalue()
    assert "K-FAC blocks" in text and "diagonal (outside dense layers): s" in text
    blocks = text.split("K-FAC blocks")[1].splitlines()
    assert [ln.split()[:2] for ln in blocks if ln.startswith(("W1 ", "W2 "))] == [
        ["W1", "b1"],
        ["W2", "b2"],
    ]
    files = prog.draw("kfac", str(tmp_path / "k.dot"))
    assert sorted(p.rsplit("_", 1)[-1] for p in files) == ["cp.dot", "empirical.dot"]
    assert "G_W2" in open(files[0]).read()


# -- the optimizer --------------------------------------------------------------------------
def _single():
    """One dense layer with a bias and squared error: the GN matrix of (W, b) is A ⊗ G."""
    m = sc.Model("kfac_single")
    x, t = m.input("x", 3), m.target("t", 2)
    W, b = m.param("W", (2, 3), init=sc.init.normal(0.5)), m.param("b", 2)
    m.minimize(sc.losses.squared_error(W @ x + b, t))
    return m


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    prog = sc.compile(
        _single(),
        programs=("loss", "grad", "gnvp", "kfac"),
        build_dir=tmp_path_factory.mktemp("kfac") / "single",
        progress=False,
    )
    rng = np.random.default_rng(3)
    x = rng.normal(size=(30, 3))
    data = {"x": x, "t": np.tanh(x @ rng.normal(size=(3, 2))) + 0.1 * rng.normal(size=(30, 2))}
    return prog, data


def test_one_exact_step_on_a_dense_layer_is_the_gauss_newton_step(single):
    prog, data = single
    opt = sc.optim.KFAC(
        prog,
        curvature="exact",
        damping=0.0,
        adapt_damping=False,
        factor_decay=0.0,
        inverse_every=1,
        learning_rate=1.0,
        momentum=0.0,
    )
    theta0 = prog.init(0)
    res = sc.optim.fit(prog, opt, data, iterations=1, theta=theta0, batch_size=30, progress=False)
    _, g = prog.grad(theta0, data)
    want = theta0 - np.linalg.solve(prog.gauss_newton(theta0, data), g)
    assert np.allclose(res.theta, want, rtol=1e-9, atol=1e-12)
    # squared error on a linear model: the GN step solves the least-squares problem
    assert np.linalg.norm(prog.grad(res.theta, data)[1]) < 1e-9


def test_eigen_inverse_with_pi_damping_equals_a_dense_solve():
    from symcurv.optim.kfac import damped_inverse, eigen, pi_correction

    rng = np.random.default_rng(5)
    X, Y = rng.normal(size=(3, 4)), rng.normal(size=(6, 3))
    A, G = X.T @ X / 3, Y.T @ Y / 6  # rank-deficient A (rank 3 of 4)
    V = rng.normal(size=(3, 4))
    gamma = 0.3
    pi = pi_correction(A, G)
    assert np.isclose(pi, np.sqrt((np.trace(A) / 4) / (np.trace(G) / 3)))
    got = damped_inverse(eigen(G), gamma / pi) @ V @ damped_inverse(eigen(A), pi * gamma)
    K = np.kron(G + gamma / pi * np.eye(3), A + pi * gamma * np.eye(4))
    assert np.allclose(got.ravel(), np.linalg.solve(K, V.ravel()), rtol=1e-10, atol=1e-12)
    # a non-finite factor keeps the previous decomposition: no NaN reaches a step
    prev = eigen(A)
    bad = A.copy()
    bad[0, 0] = np.nan
    w, U = eigen(bad, prev)
    assert w is prev[0] and U is prev[1]


def test_the_kronecker_solve_products_equal_numpy():
    """KFAC.direction's two products per layer go through the programs' ``gemm`` (its tiles
    where they take the shape, a float32 gradient cast to float64): equal to numpy's."""
    from symcurv.optim.kfac import _product
    from symcurv.runtime.gemm import takes_tiled_nn

    rng = np.random.default_rng(6)
    IG, IA = rng.normal(size=(30, 30)), rng.normal(size=(41, 41))
    V = rng.normal(size=(30, 41)).astype(np.float32)  # a float32 program's gradient
    assert takes_tiled_nn(IG, V.astype(np.float64))
    got = _product(_product(IG, V), IA)
    assert got.dtype == np.float64
    assert np.allclose(got, IG @ V.astype(np.float64) @ IA, rtol=1e-12, atol=1e-12)


def test_kfac_trains_and_resumes_bit_for_bit(net, tmp_path):
    prog, theta0, _ = net
    rng = np.random.default_rng(7)
    data = {"x": rng.normal(size=(200, 3)), "t": rng.dirichlet(np.ones(3), size=200)}

    def run(iterations, resume=False):
        opt = sc.optim.KFAC(prog, inverse_every=3, adapt_every=2)
        return sc.optim.fit(
            prog,
            opt,
            data,
            iterations=iterations,
            theta=theta0,
            batch_size=50,
            checkpoint=tmp_path / ("ck.npz" if resume or iterations == 3 else "full.npz"),
            resume=resume,
            progress=False,
        )

    full = run(8)
    run(3)
    resumed = run(8, resume=True)
    assert np.array_equal(full.theta, resumed.theta)
    obj = full.column("objective")
    assert obj[-1] < 0.9 * obj[0]
    row = full.history[-1]
    for key in ("damping", "rho", "learning_rate", "momentum", "time_factors", "time_inverse"):
        assert key in row
    assert np.isfinite(full.column("rho")[1::2]).all()  # ρ every adapt_every steps


# -- ACP and centered SGD -------------------------------------------------------------------
def _one_step(prog, opt, data, theta0):
    res = sc.optim.fit(
        prog, opt, data, iterations=1, theta=theta0, batch_size=len(data["x"]), progress=False
    )
    return res.theta - theta0


def _net_data(n=60):
    rng = np.random.default_rng(11)
    return {"x": rng.normal(size=(n, 3)) + 0.5, "t": rng.dirichlet(np.ones(3), size=n)}


def test_acp_step_is_the_block_inverse_of_eq_6_3_3(net):
    """Layer W1 (input x): Δ̄ = −(η/α) ∇̄ A_λ⁻¹ with A_λ = [[mean h hᵀ + (λ/α) I, h̄], [h̄ᵀ, 1]]
    (the damped F_in = A ⊗ αI solved densely) equals the closed form 6.3.3-6.3.4."""
    prog, theta0, _ = net
    data = _net_data()
    eta, alpha, lam = 0.3, 2.0, 0.05
    opt = sc.optim.ACP(prog, alpha=alpha, damping=lam, learning_rate=eta, inverse_every=1)
    step = _one_step(prog, opt, data, theta0)
    _, g = prog.grad(theta0, data)
    x = data["x"]
    hbar = x.mean(0)
    A = np.block(
        [[x.T @ x / len(x) + lam / alpha * np.eye(3), hbar[:, None]], [hbar[None], np.ones((1, 1))]]
    )
    P = prog.params
    grad_bar = np.hstack(
        [
            g[P["W1"]["offset"] : P["W1"]["offset"] + 12].reshape(4, 3),
            g[P["b1"]["offset"] : P["b1"]["offset"] + 4, None],
        ]
    )
    want = -(eta / alpha) * np.linalg.solve(A.T, grad_bar.T).T
    got = np.hstack(
        [
            step[P["W1"]["offset"] : P["W1"]["offset"] + 12].reshape(4, 3),
            step[P["b1"]["offset"] : P["b1"]["offset"] + 4, None],
        ]
    )
    assert np.allclose(got, want, rtol=1e-9, atol=1e-13)
    # s (outside every dense layer) takes the plain gradient step
    so = P["s"]["offset"]
    assert np.allclose(step[so : so + 3], -eta * g[so : so + 3], rtol=1e-12)


def test_acp_alpha_heuristic_is_the_largest_squared_preactivation_gradient(net):
    prog, theta0, _ = net
    data = _net_data()
    P = prog.unflatten(theta0)
    h = np.tanh(data["x"] @ P["W1"].T + P["b1"])
    y = P["s"] * (h @ P["W2"].T + P["b2"])
    p = np.exp(y - y.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    g_a = P["s"] * (p - data["t"])  # ∂ℓ_b/∂a_b for a = W2 h + b2 (Σ t = 1)
    f = prog.kfac_factors(theta0, data, curvature="empirical")
    assert np.isclose(f.layers["W2"].max_sq_grad, np.max(g_a**2), rtol=1e-10)
    opt = sc.optim.ACP(prog, damping=1e-3, learning_rate=0.05)
    res = sc.optim.fit(prog, opt, data, iterations=15, theta=theta0, batch_size=20, progress=False)
    assert res.column("alpha_max")[0] > 0
    assert res.column("objective")[-1] < res.column("objective")[0]


def test_acp_damping_takes_the_alpha_of_the_refresh_step(net):
    """inverse_every = 2, heuristic α: step 2 uses C and, by default, the damping λ/α₁ of the
    refresh at step 1 (Algorithm 3's inv_C), with 1/α₂ of its own minibatch in front;
    damping_alpha="step" puts α₂ in both. W1's input is x, so C is the data's covariance."""
    prog, theta0, _ = net
    data = _net_data()
    eta, lam = 0.2, 0.5
    x = data["x"]
    C = np.cov(x.T, bias=True)
    P = prog.params
    W1 = slice(P["W1"]["offset"], P["W1"]["offset"] + 12)
    b1 = slice(P["b1"]["offset"], P["b1"]["offset"] + 4)
    alpha1 = prog.kfac_factors(theta0, data, curvature="empirical").layers["W1"].max_sq_grad
    for mode in ("refresh", "step"):
        opt = dict(damping=lam, learning_rate=eta, inverse_every=2, damping_alpha=mode)
        theta1 = theta0 + _one_step(prog, sc.optim.ACP(prog, **opt), data, theta0)
        res = sc.optim.fit(
            prog, sc.optim.ACP(prog, **opt), data, 2, theta0, batch_size=len(x), progress=False
        )
        alpha2 = prog.kfac_factors(theta1, data, curvature="empirical").layers["W1"].max_sq_grad
        assert res.column("alpha_max")[1] >= alpha2 and alpha2 != pytest.approx(alpha1)
        _, g = prog.grad(theta1, data)
        gW, gb = g[W1].reshape(4, 3), g[b1]
        a_damp = alpha1 if mode == "refresh" else alpha2
        want = (
            -(eta / alpha2)
            * np.linalg.solve((C + lam / a_damp * np.eye(3)).T, (gW - np.outer(gb, x.mean(0))).T).T
        )
        got = (res.theta - theta1)[W1].reshape(4, 3)
        assert np.allclose(got, want, rtol=1e-8, atol=1e-13), mode
    with pytest.raises(errors.OptimizerError, match="damping_alpha"):
        sc.optim.ACP(prog, damping_alpha="minibatch")


def test_centered_sgd_step_is_algorithm_2(net):
    prog, theta0, _ = net
    data = _net_data()
    eta = 0.2
    step = _one_step(prog, sc.optim.CenteredSGD(prog, eta), data, theta0)
    _, g = prog.grad(theta0, data)
    P = prog.params
    hbar = data["x"].mean(0)
    gW = g[P["W1"]["offset"] : P["W1"]["offset"] + 12].reshape(4, 3)
    gb = g[P["b1"]["offset"] : P["b1"]["offset"] + 4]
    want = -eta * (gW - np.outer(gb, hbar))
    assert np.allclose(
        step[P["W1"]["offset"] : P["W1"]["offset"] + 12].reshape(4, 3), want, rtol=1e-10
    )
    assert np.allclose(step[P["b1"]["offset"] : P["b1"]["offset"] + 4], -eta * gb, rtol=1e-12)


@pytest.mark.parametrize("lr, mu", [(None, None), (None, 0.5), (0.7, None)])
def test_step_sizes_minimise_the_damped_quadratic_model(lr, mu):
    """q(u) = ∇ᵀu + ½ uᵀ(C + (λ + η) I)u at u = αΔ + μδ: its derivative along every free
    coefficient vanishes (M&G §7's 2×2 solve, or the 1×1 one when one is fixed)."""
    import types

    from symcurv.optim.kfac import KFAC

    rng = np.random.default_rng(2)
    X = rng.normal(size=(8, 5))
    C = X.T @ X
    g, Delta, delta = rng.normal(size=(3, 5))
    lam, l2 = 0.1, 0.01
    opt = types.SimpleNamespace(learning_rate=lr, momentum=mu, l2=l2)
    alpha, m = KFAC._coefficients(opt, g, Delta, delta, lambda key, v: C @ v, lam)
    u = alpha * Delta + m * delta
    r = g + (C + (lam + l2) * np.eye(5)) @ u  # ∇q(u)
    if lr is None:
        assert abs(Delta @ r) < 1e-10 * np.linalg.norm(g) * np.linalg.norm(Delta)
    else:
        assert alpha == lr
    if mu is None:
        assert abs(delta @ r) < 1e-10 * np.linalg.norm(g) * np.linalg.norm(delta)
    else:
        assert m == mu


def test_norm_constraint_caps_the_update_in_the_fisher_metric(single):
    """u = c·Δ with c² lr² |∇ᵀΔ| = norm_constraint (kfac-jax's rule: uᵀF̂u ≤ constraint,
    F̂ the damped K-FAC matrix, since ΔᵀF̂Δ = |∇ᵀΔ| for Δ = −F̂⁻¹∇)."""
    prog, data = single
    theta0 = prog.init(0)

    def step(**kw):
        opt = sc.optim.KFAC(prog, learning_rate=1.0, momentum=0.0, adapt_damping=False, **kw)
        res = sc.optim.fit(prog, opt, data, 1, theta=theta0, batch_size=30, progress=False)
        return res.theta - theta0

    _, g = prog.grad(theta0, data)
    free, capped = step(), step(norm_constraint=1e-4)
    assert abs(g @ free) > 1e-4  # the cap binds
    coef = (g @ capped) / (g @ free)
    assert np.allclose(capped, coef * free, rtol=1e-10)
    assert np.isclose(coef**2 * abs(g @ free), 1e-4, rtol=1e-9)


def test_factors_without_the_kfac_build_name_the_programs_option(compiled):
    _, p = compiled("tied")  # the session's loss+grad build
    batch = testing.random_batch(p, 3)
    with pytest.raises(
        errors.BuildError, match="programs including 'kfac' \\(or just 'kfac_cp'\\)"
    ):
        p.kfac_factors(p.init(0), batch, curvature="curvature_prop", seed=0)
    with pytest.raises(errors.BuildError, match="including 'kfac' \\(or just 'kfac_empirical'\\)"):
        p.kfac_factors(p.init(0), batch, curvature="empirical")
