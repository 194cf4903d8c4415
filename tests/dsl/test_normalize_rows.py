"""``sc.normalize_rows``: the values (reference interpreter against numpy) and what it
refuses. Its derivatives are checked through the score-matching oracle tests (the
product-of-experts energy in tests/transforms/test_score_matching.py)."""

from __future__ import annotations

import numpy as np
import pytest

import symcurv as sc
from symcurv import errors
from symcurv.runtime.reference import evaluate


def test_rows_have_unit_length():
    m = sc.Model("nr")
    x = m.input("x", 3)
    W = m.param("W", (2, 3))
    m.energy(sc.sum(sc.square(sc.normalize_rows(W) @ x)))
    W0 = np.array([[1.0, -2.0, 2.0], [0.0, 3.0, 4.0]])
    X = np.random.default_rng(0).normal(size=(4, 3))
    got = evaluate(m.forward_graph(), {"W": W0, "x": X})["per_case"]
    Wn = W0 / np.linalg.norm(W0, axis=1, keepdims=True)
    assert np.allclose(got, ((X @ Wn.T) ** 2).sum(axis=1), rtol=1e-14)


def test_only_parameter_matrices():
    m = sc.Model("nr_bad")
    x = m.input("x", 3)
    W = m.param("W", (2, 3))
    with pytest.raises(errors.ShapeError, match="needs a matrix") as e:
        sc.normalize_rows(W @ x)
    assert "test_normalize_rows.py" in str(e.value)
    with pytest.raises(errors.ModelError, match="needs at least one model value"):
        sc.normalize_rows(np.eye(2))
