"""Random models in the reference interpreter: every derived graph of the loss, the
gradient, H v, G v and the sum of squared per-case gradients against oracles built from
the forward graph alone (central differences; the losses' own scalar definitions), and
against the dense H and G assembled from their products.

Tolerances: central differences of step h on values bounded by 30 (``conditioned``) err
by ≈ h² f'''/6 + ε |f| / h ≤ 1e-9 relative for h = 1e-5; a wrong derivative rule errs by
O(1). Identities that hold in exact arithmetic (symmetry, linearity, equal sums in another
order) are checked to 1e-10: only rounding separates the two sides.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from symcurv import errors, pipeline
from symcurv.runtime.reference import evaluate
from symcurv.transforms import gauss_newton, grad, gradsq, rop

from . import strategies
from .checks import (
    central_diagonal,
    central_gradient,
    dense,
    flat,
    gauss_newton_oracle,
    objective,
    prefixed,
    rel_err,
)

SEEDS = st.integers(0, 2**16)
BATCH = st.integers(1, 3)  # a batch of one case included


def case(spec: strategies.ModelSpec, seed: int, B: int = 2):
    """(forward graph, leaf values, θ) of a drawn model, or a rejected draw whose values
    are too large or too close to relu's kink for finite differences."""
    f = spec.forward()
    vals = strategies.leaves(f, seed, B)
    assume(strategies.conditioned(f, vals))
    return f, vals, flat(f, vals)


@given(spec=strategies.model_specs(), seed=SEEDS, B=BATCH)
def test_loss_and_gradient_match_central_differences(spec, seed, B):
    f, vals, theta = case(spec, seed, B)
    g = grad.gradient_graph(f)
    got = evaluate(g, vals)
    L = objective(f, vals, theta)
    assert abs(float(got["objective"]) - L) <= 1e-12 * max(abs(L), 1.0)
    gv = prefixed(g, f, vals, "grad", theta)
    fd = central_gradient(f, vals, theta)
    # FD error ≤ 1e-9 (see module docstring) relative to |L| and |g|
    assert np.max(np.abs(gv - fd)) <= 1e-7 * max(np.max(np.abs(fd)), 1e-3) + 1e-9 * abs(L)


@given(spec=strategies.model_specs(), seed=SEEDS, B=BATCH)
def test_hessian_products(spec, seed, B):
    """H from hvp columns: symmetric, linear in v, the central differences of the (checked)
    gradient graph column by column, and its diagonal the five-point second differences of
    the forward graph."""
    f, vals, theta = case(spec, seed, B)
    hg = rop.hvp_graph(f)
    H = dense(hg, f, vals, "hvp", theta)
    scale = max(np.max(np.abs(H)), 1e-3)
    assert np.max(np.abs(H - H.T)) <= 1e-10 * scale
    v = np.random.default_rng(seed).normal(size=theta.size)
    assert rel_err(prefixed(hg, f, vals, "hvp", theta, v), H @ v) < 1e-10
    gg = grad.gradient_graph(f)
    h, e = 1e-5, np.eye(theta.size)
    for j in range(theta.size):
        up = prefixed(gg, f, vals, "grad", theta + h * e[j])
        dn = prefixed(gg, f, vals, "grad", theta - h * e[j])
        col = (up - dn) / (2 * h)
        assert np.max(np.abs(H[:, j] - col)) <= 1e-7 * scale, j
    # the exact diagonal (diag_hessian's definition: diag of the hvp columns) against the
    # forward graph alone: rounding of the stencil ≈ 7e-10 |L| (checks.central_diagonal)
    L = objective(f, vals, theta)
    d = central_diagonal(f, vals, theta)
    assert np.max(np.abs(np.diag(H) - d)) <= 1e-7 * scale + 1e-8 * abs(L)


