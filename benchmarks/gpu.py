"""The CUDA backend on a real GPU: time per program, achieved GFLOP/s against the device's
peak, and the ratio to the CPU backend on the same machine (issue 4).

    python benchmarks/gpu.py                        # autoencoder, B = 1000 and 10000, f32 and f64
    python benchmarks/gpu.py --quick                # B = 1000 only, fewer rounds
    python benchmarks/gpu.py --build-dir build/bg   # keep the builds (reruns skip compiling)
    NUMBA_ENABLE_CUDASIM=1 python benchmarks/gpu.py --model small --sizes 8 --quick
                                                    # a smoke run of this script, no GPU

Model: the autoencoder 784-1000-500-250-30 mirrored (examples/autoencoder.py), θ from its
sparse initialiser, a uniform batch. For each dtype and batch size B, each call is timed as
the median of ``rounds`` calls after a warm-up (every cuda call ends by copying its result
to the host, which waits for the GPU; the static parts, kept on the device, are followed by
``cuda.synchronize()``). The same calls run on the CPU backend (``parallel=True``, Numba
threads on every core) for the *cpu/gpu* column.

FLOPs are counted, not estimated: during one call of each program, every GEMM, per-case
mat-vec and outer product the generated driver launches adds its multiply-adds (2·M·N·K)
to a counter. GFLOP/s = those flops / the median time, a lower bound on the work done (maps
and reductions are not counted). The peak is the device's FMA throughput from its
multiprocessor count, clock and compute capability (FP32 and FP64 lanes per SM from
NVIDIA's tables), and *floor* is one forward pass's GEMMs alone (``ck.gemm`` on the
layer products, the GPU analogue of benchmarks/curvature.py's unit).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import autoencoder  # noqa: E402
from common import machine, table  # noqa: E402

import symcurv as sc  # noqa: E402

PROGRAMS = ["loss", "grad", "hvp", "gnvp", "cp_diag"]
# FMA lanes per SM (FP32, FP64) by compute capability: NVIDIA CUDA C Programming Guide,
# "Arithmetic Instructions" throughput table
LANES = {
    (7, 0): (64, 32),
    (7, 5): (64, 2),
    (8, 0): (64, 32),
    (8, 6): (128, 2),
    (8, 7): (128, 2),
    (8, 9): (128, 2),
    (9, 0): (128, 64),
}


def log(msg: str) -> None:
    print(f"[gpu {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def device_info() -> dict:
    """Name, compute capability and FP32/FP64 peak GFLOP/s of the current device."""
    from numba import cuda

    dev = cuda.get_current_device()
    cc = tuple(dev.compute_capability)
    name = dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name)
    sms, clock_ghz = int(dev.MULTIPROCESSOR_COUNT), dev.CLOCK_RATE / 1e6
    f32, f64 = LANES.get(cc, (None, None))
    peak = {
        "float32": 2 * f32 * sms * clock_ghz if f32 else None,
        "float64": 2 * f64 * sms * clock_ghz if f64 else None,
    }
    return dict(name=name, cc=cc, sms=sms, clock_ghz=clock_ghz, peak_gflops=peak)


class FlopCounter:
    """Adds 2·M·N·K for every GEMM (and the per-case mat-vecs and outers) the generated
    cuda drivers launch through ``cuda_kernels`` while active."""

    def __init__(self) -> None:
        from symcurv.runtime import cuda_kernels as ck

        self.ck, self.flops, self.saved = ck, 0.0, {}

    def __enter__(self):
        ck = self.ck
        self.saved = {k: getattr(ck, k) for k in ("gemm", "batched_matvec", "outer")}
        gemm, matvec, outer = self.saved["gemm"], self.saved["batched_matvec"], self.saved["outer"]

        def counted_gemm(a, b, c, trans_a=False, trans_b=False, *args, **kw):
            self.flops += 2.0 * c.shape[0] * c.shape[1] * (a.shape[0] if trans_a else a.shape[1])
            return gemm(a, b, c, trans_a, trans_b, *args, **kw)

        def counted_matvec(w, h, out, rows, cols, trans=False):
            self.flops += 2.0 * out.shape[0] * rows * cols
            return matvec(w, h, out, rows, cols, trans)

        def counted_outer(u, v, out, m, n):
            self.flops += 1.0 * out.shape[0] * m * n
            return outer(u, v, out, m, n)

        ck.gemm, ck.batched_matvec, ck.outer = counted_gemm, counted_matvec, counted_outer
        return self

    def __exit__(self, *exc) -> None:
        for k, f in self.saved.items():
            setattr(self.ck, k, f)


def median_time(fn, rounds: int, sync=None) -> float:
    fn()
    if sync:
        sync()
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        if sync:
            sync()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def calls(prog, theta, batch, v, device: bool) -> dict:
    """label -> function, the same calls on either backend."""
    st = prog.linearize(theta, batch)
    st.gnvp(v), st.hvp(v), st.cp_diag("S", seed=0)  # fill the State's cache
    static = lambda p: lambda: prog.run(p, theta, batch, check=False, keep=device)  # noqa: E731
    return {
        "prog.loss": lambda: prog.loss(theta, batch),
        "prog.grad": lambda: prog.grad(theta, batch),
        "linearize: gnvp.static": static("gnvp.static"),
        "st.gnvp(v)": lambda: st.gnvp(v),
        "st.hvp(v)": lambda: st.hvp(v),
        "st.cp_diag('S')": lambda: st.cp_diag("S", seed=0),
        "prog.cp_diag('S')": lambda: prog.cp_diag(theta, batch, "S", seed=0),
    }


def gemm_floor(prog, B: int):
    """One forward pass's GEMMs on the device: (B, n_in) @ Wᵀ into (B, n_out) per matrix."""
    from numba import cuda

    from symcurv.runtime import cuda_kernels as ck

    rng = np.random.default_rng(0)
    mats = [p["shape"] for p in prog.params.values() if len(p["shape"]) == 2]
    args = [
        (
            cuda.to_device(rng.uniform(size=(B, n_in)).astype(prog.dtype)),
            cuda.to_device(rng.uniform(size=(n_out, n_in)).astype(prog.dtype)),
            cuda.device_array((B, n_out), dtype=prog.dtype),
        )
        for n_out, n_in in mats
    ]
    return lambda: [ck.gemm(h, W, o, False, True) for h, W, o in args]


