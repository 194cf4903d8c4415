"""Compiled curvature programs (``Program.hvp``, ``gnvp``, ``hessian``, ``gauss_newton``,
``diag_hessian``) against the reference interpreter, central differences of the compiled
gradient and the symbolic oracle, and their input checking.

Two tiny models of tests/models.py are compiled ONCE per module with programs hvp and gnvp
(Numba compile time dominates): ``tied`` (W and W.T, sigmoid cross-entropy) and
``branching`` (one activation feeding two nodes, a custom two-argument op, squared error).
Central differences take the gradient from the session's ``compiled`` loss/grad build of the
same models (tests/conftest.py), shared with tests/runtime/test_program.py.
"""

from __future__ import annotations

import types

import models
import numpy as np
import pytest
from oracle import oracle_gauss_newton, oracle_hessian

import symcurv as sc
from symcurv import errors, testing

MODEL_NAMES = ["tied", "branching"]


@pytest.fixture(scope="module")
def curvature(tmp_path_factory):
    """``curvature(name) -> (model, Program)`` with programs hvp and gnvp, float64."""
    root = tmp_path_factory.mktemp("curvature")
    cache = {}

    def get(name):
        if name not in cache:
            m = models.MODELS[name]()
            prog = sc.compile(m, programs=("hvp", "gnvp"), build_dir=root / name, progress=False)
            cache[name] = (m, prog)
        return cache[name]

    return get


def setup(curvature, name, B=6, seed=0):
    m, prog = curvature(name)
    theta = prog.init(seed + 3)
    batch = testing.random_batch(prog, B, seed=seed + 1)
    v = np.random.default_rng(seed + 2).normal(size=prog.n_params)
    return m, prog, theta, batch, v


def rel(a, b) -> float:
    return testing.rel_error(a, b)


# ---- the products --------------------------------------------------------------------------
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_products_match_reference(curvature, name):
    _, prog, theta, batch, v = setup(curvature, name)
    for direction in (v, None):  # ours, and compare_to_reference's own
        errs = testing.compare_to_reference(prog, theta, batch, ("hvp", "gnvp"), v=direction)
        assert set(errs) == {"hvp", "gnvp"}
        for program, e in errs.items():
            assert e < 1e-12, (name, program, e)
    want = testing.reference_outputs(prog, "hvp", theta, batch, v)["hvp"]
    assert np.abs(want).max() > 1e-3 and rel(prog.hvp(theta, batch, v), want) < 1e-12
    want = testing.reference_outputs(prog, "gnvp", theta, batch, v)["gnvp"]
    assert np.abs(want).max() > 1e-3 and rel(prog.gnvp(theta, batch, v), want) < 1e-12


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_hvp_matches_central_differences_of_grad(curvature, compiled, name):
    _, prog, theta, batch, _ = setup(curvature, name)
    _, with_grad = compiled(name)  # the same model built with loss and grad
    assert with_grad.params == prog.params
    both = types.SimpleNamespace(n_params=prog.n_params, hvp=prog.hvp, grad=with_grad.grad)
    assert testing.check_hvp(both, theta, batch) < 1e-7
    # and the check can fail: a wrong product is far off
    wrong = types.SimpleNamespace(
        n_params=prog.n_params, hvp=lambda *a: 1.01 * prog.hvp(*a), grad=with_grad.grad
    )
    assert testing.check_hvp(wrong, theta, batch) > 1e-3


def test_products_are_batch_means(curvature):
    """The objective is the batch mean: H v and G v of a batch are the means of the
    single-case products (buffers of several batch sizes do not interfere)."""
    _, prog, theta, batch, v = setup(curvature, "branching", B=4)
    for product in (prog.hvp, prog.gnvp):
        full = product(theta, batch, v)
        cases = [product(theta, {k: a[i : i + 1] for k, a in batch.items()}, v) for i in range(4)]
        assert rel(full, np.mean(cases, axis=0)) < 1e-12
        assert np.array_equal(product(theta, batch, v), full)


def test_results_are_fresh_arrays_and_inputs_untouched(curvature):
    _, prog, theta, batch, v = setup(curvature, "tied")
    v0, theta0 = v.copy(), theta.copy()
    h1 = prog.hvp(theta, batch, v)
    g1 = prog.gnvp(theta, batch, v, damping=0.5)
    h1c, g1c = h1.copy(), g1.copy()
    prog.hvp(theta, batch, 2 * v)
    prog.gnvp(theta, batch, 2 * v, damping=0.5)
    assert np.array_equal(h1, h1c) and np.array_equal(g1, g1c)
    assert np.array_equal(v, v0) and np.array_equal(theta, theta0)


# ---- dense matrices ------------------------------------------------------------------------
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_dense_hessian(curvature, name):
    _, prog, theta, batch, v = setup(curvature, name)
    H = prog.hessian(theta, batch)
    n = prog.n_params
    assert H.shape == (n, n) and H.dtype == np.float64
    scale = np.abs(H).max()
    assert np.abs(H - H.T).max() <= 1e-12 * scale
    assert rel(H @ v, prog.hvp(theta, batch, v)) < 1e-12
    d = prog.diag_hessian(theta, batch)
    assert d.shape == (n,) and np.array_equal(d, np.diag(H))
    assert np.linalg.eigvalsh(H).min() < -1e-6 * scale  # indefinite here: unlike G below


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_dense_gauss_newton(curvature, name):
    _, prog, theta, batch, v = setup(curvature, name)
    G = prog.gauss_newton(theta, batch)
    n = prog.n_params
    assert G.shape == (n, n) and G.dtype == np.float64
    scale = np.abs(G).max()
    assert np.abs(G - G.T).max() <= 1e-12 * scale
    assert np.linalg.eigvalsh(G).min() >= -1e-10 * scale
    assert rel(G @ v, prog.gnvp(theta, batch, v)) < 1e-12
    for damping in (0.0, 0.3, 2):
        got = prog.gnvp(theta, batch, v, damping=damping)
        assert rel(got, G @ v + damping * v) < 1e-12, damping
    assert rel(G, prog.hessian(theta, batch)) > 1e-3  # G is not H for these networks


