"""A covariance RBM trained by score matching with the exact diagonal and with CP (000 §8.2).

Martens, Sutskever & Swersky (2012, §8.2) train a cRBM — "a two-layer network where the
first layer uses the squared activation function followed by a second layer that uses the
softplus" — by score matching on 16 × 16 natural-image patches, once with the exact
∂²E/∂x_i² and once with the CP estimate (S), and show the noise costs nothing in accuracy.
The energy used here is the cRBM's free energy (Ranzato, Krizhevsky & Hinton 2010, the
covariance part of Ranzato & Hinton's mcRBM, 2010; score matching for it: Swersky et al.
2011) with a unit Gaussian term that makes it normalisable:

    E(x) = ½ xᵀx − Σ_k softplus(b_k − ½ Σ_f P_kf (c_fᵀ x)²),   P_kf = exp(Q_kf) > 0,

C (F × D) the factor filters c_f, Q (K × F) the pooling (positive through exp), b (K) the
hidden biases. Data: ``--patch``² crops of the training photographs of foe_denoise.py,
whitened by its 5 × 5 Laplacian, scaled to unit standard deviation. Both runs start from
the same θ, see the same minibatches and use Adam (the paper: SGD, 256 factors and hidden
units, the first layer trained alone first); "S" draws new noise every step. After every
epoch the EXACT objective J = mean Σ_i ½(∂E/∂x_i)² − ∂²E/∂x_i² is evaluated on a fixed
held-out set (and on as many fixed training patches); the curves are drawn against epochs
and against CPU seconds of optimizer steps (the wall seconds are printed beside them).

    python examples/crbm_score_matching.py --quick   # 8×8 patches, F = K = 16
    python examples/crbm_score_matching.py           # 16×16 patches, F = K = 32, 11000 of them

The exact diagonal's program runs over B·D expanded cases (docs/score_matching.md): its
build no longer grows with D (it unrolled D sweeps before: 17 minutes at D = 64 on the
loaded 2-core machine; now 82 s at D = 64 and 69 s at D = 256, cold, "loss" and "grad",
load average ~14); each exact step costs about D times a CP step's sweeps.

Figures: build/crbm/ (docs/img/ with --update-docs). Discussion: docs/denoising.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import matplotlib
import numpy as np
from scipy.special import expit

sys.path.insert(0, str(Path(__file__).resolve().parent))
import foe_denoise as fd  # noqa: E402

import symcurv as sc  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
QUICK = {"patch": 8, "factors": 16, "hidden": 16, "train": 2000, "epochs": 30}
FULL = {"patch": 16, "factors": 32, "hidden": 32, "train": 11000, "epochs": 30}  # 000's 11000
T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def crbm_energy(D: int, factors: int, hidden: int, name: str = "crbm") -> sc.Model:
    """The cRBM free energy of the module docstring as an energy model."""
    m = sc.Model(name)
    x = m.input("x", D)
    C = m.param("C", (factors, D), init=sc.init.normal(0.1))
    Q = m.param("Q", (hidden, factors), init=sc.init.normal(0.1))
    b = m.param("b", hidden, init=sc.init.zeros())
    a = b - 0.5 * (sc.exp(Q) @ sc.square(C @ x))  # hidden inputs: squared factors pooled
    m.energy(0.5 * sc.dot(x, x) - sc.sum(sc.softplus(a)))
    return m


def exact_objective(params: dict, X: np.ndarray, reg: float = 0.0) -> np.ndarray:
    """Per-case J_b = Σ_i ½ g_i² − d_i + λ d_i² in closed form (an oracle independent of the
    compiler): with u = Cx, a = b − ½ P u², s = σ(a), r = Pᵀ s,
    g = x + Cᵀ(r ⊙ u) and d_i = 1 + Σ_f r_f C_fi² − Σ_k s_k(1 − s_k) (Σ_f P_kf u_f C_fi)²."""
    C, P, b = params["C"], np.exp(params["Q"]), params["b"]
    U = X @ C.T  # (B, F)
    S = expit(b - 0.5 * (U**2) @ P.T)  # (B, K)
    R = S @ P  # (B, F)
    G = X + (R * U) @ C
    V = (P[None] * U[:, None, :]) @ C  # Σ_f P_kf u_f C_fi: (B, K, D), one batched GEMM
    d = 1.0 + R @ (C**2) - np.einsum("bk,bki->bi", S * (1 - S), V**2)
    return (0.5 * G**2 - d + reg * d**2).sum(axis=1)


def data(patch: int, n_train: int, n_held: int, seed: int):
    P = fd.patches(patch, n_train + n_held, seed=seed)
    P = P[np.random.default_rng(seed).permutation(len(P))]
    P = P / P[:n_train].std()
    return P[:n_train], P[n_train:]


def train(diag, energy, X, held, epochs, batch_size, lr, seed, build, reg=0.0):
    """Adam on J with ``diag``; rows (epoch, wall and CPU seconds of optimizer steps, exact
    held-out J). CPU seconds (``time.process_time``, every thread of this process) stand
    beside the wall clock because the machine may be shared: the evaluations of J between
    epochs are left out of both."""
    prog = sc.compile(
        sc.score_matching(energy, reg=reg, diag=diag),
        ("loss", "grad"),
        build_dir=build / f"sm_{diag}",
        progress=False,
    )
    log(f"compiled diag={diag}")
    per_epoch = len(X) // batch_size
    theta0 = prog.init(seed)
    fixed = X[: len(held)]  # training patches the exact J is also followed on

    def objectives(theta) -> dict:
        p = prog.unflatten(theta)
        J, J_train = (float(exact_objective(p, S).mean()) for S in (held, fixed))
        return {"J": J, "J_train": J_train}

    rows = [{"epoch": 0, "seconds": 0.0, "cpu_seconds": 0.0, **objectives(theta0)}]
    cpu = {"steps": 0.0, "mark": time.process_time()}

    def record(it, theta, row):  # fit counts iterations from 1; row["time"]: wall of steps
        cpu["steps"] += time.process_time() - cpu["mark"]
        if it % per_epoch == 0:
            epoch = {"epoch": it // per_epoch, "seconds": row["time"], **objectives(theta)}
            rows.append({**epoch, "cpu_seconds": cpu["steps"]})
            log(
                f"diag={diag} epoch {epoch['epoch']}: held-out J {epoch['J']:.4g}, training "
                f"J {epoch['J_train']:.4g}, {row['time']:.1f} s of steps"
            )
        cpu["mark"] = time.process_time()

    res = sc.optim.fit(
        prog,
        sc.optim.Adam(prog, learning_rate=lr),
        {"x": X},
        iterations=epochs * per_epoch,
        theta=theta0,
        batch_size=batch_size,
        seed=seed,
        progress=False,
        callback=record,
    )
    log(f"diag={diag}: exact held-out J {rows[0]['J']:.4g} -> {rows[-1]['J']:.4g}")
    return prog, res.theta, rows


def draw(curves: dict, filters: dict, patch: int, out: Path, tag: str = "") -> None:
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    for diag, rows in curves.items():
        epochs = [r["epoch"] for r in rows]
        axes[0].plot(epochs, [r["J"] for r in rows], "o-", label=diag)
        axes[1].plot(epochs, [r["J_train"] for r in rows], "o-", label=diag)
        # log scale: epoch 0 (0 s) is left out
        axes[2].plot([r["cpu_seconds"] for r in rows[1:]], [r["J"] for r in rows[1:]], "o-")
    axes[0].set_xlabel("epoch")
    axes[1].set_xlabel("epoch")
    axes[2].set_xlabel("CPU seconds of optimizer steps")
    axes[2].set_xscale("log")
    for ax, what in zip(axes, ("held-out", "training patches", "held-out")):
        ax.set_ylabel(f"exact J, {what}")
    axes[0].legend()
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / f"crbm_objective{tag}.png", dpi=100)
    plt.close(fig)
    for diag, C in filters.items():
        n = int(np.ceil(np.sqrt(len(C))))
        fig, axes = plt.subplots(n, n, figsize=(n * 0.8, n * 0.8))
        for ax in axes.ravel():
            ax.axis("off")
        for ax, c in zip(axes.ravel(), C):
            ax.imshow(c.reshape(patch, patch), cmap="gray")
        fig.suptitle(f"cRBM factor filters c_f (diag {diag})", fontsize=8)
        fig.savefig(out / f"crbm_filters_{diag}{tag}.png", dpi=100)
        plt.close(fig)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="8×8 patches, 16 factors: smoke run")
    ap.add_argument("--epochs", type=int, default=None, help="passes over the training patches")
    ap.add_argument("--factors", type=int, default=None, help="F (default 32; --quick 16)")
    ap.add_argument("--hidden", type=int, default=None, help="K (default 32; --quick 16)")
    ap.add_argument(
        "--train", type=int, default=None, help="training patches (default 11000; --quick 2000)"
    )
    ap.add_argument("--batch-size", type=int, default=100, help="patches per Adam step")
    ap.add_argument("--lr", type=float, default=1e-2, help="Adam's learning rate")
    ap.add_argument(
        "--reg", type=float, default=0.0, help="λ of the trained objective (J is shown at 0)"
    )
    ap.add_argument("--seed", type=int, default=0, help="seeds the patches, θ and the sampler")
    ap.add_argument(
        "--update-docs", action="store_true", help="draw the figures into docs/img/, not build/"
    )
    return ap


def main(argv=None) -> dict:
    args = parser().parse_args(argv)
    default = QUICK if args.quick else FULL
    cfg = dict(default)
    epochs = args.epochs or cfg["epochs"]
    cfg["factors"] = args.factors or cfg["factors"]
    cfg["hidden"] = args.hidden or cfg["hidden"]
    cfg["train"] = args.train or cfg["train"]
    X, held = data(cfg["patch"], cfg["train"], 500, args.seed)
    D = cfg["patch"] ** 2
    energy = crbm_energy(D, cfg["factors"], cfg["hidden"], name=f"crbm{D}")
    build = ROOT / "build" / "crbm" / f"d{D}_f{cfg['factors']}_k{cfg['hidden']}"
    build = build.with_name(build.name + (f"_reg{args.reg:g}" if args.reg else ""))
    curves, filters = {}, {}
    for diag in ("exact", "S"):
        prog, theta, curves[diag] = train(
            diag, energy, X, held, epochs, args.batch_size, args.lr, args.seed, build, args.reg
        )
        filters[diag] = prog.unflatten(theta)["C"]
    shown = sorted({0, epochs // 4, epochs // 2, 3 * epochs // 4, epochs})
    head = " | ".join(f"epoch {e}" for e in shown)
    print(f"| diag | {head} | wall s of steps | CPU s of steps |")
    print("| --- |" + " --- |" * (len(shown) + 2))
    for diag, rows in curves.items():
        cells = " | ".join(f"{rows[e]['J']:.2f}" for e in shown)
        print(f"| {diag} | {cells} | {rows[-1]['seconds']:.1f} | {rows[-1]['cpu_seconds']:.1f} |")
    out = ROOT / "docs" / "img" if args.update_docs else ROOT / "build" / "crbm"
    # figures of a non-default size or rate do not replace the default ones
    tag = ""
    if (cfg["factors"], cfg["hidden"]) != (default["factors"], default["hidden"]):
        tag += f"_f{cfg['factors']}_k{cfg['hidden']}"
    if cfg["train"] != default["train"]:
        tag += f"_n{cfg['train']}"
    if args.reg:
        tag += f"_reg{args.reg:g}"
    if args.lr != parser().get_default("lr"):
        tag += f"_lr{args.lr:g}"
    draw(curves, filters, cfg["patch"], out, tag)
    (ROOT / "build" / "crbm").mkdir(parents=True, exist_ok=True)
    (ROOT / "build" / "crbm" / f"curves{tag}.json").write_text(json.dumps(curves, indent=1))
    log(f"figures in {out}")
    return curves


if __name__ == "__main__":
    main()
