"""The GEMM floor of cp_net (issue 15): its products by numpy, by symcurv's ``gemm`` and by XLA.

    python benchmarks/gemm_shapes.py                          # quiet machine, one thread
    python benchmarks/gemm_shapes.py --coretypes "" Haswell   # also OpenBLAS's AVX2 kernels
    python benchmarks/gemm_shapes.py --dtype float32
    python benchmarks/gemm_shapes.py --model autoencoder --dtype float32   # its wide layers
    python benchmarks/gemm_shapes.py --sweep                  # own kernels against the BLAS
    python benchmarks/gemm_shapes.py --sweep tiled_nn tiled_tn   # some of them

At B = 1000 the 256-wide products are most of every cp_net program (docs/benchmarks.md,
"Per kernel"), so symcurv's ratio to JAX there is mostly the ratio of the two BLAS
libraries on these shapes: numpy's ``np.dot`` (numpy's OpenBLAS), symcurv's compiled
``gemm`` (runtime/gemm.py: Numba's ``np.dot``, i.e. scipy's OpenBLAS) and a jitted
``jnp.dot`` (XLA's CPU dot, Eigen-based); symcurv's ``gemm`` takes its own narrow kernel
(runtime/gemm_narrow.py) for X W0ᵀ and the BLAS for the others. Each library runs in a
fresh process pinned to the same core with one thread (``common.pinned_env``), the rounds
alternate, and each number is the best of the rounds' medians, µs. ``--coretypes`` also
runs the OpenBLAS sides with ``OPENBLAS_CORETYPE`` set (read when the library loads: it
picks the kernel set, e.g. the AVX2 Haswell kernels instead of the AVX-512 SkylakeX ones on
Zen 4). JAX is optional (``pip install -e ".[peers]"``); without it its column says so.

``--sweep`` times symcurv's own product kernels (runtime/gemm_narrow.py, gemm_tiles.py)
against the BLAS (Numba's ``np.dot``) over grids of shapes, in both dtypes, in one pinned
process: the tables that runtime/gemm.py's limits (which product goes where) are read from.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import machine, pin_to_cpus, pinned_env, table  # noqa: E402

B = 1000
SHAPES = {  # name: (a's shape, b's shape, transpose a, transpose b), as views, the way
    # the drivers pass cp_net's products (codegen/cpu.py: ``gemm(s7.T, in_x, ...)`` for Gᵀ X)
    "X W0ᵀ (forward, 1000×256·256×20)": ((B, 256), (20, 256), False, True),
    "G W0 (input gradient, 1000×20·20×256)": ((B, 20), (20, 256), False, False),
    "Gᵀ X (dW0, 20×1000·1000×256)": ((B, 20), (B, 256), True, False),
    "H W1ᵀ (hidden, 1000×20·20×20)": ((B, 20), (20, 20), False, True),
}


def _layer(n_in: int, n_out: int) -> dict:
    """A dense layer's three products at B cases, laid out as the drivers pass them."""
    return {
        f"H Wᵀ ({B}×{n_in}·{n_in}×{n_out})": ((B, n_in), (n_out, n_in), False, True),
        f"G W ({B}×{n_out}·{n_out}×{n_in})": ((B, n_out), (n_out, n_in), False, False),
        f"Gᵀ H ({n_out}×{B}·{B}×{n_in})": ((B, n_out), (B, n_in), True, False),
    }


# --model autoencoder: the deep autoencoder's widest layers (784-1000-500-250-30-...),
# where the float32 ratio to JAX stays above 1 (docs/benchmarks.md, "Session 13")
AUTOENCODER_SHAPES = {**_layer(784, 1000), **_layer(1000, 500), **_layer(500, 250)}
MODELS = {"cp_net": SHAPES, "autoencoder": AUTOENCODER_SHAPES}
SIDES = ("numpy", "symcurv gemm", "jax")


def _time(f) -> float:
    """Best of 7 repeats, µs per call, each repeat at least 20 ms of calls."""
    import timeit

    f()
    n = max(1, int(0.02 / max(timeit.timeit(f, number=1), 1e-7)))
    return min(timeit.repeat(f, number=n, repeat=7)) / n * 1e6


