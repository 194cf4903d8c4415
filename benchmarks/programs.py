"""Loss and gradient of the compiled CPU programs against the bare-GEMM floor and the
plain-numpy reference interpreter (issue 2's speed table).

    python benchmarks/programs.py            # every model of the issue
    python benchmarks/programs.py --quick    # smaller repeat counts

The GEMM floor of one forward pass is the time of the layer products H_l W_lᵀ alone
(BLAS into preallocated buffers, nothing else); a gradient needs three such passes
(forward, the backward product with W, the weight gradient), so grad's floor is 3×.
Times are medians over rounds; the ratios are medians of per-round ratios (see bench()).
Also measured: the cold build (fresh directory, empty Numba cache for those files) and
loading the built program in a fresh Python process with a warm Numba cache.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import autoencoder  # noqa: E402
import cp_net  # noqa: E402
from common import best_of, blocks, machine, ms, table  # noqa: E402

import symcurv as sc  # noqa: E402
from symcurv import testing  # noqa: E402

CASES = [
    ("autoencoder", autoencoder.model, 1000),
    ("cp_net", cp_net.model, 100),
    ("cp_net", cp_net.model, 1000),
]


def gemm_floor(prog, batch, theta):
    """A function running one forward pass's GEMMs: every parameter matrix W (n_out, n_in) times
    a (B, n_in) activation, into a preallocated (B, n_out) buffer."""
    B = next(iter(batch.values())).shape[0]
    views = prog.unflatten(theta)
    mats = [np.ascontiguousarray(v) for v in views.values() if v.ndim == 2]
    ins = [np.random.default_rng(0).uniform(size=(B, W.shape[1])) for W in mats]
    outs = [np.empty((B, W.shape[0])) for W in mats]

    def forward():
        for W, h, o in zip(mats, ins, outs):
            np.dot(h, W.T, o)

    return forward


def load_time(build_dir: Path, B: int) -> float:
    """Wall seconds of a fresh `python -c` that loads the build and runs one grad."""
    code = (
        "import numpy as np, symcurv as sc\n"
        f"p = sc.load({str(build_dir)!r})\n"
        "th = p.init(0)\n"
        f"b = {{k: np.full(({B}, d['size']), 0.5) for k, d in p.inputs.items()}}\n"
        "p.grad(th, b)\n"
    )
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - t


def bench(name, factory, B, root: Path, repeat: int, parallel: bool) -> dict:
    model = factory()
    t = time.perf_counter()
    prog = sc.compile(
        model,
        programs=("loss", "grad"),
        build_dir=root / f"{name}_{B}",
        parallel=parallel,
        progress=False,
    )
    cold = time.perf_counter() - t
    theta = prog.init(0)
    batch = testing.random_batch(prog, B)
    if "t" in batch:  # one-hot targets for the softmax net
        batch["t"] = np.eye(batch["t"].shape[1])[np.arange(B) % batch["t"].shape[1]]
    # Timed in blocks (common.blocks): the floor and the programs alternate, a few calls
    # each, and each ratio is taken within one round before the median over rounds. Timed
    # far apart, the shared 2-core VM's slow phases moved single ratios by ±30%.
    t = blocks(
        {
            "floor": gemm_floor(prog, batch, theta),
            "loss": lambda: prog.loss(theta, batch),
            "grad": lambda: prog.grad(theta, batch),
        },
        rounds=repeat,
    )
    floor, t_loss, t_grad = (float(np.median(t[k])) for k in ("floor", "loss", "grad"))
    loss_ratio = float(np.median(np.divide(t["loss"], t["floor"])))
    grad_ratio = float(np.median(np.divide(t["grad"], t["floor"]))) / 3
    t_ref = best_of(lambda: testing.reference_outputs(prog, "grad", theta, batch), 3)
    load_time(prog.build_dir, B)  # make sure the Numba cache is warm for this process
    t_load = min(load_time(prog.build_dir, B) for _ in range(3))
    return dict(
        model=name,
        B=B,
        parallel=parallel,
        loss=t_loss,
        grad=t_grad,
        loss_ratio=loss_ratio,
        grad_ratio=grad_ratio,
        floor=floor,
        reference=t_ref,
        cold_build=cold,
        load=t_load,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--parallel", action="store_true", help="build with prange on threads")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    repeat = 3 if args.quick else 9
    print(f"machine: {machine()}")
    print(f"command: python {' '.join(sys.argv)}\n")
    rows, results = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name, factory, B in CASES:
            r = bench(name, factory, B, Path(tmp), repeat, args.parallel)
            results.append(r)
            rows.append(
                [
                    r["model"],
                    r["B"],
                    ms(r["floor"]),
                    ms(r["loss"]),
                    f"{r['loss_ratio']:.2f}",
                    ms(r["grad"]),
                    f"{r['grad_ratio']:.2f}",
                    ms(r["reference"]),
                    f"{r['reference'] / r['grad']:.1f}",
                    f"{r['cold_build']:.1f}",
                    f"{r['load']:.2f}",
                ]
            )
    print(
        table(
            rows,
            [
                "model",
                "B",
                "GEMM pass ms",
                "loss ms",
                "loss/pass",
                "grad ms",
                "grad/3 passes",
                "numpy ref ms",
                "ref/grad",
                "cold build s",
                "load s",
            ],
        )
    )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
