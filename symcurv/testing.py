"""Reusable checks: compiled programs against the reference interpreter and against
central differences. ``symcurv check`` and the test suite both use these."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from symcurv.ir import outputs
from symcurv.runtime.program import Program, extra_leaves


def rel_error(a, b) -> float:
    """‖a − b‖∞ / max(‖b‖∞, 1e-300): the norm-wise relative error of ``a`` against ``b``."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b), initial=0.0) / max(np.max(np.abs(b), initial=0.0), 1e-300))


def random_batch(prog: Program, batch_size: int = 8, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs uniform in (0.05, 0.95) and targets that are valid for every built-in loss
    (in (0, 1), rows summing to 1 for softmax cross-entropy is not required by the math);
    integer class labels for a ``labels=True`` target."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, d in prog.inputs.items():
        if d.get("labels"):  # class labels (B,) of a labels=True target
            out[name] = rng.integers(0, d["size"], size=batch_size)
        else:
            out[name] = rng.uniform(0.05, 0.95, size=(batch_size, d["size"]))
    return out


def random_noise(prog: Program, program: str, batch_size: int, seed: int = 0) -> dict:
    """Rademacher values for every CP noise leaf of ``program`` and normal values for
    every input direction V (empty for other programs), shaped as the compiled program
    takes them."""
    rng = np.random.default_rng(seed)
    spec = prog.manifest["programs"][program]
    out = {
        name: rng.choice([-1.0, 1.0], size=(batch_size, size) if batched else (size,))
        for name, batched, size in extra_leaves(spec, "noise")
    }
    for name, _batched, size in extra_leaves(spec, "direction"):
        out[name] = rng.normal(size=(batch_size, size))
    return out


def reference_outputs(
    prog: Program, program: str, theta, batch, v=None, noise=None
) -> dict[str, np.ndarray]:
    """Run the program's stored IR graph in the numpy reference interpreter, with results
    shaped like the compiled program's (flat vectors for ``prefix:param`` outputs); CP
    noise by leaf name, as ``random_noise`` gives it."""
    from symcurv.ops import REGISTRY  # compile side: the op registry (and sympy)
    from symcurv.runtime import graphs, reference

    g = graphs.graphs(prog.build_dir)["programs"][program]
    names = list(prog.inputs)  # checked as the program checks it (class labels: a column)
    batch = dict(zip(names, prog.checks.batch(names, batch)))
    leaves = {k: np.asarray(v, dtype=np.float64) for k, v in batch.items()}
    leaves.update(
        {k: np.asarray(v, dtype=np.float64) for k, v in prog.unflatten(np.asarray(theta)).items()}
    )
    if v is not None:
        views = prog.unflatten(np.asarray(v, dtype=np.float64))
        leaves.update({f"v:{k}": np.asarray(a, dtype=np.float64) for k, a in views.items()})
    for n in g.nodes():
        if REGISTRY[n.op].binding in ("noise", "direction"):  # bound by leaf name
            lead = (np.shape(noise[n.name])[0],) if n.batched else ()
            leaves[n.name] = np.reshape(noise[n.name], lead + n.shape)
    vals = reference.evaluate(g, leaves)
    flat: dict[str, dict] = {}
    out: dict[str, np.ndarray] = {}
    for key, v in vals.items():
        spec = g.output_type(key)
        if spec.kind == outputs.THETA:
            flat.setdefault(spec.result, {})[spec.block] = np.broadcast_to(
                v, tuple(prog.params[spec.block]["shape"])
            )
        elif spec.kind == outputs.PER_CASE:  # (B, size) rows, as the compiled program stores
            out[key] = np.reshape(v, (np.shape(v)[0], -1)) if np.ndim(v) else np.atleast_2d(v)
        else:
            out[key] = np.atleast_1d(v)
    for prefix, d in flat.items():
        out[prefix] = prog.flatten(d).astype(np.float64)
    return out


def compare_to_reference(
    prog: Program, theta=None, batch: Mapping | None = None, programs=None, v=None
) -> dict[str, float]:
    """``{program: max relative error of every output}`` against the reference (curvature
    products along ``v``, default a fixed random direction)."""
    theta = prog.init(0) if theta is None else theta
    batch = random_batch(prog) if batch is None else batch
    if v is None:
        v = np.random.default_rng(7).normal(size=prog.n_params)
    errs = {}
    for name in programs or prog.programs:
        vv = v if prog.manifest["programs"][name].get("vectors") else None
        z = random_noise(prog, name, next(iter(batch.values())).shape[0])
        got = prog.run(name, theta, batch, v=vv, extras=dict(z))
        want = reference_outputs(prog, name, theta, batch, vv, z)
        errs[name] = max(rel_error(got[k].reshape(want[k].shape), want[k]) for k in want)
    return errs


def check_grad(
    prog: Program, theta, batch, *, eps: float = 1e-6, n_dirs: int = 6, seed: int = 0
) -> float:
    """Relative error of directional derivatives gᵀu against central differences of
    ``prog.loss`` along ``n_dirs`` random directions u (float64 programs)."""
    rng = np.random.default_rng(seed)
    _, g = prog.grad(theta, batch)
    worst = 0.0
    for _ in range(n_dirs):
        u = rng.normal(size=prog.n_params)
        u /= np.linalg.norm(u)
        fd = (prog.loss(theta + eps * u, batch) - prog.loss(theta - eps * u, batch)) / (2 * eps)
        worst = max(worst, abs(fd - g @ u) / max(abs(g @ u), np.linalg.norm(g) * 1e-3, 1e-12))
    return worst


def check_hvp(
    prog: Program, theta, batch, *, eps: float = 1e-5, n_dirs: int = 4, seed: int = 0
) -> float:
    """Relative error of ``prog.hvp`` against central differences of ``prog.grad`` along
    random directions: H v ≈ (g(θ + εv) − g(θ − εv)) / 2ε (float64 programs)."""
    rng = np.random.default_rng(seed)
    worst = 0.0
    for _ in range(n_dirs):
        v = rng.normal(size=prog.n_params)
        v /= np.linalg.norm(v)
        hv = prog.hvp(theta, batch, v)
        fd = (prog.grad(theta + eps * v, batch)[1] - prog.grad(theta - eps * v, batch)[1]) / (
            2 * eps
        )
        worst = max(worst, np.linalg.norm(hv - fd) / max(np.linalg.norm(fd), 1e-12))
    return worst


def check_input_grad(
    prog: Program, theta, batch, wrt: str, *, eps: float = 1e-6, n_dirs: int = 4, seed: int = 0
) -> float:
    """Relative error of ``prog.input_grad`` against central differences of ``prog.loss``
    along per-case directions U of input ``wrt``: the loss is the mean of f_b, so its
    derivative along U is (1/B) Σ_b ∇_x f_b · U_b (float64 programs). Each U is the claimed
    gradient's direction plus a random one of the same length: the derivative along it is
    not small (a purely random U over B·D numbers makes it tiny, and the difference
    quotient's rounding then dominates), and a wrong gradient still shows in both parts."""
    rng = np.random.default_rng(seed)
    g = prog.input_grad(theta, batch, wrt)
    worst = 0.0
    for _ in range(n_dirs):
        r = rng.normal(size=np.shape(batch[wrt]))
        U = r / np.linalg.norm(r) + g / max(np.linalg.norm(g), 1e-300)
        U /= np.linalg.norm(U)
        up, down = dict(batch), dict(batch)
        up[wrt], down[wrt] = batch[wrt] + eps * U, batch[wrt] - eps * U
        fd = (prog.loss(theta, up) - prog.loss(theta, down)) / (2 * eps)
        want = float(np.sum(g * U)) / len(U)
        worst = max(worst, abs(fd - want) / max(abs(want), np.abs(g).max() * 1e-3, 1e-12))
    return worst


def check_input_hvp(
    prog: Program, theta, batch, wrt: str, *, eps: float = 1e-5, n_dirs: int = 3, seed: int = 0
) -> float:
    """Relative error of ``prog.input_hvp`` against central differences of
    ``prog.input_grad`` along random per-case directions V (float64 programs)."""
    rng = np.random.default_rng(seed)
    worst = 0.0
    for _ in range(n_dirs):
        V = rng.normal(size=np.shape(batch[wrt]))
        V /= np.linalg.norm(V)
        hv = prog.input_hvp(theta, batch, V, wrt)
        up, down = dict(batch), dict(batch)
        up[wrt], down[wrt] = batch[wrt] + eps * V, batch[wrt] - eps * V
        fd = (prog.input_grad(theta, up, wrt) - prog.input_grad(theta, down, wrt)) / (2 * eps)
        worst = max(worst, np.linalg.norm(hv - fd) / max(np.linalg.norm(fd), 1e-12))
    return worst
