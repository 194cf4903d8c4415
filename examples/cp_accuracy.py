"""Accuracy of Curvature Propagation against the exact Hessian diagonal: §8.1 of the CP paper.

The 256-20-20-20-10 tanh network of ``cp_net.py`` (6190 parameters), softmax cross-entropy,
1000 fixed cases of scikit-learn's bundled 8×8 digits upsampled to 16×16 (each pixel repeated
2×2, i.e. ``np.kron(image, np.ones((2, 2)))``) and scaled to [-1, 1] like USPS. Two settings:
random weights (W ~ N(0, 0.01), i.e. std 0.1; biases 0) and a net trained briefly by
full-batch momentum on the same 1000 cases. For each, the exact diagonal comes from
``prog.diag_hessian`` (6190 hvp calls), then the relative error ‖d̂ − d‖ / ‖d‖ of

- CP with the S and the T/U estimators (one independent noise draw per curved node per case
  per sample: a rank-1000 estimate per sample),
- HI as ``cp_diag`` implements it: Hutchinson (H w) ⊙ w with one θ-space probe per sample
  through the batch hvp (rank one per sample),
- "HI per case", the paper's definition: Σ_b (H_b w_b) ⊙ w_b / B with an independent probe
  per case per sample, H_b from hvp on a one-case batch (the nested running mean of 100
  draws gives the 1- and 10-sample estimates),
- Becker & LeCun's deterministic approximation (biased; the same at every sample count),

with Rademacher and Gaussian noise, at 1, 10 and 100 samples per case, averaged over 3 seeds
(HI per case: 1 seed). Prints a markdown table and writes a log-log plot.

    python examples/cp_accuracy.py    # ~3 min (+ ~1.5 min for the first Numba build)
    python examples/cp_accuracy.py --cases 200 --seeds 1 --hi-cases 10   # a 20 s look
    python examples/cp_accuracy.py --update-docs   # the plot docs/cp_accuracy.md shows

The plot goes to build/cp_accuracy/cp_accuracy.png (docs/img/ only with --update-docs).

Results and discussion: docs/cp_accuracy.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cp_net
import matplotlib
import numpy as np
import threadpoolctl
from sklearn.datasets import load_digits

import symcurv as sc

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = (1, 10, 100)
NOISES = ("rademacher", "gaussian")
ESTIMATORS = ("S", "TU", "HI", "HI per case")
T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def digits(n_cases: int, seed: int = 0):
    """(estimation batch of n_cases, held-out batch): 8×8 digits upsampled to 16×16."""
    d = load_digits()
    images = np.kron(d.images, np.ones((1, 2, 2)))  # (1797, 16, 16), nearest neighbour
    X = images.reshape(len(images), 256) / 16.0 * 2.0 - 1.0
    T = np.eye(10)[d.target]
    order = np.random.default_rng(seed).permutation(len(X))
    first, rest = order[:n_cases], order[n_cases:]
    return {"x": X[first], "t": T[first]}, {"x": X[rest], "t": T[rest]}


def accuracy(prog, theta, batch) -> float:
    """Classification accuracy from a plain numpy forward pass (the net has no predict)."""
    p, h = prog.unflatten(theta), batch["x"]
    for i in range(4):
        a = h @ p[f"W{i}"].T + p[f"b{i}"]
        h = a if i == 3 else np.tanh(a)
    return float((h.argmax(1) == batch["t"].argmax(1)).mean())


def train(prog, theta, batch, held_out, steps: int, lr: float = 0.1, momentum: float = 0.9):
    """Full-batch gradient descent with classical momentum."""
    velocity = np.zeros_like(theta)
    theta = theta.copy()
    for k in range(steps):
        loss, g = prog.grad(theta, batch)
        velocity = momentum * velocity - lr * g
        theta += velocity
        if (k + 1) % (steps // 4) == 0:
            log(f"  step {k + 1}/{steps}: loss {loss:.4f}")
    info = {
        "steps": steps,
        "lr": lr,
        "momentum": momentum,
        "loss": prog.grad(theta, batch)[0],
        "train_acc": accuracy(prog, theta, batch),
        "test_acc": accuracy(prog, theta, held_out),
    }
    return theta, info


def draw(rng, noise: str, shape) -> np.ndarray:
    if noise == "gaussian":
        return rng.standard_normal(shape)
    return rng.integers(0, 2, size=shape) * 2.0 - 1.0


def hi_per_case(prog, theta, batch, noise: str, n_cases: int, rng) -> dict[int, np.ndarray]:
    """Σ_b (H_b w_b) ⊙ w_b / n_cases over the first n_cases cases, one probe w_b per case per
    sample; returns the estimate after each count in SAMPLES (nested running means)."""
    n = prog.n_params
    out = {s: np.zeros(n) for s in SAMPLES}
    for b in range(n_cases):
        state = prog.linearize(theta, {k: v[b : b + 1] for k, v in batch.items()})
        acc = np.zeros(n)
        for k, w in enumerate(draw(rng, noise, (max(SAMPLES), n)), 1):
            acc += state.hvp(w) * w
            if k in out:
                out[k] += acc / k
    return {s: d / n_cases for s, d in out.items()}


def rel_err(d_hat: np.ndarray, d: np.ndarray) -> float:
    return float(np.linalg.norm(d_hat - d) / np.linalg.norm(d))


def evaluate(prog, theta, batch, seeds: int, hi_seeds: int, hi_cases: int) -> dict:
    """Relative errors {(estimator, noise): {samples: mean over seeds}}, BL's error and the
    time per sample (ms) of each estimator."""
    t = time.perf_counter()
    exact = prog.diag_hessian(theta, batch, max_params=prog.n_params)
    log(f"  exact diagonal: {prog.n_params} hvp calls in {time.perf_counter() - t:.1f}s")
    state = prog.linearize(theta, batch)
    errors, ms = {}, {}
    for est in ESTIMATORS:
        for noise in NOISES:
            errs = {s: [] for s in SAMPLES}
            t = time.perf_counter()
            for rep in range(hi_seeds if est == "HI per case" else seeds):
                if est == "HI per case":
                    rng = np.random.default_rng([rep, NOISES.index(noise)])
                    for s, d in hi_per_case(prog, theta, batch, noise, hi_cases, rng).items():
                        errs[s].append(rel_err(d, exact))
                    continue
                for s in SAMPLES:
                    d = state.cp_diag(est, noise, s, seed=[rep, s, NOISES.index(noise)])
                    errs[s].append(rel_err(d, exact))
            draws = hi_seeds * max(SAMPLES) if est == "HI per case" else seeds * sum(SAMPLES)
            ms[est, noise] = (time.perf_counter() - t) / draws * 1e3
            errors[est, noise] = {s: float(np.mean(e)) for s, e in errs.items()}
            log(
                f"  {est:>11} {noise:<10}: "
                + ", ".join(f"{s}: {e:.3g}" for s, e in errors[est, noise].items())
            )
    bl = rel_err(state.becker_lecun_diag(), exact)
    log(f"  Becker-LeCun: {bl:.3g}")
    return {"errors": errors, "ms": ms, "bl": bl, "exact_norm": float(np.linalg.norm(exact))}


def decades(e: dict[int, float]) -> float:
    """Orders of magnitude of error lost per order of magnitude of samples (1 -> 100)."""
    return float(np.log10(e[SAMPLES[0]] / e[SAMPLES[-1]]) / np.log10(SAMPLES[-1] / SAMPLES[0]))


def table(results: dict) -> str:
    counts = " | ".join(f"{s} sample{'s' * (s > 1)}" for s in SAMPLES)
    lines = [
        f"| setting | estimator | noise | {counts} | decades / decade | ms / sample |",
        "|---" * (len(SAMPLES) + 5) + "|",
    ]
    for setting, r in results.items():
        for (est, noise), e in r["errors"].items():
            cells = " | ".join(f"{e[s]:.3g}" for s in SAMPLES)
            lines.append(
                f"| {setting} | {est} | {noise} | {cells} | {decades(e):.2f} | "
                f"{r['ms'][est, noise]:.2f} |"
            )
        bl = " | ".join(f"{r['bl']:.3g}" for _ in SAMPLES)
        lines.append(f"| {setting} | Becker-LeCun | — | {bl} | 0 | — |")
    return "\n".join(lines)


def plot(results: dict, path: Path, n_cases: int) -> None:
    colours = {"S": "C0", "TU": "C1", "HI": "C2", "HI per case": "C3"}
    styles = {"rademacher": "-o", "gaussian": "--s"}
    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 5.2), sharey=True)
    for ax, (setting, r) in zip(np.atleast_1d(axes), results.items()):
        for (est, noise), e in r["errors"].items():
            ax.loglog(
                SAMPLES,
                [e[s] for s in SAMPLES],
                styles[noise],
                color=colours[est],
                label=f"{est}, {noise}",
            )
        ax.axhline(r["bl"], color="k", ls=":", label="Becker-LeCun")
        ax.set_title(setting)
        ax.set_xlabel("samples per case")
        ax.grid(True, which="both", alpha=0.3)
    axes = np.atleast_1d(axes)
    axes[0].set_ylabel(r"relative error $\|\hat d - d\|\,/\,\|d\|$")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=5, fontsize=8, frameon=False)
    fig.suptitle(f"CP on the 256-20-20-20-10 tanh net, {n_cases} digit cases (CP paper §8.1)")
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--cases", type=int, default=1000, help="digit cases in the batch (default 1000)"
    )
    ap.add_argument("--seeds", type=int, default=3, help="noise seeds averaged per entry")
    ap.add_argument("--hi-seeds", type=int, default=1, help="seeds for 'HI per case'")
    ap.add_argument(
        "--hi-cases",
        type=int,
        default=None,
        help="cases used by 'HI per case' (default: all); it needs cases × 100 one-case hvps",
    )
    ap.add_argument(
        "--train-steps",
        type=int,
        default=100,
        help="full-batch momentum steps that make the 'trained' setting (default 100)",
    )
    ap.add_argument(
        "--blas-threads",
        type=int,
        default=1,
        help="BLAS threads (the GEMMs here are small; extra threads only help on idle cores)",
    )
    ap.add_argument(
        "--build-dir",
        default=str(ROOT / "build" / "cp_accuracy"),
        help="the Numba build (kept: reruns skip compilation; default build/cp_accuracy)",
    )
    ap.add_argument(
        "--out",
        default=None,
        help="the plot (default build/cp_accuracy/cp_accuracy.png, or with --update-docs "
        "docs/img/cp_accuracy.png)",
    )
    ap.add_argument(
        "--update-docs",
        action="store_true",
        help="write the plot to docs/img/cp_accuracy.png (tracked, shown by docs/cp_accuracy.md)",
    )
    return ap


def out_path(args: argparse.Namespace) -> Path:
    """--out, else the build directory, else (--update-docs) the tracked docs figure."""
    if args.out is not None:
        return Path(args.out)
    folder = ROOT / "docs" / "img" if args.update_docs else Path(args.build_dir)
    return folder / "cp_accuracy.png"


def main(argv=None) -> None:
    args = parser().parse_args(argv)
    args.out = str(out_path(args))
    hi_cases = args.hi_cases or args.cases

    prog = sc.compile(
        cp_net.model(),
        programs=["grad", "cp_diag", "becker_lecun_diag"],
        build_dir=args.build_dir,
        progress=True,
    )
    # after compile, once scipy's BLAS (which the kernels call) is loaded: multithreaded
    # OpenBLAS on these small GEMMs was measured 4-5× slower on a busy 2-core machine
    threadpoolctl.threadpool_limits(args.blas_threads, user_api="blas")
    batch, held_out = digits(args.cases)
    log(f"{prog.n_params} parameters, {len(batch['x'])} cases ({len(held_out['x'])} held out)")

    theta0 = prog.init(seed=0)
    log(f"training {args.train_steps} full-batch momentum steps")
    trained, info = train(prog, theta0, batch, held_out, args.train_steps)
    log(
        f"trained: loss {info['loss']:.4f}, accuracy {info['train_acc']:.1%} on the "
        f"{len(batch['x'])} cases, {info['test_acc']:.1%} on the {len(held_out['x'])} held out"
    )
    results = {}
    for setting, theta in (("random weights", theta0), ("trained", trained)):
        log(f"{setting}: loss {prog.grad(theta, batch)[0]:.4f}")
        results[setting] = evaluate(prog, theta, batch, args.seeds, args.hi_seeds, hi_cases)

    print(
        f"\nRelative error ‖d̂ − d‖ / ‖d‖ against the exact diagonal, mean over {args.seeds} "
        f"seed(s) ('HI per case': {args.hi_seeds} seed(s), {hi_cases} cases, nested draws). "
        f"Trained net: {info['steps']} "
        f"full-batch steps (lr {info['lr']}, momentum {info['momentum']}), loss "
        f"{info['loss']:.3f}, train accuracy {info['train_acc']:.1%}, held-out "
        f"{info['test_acc']:.1%}.\n"
    )
    print(table(results))
    plot(results, Path(args.out), len(batch["x"]))
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
