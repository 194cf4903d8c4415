"""The CUDA backend (issue 4, phase 1): generated source, build directory, CLI, and every
program run in the CUDA simulator against the reference interpreter and the CPU backend.

The simulator must be switched on before numba is imported, so the runs happen in
subprocesses (``cuda_sim.py``) started by the ``sim`` fixture, with a third one
(``cuda_ptx.py``) compiling kernels to PTX where the CUDA toolkit is installed; they
overlap the CPU compilations of the comparison. This process never enables the simulator,
so the rest of the suite keeps the real ``numba.cuda``. Source-level tests only write files.
"""

from __future__ import annotations

import ast
import io
import json
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import models
import numpy as np
import pytest

import symcurv as sc
from symcurv import cli, errors, testing
from symcurv.pipeline import build
from symcurv.runtime import build as build_mod

HERE = Path(__file__).resolve().parent
GOLDEN = HERE.parent / "golden" / "tied_grad_cuda.py"
TOL = {"float64": 1e-10, "float32": 1e-4}


# ---- the background runs: simulator, GPU geometry in the simulator, PTX -----------------------
class Background:
    """A helper script in a subprocess; ``result()`` waits for it and loads what it wrote."""

    def __init__(self, script: str, out: Path, *args: str, simulator: bool, env=None) -> None:
        self.script, self.out = script, out
        env = {**os.environ, **(env or {})}
        env.pop("NUMBA_ENABLE_CUDASIM", None)
        if simulator:
            env["NUMBA_ENABLE_CUDASIM"] = "1"
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / script), str(out), *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._result = None

    def result(self):
        if self._result is None:
            log, _ = self.proc.communicate(timeout=900)
            assert self.proc.returncode == 0, f"{self.script} failed:\n{log[-6000:]}"
            if self.out.suffix == ".json":
                self._result = json.loads(self.out.read_text())
            else:
                with open(self.out, "rb") as f:
                    self._result = pickle.load(f)
        return self._result


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    """Started on first request, so that the CPU compilations of ``cpu_tied`` overlap them."""
    root = tmp_path_factory.mktemp("cudasim")
    b64, b32 = (
        build(models.tied(), programs, "cuda", dtype, root / dtype, progress=False)
        for programs, dtype in (("all", "float64"), (("grad",), "float32"))
    )
    ptx_files = [b64 / "kernels" / f for f in ("grad.py", "hvp.py", "cp_S.py", "cp_S_static.py")]
    runs = {
        "sim": Background("cuda_sim.py", root / "sim.pkl", simulator=True),
        "gpu": Background(
            "cuda_sim.py",
            root / "gpu.pkl",
            "--geometry",
            "gpu",
            simulator=True,
            env={"SYMCURV_CUDA_GEOMETRY": "gpu"},
        ),
        "ptx": Background(
            "cuda_ptx.py",
            root / "ptx.json",
            *map(str, [*ptx_files, b32 / "kernels" / "grad.py"]),
            simulator=False,
        ),
    }
    yield runs
    for r in runs.values():
        if r.proc.poll() is None:
            r.proc.kill()


@pytest.fixture(scope="module")
def cpu_tied(tmp_path_factory, sim):
    """The CPU backend of ``tied`` (every program) in both dtypes, compiled while the
    simulator runs."""
    root = tmp_path_factory.mktemp("cudacpu")
    return {
        dtype: sc.compile(
            models.tied(), programs="all", dtype=dtype, build_dir=root / dtype, progress=False
        )
        for dtype in ("float64", "float32")
    }


def _errors(case: dict) -> dict[str, float]:
    return {
        name: max(
            testing.rel_error(r["cuda"][k].reshape(np.shape(r["reference"][k])), r["reference"][k])
            for k in r["reference"]
        )
        for name, r in case["programs"].items()
    }


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_every_program_matches_the_cpu_backend(sim, cpu_tied, dtype):
    # first in the file: its fixtures start the simulator, then compile the CPU programs
    # while it runs
    case = sim["sim"].result()[("tied", dtype)]
    cpu, data = cpu_tied[dtype], case["inputs"]
    assert set(case["programs"]) == set(cpu.programs)
    for name, r in case["programs"].items():
        v = data["v"] if cpu.manifest["programs"][name].get("vectors") else None
        want = cpu.run(name, data["theta"], data["batch"], v=v, extras=dict(r["noise"]))
        for key, got in r["cuda"].items():
            assert got.dtype == np.dtype(dtype)
            err = testing.rel_error(got, want[key])
            assert err <= TOL[dtype], f"{name}[{key}]: cuda vs cpu {err:.2e}"


