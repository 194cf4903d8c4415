"""Per-case gradients and their norms against the batch gradient, on the CP paper's
256-20-20-20-10 tanh net (``examples/cp_net.py``).

    python benchmarks/per_case.py              # B = 1000
    python benchmarks/per_case.py --cases 100

``per_case_grad`` writes the (B, n_params) array of ∇f_b; ``per_case_grad_norm`` gives
‖∇f_b‖ by per-case dot products of activations and cotangents (docs/curvature.md), never
forming that array; ``sum_sq_grad`` is Σ_b ∇f_b ⊙ ∇f_b by GEMMs of squares. Times are
medians of interleaved calls (``common.interleaved``), so a busy machine slows all alike.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import threadpoolctl

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import cp_net  # noqa: E402
from common import interleaved, machine, ms, table  # noqa: E402

import symcurv as sc  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--cases", type=int, default=1000, help="batch size B (default 1000)")
    ap.add_argument("--repeat", type=int, default=21, help="interleaved rounds (default 21)")
    ap.add_argument(
        "--build-dir",
        default=str(ROOT / "build" / "bench_per_case"),
        help="the build (kept: reruns skip Numba compilation)",
    )
    ap.add_argument(
        "--blas-threads",
        type=int,
        default=1,
        help="BLAS threads (default 1: on a busy 2-core machine multithreaded OpenBLAS made "
        "these small GEMMs 20× slower)",
    )
    args = ap.parse_args(argv)
    prog = sc.compile(
        cp_net.model(),
        programs=("grad", "sum_sq_grad", "per_case_grad", "per_case_grad_norm"),
        build_dir=args.build_dir,
        progress=False,
    )
    # after compile, once the BLAS the kernels call is loaded
    threadpoolctl.threadpool_limits(args.blas_threads, user_api="blas")
    rng = np.random.default_rng(0)
    B = args.cases
    batch = {"x": rng.uniform(-1, 1, (B, 256)), "t": np.eye(10)[rng.integers(0, 10, B)]}
    theta = prog.init(0)
    fns = {
        "grad": lambda: prog.grad(theta, batch),
        "sum_sq_grad": lambda: prog.sum_sq_grad(theta, batch),
        "per_case_grad": lambda: prog.per_case_grad(theta, batch),
        "per_case_grad_norm": lambda: prog.per_case_grad_norm(theta, batch),
    }
    times = interleaved(fns, args.repeat)
    G = prog.per_case_grad(theta, batch)
    norms = np.linalg.norm(G, axis=1)
    err = np.max(np.abs(prog.per_case_grad_norm(theta, batch) - norms) / norms)
    print(f"{machine()}, {args.blas_threads} BLAS thread(s)")
    print(f"cp_net, {prog.n_params} parameters, B = {B}\n")
    rows = [[k, ms(t), f"{t / times['grad']:.2f}"] for k, t in times.items()]
    print(table(rows, ["program", "ms", "× grad"]))
    print(f"\nmax relative error of the norms against ‖per_case_grad rows‖: {err:.1e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
