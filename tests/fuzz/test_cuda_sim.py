"""Random models on the CUDA backend (the simulator), in their own process: see
cuda_sim_models.py. The profile's examples / 16 models are drawn (6 in ci, 25 in long):
the simulator runs these tiny models in about a second each."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hypothesis import settings

HERE = Path(__file__).resolve().parent


def test_random_models_on_the_cuda_simulator(tmp_path):
    env = {
        **os.environ,
        "NUMBA_ENABLE_CUDASIM": "1",
        "SYMCURV_FUZZ_CUDA_EXAMPLES": str(max(4, settings.default.max_examples // 16)),
    }
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-o",
            "addopts=",
            "-q",
            "-p",
            "no:cacheprovider",
            "--basetemp",
            str(tmp_path / "t"),
            str(HERE / "cuda_sim_models.py"),
        ],
        cwd=HERE.parents[1],
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert out.returncode == 0, out.stdout[-8000:] + out.stderr[-4000:]
    assert "1 passed" in out.stdout, out.stdout[-2000:]