@pytest.mark.parametrize(
    "model, dtype",
    [
        ("tied", "float64"),
        ("tied", "float32"),
        ("mlp", "float64"),
        ("branching", "float64"),
        ("all_ops", "float64"),
        ("mlp_labels", "float64"),
    ],
)
def test_every_program_matches_the_reference_interpreter(sim, model, dtype):
    case = sim["sim"].result()[(model, dtype)]
    errs = _errors(case)
    every = {"loss", "grad", "hvp", "becker_lecun", "cp_S", "cp_TU", "sum_sq_grad"}
    every |= {"input_grad", "input_hvp", "input_diag_S", "input_diag_TU", "input_bl"}
    assert (every if model not in ("all_ops", "mlp_labels") else {"loss", "grad", "hvp"}) <= set(
        errs
    )
    bad = {k: e for k, e in errs.items() if not e <= TOL[dtype]}
    assert not bad, f"cuda vs reference, {model} {dtype}: {bad}"


def test_the_gpu_launch_geometry_gives_the_same_results(sim):
    """128-thread blocks and 16×16-thread GEMM tiles (what a GPU runs), in the simulator."""
    res = sim["gpu"].result()
    assert res["geometry"].threads == 128
    errs = _errors(res[("tied", "float64")])
    assert set(errs) == {"loss", "grad"} and max(errs.values()) <= 1e-10, errs


def test_state_on_cuda_equals_state_on_cpu(sim, cpu_tied):
    """linearize/State: cached products and every CP estimator with a seed. The noise is
    counter-based (runtime/noise.py), drawn on the device there and on the host here: the
    same seed gives the same estimate. θ, the batch and the cache live on the device."""
    res = sim["sim"].result()
    got, data = res["state"], res[("tied", "float64")]["inputs"]
    st = cpu_tied["float64"].linearize(data["theta"], data["batch"])
    want = {
        "loss": st.loss,
        "grad": st.grad()[1],
        "hvp": st.hvp(data["v"]),
        "hvp2": st.hvp(np.roll(data["v"], 1)),
        "gnvp": st.gnvp(data["v"], damping=0.1),
        "cp_S": st.cp_diag("S", samples=2, seed=0),
        "cp_TU": st.cp_diag("TU", noise="gaussian", seed=1),
        "cp_GN": st.cp_diag("GN", seed=2),
        "cp_HI": st.cp_diag("HI", seed=3),
        "bl": st.becker_lecun_diag(),
        "input_grad": st.input_grad(),
        "input_hvp": st.input_hvp(data["batch"]["x"][::-1].copy()),
        "input_exact": st.input_diag_hessian(method="exact"),
        "input_S": st.input_diag_hessian(method="S", samples=2, seed=4),
        "input_TU": st.input_diag_hessian(method="TU", noise="gaussian", seed=5),
        "input_bl": st.input_diag_hessian(method="becker_lecun"),
    }
    assert got["cached"] == sorted(st._cache)
    assert all(got["resident"]) and len(got["resident"]) == 1 + len(data["batch"])
    assert got["cache_on_device"] and all(got["cache_on_device"])
    for key, w in want.items():
        assert testing.rel_error(got[key], w) <= 1e-10, key


def test_noise_drawn_on_the_device_equals_the_cpu_draw(sim):
    """The Philox kernel gives the CPU fill's numbers bit for bit, both kinds and dtypes."""
    same = sim["sim"].result()["noise"]
    assert len(same) == 12 and all(same.values()), same


def test_simulated_shared_memory_is_shared_by_the_block(sim):
    """Numba's simulator can hand two threads private copies of one shared array (an
    unlocked allocation), which made block reductions of this file fail now and then under
    load; runtime/cuda_simulator.py locks it."""
    assert all(sim["sim"].result()["shared_memory"].values())


