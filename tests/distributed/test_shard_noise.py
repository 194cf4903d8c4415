"""K-FAC's factors and a noisy model's own noise over shards (sc.distributed).

Oracle: the one-process Program on the same cases and seed. K-FAC's factors are means over
cases, combined from the shards weighted by their case counts, and their noise (the
Rademacher ε of "curvature_prop", the sampled targets of "fisher_mc") is drawn for the
cases' numbers in the batch: every kind equals one process to 1e-10, and ``fit(dp,
KFAC(dp))`` follows the one-process run. A score-matching model with diag="TU" draws its
own CP noise on every call; with the same seed the shards draw the one-process noise, for
loss, grad, a State and Adam through ``fit``. Each check can
fail: shards numbering their cases from 0 would draw other noise (asserted).
"""

from __future__ import annotations

import numpy as np
import pytest

import symcurv as sc
from symcurv import errors
from symcurv.runtime.kfac import CURVATURES

pytest.importorskip("distributed")

RTOL = 1e-10


def close(a, b, rtol=RTOL):
    a, b = np.asarray(a), np.asarray(b)
    scale = max(float(np.abs(b).max()), 1e-300)
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * scale)


def same_factors(a, b) -> None:
    assert a.curvature == b.curvature and a.batch_size == b.batch_size
    assert a.layers.keys() == b.layers.keys() and a.diagonal.keys() == b.diagonal.keys()
    for k, L in b.layers.items():
        close(a.layers[k].A, L.A)
        close(a.layers[k].G, L.G)
        close(a.layers[k].h_mean, L.h_mean)
        assert (a.layers[k].max_sq_grad is None) == (L.max_sq_grad is None)
        if L.max_sq_grad is not None:
            close(a.layers[k].max_sq_grad, L.max_sq_grad)
    for p, d in b.diagonal.items():
        close(a.diagonal[p], d)


def shard_batches(dp, data):
    return [{k: x[a:b] for k, x in data.items()} for a, b in zip(dp.firsts[:-1], dp.firsts[1:])]


def test_kfac_factors_equal_one_process(prog, dp, data, subset):
    theta = prog.init(0)
    for cases, batch in ((None, data), subset):
        for curvature in CURVATURES:
            want = prog.kfac_factors(theta, batch, curvature, seed=[3, 1])
            same_factors(dp.kfac_factors(theta, cases, curvature, seed=[3, 1]), want)
    # the check can fail: shards drawing their noise from case 0 give other factors
    want = prog.kfac_factors(theta, data, seed=3)
    local = sum(
        len(b["x"]) / len(data["x"]) * prog.kfac_factors(theta, b, seed=3).layers["W0"].G
        for b in shard_batches(dp, data)
    )
    assert not np.allclose(local, want.layers["W0"].G, rtol=1e-6)


def test_fit_kfac_follows_the_one_process_trajectory(prog, dp, data):
    make = lambda p: sc.optim.KFAC(p, inverse_every=2, adapt_every=2)  # noqa: E731
    one = sc.optim.fit(prog, make(prog), data, 4, batch_size=20, progress=False)
    many = sc.optim.fit(dp, make(dp), iterations=4, batch_size=20, progress=False)
    close(many.column("objective"), one.column("objective"), rtol=1e-9)
    close(many.theta, one.theta, rtol=1e-8)


# -- a model that draws its own noise: CP score matching (sc.score_matching, diag="TU") ------
def energy_model():
    m = sc.Model("poe_shards")
    x = m.input("x", 2)
    W = m.param("W", (2, 2), init=sc.init.normal(0.6))
    beta = m.param("beta", 2, init=sc.init.normal(0.3))
    m.energy(sc.dot(sc.exp(beta), sc.log(1 + sc.square(W @ x))))
    return m


@pytest.fixture(scope="module")
def noisy(tmp_path_factory, client):
    model = sc.score_matching(energy_model(), reg=0.2, diag="TU")
    # not sum_sq_grad: its transform breaks an IR invariant on score-matching graphs
    # (an IRError "batch_broadcast needs an unbatched operand", outside sc.distributed)
    programs = ("loss", "grad")  # hvp would add ~15 s of compiling
    root = tmp_path_factory.mktemp("noisy")
    prog = sc.compile(model, programs, build_dir=root, progress=False)
    data = {"x": np.random.default_rng(0).normal(size=(37, 2))}
    with sc.distributed.DataParallel(prog, data, client=client, n_shards=3) as dp:
        yield prog, dp, data


def test_a_noisy_model_draws_the_one_process_noise(noisy, dp):
    prog, ndp, data = noisy
    theta = prog.init(1)
    idx = np.random.default_rng(3).permutation(37)[:15]
    for cases, batch in ((None, data), (idx, {"x": data["x"][idx]})):
        close(ndp.loss(theta, cases, seed=5), prog.loss(theta, batch, seed=5))
        for a, b in zip(ndp.grad(theta, cases, seed=5), prog.grad(theta, batch, seed=5)):
            close(a, b)
        close(ndp.grad(theta, cases, seed=[5, 2])[1], prog.grad(theta, batch, seed=[5, 2])[1])
        st, one = ndp.linearize(theta, cases, seed=5), prog.linearize(theta, batch, seed=5)
        close(st.loss(), one.loss())
        close(st.grad()[1], one.grad()[1])
    # the check can fail: another seed, or shards drawing from case 0, is other noise
    want = prog.grad(theta, data, seed=5)[1]
    assert not np.allclose(ndp.grad(theta, seed=6)[1], want, rtol=1e-6)
    local = sum(len(b["x"]) / 37 * prog.grad(theta, b, seed=5)[1] for b in shard_batches(ndp, data))
    assert not np.allclose(local, want, rtol=1e-6)
    # seed=None: one fresh draw shared by the shards (a finite loss), new on every call
    assert ndp.loss(theta) != ndp.loss(theta)
    # a noise-free model refuses a seed, as one process does
    with pytest.raises(errors.ModelError, match="draws no noise"):
        dp.grad(prog.init(0), seed=3)


def test_fit_on_a_noisy_model_follows_one_process(noisy):
    prog, ndp, data = noisy
    make = lambda p: sc.optim.Adam(p, learning_rate=0.05)  # noqa: E731
    kw = {"batch_size": 12, "seed": 4, "progress": False}
    one = sc.optim.fit(prog, make(prog), data, 2, **kw)
    many = sc.optim.fit(ndp, make(ndp), iterations=2, **kw)
    close(many.column("objective"), one.column("objective"), rtol=1e-9)
    close(many.theta, one.theta, rtol=1e-8)
