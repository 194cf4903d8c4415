"""Serial maps vs ``prange`` maps on Numba threads, for the autoencoder at B = 1000.

    NUMBA_THREADING_LAYER=workqueue python benchmarks/threads.py

Both builds run in ONE process, calls interleaved, so machine noise hits them alike
(on a shared 2-core machine it is larger than the effect being measured). BLAS already
uses every core for the GEMMs, which dominate; this decides symcurv's default.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import autoencoder  # noqa: E402
from common import interleaved, machine, ms, table  # noqa: E402

import symcurv as sc  # noqa: E402
from symcurv import testing  # noqa: E402


def main(rounds: int = 15) -> None:
    import numba

    print(f"machine: {machine()}\ncommand: python {' '.join(sys.argv)}\n")
    with tempfile.TemporaryDirectory() as tmp:
        progs = {
            par: sc.compile(
                autoencoder.model(),
                build_dir=Path(tmp) / f"ae_{par}",
                parallel=par,
                progress=False,
            )
            for par in (False, True)
        }
        theta = progs[False].init(0)
        batch = testing.random_batch(progs[False], 1000)
        t = interleaved(
            {
                (p, k): (lambda prog=prog, k=k: getattr(prog, k)(theta, batch))
                for p, prog in progs.items()
                for k in ("loss", "grad")
            },
            rounds,
        )
        rows = [["prange" if p else "serial", k, ms(v)] for (p, k), v in t.items()]
        print(f"threading layer: {numba.threading_layer()}")
        print(table(rows, ["maps", "program", "median ms"]))


if __name__ == "__main__":
    main()
