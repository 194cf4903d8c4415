"""The graph -> graph passes, checked on the graphs they produce (the numbers they must
preserve are checked end to end in tests/runtime against the reference)."""

import numpy as np
import pytest

import symcurv as sc
from symcurv.passes import cse, dce
from symcurv.runtime.reference import evaluate


def _ops(g, op):
    return [n for n in g.nodes() if n.op == op]


def test_graph_cse_merges_identical_subgraphs_and_keeps_values():
    m = sc.Model("twice")
    x = m.input("x", 3)
    W = m.param("W", (2, 3))
    m.minimize(sc.sum(sc.tanh(W @ x)) + sc.sum(sc.tanh(W @ x)))  # the same value twice
    f = m.forward_graph()
    g = f.copy()
    assert cse.run(g) >= 2 and dce.run(g) >= 2
    assert len(_ops(g, "matvec")) == 1 and len(_ops(f, "matvec")) == 2
    rng = np.random.default_rng(0)
    leaves = {"x": rng.normal(size=(4, 3)), "W": rng.normal(size=(2, 3))}
    assert evaluate(g, leaves)["objective"] == pytest.approx(evaluate(f, leaves)["objective"])


def test_dce_removes_what_no_output_needs():
    m = sc.Model("dead")
    x = m.input("x", 3)
    W = m.param("W", (2, 3))
    b = m.param("b", 3)
    _unused = sc.exp(W @ x)  # built, never used by the loss
    m.minimize(sc.sum(x * b))
    with pytest.warns(sc.errors.UnusedParameterWarning, match="'W'"):
        g = m.forward_graph().copy()
    assert dce.run(g) >= 2
    assert not _ops(g, "matvec") and not _ops(g, "elementwise")[1:]  # only x * b is left
    # leaves stay: they define θ's layout
    assert [n.name for n in g.leaves("param")] == ["W", "b"]
