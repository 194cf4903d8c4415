"""One score-matching gradient per diagonal, in units of one energy gradient (issue on
score matching, its speed targets):

    python benchmarks/score_matching.py                   # PoE at D = 64, B = 1000, every diag
    python benchmarks/score_matching.py --quick --no-exact  # 3 rounds, skip the long exact build

The product of Student-t experts of examples/poe_score_matching.py (M = D = 64) at
B = 1000: ``grad`` of the energy model (one forward and one backward sweep), then ``grad``
of ``sc.score_matching(energy, reg=1e-3, diag=...)`` for each diag (a CP model draws its
noise inside the timed call, seed fixed). Targets: the Becker-LeCun and CP gradients ≥ 10×
cheaper than the exact one. Times are medians over rounds of the best of a few consecutive
calls, ratios medians of per-round ratios (common.blocks). The exact diagonal's build is
long (D forward-over-reverse sweeps unrolled in the graph: hundreds of kernels for Numba
to compile); its build time is printed too.
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

import poe_score_matching as poe  # noqa: E402
from common import blocks, machine, ms, table  # noqa: E402

import symcurv as sc  # noqa: E402

B = 1000
DIAGS = ("becker_lecun", "S", "TU", "exact")


def build(model, root: Path, name: str):
    t = time.perf_counter()
    prog = sc.compile(model, ("grad",), build_dir=root / name, progress=False)
    return prog, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 rounds instead of 9")
    ap.add_argument("--no-exact", action="store_true", help="skip the exact diagonal's long build")
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
            sm = sc.score_matching(energy, reg=1e-3, diag=d)
            progs[d], cold[d] = build(sm, root, d)
        theta = progs["energy"].init(0)
        fns = {"energy": lambda: progs["energy"].grad(theta, batch)}
        for d in diags:
            kw = {"seed": 0} if d in ("S", "TU") else {}
            fns[d] = lambda p=progs[d], kw=kw: p.grad(theta, batch, **kw)
        t = blocks(fns, rounds=rounds)
    med = {k: float(np.median(v)) for k, v in t.items()}
    rows = []
    for k in ["energy", *diags]:
        ratio = float(np.median(np.divide(t[k], t["energy"])))
        vs_exact = f"{float(np.median(np.divide(t['exact'], t[k]))):.1f}" if "exact" in t else "-"
        rows.append([k, ms(med[k]), f"{ratio:.2f}", vs_exact, f"{cold[k]:.0f}"])
    print(
        table(
            rows,
            ["grad of", "ms", "× energy grad", "exact / this", "cold build s"],
        )
    )


if __name__ == "__main__":
    main()
