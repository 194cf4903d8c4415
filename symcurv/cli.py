"""The ``symcurv`` command line: demo, build, graph, info, check.

symcurv demo [-o DIR]
symcurv build MODEL.py[:factory] -o DIR [--backend cpu|cuda] [--programs all|loss,grad] [--drivers]
symcurv graph MODEL.py[:factory] --program grad -o FILE.svg|.png|.dot
symcurv info DIR
symcurv check MODEL.py[:factory]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

from symcurv import errors


def _user_code_error(e: Exception, path: Path, doing: str) -> errors.ModelError:
    """A one-line report of an exception raised by the user's model code, at the innermost
    line of the model file in its traceback."""
    import traceback

    frames = [f for f in traceback.extract_tb(e.__traceback__) if Path(f.filename) == path]
    where = f"{path}:{frames[-1].lineno}" if frames else str(path)
    return errors.ModelError(
        f"{doing} raised {type(e).__name__}: {e}",
        where=where,
        fix="fix the model file (run it with python to see the full traceback)",
    )


def load_model(spec: str):
    """``path/to/file.py[:factory]`` -> the Model the factory returns (default ``model``)."""
    path, _, factory = spec.partition(":")
    factory = factory or "model"
    p = Path(path)
    if not p.is_file():
        raise errors.ModelError(f"no model file {path}", fix="pass MODEL.py[:factory]")
    name = f"symcurv_model_{abs(hash(p.resolve()))}"
    mod_spec = importlib.util.spec_from_file_location(name, p)
    module = importlib.util.module_from_spec(mod_spec)
    sys.path.insert(0, str(p.parent.resolve()))
    try:
        mod_spec.loader.exec_module(module)
    except SyntaxError as e:
        line = f"{path}:{e.lineno}" if e.lineno else path
        src = (e.text or "").strip()
        raise errors.ModelError(
            f"syntax error in the model file: {e.msg}" + (f" in `{src}`" if src else ""),
            where=line,
            fix="correct the Python syntax at that line",
        ) from None
    except errors.SymcurvError:
        raise
    except Exception as e:
        raise _user_code_error(e, p, "running the model file") from None
    finally:
        sys.path.pop(0)
    fn = getattr(module, factory, None)
    if fn is None or not callable(fn):
        found = [
            k
            for k, v in vars(module).items()
            if callable(v) and not k.startswith("_") and getattr(v, "__module__", None) == name
        ]
        raise errors.ModelError(
            f"{path} has no function '{factory}'", fix=f"name one of {found} as {path}:NAME"
        )
    import symcurv as sc

    try:
        m = fn()
    except errors.SymcurvError:
        raise
    except Exception as e:
        raise _user_code_error(e, p, f"calling {factory}()") from None
    if not isinstance(m, sc.Model):
        raise errors.ModelError(
            f"{path}:{factory}() returned {type(m).__name__}, not an sc.Model",
            fix="return the Model from the factory",
        )
    return m


def graph_path(out: Path, program: str) -> Path:
    """``g.png`` + ``cp_S`` -> ``g_cp_S.png``: one file per graph of a name that stands for
    several (``all``, ``cp_diag``, ``linearize``)."""
    return out.with_name(f"{out.stem}_{program.replace('.', '_')}{out.suffix}")


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(out)


TOLERANCE = {"float64": 1e-9, "float32": 2e-4}


def check(
    model,
    *,
    dtype: str = "float64",
    programs="all",
    build_dir=None,
    batch_size: int = 8,
    out=None,
) -> bool:
    """Compile the programs (default every one) into ``build_dir`` — None: the cache
    directory ``sc.compile`` uses with ``build_dir=None`` (``$SYMCURV_CACHE`` or
    ``~/.cache/symcurv/<model>-<IR hash>-<backend>-<dtype>``), so a second check of an
    unchanged model reuses Numba's compiled code — and verify them with
    :func:`check_built`; True when all pass."""
    import symcurv as sc

    if programs != "all":  # the central differences of grad and the input programs need loss
        names = programs.split(",") if isinstance(programs, str) else list(programs)
        programs = [n.strip() for n in names] + (["loss"] if "loss" not in names else [])
    prog = sc.compile(model, programs=programs, dtype=dtype, build_dir=build_dir)
    return check_built(prog, out, batch_size)


def info(build_dir: str, out=None) -> None:
    from symcurv.runtime import build, initializers

    out = out or sys.stdout

    man = build.read_manifest(build_dir)
    build.verify(build_dir, man)
    v = man["versions"]
    print(
        f"model {man['model']}  backend {man['backend']}  dtype {man['dtype']}  "
        f"parallel {man['parallel']}  IR hash {man['ir_hash']}",
        file=out,
    )
    print(
        f"built with symcurv {v['symcurv']}, numba {v['numba']}, numpy {v['numpy']}, "
        f"Python {v['python']}; the manifest and all {len(man['files'])} file hashes verified",
        file=out,
    )
    print(f"\n{man['n_params']} parameters:", file=out)
    rows = [
        [
            p["name"],
            "x".join(map(str, p["shape"])),
            p["offset"],
            initializers.describe(p["init"]),
            p["origin"],
        ]
        for p in man["params"]
    ]
    print(_table(rows, ["name", "shape", "offset", "init", "DSL"]), file=out)
    print("\ninputs:", file=out)
    print(
        _table(
            [[d["name"], d["role"], d["size"]] for d in man["inputs"]], ["name", "role", "width"]
        ),
        file=out,
    )
    print("\nprograms:", file=out)
    itemsize = 4 if man["dtype"] == "float32" else 8
    rows = []
    for name, spec in man["programs"].items():
        per_case = sum(s for _, b, s in spec["slots"] if b) * itemsize
        fixed = sum(s for _, b, s in spec["slots"] if not b) * itemsize
        rows.append(
            [
                name,
                spec["file"],
                len(spec["kernels"]),
                len(spec["slots"]),
                f"{per_case / 1024:.1f} KiB/case + {fixed / 1024:.1f} KiB",
            ]
        )
    print(_table(rows, ["program", "source", "kernels", "buffers", "scratch memory"]), file=out)
    _kfac_blocks(man, out)
    for name, reason in man.get("skipped", {}).items():
        first, _, rest = reason.partition("\n")
        print(f"\nskipped '{name}' (not built for this model): {first}", file=out)
        if rest:
            print(rest, file=out)
    if man["backend"] == "cuda":
        _cuda_launches(man, out)


def _kfac_blocks(man: dict, out) -> None:
    """K-FAC's Kronecker blocks (dense layers a = W h (+ b)); every other parameter gets
    a Gauss-Newton diagonal estimate (docs/kfac.md)."""
    layers = man.get("kfac", {}).get("layers", [])
    covered = {n for L in layers for n in (L["weight"], L["bias"]) if n}
    rest = [p["name"] for p in man["params"] if p["name"] not in covered]
    rows = [
        [L["weight"], L["bias"] or "-", f"{L['n_in']}", f"{L['n_out']}", L["origin"]]
        for L in layers
    ]
    print("\nK-FAC blocks (A over [h; 1], G over the pre-activation):", file=out)
    print(_table(rows, ["weight", "bias", "n_in", "n_out", "DSL"]), file=out)
    print(f"diagonal (outside dense layers): {', '.join(rest) or 'none'}", file=out)


def _cuda_launches(man: dict, out) -> None:
    """Per-kernel launch configuration of a cuda build (as recorded by the emitter)."""
    from symcurv.runtime import cuda_geometry

    geo = cuda_geometry.GPU
    print(
        f"\nCUDA launches (GPU geometry, runtime/cuda_geometry.py): grids are capped at "
        f"{geo.max_blocks} blocks and\nevery kernel loops grid-stride; the simulator runs the "
        f"same kernels with {cuda_geometry.SIMULATOR.threads}-thread blocks.",
        file=out,
    )
    for name, spec in man["programs"].items():
        print(f"\n{name}:", file=out)
        rows = [[k, threads, grid] for k, threads, grid in spec.get("launch", [])]
        print(_table(rows, ["kernel", "threads per block", "blocks"]), file=out)


# what the demo builds, draws and verifies: the programs benchmarks/peers.py compares with
# JAX (one of each kind: the loss, its gradient, both curvature products, a CP diagonal
# estimate, a derivative with respect to the data). All 18 take ~3x as long to compile;
# every program is verified in the test suite (tests/runtime).
DEMO_PROGRAMS = ("loss", "grad", "hvp", "gnvp", "cp_S", "input_grad")


def _demo(args) -> int:
    import symcurv as sc
    from symcurv import pipeline
    from symcurv.runtime import build

    root = Path(__file__).resolve().parents[1] / "examples"
    example = root / "cp_net.py"
    if not example.is_file():
        raise errors.ModelError(
            f"the demo needs {example} (a source checkout)",
            fix="run from a clone: pip install -e . && symcurv demo",
        )
    out = Path(args.output)
    print(
        f"symcurv demo: building {example.name} (the 256-20-20-20-10 tanh net of the "
        f"Curvature Propagation paper) ahead of time, with {len(DEMO_PROGRAMS)} of its "
        f"{len(pipeline.PROGRAMS)} programs: {', '.join(DEMO_PROGRAMS)}\n"
        f"(`symcurv build {example} -o DIR` builds all of them, `symcurv check "
        f"{example}` verifies all of them)"
    )
    t = time.perf_counter()
    model = load_model(str(example))
    prog = sc.compile(model, programs=DEMO_PROGRAMS, build_dir=out / "cp_net")
    print(f"built in {time.perf_counter() - t:.1f}s: {prog}")
    made = []
    for program in ("forward", *prog.programs):
        for suffix in (".dot", ".png"):
            made.append(prog.draw(program, str(out / f"{program}{suffix}")))
    print("\nverifying every program against the numpy reference interpreter:")
    ok = check_built(prog)
    print(f"\nwhat was made, under {out.resolve()}:")
    for rel in sorted([*build.read_manifest(out / "cp_net")["files"], "manifest.json"]):
        print(f"  cp_net/{rel}")
    for p in made:
        print(f"  {Path(p).relative_to(out)}")
    print("\nnext: symcurv info", out / "cp_net", " |  read", out / "cp_net/kernels/grad.py")
    return 0 if ok else 1


def check_built(prog, out=None, batch_size: int = 16) -> bool:
    """Verify a built program: every program against the reference interpreter, and the
    gradient against central differences (float64); print a table; True when all pass."""
    from symcurv import testing

    out = out or sys.stdout
    theta = prog.init(0)
    batch = testing.random_batch(prog, batch_size)
    tol = TOLERANCE[str(prog.dtype)]
    errs = [
        (k, "reference", e, tol)
        for k, e in testing.compare_to_reference(prog, theta, batch).items()
    ]
    if "grad" in prog.programs and str(prog.dtype) == "float64":
        errs.append(("grad", "central differences", testing.check_grad(prog, theta, batch), 1e-5))
    data = [n for n, d in prog.inputs.items() if d["role"] == "input"]
    if str(prog.dtype) == "float64":  # derivatives with respect to each data input
        for x in data if "input_grad" in prog.programs else []:
            e = testing.check_input_grad(prog, theta, batch, x)
            errs.append((f"input_grad ({x})", "central differences", e, 1e-5))
        for x in data if {"input_grad", "input_hvp"} <= set(prog.programs) else []:
            e = testing.check_input_hvp(prog, theta, batch, x)
            errs.append((f"input_hvp ({x})", "central differences", e, 1e-5))
    rows = [[k, src, f"{e:.2e}", f"{t:.0e}", "pass" if e <= t else "FAIL"] for k, src, e, t in errs]
    print(_table(rows, ["program", "against", "max rel. error", "tolerance", "result"]), file=out)
    return all(r[-1] == "pass" for r in rows)


def main(argv: list[str] | None = None) -> int:
    from symcurv import pipeline

    parser = argparse.ArgumentParser(
        prog="symcurv",
        description="symcurv: compile per-case models into Numba kernels for loss, gradient, "
        "Hessian/Gauss-Newton products and Curvature Propagation; build, draw, describe and "
        "check them.",
    )
    sub = parser.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    model_help = (
        "a Python file defining a function that returns an sc.Model, and the function's "
        "name after a colon (default: model)"
    )
    programs_help = (
        "'all' (the default), or a comma-separated list of "
        f"{', '.join([*pipeline.PROGRAMS, *pipeline.ALIASES])}"
    )
    p = sub.add_parser("demo", help="build, draw and verify an example model")
    p.add_argument(
        "-o",
        "--output",
        default="symcurv-demo",
        help="directory to write into (default: %(default)s)",
    )
    p = sub.add_parser("build", help="build a model ahead of time into a directory")
    p.add_argument("model", metavar="MODEL.py[:factory]", help=model_help)
    p.add_argument("-o", "--output", required=True, help="the build directory to write")
    p.add_argument(
        "--backend",
        default="cpu",
        choices=pipeline.BACKENDS,
        help="cpu, or cuda: a GPU, or the simulator with NUMBA_ENABLE_CUDASIM=1 "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--dtype",
        default="float64",
        choices=pipeline.DTYPES,
        help="floating type (default: %(default)s)",
    )
    p.add_argument("--programs", default="all", help=programs_help)
    p.add_argument("--parallel", action="store_true", help="prange maps on Numba threads (cpu)")
    p.add_argument(
        "--drivers",
        action="store_true",
        help="also compile each program's driver into the build, so that every process runs "
        "the compiled drivers from a program's second call (cpu; 0.3-1.4 s per program part)",
    )
    p = sub.add_parser(
        "graph",
        help="draw the graph of a program",
        description="Draw the graph of a program. A name that stands for several graphs "
        "(all, cp_diag, linearize) writes one file per graph: -o g.png gives g_cp_S.png, ...",
    )
    p.add_argument("model", metavar="MODEL.py[:factory]", help=model_help)
    p.add_argument(
        "--program",
        default="grad",
        choices=pipeline.GRAPH_NAMES,
        metavar="PROGRAM",
        help=f"what to draw: one of {', '.join(pipeline.GRAPH_NAMES)} (default: %(default)s)",
    )
    p.add_argument(
        "-o", "--output", required=True, help="the file to write: .dot, .svg, .png or .pdf"
    )
    p = sub.add_parser("info", help="verify and describe a build directory")
    p.add_argument("build_dir", help="a directory written by symcurv build or sc.compile")
    p = sub.add_parser(
        "check",
        help="verify every program against the references",
        description="Compile the model (into the cache directory sc.compile uses with "
        "build_dir=None, so a second check reuses it) and verify every program against the "
        "reference interpreter and the gradient against central differences.",
    )
    p.add_argument("model", metavar="MODEL.py[:factory]", help=model_help)
    p.add_argument(
        "--dtype",
        default="float64",
        choices=pipeline.DTYPES,
        help="floating type (default: %(default)s)",
    )
    p.add_argument("--programs", default="all", help=programs_help)
    args = parser.parse_args(argv)
    try:
        if args.cmd == "demo":
            return _demo(args)
        if args.cmd == "build":
            import symcurv as sc

            prog = sc.compile(
                load_model(args.model),
                programs=args.programs,
                backend=args.backend,
                dtype=args.dtype,
                build_dir=args.output,
                parallel=args.parallel,
            )
            if args.drivers:
                from symcurv.runtime import drivers

                seconds = drivers.compile_all(prog)
                print(f"compiled the drivers of {len(prog.programs)} programs in {seconds:.1f} s")
            print(prog)
            return 0
        if args.cmd == "graph":
            from symcurv import pipeline
            from symcurv.viz import draw

            fwd, graphs, skipped = pipeline.program_graphs(load_model(args.model), args.program)
            out = Path(args.output)
            for name, g in graphs.items():
                # one graph: FILE itself; several: FILE_<program>.suffix beside it
                path = out if len(graphs) == 1 else graph_path(out, name)
                ids = None if name == "forward" else set(fwd.nx.nodes)
                print(f"wrote {draw(g, path, forward_ids=ids, title=f'{fwd.name}: {name}')}")
            for name, reason in skipped.items():
                print(f"skipped '{name}': {reason}")
            return 0
        if args.cmd == "info":
            info(args.build_dir)
            return 0
        if args.cmd == "check":
            ok = check(load_model(args.model), dtype=args.dtype, programs=args.programs)
            return 0 if ok else 1
    except errors.SymcurvError as e:
        print(f"symcurv {args.cmd}: error: {e}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())
