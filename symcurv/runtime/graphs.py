"""The IR graphs stored in a build directory (``graph.json``): read and drawn. Nothing
here imports sympy, and nothing imports ``Program`` (no import cycle with build.py, which
loads programs, nor program.py). Where a call went non-finite is runtime/trace.py's,
from the kernels themselves."""

from __future__ import annotations

import json
import os
from pathlib import Path

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
