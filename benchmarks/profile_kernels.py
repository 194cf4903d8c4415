"""Where the time goes on small nets (issue 15): per kernel, per fixed cost, per compile.

    python benchmarks/profile_kernels.py                 # cp_net, B = 100 and 1000: kernels
                                                         # of loss, grad, hvp, gnvp, one
                                                         # CP-S draw, input_grad, and the
                                                         # fixed costs of Program._run
    python benchmarks/profile_kernels.py --batch 1 --programs loss grad   # a choice
    python benchmarks/profile_kernels.py --cold          # a cold build of cp_net, broken down
    python benchmarks/profile_kernels.py --quick         # fewer repeats
    python benchmarks/profile_kernels.py --model autoencoder --dtype float32 --batch 1000

Kernels (how): the generated driver ``run`` of a program module is a sequence of segments,
one per kernel, each introduced by its ``# kN_name`` comment. This script re-emits the
driver as ONE Numba function in which every segment runs ``n`` times in a row between two
``numba.objmode`` clock reads, and calls it with the very buffers the driver received on a
real call (recorded by wrapping ``module.run`` for one ``Program`` call). Repeating a
segment is harmless for timing: a gemm or a map rewrites its outputs from its inputs, a
reduction zeroes its accumulator first. The per-segment time is the median over rounds of
(segment's time)/n, n chosen so that a round lasts ≈ 30 ms (10 ≤ n ≤ 20000), minus the
same figure for an empty segment (the clock reads and objmode switches, ≈ 20 µs each).
The generated kernels are not changed; the profiled copy exists only in this process.

Fixed costs (how): the pieces of ``Program._run`` are timed one by one in Python with the
same arguments (θ check, batch check, output allocation, scratch lookup, the driver's
Numba dispatch — a do-nothing function of the same signature —, the non-finite scan of the
outputs); the whole call minus them is the remaining Python glue.

Cold build (--cold, how): ``pipeline.build`` with ``lower.lower``, ``schedule.plan`` and the
cpu emitter wrapped by timers (the rest of build is sympy and the passes), then ``load`` and
``warm`` (Numba) under ``numba.core.event.install_recorder("numba:compile")``, whose
start/end events give each dispatcher's compile time. A compile event of ``run`` includes
the nested compiles of the kernels it calls; exclusive time = inclusive − nested. Also: how
many kernel functions are byte-identical across the programs of the build.
"""

from __future__ import annotations

import argparse
import ast
import collections
import os
import re
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "examples"))
sys.path.insert(0, str(HERE))

import autoencoder  # noqa: E402
import cp_net  # noqa: E402
from common import machine, median_time, pin_to_cpus, pinned_env, table  # noqa: E402

import symcurv as sc  # noqa: E402
from symcurv.runtime.validate import all_finite  # noqa: E402

PROGRAMS = ("loss", "grad", "hvp", "gnvp", "cp_S", "input_grad")
MARK = re.compile(r"^    # (k\d+_\w+)  \(")


# -- the driver, segment by segment ---------------------------------------------------------------
def driver_segments(module) -> tuple[list[str], list[str], list[tuple[str, list[str]]]]:
    """(run's parameters, its header lines, [(kernel name, its lines)]) from the module file."""
    src = Path(module.__file__).read_text()
    fn = next(n for n in ast.parse(src).body if isinstance(n, ast.FunctionDef) and n.name == "run")
    params = [a.arg for a in fn.args.args]
    lines = src.splitlines()[fn.body[0].lineno - 1 : fn.end_lineno]
    if lines and lines[0].strip().startswith('"""'):
        lines = lines[1:]
    header, segs = [], []
    for ln in lines:
        m = MARK.match(ln)
        if ln.strip().startswith("return "):  # the batch guards' flag (codegen/guards.py)
            continue
        if m:
            segs.append((m.group(1), []))
        elif segs:
            segs[-1][1].append(ln)
        else:
            header.append(ln)
    return params, header, segs


