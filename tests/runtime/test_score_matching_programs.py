"""Compiled score-matching and energy models (runtime side): the CPU kernels equal the
reference interpreter on the same leaves (the basis rows of ``exact``, the counter-based
noise of ``TU``), seeds reproduce a noisy model's draws (Program, State, fit), a seed
given to a noise-free model is refused, and the per-case programs (``sum_sq_grad``, so
Hessian-free's default preconditioner) apply to CP score-matching models."""

from __future__ import annotations

import numpy as np
import pytest

import symcurv as sc
from symcurv import errors
from symcurv.ir.validate import validate
from symcurv.passes import optimize
from symcurv.pipeline import PROGRAMS
from symcurv.runtime import model_leaves
from symcurv.runtime.reference import evaluate

B, D = 4, 2


def energy_model():
    m = sc.Model("poe_tiny")
    x = m.input("x", D)
    W = m.param("W", (2, D), init=sc.init.normal(0.6))
    beta = m.param("beta", 2, init=sc.init.normal(0.3))
    m.energy(sc.dot(sc.exp(beta), sc.log(1 + sc.square(W @ x))))
    return m


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("sm")
    m = energy_model()
    progs = {"energy": sc.compile(m, ("loss", "input_grad"), build_dir=root / "e", progress=False)}
    models = {"energy": m}
    for diag in ("exact", "TU"):
        models[diag] = sc.score_matching(m, reg=0.2, diag=diag)
        programs = ("grad", "hvp", "sum_sq_grad") if diag == "TU" else ("grad",)
        progs[diag] = sc.compile(models[diag], programs, build_dir=root / diag, progress=False)
    rng = np.random.default_rng(0)
    batch = {"x": rng.normal(size=(B, D))}
    return models, progs, batch


def _reference(model, prog, theta, batch, seed=None):
    """(objective, flat gradient) of ``model``'s grad graph by the interpreter, with the
    model leaves the runtime would bind for ``seed``."""
    g = optimize(PROGRAMS["grad"](model.forward_graph()))
    names = list(prog.inputs)  # the exact diagonal's B·D expanded cases (case_expansion.py)
    rows = dict(zip(names, prog.checks.batch(names, batch)))
    leaves = {**prog.unflatten(theta), **rows}
    key = model_leaves.seed_key(prog, seed)
    leaves.update(model_leaves.values(prog, len(rows["x"]), key))
    out = evaluate(g, leaves)
    grad = prog.flatten({p: out[f"grad:{p}"] for p in prog.params})
    return float(out["objective"]), grad


