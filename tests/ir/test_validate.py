"""IR invariants: every graph symcurv derives passes; each kind of breakage is caught and
reported as an IRError naming the node, its DSL line and "a bug in symcurv"."""

import dataclasses

import models
import pytest

from symcurv import errors, pipeline
from symcurv.ir.validate import problems, validate
from symcurv.transforms import grad


@pytest.mark.parametrize("name", sorted(models.MODELS))
def test_every_derived_graph_is_valid(name):
    m = models.MODELS[name]()
    fwd = m.forward_graph()
    for g in (fwd, grad.gradient_graph(fwd), pipeline.program_graph(m, "grad")[1]):
        assert problems(g) == []
        assert validate(g) is g


def _tied_forward():
    return models.tied().forward_graph()


def _replace(g, nid, **changes):
    g.nx.nodes[nid]["node"] = dataclasses.replace(g[nid], **changes)


def test_wrong_stored_shape_names_node_and_line():
    g = _tied_forward()
    a = g.by_name("a_W")
    _replace(g, a.id, shape=(4,))
    with pytest.raises(errors.IRError) as e:
        validate(g, "a test rewrite")
    msg = str(e.value)
    assert "after a test rewrite" in msg and "'a_W'" in msg and "models.py:46" in msg
    assert "stored shape B x (4,) but its inputs give B x (3,)" in msg
    assert "bug in symcurv" in msg


def test_operand_of_the_wrong_shape():
    g = _tied_forward()
    # a_W = W @ x with W (3, 6); rewire it to W @ b, b of length 3
    a, x, W = g.by_name("a_W"), g.by_name("x"), g.by_name("W")
    _replace(g, a.id, inputs=(W.id, g.by_name("b").id))
    g.nx.add_edge(g.by_name("b").id, a.id)
    g.nx.remove_edge(x.id, a.id)
    [(node, what)] = problems(g)
    assert node.name == "a_W" and "shape rule fails" in what and "length 6" in what


def test_edges_must_match_inputs_and_inputs_must_exist():
    g = _tied_forward()
    a = g.by_name("a_W")
    g.nx.remove_edge(g.by_name("x").id, a.id)
    assert any("edges" in w for _, w in problems(g))
    g = _tied_forward()
    _replace(g, a.id, inputs=(g.by_name("W").id, "n999"))
    assert any("['n999'] are not in the graph" in w for _, w in problems(g))


def test_cycle_unknown_op_duplicate_name_and_dangling_output():
    g = _tied_forward()
    g.nx.add_edge(g.by_name("objective").id, g.by_name("a_W").id)
    assert "cycle" in problems(g)[0][1]

    g = _tied_forward()
    _replace(g, g.by_name("logistic").id, op="no_such_op")
    assert any("'no_such_op' is not registered" in w for _, w in problems(g))

    g = _tied_forward()
    _replace(g, g.by_name("b").id, name="W")
    assert any("'W' is also used by" in w for _, w in problems(g))

    g = _tied_forward()
    g.outputs["extra"] = "n999"
    assert any("output 'extra'" in w for _, w in problems(g))