def profiled_driver(module):
    """A Numba function ``(n, *run's args) -> seconds per segment`` (see the docstring)."""
    import numba

    params, header, segs = driver_segments(module)
    # an empty first segment measures the clock reads and the objmode switches themselves
    segs = [("(clock)", ["        pass"]), *segs]
    out = [f"def _profiled(_n, {', '.join(params)}):", f"    _t = np.zeros({len(segs)})"]
    out += header
    for i, (_name, body) in enumerate(segs):
        if not any(ln.strip() and not ln.strip().startswith("#") for ln in body):
            body = [*body, "    pass"]  # a product computed with the one before (a pair)
        out += [
            "    with numba.objmode(_a='float64'):",
            "        _a = time.perf_counter()",
            "    for _r in range(_n):",
            *["    " + ln if ln.strip() else ln for ln in body],
            "    with numba.objmode(_b='float64'):",
            "        _b = time.perf_counter()",
            f"    _t[{i}] = (_b - _a) / _n",
        ]
    out.append("    return _t")
    # a module of its own (objmode blocks look their globals up through sys.modules)
    twin = types.ModuleType(f"{module.__name__}_profiled")
    twin.__dict__.update({k: v for k, v in vars(module).items() if not k.startswith("__")})
    twin.__dict__.update(numba=numba, time=time)
    sys.modules[twin.__name__] = twin
    ns = twin.__dict__
    exec(compile("\n".join(out), f"<profiled {module.__name__}>", "exec"), ns)
    noop = f"def _noop({', '.join(params)}):\n    return None\n"
    exec(compile(noop, "<noop>", "exec"), ns)
    return numba.njit(ns["_profiled"]), numba.njit(ns["_noop"]), [s[0] for s in segs]


def _hvp_parts(prog) -> list[str]:
    """The modules a direct ``prog.hvp`` call runs: ``hvp.whole`` (codegen/parts.py) on a
    CPU build that pairs its products, else the static part and the product part."""
    whole = prog.spec("hvp").get("whole")
    return [whole] if whole else ["hvp.static", "hvp"]


def recorded_args(prog, part: str, call):
    """The arguments ``prog``'s module ``part`` received during ``call()``."""
    mod = prog._modules[part]
    seen = []
    original = mod.run

    def recorder(*args):
        seen.append(args)
        return original(*args)

    mod.run = recorder
    try:
        call()
    finally:
        mod.run = original
    return seen[-1]


_PROFILED: dict = {}


def kernel_times(prog, part: str, call, rounds: int, budget: float = 0.03) -> dict:
    """{kernel: seconds per call} for module ``part`` of ``prog``, plus '(driver total)' and
    '(dispatch)': the driver called from Python and a do-nothing function's dispatch."""
    args = recorded_args(prog, part, call)
    if part not in _PROFILED:  # compiled once per module, for every batch size
        _PROFILED[part] = profiled_driver(prog._modules[part])
    fn, noop, names = _PROFILED[part]
    fn(1, *args)  # compiles
    run = prog._modules[part].run
    driver = median_time(lambda: run(*args), rounds)
    # n repeats per segment so that one round lasts about ``budget``: the objmode switch
    # around a segment costs ~20 µs here, which n must spread thin at B = 1
    n = int(np.clip(budget / max(driver, 1e-7), 10, 20000))
    per = np.median([fn(n, *args) for _ in range(rounds)], axis=0)
    clock = per[0]  # the switches' share of every segment's (b − a)/n
    out = {k: max(t - clock, 0.0) for k, t in zip(names[1:], per[1:])}
    out["(driver total)"] = driver
    out["(dispatch)"] = median_time(lambda: noop(*args), rounds)
    return out


def kind(kernel: str) -> str:
    """gemm, map, reduce, ... from a kernel's name kN_<kind>_<node>; tanh maps apart."""
    k = kernel.split("_", 2)[1]
    return "map (tanh)" if k == "map" and "tanh" in kernel else k


# -- fixed costs of Program._run -----------------------------------------------------------------
def fixed_costs(prog, prog_name: str, theta, batch, v, rounds: int) -> dict:
    """Seconds of each Python-side step of ``Program._run`` for one program (see docstring)."""
    spec = prog.manifest["programs"][prog_name]
    arrays = prog.checks.batch(spec["leaves"], batch)
    B = arrays[0].shape[0]
    outs = {p: np.zeros(prog.n_params, prog.dtype) for p in spec["out_flat"]}
    for k, batched, size in spec["out_plain"]:
        outs[k] = np.zeros((B, size) if batched else (size,), prog.dtype)
    guarded = spec.get("guarded", [])  # scanned through their product (codegen/guards.py)
    t = {
        "check θ (shape, dtype, isfinite)": lambda: prog.checks.theta(theta),
        "check batch (keys, dtype, shape, copy, isfinite)": lambda: prog.checks.batch(
            spec["leaves"], batch, guarded=guarded
        ),
        "allocate outputs (np.zeros; np.empty per case)": lambda: {
            k: (np.empty if o.ndim == 2 else np.zeros)(o.shape, dtype=prog.dtype)
            for k, o in outs.items()
        },
        "scratch lookup": lambda: prog._scratch(prog_name, spec, B),
        # outputs the driver proved finite by their product's operands are not scanned
        "non-finite scan of outputs": lambda: [
            all_finite(o) for k, o in outs.items() if k not in spec.get("bounded", ())
        ],
    }
    if spec.get("vectors"):
        t["check v"] = lambda: prog.checks.direction(v)
    return {k: median_time(f, rounds) for k, f in t.items()}


