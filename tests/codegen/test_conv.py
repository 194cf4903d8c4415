"""The 2-D convolution op (symcurv/ops/conv.py) compiled: the Fields-of-Experts energy of
examples/foe.py on the CPU against an independent numpy/scipy evaluation, the reference
interpreter and central differences (θ and the data); the CUDA backend under the
simulator against the CPU; the shape errors users see. The op's rules themselves are
checked by tests/test_registry.py's generic checks."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import signal

import symcurv as sc
from symcurv import errors, testing

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "examples"))
import foe  # noqa: E402

B = 3
PROGRAMS = ("loss", "grad", "hvp", "input_grad", "input_diag_hessian")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """foe.tiny() (3 filters of 3×3 on 6×7 images) compiled for the CPU, θ and a batch.
    The CUDA simulator's run starts first, in the background, on the same inputs."""
    root = tmp_path_factory.mktemp("conv")
    m = foe.tiny()
    rng = np.random.default_rng(0)
    theta = 0.4 * rng.normal(size=3 * 9 + 3)
    data = {
        "theta": theta,
        "batch": {"x": rng.normal(size=(B, 42))},
        "V": rng.normal(size=(B, 42)),
    }
    (root / "in.pkl").write_bytes(pickle.dumps(data))
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}
    sim = subprocess.Popen(
        [sys.executable, str(ROOT / "tests/codegen/conv_cuda_sim.py"), str(root / "in.pkl"),
         str(root / "out.pkl"), str(root / "cuda")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    prog = sc.compile(m, programs=PROGRAMS, build_dir=root / "cpu", progress=False)
    yield prog, data, sim, root
    if sim.poll() is None:
        sim.kill()


C = float(np.exp(1.5))  # the Student-t scale of examples/foe.py


def foe_energy(F, beta, x, H=6, W=7, c=C):
    """E(x) = Σ_m e^β_m Σ_p log((c (w_m ⋆ x)_p)² / 2 + 1), w_m = F_m / ‖F_m‖ (examples/foe.py
    keeps its filters at unit length, 002 §4), with scipy's correlate2d."""
    img = x.reshape(H, W)
    total = 0.0
    for m in range(F.shape[0]):
        w = F[m] / np.linalg.norm(F[m])
        resp = signal.correlate2d(img, w.reshape(3, 3), mode="valid")
        total += np.exp(beta[m]) * np.sum(np.log((c * resp) ** 2 / 2 + 1))
    return total


def test_the_energy_is_the_valid_correlation(tiny):
    prog, data, *_ = tiny
    p = prog.unflatten(data["theta"])
    x = data["batch"]["x"]
    want = np.mean([foe_energy(p["F"], p["beta"], x[b]) for b in range(B)])
    assert abs(prog.loss(data["theta"], data["batch"]) - want) < 1e-10 * abs(want)


def test_compiled_programs_equal_the_reference_interpreter(tiny):
    prog, data, *_ = tiny
    errs = testing.compare_to_reference(prog, data["theta"], data["batch"])
    assert {"grad", "hvp", "input_grad", "input_hvp", "input_diag_S"} <= set(errs)
    assert max(errs.values()) < 1e-12, errs


def test_derivatives_match_central_differences(tiny):
    """∂E/∂θ (every coordinate), ∂E_b/∂x_b (per case, not divided by B), ∇²_x E_b V_b from
    differences of input_grad, and the exact data diagonal from dense input_hvp columns."""
    prog, data, *_ = tiny
    theta, batch, eps = data["theta"], data["batch"], 1e-6
    _, g = prog.grad(theta, batch)
    E = np.eye(prog.n_params)
    fd = [(prog.loss(theta + eps * e, batch) - prog.loss(theta - eps * e, batch)) / (2 * eps)
          for e in E]  # fmt: skip
    assert testing.rel_error(g, np.array(fd)) < 1e-7
    s = prog.input_grad(theta, batch)
    x = batch["x"]
    fd_x = np.zeros_like(x)
    for j in range(x.shape[1]):
        dx = np.zeros_like(x)
        dx[:, j] = eps
        per_case = [
            (prog.loss(theta, {"x": x[b : b + 1] + dx[b : b + 1]})
             - prog.loss(theta, {"x": x[b : b + 1] - dx[b : b + 1]})) / (2 * eps)
            for b in range(B)
        ]  # fmt: skip
        fd_x[:, j] = per_case
    assert testing.rel_error(s, fd_x) < 1e-7
    V = data["V"]
    hv = prog.input_hvp(theta, batch, V)
    up, down = ({"x": x + s * eps * V} for s in (1, -1))
    fd_hv = prog.input_grad(theta, up) - prog.input_grad(theta, down)
    assert testing.rel_error(hv, fd_hv / (2 * eps)) < 1e-6
    dense = np.stack([prog.input_hvp(theta, batch, np.tile(e, (B, 1))) for e in np.eye(42)], 2)
    exact = prog.input_diag_hessian(theta, batch, method="exact")
    assert testing.rel_error(exact, np.diagonal(dense, axis1=1, axis2=2)) < 1e-10
    # one nonlinear layer between x and a weighted sum: Becker-LeCun's diagonal is exact
    # (DESIGN.md §3), through conv2d's squared pullback (what score matching relies on)
    bl = prog.input_diag_hessian(theta, batch, method="becker_lecun")
    assert testing.rel_error(bl, exact) < 1e-10


def test_rows_whose_left_and_right_edges_overlap(tmp_path):
    """The kernels split each output row into an all-taps middle and bounded edges: on a
    7 × 5 image with 4 × 4 filters (responses 2 wide, narrower than a filter) the edges
    overlap and there is no middle; the compiled programs still equal the interpreter."""
    m = foe.model(image=(7, 5), filters=2, size=4, name="foe_narrow", std=0.5)
    prog = sc.compile(m, ("loss", "input_grad"), build_dir=tmp_path, progress=False)
    rng = np.random.default_rng(3)
    theta, batch = rng.normal(size=prog.n_params), {"x": rng.normal(size=(2, 35))}
    errs = testing.compare_to_reference(prog, theta, batch)
    assert "input_grad" in errs and max(errs.values()) < 1e-12, errs


def test_cuda_simulator_equals_the_cpu(tiny):
    prog, data, sim, root = tiny
    log, _ = sim.communicate(timeout=900)
    assert sim.returncode == 0, log[-6000:]
    got = pickle.loads((root / "out.pkl").read_bytes())
    assert got["backend"] == "cuda" and "cuda.grid(1)" in got["source"]
    theta, batch = data["theta"], data["batch"]
    assert abs(got["loss"] - prog.loss(theta, batch)) < 1e-10 * abs(got["loss"])
    assert testing.rel_error(got["grad"], prog.grad(theta, batch)[1]) < 1e-10
    assert testing.rel_error(got["input_grad"], prog.input_grad(theta, batch)) < 1e-10
    assert testing.rel_error(got["input_hvp"], prog.input_hvp(theta, batch, data["V"])) < 1e-10


@pytest.mark.parametrize(
    "image, filters, match",
    [
        ((5, 5), (3, 9), "the image must have shape \\(25,\\)"),
        ((2, 7), (3, 9), "does not fit a 2x7 image"),
        ((6, 7), (3, 8), "not \\(M, k·k\\)"),
        ((6,), (3, 9), "not a pair"),
    ],
)
def test_shape_errors_name_the_dsl_line(image, filters, match):
    m = sc.Model("bad_conv")
    x = m.input("x", 42)
    F = m.param("F", filters)
    with pytest.raises(errors.ShapeError, match=match) as e:
        sc.conv2d(F, x, image=image)
    assert "test_conv.py" in str(e.value) and "conv2d" in str(e.value)
