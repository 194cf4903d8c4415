"""Drawing IR graphs: DOT text, PNG/PDF through matplotlib, SVG through Graphviz.

The .dot output is checked as text (deterministic, escaped, coloured by sweep); the
matplotlib formats by their magic bytes; .svg by its clear error where Graphviz is missing
and by a fake ``dot`` on PATH; and the sympy-free load path by drawing from graph.json in a
fresh interpreter.
"""

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from symcurv import errors, pipeline
from symcurv.ir.graph import Graph
from symcurv.viz import draw
from symcurv.viz.draw import MAX_EXPR, ROLES, label_lines, layers, to_dot

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def branching_grad():
    """(forward graph, optimised grad graph) of a model with a two-argument custom op."""
    import models

    return pipeline.program_graph(models.branching(), "grad")


@pytest.fixture(scope="module")
def mlp_forward():
    import models

    return pipeline.program_graph(models.mlp(), "forward")[0]


def fill_of(dot: str, name: str) -> str:
    """fillcolor of the node whose label starts with DSL name ``name``."""
    m = re.search(rf'\[label="{re.escape(name)}\\n[^\n]*fillcolor="([^"]+)"', dot)
    assert m, f"no node labelled {name}"
    return m.group(1)


def hand_graph() -> Graph:
    """A tiny graph built without the DSL, with awkward characters in attrs and origins."""
    g = Graph('say "hi"')
    x = g.add_node("input", [], (3,), True, {"shape": (3,)}, name="x", origin='m.py:1: x = "a\\b"')
    expr = 'x*"q" + \\alpha' + " + x" * 30
    y = g.add_node(
        "elementwise", [x.id, x.id], (3,), True, {"fn": "odd", "expr": expr}, name="y",
        origin="m.py:2: line one\nline two",
    )  # fmt: skip
    g.outputs["objective"] = y.id
    return g


def test_package_reexports_the_function():
    assert sys.modules["symcurv.viz.draw"].draw is draw and callable(draw)


def test_dot_is_deterministic_and_labelled(branching_grad, tmp_path):
    fwd, g = branching_grad
    ids = set(fwd.nx.nodes)
    path = draw(g, tmp_path / "grad.dot", forward_ids=ids, title="branching: grad")
    assert path == tmp_path / "grad.dot"
    text = path.read_text(encoding="utf-8")
    import models

    again = pipeline.program_graph(models.branching(), "grad")[1]
    assert text == to_dot(again, forward_ids=ids, title="branching: grad")
    assert text.startswith('digraph "branching" {') and text.endswith("}\n")
    assert 'label="branching: grad"' in text
    assert "cluster_legend" in text and "forward sweep" in text and "backward" in text
    for needle in ("gate_xy\\ngate_xy · B×4\\nx*tanh(y)", "W1\\nparam · 4×5", "⇒ grad:W1"):
        assert needle in text
    assert "objective\\nbatch_mean · scalar" in text  # unbatched scalar
    # the two operands of the custom op are numbered, the output nodes doubly bordered
    assert '-> "n10" [label="0"]' in text and '-> "n10" [label="1"]' in text
    assert text.count('peripheries="2"') == len(set(g.outputs.values())) + 1  # + legend
    # every node once, in topological order
    order = re.findall(r'^  "(n\d+)" \[label=', text, flags=re.M)
    assert order == g.topo()


def test_forward_and_backward_sweeps_differ(branching_grad):
    fwd, g = branching_grad
    text = to_dot(g, forward_ids=set(fwd.nx.nodes))
    assert fill_of(text, "a_W1") == ROLES["forward"][0]
    assert fill_of(text, "dW1") == ROLES["backward"][0]
    assert ROLES["forward"][0] != ROLES["backward"][0]
    assert fill_of(text, "W1") == ROLES["param"][0]
    assert fill_of(text, "x") == ROLES["data"][0]
    assert 'shape="ellipse"' in text.split("\n  }\n")[1]  # leaves have their own shape
    # without forward_ids everything computed is forward, and the legend says only that
    plain = to_dot(g)
    assert fill_of(plain, "dW1") == ROLES["forward"][0]
    assert "backward" not in plain


def test_dot_escapes_quotes_backslashes_and_newlines():
    text = to_dot(hand_graph(), title='a "quoted"\\title\nline 2')
    assert 'label="a \\"quoted\\"\\\\title\\nline 2"' in text
    assert 'tooltip="m.py:1: x = \\"a\\\\b\\""' in text
    assert 'tooltip="m.py:2: line one\\nline two"' in text
    assert '-> "n1" [label="0,1"]' in text  # x*x: one edge, both operand slots
    # every statement is one line whose quoted strings are well formed
    string = re.compile(r'"(?:[^"\\\n]|\\.)*"')
    for line in text.splitlines():
        assert '"' not in string.sub("", line), line
    # long expressions are cut to MAX_EXPR characters
    (label,) = re.findall(r'^  "n1" \[label="((?:[^"\\]|\\.)*)"', text, flags=re.M)
    expr = label.split("\\n")[2]
    assert expr.startswith('x*\\"q\\" + \\\\alpha') and expr.endswith("…")
    assert len(expr.replace('\\"', '"').replace("\\\\", "\\")) == MAX_EXPR


