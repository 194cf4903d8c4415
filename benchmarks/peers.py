"""symcurv against JAX (issue 15): the same functions, each side in its own fresh process.

    pip install -e ".[peers]"                  # jax[cpu]; the tests never need it
    python benchmarks/peers.py                 # cp_net B = 1, 100, 1000; autoencoder B = 1000;
                                               # float64 and float32; 5 rounds
    python benchmarks/peers.py --quick         # smoke run: cp_net only, float64, 2 rounds
    python benchmarks/peers.py --dtypes float32 --clock cpu   # one dtype; CPU time (busy machine)
    python benchmarks/peers.py --models autoencoder --dtypes float32 --threads 1   # one case
    python benchmarks/peers.py --models cp_net --batches 1 --threads 1   # the fixed cost of a call
    (K-FAC against kfac-jax's optimizer: benchmarks/peers_kfac.py)

Programs (symcurv call | JAX function, jit-compiled):
  loss        prog.loss(θ, batch)             | mean loss
  grad        prog.grad(θ, batch)             | value_and_grad
  hvp         prog.hvp(θ, batch, v)           | jvp of grad (forward-over-reverse), one shot
  gnvp        st.gnvp(v), st = linearize      | Jᵀ H_L J v from jax.linearize of the network
                                              |   output (done once, like st) + the loss's
                                              |   Hessian (jvp of its gradient) + linear_transpose
  diag        st.cp_diag("S") (one draw)      | Hutchinson probe v ⊙ Hv, Rademacher v, Hv from
                                              |   jax.linearize of grad (done once, like st)
  input_grad  prog.input_grad(θ, batch)       | vmap of grad w.r.t. x of the per-case loss

Before any timing the float64 results of both sides are compared on the same θ (the JAX
parameters are prog.unflatten(θ)), batch and v: loss and grad to 1e-10, hvp, gnvp and the
input gradient likewise (relative ∞-norm). The diagonal estimates are different estimators
(CP-S vs Hutchinson) and are not compared.

Method: the parent builds the symcurv programs (cold, fresh directory: the "cold build" row)
and writes θ, the batch and v to .npy files; then per round it starts a fresh symcurv
process and a fresh JAX process in turn (symcurv, JAX, symcurv, JAX, ...). Each process
times every call as the median of repeated calls after warm-up (common.median_time); the
ratio symcurv/JAX is taken within each round and the table gives its median over rounds, so
the VM's slow phases, which last longer than one round, cancel. Both sides are pinned to the
same cores with the same thread counts (common.pinned_env: BLAS, Numba, XLA). The JAX
process's first call of each jitted function (trace + compile + one run) is the "compile"
row, beside symcurv's cold build and the compile of its drivers on first use.

symcurv runs its compiled drivers (``--driver compiled``, SYMCURV_DRIVER: the driver a
program switches to in a loop, runtime/drivers.py; the parent compiles them into the build
once, timed as "+ drivers"); ``--driver python`` times the Python drivers a program's first
calls run (where no compiled driver is cached, until their dispatch would have paid for
compiling it: runtime/drivers.py).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import machine, median_time, ms, pin_to_cpus, pinned_env, table  # noqa: E402

PROGRAMS = ("loss", "grad", "hvp", "gnvp", "diag", "input_grad")
BUILD_PROGRAMS = ("loss", "grad", "hvp", "gnvp", "cp_S", "input_grad")
FULL_CASES = [("cp_net", 1), ("cp_net", 100), ("cp_net", 1000), ("autoencoder", 1000)]
QUICK_CASES = [("cp_net", 1), ("cp_net", 100), ("cp_net", 1000)]
CHECK_TOL = 1e-10


# -- data (parent) ------------------------------------------------------------------------------
def write_data(prog, model: str, B: int, folder: Path) -> None:
    """θ = prog.init(0) unflattened per parameter, the batch and a direction v, float64."""
    if (folder / "layout.json").exists():  # written by the first dtype's build
        return
    rng = np.random.default_rng(B)
    theta = prog.init(0).astype(np.float64)
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "theta.npz", **prog.unflatten(theta))
    np.save(folder / "theta_flat.npy", theta)
    np.save(folder / "v.npy", rng.standard_normal(prog.n_params))
    x = rng.uniform(0.0, 1.0, size=(B, prog.inputs["x"]["size"]))
    np.save(folder / "x.npy", x)
    if model == "cp_net":  # one-hot targets
        K = prog.inputs["t"]["size"]
        np.save(folder / "t.npy", np.eye(K)[rng.integers(0, K, size=B)])
    (folder / "layout.json").write_text(
        json.dumps({n: [p["offset"], p["size"]] for n, p in prog.params.items()})
    )


def load_data(folder: Path, dtype) -> dict:
    folder = Path(folder)
    d = {
        "theta": dict(np.load(folder / "theta.npz")),
        "theta_flat": np.load(folder / "theta_flat.npy"),
        "v": np.load(folder / "v.npy"),
        "x": np.load(folder / "x.npy"),
        "layout": json.loads((folder / "layout.json").read_text()),
    }
    if (folder / "t.npy").exists():
        d["t"] = np.load(folder / "t.npy")
    cast = {k: v.astype(dtype) for k, v in d["theta"].items()}
    d["theta"] = cast
    for k in ("theta_flat", "v", "x", "t"):
        if k in d:
            d[k] = d[k].astype(dtype)
    return d


# -- the symcurv side -----------------------------------------------------------------------------
def symcurv_calls(case: dict):
    import symcurv as sc

    prog = sc.load(case["build_dir"])
    d = load_data(case["data"], prog.dtype)
    theta, v = d["theta_flat"], d["v"]
    batch = {"x": d["x"], **({"t": d["t"]} if "t" in d else {})}
    st = prog.linearize(theta, batch)
    calls = {
        "loss": lambda: prog.loss(theta, batch),
        "grad": lambda: prog.grad(theta, batch),
        "hvp": lambda: prog.hvp(theta, batch, v),
        "gnvp": lambda: st.gnvp(v),
        "diag": lambda: st.cp_diag("S", seed=0),
        "input_grad": lambda: prog.input_grad(theta, batch),
    }

    def results():
        return {
            "loss": np.array(prog.loss(theta, batch)),
            "grad": prog.grad(theta, batch)[1],
            "hvp": prog.hvp(theta, batch, v),
            "gnvp": st.gnvp(v),
            "input_grad": prog.input_grad(theta, batch),
        }

    return calls, results, {}


# -- the JAX side ------------------------------------------------------------------------------
def jax_model(model: str, n_layers: int):
    """(net(params, x) -> logits (B, K), case_loss(z_b, x_b, t_b) -> f_b): the same functions
    as examples/cp_net.py and examples/autoencoder.py (checked against symcurv numerically)."""
    import jax
    import jax.numpy as jnp

    if model == "cp_net":  # tanh hidden layers, linear logits, Σ_k t_k (lse(z) − z_k)

        def net(p, x):
            h = x
            for i in range(n_layers):
                a = h @ p[f"W{i}"].T + p[f"b{i}"]
                h = a if i == n_layers - 1 else jnp.tanh(a)
            return h

        def case_loss(z, x, t):
            return jnp.sum(t * (jax.nn.logsumexp(z) - z))

    else:  # logistic hidden units, linear code layer and output, Σ_k softplus(z_k) − x_k z_k
        code = n_layers // 2 - 1

        def net(p, x):
            h = x
            for i in range(n_layers):
                a = h @ p[f"W{i}"].T + p[f"b{i}"]
                h = a if i in (code, n_layers - 1) else jax.nn.sigmoid(a)
            return h

        def case_loss(z, x, t):
            return jnp.sum(jax.nn.softplus(z) - x * z)

    return net, case_loss


def jax_calls(case: dict):
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    dtype = np.dtype(case["dtype"])
    d = load_data(case["data"], dtype)
    n_layers = sum(1 for k in d["theta"] if k.startswith("W"))
    net, case_loss = jax_model(case["model"], n_layers)
    params = {k: jnp.asarray(a) for k, a in d["theta"].items()}
    x = jnp.asarray(d["x"])
    t = jnp.asarray(d["t"]) if "t" in d else x  # the autoencoder's target is its input
    layout = d["layout"]
    v = {
        k: jnp.asarray(d["v"][o : o + s].reshape(d["theta"][k].shape))
        for k, (o, s) in layout.items()
    }
    key = jax.random.PRNGKey(0)

    def mean_loss_of_z(z, x, t):
        return jnp.mean(jax.vmap(case_loss)(z, x, t))

    def loss(p, x, t):
        return mean_loss_of_z(net(p, x), x, t)

    grad = jax.value_and_grad(loss)

    def hvp(p, x, t, v):
        return jax.jvp(lambda q: jax.grad(loss)(q, x, t), (p,), (v,))[1]

    def gnvp(f_jvp, f_vjp, z, x, t, v):  # Jᵀ H_L J v on a linearization of z(θ)
        Jv = f_jvp(v)
        HJv = jax.jvp(lambda zz: jax.grad(mean_loss_of_z)(zz, x, t), (z,), (Jv,))[1]
        return f_vjp(HJv)[0]

    def hutchinson(h_jvp, key):  # v ⊙ Hv, v Rademacher, on a linearization of ∇L(θ)
        leaves, tree = jax.tree_util.tree_flatten(params)
        keys = jax.random.split(key, len(leaves))
        w = [jax.random.rademacher(k, a.shape, a.dtype) for k, a in zip(keys, leaves)]
        w = jax.tree_util.tree_unflatten(tree, w)
        return jax.tree_util.tree_map(lambda a, b: a * b, w, h_jvp(w))

    def input_grad(p, x, t):  # per case, f_b not divided by B; the autoencoder's target
        # is x itself, so its gradient flows through both the network and the target
        f = lambda xb, tb: case_loss(net(p, xb[None])[0], xb, tb)  # noqa: E731
        return jax.vmap(jax.grad(f))(x, t)

    j_loss, j_grad, j_hvp = jax.jit(loss), jax.jit(grad), jax.jit(hvp)
    j_gnvp, j_hut, j_ig = jax.jit(gnvp), jax.jit(hutchinson), jax.jit(input_grad)

    compile_s = {}

    def first(name, fn, *args):  # trace + compile + one run, in this fresh process
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn(*args))
        compile_s[name] = time.perf_counter() - t0
        return out

    first("loss", j_loss, params, x, t)
    first("grad", j_grad, params, x, t)
    first("hvp", j_hvp, params, x, t, v)
    # the linearizations (like symcurv's State: once per (θ, batch), not timed)
    z, f_jvp = jax.linearize(lambda q: net(q, x), params)
    f_vjp = jax.linear_transpose(f_jvp, params)
    _, h_jvp = jax.linearize(lambda q: jax.grad(loss)(q, x, t), params)
    first("gnvp", j_gnvp, f_jvp, f_vjp, z, x, t, v)
    first("diag", j_hut, h_jvp, key)
    first("input_grad", j_ig, params, x, t)
    ready = jax.block_until_ready
    calls = {
        "loss": lambda: ready(j_loss(params, x, t)),
        "grad": lambda: ready(j_grad(params, x, t)),
        "hvp": lambda: ready(j_hvp(params, x, t, v)),
        "gnvp": lambda: ready(j_gnvp(f_jvp, f_vjp, z, x, t, v)),
        "diag": lambda: ready(j_hut(h_jvp, key)),
        "input_grad": lambda: ready(j_ig(params, x, t)),
    }

    def flat(tree):
        out = np.zeros(len(d["theta_flat"]), dtype=dtype)
        for k, (o, s) in layout.items():
            out[o : o + s] = np.asarray(tree[k]).ravel()
        return out

    def results():
        return {
            "loss": np.asarray(j_loss(params, x, t)),
            "grad": flat(j_grad(params, x, t)[1]),
            "hvp": flat(j_hvp(params, x, t, v)),
            "gnvp": flat(j_gnvp(f_jvp, f_vjp, z, x, t, v)),
            "input_grad": np.asarray(j_ig(params, x, t)),
        }

    return calls, results, compile_s


# -- worker process -----------------------------------------------------------------------------
def cpu_median_time(fn, repeat: int, min_time: float) -> float:
    """common.median_time on the process's CPU clock (all its threads): on a machine whose
    cores other jobs share, time spent waiting for a core is not counted (--clock cpu)."""
    fn()
    t = time.process_time()
    fn()
    first = time.process_time() - t
    number = max(1, int(min_time / max(first, 1e-6)))
    times = []
    for _ in range(repeat):
        t = time.process_time()
        for _ in range(number):
            fn()
        times.append((time.process_time() - t) / number)
    return float(np.median(times))


def worker(side: str, spec_path: str, out_path: str) -> None:
    pin_to_cpus()
    spec = json.loads(Path(spec_path).read_text())
    make = symcurv_calls if side == "symcurv" else jax_calls
    out = []
    for case in spec["cases"]:
        calls, results, compile_s = make(case)
        row = {"case": case, "compile": compile_s}
        if spec.get("check"):
            folder = Path(case["data"]) / f"{side}_{case['dtype']}"
            folder.mkdir(exist_ok=True)
            for k, a in results().items():
                np.save(folder / f"{k}.npy", a)
        else:
            timer = cpu_median_time if spec.get("clock") == "cpu" else median_time
            row["times"] = {
                k: timer(fn, spec["repeat"], spec["min_time"]) for k, fn in calls.items()
            }
        out.append(row)
    Path(out_path).write_text(json.dumps(out))


def run_worker(side: str, spec: dict, tmp: Path, env: dict, tag: str) -> list:
    spec_path, out_path = tmp / f"spec_{tag}.json", tmp / f"out_{tag}_{side}.json"
    spec_path.write_text(json.dumps(spec))
    cmd = [sys.executable, __file__, "--worker", side, str(spec_path), str(out_path)]
    subprocess.run(cmd, check=True, env=env)
    return json.loads(out_path.read_text())


# -- parent ---------------------------------------------------------------------------------------
def build_all(cases, dtypes, root: Path, env: dict) -> dict:
    """Cold builds in fresh processes (fresh directories: Numba's cache starts empty), then
    each program called once with SYMCURV_DRIVER=compiled (its compiled driver, cached in
    the build: runtime/drivers.py); θ, batch and v files per (model, B). Returns
    {(model, dtype): (build seconds, drivers seconds)}."""
    code = (
        "import sys, time, json; sys.path.insert(0, {ex!r}); sys.path.insert(0, {here!r})\n"
        "import common; common.pin_to_cpus()\n"
        "t0 = time.perf_counter()\n"
        "import symcurv as sc, {model} as m, peers\n"
        "t1 = time.perf_counter()\n"
        "p = sc.compile(m.model(), programs={progs!r}, dtype={dtype!r}, build_dir={bd!r},"
        " progress=False)\n"
        "t2 = time.perf_counter()\n"
        "from pathlib import Path\n"
        "for B in {Bs!r}: peers.write_data(p, {model!r}, B, Path({data!r}) / str(B))\n"
        "from symcurv.runtime import drivers\n"
        "t3 = time.perf_counter()\n"
        "drivers.compile_all(sc.load({bd!r}))  # each part's driver, into the build\n"
        "t4 = time.perf_counter()\n"
        "print(json.dumps(dict(imports=t1 - t0, build=t2 - t1, drivers=t4 - t3)))\n"
    )
    cold = {}
    for model in dict.fromkeys(m for m, _ in cases):
        Bs = [B for m, B in cases if m == model]
        for dtype in dtypes:
            src = code.format(
                ex=str(HERE.parent / "examples"),
                here=str(HERE),
                model=model,
                progs=BUILD_PROGRAMS,
                dtype=dtype,
                bd=str(root / f"{model}_{dtype}"),
                Bs=Bs,
                data=str(root / f"data_{model}"),
            )
            r = subprocess.run(
                [sys.executable, "-c", src],
                check=True,
                env={**env, "SYMCURV_DRIVER": "auto"},
                capture_output=True,
                text=True,
            )
            got = json.loads(r.stdout.strip().splitlines()[-1])
            cold[(model, dtype)] = got["build"], got["drivers"]
            print(
                f"  built {model} {dtype}: {got['build']:.1f} s, then its drivers compiled on "
                f"first use: {got['drivers']:.1f} s",
                flush=True,
            )
    return cold


def check(cases_spec: list, tmp: Path, env: dict) -> list[list]:
    """Run both sides once in float64 and compare their results; raise on disagreement."""
    spec = {"cases": [c for c in cases_spec if c["dtype"] == "float64"], "check": True}
    run_worker("symcurv", spec, tmp, env, "check")
    run_worker("jax", spec, tmp, env, "check")
    rows, bad = [], []
    for c in spec["cases"]:
        folder = Path(c["data"])
        for k in ("loss", "grad", "hvp", "gnvp", "input_grad"):
            a = np.load(folder / f"symcurv_float64/{k}.npy")
            b = np.load(folder / f"jax_float64/{k}.npy")
            err = float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))
            rows.append([c["model"], c["B"], k, f"{err:.1e}"])
            if not err <= CHECK_TOL:
                bad.append(f"{c['model']} B={c['B']} {k}: rel err {err:.1e}")
    if bad:
        raise SystemExit("symcurv and JAX disagree (float64): " + "; ".join(bad))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run (under 2 min when quiet)")
    ap.add_argument("--rounds", type=int, help="alternating rounds (default 5; quick 2)")
    ap.add_argument("--dtypes", default=None, help="comma list (default float64,float32)")
    ap.add_argument("--models", default=None, help="comma list (default cp_net,autoencoder)")
    ap.add_argument(
        "--driver",
        choices=("compiled", "python", "auto"),
        default="compiled",
        help="symcurv's driver (SYMCURV_DRIVER; default compiled: a loop's steady state)",
    )
    ap.add_argument("--batches", default=None, help="comma list of B (default: every case's)")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall (default, a quiet machine) or cpu: process CPU time, all threads "
        "counted (a shared machine; XLA's and Numba's pools must not spin: use --threads 1)",
    )
    ap.add_argument("--worker", nargs=3, metavar=("SIDE", "SPEC", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(*args.worker)
    cases = QUICK_CASES if args.quick else FULL_CASES
    if args.models:
        cases = [c for c in cases if c[0] in args.models.split(",")]
    if args.batches:
        cases = [c for c in cases if str(c[1]) in args.batches.split(",")]
    dtypes = (args.dtypes or ("float64" if args.quick else "float64,float32")).split(",")
    rounds = args.rounds or (2 if args.quick else 5)
    repeat, min_time = (3, 2e-3) if args.quick else (7, 5e-3)
    env = pinned_env(args.threads)
    print(f"machine: {machine()}, {args.threads} threads per side")
    print(f"command: python benchmarks/{' '.join([Path(sys.argv[0]).name, *sys.argv[1:]])}\n")
    import jax

    print(f"jax {jax.__version__}; symcurv programs {BUILD_PROGRAMS}", flush=True)
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        cold = build_all(cases, dtypes, tmp, env)
        spec_cases = [
            dict(
                model=m,
                B=B,
                dtype=dt,
                build_dir=str(tmp / f"{m}_{dt}"),
                data=str(tmp / f"data_{m}" / str(B)),
            )
            for dt in dtypes
            for m, B in cases
        ]
        if "float64" in dtypes:
            rows = check(spec_cases, tmp, env)
            print("\nfloat64 agreement, relative ∞-norm error symcurv vs JAX (tolerance 1e-10):")
            print(table(rows, ["model", "B", "result", "rel err"]), flush=True)
        spec = {"cases": spec_cases, "repeat": repeat, "min_time": min_time, "clock": args.clock}
        per_round = []
        for r in range(rounds):
            got = {
                s: run_worker(s, spec, tmp, {**env, "SYMCURV_DRIVER": args.driver}, f"r{r}")
                for s in ("symcurv", "jax")
            }
            per_round.append(got)
            print(f"  round {r + 1}/{rounds} done", flush=True)
    report(spec_cases, per_round, cold, args.json)


def report(spec_cases: list, per_round: list, cold: dict, json_path: str | None) -> None:
    rows, results = [], []
    for i, c in enumerate(spec_cases):
        for k in PROGRAMS:
            ts = [rnd["symcurv"][i]["times"][k] for rnd in per_round]
            tj = [rnd["jax"][i]["times"][k] for rnd in per_round]
            ratios = np.divide(ts, tj)
            rows.append(
                [
                    c["dtype"],
                    c["model"],
                    c["B"],
                    k,
                    ms(float(np.median(ts))),
                    ms(float(np.median(tj))),
                    f"{np.median(ratios):.2f}",
                    f"{ratios.min():.2f}-{ratios.max():.2f}",
                ]
            )
            results.append(dict(**c, program=k, symcurv=ts, jax=tj))
    print(
        "\n"
        + table(
            rows,
            [
                "dtype",
                "model",
                "B",
                "program",
                "symcurv ms",
                "JAX ms",
                "symcurv/JAX",
                "range over rounds",
            ],
        )
    )
    comp = []
    for (model, dtype), (s, drivers) in cold.items():
        i = next(j for j, c in enumerate(spec_cases) if c["model"] == model and c["dtype"] == dtype)
        jc = [rnd["jax"][i]["compile"] for rnd in per_round]
        gh = float(np.median([d["grad"] + d["hvp"] for d in jc]))
        every = float(np.median([sum(d.values()) for d in jc]))
        comp.append([dtype, model, f"{s:.1f}", f"{drivers:.1f}", f"{gh:.2f}", f"{every:.2f}"])
    print(
        "\nCompile: symcurv cold build (sympy, passes, codegen, Numba for the programs "
        f"{', '.join(BUILD_PROGRAMS)}) vs JAX trace + compile + first call in a fresh process"
    )
    heads = [
        "dtype",
        "model",
        "symcurv cold build s",
        "+ drivers s",
        "JAX grad+hvp s",
        "JAX all 6 s",
    ]
    print(table(comp, heads))
    if json_path:
        Path(json_path).write_text(
            json.dumps(dict(results=results, cold=[[*k, *v] for k, v in cold.items()]))
        )


if __name__ == "__main__":
    main()