def worker(side: str, dtype: str, model: str, out: str) -> None:
    """Time every shape on one side (this fresh process), write {shape: µs}."""
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
        jax.config.update("jax_enable_x64", dtype == "float64")
        dots = {
            (ta, tb): jax.jit(lambda a, b, ta=ta, tb=tb: (a.T if ta else a) @ (b.T if tb else b))
            for ta in (False, True)
            for tb in (False, True)
        }
    else:
        from symcurv.runtime.gemm import gemm
    times = {}
    for name, (sa, sb, ta, tb) in MODELS[model].items():
        a, b = rng.standard_normal(sa).astype(dtype), rng.standard_normal(sb).astype(dtype)
        if side == "jax":
            f = _jax_call(dots[ta, tb], jnp.asarray(a), jnp.asarray(b))
        else:
            a = a.T if ta else a
            bb = b.T if tb else b
            call = np.dot if side == "numpy" else gemm
            f = _blas_call(call, a, bb, np.empty((a.shape[0], bb.shape[1]), dtype))
        times[name] = _time(f)
    Path(out).write_text(json.dumps(times))


def sweep(kernels=()) -> None:
    """symcurv's own kernels / BLAS over a grid of shapes, both dtypes: narrow_nt and
    tiled_nt for out = a·bᵀ over (K, N), tiled_nn for a·b over (K, N) and tiled_tn for
    gᵀ·b over (M, N), B rows or cases (the autoencoder's widths among them, with their
    column tails: 250, 500, 784, 1000 are not whole tiles); then narrow_nt over the row
    count. ``kernels``: only these (default all)."""
    import numpy as np
    from numba import njit

    from symcurv.runtime.gemm_narrow import narrow_nt
    from symcurv.runtime.gemm_tiles import tiled_nn, tiled_nt, tiled_tn

    blas = njit(lambda a, b, out: np.dot(a, b, out))
    pin_to_cpus()
    rng = np.random.default_rng(0)

    def ratio(kernel, a, b, blas_a, blas_b, out):
        return _time(lambda: kernel(a, b, out)) / _time(lambda: blas(blas_a, blas_b, out))

    def nt(m, k, n, dtype):  # out = a · btᵀ
        a, bt = (rng.standard_normal(s).astype(dtype) for s in ((m, k), (n, k)))
        return ratio(narrow_nt, a, bt, a, bt.T, np.empty((m, n), dtype))

    def wide_nt(k, n, dtype):  # out = a · wᵀ, packed panels
        a, w = (rng.standard_normal(s).astype(dtype) for s in ((B, k), (n, k)))
        return ratio(tiled_nt, a, w, a, w.T, np.empty((B, n), dtype))

    def nn(k, n, dtype):  # out = a · b
        a, b = (rng.standard_normal(s).astype(dtype) for s in ((B, k), (k, n)))
        return ratio(tiled_nn, a, b, a, b, np.empty((B, n), dtype))

    def tn(m, n, dtype):  # out = gᵀ · b
        g, b = (rng.standard_normal(s).astype(dtype) for s in ((B, m), (B, n)))
        return ratio(tiled_tn, g, b, g.T, b, np.empty((m, n), dtype))

    grids = {
        f"narrow_nt: out = a·bᵀ, a {B} × K, b N × K": (
            lambda k, n, dt: nt(B, k, n, dt),
            ("K", (16, 32, 64, 128, 256, 512)),
            ("N", (4, 8, 16, 20, 32, 40, 64, 100)),
        ),
        f"tiled_nt: out = a·wᵀ, a {B} × K, w N × K": (
            wide_nt,
            ("K", (8, 20, 32, 64, 128, 256, 500, 784, 1000)),
            ("N", (4, 10, 20, 32, 40, 64, 128, 250, 256, 500, 512, 784, 1000, 1024)),
        ),
        f"tiled_nn: out = a·b, a {B} × K, b K × N": (
            nn,
            ("K", (8, 20, 32, 64, 128, 256, 500, 1000)),
            ("N", (4, 10, 20, 32, 40, 64, 128, 250, 256, 500, 512, 784, 1000, 1024)),
        ),
        f"tiled_tn: out = gᵀ·b, g {B} × M, b {B} × N": (
            tn,
            ("M", (4, 8, 20, 30, 32, 64, 128, 250, 256, 500, 1000)),
            ("N", (4, 10, 20, 32, 40, 64, 128, 250, 256, 500, 512, 784, 1000, 1024)),
        ),
    }
    for dtype in ("float64", "float32"):
        for title, (f, (rname, rvals), (cname, cvals)) in grids.items():
            if kernels and title.split(":")[0] not in kernels:
                continue
            print(f"\n{dtype}, {title}: kernel / BLAS (below 1: symcurv's kernel is faster)")
            rows = [[f"{rname} = {r}"] + [f"{f(r, c, dtype):.2f}" for c in cvals] for r in rvals]
            print(table(rows, ["", *[f"{cname} = {c}" for c in cvals]]), flush=True)
        _by_rows(kernels, dtype, nt, rng)


