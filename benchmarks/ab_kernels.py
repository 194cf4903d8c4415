"""A/B of two symcurv checkouts on cp_net or the autoencoder in CPU time, alternated in one
run (issue 15).

    python benchmarks/ab_kernels.py /path/to/checkout_a /path/to/checkout_b \
        --dtypes float64 float32 --batch 100 1000 --rounds 3
    python benchmarks/ab_kernels.py A B --model autoencoder --dtypes float32 --batch 1000 \
        --repeat 5 --inner 3

Each checkout builds the model (programs loss, grad, hvp, input_grad) once per dtype into
its own directory under --build-dir; then per round a fresh process per checkout (A, B, A, B,
...) pinned to one core with one BLAS/Numba thread times every call as the best of
--repeat ``time.process_time`` readings of --inner calls after warm-up (CPU time: the
machine is shared, wall time is not trustworthy). The table gives the best over rounds per
side and the ratio B/A. Both sides get the same θ, batch and v (fixed seeds), and their
results are compared (max relative difference printed), so a faster wrong kernel shows.
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

HERE = Path(__file__).resolve().parent
PROGRAMS = ("loss", "grad", "hvp", "input_grad")


def worker(build: Path, model: str, dtype: str, batches: list[int], repeat: int, inner: int):
    import importlib

    import numpy as np

    sys.path.insert(0, str(HERE.parent / "examples"))
    example = importlib.import_module(model)

    import symcurv as sc

    if (build / "manifest.json").exists():
        prog = sc.load(build)
    else:
        prog = sc.compile(
            example.model(), programs=PROGRAMS, build_dir=build, dtype=dtype, progress=False
        )
    rng = np.random.default_rng(0)
    theta = prog.init(seed=0)
    v = rng.normal(size=theta.shape).astype(theta.dtype)
    out = {}
    for B in batches:
        if model == "autoencoder":  # its target is its input, pixels in [0, 1]
            batch = {"x": rng.uniform(size=(B, 784)).astype(dtype)}
        else:
            x = rng.normal(size=(B, 256)).astype(dtype)
            batch = {"x": x, "t": np.eye(10, dtype=dtype)[rng.integers(0, 10, B)]}
        calls = {
            "loss": lambda batch=batch: prog.loss(theta, batch),
            "grad": lambda batch=batch: prog.grad(theta, batch),
            "hvp": lambda batch=batch: prog.hvp(theta, batch, v),
            "input_grad": lambda batch=batch: prog.input_grad(theta, batch),
        }
        for name, f in calls.items():
            res = f()
            for _ in range(3):
                f()
            best = float("inf")
            for _ in range(repeat):
                t0 = time.process_time()
                for _ in range(inner):
                    f()
                best = min(best, (time.process_time() - t0) / inner)
            flat = np.concatenate([np.ravel(np.asarray(r, np.float64)) for r in _leaves(res)])
            out[f"{name} {B}"] = (best * 1e6, flat.tolist()[:64])
    return out


def _leaves(res):
    if isinstance(res, dict):
        return [a for k in sorted(res) for a in _leaves(res[k])]
    if isinstance(res, (tuple, list)):
        return [a for r in res for a in _leaves(r)]
    return [res]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--model", choices=["cp_net", "autoencoder"], default="cp_net")
    ap.add_argument("--dtypes", nargs="+", default=["float64"])
    ap.add_argument("--batch", nargs="+", type=int, default=[100, 1000])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--inner", type=int, default=20)
    ap.add_argument("--build-dir", default=None)
    ap.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        build, dtype, out = args.worker
        res = worker(Path(build), args.model, dtype, args.batch, args.repeat, args.inner)
        Path(out).write_text(json.dumps(res))
        return
    root = Path(args.build_dir or tempfile.mkdtemp(prefix="ab_kernels_"))
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    best: dict = {}
    print(f"load average {os.getloadavg()}; builds in {root}", flush=True)
    for rnd in range(args.rounds):
        for dtype in args.dtypes:
            for side, path in (("A", args.a), ("B", args.b)):
                out = root / f"{side}_{dtype}.json"
                cmd = [sys.executable, __file__, args.a, args.b, "--model", args.model, "--batch"]
                cmd += [str(b) for b in args.batch]
                cmd += ["--repeat", str(args.repeat), "--inner", str(args.inner)]
                cmd += ["--worker", str(root / f"{side}_{args.model}_{dtype}"), dtype, str(out)]
                cmd = ["taskset", "-c", "0", *cmd]
                subprocess.run(cmd, check=True, env=dict(env, PYTHONPATH=path))
                for key, (us, vals) in json.loads(out.read_text()).items():
                    k = (dtype, key)
                    prev = best.get((side, k), (float("inf"), vals))
                    best[(side, k)] = (min(prev[0], us), vals)
        print(f"round {rnd + 1} done, load average {os.getloadavg()}", flush=True)
    print("| dtype | call | A µs | B µs | B/A | max rel diff |")
    print("|---|---|---|---|---|---|")
    for side_k in sorted(k for s, k in best if s == "A"):
        (a, va), (b, vb) = best[("A", side_k)], best[("B", side_k)]
        diff = max(
            (abs(x - y) / max(abs(x), 1e-30) for x, y in zip(va, vb)),
            default=0.0,
        )
        print(f"| {side_k[0]} | {side_k[1]} | {a:.1f} | {b:.1f} | {b / a:.2f} | {diff:.1e} |")


if __name__ == "__main__":
    main()