def test_kernels_compile_for_a_real_gpu(sim):
    """Numba's CUDA compiler (to PTX for sm_80, no device needed) accepts the generated map
    kernels and the generic kernels: the simulator runs Python and cannot tell."""
    res = sim["ptx"].result()
    if "skipped" in res:
        pytest.skip(f"no libNVVM (CUDA toolkit) here: {res['skipped'][:200]}")
    assert not res["failures"], "\n".join(res["failures"])
    assert res["compiled"] > 40


def test_device_buffers_are_allocated_once_per_batch_size(sim):
    res = sim["sim"].result()["buffers"]
    assert res["same_arrays"] and res["batch_sizes"] == [1, 5]
    assert res["err_repeat"] <= 1e-10 and res["err_one_case"] <= 1e-10, res


def test_generic_kernels_match_numpy(sim):
    """Every GEMM variant (transA, transB, accumulate) × dtype with partial tiles, the
    per-case contractions, the reductions, fills, copies and transposes."""
    errs = sim["sim"].result()["generic"]
    assert sum(k.startswith("gemm ta=") and "GPU" not in k for k in errs) == 16
    bad = {k: e for k, e in errs.items() if not e <= (1e-5 if "float32" in k else 1e-13)}
    assert not bad, bad


# ---- the generated source (files only, no Numba) ---------------------------------------------
@pytest.fixture(scope="module")
def tied_builds(tmp_path_factory):
    root = tmp_path_factory.mktemp("cudasrc")
    return {
        backend: build(
            models.tied(), "all", backend=backend, build_dir=root / backend, progress=False
        )
        for backend in ("cpu", "cuda")
    }


def test_generated_cuda_source_matches_golden(tied_builds):
    got = (tied_builds["cuda"] / "kernels" / "grad.py").read_text()
    if os.environ.get("SYMCURV_UPDATE_GOLDEN"):
        GOLDEN.write_text(got)
    assert got == GOLDEN.read_text(), (
        f"generated cuda grad.py differs from {GOLDEN}; if the change is intended, "
        "regenerate with SYMCURV_UPDATE_GOLDEN=1 and review the diff"
    )


def test_every_cuda_kernel_is_commented_with_nodes_dsl_and_launch(tied_builds):
    for path in sorted((tied_builds["cuda"] / "kernels").glob("*.py")):
        src = path.read_text()
        assert "backend:  cuda (Numba-CUDA)" in src
        header = re.findall(r"^  (k\d+_\w+)\s", src, re.M)
        blocks = re.findall(
            r"^# (k\d+_\w+): .*\n#   IR nodes: .+\n(?:#   DSL: .+\n)*#   launch: (.+)$", src, re.M
        )
        assert header and [b[0] for b in blocks] == header, path.name
        assert all(re.search(rf"^    # {k}  \(", src, re.M) for k in header), path.name
        assert "vm." not in src  # the CPU's vecmath is not a device function
        compile(src, path.name, "exec")


def _signature(path: Path, fn: str = "run") -> list[str]:
    tree = ast.parse(path.read_text())
    (node,) = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == fn]
    return [a.arg for a in node.args.args]


def test_run_has_the_cpu_drivers_signature(tied_builds):
    cpu, cuda = (tied_builds[b] / "kernels" for b in ("cpu", "cuda"))
    # the CPU also builds the whole graph of a product program whose products pair
    # (codegen/parts.py); the GPU runs the static and dynamic parts
    files = sorted(p.name for p in cpu.glob("*.py") if not p.stem.endswith("_whole"))
    assert files == sorted(p.name for p in cuda.glob("*.py")) and len(files) > 9
    for name in files:
        assert _signature(cpu / name) == _signature(cuda / name), name
        assert _signature(cuda / name, "_launch") == ["B", *_signature(cpu / name)], name


def test_cuda_builds_are_deterministic(tied_builds, tmp_path):
    again = build(models.tied(), "all", backend="cuda", build_dir=tmp_path / "b", progress=False)
    first = build_mod.read_manifest(tied_builds["cuda"])
    assert build_mod.read_manifest(again)["files"] == first["files"]


def test_manifest_and_info_show_the_backend_and_launches(tied_builds):
    man = build_mod.read_manifest(tied_builds["cuda"])
    assert man["backend"] == "cuda" and man["parallel"] is False
    launch = man["programs"]["grad"]["launch"]
    assert [row[0] for row in launch] == man["programs"]["grad"]["kernels"]
    out = io.StringIO()
    cli.info(str(tied_builds["cuda"]), out=out)
    text = out.getvalue()
    assert "backend cuda" in text and "threads per block" in text
    assert re.search(r"k\d+_gemm_\w+ +16×16 \(4×4 outputs each, k-step 16\) +ceil\(", text)
    assert re.search(r"k\d+_map_\w+ +128 +ceil\(B·\d+/128\)", text)


