"""Every op's rules on the compiled CPU kernels (issue 14 item 6; tests/test_registry.py
checks them at graph level in the reference interpreter).

One small model per op family — elementwise, contraction, reduce, losses, convolution —
is compiled
with the exact H v (Pearlmutter: the gradient's pullbacks and their R-operator) and CP's S
estimator (the curvature rules), and each compiled
program must equal the reference interpreter on its own stored graph (CP with the same
explicit noise): so every op's vjp, jvp-of-vjp and curvature rule, after fusion, lowering
and printing, computes what its ``impl`` says. A registry op that none of the four models
reaches fails ``test_the_models_reach_every_op``: a new op needs a row here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import symcurv as sc
from symcurv import testing
from symcurv.ops import REGISTRY

# no separate "grad": H v is forward-over-reverse of the gradient graph, so hvp's static
# part (passes/split.py) compiles every vjp of the backward pass, and the jvp-of-vjp rules
# run in its dynamic part; cp_S compiles the curvature rules. (A third program per model
# cost ~10 s of Numba compilation for no op not already compiled.)
PROGRAMS = ("hvp", "cp_S")


def elementwise():
    """Every kind of map: built-in functions, a user function, a per-case scalar broadcast
    over a vector, and literal constants."""
    bump = sc.elementwise("bump_rule", "exp(-z**2 / 2) * z")
    m = sc.Model("rules_elementwise")
    x = m.input("x", 4)
    W = m.param("W", (3, 4), init=sc.init.normal(0.4))
    a = W @ x
    h = sc.softplus(a) + sc.relu(a) * 0.5 + sc.square(sc.tanh(a)) - sc.exp(-sc.square(a))
    h = h / (1 + sc.logistic(a)) + sc.log(1 + sc.exp(a)) ** 2 + bump(a)
    m.minimize(sc.sum(h * sc.sum(a)))  # sum(a) (a per-case scalar) broadcast over h
    return m


def contraction():
    """matvec, a transposed (tied) weight, and the outer products of the gradient: summed
    over cases for W x, a shared one for W q (q a parameter vector)."""
    m = sc.Model("rules_contraction")
    x = m.input("x", 5)
    W = m.param("W", (3, 5), init=sc.init.normal(0.5))
    b = m.param("b", 3, init=sc.init.constant(0.1))
    q = m.param("q", 5, init=sc.init.normal(0.3))
    code = sc.tanh(W @ x + b + W @ q)
    m.minimize(sc.losses.squared_error(W.T @ code, x))
    return m


def reduce():
    """Feature sums, logsumexp, softmax and a dot product of per-case vectors."""
    m = sc.Model("rules_reduce")
    x = m.input("x", 4)
    W = m.param("W", (4, 4), init=sc.init.normal(0.5))
    U = m.param("U", (4, 4), init=sc.init.normal(0.5))
    h = sc.tanh(W @ x)
    s = sc.softmax(U @ h)
    m.minimize(sc.logsumexp(h) + sc.dot(s, h) + sc.sum(sc.square(h)) * 0.1)
    return m


def losses():
    """Every built-in loss, a custom one, and class labels (one_hot)."""
    m = sc.Model("rules_losses")
    x = m.input("x", 4)
    t = m.target("t", 3)
    c = m.target("c", 3, labels=True)
    W = m.param("W", (3, 4), init=sc.init.normal(0.5))
    y = W @ x
    m.minimize(
        sc.losses.squared_error(y, t)
        + sc.losses.sigmoid_cross_entropy(y, t)
        + sc.losses.custom("logcosh_rule", "log(cosh(y - t))", y, t)
        + sc.losses.softmax_cross_entropy(y, t)
        + sc.losses.softmax_cross_entropy(y, c)
    )
    return m


def convolution():
    """conv2d (ops/conv.py) and, in its derivatives, its two transposes."""
    m = sc.Model("rules_conv")
    x = m.input("x", 16)  # a 4 × 4 image
    F = m.param("F", (2, 9), init=sc.init.normal(0.4))  # two 3 × 3 filters
    alpha = m.param("alpha", 2, init=sc.init.constant(0.5))
    Y = sc.conv2d(F, x, image=(4, 4))  # (2, 4) responses per case
    m.minimize(sc.sum(sc.tanh(Y).T @ alpha) + 0.1 * sc.dot(x, x))
    return m


FAMILIES = {
    "elementwise": elementwise,
    "contraction": contraction,
    "reduce": reduce,
    "losses": losses,
    "convolution": convolution,
}


BUILT = {name: PROGRAMS for name in FAMILIES}


@pytest.fixture(scope="session")
def family_programs(tmp_path_factory):
    """The four models compiled once per session (CPU, float64)."""
    root = tmp_path_factory.mktemp("rules")
    return {
        name: sc.compile(make(), programs=BUILT[name], build_dir=root / name, progress=False)
        for name, make in FAMILIES.items()
    }


@pytest.mark.parametrize("family", list(FAMILIES))
def test_compiled_programs_equal_the_reference_interpreter(family_programs, family):
    prog = family_programs[family]
    rng = np.random.default_rng(3)
    theta = prog.init(0) + 0.3 * rng.normal(size=prog.n_params)
    batch = testing.random_batch(prog, 5, seed=4)
    errs = testing.compare_to_reference(prog, theta, batch)
    assert set(errs) == set(BUILT[family]), errs
    assert max(errs.values()) < 1e-11, errs


def test_the_models_reach_every_op(family_programs):
    """Every non-leaf op of the registry appears in a compiled graph of these models."""
    seen = set()
    for prog in family_programs.values():
        data = json.loads((Path(prog.build_dir) / "graph.json").read_text())
        for g in [data["forward"], *data["programs"].values()]:
            seen |= {n["op"] for n in g["nodes"]}
    ops = {name for name, p in REGISTRY.items() if p.family != "leaf"}
    assert ops - seen == set(), f"ops no compiled model reaches: {sorted(ops - seen)}"
