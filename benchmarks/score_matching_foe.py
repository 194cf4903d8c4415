"""Score matching on the Fields of Experts: one SM gradient per diagonal in units of one
energy gradient, and the exact-diagonal SM gradient against JAX (issue on score matching):

    python benchmarks/score_matching_foe.py                     # 64×64 crops, BL / S / TU
    python benchmarks/score_matching_foe.py --size 16 --exact   # + symcurv's exact and JAX
    python benchmarks/score_matching_foe.py --only-exact --no-jax --batch 1 --rounds 1 --block 1
                                               # 64²: symcurv's exact SM gradient alone

The FoE of examples/foe.py (M = 24 unit-norm 5 × 5 filters) over ``--size``² crops, a
batch of ``--batch`` crops: ``grad`` of the energy model, then ``grad`` of
``sc.score_matching(energy, reg=1e-3, diag=...)`` per diag (CP draws its noise inside the
timed call). JAX (optional: ``pip install "symcurv[peers]"``) computes the same exact SM
loss — ∂E/∂x by jax.grad, the diagonal from one jvp of that gradient per input coordinate
(vmapped over chunks of 256 basis vectors), per case by vmap — and its θ-gradient by jax.grad,
jitted; its energy gradient is timed too. symcurv's exact diagonal runs over B·D expanded
cases (runtime/case_expansion.py; its build does not grow with D; a call runs the B·D rows
in chunks of about 256 MB of scratch), and its time grows as B·D: minutes per 64 × 64
crop, so ``--exact`` with several crops is for small crops. JAX is timed
on ONE crop (the median of 5 calls; of 1 call for the exact SM gradient, after a warm-up
call that compiles), scaled by the batch size (its exact diagonal
is D jvps per crop: minutes at 64 × 64); symcurv per batch in rounds. Becker-LeCun
is exact for the FoE (one nonlinear layer), so its loss is checked against JAX's.
Times: medians over rounds of the best of a few consecutive calls (as common.blocks),
on the wall clock and, beside it, on this process's CPU clock (time.process_time: every
thread; what a shared machine's other jobs do not inflate much); the load average before
and after and the peak RSS are printed. symcurv's cold build and one warm-up call of each
function come before the rounds (``--no-warmup`` skips the warm-up call: at 64 × 64 the
exact one takes minutes; the build has compiled the kernels already).
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import foe  # noqa: E402
from common import best_of, machine, ms, table  # noqa: E402

import symcurv as sc  # noqa: E402

REG = 1e-3


def build(model, root: Path, name: str):
    t = time.perf_counter()
    prog = sc.compile(model, ("grad",), build_dir=root / name, progress=False)
    return prog, time.perf_counter() - t


def blocks_with_cpu(fns: dict, rounds: int, block: int, warmup: bool = True):
    """common.blocks on two clocks: per round, the best of ``block`` consecutive calls of
    each function in turn, on the wall clock and on the CPU clock (each its own best);
    returns ({name: [wall s per round]}, {name: [CPU s per round]})."""
    if warmup:
        for fn in fns.values():
            fn()
    wall = {k: [] for k in fns}
    cpu = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            best_w = best_c = float("inf")
            for _ in range(block):
                t, c = time.perf_counter(), time.process_time()
                fn()
                best_w = min(best_w, time.perf_counter() - t)
                best_c = min(best_c, time.process_time() - c)
            wall[k].append(best_w)
            cpu[k].append(best_c)
    return wall, cpu


def load() -> str:
    return "load average " + " ".join(f"{a:.2f}" for a in os.getloadavg())


def jax_programs(size: int, k: int = 5, remat: bool = False):
    """Jitted (energy θ-gradient, exact SM loss θ-gradient) of the same FoE in JAX;
    ``remat``: each chunk of jvps under jax.checkpoint (recomputed in the backward pass
    instead of stored: at 64 × 64 the stored residuals exhaust the memory)."""
    import jax  # noqa: PLC0415 - an optional extra
    import jax.numpy as jnp  # noqa: PLC0415

    jax.config.update("jax_enable_x64", True)
    c2 = math.exp(3.0)

    def energy(params, x):  # one flat image
        F, beta = params
        Fn = F / jnp.linalg.norm(F, axis=1, keepdims=True)
        img = x.reshape(1, 1, size, size)
        y = jax.lax.conv_general_dilated(img, Fn.reshape(-1, 1, k, k), (1, 1), "VALID")[0]
        return jnp.sum(jnp.exp(beta)[:, None, None] * jnp.log1p(c2 * y**2 / 2))

    def sm_case(params, x):
        g = jax.grad(energy, argnums=1)
        basis = jnp.eye(x.shape[0])
        # one jvp of the gradient per coordinate, vmapped over chunks of the basis (memory)
        hvp_ii = lambda e: jax.jvp(lambda z: g(params, z), (x,), (e,))[1] @ e  # noqa: E731
        if remat:
            hvp_ii = jax.checkpoint(hvp_ii)
        d = jax.lax.map(hvp_ii, basis, batch_size=min(256, x.shape[0]))
        return jnp.sum(0.5 * g(params, x) ** 2 - d + REG * d**2)

    def mean_of(f):
        return lambda params, X: jnp.mean(jax.vmap(lambda x: f(params, x))(X))

    e_grad = jax.jit(jax.grad(mean_of(energy)))
    sm_grad = jax.jit(jax.value_and_grad(mean_of(sm_case)))
    return e_grad, sm_grad


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=64, help="side of the square crops")
    ap.add_argument("--batch", type=int, default=8, help="crops per gradient call")
    ap.add_argument("--rounds", type=int, default=5, help="timing rounds")
    ap.add_argument("--block", type=int, default=3, help="consecutive calls per round (best)")
    ap.add_argument("--exact", action="store_true", help="add symcurv's exact diag and JAX")
    ap.add_argument("--jax", action="store_true", help="add JAX's exact SM gradient")
    ap.add_argument("--only-exact", action="store_true", help="skip becker_lecun, S and TU")
    ap.add_argument("--jax-remat", action="store_true", help="JAX's jvps under jax.checkpoint")
    ap.add_argument("--no-jax", action="store_true", help="never run JAX")
    ap.add_argument("--no-warmup", action="store_true", help="no warm-up call before rounds")
    args = ap.parse_args()
    print(f"machine: {machine()}")
    print(f"command: python {' '.join(sys.argv)}")
    print(f"start: {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}, {load()}\n")
    energy = foe.model(image=(args.size, args.size), name=f"foe_bench{args.size}")
    rng = np.random.default_rng(0)
    X = rng.normal(scale=1.0, size=(args.batch, args.size**2))
    batch = {"x": X}
    diags = [] if args.only_exact else ["becker_lecun", "S", "TU"]
    diags += ["exact"] if args.exact or args.only_exact else []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        progs, cold = {}, {}
        progs["energy"], cold["energy"] = build(energy, root, "energy")
        for d in diags:
            progs[d], cold[d] = build(sc.score_matching(energy, reg=REG, diag=d), root, d)
        theta = progs["energy"].init(0)
        fns = {"energy": lambda: progs["energy"].grad(theta, batch)}
        for d in diags:
            kw = {"seed": 0} if d in ("S", "TU") else {}
            fns[d] = lambda p=progs[d], kw=kw: p.grad(theta, batch, **kw)
        t, t_cpu = blocks_with_cpu(fns, args.rounds, args.block, warmup=not args.no_warmup)
        once = {}
        if (args.exact or args.only_exact or args.jax) and not args.no_jax:
            import jax  # noqa: PLC0415 - an optional extra

            e_grad, sm_grad = jax_programs(args.size, remat=args.jax_remat)
            p = progs["energy"].unflatten(theta)
            params, X1 = (p["F"], p["beta"]), X[:1]
            for name, fn in (("jax energy", e_grad), ("jax exact", sm_grad)):
                start = time.perf_counter()
                out = fn(params, X1)  # the first call compiles
                cold[name] = time.perf_counter() - start
                repeat = 5 if name == "jax energy" else 1  # the exact one takes minutes
                call = lambda fn=fn: jax.block_until_ready(fn(params, X1))  # noqa: E731
                once[name] = best_of(call, repeat=repeat) * len(X)  # per batch of len(X)
            j_loss = float(out[0])
            for d in ("becker_lecun", "exact"):  # Becker-LeCun is exact for the FoE
                if d in progs:
                    f = progs[d].grad(theta, {"x": X1})[0]
                    print(f"SM loss (one crop): symcurv {d} {f:.12g}, JAX exact {j_loss:.12g}")
    med = {k: float(np.median(v)) for k, v in t.items()}
    med_cpu = {k: float(np.median(v)) for k, v in t_cpu.items()}
    t.update({k: [v] * args.rounds for k, v in once.items()})
    med.update(once)
    rows = []
    for k in t:
        ratio = float(np.median(np.divide(t[k], t["energy"])))
        cpu_ratio = (
            f"{float(np.median(np.divide(t_cpu[k], t_cpu['energy']))):.4g}" if k in t_cpu else "-"
        )
        vs = [
            f"{float(np.median(np.divide(t[r], t[k]))):.2f}" if r in t else "-"
            for r in ("exact", "jax exact")
        ]
        cpu_ms = ms(med_cpu[k]) if k in med_cpu else "-"
        rows.append([k, ms(med[k]), cpu_ms, f"{ratio:.4g}", cpu_ratio, *vs, f"{cold[k]:.0f}"])
    header = [
        "grad of",
        "ms",
        "CPU ms",
        "× symcurv energy grad",
        "× (CPU)",
        "exact / this",
        "jax exact / this",
        "cold build s",
    ]
    print(table(rows, header))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB on Linux
    print(f"\nend: {time.strftime('%H:%M:%S UTC', time.gmtime())}, {load()}, peak RSS {rss:.2f} GB")


if __name__ == "__main__":
    main()
