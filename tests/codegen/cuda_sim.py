"""The CUDA backend under the simulator: run by tests/codegen/test_cuda.py in a subprocess.

``NUMBA_ENABLE_CUDASIM=1`` must be set before numba is imported, so these runs live in
their own process and the rest of the suite keeps the real ``numba.cuda``. The script builds
small models for backend "cuda", runs every program, a linearized State and the generic
kernels of ``symcurv.runtime.cuda_kernels``, and pickles what it got — with the inputs it
used and the reference interpreter's outputs — for the test process to compare (the CPU
backend's outputs are computed there, from the same inputs).

    NUMBA_ENABLE_CUDASIM=1 python tests/codegen/cuda_sim.py OUT.pkl [--geometry gpu]

``--geometry gpu`` (with SYMCURV_CUDA_GEOMETRY=gpu in the environment) runs a few programs
with the real GPU launch geometry (128-thread blocks, 16×16-thread GEMM tiles) instead of
the simulator's tiny one.
"""

from __future__ import annotations

import itertools
import os
import pickle
import sys
import threading
import time
from pathlib import Path

import numpy as np

if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
    sys.exit("run with NUMBA_ENABLE_CUDASIM=1 (the CUDA simulator)")
# The simulated threads of a block hand the GIL to each other at every syncthreads; with
# the default 5 ms switch interval the runs took about 5× longer.
sys.setswitchinterval(1e-4)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import models  # noqa: E402
from numba import cuda  # noqa: E402

from symcurv import testing  # noqa: E402
from symcurv.pipeline import build  # noqa: E402
from symcurv.runtime import build as build_dir  # noqa: E402
from symcurv.runtime import cuda_geometry  # noqa: E402
from symcurv.runtime import cuda_kernels as ck  # noqa: E402

# Cases per batch: not a multiple of the simulator's 4-row GEMM tiles or 2-deep k-steps, and
# more elements than its 2 blocks of 4 threads cover at once (grid-stride loops).
B = 5
# (model, dtype) -> programs: every program, but for all_ops (every op in one model, slow to
# derive) the three that touch each op's value, first and second derivative
CASES = {
    ("tied", "float64"): "all",
    ("tied", "float32"): "all",
    ("mlp", "float64"): "all",
    ("branching", "float64"): "all",
    ("all_ops", "float64"): ("loss", "grad", "hvp"),
    # class labels: the kernels read the labels (B,) and form the one-hot rows in the loop
    ("mlp_labels", "float64"): ("loss", "grad", "hvp"),
}


def inputs(prog, seed: int = 0) -> dict:
    """θ (perturbed away from the initialiser's zeros), a batch and a direction v."""
    rng = np.random.default_rng(seed)
    theta = prog.init(0) + 0.3 * rng.normal(size=prog.n_params)
    return {
        "theta": theta,
        "batch": testing.random_batch(prog, B, seed=seed + 1),
        "v": rng.normal(size=prog.n_params),
    }


def run_programs(prog, data: dict, programs=None) -> dict:
    """Every program with explicit noise (the same arrays the CPU run gets): cuda outputs
    and the reference interpreter's."""
    out = {}
    for name in programs or prog.programs:
        spec = prog.manifest["programs"][name]
        v = data["v"] if spec.get("vectors") else None
        noise = testing.random_noise(prog, name, B, seed=5)
        got = prog.run(name, data["theta"], data["batch"], v=v, extras=dict(noise))
        want = testing.reference_outputs(prog, name, data["theta"], data["batch"], v, noise)
        out[name] = {"noise": noise, "cuda": got, "reference": want}
    return out


def run_state(prog, data: dict) -> dict:
    """A linearized State on cuda: every cached product, each CP estimator with a seed."""
    st = prog.linearize(data["theta"], data["batch"])
    v2 = np.roll(data["v"], 1)
    res = {
        "loss": st.loss,
        "grad": st.grad()[1],
        "hvp": st.hvp(data["v"]),
        "hvp2": st.hvp(v2),  # the second product reuses the cached static part
        "gnvp": st.gnvp(data["v"], damping=0.1),
        "cp_S": st.cp_diag("S", samples=2, seed=0),
        "cp_TU": st.cp_diag("TU", noise="gaussian", seed=1),
        "cp_GN": st.cp_diag("GN", seed=2),
        "cp_HI": st.cp_diag("HI", seed=3),
        "bl": st.becker_lecun_diag(),
        # derivatives with respect to the data (per case), on the same State
        "input_grad": st.input_grad(),
        "input_hvp": st.input_hvp(data["batch"]["x"][::-1].copy()),
        "input_exact": st.input_diag_hessian(method="exact"),
        "input_S": st.input_diag_hessian(method="S", samples=2, seed=4),
        "input_TU": st.input_diag_hessian(method="TU", noise="gaussian", seed=5),
        "input_bl": st.input_diag_hessian(method="becker_lecun"),
        "cached": sorted(st._cache),
        # θ, the batch and every cached static value stay on the device
        "resident": [ck.is_device(a) for a in (st._resident[0], *st._resident[1].values())],
        "cache_on_device": [ck.is_device(a) for c in st._cache.values() for a in c.values()],
    }
    return res


