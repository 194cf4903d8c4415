"""``sc.compile``: DSL model -> derived graphs -> passes -> lowering -> source -> Program.

Data flows one way (DESIGN.md §2); this module only strings the stages together and
reports progress, then loads the result exactly as a later process would (``sc.load``) and
compiles every kernel ahead of time so Numba's on-disk cache is warm.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

import symcurv
from symcurv import errors
from symcurv.ir.graph import Graph
from symcurv.progress import bar as progress_bar
from symcurv.runtime import backends, model_leaves
from symcurv.runtime import compile_parallel as parallel_compile

# program name -> derived-graph builder (later issues add hvp, gnvp, cp_diag, ...)


def _loss_graph(fwd: Graph) -> Graph:
    g = fwd.copy()
    g.outputs = {"objective": fwd.outputs["objective"]}
    return g


def _grad_graph(fwd: Graph) -> Graph:
    from symcurv.transforms.grad import gradient_graph

    return gradient_graph(fwd)


def _hvp_graph(fwd: Graph) -> Graph:
    from symcurv.transforms.rop import hvp_graph

    return hvp_graph(fwd)


def _gnvp_graph(fwd: Graph) -> Graph:
    from symcurv.transforms.gauss_newton import gnvp_graph

    return gnvp_graph(fwd)


def _cp_graph(estimator: str) -> Callable[[Graph], Graph]:
    def build(fwd: Graph) -> Graph:
        from symcurv.transforms.curvprop import cp_graph

        return cp_graph(fwd, estimator)

    return build


def _bl_graph(fwd: Graph) -> Graph:
    from symcurv.transforms.diag import becker_lecun_graph

    return becker_lecun_graph(fwd)


def _input_graph(kind: str) -> Callable[[Graph], Graph]:
    def build(fwd: Graph) -> Graph:
        from symcurv.transforms import inputs

        if kind in inputs.CP_ESTIMATORS:
            return inputs.input_cp_graph(fwd, kind)
        return {
            "grad": inputs.input_grad_graph,
            "hvp": inputs.input_hvp_graph,
            "bl": inputs.input_becker_lecun_graph,
        }[kind](fwd)

    return build


def _sum_sq_grad_graph(fwd: Graph) -> Graph:
    from symcurv.transforms.gradsq import sum_sq_grad_graph

    return sum_sq_grad_graph(fwd)


def _per_case_grad_graph(fwd: Graph) -> Graph:
    from symcurv.transforms.percase import per_case_grad_graph

    return per_case_grad_graph(fwd)


def _per_case_grad_norm_graph(fwd: Graph) -> Graph:
    from symcurv.transforms.percase import per_case_grad_norm_graph

    return per_case_grad_norm_graph(fwd)


def _kfac_graph(kind: str) -> Callable[[Graph], Graph]:
    def build(fwd: Graph) -> Graph:
        from symcurv.transforms.kfac import kfac_graph

        return kfac_graph(fwd, kind)

    return build


PROGRAMS: dict[str, Callable[[Graph], Graph]] = {
    "loss": _loss_graph,
    "grad": _grad_graph,
    "hvp": _hvp_graph,
    "gnvp": _gnvp_graph,
    "cp_S": _cp_graph("S"),
    "cp_TU": _cp_graph("TU"),
    "cp_GN": _cp_graph("GN"),
    "becker_lecun": _bl_graph,
    "sum_sq_grad": _sum_sq_grad_graph,
    # derivatives with respect to the data, per case (transforms/inputs.py)
    "input_grad": _input_graph("grad"),
    "input_hvp": _input_graph("hvp"),
    "input_diag_S": _input_graph("S"),
    "input_diag_TU": _input_graph("TU"),
    "input_bl": _input_graph("bl"),
    "per_case_grad": _per_case_grad_graph,
    "per_case_grad_norm": _per_case_grad_norm_graph,
    # K-FAC factor statistics (transforms/kfac.py): "exact" runs kfac_cp once per loss-input
    # coordinate, "fisher_mc" runs kfac_empirical on sampled targets
    "kfac_cp": _kfac_graph("curvature_prop"),
    "kfac_empirical": _kfac_graph("empirical"),
}
# names users pass in ``programs=`` that stand for several built programs (HI = Hutchinson
# runs through hvp)
ALIASES = {
    "cp_diag": ["cp_S", "cp_TU", "cp_GN", "hvp"],
    "becker_lecun_diag": ["becker_lecun"],
    "linearize": [],
    # the exact method runs through input_hvp (one product per input coordinate)
    "input_diag_hessian": ["input_hvp", "input_diag_S", "input_diag_TU", "input_bl"],
    "kfac": ["kfac_cp", "kfac_empirical"],
}
# programs that exist only for some models (a Gauss-Newton split): with programs="all"
# they are skipped with the reason recorded; asked for by name, the error is raised
OPTIONAL = (
    "gnvp",
    "cp_GN",
    "input_grad",
    "input_hvp",
    "input_diag_S",
    "input_diag_TU",
    "input_bl",
    "kfac_cp",
    "kfac_empirical",
)
BACKENDS = tuple(backends.BACKENDS)
DTYPES = ("float32", "float64")


def default_build_dir(model_name: str, digest: str, backend: str, dtype: str) -> Path:
    base = Path(os.environ.get("SYMCURV_CACHE", Path.home() / ".cache" / "symcurv"))
    return base / f"{model_name}-{digest}-{backend}-{dtype}"


def _parse_programs(programs: str | Iterable[str]) -> list[str]:
    if programs == "all":
        return list(PROGRAMS)
    if isinstance(programs, str):
        programs = [p.strip() for p in programs.split(",") if p.strip()]
    unknown = [p for p in programs if p not in PROGRAMS and p not in ALIASES]
    if unknown or not programs:
        raise errors.ModelError(
            f"unknown program(s) {unknown or programs}",
            fix=f"choose from {', '.join([*PROGRAMS, *ALIASES])} or 'all'",
        )
    out: list[str] = []
    for p in programs:
        out += ALIASES.get(p, [p])
    return list(dict.fromkeys(out))


class Progress:
    """Stage messages on stderr (quiet with ``progress=False``)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.t0 = time.perf_counter()

    def __call__(self, msg: str) -> None:
        if self.enabled:
            print(
                f"[symcurv {time.perf_counter() - self.t0:6.1f}s] {msg}",
                file=sys.stderr,
                flush=True,
            )


