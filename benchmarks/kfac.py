"""K-FAC factors and steps against the gradient and an SGD step (issue "K-FAC", its speed
targets), on the deep autoencoder 784-1000-500-250-30 mirrored, B = 1000, float64:

    python benchmarks/kfac.py              # 9 rounds
    python benchmarks/kfac.py --quick      # 3 rounds
    python benchmarks/kfac.py --build-dir build/bk   # keep the build (reruns skip Numba)

Targets: ``kfac_factors(curvature="curvature_prop")`` ≤ 1.8 × ``grad`` (one forward pass,
the CP Gauss-Newton back-sweep from the loss — a gradient's sweep with a noise seed — and
the A and G GEMMs, Σ_l B (n_in² + n_out²) multiply-adds); a K-FAC step without an inverse
≤ 1.3 × (an SGD step + the factor work). Two K-FAC steps are timed: with ``learning_rate``
and ``momentum`` fixed and no λ adaptation (gradient, factors, EMAs, the Kronecker
solves), and the default (α, μ from the quadratic model: two gnvp products on a State,
and ρ's extra loss every ``adapt_every`` = 5 steps, amortised here by timing 5 steps).
The eigendecompositions are timed alone; their cost per step is that over inverse_every.
Times: medians over rounds of the best of a few consecutive calls; ratios: medians of
per-round ratios (common.blocks), so a shared VM's slow phases cancel.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import autoencoder  # noqa: E402
from common import blocks, machine, ms, table  # noqa: E402

import symcurv as sc  # noqa: E402
from symcurv import testing  # noqa: E402
from symcurv.optim.training import Sampler  # noqa: E402

B = 1000
PROGRAMS = ("loss", "grad", "gnvp", "kfac")


def bench(root: Path, rounds: int) -> dict:
    t = time.perf_counter()
    prog = sc.compile(autoencoder.model(), programs=PROGRAMS, build_dir=root / "ae", progress=True)
    cold = time.perf_counter() - t
    theta = prog.init(0)
    batch = testing.random_batch(prog, B)
    sampler = Sampler(batch, B, seed=0)

    def k_step(opt, n=1):
        state = opt.init(theta)
        _, state, _ = opt.step(theta, sampler, state)  # factors and inverses exist now
        opt.inverse_every = 10**9  # every timed step is one without an inverse

        def run():
            s = state
            for _ in range(n):
                _, s, _ = opt.step(theta, sampler, s)

        return run

    fixed = sc.optim.KFAC(prog, learning_rate=0.1, momentum=0.9, adapt_damping=False)
    default = sc.optim.KFAC(prog)
    sgd = sc.optim.SGD(prog, learning_rate=0.01, momentum=0.9)
    sgd_state = sgd.init(theta)
    inv_opt = sc.optim.KFAC(prog)
    inv_state = inv_opt.init(theta)
    _, inv_state, _ = inv_opt.step(theta, sampler, inv_state)
    t = blocks(
        {
            "grad": lambda: prog.grad(theta, batch),
            "factors cp": lambda: prog.kfac_factors(theta, batch, "curvature_prop", seed=0),
            "factors empirical": lambda: prog.kfac_factors(theta, batch, "empirical"),
            "sgd step": lambda: sgd.step(theta, sampler, sgd_state),
            "kfac step fixed": k_step(fixed),
            "kfac 5 steps default": k_step(default, 5),
            "inverse": lambda: inv_opt._invert(dict(inv_state)),
        },
        rounds=rounds,
        block=2,
    )
    med = {k: float(np.median(v)) for k, v in t.items()}

    def ratio(a, b):
        return float(np.median(np.divide(t[a], t[b])))

    step_over = np.median(np.divide(t["kfac step fixed"], np.add(t["sgd step"], t["factors cp"])))
    default_over = np.median(
        np.divide(np.divide(t["kfac 5 steps default"], 5), np.add(t["sgd step"], t["factors cp"]))
    )
    return dict(
        times=med,
        factors_over_grad=ratio("factors cp", "grad"),
        empirical_over_grad=ratio("factors empirical", "grad"),
        step_over=float(step_over),
        default_over=float(default_over),
        cold=cold,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 rounds instead of 9")
    ap.add_argument("--build-dir", default=None, help="keep the build here")
    args = ap.parse_args()
    rounds = 3 if args.quick else 9
    print(f"machine: {machine()}")
    print(f"command: python {' '.join(sys.argv)}\n")
    with tempfile.TemporaryDirectory() as tmp:
        r = bench(Path(args.build_dir or tmp), rounds)
    tm = r["times"]
    rows = [
        ["grad", ms(tm["grad"]), "1.00", ""],
        [
            "kfac_factors(curvature_prop)",
            ms(tm["factors cp"]),
            f"{r['factors_over_grad']:.2f}",
            "≤ 1.8",
        ],
        [
            "kfac_factors(empirical)",
            ms(tm["factors empirical"]),
            f"{r['empirical_over_grad']:.2f}",
            "",
        ],
        ["SGD step", ms(tm["sgd step"]), "", ""],
        [
            "K-FAC step (fixed α, μ)",
            ms(tm["kfac step fixed"]),
            f"{r['step_over']:.2f} × (SGD + factors)",
            "≤ 1.3",
        ],
        [
            "K-FAC step (default)",
            ms(tm["kfac 5 steps default"] / 5),
            f"{r['default_over']:.2f} × (SGD + factors)",
            "",
        ],
        [
            "eigendecompositions",
            ms(tm["inverse"]),
            f"{tm['inverse'] / 20 / tm['grad']:.2f} × grad per step at inverse_every = 20",
            "",
        ],
    ]
    print(table(rows, ["autoencoder, B = 1000, float64", "ms", "ratio", "target"]))
    print(f"\ncold build {r['cold']:.0f} s")


if __name__ == "__main__":
    main()
