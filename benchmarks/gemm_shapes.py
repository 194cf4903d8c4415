"""The GEMM floor of cp_net (issue 15): its products by numpy, by symcurv's ``gemm`` and by XLA.

    python benchmarks/gemm_shapes.py                          # quiet machine, one thread
    python benchmarks/gemm_shapes.py --coretypes "" Haswell   # also OpenBLAS's AVX2 kernels

At B = 1000 the 256-wide products are most of every cp_net program (docs/benchmarks.md,
"Per kernel"), so symcurv's ratio to JAX there is mostly the ratio of the two BLAS
libraries on these shapes: numpy's ``np.dot`` (numpy's OpenBLAS), symcurv's compiled
``gemm`` (runtime/gemm.py: Numba's ``np.dot``, i.e. scipy's OpenBLAS) and a jitted
``jnp.dot`` (XLA's CPU dot, Eigen-based). Each library runs in a fresh process pinned to
the same core with one thread (``common.pinned_env``), the rounds alternate, and each
number is the best of the rounds' medians, µs. ``--coretypes`` also runs the OpenBLAS
sides with ``OPENBLAS_CORETYPE`` set (read when the library loads: it picks the kernel
set, e.g. the AVX2 Haswell kernels instead of the AVX-512 SkylakeX ones on Zen 4). JAX is
optional (``pip install -e ".[peers]"``); without it its column says so.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import machine, pin_to_cpus, pinned_env, table  # noqa: E402

B = 1000
SHAPES = {  # name: (a's shape, b's shape, transpose b): the products of cp_net's programs
    "X W0ᵀ (forward, 1000×256·256×20)": ((B, 256), (20, 256), True),
    "G W0 (input gradient, 1000×20·20×256)": ((B, 20), (20, 256), False),
    "Gᵀ X (dW0, 20×1000·1000×256)": ((20, B), (B, 256), False),
    "H W1ᵀ (hidden, 1000×20·20×20)": ((B, 20), (20, 20), True),
}
SIDES = ("numpy", "symcurv gemm", "jax")


def worker(side: str, out: str) -> None:
    """Time every shape on one side (this fresh process), write {shape: µs}."""
    import timeit

    import numpy as np

    pin_to_cpus()
    rng = np.random.default_rng(0)
    if side == "jax":
        try:
            import jax
            import jax.numpy as jnp
        except ImportError:
            Path(out).write_text(json.dumps({}))
            return
        jax.config.update("jax_enable_x64", True)
        dots = {t: jax.jit(lambda a, b, t=t: a @ (b.T if t else b)) for t in (False, True)}
    else:
        from symcurv.runtime.gemm import gemm
    times = {}
    for name, (sa, sb, tb) in SHAPES.items():
        a, b = rng.standard_normal(sa), rng.standard_normal(sb)
        if side == "jax":
            f = _jax_call(dots[tb], jnp.asarray(a), jnp.asarray(b))
        else:
            bb = b.T if tb else b
            call = np.dot if side == "numpy" else gemm
            f = _blas_call(call, a, bb, np.empty((sa[0], bb.shape[1])))
        f()
        n = max(1, int(0.02 / max(timeit.timeit(f, number=1), 1e-7)))
        times[name] = min(timeit.repeat(f, number=n, repeat=7)) / n * 1e6
    Path(out).write_text(json.dumps(times))


def _jax_call(dot, a, b):
    return lambda: dot(a, b).block_until_ready()


def _blas_call(call, a, b, out):
    return lambda: call(a, b, out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--coretypes", nargs="*", default=[""], help="OPENBLAS_CORETYPE values")
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(*args.worker)
    print(f"machine: {machine()}, one thread, B = {B}, float64; µs, best over rounds")
    configs = [(s, "") for s in SIDES] + [
        (s, c) for c in args.coretypes if c for s in SIDES if s != "jax"
    ]
    best: dict[tuple[str, str], dict[str, float]] = {}
    tmp = Path(subprocess.check_output(["mktemp", "-d"], text=True).strip())
    for r in range(args.rounds):
        for side, core in configs if r % 2 == 0 else reversed(configs):
            env = pinned_env(1)
            if core:
                env["OPENBLAS_CORETYPE"] = core
            out = tmp / "times.json"
            cmd = [sys.executable, __file__, "--worker", side, str(out)]
            subprocess.run(cmd, env=env, check=True)
            for k, v in json.loads(out.read_text()).items():
                cur = best.setdefault((side, core), {})
                cur[k] = min(cur.get(k, v), v)
        print(f"  round {r + 1}/{args.rounds} done", flush=True)
    cols = [f"{s}{' ' + c if c else ''}" for s, c in configs]
    rows = []
    for name in SHAPES:
        jax_t = best.get(("jax", ""), {}).get(name)
        row = [name]
        for cfg in configs:
            t = best.get(cfg, {}).get(name)
            row.append("—" if t is None else f"{t:.1f}" + (f" ({t / jax_t:.2f})" if jax_t else ""))
        rows.append(row)
    print(table(rows, ["product", *[c + " (/ JAX)" for c in cols]]))


if __name__ == "__main__":
    main()