MODELS = {"cp_net": cp_net, "autoencoder": autoencoder}


def example_batch(model: str, B: int, dtype) -> dict:
    """A batch of B cases for the example ``model`` (uniform inputs; one-hot labels)."""
    rng = np.random.default_rng(0)
    if model == "autoencoder":  # its target is its input
        return {"x": rng.uniform(size=(B, 784)).astype(dtype)}
    x = rng.uniform(size=(B, 256))
    return {"x": x.astype(dtype), "t": np.eye(10, dtype=dtype)[rng.integers(0, 10, B)]}


def profile(B: int, rounds: int, build_dir: Path, programs=(), model="cp_net", dtype="float64"):
    prog = load_or_build(build_dir, model, dtype)
    theta = prog.init(0)
    batch = example_batch(model, B, prog.dtype)
    v = np.random.default_rng(1).standard_normal(prog.n_params).astype(prog.dtype)
    st = prog.linearize(theta, batch)
    st.cp_diag("S", seed=0)
    calls = {
        "loss": (lambda: prog.loss(theta, batch), ["loss"]),
        "grad": (lambda: prog.grad(theta, batch), ["grad"]),
        # a direct hvp runs the whole graph as one driver where the build has one
        "hvp": (lambda: prog.hvp(theta, batch, v), _hvp_parts(prog)),
        "gnvp (State)": (lambda: st.gnvp(v), ["gnvp"]),
        "cp_diag S (State, 1 draw)": (lambda: st.cp_diag("S", seed=0), ["cp_S"]),
        "input_grad": (lambda: prog.input_grad(theta, batch), ["input_grad"]),
    }
    for what, (call, parts) in calls.items():
        if programs and what.split()[0] not in programs:
            continue
        total = median_time(call, rounds)
        print(f"\n### {model} {dtype} B = {B}: {what}: {total * 1e6:.0f} µs per call (median)")
        rows, kernels_sum, by_kind = [], 0.0, collections.Counter()
        for part in parts:
            kt = kernel_times(prog, part, call, rounds)
            drv, disp = kt.pop("(driver total)"), kt.pop("(dispatch)")
            for k, s in kt.items():
                by_kind[kind(k)] += s
                kernels_sum += s
            top = sorted(kt.items(), key=lambda kv: -kv[1])[:6]
            rows += [[part, k, f"{s * 1e6:.1f}", f"{s / sum(kt.values()):.0%}"] for k, s in top]
            rows.append(
                [
                    part,
                    "(driver from Python, all kernels)",
                    f"{drv * 1e6:.1f}",
                    f"{drv / total:.0%}",
                ]
            )
            rows.append(
                [
                    part,
                    "(Numba dispatch of run: no-op, same args)",
                    f"{disp * 1e6:.1f}",
                    f"{disp / total:.0%}",
                ]
            )
        rows += [
            ["", f"kind: {k}", f"{s * 1e6:.1f}", f"{s / kernels_sum:.0%}"]
            for k, s in by_kind.most_common()
        ]
        rows.append(
            ["", "sum of kernels", f"{kernels_sum * 1e6:.1f}", f"{kernels_sum / total:.0%}"]
        )
        if what.startswith("gnvp"):
            pass  # a State's product: θ and the batch were checked once, by linearize
        elif what != "cp_diag S (State, 1 draw)":
            name = parts[-1]
            fc = fixed_costs(prog, name, theta, batch, v, rounds)
            rows += [["_run", k, f"{s * 1e6:.1f}", f"{s / total:.0%}"] for k, s in fc.items()]
        else:
            fc = noise_cost(prog, st, rounds)
            rows += [["State", k, f"{s * 1e6:.1f}", f"{s / total:.0%}"] for k, s in fc.items()]
        print(
            "(share: of the module's kernels for a kernel, of all kernels for a kind, of the "
            "whole call otherwise; kernels are timed inside one profiled call, the rest apart)"
        )
        print(table(rows, ["module", "kernel / step", "µs", "share"]), flush=True)


