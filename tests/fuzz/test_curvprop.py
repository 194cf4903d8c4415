"""Curvature Propagation on random models: the EXACT expectation of one draw, summed over
every unit noise vector (checks.exact_expectation), equals diag(H) for the S and TU
estimators and diag(G) for GN (Chapelle-Erhan), with H and G assembled from the hvp / gnvp
columns that tests/fuzz/test_reference.py checks against central differences.

Both sides are exact up to rounding (sums in a different order over ≤ a few hundred
terms of size ≤ max|H|), hence 1e-9 relative; a wrong skip rule or curvature factor errs by
O(1) (tests/transforms/test_curvprop.py::test_a_wrong_skip_rule_is_caught).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given

from symcurv import errors
from symcurv.transforms import gauss_newton, rop
from symcurv.transforms.curvprop import cp_graph

from . import strategies
from .checks import dense, exact_expectation
from .test_reference import SEEDS, case


def _close(got, want) -> bool:
    return np.max(np.abs(got - want), initial=0.0) <= 1e-9 * max(np.max(np.abs(want)), 1e-3)


@given(spec=strategies.model_specs(), seed=SEEDS)
def test_cp_is_unbiased_exactly(spec, seed):
    f, vals, theta = case(spec, seed)
    d = np.diag(dense(rop.hvp_graph(f), f, vals, "hvp", theta))
    for estimator in ("S", "TU"):
        got = exact_expectation(cp_graph(f, estimator), f, vals, f"cp_{estimator}", theta)
        assert _close(got, d), (estimator, got, d)


@given(spec=strategies.model_specs(), seed=SEEDS)
def test_cp_gn_is_unbiased_for_diag_of_G(spec, seed):
    f, vals, theta = case(spec, seed)
    if not spec.gauss_newton:
        with pytest.raises(errors.LossError):
            cp_graph(f, "GN")
        return
    d = np.diag(dense(gauss_newton.gnvp_graph(f), f, vals, "gnvp", theta))
    got = exact_expectation(cp_graph(f, "GN"), f, vals, "cp_GN", theta)
    assert _close(got, d), (got, d)
