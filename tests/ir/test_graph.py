"""Graph construction: node names are unique within a graph (codegen uses them)."""

from symcurv.ir.graph import Graph


def _leaf(g: Graph, name: str):
    return g.add_node("param", [], (2,), batched=False, name=name)


def test_suffixed_names_never_collide_with_explicit_ones():
    g = Graph("names")
    names = [_leaf(g, n).name for n in ("add", "add", "add_1", "add", "add_1")]
    assert len(set(names)) == len(names), names
    assert names[:2] == ["add", "add_1"]


def test_copy_and_json_round_trip_keep_names_taken():
    g = Graph("names")
    _leaf(g, "w")
    _leaf(g, "w")  # w_1
    for h in (g.copy(), Graph.from_json(g.to_json())):
        new = [_leaf(h, n).name for n in ("w", "w_1", "w_2")]
        assert not set(new) & {"w", "w_1"}, new
        assert len(set(new)) == 3, new
