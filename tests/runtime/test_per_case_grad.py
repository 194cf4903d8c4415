"""``per_case_grad`` (B × n_params) and ``per_case_grad_norm`` (B,) against per-case
gradients computed case by case with ``grad`` on one-case batches (whose mean gradient is
∇f_b), on tied weights (W and W.T in one case), a branching graph, an MLP, and a model
whose per-case loss holds a θ-only term and a weight reused through a θ-only node other
than a transpose (the materialised path of the pair expansion)."""

from __future__ import annotations

import numpy as np
import pytest
from models import branching, mlp, tied

import symcurv as sc
from symcurv import errors, testing

PROGRAMS = ["grad", "per_case_grad", "per_case_grad_norm"]


def reused():
    """W used directly and through W ⊙ W (a θ-only node), plus weight decay in f_b."""
    m = sc.Model("reused")
    x = m.input("x", 4)
    t = m.target("t", 2)
    W = m.param("W", (3, 4), init=sc.init.normal(0.5))
    V = m.param("V", (2, 3), init=sc.init.normal(0.5))
    unused_by_cases = m.param("c", 2, init=sc.init.constant(0.3))
    h = sc.tanh(W @ x) + sc.logistic((W * W) @ x)
    decay = 0.05 * sc.sum(sc.square(V)) + sc.sum(sc.square(unused_by_cases))
    m.minimize(sc.losses.squared_error(V @ h, t) + decay)
    return m


MODELS = {"tied": tied, "branching": branching, "mlp": mlp, "reused": reused}


@pytest.fixture(scope="module")
def progs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pcg")
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = sc.compile(
                MODELS[name](), programs=PROGRAMS, build_dir=root / name, progress=False
            )
        return cache[name]

    return get


def _case_by_case(prog, theta, batch):
    B = len(next(iter(batch.values())))
    return np.array(
        [prog.grad(theta, {k: v[b : b + 1] for k, v in batch.items()})[1] for b in range(B)]
    )


@pytest.mark.parametrize("name", list(MODELS))
def test_per_case_grad_and_norm_equal_case_by_case_grad(progs, name):
    prog = progs(name)
    rng = np.random.default_rng(1)
    theta = prog.init(0) + 0.3 * rng.normal(size=prog.n_params)
    batch = testing.random_batch(prog, 5, seed=3)
    want = _case_by_case(prog, theta, batch)
    assert np.abs(want).max() > 1e-3  # a real gradient, not zeros compared with zeros
    G = prog.per_case_grad(theta, batch)
    assert G.shape == (5, prog.n_params)
    assert testing.rel_error(G, want) < 1e-12
    # NOT divided by B: the mean of the rows is the batch gradient
    assert testing.rel_error(G.mean(axis=0), prog.grad(theta, batch)[1]) < 1e-12
    n = prog.per_case_grad_norm(theta, batch)
    assert n.shape == (5,)
    assert testing.rel_error(n, np.linalg.norm(want, axis=1)) < 1e-12
    errs = testing.compare_to_reference(prog, theta, batch)  # the IR graphs, interpreted
    assert set(errs) == set(PROGRAMS) and max(errs.values()) < 1e-12, errs
    st = prog.linearize(theta, batch)
    assert testing.rel_error(st.per_case_grad(), want) < 1e-12
    assert testing.rel_error(st.per_case_grad_norm(), np.linalg.norm(want, axis=1)) < 1e-12


def test_batch_size_scaling(progs):
    """A case's gradient does not depend on the other cases (the B-scaling is right for
    every B, one case included)."""
    prog = progs("tied")
    theta = prog.init(2)
    batch = testing.random_batch(prog, 9, seed=4)
    G9 = prog.per_case_grad(theta, batch)
    G1 = prog.per_case_grad(theta, {k: v[3:4] for k, v in batch.items()})
    assert testing.rel_error(G1[0], G9[3]) < 1e-12
    n9 = prog.per_case_grad_norm(theta, batch)
    assert (
        testing.rel_error(
            prog.per_case_grad_norm(theta, {k: v[:2] for k, v in batch.items()}), n9[:2]
        )
        < 1e-12
    )


def test_norm_program_forms_no_per_case_weight_array(progs):
    """The norm graph holds no batched value of a weight's shape: the pair expansion uses
    per-case dot products of activations only (tied weights included)."""
    from symcurv import pipeline

    for name in ("tied", "mlp"):
        model = MODELS[name]()
        _, g = pipeline.program_graph(model, "per_case_grad_norm")
        mats = [tuple(p["shape"]) for p in progs(name).params.values() if len(p["shape"]) == 2]
        shapes = set(mats) | {s[::-1] for s in mats}  # W's shape, or W.T's
        big = [n.describe() for n in g.nodes() if n.batched and n.shape in shapes]
        assert not big, big
        _, g = pipeline.program_graph(model, "per_case_grad")
        assert any(n.batched and n.shape in shapes for n in g.nodes())  # the check can fail


def test_not_built_is_a_clear_error(compiled):
    _, p = compiled("tied")  # the session's loss+grad build
    with pytest.raises(errors.BuildError, match="per_case_grad"):
        p.per_case_grad(p.init(0), testing.random_batch(p, 3))
    with pytest.raises(errors.BuildError, match="per_case_grad_norm"):
        p.per_case_grad_norm(p.init(0), testing.random_batch(p, 3))