def test_load_checks_hashes_of_cuda_builds(tied_builds, tmp_path):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(tied_builds["cuda"], root)
    with open(root / "kernels" / "grad.py", "a") as f:
        f.write("# edited\n")
    with pytest.raises(errors.BuildError, match="modified after the build"):
        sc.load(root)  # refused before any device is looked for


def test_parallel_is_a_cpu_option(tmp_path):
    with pytest.raises(errors.ModelError, match="cpu option"):
        build(models.tied(), ("loss",), backend="cuda", build_dir=tmp_path, parallel=True)


def test_without_gpu_or_simulator_the_error_says_what_to_do(tied_builds, tmp_path, capsys):
    from symcurv.runtime import cuda_kernels

    if cuda_kernels.available():
        pytest.skip("a GPU (or the simulator) is present in this process")
    with pytest.raises(errors.BuildError, match="NUMBA_ENABLE_CUDASIM=1") as e:
        sc.load(tied_builds["cuda"])
    assert "NVIDIA" in str(e.value)
    with pytest.raises(errors.BuildError, match="NUMBA_ENABLE_CUDASIM=1"):
        sc.compile(models.tied(), backend="cuda", build_dir=tmp_path / "c", progress=False)
    assert not (tmp_path / "c").exists()  # refused before deriving anything
    model = Path(models.__file__)
    rc = cli.main(["build", f"{model}:tied", "-o", str(tmp_path / "d"), "--backend", "cuda"])
    assert rc == 2 and "NUMBA_ENABLE_CUDASIM=1" in capsys.readouterr().err


def test_emitted_block_reduction_is_the_runtime_one():
    """``_segment_sum`` is emitted into generated files (see codegen/cuda.py for why) and
    also lives in runtime/cuda_kernels.py for the generic kernels: the two must not drift."""
    import inspect
    import textwrap

    from symcurv.codegen import cuda
    from symcurv.runtime import cuda_kernels

    def body(src: str) -> str:
        fn = ast.parse(textwrap.dedent(src)).body[0]
        fn.name, fn.decorator_list, fn.body = "f", [], fn.body[1:]  # drop the docstring
        return ast.dump(fn)

    runtime = inspect.getsource(
        getattr(cuda_kernels.segment_sum, "py_func", None) or cuda_kernels.segment_sum
    )
    assert body(cuda.SEGMENT_SUM) == body(runtime)


def test_float32_formulas_stay_in_float32(tmp_path):
    """In a float32 cuda build every number in the scalar formulas is F(...) = np.float32(...)
    and B is F(B): a bare float (or the int64 B) would make Numba compute them in float64."""
    root = build(
        models.tied(), ["grad", "cp_diag"], backend="cuda", dtype="float32",
        build_dir=tmp_path / "f32", progress=False,
    )  # fmt: skip
    checked = 0
    for path in (root / "kernels").glob("*.py"):
        tree = ast.parse(path.read_text())
        assert any(isinstance(n, ast.Assign) and n.targets[0].id == "F" for n in tree.body), (
            f"{path.name}: no F = np.float32"
        )
        for fn in (f for f in tree.body if isinstance(f, ast.FunctionDef) and f.name[:2] == "f_"):
            wrapped = {  # every node inside an F(...) call: F(-1.0) holds -(1.0)
                id(a)
                for c in ast.walk(fn)
                if isinstance(c, ast.Call) and getattr(c.func, "id", None) == "F"
                for arg in c.args
                for a in ast.walk(arg)
            }
            for n in ast.walk(fn):
                if isinstance(n, ast.Constant) and isinstance(n.value, float):
                    assert id(n) in wrapped, f"{path.name}:{fn.name}: bare {n.value}"
                    checked += 1
                if isinstance(n, ast.Name) and n.id == "B" and isinstance(n.ctx, ast.Load):
                    assert id(n) in wrapped, f"{path.name}:{fn.name}: bare B"
    assert checked > 20
