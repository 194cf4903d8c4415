"""Class labels against one-hot targets: loss and gradient of cp_net (256-20-20-20-10,
softmax cross-entropy) with ``m.target("t", 10, labels=True)`` and with one-hot rows.

    python benchmarks/labels.py            # B = 1000
    python benchmarks/labels.py --quick    # fewer rounds

With labels the kernels read the B labels and form [c = k] inside the fused loss loop
(ops/losses.py one_hot); the one-hot model reads B × 10 target values. Each call includes
its batch check (the labels' range and integrality, the one-hot rows' finiteness).
Ratios are medians of per-round ratios (common.blocks).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import blocks, machine, ms, table  # noqa: E402

import symcurv as sc  # noqa: E402


def cp_net(labels: bool, sizes=(256, 20, 20, 20, 10)):
    m = sc.Model("cp_net_labels" if labels else "cp_net_onehot")
    x = m.input("x", sizes[0])
    t = m.target("t", sizes[-1], labels=labels)
    h = x
    for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
        W = m.param(f"W{i}", (n_out, n_in), init=sc.init.normal(0.1))
        b = m.param(f"b{i}", n_out, init=sc.init.zeros())
        a = W @ h + b
        h = a if i == len(sizes) - 2 else sc.tanh(a)
    m.minimize(sc.losses.softmax_cross_entropy(h, t))
    return m


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds")
    ap.add_argument("--batch", type=int, default=1000, help="cases per batch")
    args = ap.parse_args()
    rounds = 5 if args.quick else 11
    root = Path(tempfile.mkdtemp(prefix="bench_labels_"))
    progs = {
        k: sc.compile(cp_net(k == "labels"), ("loss", "grad"), build_dir=root / k, progress=False)
        for k in ("labels", "one-hot")
    }
    rng = np.random.default_rng(0)
    B = args.batch
    x, c = rng.normal(size=(B, 256)), rng.integers(0, 10, size=B)
    batches = {"labels": {"x": x, "t": c}, "one-hot": {"x": x, "t": np.eye(10)[c]}}
    theta = progs["labels"].init(0)
    assert (
        abs(
            progs["labels"].loss(theta, batches["labels"])
            - progs["one-hot"].loss(theta, batches["one-hot"])
        )
        < 1e-12
    )

    def call(prog_name: str, k: str):
        method, batch = getattr(progs[k], prog_name), batches[k]
        return lambda: method(theta, batch)

    fns = {(p, k): call(p, k) for p in ("loss", "grad") for k in progs}
    times = blocks(fns, rounds=rounds)
    rows = []
    for prog_name in ("loss", "grad"):
        lab, hot = times[(prog_name, "labels")], times[(prog_name, "one-hot")]
        ratio = float(np.median(np.array(lab) / np.array(hot)))
        rows.append([prog_name, ms(np.median(lab)), ms(np.median(hot)), f"{ratio:.2f}"])
    print(machine())
    print(f"cp_net 256-20-20-20-10, B = {B}")
    print(table(rows, ["program", "labels", "one-hot", "labels / one-hot"]))


if __name__ == "__main__":
    main()