def noise_cost(prog, st, rounds: int) -> dict:
    """Drawing one CP-S draw's noise leaves (counter-based Philox, runtime/noise.py)."""
    from symcurv.runtime import noise as noise_module
    from symcurv.runtime.program import extra_leaves

    key = noise_module.key(0)
    leaves = [
        (name, (st.batch_size, size) if batched else (size,))
        for name, batched, size in extra_leaves(prog.manifest["programs"]["cp_S"], "noise")
    ]
    draw = lambda: [prog._noise(sh, key, 0, s, "rademacher") for s, (_, sh) in enumerate(leaves)]  # noqa: E731
    n = sum(int(np.prod(sh)) for _, sh in leaves)
    return {f"draw the noise ({len(leaves)} leaves, {n} numbers)": median_time(draw, rounds)}


def load_or_build(build_dir: Path, model: str = "cp_net", dtype: str = "float64"):
    if (build_dir / "manifest.json").exists():
        return sc.load(build_dir)
    return sc.compile(
        MODELS[model].model(), programs=PROGRAMS, dtype=dtype, build_dir=build_dir, progress=False
    )


# -- cold build ------------------------------------------------------------------------------------
def cold(build_dir: Path) -> None:
    import numba.core.event as ev

    from symcurv import pipeline
    from symcurv.codegen import cpu, lower, schedule
    from symcurv.runtime import build as build_mod

    spent = collections.Counter()

    def timed(mod, attr, label):
        f = getattr(mod, attr)

        def wrapper(*a, **k):
            t = time.perf_counter()
            try:
                return f(*a, **k)
            finally:
                spent[label] += time.perf_counter() - t

        setattr(mod, attr, wrapper)
        return f

    originals = [
        (lower, "lower", timed(lower, "lower", "lower")),
        (schedule, "plan", timed(schedule, "plan", "schedule")),
        (cpu, "emit", timed(cpu, "emit", "emit source")),
    ]
    t0 = time.perf_counter()
    try:
        root = pipeline.build(cp_net.model(), PROGRAMS, build_dir=build_dir, progress=False)
    finally:
        for mod, attr, f in originals:
            setattr(mod, attr, f)
    t_build = time.perf_counter() - t0
    t0 = time.perf_counter()
    prog = build_mod.load(root)
    t_load = time.perf_counter() - t0
    per_prog = {}
    with ev.install_recorder("numba:compile") as rec:
        t0 = time.perf_counter()
        for name in prog.programs:  # pipeline.warm, one program at a time
            t = time.perf_counter()
            _warm_one(prog, name)
            per_prog[name] = time.perf_counter() - t
        t_numba = time.perf_counter() - t0
    print(f"command: python benchmarks/{' '.join([Path(sys.argv[0]).name, *sys.argv[1:]])}")
    codegen = sum(spent.values())
    rows = [
        ["sympy, transforms and passes (build − codegen)", f"{t_build - codegen:.2f}"],
        *[[f"codegen: {k}", f"{s:.2f}"] for k, s in spent.items()],
        ["load (exec of the generated modules)", f"{t_load:.2f}"],
        ["Numba compile (warm: first call of every program)", f"{t_numba:.2f}"],
    ]
    print(table(rows, ["cold build of cp_net, programs " + ", ".join(PROGRAMS), "s"]))
    print(compile_table(rec.buffer, prog, per_prog))
    print(identical_kernels(root))


def _warm_one(prog, name: str) -> None:
    """pipeline.warm for one program, in this process: its first call on a 2-case batch."""
    from symcurv.runtime.compile_parallel import call_once

    call_once(prog, name)


