"""Curvature products and diagonal estimators of the compiled CPU programs against the
bare-GEMM floor and the plain-numpy reference interpreter, and Curvature Propagation's S
estimator against Hutchinson's at equal wall time.

    python benchmarks/curvature.py                      # speed (autoencoder), equal time (cp_net)
    python benchmarks/curvature.py --quick              # fewer rounds, trials and budgets
    python benchmarks/curvature.py --build-dir build/bc # keep the builds (reruns skip Numba)
    python benchmarks/curvature.py --profile hvp,cp_S.static   # also: per-kernel times

Speed table. The unit is ONE forward pass's bare GEMM time on the same machine (the layer
products H_l W_lᵀ alone, BLAS into preallocated buffers: ``programs.gemm_floor``). Each
product program is split into a static part (the forward pass and every v-independent
backward quantity, run once per ``prog.linearize`` point) and a dynamic part; the table
times the static part alone (``linearize``), the product on a State (``st.*``: the dynamic
part only, what Hessian-free's CG loop pays per iteration) and the full one-shot call
(``prog.*``: checks, static and dynamic). Per round, each function's best of ``block``
consecutive calls is divided by the floor's best of ``block`` calls timed just before it;
the *units* column is the median of those ratios, the ms column the median time. The numpy
reference interpreter runs each program's whole (unsplit) IR graph, CP noise bound by leaf
name; the compiled result with the same noise is checked against it (*rel err*, ∞-norm).

Equal-time table (a model whose exact diagonal is cheap: cp_net 256-20-20-20-10 at B = 1000,
θ from ``prog.init(0)``, one-hot targets). The budget is the wall time of k S samples on a
linearized State; each estimator gets as many samples (HI: Hutchinson probes (H w) ⊙ w, one
``st.hvp`` each) as its own measured time per sample fits into the budget. Errors
‖d̂ − d‖₂ / ‖d‖₂ against ``prog.diag_hessian`` are averaged over independent seeds.
cp_net has no row in the speed table: its GEMMs take microseconds, and on a shared 2-core
machine its ratios measure the scheduler (see docs/benchmarks.md).

Profile (``--profile``, autoencoder at B = 1000): each kernel block of a program's generated
``run`` (one per ``# kN_...`` comment) is compiled alone and timed in order on real
arguments; GEMM blocks also report their flops, so *GEMM work* counts how many forward
passes' worth of multiply-adds a program does (noise-free, unlike its time).
"""

from __future__ import annotations

import argparse
import ast
import inspect
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import autoencoder  # noqa: E402
import cp_net  # noqa: E402
from common import best_of, machine, ms, table  # noqa: E402
from programs import gemm_floor  # noqa: E402

import symcurv as sc  # noqa: E402
from symcurv import testing  # noqa: E402
from symcurv.runtime import noise  # noqa: E402

PROGRAMS = ["loss", "grad", "hvp", "gnvp", "cp_diag", "becker_lecun_diag"]
CP = ("S", "TU", "GN")
#  (row label, target in units) for the targets
TARGETS = {
    "st.gnvp(v, λ)": 4.6,
    "st.hvp(v)": 9.0,
    "prog.hvp(θ, batch, v)": 9.0,
    "st.cp_diag('S')": 7.0,
}


