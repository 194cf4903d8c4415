"""One fix to Numba's CUDA simulator that symcurv's block reductions need.

Imported by ``runtime.cuda_kernels`` only under ``NUMBA_ENABLE_CUDASIM=1``. The simulator
runs each CUDA thread of a block as a Python thread. It identifies a
``cuda.shared.array(...)`` by the (file, line) of the call and allocates it on the first
call with an unlocked check-then-set, so two threads reaching the line at the same moment
can each get a private array. Their "shared" partial sums then never meet, and a block
reduction comes out wrong now and then: 4 runs in 300 of an 8-thread test kernel with a
short GIL switch interval; under load, 2 such races in the 11550 allocations of one run of
tests/codegen/cuda_sim.py, and that run's all_ops gradient was off by 7%. ``install``
replaces the method with the same logic under a lock. The simulator's other race (its swap
of the ``cuda`` module during device-function calls across modules, fixed upstream in
numba-cuda #690) is avoided by design: every device function that uses ``cuda.*`` lives
in the module of the kernels that call it.
"""

from __future__ import annotations

import sys
import threading

import numpy as np

_LOCK = threading.Lock()


def install() -> bool:
    """Make the simulator's shared-array allocation thread-safe; False when this Numba's
    simulator is not laid out as expected (then it is left alone)."""
    try:
        from numba.core import types
        from numba.cuda.simulator import kernelapi
        from numba.np import numpy_support
    except ImportError:
        return False
    shared = getattr(kernelapi, "FakeCUDAShared", None)
    if shared is None or getattr(shared, "_symcurv_locked", False):
        return shared is not None
    original = shared.array

    def array(self, shape, dtype):
        if shape == 0 or not hasattr(self, "_allocations"):  # dynamic shared memory
            return original(self, shape, dtype)
        caller = sys._getframe(1)
        key = (caller.f_code.co_filename, caller.f_lineno)
        with _LOCK:
            res = self._allocations.get(key)
            if res is None:
                if isinstance(dtype, types.Type):
                    dtype = numpy_support.as_dtype(dtype)
                res = self._allocations[key] = np.empty(shape, dtype)
        return res

    shared.array = array
    shared._symcurv_locked = True
    return True