def compile_table(buffer, prog, per_prog: dict) -> str:
    """Per module: Numba's compile seconds of ``run`` (inclusive, exclusive) and its kernels."""
    stack, spans = [], []  # (module, function, inclusive seconds, nested seconds)
    for ts, e in buffer:
        disp = e.data["dispatcher"]
        mod = getattr(disp.py_func, "__module__", "?")
        if e.is_start:
            stack.append([mod, disp.py_func.__name__, ts, 0.0])
        else:
            mod_, fname, t0, nested = stack.pop()
            dur = ts - t0
            if stack:
                stack[-1][3] += dur
            spans.append((mod_, fname, dur, nested))
    mods = {m.__name__: part for part, m in prog._modules.items()}
    per = collections.defaultdict(lambda: {"run": 0.0, "run_excl": 0.0, "k": 0.0, "n": 0, "f": 0})
    other = collections.Counter()
    kernels = []  # (exclusive seconds, module, kernel function)
    for mod, fname, dur, nested in spans:
        part = mods.get(mod)
        if part is None:  # vecmath, noise: shared by every module
            other[f"{mod}.{fname}"] += dur - nested
            continue
        p = per[part]
        if fname == "run":
            p["run"] += dur
            p["run_excl"] += dur - nested
        else:
            p["k"] += dur - nested
            p["n"] += 1
            kernels.append((dur - nested, part, fname))
    rows = []
    for part, p in per.items():
        n_funcs = len(re.findall(r"^def ", Path(prog._modules[part].__file__).read_text(), re.M))
        rows.append(
            [part, n_funcs - 1, p["n"], f"{p['run']:.2f}", f"{p['run_excl']:.2f}", f"{p['k']:.2f}"]
        )
    tot = [sum(float(r[i]) for r in rows) for i in (3, 4, 5)]
    rows.append(["all", "", "", *[f"{x:.2f}" for x in tot]])
    return (
        "\nNumba compile per module (numba:compile events; run inclusive of the kernels it "
        "compiles, exclusive = its own — 0 since the driver is plain Python; kernels = the "
        "njit kernel functions compiled apart;\n"
        f"wall per program incl. Python: "
        f"{', '.join(f'{k} {s:.1f}s' for k, s in per_prog.items())}; other dispatchers "
        f"outside the modules: {sum(other.values()):.2f}s, "
        f"{', '.join(f'{k} {s:.2f}s' for k, s in other.most_common(6))})\n"
        + table(
            rows,
            [
                "module",
                "kernel fns in file",
                "compiled apart",
                "run incl s",
                "run excl s",
                "kernels s",
            ],
        )
        + "\nslowest kernel functions to compile (exclusive s): "
        + ", ".join(f"{p}:{f} {t:.2f}" for t, p, f in sorted(kernels, reverse=True)[:8])
        + f"; median {np.median([t for t, _, _ in kernels]):.2f} s over {len(kernels)}"
    )


def identical_kernels(root: Path) -> str:
    """How many top-level kernel functions (other than run) repeat byte for byte across the
    build's modules — after renaming the kN_ prefix, which only numbers a kernel in its
    program."""
    seen = collections.Counter()
    total = 0
    for f in sorted((root / "kernels").glob("*.py")):
        src = f.read_text()
        for node in ast.parse(src).body:
            if isinstance(node, ast.FunctionDef) and node.name != "run":
                text = ast.get_source_segment(src, node)
                deco = "\n".join(ast.get_source_segment(src, d) for d in node.decorator_list)
                norm = re.sub(r"\bf?k\d+_", "k_", deco + "\n" + text)
                seen[norm] += 1
                total += 1
    distinct = len(seen)
    repeated = sum(c for c in seen.values() if c > 1)
    return (
        f"\nkernel functions in the build: {total}; distinct (up to kN_ numbering): {distinct}; "
        f"{repeated} of them belong to a group that repeats (a shared build would compile "
        f"{distinct} instead of {total}: {1 - distinct / total:.0%} fewer)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--cold", action="store_true", help="break down a cold build instead")
    ap.add_argument("--batch", type=int, nargs="*", default=[100, 1000])
    ap.add_argument(
        "--programs",
        nargs="*",
        default=[],
        help="loss grad hvp gnvp cp_diag input_grad (default: all)",
    )
    ap.add_argument("--model", choices=sorted(MODELS), default="cp_net")
    ap.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    ap.add_argument("--build-dir", help="reuse (or make) this build of the model")
    ap.add_argument("--threads", type=int, help="BLAS/Numba threads (common.pinned_env)")
    args = ap.parse_args()
    if args.threads and os.environ.get("SYMCURV_BENCH_CPUS") is None:  # restart pinned
        os.execve(sys.executable, [sys.executable, *sys.argv], pinned_env(args.threads))
    pin_to_cpus()
    print(f"machine: {machine()}; OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.build_dir or Path(tmp) / f"{args.model}_{args.dtype}")
        if args.cold:
            if (root / "manifest.json").exists():
                raise SystemExit(f"--cold needs a fresh build directory; {root} exists")
            return cold(root)
        print(f"command: python benchmarks/{' '.join([Path(sys.argv[0]).name, *sys.argv[1:]])}")
        for B in args.batch:
            profile(B, 3 if args.quick else 7, root, args.programs, args.model, args.dtype)


if __name__ == "__main__":
    main()
