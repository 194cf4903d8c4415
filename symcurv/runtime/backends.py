"""Where a compiled program runs: one small object per backend, so that ``Program``,
``State``, ``load`` and ``compile`` never test a backend's name.

    require(where)              refuse early, naming the fix, when it cannot run here
    to_backend(a, dtype)        an array in the backend's memory (a device copy on cuda)
    output_array(shape, dtype)  zeros in the backend's memory
    to_host(a)                  a host array of a result
    noise(...)                  CP noise drawn where the program runs (runtime/noise.py)
    compiles_ahead              whether running once compiles machine code for the cache
    compiles_in_workers         whether worker processes may compile it for this process

The CUDA backend imports ``numba.cuda`` only when it is used, so the CPU path never pays for
it (nor needs a CUDA toolkit).
"""

from __future__ import annotations

import numpy as np

from symcurv import errors
from symcurv.runtime import noise


def is_device(a) -> bool:
    """A GPU device array (Numba's, or the simulator's), not host memory."""
    return hasattr(a, "copy_to_host")


class CPU:
    """Numba on the host: arrays are numpy arrays."""

    name = "cpu"
    compiles_ahead = True
    compiles_in_workers = True  # Numba's cache is shared through the build's files

    def require(self, where: str | None = None) -> None:
        return None

    def to_backend(self, a, dtype):
        return a

    def output_array(self, shape: tuple[int, ...], dtype) -> np.ndarray:
        return np.zeros(shape, dtype=dtype)

    def to_host(self, a) -> np.ndarray:
        return a

    def noise(self, shape, dtype, seed_key, draw: int, stream: int, kind: str):
        return noise.draw_cpu(shape, dtype, seed_key, draw, stream, kind)


class CUDA:
    """Numba-CUDA: θ, the batch, a State's cache and CP noise live on the device."""

    name = "cuda"

    @staticmethod
    def _kernels():
        from symcurv.runtime import cuda_kernels  # numba.cuda: only when cuda is used

        return cuda_kernels

    @property
    def compiles_ahead(self) -> bool:  # the simulator interprets, it compiles nothing
        return not self._kernels().SIMULATED

    def require(self, where: str | None = None) -> None:
        self._kernels().require(where=where)

    def to_backend(self, a, dtype):
        return self._kernels().to_device(a, dtype)

    def output_array(self, shape: tuple[int, ...], dtype):
        from numba import cuda

        return cuda.device_array(shape, dtype=dtype)  # the driver zeroes it

    def to_host(self, a) -> np.ndarray:
        return a.copy_to_host() if is_device(a) else a

    def noise(self, shape, dtype, seed_key, draw: int, stream: int, kind: str):
        return self._kernels().draw_noise(shape, dtype, seed_key, draw, stream, kind)


BACKENDS = {"cpu": CPU(), "cuda": CUDA()}


def get(name: str):
    """The backend object named ``name`` (a BuildError naming the choices otherwise)."""
    try:
        return BACKENDS[name]
    except KeyError:
        raise errors.BuildError(
            f"unknown backend {name!r}",
            fix=f"choose one of {', '.join(BACKENDS)} (rebuild the directory if it says so)",
        ) from None
