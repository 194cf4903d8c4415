"""examples/foe_train.py and examples/crbm_score_matching.py: their command lines, the
raw-image prior (filters composed with the whitening), a tiny FoE trained by score matching
(the held-out objective, computed in closed form with scipy, goes down) and the cRBM's
objective with the CP (S) diagonal unbiased against its closed form (a z-test over seeds;
the closed form itself checked by central differences of the energy)."""

from __future__ import annotations

import math
from pathlib import Path

import example_modules
import numpy as np
import pytest
from scipy import signal

pytest.importorskip("skimage")
ROOT = Path(__file__).resolve().parents[2]
C2 = math.exp(3.0)  # c² of the Student-t g(z) = log(1 + c²z²/2)


ft = example_modules.load("foe_train")
crbm = example_modules.load("crbm_score_matching")


@pytest.mark.parametrize("mod", [ft, crbm], ids=["foe_train", "crbm_score_matching"])
def test_help_is_complete(mod):
    assert "--quick" in example_modules.assert_help_is_complete(mod)
    assert mod.parser().parse_args([]).update_docs is False  # figures go to build/ by default


def foe_parts(F, beta, x):
    """Σ_m α_m Σ_p g(y_mp), ∂E/∂x and diag ∂²E/∂x² of the FoE with filters ``F`` (M, k, k)
    as they are (no normalisation) on one image x, by scipy: y_m = x ⋆ F_m (valid); the
    transpose of a valid correlation is the full convolution."""
    alpha = np.exp(beta)
    E, g, d = 0.0, np.zeros_like(x), np.zeros_like(x)
    for a, f in zip(alpha, F):
        y = signal.correlate2d(x, f, mode="valid")
        q = 1 + C2 * y**2 / 2
        E += a * np.log(q).sum()
        g += a * signal.convolve2d(C2 * y / q, f)
        d += a * signal.convolve2d(C2 * (1 - C2 * y**2 / 2) / q**2, f**2)
    return E, g, d


def foe_objective(F, beta, X, shape):
    """mean_b Σ_i ½ g_i² − d_i, unit-normalised filters (foe.model's energy)."""
    Fn = F / np.linalg.norm(F.reshape(len(F), -1), axis=1)[:, None, None]
    parts = [foe_parts(Fn, beta, x.reshape(shape)) for x in X]
    return float(np.mean([(0.5 * g**2 - d).sum() for _, g, d in parts]))


def test_the_raw_image_prior_is_the_model_on_whitened_images():
    rng = np.random.default_rng(0)
    F, beta, x = rng.normal(size=(3, 9)), rng.normal(size=3), rng.uniform(size=(14, 13))

    class Prog:
        def unflatten(self, theta):
            return {"F": F, "beta": beta}

    raw = ft.foe.raw_image_theta(Prog(), None, ft.fd.LAPLACIAN_5x5)
    assert raw["F"].shape == (3, 49)  # 3×3 filters composed with the 5×5 whitening: 7×7
    Fn = F / np.linalg.norm(F, axis=1, keepdims=True)
    on_whitened = foe_parts(Fn.reshape(3, 3, 3), beta, ft.fd.whiten(x))[0]
    on_raw = foe_parts(raw["F"].reshape(3, 7, 7), raw["beta"], x)[0]
    assert math.isclose(on_whitened, on_raw, rel_tol=1e-12)


def test_the_whitened_prior_is_the_model_on_whitened_images(tmp_path):
    """foe.whitened_model (the raw-image prior denoising uses): ∂E/∂x equals the gradient of
    the trained model's energy at s · (L ⋆ x) pulled back through the whitening (the
    adjoint of a valid correlation is the full convolution), by scipy. (Only input_grad,
    what sc.denoise calls, is compiled: the test's cost is its Numba build.)"""
    import symcurv as sc  # noqa: PLC0415

    m = ft.foe.whitened_model(image=(11, 10), filters=2, size=3, name="foe_whitened_test")
    prog = sc.compile(m, ("input_grad",), build_dir=tmp_path, progress=False)
    rng = np.random.default_rng(0)
    F, beta, x, s = rng.normal(size=(2, 9)), rng.normal(size=2), rng.uniform(size=(11, 10)), 3.0

    class Trained:
        def unflatten(self, theta):
            return {"F": F, "beta": beta}

    theta = prog.flatten(ft.foe.whitened_theta(Trained(), None, ft.fd.LAPLACIAN_5x5, s))
    Fn = (F / np.linalg.norm(F, axis=1, keepdims=True)).reshape(2, 3, 3)
    _, g_white, _ = foe_parts(Fn, beta, s * ft.fd.whiten(x))
    batch = {"x": x.reshape(1, -1)}
    g = s * signal.convolve2d(g_white, ft.fd.LAPLACIAN_5x5)
    assert np.allclose(prog.input_grad(theta, batch).reshape(11, 10), g, rtol=1e-10, atol=1e-12)


