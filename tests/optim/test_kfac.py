"""K-FAC factors as compiled programs (``prog.kfac_factors``) and the optimizers built on
them (``sc.optim.KFAC``, ``ACP``, ``CenteredSGD``), on two small compiled models.

Oracles: the exact G of a layer with a bias equals the Gauss-Newton block of that bias
(``prog.gauss_newton``, dense from gnvp columns); A against numpy's forward pass; the
empirical kind against the reference interpreter running the same graph (whose maths
tests/transforms/test_kfac_factors.py checks against sympy); the sampled kinds by a z-test
over fixed seeds against the exact G.
"""

from __future__ import annotations

import numpy as np
import pytest

import symcurv as sc
from symcurv import errors

B = 40


def _net():
    """x(3) → tanh(W1 x + b1)(4) → W2 h + b2 (3) → softmax cross-entropy; and a θ-only
    free parameter (g, a scale on the output) outside any dense layer."""
    m = sc.Model("kfac_net")
    x, t = m.input("x", 3), m.target("t", 3)
    W1, b1 = m.param("W1", (4, 3), init=sc.init.normal(0.8)), m.param("b1", 4)
    W2, b2 = m.param("W2", (3, 4), init=sc.init.normal(0.8)), m.param("b2", 3)
    s = m.param("s", 3, init=sc.init.constant(1.0))
    m.minimize(sc.losses.softmax_cross_entropy(s * (W2 @ sc.tanh(W1 @ x + b1) + b2), t))
    return m


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    prog = sc.compile(
        _net(),
        programs=("loss", "grad", "gnvp", "kfac"),
        build_dir=tmp_path_factory.mktemp("kfac") / "net",
        progress=False,
    )
    rng = np.random.default_rng(0)
    theta = prog.init(1)
    t = rng.dirichlet(np.ones(3), size=B)
    batch = {"x": rng.normal(size=(B, 3)), "t": t}
    return prog, theta, batch


def _block(prog, M, name):
    p = prog.params[name]
    sl = slice(p["offset"], p["offset"] + p["size"])
    return M[sl, sl]


def test_layers_and_coverage(net):
    prog, theta, batch = net
    layers = prog.kfac_layers
    assert [(k, v.bias, v.n_in, v.n_out) for k, v in layers.items()] == [
        ("W1", "b1", 3, 4),
        ("W2", "b2", 4, 3),
    ]
    f = prog.kfac_factors(theta, batch, curvature="empirical")
    assert set(f.diagonal) == {"s"}  # the one parameter outside a dense layer
    assert f.layers["W1"].A.shape == (4, 4) and f.layers["W2"].G.shape == (3, 3)


def test_A_against_numpy_and_exact_G_against_the_gauss_newton_blocks(net):
    prog, theta, batch = net
    P = prog.unflatten(theta)
    f = prog.kfac_factors(theta, batch, curvature="exact")
    x = batch["x"]
    h = np.tanh(x @ P["W1"].T + P["b1"])
    for W, inp in (("W1", x), ("W2", h)):
        abar = np.hstack([inp, np.ones((B, 1))])
        assert np.allclose(f.layers[W].A, abar.T @ abar / B, rtol=1e-12, atol=1e-14)
    GN = prog.gauss_newton(theta, batch)
    # s scales the output, so b2's block is the G of W2's pre-activation (before s)
    for W, b in (("W1", "b1"), ("W2", "b2")):
        want = _block(prog, GN, b)
        assert np.max(np.abs(f.layers[W].G - want)) <= 1e-10 * np.max(np.abs(want)), W
    assert np.allclose(f.diagonal["s"], np.diag(_block(prog, GN, "s")), rtol=1e-10, atol=0)


def test_empirical_equals_the_reference_interpreter(net):
    from symcurv.runtime.reference import evaluate
    from symcurv.transforms.kfac import kfac_graph

    prog, theta, batch = net
    f = prog.kfac_factors(theta, batch, curvature="empirical")
    ref = evaluate(
        kfac_graph(_net().forward_graph(), "empirical"), {**prog.unflatten(theta), **batch}
    )
    for W, n in (("W1", 4), ("W2", 3)):
        want = np.asarray(ref[f"kfac_G:{W}"]).reshape(n, n)
        assert np.allclose(f.layers[W].G, want, rtol=1e-10, atol=1e-14)
    assert np.allclose(f.diagonal["s"], np.ravel(ref["kfac_diag:s"]), rtol=1e-10)


@pytest.mark.parametrize("curvature", ["curvature_prop", "fisher_mc"])
def test_sampled_kinds_are_unbiased(net, curvature):
    """z-test: over 300 fixed seeds the mean of each G entry (and the diagonal of s) is
    within 5 standard errors of the exact value; a biased kind (empirical) is not."""
    prog, theta, batch = net
    exact = prog.kfac_factors(theta, batch, curvature="exact")
    draws = [prog.kfac_factors(theta, batch, curvature=curvature, seed=k) for k in range(300)]

    def z(getter, ex):
        xs = np.stack([getter(d) for d in draws])
        se = xs.std(axis=0, ddof=1) / np.sqrt(len(xs)) + 1e-12 * np.max(np.abs(ex))
        return np.max(np.abs(xs.mean(axis=0) - ex) / se)

    for W in ("W1", "W2"):
        assert z(lambda d, W=W: d.layers[W].G, exact.layers[W].G) < 5.0, W
    assert z(lambda d: d.diagonal["s"], exact.diagonal["s"]) < 5.0
    # the test has teeth: the empirical Fisher (true targets, not one-hot) is biased here
    emp = prog.kfac_factors(theta, batch, curvature="empirical").layers["W2"].G
    assert np.max(np.abs(emp - exact.layers["W2"].G)) > 0.1 * np.max(np.abs(exact.layers["W2"].G))


def test_bad_curvature_and_seed_name_the_fix(net):
    prog, theta, batch = net
    with pytest.raises(errors.ModelError, match="choose one of exact"):
        prog.kfac_factors(theta, batch, curvature="kflr")
    with pytest.raises(errors.ModelError, match="seed"):
        prog.kfac_factors(theta, batch, seed="x")


def test_info_lists_the_blocks_and_draw_shows_them(net, tmp_path):
    import io

    from symcurv import cli

    prog = net[0]
    buf = io.StringIO()
    cli.info(prog.build_dir, out=buf)
    text = buf.getvalue()
    assert "K-FAC blocks" in text and "diagonal (outside dense layers): s" in text
    blocks = text.split("K-FAC blocks")[1].splitlines()
    assert [ln.split()[:2] for ln in blocks if ln.startswith(("W1 ", "W2 "))] == [
        ["W1", "b1"],
        ["W2", "b2"],
    ]
    files = prog.draw("kfac", str(tmp_path / "k.dot"))
    assert sorted(p.rsplit("_", 1)[-1] for p in files) == ["cp.dot", "empirical.dot"]
    assert "G_W2" in open(files[0]).read()