def noise_draws() -> dict:
    """CP noise drawn on the device vs runtime/noise.py's CPU fill, element for element
    (sizes not multiples of a Philox block: 128 Rademacher bits, 2 Gaussian values)."""
    from symcurv.runtime import noise

    same = {}
    for kind, dtype, shape in itertools.product(
        ("rademacher", "gaussian"), ("float32", "float64"), ((5, 53), (3,), (2, 129))
    ):
        key = noise.key(12345 + len(shape))
        got = ck.draw_noise(shape, dtype, key, 3, 7, kind).copy_to_host()
        want = noise.draw_cpu(shape, dtype, key, 3, 7, kind)
        equal = got.dtype == want.dtype and np.array_equal(got, want)
        same[f"{kind} {dtype} {shape}"] = bool(equal)
    return same


def buffer_reuse(prog, data: dict) -> dict:
    """Device arrays are allocated once per batch size: same arrays on a second call, a
    new set for another B, and a one-case batch is right too."""
    module = prog._modules["grad"]
    prog.grad(data["theta"], data["batch"])
    first = [id(a) for a in module._DEVICE[B]]
    g2 = prog.grad(data["theta"], data["batch"])[1]
    same = [id(a) for a in module._DEVICE[B]] == first
    one = {k: a[:1] for k, a in data["batch"].items()}
    g1 = prog.grad(data["theta"], one)[1]
    ref1 = testing.reference_outputs(prog, "grad", data["theta"], one)["grad"]
    ref = testing.reference_outputs(prog, "grad", data["theta"], data["batch"])["grad"]
    return {
        "same_arrays": same,
        "batch_sizes": sorted(module._DEVICE),
        "err_repeat": testing.rel_error(g2, ref),
        "err_one_case": testing.rel_error(g1, ref1),
    }