def test_an_energy_model_compiles_like_any_model(built):
    models, progs, batch = built
    prog, fwd = progs["energy"], models["energy"].forward_graph()
    theta = prog.init(1)
    vals = {**prog.unflatten(theta), **batch}
    want = evaluate(fwd, vals)
    assert np.isclose(prog.loss(theta, batch), float(want["objective"]), rtol=1e-12)
    W, beta = vals["W"], vals["beta"]
    u = batch["x"] @ W.T  # ∂E/∂x = Wᵀ (e^β ⊙ 2u / (1 + u²)) per case
    s = (np.exp(beta) * 2 * u / (1 + u**2)) @ W
    assert np.allclose(prog.input_grad(theta, batch), s, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("diag", ["exact", "TU"])
def test_compiled_equals_the_reference(built, diag):
    models, progs, batch = built
    prog = progs[diag]
    theta = prog.init(2)
    seed = 11 if diag == "TU" else None
    f, g = prog.grad(theta, batch, seed=seed)
    f_ref, g_ref = _reference(models[diag], prog, theta, batch, seed)
    assert np.isclose(f, f_ref, rtol=1e-12) and np.allclose(g, g_ref, rtol=1e-10, atol=1e-13)


def test_seeds_reproduce_the_noise(built):
    _, progs, batch = built
    prog = progs["TU"]
    theta = prog.init(3)
    a, b, c = (prog.grad(theta, batch, seed=s)[1] for s in (5, 5, 6))
    assert np.array_equal(a, b) and not np.allclose(a, c)
    fresh = [prog.grad(theta, batch)[0] for _ in range(3)]  # seed None: a new draw each call
    assert len(set(fresh)) == 3
    st = prog.linearize(theta, batch, seed=5)
    assert np.array_equal(st.grad()[1], a) and st.loss() == prog.grad(theta, batch, seed=5)[0]
    with pytest.raises(errors.ModelError, match="seed = -1"):
        prog.grad(theta, batch, seed=-1)


def test_every_program_method_of_a_cp_model_takes_a_seed(built):
    """hvp and sum_sq_grad reproduce their draw under a seed, and the seed means the same
    draw as grad's: H v at seed 5 equals the difference quotient of grad at seed 5."""
    _, progs, batch = built
    prog = progs["TU"]
    theta, v = prog.init(4), np.random.default_rng(1).normal(size=prog.n_params)
    a, b, c = (prog.hvp(theta, batch, v, seed=s) for s in (5, 5, 6))
    assert np.array_equal(a, b) and not np.allclose(a, c)
    eps = 1e-6
    fd = prog.grad(theta + eps * v, batch, seed=5)[1] - prog.grad(theta - eps * v, batch, seed=5)[1]
    assert np.allclose(a, fd / (2 * eps), rtol=1e-5, atol=1e-7)
    s5, s6 = (prog.sum_sq_grad(theta, batch, seed=s) for s in (5, 6))
    assert np.array_equal(s5, prog.grad_and_sum_sq_grad(theta, batch, seed=5)[2])
    assert not np.allclose(s5, s6)


def test_a_noise_free_model_refuses_a_seed(built):
    _, progs, batch = built
    prog = progs["exact"]
    with pytest.raises(errors.ModelError, match="draws no noise") as e:
        prog.grad(prog.init(0), batch, seed=3)
    assert "fix:" in str(e.value)


def test_fit_draws_new_reproducible_noise_every_iteration(built):
    _, progs, batch = built
    prog = progs["TU"]
    theta0 = prog.init(4)
    runs = [
        sc.optim.fit(
            prog,
            sc.optim.Adam(prog, learning_rate=1e-2),
            batch,
            iterations=3,
            theta=theta0,
            batch_size=B,
            seed=7,
            progress=False,
        )
        for _ in range(2)
    ]
    assert np.array_equal(runs[0].theta, runs[1].theta)
    # iteration 1's objective is the loss at θ0 under the seed [7, 1]; iteration 2 draws anew
    first = runs[0].history[0]["objective"]
    assert np.isclose(first, prog.grad(theta0, batch, seed=[7, 1])[0], rtol=1e-12)
    assert not np.isclose(first, prog.grad(theta0, batch, seed=[7, 2])[0], rtol=1e-6)


def _case_rows(leaves: dict, batched: set, b: int) -> dict:
    """Case b's share of the model leaves: its row of a per-case leaf, a shared one whole."""
    return {k: (v[b : b + 1] if k in batched else v) for k, v in leaves.items()}


def test_sum_sq_grad_of_a_cp_model_equals_its_per_case_gradients(built):
    """Σ_b ∇J_b ⊙ ∇J_b from one ``sum_sq_grad`` call against B calls of ``grad`` on one
    case each, with that case's row of the same noise draw (regression: the per-case sweep
    crossed a batch_broadcast of exp(β) and built an invalid graph)."""
    _, progs, batch = built
    prog = progs["TU"]
    theta = prog.init(5)
    f, g, sq = prog.grad_and_sum_sq_grad(theta, batch, seed=9)
    noise = model_leaves.values(prog, B, model_leaves.seed_key(prog, 9))
    batched = {d["name"] for d in prog.manifest["model_leaves"] if d.get("batched")}
    rows = np.array(
        [
            prog.run(
                "grad", theta, {"x": batch["x"][b : b + 1]}, extras=_case_rows(noise, batched, b)
            )["grad"]
            for b in range(B)
        ]
    )
    assert np.isclose(f, prog.grad(theta, batch, seed=9)[0], rtol=1e-12)
    assert np.allclose(g, rows.mean(0), rtol=1e-10, atol=1e-14)
    assert np.allclose(sq, (rows**2).sum(0), rtol=1e-10, atol=1e-14)
    assert np.all(sq > 0)


def test_hessian_free_with_its_preconditioner_trains_a_cp_model(built):
    _, progs, batch = built
    prog = progs["TU"]

    def run():
        hf = sc.optim.HessianFree(prog, curvature="hessian", initial_damping=1.0)
        return sc.optim.fit(prog, hf, batch, iterations=3, batch_size=B, seed=2, progress=False)

    a, b = run(), run()
    assert np.array_equal(a.theta, b.theta)  # the same seeded draws in both runs
    assert all(np.isfinite(h["objective"]) for h in a.history)
    assert any(h["accepted"] for h in a.history) and not np.array_equal(a.theta, prog.init(2))


@pytest.mark.parametrize("diag", ["S", "TU", "becker_lecun"])
def test_per_case_programs_of_a_score_matching_model(diag):
    """The interpreter's ``sum_sq_grad`` and ``per_case_grad`` graphs of the score-matching
    objective against the ``grad`` graph evaluated on one case at a time, same noise (no
    build: the graphs alone); the CP programs' graphs over θ are valid IR too."""
    model = sc.score_matching(energy_model(), reg=0.2, diag=diag)
    fwd = model.forward_graph()
    rng = np.random.default_rng(1)
    noise = {
        n.name: rng.choice([-1.0, 1.0], size=(B, n.size) if n.batched else n.shape)
        for n in fwd.leaves("noise")
    }
    batched = {n.name for n in fwd.leaves("noise") if n.batched}
    theta = {"W": rng.normal(0, 0.6, (2, D)), "beta": rng.normal(0, 0.3, 2)}
    x = rng.normal(size=(B, D))
    graphs = {p: optimize(validate(PROGRAMS[p](fwd), p)) for p in ("grad", "sum_sq_grad")}
    graphs["per_case_grad"] = optimize(validate(PROGRAMS["per_case_grad"](fwd), "pcg"))
    for p in ("cp_S", "cp_TU"):
        validate(PROGRAMS[p](fwd), p)
    whole = {**theta, **noise, "x": x}
    sq = evaluate(graphs["sum_sq_grad"], whole)
    pcg = evaluate(graphs["per_case_grad"], whole)
    for p in theta:
        rows = np.array(
            [
                evaluate(
                    graphs["grad"], {**theta, **_case_rows(noise, batched, b), "x": x[b : b + 1]}
                )[f"grad:{p}"]
                for b in range(B)
            ]
        )
        assert np.allclose(sq[f"sqg:{p}"], (rows**2).sum(0), rtol=1e-10, atol=1e-14), p
        assert np.allclose(pcg[f"pcg:{p}"], rows, rtol=1e-10, atol=1e-14), p
