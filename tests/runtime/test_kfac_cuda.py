"""``prog.kfac_factors`` on the CUDA backend (in the simulator) equals the CPU backend's,
for every G kind, a layer with and one without a bias, and a diagonal parameter.

The simulator must be switched on before numba is imported, so the cuda run happens in a
subprocess (kfac_cuda_sim.py) that overlaps the CPU compilation here."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import kfac_model
import numpy as np

import symcurv as sc
from symcurv import testing

HERE = Path(__file__).resolve().parent


def test_factors_on_cuda_equal_the_cpu_backend(tmp_path):
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}
    out = tmp_path / "cuda.pkl"
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "kfac_cuda_sim.py"), str(out), str(tmp_path / "cuda")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    prog = sc.compile(
        kfac_model.net(), programs=("kfac",), build_dir=tmp_path / "cpu", progress=False
    )
    theta, batch = kfac_model.inputs(prog)
    want = {
        kind: kfac_model.arrays(prog.kfac_factors(theta, batch, curvature=kind, seed=seed))
        for kind, seed in kfac_model.KINDS
    }
    log, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, log[-4000:]
    got = pickle.loads(out.read_bytes())
    assert set(got) == set(want)
    for kind, arrays in want.items():
        assert set(got[kind]) == set(arrays)
        assert {"A:W1", "G:W1", "A:W2", "G:W2", "diag:s"} <= set(arrays)
        assert arrays["A:W1"].shape == (4, 4) and arrays["A:W2"].shape == (4, 4)
        for key, w in arrays.items():
            assert np.abs(w).max() > 0, (kind, key)  # nothing compared is trivially zero
            err = testing.rel_error(got[kind][key], w)
            assert err <= 1e-10, f"{kind} {key}: cuda vs cpu {err:.2e}"
