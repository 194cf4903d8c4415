"""K-FAC factor graphs on random models. With ONE case the Kronecker factorisation is
exact: the Gauss-Newton block of a dense layer's W is (h hᵀ) ⊗ (Jᵀ H_L J) = A ⊗ G, so the
"curvature_prop" factors summed over every unit noise vector (their exact expectation,
the "exact" kind) must reproduce the gnvp columns' blocks, and every parameter outside a
dense layer must get the diagonal of its block.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given

from symcurv import errors
from symcurv.runtime.reference import evaluate
from symcurv.transforms import gauss_newton
from symcurv.transforms.kfac import dense_layers, kfac_graph

from . import strategies
from .checks import dense, noise_shapes, params, with_theta
from .test_reference import SEEDS, case


def _unit_noise_sum(g, leaves, B):
    shapes = noise_shapes(g, B)
    total: dict = {}
    for name, shape in shapes:
        for j in range(int(np.prod(shape))):
            v = dict(leaves)
            for other, s in shapes:
                v[other] = np.zeros(s)
            v[name].flat[j] = 1.0
            for key, val in evaluate(g, v).items():
                total[key] = total.get(key, 0.0) + np.asarray(val, dtype=float)
    return total


def _blocks(forward, M):
    out, k = {}, 0
    for p in params(forward):
        out[p.name] = M[k : k + p.size, k : k + p.size]
        k += p.size
    return out


@given(spec=strategies.model_specs(), seed=SEEDS)
def test_kfac_factors_are_exact_for_one_case(spec, seed):
    f, vals, theta = case(spec, seed, B=1)
    if not spec.gauss_newton:
        with pytest.raises(errors.LossError):
            kfac_graph(f, "curvature_prop")
        return
    GN = _blocks(f, dense(gauss_newton.gnvp_graph(f), f, vals, "gnvp", theta))
    leaves = with_theta(f, vals, theta)
    got = _unit_noise_sum(kfac_graph(f, "curvature_prop"), leaves, 1)
    scale = max(max(np.max(np.abs(b)) for b in GN.values()), 1e-3)
    covered = set()
    cp = kfac_graph(f, "curvature_prop")
    zero_noise = {**leaves, **{k: np.zeros(s) for k, s in noise_shapes(cp, 1)}}
    for name, L in dense_layers(f).items():
        G = got[f"kfac_G:{name}"].reshape(L.n_out, L.n_out)
        A = np.asarray(evaluate(cp, zero_noise)[f"kfac_hh:{name}"])
        A = A.reshape(L.n_in, L.n_in)
        assert np.max(np.abs(np.kron(G, A) - GN[name])) <= 1e-9 * scale, name
        if L.bias:
            assert np.max(np.abs(G - GN[L.bias])) <= 1e-9 * scale, L.bias
        covered |= {name, L.bias}
    for p in params(f):
        if p.name not in covered:
            d = np.ravel(got[f"kfac_diag:{p.name}"])
            assert np.max(np.abs(d - np.diag(GN[p.name]))) <= 1e-9 * scale, p.name
