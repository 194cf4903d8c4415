"""A product of Student-t experts fitted by regularized score matching (Kingma & LeCun 2010).

The energy of a square product of experts (M = D = 64) on scikit-learn's 8×8 digits,

    E(x) = Σ_k α_k g(w̃_kᵀ x),  α_k = e^{β_k},  g(z) = log(1 + (c z)²/2),  c = e^{1.5},

w̃_k the rows of W scaled to unit length (``sc.normalize_rows``), is fitted by minimising
J = mean_b Σ_i ½(∂E/∂x_i)² − ∂²E/∂x_i² + λ(∂²E/∂x_i²)² with Adam (``sc.optim.fit``); the
diagonal ∂²E/∂x_i² comes from ``--diag`` (becker_lecun is exact for this energy; S/TU
are unbiased CP estimates with a new noise draw every iteration; exact runs B·D expanded
cases, about D times a sweep's work). Because the model is square, its log-likelihood is exact:

    log p(x) = −E(x) + log|det W̃| − Σ_k log Z(α_k),
    Z(α) = ∫ (1 + (cz)²/2)^{−α} dz = (√2 / c) √π Γ(α − ½) / Γ(α)   (finite for α > ½;
    Z(1) = π√2 / c),

reported per dimension on held-out digits. Data: the 1797 digits (0-16 grey levels)
dequantised by uniform noise, scaled to [0, 1], centred by the training mean and scaled by
the training standard deviation; 1297 training and 500 test images.

    python examples/poe_score_matching.py                   # 2000 Adam steps, BL, λ = 1e-3
    python examples/poe_score_matching.py --diag TU --reg 0 # CP, no regularizer
    python examples/poe_score_matching.py --quick           # the < 60 s smoke run

Filters are drawn to build/poe_score_matching/filters.png (docs/img/ with --update-docs).
Discussion: docs/score_matching.md.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import matplotlib
import numpy as np
import sympy
from scipy.special import gammaln
from sklearn.datasets import load_digits

import symcurv as sc

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
C = math.exp(1.5)
T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def poe_energy(D: int = 64, M: int = 64) -> sc.Model:
    """The product of Student-t experts as an energy model (see the module docstring)."""
    m = sc.Model("poe")
    x = m.input("x", D)
    W = m.param("W", (M, D), init=sc.init.normal(0.1))
    beta = m.param("beta", M, init=sc.init.zeros())
    student = sc.elementwise("student_t", lambda z: sympy.log((sympy.exp(1.5) * z) ** 2 / 2 + 1))
    m.energy(sc.dot(sc.exp(beta), student(sc.normalize_rows(W) @ x)))
    return m


def digits(seed: int = 0, n_test: int = 500):
    """(train, test) arrays of dequantised, standardised 8×8 digits (see the docstring)."""
    rng = np.random.default_rng(seed)
    X = (load_digits().data + rng.uniform(size=(1797, 64))) / 17.0
    order = rng.permutation(len(X))
    train, test = X[order[n_test:]], X[order[:n_test]]
    mean, std = train.mean(axis=0), train.std()
    return (train - mean) / std, (test - mean) / std


def log_z(alpha: np.ndarray) -> np.ndarray:
    """log Z(α) = log ∫ (1 + (cz)²/2)^{−α} dz = log((√2 / c) √π Γ(α − ½) / Γ(α)), α > ½
    (substitute u = cz/√2: ∫ (1 + u²)^{−α} du = √π Γ(α − ½) / Γ(α))."""
    alpha = np.asarray(alpha, dtype=float)
    return math.log(math.sqrt(2 * math.pi) / C) + gammaln(alpha - 0.5) - gammaln(alpha)


def log_likelihood(prog, theta, X) -> float:
    """Mean exact log p(x) per dimension (nats) of the square PoE; −inf when some α_k ≤ ½
    (that expert's density is not normalisable)."""
    p = prog.unflatten(theta)
    Wn = p["W"] / np.linalg.norm(p["W"], axis=1, keepdims=True)
    alpha = np.exp(p["beta"])
    if np.any(alpha <= 0.5):
        return -math.inf
    energy = (alpha * np.log1p((C * (X @ Wn.T)) ** 2 / 2)).sum(axis=1)
    logdet = np.linalg.slogdet(Wn)[1]
    return float((-energy + logdet - log_z(alpha).sum()).mean() / X.shape[1])


def train(
    diag: str, reg: float, iterations: int, batch_size: int, lr: float, seed: int, build: Path
):
    """Compile the score-matching model and fit it; (prog, θ, history)."""
    sm = sc.score_matching(poe_energy(), reg=reg, diag=diag)
    log(f"compiling the score-matching model (diag={diag}, λ={reg})")
    prog = sc.compile(sm, ("loss", "grad"), build_dir=build / f"sm_{diag}", progress=False)
    opt = sc.optim.Adam(prog, learning_rate=lr)
    X, _ = digits(seed)
    res = sc.optim.fit(prog, opt, {"x": X}, iterations=iterations, batch_size=batch_size, seed=seed)
    return prog, res.theta, res.history


def draw_filters(prog, theta, path: Path) -> None:
    W = prog.unflatten(theta)["W"]
    order = np.argsort(-prog.unflatten(theta)["beta"])
    fig, axes = plt.subplots(8, 8, figsize=(6, 6))
    for ax, k in zip(axes.ravel(), order):
        ax.imshow(W[k].reshape(8, 8), cmap="gray")
        ax.axis("off")
    fig.suptitle("PoE filters w_k (sorted by α_k)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--diag",
        default="becker_lecun",
        choices=["exact", "becker_lecun", "S", "TU"],
        help="how the score-matching objective gets ∂²E/∂x_i²",
    )
    ap.add_argument(
        "--reg", type=float, default=1e-3, help="λ of the curvature penalty λ Σ_i (∂²E/∂x_i²)²"
    )
    ap.add_argument(
        "--iterations", type=int, default=2000, help="Adam steps (each on one minibatch)"
    )
    ap.add_argument("--batch-size", type=int, default=100, help="cases per Adam minibatch")
    ap.add_argument("--lr", type=float, default=1e-2, help="Adam's learning rate")
    ap.add_argument(
        "--seed", type=int, default=0, help="seeds the data split, θ, the sampler and the CP noise"
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="200 steps: the smoke run (< 60 s with a warm Numba cache)",
    )
    ap.add_argument(
        "--update-docs",
        action="store_true",
        help="write the filter plot to docs/img/ instead of build/",
    )
    return ap


def main(argv=None) -> dict:
    args = parser().parse_args(argv)
    iterations = 200 if args.quick else args.iterations
    build = ROOT / "build" / "poe_score_matching"
    prog, theta, history = train(
        args.diag, args.reg, iterations, args.batch_size, args.lr, args.seed, build
    )
    train_x, test_x = digits(args.seed)
    theta0 = prog.init(args.seed)
    seed = {"seed": 0} if args.diag in ("S", "TU") else {}
    result = {
        "diag": args.diag,
        "reg": args.reg,
        "iterations": iterations,
        "J_start": prog.loss(theta0, {"x": test_x}, **seed),
        "J_end": prog.loss(theta, {"x": test_x}, **seed),
        "ll_start": log_likelihood(prog, theta0, test_x),
        "ll_end": log_likelihood(prog, theta, test_x),
        "train_time_s": history[-1]["time"] if history else 0.0,
    }
    print(
        f"diag={args.diag} λ={args.reg} steps={iterations}: test J {result['J_start']:.4g} -> "
        f"{result['J_end']:.4g}; test log-likelihood {result['ll_start']:.4f} -> "
        f"{result['ll_end']:.4f} nats/dim ({result['train_time_s']:.1f} s of steps)"
    )
    out = ROOT / "docs" / "img" / "poe_filters.png" if args.update_docs else build / "filters.png"
    draw_filters(prog, theta, out)
    log(f"filters drawn to {out}")
    return result


if __name__ == "__main__":
    main()