def test_png_and_pdf_are_written(branching_grad, mlp_forward, tmp_path):
    fwd, g = branching_grad
    for graph, ids, name in [(mlp_forward, None, "fwd"), (g, set(fwd.nx.nodes), "grad")]:
        path = draw(graph, tmp_path / "sub" / f"{name}.png", forward_ids=ids, title=name)
        data = path.read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 1000
    assert draw(Graph("empty"), tmp_path / "empty.PDF").read_bytes()[:5] == b"%PDF-"


def test_layers_put_parents_above_children(branching_grad):
    g = branching_grad[1]
    grid = layers(g)
    row = {n: i for i, r in enumerate(grid) for n in r}
    assert sorted(row) == sorted(g.nx.nodes) and all(grid)
    assert all(row[a] < row[b] for a, b in g.nx.edges)
    # a parameter sits right above its first consumer, not in a crowded top row
    w1 = g.by_name("W1").id
    assert min(row[c] for c in g.nx.successors(w1)) == row[w1] + 1


def test_unknown_extension(mlp_forward, tmp_path):
    with pytest.raises(errors.SymcurvError, match=r"\.dot, \.svg, \.png, \.pdf"):
        draw(mlp_forward, tmp_path / "graph.jpg")
    assert not (tmp_path / "graph.jpg").exists()


def test_svg_without_graphviz_says_how_to_fix(mlp_forward, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))
    with pytest.raises(errors.SymcurvError) as info:
        draw(mlp_forward, tmp_path / "graph.svg")
    msg = str(info.value)
    assert "graphviz" in msg.lower() and "apt-get install graphviz" in info.value.fix
    assert ".png" in info.value.fix and ".dot" in info.value.fix
    assert not (tmp_path / "graph.svg").exists()


@pytest.mark.skipif(os.name != "posix", reason="fake dot is a shell script")
def test_svg_runs_graphviz_dot(mlp_forward, tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "dot"
    fake.write_text('#!/bin/sh\n[ "$1" = -Tsvg ] && [ "$2" = -o ] || exit 3\ncat > "$3"\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    path = draw(mlp_forward, tmp_path / "graph.svg", title="t")
    assert path.read_text(encoding="utf-8") == to_dot(mlp_forward, title="t")
    fake.write_text("#!/bin/sh\necho 'syntax error in line 3' >&2\nexit 1\n")
    with pytest.raises(errors.SymcurvError, match="syntax error in line 3"):
        draw(mlp_forward, tmp_path / "bad.svg")


def test_draw_from_graph_json_needs_no_sympy(branching_grad, tmp_path):
    """The load path: a build directory's graph.json, drawn in a fresh interpreter."""
    fwd, g = branching_grad
    data = {"forward": fwd.to_json(), "programs": {"grad": g.to_json()}}
    (tmp_path / "graph.json").write_text(json.dumps(data))
    script = textwrap.dedent(
        f"""
        import json, sys
        from symcurv.ir.graph import Graph
        from symcurv.runtime import graphs
        from symcurv.viz import draw
        root = {str(tmp_path)!r}
        data = json.load(open(root + "/graph.json"))
        g = Graph.from_json(data["programs"]["grad"])
        ids = set(Graph.from_json(data["forward"]).nx.nodes)
        print(draw(g, root + "/direct.dot", forward_ids=ids, title="direct"))
        print(graphs.draw(root, "grad", root + "/grad.dot"))
        print(graphs.draw(root, "forward", root + "/forward.png"))
        assert "sympy" not in sys.modules, "drawing imported sympy"
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "forward.png").read_bytes()[:8] == PNG_MAGIC
    ids = set(fwd.nx.nodes)
    assert (tmp_path / "direct.dot").read_text(encoding="utf-8") == to_dot(
        g, forward_ids=ids, title="direct"
    )
    assert (tmp_path / "grad.dot").read_text(encoding="utf-8") == to_dot(
        g, forward_ids=ids, title="branching: grad"
    )


def test_a_node_naming_its_function_shows_it():
    """elementwise and a separable loss both carry ``fn``: the label names the function
    applied (a node without one shows its op)."""
    g = Graph("fns")
    x = g.add_node("input", [], (3,), True, {"shape": (3,)}, name="x")
    t = g.add_node("target", [], (3,), True, {"shape": (3,)}, name="t")
    y = g.add_node("elementwise", [x.id], (3,), True, {"fn": "tanh"}, name="y")
    loss = g.add_node(
        "separable_loss", [y.id, t.id], (), True, {"fn": "sigmoid_cross_entropy"}, name="l"
    )
    assert label_lines(y, [])[1] == "tanh · B×3"
    assert label_lines(loss, [])[1] == "sigmoid_cross_entropy · B"
    assert label_lines(x, [])[1] == "input · B×3"
