"""The passes and the lowering, checked on the graphs they produce (the numbers they
must preserve are checked end to end in tests/runtime against the reference)."""

import re

import models
import numpy as np
import pytest

import symcurv as sc
from symcurv import pipeline
from symcurv.codegen import lower
from symcurv.passes import cse, dce, fuse, optimize, schedule
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


@pytest.mark.parametrize("name", sorted(models.MODELS))
def test_weight_gradients_are_batch_gemms_never_per_case_matrices(name):
    """dW = Σ_b g_b h_bᵀ is one GEMM (outer_bsum); no node holds a (B, m, n) array."""
    _, g = pipeline.program_graph(models.MODELS[name](), "grad")
    assert not [n.describe() for n in g.nodes() if n.batched and len(n.shape) == 2]
    for p in g.leaves("param"):
        if len(p.shape) == 2:
            out = g.outputs[f"grad:{p.name}"]
            made_by = {g[i].op for i in g.ancestors(out) | {out}}
            assert "outer_bsum" in made_by, (p.name, made_by)
    low = lower.lower(optimize(g))
    for k in low.kernels:
        if any(low.graph[n].op == "outer_bsum" for n in k.nodes):
            assert k.kind == "gemm", k


def test_fusion_groups_share_one_iteration_space_and_cut_the_kernel_count():
    _, g = pipeline.program_graph(models.all_ops(), "grad")
    maps = [n for n in g.nodes() if fuse.is_map(n)]
    groups = fuse.fusion_groups(g)
    assert sum(len(gr.members) for gr in groups) == len(maps)
    assert len(groups) < len(maps) / 2  # elementwise chains become few loop nests
    for gr in groups:
        assert {fuse.space(g[i]) for i in gr.members} == {gr.space}


def test_schedule_reuses_scratch_buffers():
    _, g = pipeline.program_graph(models.mlp((6, 5, 5, 5, 5, 3)), "grad")
    low = lower.lower(g)
    plan = schedule.plan(low, {})
    scratch = [nid for nid, var in plan.storage.items() if re.fullmatch(r"s\d+", var)]
    assert len(plan.slots) < len(scratch)  # some slot holds several values over time
    assert {plan.storage[n] for n in scratch} == {s.name for s in plan.slots}