def test_dense_matrices_match_the_symbolic_oracle(curvature):
    """The compiled (optimised, generated, Numba-run) H and G against sympy on the whole
    per-case loss of the tied autoencoder."""
    m, prog, theta, batch, _ = setup(curvature, "tied", B=4)
    f = m.forward_graph()
    assert [p.name for p in f.leaves("param")] == list(prog.params)  # same flat layout
    leaves = {**batch, **prog.unflatten(theta)}
    assert rel(prog.hessian(theta, batch), oracle_hessian(f, leaves)) < 1e-10
    assert rel(prog.gauss_newton(theta, batch), oracle_gauss_newton(f, leaves)) < 1e-10


@pytest.mark.parametrize("method", ["hessian", "gauss_newton", "diag_hessian"])
def test_max_params_guards_dense_matrices(curvature, method):
    _, prog, theta, batch, _ = setup(curvature, "tied")
    n = prog.n_params
    with pytest.raises(errors.ModelError, match="max_params") as info:
        getattr(prog, method)(theta, batch, max_params=n - 1)
    assert isinstance(info.value, errors.SymcurvError)
    assert f"{n} × {n}" in str(info.value) and f"max_params={n}" in str(info.value)
    assert getattr(prog, method)(theta, batch, max_params=n).shape[0] == n


# ---- bad input ------------------------------------------------------------------------------
def bad_directions(n: int) -> dict[str, tuple[object, type, str]]:
    """{case: (v, error class, message fragment)}."""
    nan, inf = np.ones(n), np.ones(n)
    nan[3], inf[n - 1] = np.nan, -np.inf
    return {
        "short": (np.ones(n - 1), errors.BatchError, rf"v has shape \({n - 1},\)"),
        "long": (np.ones(n + 1), errors.BatchError, rf"v has shape \({n + 1},\)"),
        "column": (np.ones((n, 1)), errors.BatchError, rf"v has shape \({n}, 1\)"),
        "missing": (None, errors.BatchError, r"v has shape \(\)"),
        "nan": (nan, errors.NonFiniteError, r"v\[3\] is not finite"),
        "inf": (inf, errors.NonFiniteError, rf"v\[{n - 1}\] is not finite"),
        "complex": (np.ones(n) * 1j, errors.BatchError, "v has dtype complex128"),
        "strings": (np.array(["1.0"] * n), errors.BatchError, "v has dtype <U3"),
        "objects": (np.array([1.0] * n, dtype=object), errors.BatchError, "v has dtype object"),
        "bools": (np.ones(n, dtype=bool), errors.BatchError, "v has dtype bool"),
    }


@pytest.mark.parametrize("product", ["hvp", "gnvp"])
def test_bad_direction_is_refused(curvature, product):
    _, prog, theta, batch, _ = setup(curvature, "tied")
    for case, (v, cls, match) in bad_directions(prog.n_params).items():
        with pytest.raises(cls, match=match) as info:
            getattr(prog, product)(theta, batch, v)
        assert isinstance(info.value, errors.SymcurvError), case
        assert "model 'tied'" in str(info.value) and "fix:" in str(info.value), case


@pytest.mark.parametrize("product", ["hvp", "gnvp"])
def test_other_real_dtypes_are_converted(curvature, product):
    _, prog, theta, batch, _ = setup(curvature, "tied")
    v = np.arange(prog.n_params) % 5 - 2
    f = getattr(prog, product)
    want = f(theta, batch, v.astype(np.float64))
    assert np.array_equal(f(theta, batch, v.astype(np.int32)), want)
    assert np.array_equal(f(theta, batch, list(v)), want)
    assert rel(f(theta, batch, v.astype(np.float32)), want) < 1e-15


@pytest.mark.parametrize("damping", [-1e-3, -1, float("nan"), float("inf")])
def test_bad_damping_is_refused(curvature, damping):
    _, prog, theta, batch, v = setup(curvature, "tied")
    with pytest.raises(errors.BatchError, match="damping") as info:
        prog.gnvp(theta, batch, v, damping=damping)
    assert "λ ≥ 0" in str(info.value)


def test_bad_theta_and_batch_are_refused(curvature):
    _, prog, theta, batch, v = setup(curvature, "tied")
    bad = theta.copy()
    bad[0] = np.nan
    for method in (prog.hvp, prog.gnvp):
        with pytest.raises(errors.NonFiniteError, match=r"theta\[0\]"):
            method(bad, batch, v)
        with pytest.raises(errors.BatchError, match="no key 'x'"):
            method(theta, {}, v)
    for method in (prog.hessian, prog.gauss_newton):
        with pytest.raises(errors.NonFiniteError, match=r"theta\[0\]"):
            method(bad, batch)
        with pytest.raises(errors.BatchError, match=r"shape \(6,\), expected \(B, 6\)"):
            method(theta, {"x": batch["x"][0]})
