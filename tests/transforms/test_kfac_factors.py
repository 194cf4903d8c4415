"""K-FAC factor statistics (``transforms.kfac``) at graph level, against the sympy oracle.

Oracles: a shared bias b of a layer a_b = W h_b + b moves every case's pre-activation
alike, so the exact Gauss-Newton block of b IS mean_b J_bᵀ H_L J_b = G ("exact"), and the
per-case gradients of b ARE the pre-activation gradients g_b (G "empirical" = mean_b g gᵀ).
A layer without a bias is checked against the same model with a zero bias added. The
"curvature_prop" G is a quadratic form in the noise, so its sum over the unit noise
vectors is its expectation exactly (test_curvprop's argument): that sum is "exact".
"""

from __future__ import annotations

import numpy as np
import oracle
import pytest
from test_curvprop import _values
from test_grad import branching_model, gate_model, reductions_model, rel_err, tied_model

import symcurv as sc
from symcurv.runtime.reference import evaluate
from symcurv.transforms.kfac import dense_layers, kfac_graph

B = 2
LOSSES = {
    "squared": sc.losses.squared_error,
    "softmax": sc.losses.softmax_cross_entropy,
    "sigmoid": sc.losses.sigmoid_cross_entropy,
}


def two_layer(loss="squared", bias2=True, branch=False):
    """x → tanh(W1 x + b1) → W2 h (+ b2) [+ W3 (h ⊙ h)] → loss."""
    m = sc.Model(f"two_{loss}_{bias2}_{branch}")
    x, t = m.input("x", 3), m.target("t", 2)
    W1, b1 = m.param("W1", (2, 3)), m.param("b1", 2)
    W2 = m.param("W2", (2, 2))
    h = sc.tanh(W1 @ x + b1)
    out = W2 @ h
    if branch:
        out = out + m.param("W3", (2, 2)) @ (h * h)
    if bias2:
        out = out + m.param("b2", 2)
    m.minimize(LOSSES[loss](out, t))
    return m


def empirical(fwd, vals):
    """The empirical sweep's outputs, its target leaves bound to the batch's targets."""
    g = kfac_graph(fwd, "empirical")
    bound = {n.name: vals[n.name[len("target_") :]] for n in g.nodes() if n.op == "noise"}
    return evaluate(g, {**vals, **bound})


def exact_sum(g, vals):
    """Σ over unit noise vectors of every output: the exact expectation."""
    leaves = [n for n in g.nodes() if n.op == "noise"]
    shapes = [((B,) if n.attr("batched") else ()) + n.shape for n in leaves]
    total: dict = {}
    for k, n in enumerate(leaves):
        for j in range(int(np.prod(shapes[k]))):
            v = dict(vals)
            for m_, s in zip(leaves, shapes):
                v[m_.name] = np.zeros(s)
            v[n.name].flat[j] = 1.0
            for key, val in evaluate(g, v).items():
                total[key] = total.get(key, 0.0) + np.asarray(val)
    return total


def block(fwd, vals, M, name):
    """The rows/columns of parameter ``name`` of a dense θ × θ matrix."""
    off = 0
    for p in fwd.leaves("param"):
        if p.name == name:
            return M[off : off + p.size, off : off + p.size]
        off += p.size
    raise KeyError(name)


def node_value(fwd, vals, nid):
    g = fwd.copy()
    g.outputs = {"v": nid}
    return np.asarray(evaluate(g, vals)["v"])


def test_dense_layers_are_found_by_their_semantics():
    assert {
        k: (v.bias, v.n_in, v.n_out) for k, v in dense_layers(two_layer().forward_graph()).items()
    } == {
        "W1": ("b1", 3, 2),
        "W2": ("b2", 2, 2),
    }
    got = dense_layers(gate_model().forward_graph())
    assert [(k, v.bias) for k, v in got.items()] == [("W1", "b1"), ("W2", "b2"), ("W3", None)]
    assert list(dense_layers(branching_model().forward_graph())) == ["W1", "W2", "W3"]
    assert dense_layers(tied_model().forward_graph()) == {}  # W and W.T: tied, no block


@pytest.mark.parametrize("bias", [True, False])
def test_A_is_the_mean_outer_product_of_the_augmented_input(bias):
    fwd = two_layer(bias2=bias).forward_graph()
    vals = _values(fwd)
    out = empirical(fwd, vals)
    for name, L in dense_layers(fwd).items():
        h = node_value(fwd, vals, L.input)
        abar = np.hstack([h, np.ones((B, 1))]) if L.bias else h
        want = abar.T @ abar / B
        got = out[f"kfac_hh:{name}"].reshape(L.n_in, L.n_in) / B
        if L.bias:
            hs = out[f"kfac_h:{name}"].reshape(-1, 1) / B
            got = np.block([[got, hs], [hs.T, np.ones((1, 1))]])
        assert rel_err(got, want) < 1e-12, name


def _G_references(loss, vals):
    """{layer: (exact G, empirical G)} of the model with every bias present, at ``vals``."""
    fwd = two_layer(loss, True).forward_graph()
    GN = oracle.oracle_gauss_newton(fwd, vals)
    _, pcg = oracle.oracle_per_case(fwd, vals)
    return {
        W: (block(fwd, vals, GN, b), pcg[b].T @ pcg[b] / B) for W, b in (("W1", "b1"), ("W2", "b2"))
    }


