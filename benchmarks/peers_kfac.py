"""symcurv's K-FAC against kfac-jax's optimizer (issue 18, "Speed"), side by side: the same
network, batch, data, initial θ, minibatch sequence and curvature kind; step time and the
training error after equal CPU time.

    pip install -e ".[peers]"            # jax[cpu] (the tests never import it); kfac-jax: below
    python benchmarks/peers_kfac.py                  # 60 CPU seconds of training per side
    python benchmarks/peers_kfac.py --seconds 10     # a shorter comparison
    python benchmarks/peers_kfac.py --jax-python ENV/bin/python   # kfac-jax in its own env

kfac-jax 0.0.8 (the newest release) fails on jax 0.9.2 and 0.10.2 inside its tracer
(``tag_graph_matcher.eval_jaxpr_eqn``: "ValueError: too many values to unpack (expected
2)" — ``Primitive.get_bind_params`` returns the params alone since then); it runs on jax
0.8.3. So the kfac-jax side runs in its own environment, named by ``--jax-python``::

    python -m venv --system-site-packages /tmp/kfacjax     # sees numpy, numba, symcurv
    /tmp/kfacjax/bin/pip install "jax[cpu]==0.8.3" "kfac-jax==0.0.8"
    python benchmarks/peers_kfac.py --jax-python /tmp/kfacjax/bin/python

Before anything is compiled, ``check_jax_python`` asks that Python for its jax and kfac-jax
versions and stops with this recipe when it cannot import them, cannot import symcurv (the
side reads θ's layout from the compiled program), or pairs kfac-jax ≤ 0.0.8 with jax ≥ 0.9.

Network: the deep autoencoder 784-1000-500-250-30 mirrored (examples/autoencoder.py:
logistic units, linear code, sigmoid cross-entropy, Martens' sparse initialisation),
float64, minibatch B = 1000 drawn from 10000 CURVES images (examples/datasets.py), the same
index sequence on both sides. Both optimizers: G from curvature propagation (symcurv
``curvature="curvature_prop"``, kfac-jax ``estimation_mode="ggn_curvature_prop"``, its
default), factor EMA 0.95 updated every step, inverses every 5 steps (kfac-jax's default
``inverse_update_period``), adaptive learning rate and momentum from the quadratic model,
Levenberg-Marquardt damping adapted every 5 steps from λ₀ = ``--damping``, no l2, no norm
constraint, no burn-in. Known differences, kept: kfac-jax's quadratic model for α, μ and ρ
uses its own curvature estimate by default (symcurv's uses exact Gauss-Newton products),
its damping decay is 0.9 per adaptation (symcurv's (19/20)⁵ ≈ 0.77), and it inverts the
damped factors directly where symcurv eigendecomposes.

Method: the parent compiles the symcurv programs and writes θ₀, the data and the minibatch
indices to a temporary folder; then each side runs in its own fresh process with one thread
(common.pinned_env: BLAS, Numba, XLA), symcurv first. Each side trains until it has spent
``--seconds`` of CPU time in optimizer steps (``time.process_time``, so the load of other
users of a shared machine does not count against either side), saving θ at ten equally
spaced CPU times; the parent then evaluates every saved θ with the same compiled loss on the
whole training set. Before training, the JAX loss at θ₀ is checked against symcurv's to
1e-10 (the same function), and kfac-jax must have registered all eight dense layers. The
first kfac-jax step (trace, jit compile and run) is run once on copies of θ₀ and the
state, untimed, and reported apart; then both sides start from θ₀ with empty statistics.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "examples"))
sys.path.insert(0, str(HERE))

from common import machine, pin_to_cpus, pinned_env, table  # noqa: E402

B, N_TRAIN, SNAPSHOTS = 1000, 10000, 10
PROGRAMS = ("loss", "grad", "gnvp", "kfac")


def _program(build: Path):
    import autoencoder

    import symcurv as sc

    return sc.compile(autoencoder.model(), programs=PROGRAMS, build_dir=build, progress=False)


def prepare(folder: Path, build: Path, steps: int) -> None:
    """θ₀, the CURVES training set and ``steps`` minibatches of indices (epochs of random
    permutations), as .npy files."""
    import datasets

    prog = _program(build)
    np.save(folder / "theta0.npy", prog.init(0))
    np.save(folder / "x.npy", datasets.curves(N_TRAIN, seed=0))
    rng = np.random.default_rng(0)
    perms = [rng.permutation(N_TRAIN) for _ in range(steps * B // N_TRAIN + 1)]
    np.save(folder / "batches.npy", np.concatenate(perms)[: steps * B].reshape(steps, B))


class Clock:
    """CPU seconds spent inside ``step`` calls; θ saved at each of ``SNAPSHOTS`` marks."""

    def __init__(self, budget: float) -> None:
        self.budget, self.spent, self.steps = budget, 0.0, []
        self.marks = [budget * (k + 1) / SNAPSHOTS for k in range(SNAPSHOTS)]
        self.saved: list[tuple[float, int, np.ndarray]] = []

    def time(self, step):
        c, w = time.process_time(), time.perf_counter()
        out = step()
        cpu, wall = time.process_time() - c, time.perf_counter() - w
        self.spent += cpu
        self.steps.append((cpu, wall))
        return out

    def maybe_save(self, it: int, theta_flat) -> bool:
        """Save θ when a mark has passed; False once the budget is spent."""
        if self.marks and self.spent >= self.marks[0]:
            while self.marks and self.spent >= self.marks[0]:
                self.marks.pop(0)
            self.saved.append((self.spent, it, np.array(theta_flat)))
        return self.spent < self.budget

    def dump(self, folder: Path, side: str, extra: dict) -> None:
        np.save(folder / f"{side}_thetas.npy", np.stack([s[2] for s in self.saved]))
        info = dict(
            cpu=[s[0] for s in self.saved],
            iterations=[s[1] for s in self.saved],
            steps=self.steps,
            **extra,
        )
        (folder / f"{side}.json").write_text(json.dumps(info))


def side_symcurv(folder: Path, build: Path, budget: float, damping: float) -> None:
    import symcurv as sc
    from symcurv.optim.training import Sampler

    prog = _program(build)
    x, idx = np.load(folder / "x.npy"), np.load(folder / "batches.npy")
    opt = sc.optim.KFAC(
        prog,
        curvature="curvature_prop",
        damping=damping,
        adapt_every=5,
        factor_decay=0.95,
        factors_every=1,
        inverse_every=5,
    )

    class Fixed(Sampler):  # the shared index sequence instead of a fresh draw
        it = 0

        def minibatch(self, size=None):
            Fixed.it += 1
            return {"x": x[idx[Fixed.it - 1]]}

    sampler = Fixed({"x": x}, B, seed=0)
    theta = np.load(folder / "theta0.npy")
    state = opt.init(theta)
    clock = Clock(budget)
    it = 0
    while True:
        theta, state, _ = clock.time(lambda: opt.step(theta, sampler, state))  # noqa: B023
        it += 1
        if not clock.maybe_save(it, theta):
            break
    clock.dump(folder, "symcurv", {})


def side_kfac_jax(folder: Path, sizes_json: str, budget: float, damping: float) -> None:
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import kfac_jax

    layout = json.loads(sizes_json)  # [(name, shape, offset, size)] in θ's order
    x, idx = np.load(folder / "x.npy"), np.load(folder / "batches.npy")
    theta0 = np.load(folder / "theta0.npy")
    n_layers = sum(1 for name, *_ in layout if name.startswith("W"))
    code = n_layers // 2 - 1

    def unflatten(theta):
        """Weights as (n_in, n_out) — kfac-jax's dense pattern is h @ w + b."""
        p = {}
        for name, shape, off, size in layout:
            a = theta[off : off + size].reshape(shape)
            p[name] = a.T if name.startswith("W") else a
        return p

    def flatten(p):
        parts = []
        for name, _shape, _off, _size in layout:
            a = np.asarray(p[name])
            parts.append((a.T if name.startswith("W") else a).ravel())
        return np.concatenate(parts)

    def logits(p, xb):
        h = xb
        for i in range(n_layers):
            a = h @ p[f"W{i}"] + p[f"b{i}"]
            h = a if i in (code, n_layers - 1) else jax.nn.sigmoid(a)
        return h

    def loss(p, batch):
        y = logits(p, batch)
        kfac_jax.register_sigmoid_cross_entropy_loss(y, batch)
        per_case = jnp.sum(jnp.maximum(y, 0) - batch * y + jnp.log1p(jnp.exp(-jnp.abs(y))), 1)
        return jnp.mean(per_case)

    params = jax.tree_util.tree_map(jnp.asarray, unflatten(theta0))
    opt = kfac_jax.Optimizer(
        value_and_grad_func=jax.value_and_grad(loss),
        l2_reg=0.0,
        use_adaptive_learning_rate=True,
        use_adaptive_momentum=True,
        use_adaptive_damping=True,
        initial_damping=damping,
        damping_adaptation_interval=5,
        estimation_mode="ggn_curvature_prop",
        curvature_ema=0.95,
        curvature_update_period=1,
        inverse_update_period=5,
        num_burnin_steps=0,
        multi_device=False,
    )
    first = jnp.asarray(x[idx[0]])
    loss0 = float(jax.jit(loss)(params, first))
    rng = jax.random.PRNGKey(0)
    c = time.process_time()
    state = opt.init(params, rng, first)
    blocks = [type(b).__name__ for b in opt._estimator.blocks]  # noqa: SLF001
    init_s = time.process_time() - c
    # the first step traces and compiles: run it once on copies, untimed, then start over
    copies = jax.tree_util.tree_map(jnp.copy, (params, state))
    c = time.process_time()
    jax.block_until_ready(opt.step(*copies, rng, batch=first, global_step_int=0))
    compile_s = time.process_time() - c
    clock = Clock(budget)
    it = 0
    while True:
        rng, key = jax.random.split(rng)
        batch = jnp.asarray(x[idx[it]])

        def step(params=params, state=state, key=key, batch=batch, it=it):
            out = opt.step(params, state, key, batch=batch, global_step_int=it)
            return jax.block_until_ready(out)

        params, state, _stats = clock.time(step)
        it += 1
        if not clock.maybe_save(it, flatten(params)):
            break
    clock.dump(folder, "kfac_jax", dict(loss0=loss0, blocks=blocks, compile=compile_s, init=init_s))


