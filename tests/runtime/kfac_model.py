"""The tiny model and inputs shared by test_kfac_cuda.py and its simulator script."""

from __future__ import annotations

import numpy as np

import symcurv as sc

B = 5  # not a multiple of the simulator's GEMM tiles
# every G kind; the sampled ones with a seed (counter-based noise: the same draw on both)
KINDS = (("exact", None), ("curvature_prop", 3), ("empirical", None), ("fisher_mc", 4))


def net() -> sc.Model:
    """x(3) → tanh(W1 x + b1)(4) → s ⊙ (W2 h)(3), no bias on the last layer, softmax
    cross-entropy: a layer with and one without a bias, and a parameter outside any layer
    (its diagonal estimate)."""
    m = sc.Model("kfac_cuda")
    x, t = m.input("x", 3), m.target("t", 3)
    W1, b1 = m.param("W1", (4, 3), init=sc.init.normal(0.8)), m.param("b1", 4)
    W2 = m.param("W2", (3, 4), init=sc.init.normal(0.8))
    s = m.param("s", 3, init=sc.init.constant(1.0))
    m.minimize(sc.losses.softmax_cross_entropy(s * (W2 @ sc.tanh(W1 @ x + b1)), t))
    return m


def inputs(prog):
    rng = np.random.default_rng(0)
    theta = prog.init(1) + 0.3 * rng.normal(size=prog.n_params)
    batch = {"x": rng.normal(size=(B, 3)), "t": rng.dirichlet(np.ones(3), size=B)}
    return theta, batch


def arrays(f) -> dict[str, np.ndarray]:
    """A KFACFactors as plain arrays by name."""
    out = {}
    for name, L in f.layers.items():
        out[f"A:{name}"], out[f"G:{name}"] = np.asarray(L.A), np.asarray(L.G)
    for name, d in f.diagonal.items():
        out[f"diag:{name}"] = np.asarray(d)
    return out
