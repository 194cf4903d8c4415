"""The Fields of Experts trained by regularized score matching (Kingma & LeCun 2010, §4.2).

The FoE of ``foe.py`` (M = 24 unit-norm filters of 5 × 5, α_i = e^{β_i}, Student-t g with
c = e^{1.5}) over ``--crop`` × ``--crop`` crops (one crop = one case) of the training
photographs of ``foe_denoise.py``, whitened by its 5 × 5 Laplacian and scaled to unit
standard deviation (the scale s is part of the model: a raw image x is scored as
E(s · L ⋆ x)). Objective: J_λ = mean_b Σ_i ½(∂E/∂x_i)² − d_i + λ d_i² with the Becker-LeCun
diagonal d_i, exact for the FoE's one nonlinear layer (tests/codegen/test_conv.py checks
it against the exact diagonal), minimised by Adam (``sc.optim.fit``). J_λ is affine in λ:
two compiled programs (λ = 0 and λ = 1) serve every λ of the grid.

λ is chosen on held-out data from the TRAINING photographs (never the test images): the
PSNR of MAP denoising (``sc.denoise``, σ = 15/256) of held-out raw crops with the prior
E(s · L ⋆ x) (``foe.raw_image_theta``: the filters composed with the whitening). The held-out
unregularized objective J_0 is reported beside it.

    python examples/foe_train.py --quick     # 2 λ values, 80 Adam steps each (< 2 min warm)
    python examples/foe_train.py             # 5 λ values incl. 0, 600 steps each

θ goes to build/foe_train/foe_<tag>.npz (tag ``lam<λ>``; ``best`` is the chosen λ > 0 and
``lam0`` the unregularized model), which ``foe_denoise.py --theta NAME=FILE`` reads.
Filters and a denoised example are drawn to build/foe_train/ (docs/img/ with --update-docs).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import matplotlib
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import foe  # noqa: E402
import foe_denoise as fd  # noqa: E402

import symcurv as sc  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build" / "foe_train"
GRID = (0.0, 1e-4, 1e-3, 1e-2, 1e-1)
QUICK = {"grid": (0.0, 1e-2), "iterations": 80, "train": 2000, "held": 4, "held_size": 24}
FULL = {"grid": GRID, "iterations": 600, "train": 10000, "held": 8, "held_size": 40}
SELECT_SIGMA = 15 / 256
T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


class Mixed:
    """J_λ = (1 − λ) J_0 + λ J_1 from the compiled J_0 and J_1 (the interface Adam and fit
    use): the curvature penalty is the only λ-dependent term."""

    def __init__(self, p0, p1, lam: float) -> None:
        self.p0, self.p1, self.lam = p0, p1, lam
        self.n_params, self.programs, self.name = p0.n_params, ("grad",), p0.name
        self.init, self.unflatten, self.flatten = p0.init, p0.unflatten, p0.flatten
        self.dtype = p0.dtype  # what fit reads a checkpoint's θ as

    def grad(self, theta, batch):
        (f0, g0), (f1, g1) = self.p0.grad(theta, batch), self.p1.grad(theta, batch)
        return (1 - self.lam) * f0 + self.lam * f1, (1 - self.lam) * g0 + self.lam * g1

    def loss(self, theta, batch):
        return self.grad(theta, batch)[0]


def data(crop: int, n_train: int, n_held: int, seed: int):
    """(train patches, held-out patches, scale s): whitened crops of the training images
    times s = 1 / (their standard deviation)."""
    P = fd.patches(crop, n_train + n_held, seed=seed)
    P = P[np.random.default_rng(seed).permutation(len(P))]
    s = 1.0 / P[:n_train].std()
    return s * P[:n_train], s * P[n_train:], s


def held_out_crops(n: int, size: int, seed: int) -> np.ndarray:
    """``n`` raw ``size``×``size`` crops of the training photographs, away from the seed
    the patches use (for choosing λ; the test photographs are never seen)."""
    rng = np.random.default_rng(10_000 + seed)
    out = []
    for i in range(n):
        img = fd.grey(fd.TRAIN[i % len(fd.TRAIN)])
        r, c = (rng.integers(0, d - size + 1) for d in img.shape)
        out.append(img[r : r + size, c : c + size])
    return np.stack(out)


def raw_prior(size: int, k: int = 5):
    """The compiled FoE over raw ``size``×``size`` images with free (k + 4)² filters."""
    m = foe.model(image=(size, size), size=k + 4, name=f"foe_raw{size}", normalize=False)
    return sc.compile(m, ("loss", "input_grad"), build_dir=BUILD / f"raw{size}", progress=False)


def raw_theta(prog, theta, scale: float) -> dict:
    """θ of the raw-image prior E(s · L ⋆ x): composed filters times s."""
    p = foe.raw_image_theta(prog, theta, fd.LAPLACIAN_5x5)
    return {"F": scale * p["F"], "beta": p["beta"]}


def denoise_psnr(raw, params: dict, clean: np.ndarray, sigma: float, seed: int) -> float:
    """Mean PSNR of MAP-denoising ``clean`` (n, h, w) + N(0, σ²) with the raw-image prior."""
    noisy = clean + sigma * np.random.default_rng(seed).normal(size=clean.shape)
    flat = noisy.reshape(len(noisy), -1)
    x = sc.denoise(raw, flat, sigma, theta=raw.flatten(params), progress=False)
    return float(np.mean([sc.psnr(a, b) for a, b in zip(x.reshape(clean.shape), clean)]))


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="2 λ values × 80 steps: the smoke run")
    ap.add_argument(
        "--grid", type=float, nargs="+", default=None, help="the λ values to train (0 included)"
    )
    ap.add_argument("--crop", type=int, default=15, help="side of the training crops (cases)")
    ap.add_argument("--iterations", type=int, default=None, help="Adam steps per λ")
    ap.add_argument("--batch-size", type=int, default=100, help="crops per Adam minibatch")
    ap.add_argument("--lr", type=float, default=2e-2, help="Adam's learning rate")
    ap.add_argument("--seed", type=int, default=0, help="seeds crops, θ and the sampler")
    ap.add_argument(
        "--checkpoint-every",
        type=int,
        default=100,
        help="Adam steps between checkpoints (build/foe_train/fit_<settings>_lam<λ>.npz); a "
        "rerun with the same settings resumes from them (and --iterations may extend them)",
    )
    ap.add_argument(
        "--update-docs", action="store_true", help="draw the figures into docs/img/, not build/"
    )
    return ap


def main(argv=None) -> list[dict]:
    args = parser().parse_args(argv)
    cfg = dict(QUICK if args.quick else FULL)
    if args.iterations:
        cfg["iterations"] = args.iterations
    if args.grid:
        cfg["grid"] = tuple(args.grid)
    train_x, held_x, scale = data(args.crop, cfg["train"], 500, args.seed)
    log(f"{len(train_x)} training crops of {args.crop}², whitening scale s = {scale:.4g}")
    energy = foe.model(image=(args.crop, args.crop))
    progs = [
        sc.compile(
            sc.score_matching(energy, reg=r, diag="becker_lecun"),
            ("loss", "grad"),
            build_dir=BUILD / f"sm{args.crop}_reg{r:g}",
            progress=False,
        )
        for r in (0.0, 1.0)
    ]
    clean = held_out_crops(cfg["held"], cfg["held_size"], args.seed)
    raw = raw_prior(cfg["held_size"])
    log("compiled")
    rows, thetas = [], {}
    BUILD.mkdir(parents=True, exist_ok=True)
    run = f"c{args.crop}_n{cfg['train']}_b{args.batch_size}_lr{args.lr:g}_s{args.seed}"
    for lam in cfg["grid"]:
        prog = Mixed(*progs, lam)
        t = time.perf_counter()
        res = sc.optim.fit(
            prog,
            sc.optim.Adam(prog, learning_rate=args.lr),
            {"x": train_x},
            iterations=cfg["iterations"],
            batch_size=args.batch_size,
            seed=args.seed,
            progress=False,
            checkpoint=BUILD / f"fit_{run}_lam{lam:g}.npz",
            checkpoint_every=args.checkpoint_every,
            resume=True,
        )
        seconds = res.history[-1]["time"] if res.history else time.perf_counter() - t
        thetas[lam] = res.theta
        row = {
            "lambda": lam,
            "held_J0": float(progs[0].loss(res.theta, {"x": held_x})),
            "held_psnr": denoise_psnr(
                raw, raw_theta(prog, res.theta, scale), clean, SELECT_SIGMA, 1
            ),
            "train_s": seconds,
        }
        rows.append(row)
        log(
            f"λ = {lam:g}: held-out J_0 {row['held_J0']:.4g}, denoising PSNR "
            f"{row['held_psnr']:.2f} dB ({seconds:.0f} s of Adam)"
        )
    best = max((r for r in rows if r["lambda"] > 0), key=lambda r: r["held_psnr"])["lambda"]
    BUILD.mkdir(parents=True, exist_ok=True)
    for tag, lam in (("best", best), ("lam0", 0.0)):
        if lam not in thetas:  # a grid without λ = 0 (e.g. extending an earlier grid)
            continue
        p, rp = progs[0].unflatten(thetas[lam]), raw_theta(progs[0], thetas[lam], scale)
        np.savez(
            BUILD / f"foe_{tag}.npz",
            F=p["F"],
            beta=p["beta"],
            scale=scale,
            lam=lam,
            F_raw=rp["F"],
            beta_raw=rp["beta"],
        )
    (BUILD / "lambda.json").write_text(json.dumps({"rows": rows, "best": best}, indent=1))
    print("| λ | held-out J_0 | held-out denoising PSNR (σ = 15/256) | Adam s |")
    print("| --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['lambda']:g} | {r['held_J0']:.4g} | {r['held_psnr']:.2f} | {r['train_s']:.0f} |"
        )
    print(f"chosen λ = {best:g}; θ in {BUILD}/foe_best.npz and foe_lam0.npz")
    out = ROOT / "docs" / "img" if args.update_docs else BUILD
    draw(
        progs[0],
        thetas[best],
        raw,
        raw_theta(progs[0], thetas[best], scale),
        out,
        best,
        cfg["held_size"],
    )
    log(f"figures in {out}")
    return rows


def draw(prog, theta, raw, params, out: Path, lam: float, h: int) -> None:
    """The learned unit filters (sorted by α) and a denoised test crop (camera, σ = 15/256)."""
    p = prog.unflatten(theta)
    F, order = foe.unit_filters(p["F"]), np.argsort(-p["beta"])
    fig, axes = plt.subplots(3, 8, figsize=(8, 3.4))
    for ax, k in zip(axes.ravel(), order):
        ax.imshow(F[k].reshape(5, 5), cmap="gray")
        ax.set_title(f"α={np.exp(p['beta'][k]):.2g}", fontsize=6)
        ax.axis("off")
    fig.suptitle(f"FoE filters learned by score matching (λ = {lam:g}), whitened domain")
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "foe_filters.png", dpi=100)
    plt.close(fig)
    clean = fd.centre_crop(fd.grey("camera"), h)
    noisy = clean + SELECT_SIGMA * np.random.default_rng(0).normal(size=clean.shape)
    x = sc.denoise(raw, noisy, SELECT_SIGMA, theta=raw.flatten(params), progress=False)
    fig, axes = plt.subplots(1, 3, figsize=(9, 3.3))
    for ax, img, title in zip(axes, (clean, noisy, x), ("clean", "noisy", "FoE MAP")):
        ax.imshow(np.clip(img, 0, 1), cmap="gray", vmin=0, vmax=1)
        ax.set_title(title if title == "clean" else f"{title}: {sc.psnr(img, clean):.2f} dB")
        ax.axis("off")
    fig.savefig(out / "foe_denoised.png", dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
