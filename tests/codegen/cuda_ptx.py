"""Compile CUDA kernels to PTX without a GPU: run by tests/codegen/test_cuda.py.

The simulator runs kernels as Python, so it cannot see what Numba's CUDA compiler rejects
(Numba ≥ 0.66 fails on two-argument ``max``/``min``, numba#10753, which the simulator
happily ran). Where the CUDA toolkit's libNVVM is installed, ``numba.cuda.compile_ptx``
type-checks and compiles a kernel for a given compute capability with no driver and no
device. This script does that for every map kernel of the given generated files (argument types
read off the build's manifest: every buffer is C-contiguous, 2-D when it holds one row per
case) and for the generic kernels of runtime/cuda_kernels.py (every float64 variant; in
float32 those whose typing differs, not the eight GEMM flag combinations again). It writes
``{"skipped": reason}`` when no libNVVM is found.

    python tests/codegen/cuda_ptx.py OUT.json BUILD/kernels/grad.py [...]

Compiling a device function asks Numba for the current device's compute capability; with
no device that would fail, so it is answered with the target's (sm_80) here.
"""

from __future__ import annotations

import ast
import importlib.util
import itertools
import json
import sys
import time
from pathlib import Path

import numba.cuda.dispatcher
from numba import cuda, types

from symcurv.codegen.schedule import var_name
from symcurv.runtime import cuda_geometry
from symcurv.runtime import cuda_kernels as ck

CC = (8, 0)


class _Device:
    compute_capability = CC


numba.cuda.dispatcher.get_current_device = lambda: _Device()


def _module(path: Path, n: int):
    spec = importlib.util.spec_from_file_location(f"symcurv_ptx_check_{n}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _arg_types(man: dict, spec: dict) -> dict[str, int]:
    """Variable name -> ndim of every array a generated ``_launch`` passes to a kernel."""
    ndim = {"theta": 1, "v": 1}
    ndim.update({f"in_{d['name']}": 2 for d in man["inputs"]})
    ndim.update({f"in_{e[0]}": 2 if e[1] else 1 for e in spec["extras"]})
    ndim.update({f"out_{var_name(k)}": 2 if batched else 1 for k, batched, _ in spec["out_plain"]})
    ndim.update({name: 2 if batched else 1 for name, batched, _ in spec["slots"]})
    return ndim


def generated_kernels(path: Path):
    """(kernel name, argument types) of every map-kernel launch in a generated file."""
    root = path.parents[1]
    man = json.loads((root / "manifest.json").read_text())
    dtype = getattr(types, man["dtype"])
    (spec,) = [s for s in man["programs"].values() if root / s["file"] == path]
    ndim = _arg_types(man, spec)
    tree = ast.parse(path.read_text())
    (launch,) = [f for f in tree.body if isinstance(f, ast.FunctionDef) and f.name == "_launch"]
    for node in ast.walk(launch):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Subscript):  # k[grid, n](..)
            sig = []
            for a in node.args:
                if isinstance(a, ast.Call) or a.id == "B":
                    sig.append(types.int64)  # B, ck.lanes(n)
                else:  # views of θ, v or a flat output are 1-D
                    sig.append(types.Array(dtype, ndim.get(a.id, 1), "C"))
            yield node.func.value.id, tuple(sig)


def generic_kernels():
    """(name, py_func, argument types) of every variant of the generic kernels."""
    i64 = types.int64
    for dt in (types.float32, types.float64):
        a2, a1 = types.Array(dt, 2, "C"), types.Array(dt, 1, "C")
        every = itertools.product((False, True), repeat=3)
        flags = every if dt == types.float64 else [(False, True, False)]
        for ta, tb, acc in flags:
            kernel = ck.gemm_kernel(ta, tb, acc, str(dt), cuda_geometry.GPU)
            yield f"gemm {ta:d}{tb:d}{acc:d} {dt}", kernel, (a2, a2, a2, i64, i64, i64)
        for lse in (False, True):
            yield f"row_reduce {lse:d} {dt}", ck._row_kernel(lse, str(dt)), (a2, a2, i64)
        yield f"column_sum {dt}", ck._column_kernel(str(dt)), (a2, a1, i64, types.float64)
        if dt == types.float64:  # no shared or local arrays: the dtype changes nothing
            yield "batched_matvec", ck._batched_matvec, (a2, a2, a2, i64, i64, types.boolean)
            yield "outer", ck._outer, (a2, a2, a2, i64, i64)
            yield "fill", ck._fill, (a1, types.float64)
            yield "copy", ck._copy, (a1, a1)
            yield "transpose", ck._transpose, (a2, a2, i64, i64)
        u64 = types.uint64
        yield f"noise {dt}", ck._noise, (a1, u64, u64, u64, u64, i64)


def nvvm_missing() -> str | None:
    """Why PTX cannot be compiled here (no libNVVM), or None."""
    try:
        cuda.compile_ptx(lambda x: None, types.void(types.float64[::1]), cc=CC)
    except Exception as e:
        return f"{type(e).__name__}: {e}"
    return None


def main(out: str, files: list[str]) -> None:
    t = time.perf_counter()
    missing = nvvm_missing()
    if missing:
        Path(out).write_text(json.dumps({"skipped": missing}))
        return
    failures, done, seen = [], 0, set()
    jobs = [(name, k.py_func, sig) for name, k, sig in generic_kernels()]
    for n, file in enumerate(files):
        path = Path(file)
        module = _module(path, n)
        for name, sig in generated_kernels(path):
            fn = getattr(module, name).py_func
            # the same kernel text recurs across programs (the forward pass): compile once
            key = (_source(path, name).replace(name, "K"), sig)
            if key not in seen:
                seen.add(key)
                jobs.append((f"{path.parent.parent.name}/{path.name}:{name}", fn, sig))
    for name, fn, sig in jobs:
        try:
            cuda.compile_ptx(fn, types.void(*sig), cc=CC)
            done += 1
        except Exception as e:  # report every failure, not just the first
            failures.append(f"{name}{sig}: {type(e).__name__}: {str(e)[:400]}")
    Path(out).write_text(
        json.dumps({"compiled": done, "failures": failures, "seconds": time.perf_counter() - t})
    )


_SOURCES: dict[Path, str] = {}
_TREES: dict[Path, ast.Module] = {}


def _source(path: Path, name: str) -> str:
    """The text of kernel ``name`` and of the scalar function it calls."""
    text = _SOURCES.setdefault(path, path.read_text())
    tree = _TREES.setdefault(path, ast.parse(text))
    parts = [
        ast.get_source_segment(text, f)
        for f in tree.body
        if isinstance(f, ast.FunctionDef) and f.name in (name, f"f_{name}")
    ]
    return "\n".join(p for p in parts if p)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