def log(msg: str) -> None:
    print(f"[curvature {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def build(name: str, factory, root: Path):
    t = time.perf_counter()
    log(f"compiling {name} ({', '.join(PROGRAMS)}); the first build takes minutes")
    prog = sc.compile(factory(), programs=PROGRAMS, build_dir=root / name, progress=True)
    log(f"{name} ready in {time.perf_counter() - t:.1f} s: {prog}")
    return prog


def make_batch(prog, B: int) -> dict:
    batch = testing.random_batch(prog, B)
    if "t" in batch:  # one-hot targets for the softmax net
        batch["t"] = np.eye(batch["t"].shape[1])[np.arange(B) % batch["t"].shape[1]]
    return batch


def draw_noise(prog, program: str, B: int, seed: int) -> dict:
    """Rademacher noise for every noise leaf of a CP program, drawn as ``State.cp_diag``
    draws it (runtime/noise.py: Philox, one stream per leaf)."""
    key = noise.key(seed)
    leaves = [
        ((B, size) if batched else (size,))
        for name, batched, size in prog.extra_leaves(prog.manifest["programs"][program], "noise")
    ]
    return {s: prog._noise(shape, key, 0, s, "rademacher") for s, shape in enumerate(leaves)}


def _best(fn, block: int) -> float:
    best = float("inf")
    for _ in range(block):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def paired(floor, fns: dict, rounds: int, block: int) -> dict:
    """{name: (median seconds, median per-round ratio to the floor)}. With many functions a
    round lasts long, so each one's ratio is taken against the floor timed just before it
    (not once per round): the shared VM's slow phases still cancel."""
    floor()
    for fn in fns.values():
        fn()
    t = {k: [] for k in fns}
    r = {k: [] for k in fns}
    for i in range(rounds):
        for k, fn in fns.items():
            f = _best(floor, block)
            x = _best(fn, block)
            t[k].append(x)
            r[k].append(x / f)
        log(f"round {i + 1}/{rounds} done")
    return {k: (float(np.median(t[k])), float(np.median(r[k]))) for k in fns}


def speed(name: str, prog, B: int, rounds: int, block: int, reference: bool) -> list[dict]:
    theta = prog.init(0)
    batch = make_batch(prog, B)
    rng = np.random.default_rng(1)
    v = rng.standard_normal(prog.n_params)
    st = prog.linearize(theta, batch)
    floor = gemm_floor(prog, batch, theta)
    run = lambda p: lambda: prog.run(p, theta, batch, check=False)  # noqa: E731
    rows = [  # (label, function, reference program or None)
        ("prog.grad(θ, batch)", lambda: prog.grad(theta, batch), "grad"),
        ("linearize: gnvp.static", run("gnvp.static"), None),
        ("st.gnvp(v, λ)", lambda: st.gnvp(v, 1e-3), None),
        ("prog.gnvp(θ, batch, v)", lambda: prog.gnvp(theta, batch, v, 1e-3), "gnvp"),
        ("linearize: hvp.static", run("hvp.static"), None),
        ("st.hvp(v)", lambda: st.hvp(v), None),
        ("prog.hvp(θ, batch, v)", lambda: prog.hvp(theta, batch, v), "hvp"),
    ]
    for e in CP:
        rows += [
            (f"linearize: cp_{e}.static", run(f"cp_{e}.static"), None),
            (f"st.cp_diag({e!r})", lambda e=e: st.cp_diag(e, seed=0), None),
            (
                f"prog.cp_diag(θ, batch, {e!r})",
                lambda e=e: prog.cp_diag(theta, batch, e, seed=0),
                f"cp_{e}",
            ),
        ]
    rows += [
        ("st.cp_diag('HI') (1 probe)", lambda: st.cp_diag("HI", seed=0), None),
        ("prog.becker_lecun_diag(θ, batch)", lambda: prog.becker_lecun_diag(theta, batch), "bl"),
    ]
    noise_draw = best_of(lambda: draw_noise(prog, "cp_S", B, 0), 3 if rounds < 5 else 7)
    log(f"{name}: timing {len(rows)} functions, {rounds} rounds of {block} calls each")
    times = paired(floor, {label: fn for label, fn, _ in rows}, rounds, block)
    floor_s = best_of(floor, 7)

    out = []
    for label, _fn, ref in rows:
        sec, units = times[label]
        r = dict(model=name, B=B, call=label, ms=sec * 1e3, units=units, floor_ms=floor_s * 1e3)
        if ref and reference:
            r.update(check_reference(prog, st, ref, theta, batch, v, rounds))
        out.append(r)
    out.append(dict(model=name, B=B, call="(CP noise draw, cp_S)", ms=noise_draw * 1e3))
    return out


def check_reference(prog, st, ref: str, theta, batch, v, rounds: int) -> dict:
    """Time the numpy reference interpreter on the program's whole graph and compare the
    compiled result (same θ, batch, v or noise) against it."""
    program = {"bl": "becker_lecun"}.get(ref, ref)
    key = {"grad": "grad", "gnvp": "gnvp", "hvp": "hvp", "bl": "bl"}.get(ref, ref)
    vv = v if ref in ("hvp", "gnvp") else None
    z = None
    if ref.startswith("cp_"):
        z = testing.random_noise(prog, ref, st.batch_size, seed=3)
        got = st._run(ref, noise=z)[ref]
    elif ref in ("hvp", "gnvp"):
        got = prog.run(ref, theta, batch, v=v)[ref]
    elif ref == "grad":
        got = prog.grad(theta, batch)[1]
    else:
        got = prog.becker_lecun_diag(theta, batch)
    log(f"reference interpreter: {program}")
    call = lambda: testing.reference_outputs(prog, program, theta, batch, vv, noise=z)  # noqa: E731
    want = call()[key]
    t = best_of(call, 1 if rounds < 5 else 3)
    return dict(ref_ms=t * 1e3, rel_err=testing.rel_error(got, want))


def equal_time(prog, B: int, budgets: list[int], trials: int) -> tuple[list[dict], dict]:
    theta = prog.init(0)
    batch = make_batch(prog, B)
    t = time.perf_counter()
    d = prog.diag_hessian(theta, batch, max_params=prog.n_params)
    t_exact = time.perf_counter() - t
    log(f"exact diagonal: {prog.n_params} hvp columns in {t_exact:.1f} s")
    nd = np.linalg.norm(d)
    st = prog.linearize(theta, batch)
    for e in ("S", "TU", "GN", "HI"):
        st.cp_diag(e, seed=0)  # run each static part once: the budget is per-sample cost
    per = {e: best_of(lambda e=e: st.cp_diag(e, samples=5, seed=0), 7) / 5 for e in ("S", "TU")}
    per["HI"] = best_of(lambda: st.cp_diag("HI", samples=5, seed=0), 7) / 5
    log(f"per sample ms: {', '.join(f'{k} {v * 1e3:.3f}' for k, v in per.items())}")
    rows = []
    for k in budgets:
        budget = k * per["S"]
        for e in ("S", "TU", "HI"):
            n = max(1, int(budget / per[e] + 1e-9)) if e != "S" else k
            wall = best_of(lambda e=e, n=n: st.cp_diag(e, samples=n, seed=0), 3)
            errs = [
                np.linalg.norm(st.cp_diag(e, samples=n, seed=100 + s) - d) / nd
                for s in range(trials)
            ]
            rows.append(
                dict(
                    budget_S=k,
                    budget_ms=budget * 1e3,
                    estimator=e,
                    samples=n,
                    wall_ms=wall * 1e3,
                    err_mean=float(np.mean(errs)),
                    err_min=float(np.min(errs)),
                    err_max=float(np.max(errs)),
                )
            )
    fixed = {
        "becker_lecun": np.linalg.norm(st.becker_lecun_diag() - d) / nd,
        "GN (1 sample, estimates diag G)": float(
            np.mean(
                [np.linalg.norm(st.cp_diag("GN", seed=100 + s) - d) / nd for s in range(trials)]
            )
        ),
    }
    info = dict(
        n_params=prog.n_params,
        exact_s=t_exact,
        per_sample_ms={k: v * 1e3 for k, v in per.items()},
        fixed=fixed,
    )
    return rows, info


# -- per-kernel profile ------------------------------------------------------------------------
def _segments(run_src: str) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """Split a generated ``run`` into its preamble and one code block per ``# kN_...``
    comment (the emitter writes one per kernel)."""
    body = run_src.split('"""', 2)[2].splitlines()[1:]  # after the docstring
    pre, segs = [], []
    for line in body:
        s = line.strip()
        if s.startswith("# k") and "_" in s.split()[1]:
            segs.append((s[2:].split()[0], []))
        elif segs:
            segs[-1][1].append(line[4:])
        elif s:
            pre.append(s)
    return pre, segs


def profile(prog, B: int, programs: list[str], calls: int) -> list[dict]:
    """Time every kernel of the given programs on a linearized State: each kernel's block of
    the generated ``run`` is compiled alone (njit) and called in order with run's own
    arguments (a stand-in module replaces the program's for the duration)."""
    import numba

    theta = prog.init(0)
    batch = make_batch(prog, B)
    st = prog.linearize(theta, batch)
    v = np.random.default_rng(1).standard_normal(prog.n_params)
    calls_of = {
        "gnvp": lambda: st.gnvp(v),
        "hvp": lambda: st.hvp(v),
        "becker_lecun": lambda: st.becker_lecun_diag(),
    }
    for e in CP:
        calls_of[f"cp_{e}"] = lambda e=e: st.cp_diag(e, seed=0)
    pass_flops = (
        2.0
        * B
        * sum(  # one forward pass: every weight matrix once per case
            p["size"] for p in prog.params.values() if len(p["shape"]) == 2
        )
    )
    out = []
    for name in programs:
        base = name.removesuffix(".static")
        calls_of[base]()  # fills the State's cache for split programs
        mod = prog._modules[name]
        run_py = getattr(mod.run, "py_func", mod.run)  # the cpu driver is plain Python
        params = list(inspect.signature(run_py).parameters)
        pre, segs = _segments(inspect.getsource(run_py))
        glb = dict(mod.__dict__)
        jitted = []
        log(f"profile {name}: compiling {len(segs)} kernel blocks alone")
        for kname, lines in segs:
            tree = ast.parse("\n".join(lines))
            loads = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
            stores = {
                n.id
                for n in ast.walk(tree)
                if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)
            }
            free = sorted((loads - stores) - set(glb) - {"range", "prange", "min", "max"})
            src = f"def seg_{kname}({', '.join(free)}):\n" + "\n".join("    " + ln for ln in lines)
            exec(src, glb)  # noqa: S102  (generated by symcurv; profiling only)
            dots = [  # the (A, B) operand expressions of each np.dot, to count its flops
                (ast.unparse(c.args[0]), ast.unparse(c.args[1]))
                for c in ast.walk(tree)
                if isinstance(c, ast.Call) and getattr(c.func, "attr", None) == "dot"
            ]
            jitted.append((kname, free, dots, numba.njit(error_model="numpy")(glb[f"seg_{kname}"])))
        acc = {k: [] for k, _ in segs}
        flops = dict.fromkeys(acc, 0.0)

        def run(*args, acc=acc, flops=flops, jitted=jitted, pre=pre, params=params):
            env = dict(zip(params, args))
            env.update({"np": np})
            for line in pre:
                exec(line, env)  # noqa: S102  (B = ..., parameter views)
            for kname, free, dots, fn in jitted:
                a = [env[n] for n in free]
                for x, y in dots:
                    (m, k), n = eval(x, env).shape, eval(y, env).shape[-1]  # noqa: S307
                    flops[kname] = 2.0 * m * k * n
                t = time.perf_counter()
                fn(*a)
                acc[kname].append(time.perf_counter() - t)

        stand_in = type(mod)(mod.__name__)
        stand_in.run = run
        prog._modules[name] = stand_in
        try:
            fn = (
                (lambda name=name: prog.run(name, theta, batch, check=False))
                if name.endswith(".static")
                else calls_of[base]
            )
            fn()  # compile every block
            for k in acc:
                acc[k].clear()
            for _ in range(calls):
                fn()
        finally:
            prog._modules[name] = mod
        for kname, _ in segs:
            kind = kname.split("_")[1]
            out.append(
                dict(
                    program=name,
                    kernel=kname,
                    kind=kind,
                    ms=min(acc[kname]) * 1e3,
                    gflop=flops[kname] / 1e9,
                    pass_gflop=pass_flops / 1e9,
                )
            )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--build-dir", help="build here (kept: reruns skip Numba compilation)")
    ap.add_argument("--no-reference", action="store_true", help="skip the numpy interpreter")
    ap.add_argument("--profile", help="comma-separated programs to profile per kernel")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    rounds, block = (3, 2) if args.quick else (7, 3)
    budgets, trials = ([1, 10], 3) if args.quick else ([1, 10, 100], 10)
    print(f"machine: {machine()}")
    print(f"command: python {' '.join(sys.argv)}")
    print("load average at start: {:.2f} {:.2f} {:.2f}\n".format(*os.getloadavg()))
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.build_dir or tmp)
        ae = build("autoencoder", autoencoder.model, root)
        small = build("cp_net", cp_net.model, root)
        rows = speed("autoencoder", ae, 1000, rounds, block, not args.no_reference)
        results["speed"] = rows
        print_speed(rows)
        eq, info = equal_time(small, 1000, budgets, trials)
        results["equal_time"], results["equal_time_info"] = eq, info
        print_equal_time(eq, info, trials)
        if args.profile:
            prof = profile(ae, 1000, args.profile.split(","), 3 if args.quick else 5)
            results["profile"] = prof
            print_profile(prof)
    print("load average at end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=float))


def print_speed(rows: list[dict]) -> None:
    for model in dict.fromkeys(r["model"] for r in rows):
        rs = [r for r in rows if r["model"] == model]
        floor = rs[0]["floor_ms"]
        print(f"{model}, B = {rs[0]['B']}: one forward pass's bare GEMMs = {floor:.2f} ms")
        body = []
        for r in rs:
            target = TARGETS.get(r["call"]) if model == "autoencoder" else None
            body.append(
                [
                    r["call"],
                    ms(r["ms"] / 1e3),
                    f"{r['units']:.2f}" if "units" in r else "",
                    (f"≤ {target:g} " + ("met" if r["units"] <= target else "MISSED"))
                    if target
                    else "",
                    ms(r["ref_ms"] / 1e3) if "ref_ms" in r else "",
                    f"{r['ref_ms'] / r['ms']:.1f}" if "ref_ms" in r else "",
                    f"{r['rel_err']:.1e}" if "rel_err" in r else "",
                ]
            )
        header = ["call", "ms", "units", "target", "numpy ref ms", "ref/this", "rel err"]
        print(table(body, header) + "\n")


def print_equal_time(rows: list[dict], info: dict, trials: int) -> None:
    per = ", ".join(f"{k} {v:.3f} ms" for k, v in info["per_sample_ms"].items())
    print(
        f"cp_net 256-20-20-20-10, B = 1000, {info['n_params']} parameters: exact diagonal from "
        f"{info['n_params']} hvp columns in {info['exact_s']:.1f} s; per sample on a State: {per}"
    )
    body = [
        [
            f"{r['budget_S']} S ({r['budget_ms']:.2f} ms)",
            r["estimator"],
            r["samples"],
            f"{r['wall_ms']:.2f}",
            f"{r['err_mean']:.3f}",
            f"{r['err_min']:.3f}-{r['err_max']:.3f}",
        ]
        for r in rows
    ]
    print(
        table(
            body,
            [
                "budget",
                "estimator",
                "samples",
                "wall ms",
                f"rel err (mean of {trials})",
                "min-max",
            ],
        )
    )
    for k, e in info["fixed"].items():
        print(f"  {k}: rel err {e:.3f}")
    print()


def print_profile(prof: list[dict]) -> None:
    for name in dict.fromkeys(p["program"] for p in prof):
        ps = [p for p in prof if p["program"] == name]
        total = sum(p["ms"] for p in ps)
        kinds: dict[str, float] = {}
        for p in ps:
            kinds[p["kind"]] = kinds.get(p["kind"], 0.0) + p["ms"]
        gflop = sum(p["gflop"] for p in ps)
        gemm_ms = kinds.get("gemm", 0.0)
        print(
            f"profile {name}: {len(ps)} kernels, sum of best times {total:.1f} ms; by kind: "
            + ", ".join(f"{k} {v:.1f}" for k, v in sorted(kinds.items(), key=lambda kv: -kv[1]))
            + f"; GEMM work {gflop:.2f} GFLOP = {gflop / ps[0]['pass_gflop']:.2f} forward passes"
            + (f" at {gflop / gemm_ms * 1e3:.0f} GFLOP/s" if gemm_ms else "")
        )
        top = sorted(ps, key=lambda p: -p["ms"])[:12]
        rows = [
            [
                p["kernel"],
                f"{p['ms']:.2f}",
                f"{100 * p['ms'] / total:.0f}%",
                f"{p['gflop'] / p['ms'] * 1e3:.0f}" if p["gflop"] else "",
            ]
            for p in top
        ]
        print(table(rows, ["kernel", "ms", "share", "GFLOP/s"]) + "\n")


if __name__ == "__main__":
    main()