def _by_rows(kernels, dtype, nt, rng) -> None:
    """The kernels over the row count (cases): cp_net's shapes at B = 1 to 1000."""
    import numpy as np
    from numba import njit

    from symcurv.runtime.gemm_tiles import tiled_nn, tiled_nt, tiled_tn

    blas = njit(lambda a, b, out: np.dot(a, b, out))

    def ratio(kernel, a, b, blas_a, blas_b, out):
        return _time(lambda: kernel(a, b, out)) / _time(lambda: blas(blas_a, blas_b, out))

    def rand(*shape):
        return rng.standard_normal(shape).astype(dtype)

    counts = (1, 4, 8, 16, 32, 64, 100, 256, 1000)
    rows = []
    if not kernels or "narrow_nt" in kernels:
        rows.append(["narrow_nt, K = 256, N = 20", *(nt(m, 256, 20, dtype) for m in counts)])
    for k, n in ((20, 20), (256, 20), (20, 256)):
        if not kernels or "tiled_nt" in kernels:
            cells = []
            for m in counts:
                a, w = rand(m, k), rand(n, k)
                cells.append(ratio(tiled_nt, a, w, a, w.T, np.empty((m, n), dtype)))
            rows.append([f"tiled_nt, K = {k}, N = {n}", *cells])
        if not kernels or "tiled_nn" in kernels:
            cells = []
            for m in counts[1:]:
                a, b = rand(m, k), rand(k, n)
                cells.append(ratio(tiled_nn, a, b, a, b, np.empty((m, n), dtype)))
            rows.append([f"tiled_nn, K = {k}, N = {n}", "", *cells])
        if not kernels or "tiled_tn" in kernels:
            cells = []
            for m in counts:
                g, b = rand(m, k), rand(m, n)
                cells.append(ratio(tiled_tn, g, b, g.T, b, np.empty((k, n), dtype)))
            rows.append([f"tiled_tn, M = {k}, N = {n} (cases)", *cells])
    rows = [[r[0], *(c if isinstance(c, str) else f"{c:.2f}" for c in r[1:])] for r in rows]
    print(f"\n{dtype}, over the rows: kernel / BLAS")
    print(table(rows, ["rows", *map(str, counts)]), flush=True)


def _jax_call(dot, a, b):
    return lambda: dot(a, b).block_until_ready()


def _blas_call(call, a, b, out):
    return lambda: call(a, b, out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--coretypes", nargs="*", default=[""], help="OPENBLAS_CORETYPE values")
    ap.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    ap.add_argument(
        "--sweep",
        nargs="*",
        metavar="KERNEL",
        help="own kernels / BLAS over shapes: narrow_nt tiled_nt tiled_nn tiled_tn (default all)",
    )
    ap.add_argument("--model", default="cp_net", choices=sorted(MODELS))
    ap.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(*args.worker)
    if args.sweep is not None:
        print(f"machine: {machine()}, one thread; ratios of best-of-7 times")
        os.environ.update(pinned_env(1))  # read by numba/OpenBLAS at import, below
        return sweep(args.sweep)
    print(
        f"machine: {machine()}, one thread, {args.model}, B = {B}, {args.dtype}; µs, best of rounds"
    )
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
            cmd = [sys.executable, __file__, "--worker", side, args.dtype, args.model, str(out)]
            subprocess.run(cmd, env=env, check=True)
            for k, v in json.loads(out.read_text()).items():
                cur = best.setdefault((side, core), {})
                cur[k] = min(cur.get(k, v), v)
        print(f"  round {r + 1}/{args.rounds} done", flush=True)
    cols = [f"{s}{' ' + c if c else ''}" for s, c in configs]
    rows = []
    for name in MODELS[args.model]:
        jax_t = best.get(("jax", ""), {}).get(name)
        row = [name]
        for cfg in configs:
            t = best.get(cfg, {}).get(name)
            row.append("—" if t is None else f"{t:.1f}" + (f" ({t / jax_t:.2f})" if jax_t else ""))
        rows.append(row)
    print(table(rows, ["product", *[c + " (/ JAX)" for c in cols]]))


if __name__ == "__main__":
    main()
