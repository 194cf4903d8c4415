"""Compiled CPU programs against the reference interpreter, central differences and the
parameter-layout helpers."""

import numpy as np
import pytest

import symcurv as sc
from symcurv import testing

MODEL_NAMES = ["mlp", "branching", "tied", "all_ops", "shadowing"]


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_programs_match_reference(compiled, name):
    _, prog = compiled(name)
    theta = prog.init(3)
    batch = testing.random_batch(prog, 7, seed=1)
    errs = testing.compare_to_reference(prog, theta, batch)
    assert set(errs) == {"loss", "grad"}
    for program, e in errs.items():
        assert e < 1e-12, (name, program, e)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_grad_matches_central_differences(compiled, name):
    _, prog = compiled(name)
    theta = prog.init(5)
    batch = testing.random_batch(prog, 5, seed=2)
    assert testing.check_grad(prog, theta, batch) < 1e-6


def test_loss_is_the_mean_of_per_case_losses(compiled):
    _, prog = compiled("mlp")
    theta = prog.init(0)
    batch = testing.random_batch(prog, 6)
    per_case = [prog.loss(theta, {k: v[i : i + 1] for k, v in batch.items()}) for i in range(6)]
    assert prog.loss(theta, batch) == pytest.approx(np.mean(per_case), rel=1e-13)


def test_buffers_are_reused_and_batch_sizes_do_not_interfere(compiled):
    _, prog = compiled("branching")
    theta = prog.init(0)
    b5, b9 = testing.random_batch(prog, 5, 1), testing.random_batch(prog, 9, 2)
    l5, g5 = prog.grad(theta, b5)
    l9, g9 = prog.grad(theta, b9)
    l5b, g5b = prog.grad(theta, b5)
    assert l5 == l5b and np.array_equal(g5, g5b)
    assert ("grad", 5) in prog._buffers and ("grad", 9) in prog._buffers
    bufs = prog._buffers[("grad", 5)]
    prog.grad(theta, b5)
    assert all(a is b for a, b in zip(bufs, prog._buffers[("grad", 5)]))
    assert l9 != l5


def test_results_are_fresh_arrays(compiled):
    _, prog = compiled("mlp")
    theta = prog.init(0)
    batch = testing.random_batch(prog, 4)
    _, g1 = prog.grad(theta, batch)
    g1_copy = g1.copy()
    prog.grad(theta + 0.1, batch)
    assert np.array_equal(g1, g1_copy)


def test_flatten_unflatten_init(compiled):
    _, prog = compiled("mlp")
    theta = prog.init(seed=4)
    assert theta.shape == (prog.n_params,) and theta.dtype == np.float64
    views = prog.unflatten(theta)
    assert list(views) == ["W0", "b0", "W1", "b1"]
    assert views["W0"].shape == (4, 6) and views["b1"].shape == (3,)
    assert np.all(views["b0"] == 0.1)  # constant init
    assert np.std(views["W0"]) == pytest.approx(0.5, rel=0.5)
    assert np.array_equal(prog.flatten(views), theta)
    views["W0"][0, 0] = 123.0  # views, not copies
    assert theta[0] == 123.0
    assert np.array_equal(prog.init(seed=4), prog.init(seed=4))
    assert not np.array_equal(prog.init(seed=4), prog.init(seed=5))


def test_sparse_init_has_k_nonzeros_per_unit(tmp_path):
    import symcurv as sc

    m = sc.Model("sparse_init")
    x = m.input("x", 40)
    W = m.param("W", (5, 40), init=sc.init.sparse(15))
    m.minimize(sc.sum(sc.square(W @ x)))
    from symcurv.pipeline import build
    from symcurv.runtime import build as runtime_build

    root = build(m, ("loss",), build_dir=tmp_path / "b", progress=False)
    man = runtime_build.read_manifest(root)
    from symcurv.runtime import initializers

    rng = np.random.default_rng(0)
    w = initializers.sample(man["params"][0]["init"], (5, 40), rng)
    assert ((w != 0).sum(axis=1) == 15).all()


def test_log_cosh_loss_is_finite_at_large_residuals(tmp_path):
    """The docs' own custom loss, log cosh, at residuals ~800 where cosh overflows: loss and
    gradient equal the analytic values (they raised NonFiniteError: sinh/cosh = inf/inf)."""
    m = sc.Model("logcosh")
    x = m.input("x", 3)
    t = m.target("t", 2)
    W = m.param("W", (2, 3), init=sc.init.normal(1.0))
    m.minimize(sc.losses.custom("lc_big", "log(cosh(y - t))", W @ x, t))
    prog = sc.compile(m, programs=("loss", "grad"), build_dir=tmp_path / "b", progress=False)
    rng = np.random.default_rng(0)
    theta = prog.init(1)
    batch = {"x": rng.normal(size=(4, 3)), "t": rng.normal(size=(4, 2))}
    batch["t"][:, 0] += 800.0
    batch["t"][:2, 1] -= 790.0
    r = batch["x"] @ prog.unflatten(theta)["W"].T - batch["t"]
    want_loss = np.mean(np.sum(np.logaddexp(r, -r) - np.log(2.0), axis=1))
    want_grad = (np.tanh(r).T @ batch["x"]).ravel() / len(r)
    assert prog.loss(theta, batch) == pytest.approx(want_loss, rel=1e-13)
    loss, g = prog.grad(theta, batch)
    assert loss == pytest.approx(want_loss, rel=1e-13)
    assert np.allclose(g, want_grad, rtol=1e-12, atol=1e-14)
