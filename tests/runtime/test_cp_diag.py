"""The compiled CP programs: unbiasedness by a statistical test with fixed seeds, the
State cache, the variance ordering of the paper (§8.1) and the errors users see."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

import symcurv as sc
from symcurv import errors, testing

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "transforms"))
from test_grad import tied_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tied(tmp_path_factory):
    prog = sc.compile(
        tied_model(n_in=4, n_hid=3),
        programs=["cp_diag", "becker_lecun_diag", "gnvp"],
        build_dir=tmp_path_factory.mktemp("cp") / "tied",
        progress=False,
    )
    rng = np.random.default_rng(3)
    theta = prog.init(0) + 0.5 * rng.normal(size=prog.n_params)
    batch = testing.random_batch(prog, 6, seed=1)
    return prog, theta, batch


def test_compiled_cp_programs_match_the_reference(tied):
    prog, theta, batch = tied
    errs = testing.compare_to_reference(prog, theta, batch)
    assert set(errs) >= {"cp_S", "cp_TU", "cp_GN", "hvp", "becker_lecun"}
    assert max(errs.values()) < 1e-12, errs


@pytest.mark.parametrize("noise", ["rademacher", "gaussian"])
@pytest.mark.parametrize("estimator", ["S", "TU", "GN", "HI"])
def test_estimates_are_unbiased(tied, estimator, noise):
    """The mean of n independent estimates is within z* standard errors of the exact
    diagonal (diag(G) for GN) in every coordinate; z* is the two-sided Bonferroni bound at
    family-wise level 1e-3 over all coordinates of all 8 estimator × noise cases."""
    prog, theta, batch = tied
    st = prog.linearize(theta, batch)
    exact = (
        np.diag(prog.gauss_newton(theta, batch))
        if estimator == "GN"
        else prog.diag_hessian(theta, batch)
    )
    n = 400
    draws = np.array([st.cp_diag(estimator, noise, 1, seed=1000 + k) for k in range(n)])
    se = draws.std(axis=0, ddof=1) / np.sqrt(n)
    z_star = stats.norm.ppf(1 - 1e-3 / (2 * 8 * prog.n_params))
    # coordinates whose draws do not vary beyond rounding (Rademacher z² = 1 makes a lone
    # diagonal term deterministic) must then be exact
    exact_zero = se <= 1e-12 * np.abs(exact).max()
    tiny = 1e-12 * np.abs(exact).max()
    assert np.allclose(draws.mean(0)[exact_zero], exact[exact_zero], rtol=1e-10, atol=tiny)
    z = np.abs(draws.mean(0) - exact)[~exact_zero] / se[~exact_zero]
    assert z.max() < z_star, (estimator, noise, z.max(), z_star)
    # and the estimates are not trivially exact: there is noise to average
    assert se.max() > 0


def test_samples_average_draws(tied):
    prog, theta, batch = tied
    st = prog.linearize(theta, batch)
    one = [st.cp_diag("S", samples=1, seed=s) for s in range(3)]
    assert not np.allclose(one[0], one[1])
    assert np.allclose(st.cp_diag("S", samples=1, seed=5), st.cp_diag("S", samples=1, seed=5))


def test_state_runs_the_forward_pass_once(tied, monkeypatch):
    prog, theta, batch = tied
    calls = {"static": 0, "dynamic": 0}
    for part, key in (("cp_S.static", "static"), ("cp_S", "dynamic")):
        mod = prog._modules[part]
        orig = mod.run

        def counted(*a, _orig=orig, _key=key):
            calls[_key] += 1
            return _orig(*a)

        monkeypatch.setattr(mod, "run", counted)
    st = prog.linearize(theta, batch)
    st.cp_diag("S", samples=5, seed=0)
    st.cp_diag("S", samples=3, seed=1)
    assert calls == {"static": 1, "dynamic": 8}
    # the cached products equal the one-shot programs
    v = np.random.default_rng(0).normal(size=prog.n_params)
    assert np.allclose(st.hvp(v), prog.hvp(theta, batch, v), rtol=1e-13)
    assert np.allclose(st.becker_lecun_diag(), prog.becker_lecun_diag(theta, batch))
    assert np.allclose(st.cp_diag("S", seed=3), prog.cp_diag(theta, batch, "S", seed=3))


def test_bad_arguments_are_clear_errors(tied):
    prog, theta, batch = tied
    st = prog.linearize(theta, batch)
    with pytest.raises(errors.ModelError, match="unknown cp_diag estimator"):
        st.cp_diag("XS")
    with pytest.raises(errors.ModelError, match="unknown noise"):
        st.cp_diag("S", noise="uniform")
    with pytest.raises(errors.ModelError, match="positive integer"):
        st.cp_diag("S", samples=0)
    bad = dict(batch)
    bad["x"] = bad["x"].copy()
    bad["x"][0, 0] = np.nan
    with pytest.raises(errors.NonFiniteError, match="not finite"):
        prog.linearize(theta, bad)
    with pytest.raises(errors.BuildError, match="not built"):
        st.grad()


def test_state_answers_for_the_batch_it_was_given(tied):
    """A data loader refills one buffer in place; a State linearized on its first content
    must keep answering for that content (issue 16: it silently mixed both batches)."""
    prog, theta, batch = tied
    buf = {k: np.array(a, dtype=prog.dtype) for k, a in batch.items()}  # contiguous, float64
    other = testing.random_batch(prog, len(batch["x"]), seed=7)
    v = np.random.default_rng(1).normal(size=prog.n_params)
    st = prog.linearize(theta, buf)
    first = st.hvp(v)
    for k in buf:
        buf[k][:] = other[k]  # the loader's next batch, in the same memory
    assert np.allclose(st.hvp(v), first, rtol=1e-13)
    assert np.allclose(st.gnvp(v), prog.gnvp(theta, batch, v), rtol=1e-12)
    assert np.allclose(st.cp_diag("S", seed=2), prog.cp_diag(theta, batch, "S", seed=2))
    assert np.allclose(st.becker_lecun_diag(), prog.becker_lecun_diag(theta, batch), rtol=1e-13)


@pytest.mark.parametrize("seed", [-3, -1, np.int64(-2)])
def test_negative_seeds_are_refused(tied, seed):
    prog, theta, batch = tied
    with pytest.raises(errors.ModelError, match="non-negative integer"):
        prog.cp_diag(theta, batch, "S", seed=seed)
    with pytest.raises(errors.ModelError, match="non-negative integer"):
        prog.linearize(theta, batch).cp_diag("TU", seed=[1, seed])
    with pytest.raises(errors.ModelError, match="non-negative integer"):
        prog.init(seed)


def test_gn_estimator_of_a_model_without_a_loss_is_a_loss_error(tmp_path):
    m = sc.Model("noloss")
    x = m.input("x", 3)
    W = m.param("W", (2, 3))
    m.minimize(sc.sum(sc.tanh(W @ x)))
    prog = sc.compile(m, programs="all", build_dir=tmp_path / "b", progress=False)
    assert "cp_GN" not in prog.programs and "gnvp" not in prog.programs
    batch = testing.random_batch(prog, 3)
    with pytest.raises(errors.LossError, match="Gauss-Newton"):
        prog.cp_diag(prog.init(0), batch, "GN")


def test_s_has_lower_error_than_hutchinson_on_the_cp_paper_net(tmp_path):
    """CP paper §8.1: on the 256-20-20-20-10 tanh net, S with Rademacher noise beats the
    simple H/I estimator (here: one θ-space probe per draw through hvp)."""
    sys.path.insert(0, str(ROOT / "examples"))
    import cp_net

    prog = sc.compile(
        cp_net.model(), programs=["cp_S", "hvp"], build_dir=tmp_path / "net", progress=False
    )
    rng = np.random.default_rng(0)
    theta = rng.normal(0.0, 0.1, size=prog.n_params)
    batch = testing.random_batch(prog, 100, seed=2)
    d = prog.diag_hessian(theta, batch, max_params=prog.n_params)
    st = prog.linearize(theta, batch)

    def err(est):
        return np.linalg.norm(st.cp_diag(est, samples=3, seed=0) - d) / np.linalg.norm(d)

    e_s, e_hi = err("S"), err("HI")
    assert e_s < e_hi, (e_s, e_hi)


def test_draw_shows_the_noise_injections(tied, tmp_path):
    prog, _, _ = tied
    text = Path(prog.draw("cp_S", str(tmp_path / "cp.dot"))).read_text()
    assert "CP noise injection" in text and text.count("noise ·") >= 2
    hvp = Path(prog.draw("hvp", str(tmp_path / "hvp.dot"))).read_text()
    assert "direction v" in hvp


def test_draw_names_that_stand_for_several_graphs(tied, tmp_path):
    """Issue 16: prog.draw takes the names symcurv graph takes: cp_diag draws each
    estimator's program (and hvp, which HI runs through), 'all' every stored graph; each
    beside the path given, named after its program."""
    prog, _, _ = tied
    got = prog.draw("cp_diag", str(tmp_path / "cp.dot"))
    want = [tmp_path / f"cp_{n}.dot" for n in ("cp_S", "cp_TU", "cp_GN", "hvp")]
    assert [Path(p) for p in got] == want
    assert all(p.read_text().startswith("digraph") for p in want)
    every = prog.draw("all", str(tmp_path / "all.dot"))
    assert sorted(Path(p).name for p in every) == sorted(
        f"all_{n}.dot" for n in ("forward", *prog.programs)
    )
    assert Path(prog.draw("becker_lecun_diag", str(tmp_path / "bl.dot"))).name == "bl.dot"
    with pytest.raises(errors.BuildError, match="symcurv graph MODEL --program linearize"):
        prog.draw("linearize", str(tmp_path / "x.dot"))


def test_cp_diag_seeds(tied):
    """Counter-based noise (runtime/noise.py): a seed fixes the estimate, None is fresh."""
    prog, theta, batch = tied
    st = prog.linearize(theta, batch)
    a = st.cp_diag("S", seed=7)
    assert np.array_equal(a, st.cp_diag("S", seed=7))
    assert not np.array_equal(a, st.cp_diag("S", seed=8))
    assert not np.array_equal(st.cp_diag("S"), st.cp_diag("S"))  # seed=None: fresh each call
    assert np.array_equal(st.cp_diag("S", seed=[1, 2]), st.cp_diag("S", seed=(1, 2)))
    for bad in ("7", 1.5, [1, -1]):
        with pytest.raises(errors.ModelError, match="pass a non-negative integer"):
            st.cp_diag("S", seed=bad)
