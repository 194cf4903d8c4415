"""Derivatives with respect to the data against the gradient, the GEMM floor and the
numpy reference (issue "derivatives with respect to the data", its speed targets):

    python benchmarks/inputs.py            # autoencoder at B = 1000, cp_net at B = 100, 1000
    python benchmarks/inputs.py --quick    # fewer rounds

Targets on the autoencoder at B = 1000: input_grad ≤ 1.1 × grad (both are one forward and
one backward sweep; input_grad skips the weight-gradient GEMMs but carries the backward
sweep down to x), one CP draw of the input diagonal ≤ 2.5 × input_grad. Every timed call
reuses one linearized State where the program has a static part (as Hessian-free and
score matching use them). Times are medians over rounds of the best of a few consecutive
calls, ratios medians of per-round ratios (common.blocks), so a shared VM's slow phases
cancel.
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
import cp_net  # noqa: E402
from common import best_of, blocks, machine, ms, table  # noqa: E402
from programs import gemm_floor  # noqa: E402

import symcurv as sc  # noqa: E402
from symcurv import testing  # noqa: E402

CASES = [
    ("autoencoder", autoencoder.model, 1000),
    ("cp_net", cp_net.model, 100),
    ("cp_net", cp_net.model, 1000),
]
PROGRAMS = ("grad", "input_grad", "input_hvp", "input_diag_S", "input_bl")


def bench(name, factory, B, root: Path, rounds: int) -> dict:
    t = time.perf_counter()
    prog = sc.compile(factory(), programs=PROGRAMS, build_dir=root / f"{name}_{B}", progress=False)
    cold = time.perf_counter() - t
    theta = prog.init(0)
    batch = testing.random_batch(prog, B)
    if "t" in batch:  # one-hot targets for the softmax net
        batch["t"] = np.eye(batch["t"].shape[1])[np.arange(B) % batch["t"].shape[1]]
    st = prog.linearize(theta, batch)
    V = np.random.default_rng(1).normal(size=batch["x"].shape)
    t = blocks(
        {
            "floor": gemm_floor(prog, batch, theta),
            "grad": lambda: prog.grad(theta, batch),
            "input_grad": lambda: prog.input_grad(theta, batch, "x"),
            "state input_hvp": lambda: st.input_hvp(V, "x"),
            "state CP-S draw": lambda: st.input_diag_hessian("x", "S", seed=0),
            "state Becker-LeCun": lambda: st.input_diag_hessian("x", "becker_lecun"),
        },
        rounds=rounds,
    )
    med = {k: float(np.median(v)) for k, v in t.items()}

    def ratio(a, b):
        return float(np.median(np.divide(t[a], t[b])))

    t_ref = best_of(lambda: testing.reference_outputs(prog, "input_grad", theta, batch), 3)
    return dict(
        model=name,
        B=B,
        times=med,
        input_grad_over_grad=ratio("input_grad", "grad"),
        cp_over_input_grad=ratio("state CP-S draw", "input_grad"),
        hvp_over_input_grad=ratio("state input_hvp", "input_grad"),
        input_grad_over_floor=ratio("input_grad", "floor"),
        reference=t_ref,
        cold_build=cold,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 rounds instead of 9")
    args = ap.parse_args()
    rounds = 3 if args.quick else 9
    print(f"machine: {machine()}")
    print(f"command: python {' '.join(sys.argv)}\n")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, factory, B in CASES:
            r = bench(name, factory, B, Path(tmp), rounds)
            tm = r["times"]
            rows.append(
                [
                    r["model"],
                    r["B"],
                    ms(tm["floor"]),
                    ms(tm["grad"]),
                    ms(tm["input_grad"]),
                    f"{r['input_grad_over_grad']:.2f}",
                    f"{r['input_grad_over_floor']:.2f}",
                    ms(tm["state input_hvp"]),
                    ms(tm["state CP-S draw"]),
                    f"{r['cp_over_input_grad']:.2f}",
                    ms(tm["state Becker-LeCun"]),
                    f"{r['reference'] / tm['input_grad']:.1f}",
                    f"{r['cold_build']:.0f}",
                ]
            )
    print(
        table(
            rows,
            [
                "model",
                "B",
                "GEMM pass ms",
                "grad ms",
                "input_grad ms",
                "in_grad/grad",
                "in_grad/pass",
                "in_hvp ms",
                "CP-S draw ms",
                "CP/in_grad",
                "BL ms",
                "numpy ref/in_grad",
                "cold build s",
            ],
        )
    )


if __name__ == "__main__":
    main()
