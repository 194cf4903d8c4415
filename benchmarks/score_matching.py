"""One score-matching gradient per diagonal, in units of one energy gradient (issue on
score matching, its speed targets):

    python benchmarks/score_matching.py                   # PoE at D = 64, B = 1000, every diag
    python benchmarks/score_matching.py --quick --no-exact  # 3 rounds, no exact diagonal
    python benchmarks/score_matching.py --no-jax          # without JAX's exact SM gradient

On a machine shared with other busy processes, pin BLAS to one thread
(``OPENBLAS_NUM_THREADS=1``): oversubscribed OpenBLAS threads made the same GEMM-bound
call vary 100-fold between runs (docs/benchmarks.md).

The product of Student-t experts of examples/poe_score_matching.py (M = D = 64) at
B = 1000: ``grad`` of the energy model (one forward and one backward sweep), then ``grad``
of ``sc.score_matching(energy, reg=1e-3, diag=...)`` for each diag (a CP model draws its
noise inside the timed call, seed fixed). Targets: the Becker-LeCun and CP gradients ≥ 10×
cheaper than the exact one, and symcurv's exact SM gradient ≤ 1 × JAX's computing the same
(optional extra: ``pip install "symcurv[peers]"``): ∂E/∂x by jax.grad, the diagonal from
one jvp of that gradient per input coordinate (vmapped over the D basis vectors, then over
the cases), the θ-gradient of the mean by jax.value_and_grad, jitted, float64 — timed in
the same rounds as symcurv's calls, on the same batch and θ, and its loss printed beside
symcurv's. symcurv's exact diagonal runs ONE sweep over B·D expanded cases (b, i), each
carrying e_i (runtime/case_expansion.py), so its build does not grow with D. Times are
medians over rounds of the best of a few consecutive calls, ratios medians of per-round
ratios (common.blocks); build times (cold: Numba compiles every kernel) are printed too.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import poe_score_matching as poe  # noqa: E402
from common import blocks, machine, ms, table  # noqa: E402

import symcurv as sc  # noqa: E402

B = 1000
REG = 1e-3
DIAGS = ("becker_lecun", "S", "TU", "exact")


def jax_sm_grad(D: int = 64):
    """Jitted (J, ∂J/∂(W, β)) of the PoE's exact score-matching loss in JAX."""
    import jax  # noqa: PLC0415 - an optional extra
    import jax.numpy as jnp  # noqa: PLC0415

    jax.config.update("jax_enable_x64", True)
    c2 = float(np.exp(3.0))

    def energy(params, x):  # one case
        W, beta = params
        u = (W / jnp.linalg.norm(W, axis=1, keepdims=True)) @ x
        return jnp.dot(jnp.exp(beta), jnp.log(c2 * u**2 / 2 + 1))

    def sm_case(params, x):
        g = lambda z: jax.grad(energy, argnums=1)(params, z)  # noqa: E731
        s = g(x)
        hvp_ii = lambda e: jax.jvp(g, (x,), (e,))[1] @ e  # noqa: E731 - e_iᵀ H e_i
        d = jax.vmap(hvp_ii)(jnp.eye(D))
        return jnp.sum(0.5 * s**2 - d + REG * d**2)

    def loss(params, X):
        return jnp.mean(jax.vmap(lambda x: sm_case(params, x))(X))

    fn = jax.jit(jax.value_and_grad(loss))
    return lambda params, X: jax.block_until_ready(fn(params, X))


def build(model, root: Path, name: str):
    t = time.perf_counter()
    prog = sc.compile(model, ("grad",), build_dir=root / name, progress=False)
    return prog, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 rounds instead of 9")
    ap.add_argument("--no-exact", action="store_true", help="skip the exact diagonal")
    ap.add_argument("--no-jax", action="store_true", help="skip JAX's exact SM gradient")
    args = ap.parse_args()
    rounds = 3 if args.quick else 9
    print(f"machine: {machine()}")
    print(f"command: python {' '.join(sys.argv)}\n")
    energy = poe.poe_energy()
    X = np.random.default_rng(0).normal(size=(B, 64))
    batch = {"x": X}
    diags = [d for d in DIAGS if not (args.no_exact and d == "exact")]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        progs, cold = {}, {}
        progs["energy"], cold["energy"] = build(energy, root, "energy")
        for d in diags:
            sm = sc.score_matching(energy, reg=REG, diag=d)
            progs[d], cold[d] = build(sm, root, d)
        theta = progs["energy"].init(0)
        fns = {"energy": lambda: progs["energy"].grad(theta, batch)}
        for d in diags:
            kw = {"seed": 0} if d in ("S", "TU") else {}
            fns[d] = lambda p=progs[d], kw=kw: p.grad(theta, batch, **kw)
        has_jax = importlib.util.find_spec("jax") is not None
        if not has_jax and not args.no_jax:
            print('JAX is not installed (pip install "symcurv[peers]"): its column is skipped')
        if has_jax and not args.no_jax and not args.no_exact:
            p = progs["energy"].unflatten(theta)
            params = (p["W"], p["beta"])
            start = time.perf_counter()
            jgrad = jax_sm_grad()
            j_loss = float(jgrad(params, X)[0])  # the first call compiles
            cold["jax exact"] = time.perf_counter() - start
            ours = progs["exact"].grad(theta, batch)[0]
            print(f"SM loss: symcurv exact {ours:.12g}, JAX {j_loss:.12g}")
            fns["jax exact"] = lambda: jgrad(params, X)
        t = blocks(fns, rounds=rounds)
    med = {k: float(np.median(v)) for k, v in t.items()}
    rows = []
    for k in t:
        ratio = float(np.median(np.divide(t[k], t["energy"])))
        vs = [
            f"{float(np.median(np.divide(t[r], t[k]))):.2f}" if r in t else "-"
            for r in ("exact", "jax exact")
        ]
        kernels = len(progs[k].spec("grad")["kernels"]) if k in progs else "-"
        rows.append([k, ms(med[k]), f"{ratio:.2f}", *vs, f"{cold[k]:.0f}", kernels])
    header = ["grad of", "ms", "× energy grad", "exact / this", "jax exact / this"]
    print(table(rows, [*header, "cold build s", "kernels"]))


if __name__ == "__main__":
    main()
