"""K-FAC factors on the CUDA backend under the simulator: run by test_kfac_cuda.py in a
subprocess (``NUMBA_ENABLE_CUDASIM=1`` must be set before numba is imported).

    NUMBA_ENABLE_CUDASIM=1 python tests/runtime/kfac_cuda_sim.py OUT.pkl BUILD_DIR

Builds ``kfac_model.net()`` for backend "cuda", computes ``prog.kfac_factors`` of every
curvature kind on ``kfac_model.inputs()`` and pickles A, G, the input means and the
diagonal estimates as numpy arrays for the test process to compare with the CPU backend.
"""

from __future__ import annotations

import os
import pickle
import sys
from pathlib import Path

if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
    sys.exit("run with NUMBA_ENABLE_CUDASIM=1 (the CUDA simulator)")
sys.setswitchinterval(1e-4)  # simulated threads hand the GIL over at every syncthreads
sys.path.insert(0, str(Path(__file__).resolve().parent))

import kfac_model  # noqa: E402

import symcurv as sc  # noqa: E402


def main(out: str, build_dir: str) -> None:
    prog = sc.compile(
        kfac_model.net(), programs=("kfac",), backend="cuda", build_dir=build_dir, progress=False
    )
    theta, batch = kfac_model.inputs(prog)
    res = {}
    for curvature, seed in kfac_model.KINDS:
        f = prog.kfac_factors(theta, batch, curvature=curvature, seed=seed)
        res[curvature] = kfac_model.arrays(f)
    with open(out, "wb") as fh:
        pickle.dump(res, fh)


if __name__ == "__main__":
    main(*sys.argv[1:3])
