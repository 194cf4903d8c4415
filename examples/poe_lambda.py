"""The λ experiment of Kingma & LeCun (2010, §4.1, Fig. 2b-c) on scikit-learn's 8×8 digits.

The square product of Student-t experts of ``poe_score_matching.py`` (M = D = 64) is
fitted by regularized score matching for every λ on a log grid including 0, and scored by

- the exact held-out log-likelihood per dimension (log|det W̃| and the Student-t
  normaliser, see poe_score_matching.log_likelihood), and
- the test accuracy of a logistic-regression classifier trained on the features
  g(w̃_kᵀ x) of 100 labelled digits per class (002's protocol; scikit-learn's
  LogisticRegression, C = 1).

J_λ = J_0 + λ Σ_i d_i² is affine in λ, so two compiled programs serve every λ: the
gradient for λ is (1 − λ) ∇J_0 + λ ∇J_1 (one build with λ = 0, one with λ = 1; a
few milliseconds per step each). Becker-LeCun diagonal (exact for this energy), Adam.

    python examples/poe_lambda.py                  # 7 λ values × 3000 steps (~ minutes)
    python examples/poe_lambda.py --quick          # 3 λ values × 300 steps
    python examples/poe_lambda.py --update-docs    # the plot docs/score_matching.md shows

The plot goes to build/poe_lambda/poe_lambda.png (docs/img/ only with --update-docs).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib
import numpy as np
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

sys.path.insert(0, str(Path(__file__).resolve().parent))
import poe_score_matching as poe  # noqa: E402

import symcurv as sc  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
GRID = (0.0, 1e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)


class Mixed:
    """The program of J_λ = (1 − λ) J_0 + λ J_1 from the programs of J_0 and J_1 (the
    interface ``sc.optim.Adam`` and ``fit`` use)."""

    def __init__(self, p0, p1, lam: float) -> None:
        self.p0, self.p1, self.lam = p0, p1, lam
        self.n_params, self.programs, self.name = p0.n_params, ("grad",), p0.name
        self.init, self.unflatten = p0.init, p0.unflatten

    def grad(self, theta, batch):
        (f0, g0), (f1, g1) = self.p0.grad(theta, batch), self.p1.grad(theta, batch)
        lam = self.lam
        return (1 - lam) * f0 + lam * f1, (1 - lam) * g0 + lam * g1

    def loss(self, theta, batch):
        return self.grad(theta, batch)[0]


def features(prog, theta, X) -> np.ndarray:
    """g(w̃_kᵀ x) per case: the experts' activations."""
    p = prog.unflatten(theta)
    Wn = p["W"] / np.linalg.norm(p["W"], axis=1, keepdims=True)
    return np.log1p((poe.C * (X @ Wn.T)) ** 2 / 2)


def labelled_split(seed: int, per_class: int = 100):
    """(train X, train y, test X, test y) on the example's standardisation: 100 labelled
    digits per class from the training images, every test image."""
    rng = np.random.default_rng(seed)
    data = load_digits()
    X = (data.data + rng.uniform(size=(1797, 64))) / 17.0
    order = rng.permutation(len(X))
    test, train = order[:500], order[500:]
    mean, std = X[train].mean(axis=0), X[train].std()
    Xs = (X - mean) / std
    pick = np.concatenate([train[data.target[train] == c][:per_class] for c in range(10)])
    return Xs[pick], data.target[pick], Xs[test], data.target[test]


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--iterations", type=int, default=3000, help="Adam steps per λ value")
    ap.add_argument("--lr", type=float, default=1e-2, help="Adam's learning rate")
    ap.add_argument("--seed", type=int, default=0, help="seeds the data split, θ and the sampler")
    ap.add_argument("--quick", action="store_true", help="3 λ values × 300 steps: a smoke run")
    ap.add_argument(
        "--update-docs", action="store_true", help="write the plot to docs/img/ instead of build/"
    )
    return ap


def main(argv=None) -> list[dict]:
    args = parser().parse_args(argv)
    grid = (0.0, 1e-3, 1e-1) if args.quick else GRID
    iterations = 300 if args.quick else args.iterations
    build = ROOT / "build" / "poe_lambda"
    energy = poe.poe_energy()
    progs = [
        sc.compile(
            sc.score_matching(energy, reg=r, diag="becker_lecun"),
            ("grad",),
            build_dir=build / f"sm_reg{r:g}",
            progress=False,
        )
        for r in (0.0, 1.0)
    ]
    train_x, test_x = poe.digits(args.seed)
    lx, ly, tx, ty = labelled_split(args.seed)
    rows = []
    for lam in grid:
        prog = Mixed(*progs, lam)
        opt = sc.optim.Adam(prog, learning_rate=args.lr)
        res = sc.optim.fit(
            prog, opt, {"x": train_x}, iterations=iterations, seed=args.seed, progress=False
        )
        clf = LogisticRegression(C=1.0, max_iter=2000).fit(features(prog, res.theta, lx), ly)
        row = {
            "lambda": lam,
            "train_ll": poe.log_likelihood(prog, res.theta, train_x),
            "test_ll": poe.log_likelihood(prog, res.theta, test_x),
            "accuracy": float(clf.score(features(prog, res.theta, tx), ty)),
            "J": res.history[-1]["objective"],
        }
        rows.append(row)
        print(
            f"λ = {lam:g}: train ll {row['train_ll']:.4f}, test ll {row['test_ll']:.4f} "
            f"nats/dim, accuracy {row['accuracy']:.3f}, final minibatch J {row['J']:.4g}",
            flush=True,
        )
    out = ROOT / "docs" / "img" / "poe_lambda.png" if args.update_docs else build / "poe_lambda.png"
    plot(rows, out)
    print(f"plot: {out}")
    return rows


def plot(rows: list[dict], path: Path) -> None:
    lam = np.array([r["lambda"] for r in rows])
    floor = lam[lam > 0].min() / 10  # λ = 0 drawn a decade left of the smallest λ > 0
    xs = np.where(lam > 0, lam, floor)
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    for key, label in (("train_ll", "train"), ("test_ll", "test")):
        a.semilogx(xs, [r[key] for r in rows], "o-", label=label)
    a.set_xlabel(f"λ (λ = 0 drawn at {floor:g})")
    a.set_ylabel("log-likelihood (nats / dim)")
    a.legend()
    b.semilogx(xs, [1 - r["accuracy"] for r in rows], "o-")
    b.set_xlabel("λ")
    b.set_ylabel("test error, logistic regression on g(w̃ᵀx)")
    fig.suptitle("Square PoE on 8×8 digits, regularized score matching")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    main()
