"""Draw an IR graph as Graphviz DOT text, SVG (through Graphviz) or PNG/PDF (matplotlib).

Drawing must work where symcurv is *used*, not only where it is developed: a loaded build
directory has ``graph.json`` but no sympy work, and many machines have no Graphviz. So this
module needs only networkx and the stored node fields (op, shape, name, attrs, origin);
``.dot`` is plain text written by hand (byte-for-byte deterministic, diff-able), ``.svg``
shells out to ``dot`` only when asked for, and ``.png``/``.pdf`` use matplotlib's Agg
renderer, imported on first use so ``import symcurv`` stays cheap.

Colours say which sweep a node belongs to: ``forward_ids`` names the forward graph's nodes,
every other computed node is part of the derived (backward / curvature) sweep. Leaves keep
their own colour and shape, and output nodes get a double border and an ``⇒ key`` line.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Collection
from pathlib import Path

import networkx as nx

from symcurv import errors
from symcurv.ir.graph import Graph, Node

SUFFIXES = (".dot", ".svg", ".png", ".pdf")
MAX_EXPR = 40  # characters of an elementwise expression shown in a label

# role -> (fill colour, legend text); the order is the legend's order
ROLES = {
    "forward": ("#cfe2f3", "forward sweep"),
    "backward": ("#fcd9b6", "backward / derived sweep"),
    "data": ("#d9ead3", "input / target"),
    "param": ("#fff2cc", "parameter"),
    "const": ("#e6e6e6", "constant"),
    "direction": ("#d5a6bd", "direction v (H v, G v)"),
    "noise": ("#ea9999", "CP noise injection z"),
    "cached": ("#b4a7d6", "cached by linearize"),
}
# Leaf ops by name: the one place outside ops/ that may, because drawings are made from a
# build's graph JSON without importing the op registry (which imports sympy).
LEAF_ROLE = {
    "input": "data",
    "target": "data",
    "param": "param",
    "const": "const",
    "direction": "direction",
    "input_direction": "direction",
    "noise": "noise",
    "cached": "cached",
}
EDGE_COLOUR = "#666666"

# matplotlib layout, in inches at scale 1 (the whole picture shrinks uniformly past the cap)
FONT_PT = 7.0
MAX_FIG_IN = 50.0
DPI = 100
TOP_IN = 1.1  # room for the title and the legend


def draw(
    graph: Graph,
    path: str | os.PathLike,
    *,
    forward_ids: Collection[str] | None = None,
    title: str | None = None,
) -> Path:
    """Draw ``graph`` to ``path``; the suffix (.dot, .svg, .png, .pdf) picks the format.

    ``forward_ids`` are the ids of the forward sweep (None: every node is forward, as in a
    forward graph). Returns the path written.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise errors.SymcurvError(
            f"cannot draw to '{path.name}': unknown file type '{suffix or '(none)'}'",
            fix=f"use one of {', '.join(SUFFIXES)}",
        )
    title = graph.name if title is None else title
    if suffix == ".svg":
        dot = shutil.which("dot")  # checked before anything is written
        if dot is None:
            raise errors.SymcurvError(
                "drawing to .svg needs the Graphviz 'dot' program, which is not on PATH",
                where=str(path),
                fix="install Graphviz (apt-get install graphviz / brew install graphviz / "
                "conda install graphviz) or draw to .png or .dot, which need no system binary",
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".dot":
        path.write_text(to_dot(graph, forward_ids=forward_ids, title=title), encoding="utf-8")
    elif suffix == ".svg":
        _graphviz(dot, to_dot(graph, forward_ids=forward_ids, title=title), path)
    else:
        _matplotlib(graph, path, forward_ids, title)
    return path


# -- what a node looks like (shared by every format) ------------------------------------
def role(node: Node, forward_ids: Collection[str] | None) -> str:
    """Which colour class ``node`` belongs to (a key of ROLES)."""
    if node.op in LEAF_ROLE:
        return LEAF_ROLE[node.op]
    return "forward" if forward_ids is None or node.id in forward_ids else "backward"


def shape_text(node: Node) -> str:
    """``B×4`` for a batched vector, ``4×5`` for a matrix, ``scalar`` / ``B`` for scalars."""
    dims = [str(d) for d in node.shape]
    if node.batched:
        dims.insert(0, "B")
    return "×".join(dims) or "scalar"


def short(text: str, limit: int = MAX_EXPR) -> str:
    """One line of at most ``limit`` characters (long sympy expressions end in '…')."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def label_lines(node: Node, out_keys: list[str]) -> list[str]:
    """Name, op and shape, the expression (elementwise) or value (const), output keys.
    A node that names the function it applies (``fn``: an elementwise tanh, a separable
    loss's sigmoid_cross_entropy) shows that function instead of its op."""
    op = node.attr("fn") or node.op
    lines = [node.name, f"{op} · {shape_text(node)}"]
    if node.attr("expr") is not None:
        lines.append(short(node.attr("expr")))
    elif node.attr("value") is not None:  # a constant's value (the one op that stores one)
        lines.append(f"= {node.attr('value')!r}")
    if out_keys:
        lines.append(short("⇒ " + ", ".join(out_keys)))
    return lines


def _outputs(graph: Graph) -> dict[str, list[str]]:
    keys: dict[str, list[str]] = {}
    for key, nid in graph.outputs.items():
        keys.setdefault(nid, []).append(key)
    return keys


def _roles_present(graph: Graph, forward_ids: Collection[str] | None) -> list[str]:
    present = {role(n, forward_ids) for n in graph.nodes()}
    return [r for r in ROLES if r in present]


# -- DOT ----------------------------------------------------------------------------------
def quote(text: str) -> str:
    """A DOT double-quoted string: backslashes, quotes and newlines escaped."""
    text = str(text).replace("\\", "\\\\").replace('"', '\\"')
    return '"' + text.replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\n") + '"'


def _attrs(**kv: str | int | float) -> str:
    return "[" + ", ".join(f"{k}={quote(v)}" for k, v in kv.items()) + "]"


def to_dot(
    graph: Graph, *, forward_ids: Collection[str] | None = None, title: str | None = None
) -> str:
    """DOT text for ``graph``, in the graph's topological order (so it is deterministic).

    Edges into a node with several operands are numbered (0, 1, ...) because operand order
    matters for ``x*tanh(y)``; the DSL line of each node is its tooltip in the SVG.
    """
    title = graph.name if title is None else title
    outs = _outputs(graph)
    lines = [
        f"digraph {quote(graph.name)} {{",
        "  graph " + _attrs(label=title, labelloc="t", fontsize=18, fontname="Helvetica") + ";",
        '  graph [rankdir="TB", nodesep="0.25", ranksep="0.35"];',
        '  node [shape="box", style="filled,rounded", fontname="Helvetica", fontsize="10"];',
        f'  edge [color="{EDGE_COLOUR}", arrowsize="0.6", fontsize="8"];',
        "  subgraph cluster_legend {",
        '    graph [label="legend", fontsize="11", style="dashed", color="#999999"];',
    ]
    legend = []
    for r in _roles_present(graph, forward_ids):
        legend.append(f"legend_{r}")
        shape = "ellipse" if r in LEAF_ROLE.values() else "box"
        attrs = _attrs(label=ROLES[r][1], fillcolor=ROLES[r][0], shape=shape)
        lines.append(f'    "legend_{r}" {attrs};')
    if outs:
        legend.append("legend_output")
        lines.append(
            '    "legend_output" '
            + _attrs(label="output (⇒ key)", fillcolor="white", peripheries=2, penwidth=1.6)
            + ";"
        )
    for a, b in zip(legend, legend[1:]):
        lines.append(f'    {quote(a)} -> {quote(b)} [style="invis"];')
    lines.append("  }")
    for n in graph.nodes():
        r = role(n, forward_ids)
        text = "\\n".join(quote(line)[1:-1] for line in label_lines(n, outs.get(n.id, [])))
        extra = {"shape": "ellipse"} if r in LEAF_ROLE.values() else {}
        if n.id in outs:
            extra.update(peripheries=2, penwidth=1.6)
        attrs = _attrs(fillcolor=ROLES[r][0], tooltip=n.origin or n.op, **extra)
        lines.append(f'  {quote(n.id)} [label="{text}", ' + attrs[1:] + ";")
    for n in graph.nodes():
        for p in dict.fromkeys(n.inputs):
            slots = [str(i) for i, q in enumerate(n.inputs) if q == p]
            label = f" [label={quote(','.join(slots))}]" if len(n.inputs) > 1 else ""
            lines.append(f"  {quote(p)} -> {quote(n.id)}{label};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _graphviz(dot: str, text: str, path: Path) -> None:
    cmd = [dot, "-Tsvg", "-o", str(path)]
    try:
        done = subprocess.run(cmd, input=text, text=True, capture_output=True, timeout=300)
        reason = done.stderr.strip() or f"exit status {done.returncode}"
        failed = done.returncode != 0
    except (OSError, subprocess.TimeoutExpired) as e:
        reason, failed = str(e), True
    if failed:
        raise errors.SymcurvError(
            f"Graphviz 'dot' failed: {reason}",
            where=str(path),
            fix="draw to .dot and run dot by hand to see the problem, or draw to .png",
        )


# -- matplotlib ---------------------------------------------------------------------------
def layers(graph: Graph) -> list[list[str]]:
    """Rows of node ids, parents above children, with few edge crossings.

    Layers come from ``nx.topological_generations``; a leaf (parameter, input, constant)
    then moves down to just above its first consumer, so ``W2`` sits next to ``W2 @ h``
    instead of in a crowded top row. Within a row, a few barycentre sweeps (Sugiyama)
    order nodes under the mean position of their neighbours; ties keep topological order.
    """
    g = graph.nx
    level = {n: i for i, gen in enumerate(nx.topological_generations(g)) for n in gen}
    for n in g:
        if g.in_degree(n) == 0 and g.out_degree(n) > 0:
            level[n] = min(level[c] for c in g.successors(n)) - 1
    rank = {nid: i for i, nid in enumerate(graph.topo())}
    rows: dict[int, list[str]] = {}
    for nid in graph.topo():
        rows.setdefault(level[nid], []).append(nid)
    grid = [rows[k] for k in sorted(rows)]
    pos = {n: i - (len(row) - 1) / 2 for row in grid for i, n in enumerate(row)}
    sweeps = [(r, g.predecessors) for r in grid[1:]] + [
        (r, g.successors) for r in reversed(grid[:-1])
    ]
    for _ in range(4):
        for row, neighbours in sweeps:
            xs = {n: [pos[m] for m in neighbours(n)] for n in row}
            row.sort(key=lambda n: (sum(xs[n]) / len(xs[n]) if xs[n] else pos[n], rank[n]))
            pos.update({n: i - (len(row) - 1) / 2 for i, n in enumerate(row)})
    return grid


def _matplotlib(graph: Graph, path: Path, forward_ids, title: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Patch

    outs = _outputs(graph)
    labels = {n.id: label_lines(n, outs.get(n.id, [])) for n in graph.nodes()}
    grid = layers(graph)
    line_in = FONT_PT * 1.35 / 72
    widest = max((len(s) for ls in labels.values() for s in ls), default=8)
    box_w = min(max(widest * 0.58 * FONT_PT / 72 + 0.2, 1.0), 2.7)
    box_h = max((len(ls) for ls in labels.values()), default=2) * line_in + 0.12
    col, row = box_w + 0.3, box_h + 0.45
    width = max(max((len(r) for r in grid), default=1) * col + 0.6, 7.0)
    height = len(grid) * row + TOP_IN + 0.3
    s = min(1.0, MAX_FIG_IN / width, MAX_FIG_IN / height)

    fig = Figure(figsize=(width * s, height * s), dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.axis("off")
    xy = {}
    for i, r in enumerate(grid):
        y = height - TOP_IN - (i + 0.5) * row
        for j, nid in enumerate(r):
            xy[nid] = (width / 2 + (j - (len(r) - 1) / 2) * col, y)

    for child in graph.nodes():
        cx, cy = xy[child.id]
        for p in dict.fromkeys(child.inputs):
            px, py = xy[p]
            span = round((py - cy) / row)
            arrow = FancyArrowPatch(
                (px, py - box_h / 2), (cx, cy + box_h / 2),
                arrowstyle="-|>", mutation_scale=9 * s, lw=0.7 * s, color=EDGE_COLOUR,
                connectionstyle=f"arc3,rad={0.0 if span <= 1 else 0.12}", zorder=1,
                shrinkA=0, shrinkB=0, alpha=0.8,
            )  # fmt: skip
            ax.add_artist(arrow)
    for n in graph.nodes():
        x, y = xy[n.id]
        r = role(n, forward_ids)
        leaf = r in LEAF_ROLE.values()
        style = "round,pad=0,rounding_size=" + ("0.18" if leaf else "0.06")
        lw = 1.8 if n.id in outs else 0.8
        ax.add_artist(FancyBboxPatch(
            (x - box_w / 2, y - box_h / 2), box_w, box_h, boxstyle=style,
            facecolor=ROLES[r][0], edgecolor="#333333", lw=lw * s, zorder=2,
        ))  # fmt: skip
        if n.id in outs:  # double border, like Graphviz's peripheries=2
            ax.add_artist(FancyBboxPatch(
                (x - box_w / 2 - 0.05, y - box_h / 2 - 0.05), box_w + 0.1, box_h + 0.1,
                boxstyle=style, facecolor="none", edgecolor="#333333", lw=lw * s, zorder=2,
            ))  # fmt: skip
        lines = labels[n.id]
        top = y + len(lines) * line_in / 2
        for k, text in enumerate(lines):
            ax.text(
                x, top - (k + 0.5) * line_in, text, ha="center", va="center",
                fontsize=FONT_PT * s, fontweight="bold" if k == 0 else "normal",
                parse_math=False, zorder=3, clip_on=False,
            )  # fmt: skip

    ax.text(width / 2, height - 0.35, title, ha="center", va="center", fontsize=14 * s,
            fontweight="bold", parse_math=False)  # fmt: skip
    handles = [
        Patch(facecolor=ROLES[r][0], edgecolor="#333333", label=ROLES[r][1])
        for r in _roles_present(graph, forward_ids)
    ]
    if outs:
        handles.append(
            Patch(facecolor="white", edgecolor="#333333", lw=1.8, label="output (⇒ key)")
        )
    if handles:
        fig.legend(
            handles=handles, loc="center", ncol=len(handles), fontsize=8 * s, frameon=False,
            bbox_to_anchor=(0.5, 1 - 0.8 / height),
        )  # fmt: skip
    fig.savefig(path, format=path.suffix[1:].lower(), dpi=DPI)