def build(
    model,
    programs: str | Iterable[str] = ("loss", "grad"),
    backend: str = "cpu",
    dtype: str = "float64",
    build_dir: str | os.PathLike | None = None,
    *,
    parallel: bool = False,
    progress: bool = True,
) -> Path:
    """Derive, optimise, lower and emit every program; write the build directory."""
    from symcurv.codegen import cpu, cuda, guards, kernel_files, lower, schedule
    from symcurv.codegen import parts as program_parts
    from symcurv.ir.validate import validate
    from symcurv.passes import optimize
    from symcurv.transforms import kfac

    say = Progress(progress)
    from symcurv.dsl.model import Model

    if not isinstance(model, Model):
        raise errors.ModelError(
            f"sc.compile needs an sc.Model, got {type(model).__name__} {model!r:.60}",
            fix="pass the Model your factory returns: sc.compile(model(), ...)",
        )
    if backend not in BACKENDS:
        raise errors.ModelError(
            f"unknown backend {backend!r}", fix=f"choose one of {', '.join(BACKENDS)}"
        )
    if str(np.dtype(dtype)) not in DTYPES:
        raise errors.ModelError(f"unsupported dtype {dtype!r}", fix="use float32 or float64")
    if parallel and backend != "cpu":
        raise errors.ModelError(
            f"parallel=True is a cpu option (prange loops); backend {backend!r} has its own grid",
            fix="drop parallel=True (or --parallel)",
        )
    dtype = str(np.dtype(dtype))
    names = _parse_programs(programs)
    fwd = validate(model.forward_graph(), "the DSL")
    digest = fwd.digest()
    root = (
        Path(build_dir)
        if build_dir is not None
        else default_build_dir(model.name, digest, backend, dtype)
    )
    say(f"model '{model.name}': {len(fwd)} forward nodes, IR hash {digest}")

    layout, offset = [], 0
    for name, rec in model.params.items():
        size = int(np.prod(rec["shape"]))
        layout.append(
            {
                "name": name,
                "shape": list(rec["shape"]),
                "offset": offset,
                "size": size,
                "init": rec["init"].spec(),
                "origin": fwd[rec["id"]].origin,
            }
        )
        offset += size
    offsets = {p["name"]: (p["offset"], p["size"]) for p in layout}
    files: dict[str, str] = {}
    specs: dict[str, dict] = {}
    graphs = {"forward": fwd.to_json(), "programs": {}}
    skipped: dict[str, str] = {}
    skipped_errors: dict[str, str] = {}  # the error class a call of a skipped program raises
    for name in names:
        t = time.perf_counter()
        try:
            derived = validate(PROGRAMS[name](fwd), f"transform '{name}'")
        except errors.NotApplicableError as e:
            if programs != "all" or name not in OPTIONAL:
                raise
            skipped[name] = str(e)
            skipped_errors[name] = type(e).__name__
            say(f"skipped '{name}': {str(e).splitlines()[0]}")
            continue
        g = validate(optimize(derived), f"the passes of '{name}'")
        parts = program_parts.parts(name, g, backend)
        n_kernels = 0
        for part, pg in parts.items():
            low = lower.lower(pg)
            plan = schedule.plan(low, offsets)
            rel = f"kernels/{part.replace('.', '_')}.py"
            meta = dict(model=model.name, dtype=dtype, ir_hash=digest, version=symcurv.__version__)
            emitter = {"cpu": cpu, "cuda": cuda}[backend]
            emitted = emitter.emit(part, low, plan, **meta, parallel=parallel)
            files.update(kernel_files.files(rel, emitted))
            specs[part] = {
                "file": rel,
                "leaves": plan.leaves,
                "vectors": plan.vectors,
                "extras": plan.extras,
                "out_flat": plan.out_flat,
                # a list, not a dict: the manifest is written with sorted keys, and these
                # are the run() arguments in order
                "out_plain": [[k, *v] for k, v in plan.out_plain.items()],
                "slots": [[s.name, s.batched, s.size] for s in plan.slots],
                "guarded": guards.guarded_names(low) if backend == "cpu" else [],
                # per-case outputs the driver proves finite by their product's operands
                "bounded": guards.bounded_keys(low, plan) if backend == "cpu" else [],
                "kernels": [k.name for k in low.kernels],
            }
            if hasattr(emitter, "launches"):  # [kernel, threads per block, grid] for info
                specs[part]["launch"] = emitter.launches(low)
            n_kernels += len(low.kernels)
        for role in ("static", "whole"):
            if f"{name}.{role}" in parts:
                specs[name][role] = f"{name}.{role}"
        graphs["programs"][name] = g.to_json()
        say(
            f"derived '{name}': {len(derived)} -> {len(g)} nodes after passes, "
            f"{n_kernels} kernels{' (' + ' + '.join(parts) + ')' if len(parts) > 1 else ''} "
            f"({time.perf_counter() - t:.1f}s)"
        )
    files["graph.json"] = json.dumps(graphs, sort_keys=True, default=str) + "\n"
    import numba

    manifest = {
        "model": model.name,
        "backend": backend,
        "dtype": dtype,
        "parallel": parallel,
        "ir_hash": digest,
        "n_params": offset,
        "params": layout,
        "inputs": [
            {
                "name": n,
                "size": rec["shape"][0],
                "role": rec["role"],
                "origin": fwd[rec["id"]].origin,
                **({"labels": True} if rec.get("labels") else {}),
            }
            for n, rec in model.inputs.items()
        ],
        "programs": specs,
        # leaves of the model's own graph bound on every call (CP noise, basis vectors)
        "model_leaves": model_leaves.describe(fwd),
        "kfac": kfac.manifest(fwd),
        "skipped": skipped,
        "skipped_errors": skipped_errors,
        "versions": {
            "symcurv": symcurv.__version__,
            "numba": numba.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
    }
    from symcurv.runtime import build as build_mod

    out = build_mod.write(root, manifest, files)
    say(f"wrote {out}")
    return out


def warm(prog, progress: bool = True) -> None:
    """Compile every program now (ahead of time); Numba writes the machine code to the
    build's cache for every later process. Each distinct kernel is compiled once, for
    all the programs that share it (``codegen/kernel_files.py``), in parallel processes,
    one per CPU (``SYMCURV_COMPILE_WORKERS`` overrides; see
    ``runtime/compile_parallel.py``); this process then loads every program from the
    cache. A tqdm bar on stderr ticks as each kernel is compiled, and a line names each
    program loaded (none with ``progress=False``). A GPU's programs are compiled here by
    running each once; the CUDA simulator compiles nothing, so there it is skipped."""
    say = Progress(progress)
    if not prog.device.compiles_ahead:
        say(f"{prog.backend} (simulated): nothing to compile ahead of time")
        return
    names = list(prog.programs)
    if not getattr(prog.device, "compiles_in_workers", False):  # a GPU: one call compiles
        for name, seconds in parallel_compile.compile_by_running(prog, names):
            say(f"compiled '{name}' ({seconds:.1f}s)")
        return
    t_all = time.perf_counter()
    unrecorded: list[str] = []  # programs whose dry run failed: compiled by running below
    found = parallel_compile.kernel_signatures(prog, names, unrecorded)
    order = parallel_compile.cold(found)
    n_workers = parallel_compile.workers_wanted(len(order), prog.device)
    bar = progress_bar(
        total=len(found),
        desc=f"[symcurv] compiling '{prog.name}' with Numba"
        + (f" in {n_workers} processes" if n_workers > 1 else ""),
        unit="kernel",
        enabled=progress,
    )

    bar.update(len(found) - len(order))  # compiled or in Numba's cache already

    def done(key: str, seconds: float, where: str) -> None:
        bar.update(1)
        bar.set_postfix_str(key.rsplit(":", 1)[-1])

    recorded = [n for n in names if n not in unrecorded]  # a worker repeats this dry run
    fell_back, in_workers = parallel_compile.compile_kernels(
        prog, recorded, found, order, done, n_workers
    )
    bar.close()
    missed = parallel_compile.load_compiled(found, in_workers)
    list(parallel_compile.compile_by_running(prog, unrecorded))
    users = Counter(k for n in names for k in set(parallel_compile.program_keys(prog, n)))
    for name in names:
        keys = parallel_compile.program_keys(prog, name)
        shared = sum(users[k] > 1 for k in set(keys))
        say(f"compiled '{name}' ({len(set(keys))} kernels, {shared} shared with other programs)")
    if missed:
        say(f"Numba's cache missed {', '.join(missed)} here: compiled again in this process")
    if fell_back:
        say(f"compiled serially in this process: {fell_back}")
    say(
        f"compiled {len(order)} distinct kernels of {len(names)} programs in "
        f"{time.perf_counter() - t_all:.1f}s ({n_workers} processes, {len(in_workers)} "
        f"kernels in worker processes); Numba's cache in {prog.build_dir} makes later "
        "loads fast"
    )


def compile(  # noqa: A001 (the public name DESIGN.md fixes)
    model,
    programs: str | Iterable[str] = ("loss", "grad"),
    backend: str = "cpu",
    dtype: str = "float64",
    build_dir: str | os.PathLike | None = None,
    *,
    parallel: bool = False,
    progress: bool = True,
):
    """Build ``model`` ahead of time into ``build_dir`` and return the loaded Program."""
    from symcurv.runtime import build as build_mod

    if backend in backends.BACKENDS:  # fail before deriving anything when it cannot run here
        backends.get(backend).require(where=f"model '{getattr(model, 'name', model)}'")
    root = build(model, programs, backend, dtype, build_dir, parallel=parallel, progress=progress)
    prog = build_mod.load(root)
    warm(prog, progress)
    return prog


# every name ``symcurv graph --program`` (and ``program_graphs``) draws: the forward graph,
# each program, the user-facing aliases, and "all"
GRAPH_NAMES = ("forward", *PROGRAMS, *ALIASES, "all")


def program_graphs(model, program: str) -> tuple[Graph, dict[str, Graph], dict[str, str]]:
    """``(forward graph, {name: optimised graph}, {skipped name: reason})`` for any name
    in ``GRAPH_NAMES``, without compiling anything. One program gives one graph; a name
    that stands for several gives each: ``cp_diag`` its estimators' programs (and ``hvp``,
    which HI runs through), ``linearize`` the static part a State caches of every product
    program (``hvp.static`` ...), ``all`` the forward graph and every program. Programs
    that do not exist for this model (a Gauss-Newton split) are skipped with the reason,
    unless asked for by name."""
    from symcurv.passes import optimize, split

    if program not in GRAPH_NAMES:
        raise errors.ModelError(
            f"no graph named {program!r}",
            fix=f"choose one of {', '.join(GRAPH_NAMES)}",
        )
    fwd = model.forward_graph()
    if program == "forward":
        return fwd, {"forward": fwd}, {}
    if program == "all":
        names = list(PROGRAMS)
    elif program == "linearize":
        # the programs a State runs (the K-FAC factors run on (θ, batch) directly)
        off_state = ("loss", "grad", "becker_lecun", "sum_sq_grad", "kfac_cp", "kfac_empirical")
        names = [p for p in PROGRAMS if p not in off_state]
    else:
        names = ALIASES.get(program, [program])
    graphs: dict[str, Graph] = {"forward": fwd} if program == "all" else {}
    skipped: dict[str, str] = {}
    for name in names:
        try:
            g = optimize(PROGRAMS[name](fwd))
        except errors.NotApplicableError as e:
            if program == name:
                raise
            skipped[name] = str(e).splitlines()[0]
            continue
        if program == "linearize":
            if any(split.is_dynamic(n) for n in g.nodes()):
                graphs[f"{name}.static"] = split.split(g)[0]
        else:
            graphs[name] = g
    return fwd, graphs, skipped


def program_graph(model, program: str) -> tuple[Graph, Graph]:
    """(forward graph, the optimised graph of ``program``), without compiling anything;
    ``program="forward"`` gives the forward graph twice. For a name that stands for
    several graphs, see :func:`program_graphs`."""
    fwd, graphs, _ = program_graphs(model, program)
    if len(graphs) != 1:
        raise errors.ModelError(
            f"{program!r} stands for {len(graphs)} graphs ({', '.join(graphs)})",
            fix="use pipeline.program_graphs, or name one program",
        )
    return fwd, next(iter(graphs.values()))
