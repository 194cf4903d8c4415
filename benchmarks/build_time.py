"""Cold builds and warm loads (issue 15, goal 3): wall and CPU seconds per command.

    python benchmarks/build_time.py                 # demo, autoencoder (all), load + call
    python benchmarks/build_time.py --only demo     # one row
    python benchmarks/build_time.py --workers 1     # the serial compile, for the ratio
    python benchmarks/build_time.py --code /work/main   # another checkout, for before/after

Each row is one fresh process started with ``subprocess``, into a fresh temporary
directory, so nothing of Numba's cache is reused: ``symcurv demo`` (build, drawings,
verification), ``symcurv build examples/autoencoder.py`` (all programs), and ``sc.load`` +
one ``grad`` call of cp_net (built with loss and grad) in a fresh process whose build (and
Numba cache) is warm, best of 3. The
CPU column is ``resource.getrusage(RUSAGE_CHILDREN)`` across the command, so it counts the
command's own compile processes too (they are its children): on a shared machine the CPU
seconds move less than the wall seconds, and wall/CPU shows how much the parallel compile
overlapped. The 1-minute load average before and after each row says how busy the
machine was.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SYMCURV = [sys.executable, "-m", "symcurv.cli"]
LOAD_AND_CALL = """
import sys, numpy as np, symcurv as sc
prog = sc.load(sys.argv[1])
batch = {n: np.full((4, d["size"]), 0.5) for n, d in prog.inputs.items()}
prog.grad(prog.init(0), batch)
"""


def timed(cmd: list[str], env: dict, cwd: str) -> tuple[float, float, float, float]:
    """(wall s, CPU s of the command and its children, load average before, after)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load0 = os.getloadavg()[0]
    t = time.perf_counter()
    out = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, load0, os.getloadavg()[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=("demo", "autoencoder", "load"), action="append")
    ap.add_argument("--workers", help="SYMCURV_COMPILE_WORKERS for the builds (default: auto)")
    ap.add_argument(
        "--code", default=str(ROOT), help="the symcurv checkout to time (run from its root)"
    )
    args = ap.parse_args()
    env = dict(os.environ, PYTHONPATH=args.code)
    if args.workers:
        env["SYMCURV_COMPILE_WORKERS"] = args.workers
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        runs = {
            "symcurv demo (build, draw, verify)": (
                "demo",
                [*SYMCURV, "demo", "-o", str(tmp / "demo")],
            ),
            "symcurv build examples/autoencoder.py (all programs)": (
                "autoencoder",
                [*SYMCURV, "build", "examples/autoencoder.py", "-o", str(tmp / "ae")],
            ),
        }
        for label, (key, cmd) in runs.items():
            if args.only and key not in args.only:
                continue
            rows.append((label, *timed(cmd, env, args.code)))
        if not args.only or "load" in args.only:
            built = tmp / "cp_net"  # a warm build of cp_net's loss and grad to load
            subprocess.run(
                [*SYMCURV, "build", "examples/cp_net.py", "-o", str(built)]
                + ["--programs", "loss,grad"],
                env=env,
                cwd=args.code,
                check=True,
                capture_output=True,
            )
            load = [sys.executable, "-c", LOAD_AND_CALL, str(built)]
            best = min(
                (timed(load, env, args.code) for _ in range(3)),
                key=lambda r: r[0],
            )
            rows.append(("sc.load(cp_net loss, grad) + first grad call, fresh process", *best))
    import numba

    print(
        f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, numba "
        f"{numba.__version__}; SYMCURV_COMPILE_WORKERS={env.get('SYMCURV_COMPILE_WORKERS')}; "
        f"code: {args.code}"
    )
    print(f"command: python benchmarks/{' '.join([Path(sys.argv[0]).name, *sys.argv[1:]])}")
    w = max(len(r[0]) for r in rows)
    print(f"{'command':<{w}} | wall s | CPU s | CPU / wall | load avg before, after")
    print(f"{'-' * w}-|--------|-------|------------|-----------------------")
    for label, wall, cpu, l0, l1 in rows:
        print(f"{label:<{w}} | {wall:6.1f} | {cpu:5.1f} | {cpu / wall:10.2f} | {l0:.1f}, {l1:.1f}")


if __name__ == "__main__":
    main()
