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
held-out set; the curves are drawn against epochs and against seconds of optimizer steps.

    python examples/crbm_score_matching.py --quick   # 8×8 patches, F = K = 16
    python examples/crbm_score_matching.py           # 16×16 patches, F = K = 32

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
FULL = {"patch": 16, "factors": 32, "hidden": 32, "train": 2000, "epochs": 30}
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
    V = np.einsum("kf,bf,fi->bki", P, U, C)  # Σ_f P_kf u_f C_fi
    d = 1.0 + R @ (C**2) - np.einsum("bk,bki->bi", S * (1 - S), V**2)
    return (0.5 * G**2 - d + reg * d**2).sum(axis=1)


def data(patch: int, n_train: int, n_held: int, seed: int):
    P = fd.patches(patch, n_train + n_held, seed=seed)
    P = P[np.random.default_rng(seed).permutation(len(P))]
    P = P / P[:n_train].std()
    return P[:n_train], P[n_train:]


def train(diag, energy, X, held, epochs, batch_size, lr, seed, build):
    """Adam on J with ``diag``; rows (epoch, seconds of steps, exact held-out J)."""
    prog = sc.compile(
        sc.score_matching(energy, diag=diag),
        ("loss", "grad"),
        build_dir=build / f"sm_{diag}",
        progress=False,
    )
    log(f"compiled diag={diag}")
    per_epoch = len(X) // batch_size
    theta0 = prog.init(seed)
    rows = [
        {
            "epoch": 0,
            "seconds": 0.0,
            "J": float(exact_objective(prog.unflatten(theta0), held).mean()),
        }
    ]

    def record(it, theta, row):  # fit counts iterations from 1
        if it % per_epoch == 0:
            J = float(exact_objective(prog.unflatten(theta), held).mean())
            rows.append({"epoch": it // per_epoch, "seconds": row["time"], "J": J})

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


def draw(curves: dict, filters: dict, patch: int, out: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for diag, rows in curves.items():
        J = [r["J"] for r in rows]
        axes[0].plot([r["epoch"] for r in rows], J, "o-", label=diag)
        axes[1].plot([r["seconds"] for r in rows], J, "o-", label=diag)
    axes[0].set_xlabel("epoch")
    axes[1].set_xlabel("seconds of optimizer steps")
    for ax in axes:
        ax.set_ylabel("exact J, held-out")
        ax.legend()
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "crbm_objective.png", dpi=100)
    plt.close(fig)
    for diag, C in filters.items():
        n = int(np.ceil(np.sqrt(len(C))))
        fig, axes = plt.subplots(n, n, figsize=(n * 0.8, n * 0.8))
        for ax in axes.ravel():
            ax.axis("off")
        for ax, c in zip(axes.ravel(), C):
            ax.imshow(c.reshape(patch, patch), cmap="gray")
        fig.suptitle(f"cRBM factor filters c_f (diag {diag})", fontsize=8)
        fig.savefig(out / f"crbm_filters_{diag}.png", dpi=100)
        plt.close(fig)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="8×8 patches, 16 factors: smoke run")
    ap.add_argument("--epochs", type=int, default=None, help="passes over the training patches")
    ap.add_argument("--batch-size", type=int, default=100, help="patches per Adam step")
    ap.add_argument("--lr", type=float, default=1e-2, help="Adam's learning rate")
    ap.add_argument("--seed", type=int, default=0, help="seeds the patches, θ and the sampler")
    ap.add_argument(
        "--update-docs", action="store_true", help="draw the figures into docs/img/, not build/"
    )
    return ap


def main(argv=None) -> dict:
    args = parser().parse_args(argv)
    cfg = dict(QUICK if args.quick else FULL)
    epochs = args.epochs or cfg["epochs"]
    X, held = data(cfg["patch"], cfg["train"], 500, args.seed)
    D = cfg["patch"] ** 2
    energy = crbm_energy(D, cfg["factors"], cfg["hidden"], name=f"crbm{D}")
    build = ROOT / "build" / "crbm" / f"d{D}_f{cfg['factors']}_k{cfg['hidden']}"
    curves, filters = {}, {}
    for diag in ("exact", "S"):
        prog, theta, curves[diag] = train(
            diag, energy, X, held, epochs, args.batch_size, args.lr, args.seed, build
        )
        filters[diag] = prog.unflatten(theta)["C"]
    shown = sorted({0, epochs // 4, epochs // 2, 3 * epochs // 4, epochs})
    print("| diag | " + " | ".join(f"epoch {e}" for e in shown) + " | s of steps |")
    print("| --- |" + " --- |" * (len(shown) + 1))
    for diag, rows in curves.items():
        cells = " | ".join(f"{rows[e]['J']:.2f}" for e in shown)
        print(f"| {diag} | {cells} | {rows[-1]['seconds']:.2f} |")
    out = ROOT / "docs" / "img" if args.update_docs else ROOT / "build" / "crbm"
    draw(curves, filters, cfg["patch"], out)
    (ROOT / "build" / "crbm").mkdir(parents=True, exist_ok=True)
    (ROOT / "build" / "crbm" / "curves.json").write_text(json.dumps(curves, indent=1))
    log(f"figures in {out}")
    return curves


if __name__ == "__main__":
    main()
