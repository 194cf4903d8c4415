"""A few random models compiled on the CPU: every built program equal to the reference
interpreter running the build's own stored graph (``symcurv.testing``), the public calls
(loss, the dense H and its diagonal, a linearized State's products) equal to the reference
interpreter's, then the build loaded again (``sc.load``) and every program drawn from it.

Numba compiles each program for 5-30 s, so this test draws a fraction of the profile's
examples (``conftest.compiled_examples``) and builds each model once for all its checks.
Compiled float64 code and numpy differ only in the order of sums (BLAS): 1e-10 relative.
"""

from __future__ import annotations

import hashlib

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import symcurv as sc
from symcurv import testing
from symcurv.transforms import rop

from . import strategies
from .checks import dense, objective, rel_err, unflat
from .profiles import compiled_examples
from .test_reference import SEEDS, case

TOL = 1e-10


@settings(max_examples=compiled_examples())
@given(spec=strategies.model_specs(min_steps=3, max_steps=6), seed=SEEDS, B=st.integers(1, 5))
def test_compiled_programs_equal_the_reference(spec, seed, B, tmp_path_factory):
    f, vals, theta = case(spec, seed, B)
    programs = ["loss", "grad", "hvp", "cp_S", *(["gnvp"] if spec.gauss_newton else [])]
    key = hashlib.sha1(spec.source().encode()).hexdigest()[:12]
    root = tmp_path_factory.mktemp(f"fuzz_{key}")
    prog = sc.compile(spec.model(), programs=programs, build_dir=root / "build", progress=False)
    batch = {n: vals[n] for n in prog.inputs}
    th = prog.flatten(unflat(f, theta))
    np.testing.assert_array_equal(th, theta)  # θ is the parameters in declaration order
    errs = testing.compare_to_reference(prog, th, batch)
    assert set(errs) == set(programs) and max(errs.values()) < TOL, errs
    assert abs(prog.loss(th, batch) - objective(f, vals, theta)) <= TOL * max(
        1.0, abs(objective(f, vals, theta))
    )

    # the public products: the dense H (and its diagonal) against the reference's hvp
    # columns, a linearized State (the cached forward pass) against the direct calls
    H = prog.hessian(th, batch)
    assert rel_err(H, dense(rop.hvp_graph(f), f, vals, "hvp", theta)) < TOL
    np.testing.assert_array_equal(prog.diag_hessian(th, batch), np.diag(H))
    v = np.random.default_rng(seed).normal(size=prog.n_params)
    state = prog.linearize(th, batch)
    assert rel_err(state.hvp(v), prog.hvp(th, batch, v)) < TOL
    if spec.gauss_newton:
        assert rel_err(state.gnvp(v, 0.5), prog.gnvp(th, batch, v, damping=0.5)) < TOL

    # the build again, as a later process loads it: the same kernels, the same numbers
    again = sc.load(root / "build")
    assert again.loss(th, batch) == prog.loss(th, batch)
    np.testing.assert_array_equal(again.grad(th, batch)[1], prog.grad(th, batch)[1])
    np.testing.assert_array_equal(again.hvp(th, batch, v), prog.hvp(th, batch, v))
    for name in ["forward", *again.programs]:
        out = again.draw(name, str(root / f"{name}.dot"))
        text = open(out).read()
        assert text.startswith("digraph") and "x0" in text, name