def test_score_matching_training_lowers_the_held_out_objective(tmp_path):
    """A 3-filter 3×3 FoE on 7×7 whitened crops, 40 Adam steps of the Becker-LeCun score-
    matching gradient (exact for the FoE): the exact objective on held-out crops drops."""
    import symcurv as sc  # noqa: PLC0415

    shape = (7, 7)
    train, held, _ = ft.data(7, 300, 100, seed=0)
    energy = ft.foe.model(image=shape, filters=3, size=3, name="foe_sm_test", std=0.5)
    prog = sc.compile(
        sc.score_matching(energy, reg=0.0, diag="becker_lecun"),
        ("loss", "grad"),
        build_dir=tmp_path / "sm",
        progress=False,
    )
    theta0 = prog.init(0)
    p0 = prog.unflatten(theta0)
    before = foe_objective(p0["F"].reshape(3, 3, 3), p0["beta"], held, shape)
    assert math.isclose(prog.loss(theta0, {"x": held}), before, rel_tol=1e-9)  # same J
    res = sc.optim.fit(
        prog,
        sc.optim.Adam(prog, learning_rate=2e-2),
        {"x": train},
        iterations=40,
        theta=theta0,
        batch_size=50,
        progress=False,
    )
    p = prog.unflatten(res.theta)
    after = foe_objective(p["F"].reshape(3, 3, 3), p["beta"], held, shape)
    assert after < before - 0.05 * abs(before), (before, after)


def crbm_energy_numpy(params, x):
    P = np.exp(params["Q"])
    a = params["b"] - 0.5 * P @ (params["C"] @ x) ** 2
    return 0.5 * x @ x - np.logaddexp(0, a).sum()


def test_the_crbm_closed_form_matches_central_differences():
    rng = np.random.default_rng(1)
    params = {"C": rng.normal(size=(4, 6)), "Q": rng.normal(size=(3, 4)), "b": rng.normal(size=3)}
    x, h, reg = rng.normal(size=6), 1e-4, 0.3
    E = lambda z: crbm_energy_numpy(params, z)  # noqa: E731
    eye = np.eye(6)
    g = np.array([(E(x + h * e) - E(x - h * e)) / (2 * h) for e in eye])
    d = np.array([(E(x + h * e) - 2 * E(x) + E(x - h * e)) / h**2 for e in eye])
    want = (0.5 * g**2 - d + reg * d**2).sum()
    got = crbm.exact_objective(params, x[None], reg)[0]
    assert math.isclose(got, want, rel_tol=1e-5), (got, want)


def test_the_crbm_cp_objective_is_unbiased(tmp_path):
    """J with the S diagonal (one draw for −Σd, two independent draws for λΣd²) averaged
    over seeds agrees with the closed-form exact J within 4 standard errors."""
    import symcurv as sc  # noqa: PLC0415

    reg = 0.1
    energy = crbm.crbm_energy(6, 4, 3, name="crbm_cp_test")
    prog = sc.compile(
        sc.score_matching(energy, reg=reg, diag="S"), ("loss",), build_dir=tmp_path, progress=False
    )
    rng = np.random.default_rng(2)
    X = rng.normal(size=(5, 6))
    theta = prog.init(3) + 0.3 * rng.normal(size=prog.n_params)
    exact = float(crbm.exact_objective(prog.unflatten(theta), X, reg).mean())
    draws = np.array([prog.loss(theta, {"x": X}, seed=s) for s in range(400)])
    z = (draws.mean() - exact) / (draws.std(ddof=1) / math.sqrt(len(draws)))
    assert abs(z) < 4, (draws.mean(), exact, z)
    assert draws.std() > 1e-6  # the estimate is noisy: the test sees CP, not the exact path
