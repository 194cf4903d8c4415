"""``m.energy`` and ``sc.score_matching``: what they refuse, and why (DSL-level errors that
name the line and the fix)."""

from __future__ import annotations

import pytest

import symcurv as sc
from symcurv import errors


def _energy_model(name="en"):
    m = sc.Model(name)
    x = m.input("x", 3)
    W = m.param("W", (2, 3), init=sc.init.normal(0.5))
    return m, x, W


def test_an_energy_has_no_target():
    m, x, W = _energy_model()
    m.target("t", 2)
    with pytest.raises(errors.ModelError, match="target") as e:
        m.energy(sc.sum(sc.square(W @ x)))
    assert "test_energy.py" in str(e.value) and "fix:" in str(e.value)
    m, x, W = _energy_model()
    m.energy(sc.sum(sc.square(W @ x)))
    with pytest.raises(errors.ModelError, match="target 't' declared on the energy model"):
        m.target("t", 2)


def test_one_objective_per_model():
    m, x, W = _energy_model()
    m.energy(sc.sum(sc.square(W @ x)))
    with pytest.raises(errors.ModelError, match="already has an energy"):
        m.minimize(sc.sum(W @ x))
    with pytest.raises(errors.ModelError, match="energy\\(\\) called twice"):
        m.energy(sc.sum(W @ x))
    m2, x2, W2 = _energy_model()
    m2.minimize(sc.sum(sc.square(W2 @ x2)))
    with pytest.raises(errors.ModelError, match="already has a loss"):
        m2.energy(sc.sum(W2 @ x2))


def test_an_energy_is_a_scalar_of_the_data_and_the_parameters():
    m, x, W = _energy_model()
    a = m.param("a", 2)
    with pytest.raises(errors.ModelError, match="must be a scalar"):
        m.energy(W @ x)
    with pytest.raises(errors.ModelError, match="does not depend on any m.input"):
        m.energy(sc.dot(a, a))
    with pytest.raises(errors.ModelError, match="does not depend on any parameter"):
        m.energy(sc.dot(x, x))
    m.energy(sc.dot(a, sc.square(W @ x)))
    assert m.is_energy


def test_score_matching_refuses_what_it_cannot_fit():
    loss_model = sc.Model("lm")
    x, t = loss_model.input("x", 2), loss_model.target("t", 2)
    W = loss_model.param("W", (2, 2))
    loss_model.minimize(sc.losses.squared_error(W @ x, t))
    with pytest.raises(errors.ModelError, match="needs an energy model; got model 'lm'"):
        sc.score_matching(loss_model)
    with pytest.raises(errors.ModelError, match="needs an energy model"):
        sc.score_matching("poe")
    m, x, W = _energy_model()
    y = m.input("y", 2)
    m.energy(sc.sum(sc.square(W @ x)) + sc.dot(y, y))
    for bad in (-1.0, float("nan"), True, "1e-3"):
        with pytest.raises(errors.ModelError, match="reg ="):
            sc.score_matching(m, reg=bad, wrt="x")
    with pytest.raises(errors.ModelError, match="unknown diag 'GN'"):
        sc.score_matching(m, diag="GN", wrt="x")
    with pytest.raises(errors.ModelError, match="wrt = None.*inputs \\['x', 'y'\\]"):
        sc.score_matching(m)
    with pytest.raises(errors.ModelError, match="wrt = 't'"):
        sc.score_matching(m, wrt="t")
    sm = sc.score_matching(m, reg=0.1, diag="becker_lecun", wrt="y")
    assert list(sm.params) == list(m.params) and list(sm.inputs) == ["x", "y"]
    assert sm.score_matching == {"energy": "en", "reg": 0.1, "diag": "becker_lecun", "wrt": "y"}
