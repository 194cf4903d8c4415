"""The compiled ``sum_sq_grad`` program (Hessian-free's preconditioner) against per-case
gradients computed case by case, on tied weights (W and W.T in one case)."""

from __future__ import annotations

import numpy as np
import pytest
from models import tied

import symcurv as sc
from symcurv import errors, testing


@pytest.fixture(scope="module")
def prog(tmp_path_factory):
    return sc.compile(
        tied(),
        programs=["grad", "sum_sq_grad"],
        build_dir=tmp_path_factory.mktemp("sqg") / "tied",
        progress=False,
    )


def test_equals_the_sum_of_per_case_gradient_squares(prog):
    rng = np.random.default_rng(0)
    theta = prog.init(0) + 0.3 * rng.normal(size=prog.n_params)
    batch = testing.random_batch(prog, 7, seed=2)
    # f_b's gradient is the mean gradient of a one-case batch
    per_case = [prog.grad(theta, {k: v[b : b + 1] for k, v in batch.items()})[1] for b in range(7)]
    want = np.sum(np.square(per_case), axis=0)
    assert testing.rel_error(prog.sum_sq_grad(theta, batch), want) < 1e-12
    loss, g, sq = prog.grad_and_sum_sq_grad(theta, batch)
    loss_ref, g_ref = prog.grad(theta, batch)
    assert abs(loss - loss_ref) <= 1e-14 * abs(loss_ref)
    assert testing.rel_error(g, g_ref) < 1e-12
    assert testing.rel_error(sq, want) < 1e-12
    errs = testing.compare_to_reference(prog, theta, batch)  # the IR graph, interpreted
    assert set(errs) == {"grad", "sum_sq_grad"} and max(errs.values()) < 1e-12, errs


def test_not_built_is_a_clear_error(compiled):
    _, p = compiled("tied")  # the session's loss+grad build
    with pytest.raises(errors.BuildError, match="sum_sq_grad"):
        p.sum_sq_grad(p.init(0), testing.random_batch(p, 3))
