"""The IR graphs stored in a build directory (``graph.json``): read, drawn, and re-run to
say where a computation first went non-finite. Nothing here imports sympy until the
reference interpreter is needed, and nothing imports ``Program`` (no import cycle with
build.py, which loads programs, nor program.py, which calls in here on its error path)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from symcurv import errors

GRAPHS = "graph.json"


def graphs(build_dir: str | os.PathLike) -> dict:
    """The stored IR graphs: ``{"forward": ..., "programs": {name: ...}}`` as Graph objects."""
    from symcurv.ir.graph import Graph

    data = json.loads((Path(build_dir) / GRAPHS).read_text())
    return {
        "forward": Graph.from_json(data["forward"]),
        "programs": {k: Graph.from_json(v) for k, v in data["programs"].items()},
    }


# names that stand for several stored graphs: each is drawn to its own file
GROUPS = {
    "cp_diag": ("cp_S", "cp_TU", "cp_GN", "hvp"),
    "becker_lecun_diag": ("becker_lecun",),
    "input_diag_hessian": ("input_hvp", "input_diag_S", "input_diag_TU", "input_bl"),
    "kfac": ("kfac_cp", "kfac_empirical"),
}


def draw(build_dir: str | os.PathLike, program: str, path: str) -> str | list[str]:
    """Draw ``program``'s stored graph to ``path`` (.dot/.svg/.png/.pdf). ``"forward"`` is
    the model; a name that stands for several graphs (``cp_diag``, ``input_diag_hessian``,
    ``all``) draws each built one beside ``path`` as ``<stem>_<program><suffix>`` and
    returns the list of files."""
    from symcurv import viz

    gs = graphs(build_dir)
    fwd = gs["forward"]

    def one(name: str, out) -> str:
        g = fwd if name == "forward" else gs["programs"][name]
        ids = None if name == "forward" else set(fwd.nx.nodes)
        return str(viz.draw(g, out, forward_ids=ids, title=f"{fwd.name}: {name}"))

    if program in GROUPS or program == "all":
        names = ["forward", *gs["programs"]] if program == "all" else GROUPS[program]
        names = [n for n in names if n == "forward" or n in gs["programs"]]
        if len(names) == 1:
            return one(names[0], path)
        p = Path(path)
        return [one(n, p.with_name(f"{p.stem}_{n}{p.suffix}")) for n in names]
    if program != "forward" and program not in gs["programs"]:
        raise errors.BuildError(
            f"no graph for program '{program}' in this build",
            where=str(build_dir),
            fix=f"choose one of forward, all, {', '.join([*GROUPS, *gs['programs']])} "
            "(a State's static parts: symcurv graph MODEL --program linearize)",
        )
    return one(program, path)


def first_non_finite(
    prog, program: str, key: str, theta, batch, v=None, noise=None
) -> tuple[str, str, bool]:
    """``(node, DSL line, found)`` of the first node whose value is not finite when the program's
    graph is re-run in the reference interpreter (with the call's θ, batch, direction and
    CP noise). When the reference stays finite (a float32 overflow the float64 reference
    does not reproduce) or cannot run, the program's output node for ``key`` is named
    instead (``found`` False): every non-finite result names a node and its DSL line."""
    try:
        g = graphs(prog.build_dir)["programs"][program]
    except Exception:  # a build without its graphs (best effort; the caller raises anyway)
        return f"'{key}' of program '{program}'", f"model '{prog.name}'", False
    try:
        from symcurv.runtime import reference

        def host(a):
            return np.asarray(a.copy_to_host() if hasattr(a, "copy_to_host") else a, np.float64)

        leaves = {n: host(a) for n, a in batch.items()}
        leaves.update({n: host(a) for n, a in (noise or {}).items()})
        leaves.update(prog.unflatten(host(theta)))
        if v is not None:
            views = prog.unflatten(host(v))
            leaves.update({f"v:{k}": a for k, a in views.items()})
        vals = reference.evaluate(g, leaves, keep_all=True)
    except Exception:  # diagnosis is best effort; fall back to the output node
        vals = {}
    for nid in g.topo():
        val = vals.get(nid)
        if val is not None and not np.isfinite(val).all():
            return (*_describe(g, nid), True)
    outs = [o for o in g.outputs if o == key or g.output_type(o).result == key]
    if not outs:
        return f"'{key}'", f"model '{prog.name}'", False
    return (*_describe(g, g.outputs[outs[0]]), False)


def _describe(g, nid: str) -> tuple[str, str]:
    n = g[nid]
    return f"'{n.name}' ({n.op})", n.origin or f"model '{g.name}'"