def bench(model_fn, dtype: str, sizes: list[int], root: Path, rounds: int, cpu: bool) -> list:
    from numba import cuda

    progs = {}
    for backend in ("cuda", "cpu") if cpu else ("cuda",):
        t = time.perf_counter()
        log(f"building {backend} {dtype} ({', '.join(PROGRAMS)}); the first build takes minutes")
        progs[backend] = sc.compile(
            model_fn(),
            programs=PROGRAMS,
            backend=backend,
            dtype=dtype,
            build_dir=root / f"{backend}_{dtype}",
            parallel=backend == "cpu",
            progress=True,
        )
        log(f"{backend} {dtype} ready in {time.perf_counter() - t:.0f} s")
    gpu = progs["cuda"]
    rows = []
    for B in sizes:
        rng = np.random.default_rng(1)
        theta = gpu.init(0)
        batch = {k: rng.uniform(size=(B, d["size"])) for k, d in gpu.inputs.items()}
        v = rng.standard_normal(gpu.n_params)
        floor = median_time(gemm_floor(gpu, B), rounds, cuda.synchronize)
        fns = {b: calls(p, theta, batch, v, b == "cuda") for b, p in progs.items()}
        for label, fn in fns["cuda"].items():
            with FlopCounter() as fc:
                fn()
            cuda.synchronize()
            sec = median_time(fn, rounds, cuda.synchronize)
            row = dict(dtype=dtype, B=B, call=label, gpu_ms=sec * 1e3, gflop=fc.flops / 1e9)
            row["units"], row["floor_ms"] = sec / floor, floor * 1e3
            if cpu:
                row["cpu_ms"] = median_time(fns["cpu"][label], max(3, rounds // 3)) * 1e3
            rows.append(row)
            log(f"{dtype} B={B} {label}: {sec * 1e3:.2f} ms")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="B = 1000 only, 5 rounds")
    ap.add_argument("--sizes", help="comma-separated batch sizes (default 1000,10000)")
    ap.add_argument("--dtypes", default="float32,float64")
    ap.add_argument("--model", choices=("autoencoder", "small"), default="autoencoder")
    ap.add_argument("--no-cpu", action="store_true", help="skip the CPU backend column")
    ap.add_argument("--build-dir", help="build here (kept: reruns skip Numba compilation)")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()

    from symcurv.runtime import cuda_kernels as ck

    ck.require("benchmarks/gpu.py")
    sizes = [int(s) for s in (args.sizes or ("1000" if args.quick else "1000,10000")).split(",")]
    rounds = 5 if args.quick else 15
    model_fn = autoencoder.model if args.model == "autoencoder" else autoencoder.small
    if ck.SIMULATED:
        info = dict(name="CUDA simulator", cc=None, peak_gflops={})
        log("the CUDA simulator: a smoke run of this script, the times mean nothing")
    else:
        info = device_info()
    root = Path(args.build_dir or f"build/bench_gpu_{args.model}")
    rows = []
    for dtype in args.dtypes.split(","):
        rows += bench(model_fn, dtype, sizes, root, rounds, not args.no_cpu)

    print(f"\nGPU: {info['name']} (compute capability {info['cc']}); host: {machine()}")
    for dtype in args.dtypes.split(","):
        peak = info["peak_gflops"].get(dtype)
        print(f"\n{args.model}, {dtype}; peak {peak and f'{peak:.0f}'} GFLOP/s")
        body = []
        for r in (r for r in rows if r["dtype"] == dtype):
            rate = r["gflop"] / (r["gpu_ms"] / 1e3)
            body.append(
                [
                    r["B"],
                    r["call"],
                    f"{r['gpu_ms']:.3f}",
                    f"{r['units']:.2f}",
                    f"{r['gflop']:.3g}",
                    f"{rate:.0f}",
                    f"{100 * rate / peak:.1f}" if peak else "-",
                    f"{r['cpu_ms']:.1f}" if "cpu_ms" in r else "-",
                    f"{r['cpu_ms'] / r['gpu_ms']:.1f}" if "cpu_ms" in r else "-",
                ]
            )
        header = ["B", "call", "gpu ms", "units", "GFLOP", "GFLOP/s", "% peak", "cpu ms", "cpu/gpu"]
        print(table(body, header))
    print("units: time / one forward pass's GEMMs on the GPU (ck.gemm), per batch size")
    if args.json:
        Path(args.json).write_text(json.dumps(dict(device=info, rows=rows), indent=1))


if __name__ == "__main__":
    main()