@pytest.mark.parametrize("loss", list(LOSSES))
@pytest.mark.parametrize("bias2", [True, False])
def test_G_exact_and_empirical_against_the_oracle(loss, bias2):
    twin_vals = _values(two_layer(loss, True).forward_graph())
    if not bias2:
        twin_vals["b2"] = np.zeros(2)  # the twin with a zero bias: the same network
    refs = _G_references(loss, twin_vals)
    fwd = two_layer(loss, bias2).forward_graph()
    vals = {k: v for k, v in twin_vals.items() if bias2 or k != "b2"}
    exact = exact_sum(kfac_graph(fwd, "curvature_prop"), vals)
    emp = empirical(fwd, vals)
    for name, L in dense_layers(fwd).items():
        n = L.n_out
        assert rel_err(exact[f"kfac_G:{name}"].reshape(n, n), refs[name][0]) < 1e-10, name
        assert rel_err(emp[f"kfac_G:{name}"].reshape(n, n), refs[name][1]) < 1e-10, name


def test_branching_layers_share_the_pre_activation_factor():
    """out = W2 h + W3 (h ⊙ h) + b2: W2 and W3 both feed the pre-activation that b2 moves,
    so both G equal b2's Gauss-Newton block (softmax loss)."""
    fwd = two_layer("softmax", True, branch=True).forward_graph()
    vals = _values(fwd)
    GN = oracle.oracle_gauss_newton(fwd, vals)
    exact = exact_sum(kfac_graph(fwd, "curvature_prop"), vals)
    layers = dense_layers(fwd)
    assert set(layers) == {"W1", "W2", "W3"} and layers["W3"].bias is None
    assert rel_err(exact["kfac_G:W1"].reshape(2, 2), block(fwd, vals, GN, "b1")) < 1e-10
    # W2 h + W3 (h⊙h) + b2: the bias sits on the sum, so neither product is biased alone;
    # each G is the block of a shift of its own product, which equals b2's
    for W in ("W2", "W3"):
        assert rel_err(exact[f"kfac_G:{W}"].reshape(2, 2), block(fwd, vals, GN, "b2")) < 1e-10


def test_kronecker_block_is_exact_for_the_last_layer_with_squared_error():
    """a = W2 h + b2 is the loss input and H_L = I: the GN block of W2 is exactly A ⊗ G."""
    fwd = two_layer("squared").forward_graph()
    vals = _values(fwd)
    GN = oracle.oracle_gauss_newton(fwd, vals)
    exact = exact_sum(kfac_graph(fwd, "curvature_prop"), vals)
    hh = empirical(fwd, vals)  # A does not depend on the sweep
    A = hh["kfac_hh:W2"].reshape(2, 2) / B
    G = exact["kfac_G:W2"].reshape(2, 2)
    assert rel_err(np.kron(G, A), block(fwd, vals, GN, "W2")) < 1e-10
    # and not for the hidden layer (the approximation is real there)
    A1 = hh["kfac_hh:W1"].reshape(3, 3) / B
    G1 = exact["kfac_G:W1"].reshape(2, 2)
    assert rel_err(np.kron(G1, A1), block(fwd, vals, GN, "W1")) > 1e-3


@pytest.mark.parametrize("model", [tied_model, gate_model, reductions_model])
def test_every_parameter_is_covered(model):
    """Parameters outside dense layers (tied W, c, ...) get the CP Gauss-Newton diagonal:
    exact in expectation; the empirical sweep gives the empirical Fisher's diagonal."""
    fwd = model().forward_graph()
    vals = _values(fwd)
    layers = dense_layers(fwd)
    covered = {n for L in layers.values() for n in (L.weight, L.bias) if n}
    rest = [p.name for p in fwd.leaves("param") if p.name not in covered]
    if model is reductions_model:  # no loss: no Gauss-Newton split, a LossError
        with pytest.raises(sc.errors.LossError):
            kfac_graph(fwd, "curvature_prop")
        return
    GN = oracle.oracle_gauss_newton(fwd, vals)
    _, pcg = oracle.oracle_per_case(fwd, vals)
    exact = exact_sum(kfac_graph(fwd, "curvature_prop"), vals)
    emp = empirical(fwd, vals)
    assert covered | set(rest) == {p.name for p in fwd.leaves("param")}
    for name in rest:
        want = np.diag(block(fwd, vals, GN, name))
        assert rel_err(np.ravel(exact[f"kfac_diag:{name}"]), want) < 1e-10, name
        want_emp = (pcg[name].reshape(B, -1) ** 2).mean(0)
        assert rel_err(np.ravel(emp[f"kfac_diag:{name}"]), want_emp) < 1e-10, name


def test_sampled_targets_leave_the_forward_pass_alone():
    """An autoencoder's target is its input x. The empirical sweep reads its targets from
    its own leaf ``target_x``, so binding sampled targets t̃ = y + n (squared error: the
    predictive distribution N(y, I)) changes the seed −n only: summed over n = e_k (the
    same k in every case; E[n nᵀ] = I) the Fisher factor is the exact G."""
    m = sc.Model("ae")
    x = m.input("x", 3)
    W1, b1 = m.param("W1", (2, 3)), m.param("b1", 2)
    W2, b2 = m.param("W2", (3, 2)), m.param("b2", 3)
    m.minimize(sc.losses.squared_error(W2 @ sc.tanh(W1 @ x + b1) + b2, x))
    fwd = m.forward_graph()
    vals = _values(fwd)
    g = kfac_graph(fwd, "empirical")
    y = np.asarray(evaluate(g, {**vals, "target_x": vals["x"]})["kfac_y:x"])
    fisher = 0.0
    for k in range(3):
        drawn = y + np.eye(3)[k]  # n = e_k in every case
        fisher = fisher + np.asarray(evaluate(g, {**vals, "target_x": drawn})["kfac_G:W1"])
    exact = exact_sum(kfac_graph(fwd, "curvature_prop"), vals)["kfac_G:W1"]
    assert rel_err(fisher, exact) < 1e-10
