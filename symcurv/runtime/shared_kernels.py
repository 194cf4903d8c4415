"""Load a build's shared kernels (``kernels/shared/<name>.py``) for its program modules.

A program module takes each compiled kernel from a content-addressed file beside it
(``codegen/kernel_files.py``): ``kernel = importer(__file__)`` at its top, then
``k3_map_logistic_1 = kernel("map_logistic_9c1e…")``. Each file is imported once per
process and build directory (programs of one build share the module, so a kernel compiled
for one program is compiled for all), under a name that depends only on its content —
Numba's cache pickles the module name, and the same content in another directory (a
copied build) keeps its cache valid. The file's sha256 was checked by ``sc.load`` with
every other file of the build before any program module ran.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType

SHARED = "shared"  # kept equal to codegen/kernel_files.SHARED (the runtime imports no codegen)
_MODULES: dict[Path, ModuleType] = {}  # file -> its module, once per process


def module(path: Path) -> ModuleType:
    """The module of shared kernel file ``path``, imported on first use."""
    from symcurv.runtime import build  # build imports program, which imports nothing here

    mod = _MODULES.get(path)
    if mod is None:
        mod = _MODULES[path] = build._import(path, f"symcurv_kernel_{path.stem}")
    return mod


def importer(program_file: str) -> Callable[[str], object]:
    """``kernel(name)``: the compiled kernel ``name`` of the build that holds
    ``program_file``."""
    folder = Path(program_file).resolve().parent / SHARED

    def kernel(name: str):
        return getattr(module(folder / f"{name}.py"), name)

    return kernel
