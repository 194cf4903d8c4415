"""Every derived graph of a random model survives what happens to it on the way to a build:
the passes (simplify, composite expansion, CSE, dead code) keep its values, its node-link
JSON (graph.json) loads back to the same graph with the same values, and it draws as .dot.

Built programs (``sc.load`` and ``prog.draw``) are tripped in test_compiled.py, which owns
the builds. The passes change the order of floating-point operations (softmax expanded into
max-shifted primitives), hence 1e-12 relative there; JSON must be exact.
"""

from __future__ import annotations

import json

import numpy as np
from hypothesis import given

from symcurv import errors, pipeline, viz
from symcurv.ir.graph import Graph
from symcurv.passes import optimize
from symcurv.runtime.reference import evaluate

from . import strategies
from .checks import noise_shapes, rel_err, unflat, with_theta
from .test_reference import BATCH, SEEDS, case


def _leaves(g: Graph, f: Graph, vals, theta, seed: int) -> dict:
    """Values for every leaf of a derived graph: the model's, a direction, CP noise, the
    input directions."""
    rng = np.random.default_rng(seed)
    leaves = with_theta(f, vals, theta)
    leaves.update({f"v:{k}": a for k, a in unflat(f, rng.normal(size=theta.size)).items()})
    B = next(vals[n.name].shape[0] for n in f.nodes() if n.op in ("input", "target"))
    leaves.update({name: rng.choice([-1.0, 1.0], size=s) for name, s in noise_shapes(g, B)})
    # the per-case directions of the input-Hessian products
    for n in g.nodes():
        if n.op == "input_direction":
            leaves[n.name] = rng.normal(size=(B, *n.shape))
    return leaves


def _derived(spec, f: Graph):
    """``(name, graph)`` for the forward graph and every program of the pipeline; only the
    Gauss-Newton programs may be missing, and exactly when the model has no split."""
    yield "forward", f
    for name, build in pipeline.PROGRAMS.items():
        try:
            yield name, build(f)
        except errors.LossError:
            assert name in pipeline.OPTIONAL and not spec.gauss_newton, name


@given(spec=strategies.model_specs(), seed=SEEDS, B=BATCH)
def test_passes_json_and_drawing_keep_every_graph(spec, seed, B, tmp_path_factory):
    f, vals, theta = case(spec, seed, B)
    out_dir = tmp_path_factory.mktemp("draw")
    for name, g in _derived(spec, f):
        leaves = _leaves(g, f, vals, theta, seed)
        want = evaluate(g, leaves)
        opt = optimize(g)
        got = evaluate(opt, leaves)
        assert set(got) == set(want), name
        for k in want:
            assert rel_err(np.broadcast_to(got[k], np.shape(want[k])), want[k]) < 1e-12, (name, k)
        for h in (g, opt):
            back = Graph.from_json(json.loads(json.dumps(h.to_json(), default=str)))
            assert back.digest() == h.digest() and back.outputs == h.outputs, name
            again = evaluate(back, leaves)
            ref = evaluate(h, leaves)
            for k in ref:
                np.testing.assert_array_equal(again[k], ref[k], err_msg=f"{name}: {k}")
        text = viz.draw(opt, out_dir / f"{name}.dot", forward_ids=set(f.nx.nodes)).read_text()
        # every output node is labelled with its first key (a long key list is shortened)
        first = {nid: k for k, nid in reversed(list(opt.outputs.items()))}
        assert text.startswith("digraph") and all(f"⇒ {k}" in text for k in first.values())