JAX_ENV = (
    "kfac-jax 0.0.8 needs jax < 0.9 (it runs on 0.8.3). Create an environment for its side "
    "and name it with --jax-python:\n"
    "    python -m venv --system-site-packages /tmp/kfacjax\n"
    '    /tmp/kfacjax/bin/pip install "jax[cpu]==0.8.3" "kfac-jax==0.0.8"\n'
    "    python benchmarks/peers_kfac.py --jax-python /tmp/kfacjax/bin/python"
)
PROBE = (
    "import json, jax, kfac_jax, symcurv; "
    "print(json.dumps([jax.__version__, getattr(kfac_jax, '__version__', '0')]))"
)


def _version(text: str) -> tuple[int, ...]:
    """'0.8.3' → (0, 8, 3); '0.10.2rc1' → (0, 10, 2): each part's leading digits."""
    parts = []
    for p in text.split(".")[:3]:
        digits = re.match(r"\d*", p).group()
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def check_jax_python(python: str) -> tuple[str, str]:
    """(jax, kfac-jax) versions of ``python``; SystemExit with ``JAX_ENV`` when it cannot run
    the kfac-jax side: an import fails, or kfac-jax ≤ 0.0.8 meets jax ≥ 0.9."""
    try:
        out = subprocess.run(
            [python, "-c", PROBE], capture_output=True, text=True, timeout=300, check=False
        )
    except OSError as e:
        raise SystemExit(f"--jax-python {python}: cannot run it ({e}).\n{JAX_ENV}") from None
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(
            f"--jax-python {python} cannot import jax, kfac_jax and symcurv ({last}).\n{JAX_ENV}"
        )
    jax_v, kfac_v = json.loads(out.stdout.strip().splitlines()[-1])
    if _version(kfac_v) <= (0, 0, 8) and _version(jax_v) >= (0, 9):
        raise SystemExit(
            f"--jax-python {python} has jax {jax_v} with kfac-jax {kfac_v}.\n{JAX_ENV}"
        )
    return jax_v, kfac_v


