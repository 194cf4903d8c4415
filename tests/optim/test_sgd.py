"""The first-order baselines on the numpy least-squares stand-in: each update against its
formula written out step by step, convergence, the l2 prior, divergence and options."""

from __future__ import annotations

import numpy as np
import pytest

from symcurv import errors
from symcurv.optim import SGD, Adam, OptimizerError, Sampler, fit


def gradient(data, theta) -> np.ndarray:
    X, t = data["x"], data["t"][:, 0]
    return X.T @ (X @ theta - t) / len(X)


def run(opt, data, theta, steps: int):
    """``steps`` full-batch steps; the θ after each."""
    sampler = Sampler(data, len(data["x"]), seed=0)
    state, out = opt.init(theta), []
    for _ in range(steps):
        theta, state, info = opt.step(theta, sampler, state)
        out.append(theta)
    return out, state, info


def test_heavy_ball_momentum(ls):
    n, lr, mu = 5, 0.1, 0.8
    prog, data = ls.Program(n), ls.data(n, seed=4)
    theta0 = np.ones(n)
    (theta1, theta2, theta3), _, info = run(
        SGD(prog, learning_rate=lr, momentum=mu), data, theta0, 3
    )
    # θ_{t+1} = θ_t − η∇f(θ_t) + μ(θ_t − θ_{t−1}), θ_{−1} = θ_0
    assert np.allclose(theta1, theta0 - lr * gradient(data, theta0), rtol=1e-13)
    assert np.allclose(theta2, theta1 - lr * gradient(data, theta1) + mu * (theta1 - theta0))
    assert np.allclose(theta3, theta2 - lr * gradient(data, theta2) + mu * (theta2 - theta1))
    assert info["objective"] == pytest.approx(prog.loss(theta2, data))  # before the step


def test_nesterov_momentum_looks_ahead(ls):
    n, lr, mu = 5, 0.1, 0.8
    prog, data = ls.Program(n), ls.data(n, seed=4)
    theta0 = np.ones(n)
    opt = SGD(prog, learning_rate=lr, momentum=mu, nesterov=True)
    (theta1, theta2), _, _ = run(opt, data, theta0, 2)
    v1 = -lr * gradient(data, theta0)
    v2 = mu * v1 - lr * gradient(data, theta1 + mu * v1)  # the gradient at θ + μv
    assert np.allclose(theta1, theta0 + v1, rtol=1e-13)
    assert np.allclose(theta2, theta1 + v2, rtol=1e-13)


def test_adam_update_with_bias_correction(ls):
    n, lr, b1, b2, eps = 5, 0.01, 0.9, 0.999, 1e-8
    prog, data = ls.Program(n), ls.data(n, seed=4)
    theta0 = np.ones(n)
    (theta1, theta2), state, _ = run(Adam(prog, learning_rate=lr), data, theta0, 2)
    g0 = gradient(data, theta0)
    # step 1: m̂ = g and ŝ = g², so every coordinate moves by η (up to ε)
    assert np.allclose(theta1, theta0 - lr * g0 / (np.abs(g0) + eps), rtol=1e-13)
    g1 = gradient(data, theta1)
    m = b1 * (1 - b1) * g0 + (1 - b1) * g1
    s = b2 * (1 - b2) * g0**2 + (1 - b2) * g1**2
    step = (m / (1 - b1**2)) / (np.sqrt(s / (1 - b2**2)) + eps)
    assert np.allclose(theta2, theta1 - lr * step, rtol=1e-12)
    assert state["steps"] == 2 and np.allclose(state["m"], m) and np.allclose(state["s"], s)


@pytest.mark.parametrize(
    "cls, options",
    [(SGD, {"learning_rate": 0.3, "momentum": 0.5}), (Adam, {"learning_rate": 0.05})],
)
@pytest.mark.parametrize("l2", [0.0, 0.5])
def test_baselines_converge_to_the_regularised_minimiser(ls, cls, options, l2):
    n = 4
    prog, data = ls.Program(n), ls.data(n, condition=4.0, seed=5)
    opt = cls(prog, l2=l2, **options)
    res = fit(prog, opt, data, iterations=600, batch_size=len(data["x"]), progress=False)
    assert np.allclose(res.theta, prog.minimiser(data, l2=l2), rtol=1e-4, atol=1e-5)
    assert res.history[-1]["objective"] < res.history[0]["objective"]


def test_divergence_is_an_error_naming_the_learning_rate(ls):
    n = 4
    prog, data = ls.Program(n), ls.data(n, seed=5)
    with pytest.raises(errors.NonFiniteError, match="SGD diverged") as e:
        fit(prog, SGD(prog, learning_rate=1e3), data, iterations=500, progress=False)
    assert "learning_rate" in str(e.value)


@pytest.mark.parametrize(
    "cls, options, word",
    [
        (SGD, {"learning_rate": 0.0}, "learning_rate"),
        (SGD, {"momentum": 1.0}, "momentum"),
        (SGD, {"l2": -1.0}, "l2"),
        (Adam, {"beta1": 1.0}, "beta1"),
        (Adam, {"eps": 0.0}, "eps"),
        (Adam, {"default_batch_size": 0}, "default_batch_size"),
    ],
)
def test_bad_options_are_refused(ls, cls, options, word):
    with pytest.raises(OptimizerError, match=word):
        cls(ls.Program(3), **options)


@pytest.mark.parametrize("cls", [SGD, Adam])
def test_a_missing_grad_program_says_how_to_compile_it(ls, cls):
    with pytest.raises(errors.BuildError, match="'grad'") as e:
        cls(ls.Program(3, programs=("loss", "gnvp")))
    assert "programs=[..., 'grad']" in str(e.value)
