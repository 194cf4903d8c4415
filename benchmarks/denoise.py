"""Denoising a 512 × 512 image with the Fields of Experts (24 filters of 5 × 5, examples/foe.py)
and the 2-D convolution kernel against numpy / scipy.signal (issue 17, its speed section):

    python benchmarks/denoise.py              # 512 × 512, 300 steps (minutes on 2 cores)
    python benchmarks/denoise.py --quick      # 256 × 256, 30 steps, fewer rounds

Table 1: the convolution's kernels (symcurv's generated ``gather`` kernels, called
directly on preallocated buffers) against the same arithmetic in scipy.signal (per filter
``correlate2d`` "valid" forward, ``convolve2d`` "full" for the transpose onto the image) and
in numpy (a sliding-window einsum). Table 2: one ``input_grad`` call (a forward and a
backward sweep through the energy: two convolutions and the elementwise work) and the whole
``sc.denoise`` run, serial and with ``parallel=True`` (prange over the (case, pixel) pairs;
Numba's workqueue threading layer). The machine is shared: times are medians, and marked
provisional in docs/denoising.md until rerun on an idle machine; beside each wall time the
CPU time of this process (``time.process_time``, all its threads) is printed, which other
jobs on the machine disturb far less, and the load average before and after.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NUMBA_THREADING_LAYER", "workqueue")  # DESIGN.md §5

import numpy as np  # noqa: E402
from scipy import signal  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import foe  # noqa: E402
from common import best_of, machine, table  # noqa: E402

import symcurv as sc  # noqa: E402


def cpu_of(fn, rounds: int) -> float:
    """The least CPU seconds (this process, all threads) of one call over ``rounds`` calls,
    after a warm-up call."""
    fn()
    times = []
    for _ in range(rounds):
        t = time.process_time()
        fn()
        times.append(time.process_time() - t)
    return min(times)


def kernel(prog, program: str, part: str):
    """The generated gather kernel of ``program`` whose name ends in ``part``."""
    module = prog._modules[program]
    (name,) = [n for n in dir(module) if n.startswith("k") and n.endswith(part)]
    return getattr(module, name)


def conv_rows(prog, img, F, rounds: int) -> list[list]:
    M, K = F.shape
    k = int(round(K**0.5))
    H, W = img.shape
    h, w = H - k + 1, W - k + 1
    filt = F.reshape(M, k, k)
    x = img.reshape(1, -1)
    y = np.empty((1, M * h * w))
    fwd = kernel(prog, "loss", "gather_conv")
    ybar = np.random.default_rng(1).normal(size=(1, M * h * w))
    xbar = np.empty((1, H * W))
    bwd = kernel(prog, "input_grad", "gather_convT_x")

    def sc_fwd():
        fwd(1, F.ravel(), x, y)

    def sc_bwd():
        bwd(1, F.ravel(), ybar, xbar)

    def scipy_fwd():
        return [signal.correlate2d(img, filt[m], mode="valid") for m in range(M)]

    yb = ybar.reshape(M, h, w)

    def scipy_bwd():
        return sum(signal.convolve2d(yb[m], filt[m], mode="full") for m in range(M))

    def numpy_fwd():
        win = np.lib.stride_tricks.sliding_window_view(img, (k, k))
        return np.einsum("ijuv,muv->mij", win, filt, optimize=True)

    sc_fwd()
    sc_bwd()
    assert np.allclose(y.reshape(M, h, w), np.stack(scipy_fwd()), atol=1e-10)
    assert np.allclose(xbar.reshape(H, W), scipy_bwd(), atol=1e-10)
    t = {
        "fwd": best_of(sc_fwd, rounds),
        "bwd": best_of(sc_bwd, rounds),
        "fwd_cpu": cpu_of(sc_fwd, rounds),
        "bwd_cpu": cpu_of(sc_bwd, rounds),
        "scipy_fwd": best_of(scipy_fwd, rounds),
        "scipy_bwd": best_of(scipy_bwd, rounds),
        "numpy_fwd": best_of(numpy_fwd, rounds),
    }
    macs = M * k * k * h * w
    return [
        ["y = F ⋆ x (valid)", f"{t['fwd'] * 1e3:.1f}", f"{t['fwd_cpu'] * 1e3:.1f}",
         f"{t['scipy_fwd'] * 1e3:.1f}", f"{t['scipy_fwd'] / t['fwd']:.2f}",
         f"{t['numpy_fwd'] * 1e3:.1f}", f"{macs / t['fwd_cpu'] / 1e9:.2f}"],
        ["x̄ = Σ_m F_m * ȳ_m (full)", f"{t['bwd'] * 1e3:.1f}", f"{t['bwd_cpu'] * 1e3:.1f}",
         f"{t['scipy_bwd'] * 1e3:.1f}", f"{t['scipy_bwd'] / t['bwd']:.2f}", "",
         f"{macs / t['bwd_cpu'] / 1e9:.2f}"],
    ]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--size", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None)
    args = ap.parse_args()
    size = args.size or (256 if args.quick else 512)
    steps = args.steps or (30 if args.quick else 300)
    rounds = 3 if args.quick else 5
    print(machine())
    print("load average before: {:.1f} {:.1f} {:.1f}".format(*os.getloadavg()))
    rng = np.random.default_rng(0)
    img = np.clip(0.5 + np.cumsum(rng.normal(scale=0.02, size=(size, size)), axis=1), 0, 1)
    noisy = img + 25 / 255 * rng.normal(size=img.shape)
    rows, conv_table = [], None
    with tempfile.TemporaryDirectory() as tmp:
        for parallel in (False, True):
            t = time.perf_counter()
            prog = sc.compile(
                foe.model(image=(size, size)),
                programs=("loss", "input_grad"),
                build_dir=Path(tmp) / f"foe_{parallel}",
                parallel=parallel,
                progress=False,
            )
            cold = time.perf_counter() - t
            theta = prog.init(0)
            if conv_table is None:
                conv_table = conv_rows(prog, img, prog.unflatten(theta)["F"], rounds)
            batch = {"x": noisy.reshape(1, -1)}
            grad = best_of(lambda: prog.input_grad(theta, batch), rounds)  # noqa: B023
            grad_cpu = cpu_of(lambda: prog.input_grad(theta, batch), rounds)  # noqa: B023
            t, c = time.perf_counter(), time.process_time()
            sc.denoise(prog, noisy, 25 / 255, steps=steps, theta=theta, progress=False)
            run, run_cpu = time.perf_counter() - t, time.process_time() - c
            rows.append(
                [f"parallel={parallel}", f"{cold:.1f}", f"{grad * 1e3:.1f}",
                 f"{grad_cpu * 1e3:.1f}", steps, f"{run:.2f}", f"{run_cpu:.2f}"]
            )  # fmt: skip
    M, k = 24, 5
    print(f"\nconvolution kernels, {size} × {size} image, {M} filters of {k} × {k} (ms per call)")
    print(table(conv_table, ["op", "symcurv", "symcurv CPU", "scipy.signal", "scipy / symcurv",
                             "numpy einsum", "GMAC/s (CPU)"]))  # fmt: skip
    print(f"\nFoE MAP denoising of a {size} × {size} image (σ = 25/255), CPU")
    print(table(rows, ["build", "compile s", "input_grad ms", "input_grad CPU ms", "steps",
                       "denoise s", "denoise CPU s"]))  # fmt: skip
    print("load average after: {:.1f} {:.1f} {:.1f}".format(*os.getloadavg()))


if __name__ == "__main__":
    main()
