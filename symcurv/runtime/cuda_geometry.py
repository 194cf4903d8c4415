"""Launch geometry of the CUDA backend: threads per block, grid caps and GEMM tiles.

Every CUDA kernel symcurv runs loops grid-stride (``for idx in range(start, n, stride)``),
so its result does not depend on how many blocks are launched; the geometry only sets
speed. Two geometries exist, chosen once per process by ``runtime.cuda_kernels``:

* ``GPU``: 128-thread blocks for maps and reductions; 64×64 GEMM tiles computed by 16×16
  threads with a 4×4 register block each, k-steps of 16 (16 KiB of shared memory in
  float64). These are the textbook starting points for a tiled SGEMM/DGEMM; tuning them
  on a real GPU is the next step (see docs/kernel_tour.md §8).
* ``SIMULATOR`` (``NUMBA_ENABLE_CUDASIM=1``): the simulator runs one Python thread per CUDA
  thread and pays milliseconds per ``syncthreads``, so blocks are tiny (4 threads, 4×4
  GEMM tiles of 2×2 threads) and grids are capped at 2 blocks. The kernels are the same
  code; the small tiles also exercise every partial-tile and grid-stride path on the tiny
  test models.

This module imports no Numba so that ``symcurv info`` and the emitter can
describe launches without touching a GPU.
"""

from __future__ import annotations

import dataclasses

from symcurv import errors


@dataclasses.dataclass(frozen=True)
class Geometry:
    threads: int  # threads per block of maps and reductions (a power of two)
    max_blocks: int  # grid cap: grid-stride loops cover the rest
    tile_m: int  # GEMM: rows of C per block
    tile_n: int  # GEMM: columns of C per block
    tile_k: int  # GEMM: k-step held in shared memory
    reg_m: int  # GEMM: rows of C per thread (register block)
    reg_n: int  # GEMM: columns of C per thread

    @property
    def gemm_threads(self) -> tuple[int, int]:
        """(x, y) threads of a GEMM block: x over columns of C, y over rows."""
        return self.tile_n // self.reg_n, self.tile_m // self.reg_m


GPU = Geometry(threads=128, max_blocks=4096, tile_m=64, tile_n=64, tile_k=16, reg_m=4, reg_n=4)
SIMULATOR = Geometry(threads=4, max_blocks=2, tile_m=4, tile_n=4, tile_k=2, reg_m=2, reg_n=2)


GEOMETRIES = {"gpu": GPU, "simulator": SIMULATOR}


def select(simulated: bool, name: str | None = None) -> Geometry:
    """The geometry of this process: ``name`` ("gpu" or "simulator") when given, else the
    simulator's under the simulator and the GPU's on a GPU."""
    if name:
        if name not in GEOMETRIES:
            raise errors.BuildError(
                f"SYMCURV_CUDA_GEOMETRY={name!r} is not a launch geometry",
                fix=f"set it to one of {', '.join(GEOMETRIES)}, or unset it",
            )
        return GEOMETRIES[name]
    return SIMULATOR if simulated else GPU


def next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def lanes(n: int, geo: Geometry) -> int:
    """Threads that share one row of a row reduction (or a map with a per-case sum): the
    next power of two ≥ n, at most a block; a block then holds ``threads // lanes`` rows."""
    return min(next_pow2(n), geo.threads)


# ---- launch descriptions: (threads per block, grid) as text, for `symcurv info` and the
# comments of generated files. Every grid is capped at max_blocks; the kernels loop
# grid-stride over the rest.
def flat_launch(elements: str, geo: Geometry = GPU) -> tuple[str, str]:
    """Maps, fills, copies: one element per thread and step."""
    return str(geo.threads), f"ceil({elements}/{geo.threads})"


def row_launch(rows: str, n: int, geo: Geometry = GPU) -> tuple[str, str]:
    """Row reductions and maps with a per-case sum: ``lanes(n)`` threads per row."""
    w = lanes(n, geo)
    per_block = geo.threads // w
    return f"{geo.threads} ({per_block} rows × {w} lanes)", f"ceil({rows}/{per_block})"


def column_width(n: int, geo: Geometry = GPU) -> int:
    """Columns per block of a batch reduction (the rest of the block are row lanes)."""
    return min(next_pow2(n), 32, geo.threads)


def column_launch(n: int, geo: Geometry = GPU) -> tuple[str, str]:
    """Batch reductions: strips of columns, each column summed by several row lanes."""
    w = column_width(n, geo)
    return f"{geo.threads} ({w} col × {geo.threads // w} row lanes)", f"ceil({n}/{w})"


def gemm_launch(m: str, n: str, geo: Geometry = GPU) -> tuple[str, str]:
    """The tiled GEMM of an m × n result."""
    x, y = geo.gemm_threads
    return (
        f"{x}×{y} ({geo.reg_m}×{geo.reg_n} outputs each, k-step {geo.tile_k})",
        f"ceil({n}/{geo.tile_n}) × ceil({m}/{geo.tile_m})",
    )
