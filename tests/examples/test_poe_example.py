"""examples/poe_score_matching.py: its command line, and the exact log-likelihood's pieces
against independent computations (the Student-t normaliser by numerical quadrature, the
whole log-density of a 2-D square PoE by 2-D quadrature: it integrates to 1)."""

from __future__ import annotations

import math
from pathlib import Path

import example_modules
import numpy as np
import pytest
from scipy import integrate

ROOT = Path(__file__).resolve().parents[2]


poe = example_modules.load("poe_score_matching")
lam = example_modules.load("poe_lambda")


@pytest.mark.parametrize("mod", [poe, lam], ids=["poe_score_matching", "poe_lambda"])
def test_help_is_complete(mod):
    assert "--quick" in example_modules.assert_help_is_complete(mod)


def test_the_student_t_normaliser():
    for alpha in (0.8, 1.0, 2.5):
        f = lambda z, a=alpha: (1 + (poe.C * z) ** 2 / 2) ** (-a)  # noqa: E731
        want, _ = integrate.quad(f, -np.inf, np.inf)
        assert math.isclose(poe.log_z(alpha), math.log(want), rel_tol=1e-7)
    assert math.isclose(float(np.exp(poe.log_z(1.0))), math.pi * math.sqrt(2) / poe.C)


class _FakeProg:
    def __init__(self, W, beta):
        self.p = {"W": W, "beta": beta}

    def unflatten(self, theta):
        return self.p


def test_the_square_poe_density_integrates_to_one():
    """The density whose mean log the example reports integrates to 1 over a fine grid
    (a 2-D square PoE with light tails: α = 3, 4)."""
    W = np.array([[1.0, 0.5], [-0.3, 1.2]])
    prog = _FakeProg(W, np.log(np.array([3.0, 4.0])))
    g = np.linspace(-6, 6, 1201)
    X = np.stack(np.meshgrid(g, g), axis=-1).reshape(-1, 2)
    Wn = W / np.linalg.norm(W, axis=1, keepdims=True)
    alpha = np.array([3.0, 4.0])
    e = (alpha * np.log1p((poe.C * (X @ Wn.T)) ** 2 / 2)).sum(axis=1)
    dens = np.exp(-e + np.linalg.slogdet(Wn)[1] - poe.log_z(alpha).sum())
    mean_ll = poe.log_likelihood(prog, None, X)
    assert math.isclose(mean_ll, float(np.mean(np.log(dens))) / 2, rel_tol=1e-12)
    total = integrate.trapezoid(integrate.trapezoid(dens.reshape(len(g), len(g)), g), g)
    assert abs(total - 1) < 2e-3, total