def child(side: str, folder: Path, build: Path, budget: float, damping: float, python: str) -> None:
    cmd = [python, __file__, "--side", side, "--folder", str(folder)]
    cmd += ["--build", str(build), "--seconds", str(budget), "--damping", str(damping)]
    subprocess.run(cmd, env=pinned_env(1), check=True)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seconds", type=float, default=60.0, help="CPU seconds per side")
    ap.add_argument("--damping", type=float, default=1.0, help="λ₀ on both sides (default 1)")
    ap.add_argument("--build-dir", default=None, help="keep the symcurv build here")
    ap.add_argument(
        "--jax-python",
        default=sys.executable,
        help="the Python that runs the kfac-jax side (an environment whose jax suits kfac-jax)",
    )
    ap.add_argument("--side", help=argparse.SUPPRESS)
    ap.add_argument("--folder", help=argparse.SUPPRESS)
    ap.add_argument("--build", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side:
        pin_to_cpus()
        folder, build = Path(args.folder), Path(args.build)
        if args.side == "symcurv":
            side_symcurv(folder, build, args.seconds, args.damping)
        else:
            layout = _program(build).params
            rows = [(k, p["shape"], p["offset"], p["size"]) for k, p in layout.items()]
            side_kfac_jax(folder, json.dumps(rows), args.seconds, args.damping)
        return
    jax_v, kfac_v = check_jax_python(args.jax_python)
    print(f"machine: {machine()}")
    print(f"command: python {' '.join(sys.argv)}")
    print(f"kfac-jax side: {args.jax_python}, jax {jax_v}, kfac-jax {kfac_v}\n")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        build = Path(args.build_dir) if args.build_dir else folder / "build"
        prepare(folder, build, steps=int(args.seconds * 20) + 10)  # steps ≥ 50 ms
        for side in ("symcurv", "kfac_jax"):
            print(f"{side}: training for {args.seconds:g} CPU s", file=sys.stderr, flush=True)
            python = args.jax_python if side == "kfac_jax" else sys.executable
            child(side, folder, build, args.seconds, args.damping, python)
        report(folder, build)


def report(folder: Path, build: Path) -> None:
    prog = _program(build)
    x = np.load(folder / "x.npy")
    theta0 = np.load(folder / "theta0.npy")
    info = {s: json.loads((folder / f"{s}.json").read_text()) for s in ("symcurv", "kfac_jax")}
    jx = info["kfac_jax"]
    want = prog.loss(theta0, {"x": x[np.load(folder / "batches.npy")[0]]})
    agree = abs(jx["loss0"] - want) / abs(want)
    print(f"loss at θ₀ on the first minibatch: symcurv {want:.12g}, JAX {jx['loss0']:.12g}")
    print(f"relative difference {agree:.1e} (must be ≤ 1e-10)")
    print(f"kfac-jax blocks: {jx['blocks']}")
    if agree > 1e-10 or jx["blocks"].count("DenseTwoKroneckerFactored") != 8:
        raise SystemExit("the two sides do not train the same function with K-FAC blocks")

    def error(theta) -> float:
        return float(prog.loss(theta, {"x": x}))

    rows = []
    for side in ("symcurv", "kfac_jax"):
        r = info[side]
        steps = np.array(r["steps"])
        thetas = np.load(folder / f"{side}_thetas.npy")
        errs = [error(t) for t in thetas]
        rows.append(
            [
                side,
                f"{np.median(steps[:, 0]) * 1e3:.0f}",
                f"{np.median(steps[:, 1]) * 1e3:.0f}",
                str(r["iterations"][-1]),
                f"{errs[len(errs) // 2 - 1]:.3f}",
                f"{errs[-1]:.3f}",
            ]
        )
    head = ["side", "step CPU ms", "step wall ms", "steps", "error at ½ budget", "at budget"]
    print(table(rows, head))
    print(f"\nerror: mean sigmoid cross-entropy over the {N_TRAIN} training images")
    print(f"(at θ₀: {error(theta0):.3f}); CPU times of one thread; kfac-jax's untimed first")
    print(f"step (trace + compile + run) {jx['compile']:.1f} s, its init {jx['init']:.1f} s")


if __name__ == "__main__":
    if os.environ.get("SYMCURV_BENCH_CPUS") is None and "--side" in sys.argv:
        raise SystemExit("--side is internal: run this script without it")
    main()
