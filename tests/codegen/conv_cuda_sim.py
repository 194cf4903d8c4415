"""The Fields-of-Experts energy (2-D convolution) on the CUDA backend under the simulator:
run by tests/codegen/test_conv.py in a subprocess (``NUMBA_ENABLE_CUDASIM=1`` must be set
before numba is imported). It builds ``examples/foe.py``'s small model for backend "cuda",
runs the programs on the inputs it is given and pickles the outputs for the test process
to compare with the CPU backend's.

    NUMBA_ENABLE_CUDASIM=1 python tests/codegen/conv_cuda_sim.py IN.pkl OUT.pkl BUILD_DIR
"""

from __future__ import annotations

import os
import pickle
import sys
from pathlib import Path

if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
    sys.exit("run with NUMBA_ENABLE_CUDASIM=1 (the CUDA simulator)")
sys.setswitchinterval(1e-4)  # simulated threads hand over the GIL often (see cuda_sim.py)
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "examples"))

import foe  # noqa: E402

import symcurv as sc  # noqa: E402

PROGRAMS = ("loss", "grad", "input_grad", "input_hvp")


def main(inp: str, out: str, build_dir: str) -> None:
    data = pickle.loads(Path(inp).read_bytes())
    prog = sc.compile(
        foe.tiny(), programs=PROGRAMS, backend="cuda", build_dir=build_dir, progress=False
    )
    theta, batch = data["theta"], data["batch"]
    res = {
        "backend": prog.backend,
        "source": (Path(build_dir) / "kernels" / "input_grad.py").read_text(),
        "loss": prog.loss(theta, batch),
        "grad": prog.grad(theta, batch)[1],
        "input_grad": prog.input_grad(theta, batch),
        "input_hvp": prog.input_hvp(theta, batch, data["V"]),
    }
    Path(out).write_bytes(pickle.dumps(res))


if __name__ == "__main__":
    main(*sys.argv[1:4])