def generic_kernels() -> dict:
    """Relative errors of the generic kernels against numpy, sizes chosen so that no
    dimension is a multiple of a tile (partial tiles everywhere)."""
    rng = np.random.default_rng(0)
    errs = {}
    M, N, K = 5, 7, 6
    for dtype in ("float32", "float64"):
        for ta, tb, acc in itertools.product((False, True), repeat=3):
            a = rng.normal(size=(K, M) if ta else (M, K)).astype(dtype)
            b = rng.normal(size=(N, K) if tb else (K, N)).astype(dtype)
            c0 = rng.normal(size=(M, N)).astype(dtype)
            want = (a.T if ta else a).astype(float) @ (b.T if tb else b).astype(float)
            want += c0 if acc else 0.0
            dc = cuda.to_device(c0)
            ck.gemm(cuda.to_device(a), cuda.to_device(b), dc, ta, tb, acc)
            errs[f"gemm ta={ta:d} tb={tb:d} acc={acc:d} {dtype}"] = testing.rel_error(
                dc.copy_to_host(), want
            )
    for ta, tb in itertools.product((False, True), repeat=2):  # the real tile geometry once
        a = rng.normal(size=(K, M) if ta else (M, K))
        b = rng.normal(size=(N, K) if tb else (K, N))
        dc = cuda.device_array((M, N))
        ck.gemm(cuda.to_device(a), cuda.to_device(b), dc, ta, tb, geo=cuda_geometry.GPU)
        want = (a.T if ta else a) @ (b.T if tb else b)
        errs[f"gemm ta={ta:d} tb={tb:d} GPU geometry"] = testing.rel_error(dc.copy_to_host(), want)

    rows, cols, Bc = 3, 5, 6
    w = rng.normal(size=(Bc, rows * cols))
    for trans, shared in itertools.product((False, True), repeat=2):
        n_in, n_out = (rows, cols) if trans else (cols, rows)
        h = rng.normal(size=(1 if shared else Bc, n_in))
        out = cuda.device_array((Bc, n_out))
        ck.batched_matvec(cuda.to_device(w), cuda.to_device(h), out, rows, cols, trans)
        mats = w.reshape(Bc, rows, cols)
        mats = mats.transpose(0, 2, 1) if trans else mats
        want = np.einsum("bpq,bq->bp", mats, np.broadcast_to(h, (Bc, n_in)))
        errs[f"batched_matvec trans={trans:d} shared h={shared:d}"] = testing.rel_error(
            out.copy_to_host(), want
        )
    u, v = rng.normal(size=(Bc, 3)), rng.normal(size=(1, 4))
    out = cuda.device_array((Bc, 12))
    ck.outer(cuda.to_device(u), cuda.to_device(v), out, 3, 4)
    want = (u[:, :, None] * v[:, None, :]).reshape(Bc, 12)
    errs["outer (shared v)"] = testing.rel_error(out.copy_to_host(), want)

    for R, n in ((5, 7), (3, 1), (2, 9)):
        x = rng.normal(size=(R, n)) * 3
        for tmpl, f in (
            ("sum_features", lambda z: z.sum(1)),
            ("logsumexp", lambda z: np.log(np.exp(z).sum(1))),
        ):
            out = cuda.device_array((R, 1))
            ck.row_reduce(tmpl, cuda.to_device(x), out)
            errs[f"{tmpl} {R}×{n}"] = testing.rel_error(out.copy_to_host()[:, 0], f(x))
    for Bx, n in ((5, 7), (9, 1), (3, 11)):
        x = rng.normal(size=(Bx, n))
        for tmpl, f in (("batch_sum", lambda z: z.sum(0)), ("batch_mean", lambda z: z.mean(0))):
            out = cuda.device_array(n)
            ck.batch_reduce(tmpl, cuda.to_device(x), out)
            errs[f"{tmpl} {Bx}×{n}"] = testing.rel_error(out.copy_to_host(), f(x))

    d = cuda.device_array((3, 4))
    ck.fill(d, 2.5)
    errs["fill"] = testing.rel_error(d.copy_to_host(), np.full((3, 4), 2.5))
    x = rng.normal(size=(3, 4))
    d = cuda.device_array((3, 4))
    ck.copy(cuda.to_device(x), d)
    errs["copy"] = testing.rel_error(d.copy_to_host(), x)
    x = rng.normal(size=(3, 2 * 5))  # each row: a 5 × 2 matrix
    d = cuda.device_array((3, 10))
    ck.transpose(cuda.to_device(x), d, 2, 5)
    want = x.reshape(3, 5, 2).transpose(0, 2, 1).reshape(3, 10)
    errs["transpose"] = testing.rel_error(d.copy_to_host(), want)
    return errs


def shared_memory_check() -> dict:
    """The simulator's shared-array allocation as patched by runtime/cuda_simulator.py:
    installed, one array per (file, line) whichever thread asks first, distinct lines
    distinct arrays. (The race it closes is too rare to provoke on demand: 4 wrong results
    in 300 runs of a small reduction kernel.)"""
    from numba.cuda.simulator import kernelapi

    shared = kernelapi.FakeCUDAShared(0)
    got: list[int] = []

    def grab():
        got.append(id(shared.array(4, np.float64)))

    threads = [threading.Thread(target=grab) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    a = shared.array(4, np.float64)
    b = shared.array(4, np.float64)
    return {
        "installed": getattr(kernelapi.FakeCUDAShared, "_symcurv_locked", False),
        "one_array_per_line": len(set(got)) == 1,
        "lines_distinct": a is not b,
    }


def main(out_path: str, geometry: str | None) -> None:
    tmp = Path(out_path).parent
    result: dict = {"geometry": ck.GEOMETRY, "seconds": {}}
    cases = {("tied", "float64"): ("loss", "grad")} if geometry == "gpu" else CASES
    for (model, dtype), programs in cases.items():
        t = time.perf_counter()
        root = build(
            getattr(models, model)(),
            programs,
            backend="cuda",
            dtype=dtype,
            build_dir=tmp / f"{model}-{dtype}-{geometry or 'sim'}",
            progress=False,
        )
        prog = build_dir.load(root)
        data = inputs(prog)
        result[(model, dtype)] = {"inputs": data, "programs": run_programs(prog, data)}
        if (model, dtype) == ("tied", "float64") and geometry != "gpu":
            result["state"] = run_state(prog, data)
            result["buffers"] = buffer_reuse(prog, data)
        result["seconds"][(model, dtype)] = time.perf_counter() - t
    if geometry != "gpu":
        t = time.perf_counter()
        result["generic"] = generic_kernels()
        result["shared_memory"] = shared_memory_check()
        result["noise"] = noise_draws()
        result["seconds"]["generic"] = time.perf_counter() - t
    with open(out_path, "wb") as f:
        pickle.dump(result, f)


if __name__ == "__main__":
    args = sys.argv[1:]
    main(args[0], args[2] if args[1:2] == ["--geometry"] else None)
