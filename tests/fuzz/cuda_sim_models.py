"""Random models on the CUDA backend under the simulator: run by test_cuda_sim.py in a
subprocess (``NUMBA_ENABLE_CUDASIM=1`` must be set before numba is imported), not collected
by the main run (the name does not start with ``test_``).

    NUMBA_ENABLE_CUDASIM=1 python -m pytest tests/fuzz/cuda_sim_models.py

Each drawn model (small: the simulator runs every GPU thread in Python) is built for
backend "cuda" and every built program compared with the reference interpreter running
the build's stored graph, as test_compiled.py does on the CPU.
"""

from __future__ import annotations

import os
import sys

from hypothesis import given, settings
from hypothesis import strategies as st

import symcurv as sc
from symcurv import testing

from . import strategies
from .checks import unflat
from .test_reference import SEEDS, case

# The simulated threads of a block hand the GIL to each other at every syncthreads: a
# short switch interval runs them several times faster (as tests/codegen/cuda_sim.py).
sys.setswitchinterval(1e-4)
EXAMPLES = int(os.environ.get("SYMCURV_FUZZ_CUDA_EXAMPLES", "2"))


@settings(max_examples=EXAMPLES)
@given(spec=strategies.model_specs(min_steps=2, max_steps=4), seed=SEEDS, B=st.integers(1, 3))
def test_cuda_programs_equal_the_reference(spec, seed, B, tmp_path_factory):
    assert os.environ.get("NUMBA_ENABLE_CUDASIM") == "1", "run under the CUDA simulator"
    f, vals, theta = case(spec, seed, B)
    programs = ["loss", "grad", "hvp", "cp_S", "input_grad", "input_hvp"]
    root = tmp_path_factory.mktemp("fuzz_cuda")
    prog = sc.compile(spec.model(), programs=programs, backend="cuda", build_dir=root / "b")
    assert prog.backend == "cuda" and "cuda.jit" in (root / "b" / "kernels" / "grad.py").read_text()
    batch = {n: vals[n] for n in prog.inputs}
    errs = testing.compare_to_reference(prog, prog.flatten(unflat(f, theta)), batch)
    assert set(errs) == set(programs) and max(errs.values()) < 1e-10, errs