@given(spec=strategies.model_specs(), seed=SEEDS, B=BATCH)
def test_gauss_newton_products(spec, seed, B):
    """Where the objective splits into a loss of the network output, G from gnvp columns is
    symmetric PSD and equals Jᵀ H_L J with J by central differences; anywhere else the
    transform refuses with a LossError."""
    f, vals, theta = case(spec, seed, B)
    if not spec.gauss_newton:
        with pytest.raises(errors.LossError):
            gauss_newton.gnvp_graph(f)
        return
    gg = gauss_newton.gnvp_graph(f)
    G = dense(gg, f, vals, "gnvp", theta)
    scale = max(np.max(np.abs(G)), 1e-3)
    assert np.max(np.abs(G - G.T)) <= 1e-10 * scale
    assert np.linalg.eigvalsh((G + G.T) / 2).min() >= -1e-10 * scale  # convex losses only
    v = np.random.default_rng(seed).normal(size=theta.size)
    assert rel_err(prefixed(gg, f, vals, "gnvp", theta, v), G @ v) < 1e-10
    # J by central differences of step 1e-6: error ≈ 1e-10 relative (checks.py)
    assert (
        np.max(np.abs(G - gauss_newton_oracle(f, vals, theta, spec.loss_weights))) <= 1e-7 * scale
    )


@given(spec=strategies.model_specs(), seed=SEEDS)
def test_sum_of_squared_per_case_gradients(spec, seed):
    """``sqg`` = Σ_b ∇f_b ⊙ ∇f_b, with ∇f_b the gradient graph run on case b alone (the
    mean over one case is f_b itself)."""
    B = 3
    f, vals, theta = case(spec, seed, B)
    got = prefixed(gradsq.sum_sq_grad_graph(f), f, vals, "sqg", theta)
    gg = grad.gradient_graph(f)
    want = np.zeros(theta.size)
    for b in range(B):
        one = {k: (v[b : b + 1] if k in _data(f) else v) for k, v in vals.items()}
        want += prefixed(gg, f, one, "grad", theta) ** 2
    assert rel_err(got, want) < 1e-10


def _data(f):
    return {n.name for n in f.nodes() if n.op in ("input", "target")}


# Every derived program of the pipeline, and where the fuzz suite checks it. A program added
# to pipeline.PROGRAMS (the input programs of the data-derivative issue, say) fails the
# test below until its property joins this table.
PROPERTIES = {
    "loss": "test_loss_and_gradient_match_central_differences",
    "grad": "test_loss_and_gradient_match_central_differences",
    "hvp": "test_hessian_products",
    "gnvp": "test_gauss_newton_products",
    "sum_sq_grad": "test_sum_of_squared_per_case_gradients",
    "cp_S": "test_curvprop.py::test_cp_is_unbiased_exactly",
    "cp_TU": "test_curvprop.py::test_cp_is_unbiased_exactly",
    "cp_GN": "test_curvprop.py::test_cp_gn_is_unbiased_for_diag_of_G",
    # biased by design, so no exact oracle on a random graph: its exact case (one hidden
    # layer) is tests/transforms/test_curvprop.py's; here it is only drawn and JSON-tripped
    "becker_lecun": "test_roundtrip.py (graph only)",
    "input_grad": "test_inputs.py::test_input_derivatives",
    "input_hvp": "test_inputs.py::test_input_derivatives",
    "input_diag_S": "test_inputs.py::test_input_derivatives",
    "input_diag_TU": "test_inputs.py::test_input_derivatives",
    # biased by design like becker_lecun; its exact case is tests/transforms/test_inputs.py's
    "input_bl": "test_roundtrip.py (graph only)",
    "per_case_grad": "test_inputs.py::test_per_case_gradients",
    "per_case_grad_norm": "test_inputs.py::test_per_case_gradients",
    "kfac_cp": "test_kfac_fuzz.py::test_kfac_factors_are_exact_for_one_case",
    "kfac_empirical": "test_kfac_fuzz.py::test_kfac_factors_are_exact_for_one_case",
}


def test_every_program_has_a_fuzz_property():
    assert set(pipeline.PROGRAMS) <= set(PROPERTIES), set(pipeline.PROGRAMS) - set(PROPERTIES)
