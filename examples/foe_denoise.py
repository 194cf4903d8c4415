"""The data side of Kingma & LeCun's denoising experiment (002 §4.2, Table 1) on scikit-image's
bundled photographs, and the baseline denoisers a user would otherwise pick.

- Train on images the test never sees: the stereo motorcycle (left view), rocket, brick,
  gravel, grass, coins and the Hubble deep field; test on camera, astronaut, coffee,
  chelsea and moon. Everything is grey (ITU-R 601 luma, ``rgb2gray``) in [0, 1].
- Whitening (002: "learned on images whitened with a 5×5 Laplacian kernel"): the paper
  gives no coefficients; ``LAPLACIAN_5x5`` is the common 5×5 Laplacian-of-Gaussian stencil
  (zero sum, so flat regions map to 0), normalised to unit L2 norm.
- ``patches``: random crops of the whitened training images, one flat crop per row (the
  cases an FoE trained by score matching sees).
- ``baseline_table``: PSNR of ``denoise_tv_chambolle``, ``denoise_wavelet`` and
  ``denoise_nl_means`` (each parameter tuned per σ on a crop of a TRAINING image), BM3D when
  the optional ``bm3d`` package is installed, and FoE rows when trained models are given
  (``--theta NAME=FILE``, files written by ``foe_train.py``), at σ = 5/256, 15/256 and
  25/256 over several noise draws: mean ± sd over the draws, per test image.
- ``superres_table``: 002 Table 2's baselines — recovering each test crop from its 2×2
  block means by bicubic upscaling and by the paper's starting point (bilinear + low-pass),
  and by ``sc.super_resolve`` with a trained FoE when ``--theta`` is given.

    python examples/foe_denoise.py                 # 256×256 centre crops, 3 draws
    python examples/foe_denoise.py --whole         # the whole photographs
    python examples/foe_denoise.py --quick         # 64×64 crops, 2 draws (a minute)
    python examples/foe_denoise.py --quick \
        --theta "FoE, SM λ*=build/foe_train/foe_best.npz" \
        --theta "FoE, SM λ = 0=build/foe_train/foe_lam0.npz"      # add trained FoE rows

The FoE is trained by examples/foe_train.py; its rows denoise with the raw-image prior
E(s · L ⋆ x) (``foe.whitened_model``: the whitening, then the learned filters). Long runs
split: ``--only denoise``/``--only superres``, ``--no-baselines``, ``--save FILE``, and
``--combine FILE ...`` prints saved parts as one set of tables.
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("NUMBA_THREADING_LAYER", "workqueue")  # DESIGN.md §5: no OpenMP contention

import numpy as np  # noqa: E402
from scipy import ndimage  # noqa: E402
from skimage import color, data, restoration, util  # noqa: E402

import symcurv as sc  # noqa: E402

TRAIN = ("motorcycle", "rocket", "brick", "gravel", "grass", "coins", "hubble_deep_field")
TEST = ("camera", "astronaut", "coffee", "chelsea", "moon")
SIGMAS = (5 / 256, 15 / 256, 25 / 256)

LAPLACIAN_5x5 = np.array(
    [
        [0, 0, -1, 0, 0],
        [0, -1, -2, -1, 0],
        [-1, -2, 16, -2, -1],
        [0, -1, -2, -1, 0],
        [0, 0, -1, 0, 0],
    ],
    dtype=np.float64,
)
LAPLACIAN_5x5 /= np.linalg.norm(LAPLACIAN_5x5)


def grey(name: str) -> np.ndarray:
    """A bundled photograph as a grey float image in [0, 1] (``motorcycle``: the left view
    of ``stereo_motorcycle``)."""
    img = data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(data, name)()
    if img.ndim == 3:
        img = color.rgb2gray(img[..., :3])
    return util.img_as_float(img)


def whiten(img: np.ndarray) -> np.ndarray:
    """The image filtered by ``LAPLACIAN_5x5`` ("valid": no border guesses)."""
    return ndimage.correlate(img, LAPLACIAN_5x5)[2:-2, 2:-2]


def test_image(name: str, size: int | None, even: bool = False) -> np.ndarray:
    """A grey test photograph: its ``size``×``size`` centre crop, or (``size`` None) the
    whole image — with ``even``, less its last row/column where that is odd (2×2 blocks)."""
    img = grey(name)
    if size:
        return centre_crop(img, size)
    return img[: img.shape[0] // 2 * 2, : img.shape[1] // 2 * 2] if even else img


def centre_crop(img: np.ndarray, size: int) -> np.ndarray:
    if min(img.shape) < size:
        raise ValueError(f"a {img.shape} image is smaller than the {size}×{size} crop")
    r, c = (img.shape[0] - size) // 2, (img.shape[1] - size) // 2
    return img[r : r + size, c : c + size]


def patches(size: int, n: int, seed: int = 0, names=TRAIN) -> np.ndarray:
    """``n`` random ``size``×``size`` crops of the whitened training images (as many from
    each image, the remainder from the first ones), one flat crop per row: (n, size²)."""
    rng = np.random.default_rng(seed)
    imgs = [whiten(grey(name)) for name in names]
    counts = [n // len(imgs) + (i < n % len(imgs)) for i in range(len(imgs))]
    out = []
    for img, k in zip(imgs, counts):
        r = rng.integers(0, img.shape[0] - size + 1, size=k)
        c = rng.integers(0, img.shape[1] - size + 1, size=k)
        out += [img[i : i + size, j : j + size].ravel() for i, j in zip(r, c)]
    return np.stack(out)


# ---- baselines: each a function (noisy, sigma, parameter) -> denoised -----------------------
def tv(noisy, sigma, weight):
    return restoration.denoise_tv_chambolle(noisy, weight=weight)


def wavelet(noisy, sigma, scale):
    """BayesShrink soft thresholds at ``scale`` × the true σ."""
    return restoration.denoise_wavelet(noisy, sigma=scale * sigma, rescale_sigma=True)


def nl_means(noisy, sigma, h):
    """Patches of 5×5 searched within 6 pixels, filter strength ``h`` × σ."""
    return restoration.denoise_nl_means(
        noisy, h=h * sigma, sigma=sigma, patch_size=5, patch_distance=6, fast_mode=True
    )


BASELINES: dict[str, tuple[Callable, tuple[float, ...]]] = {
    "TV (Chambolle)": (tv, (0.003, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.12, 0.16)),
    "wavelet (BayesShrink)": (wavelet, (0.5, 0.75, 1.0, 1.5, 2.0)),
    "NL-means": (nl_means, (0.2, 0.3, 0.4, 0.6, 0.8, 1.0, 1.2)),
}


def bm3d_denoiser():
    """BM3D from the optional ``bm3d`` package (pip install bm3d), or None."""
    try:
        import bm3d  # noqa: PLC0415 - an optional extra
    except ImportError:
        return None
    return lambda noisy, sigma, _: bm3d.bm3d(noisy, sigma_psd=sigma)


def tune(fn: Callable, grid, sigma: float, clean: np.ndarray, seed: int = 0) -> float:
    """The grid value with the best PSNR on ``clean`` (a training image) at noise ``sigma``."""
    noisy = clean + sigma * np.random.default_rng(seed).normal(size=clean.shape)
    scores = [sc.psnr(fn(noisy, sigma, p), clean) for p in grid]
    return grid[int(np.argmax(scores))]


def baseline_table(
    size: int | None = 256,
    draws: int = 3,
    sigmas=SIGMAS,
    tests=TEST,
    tune_on: str = "rocket",
    foe: dict | None = None,
    progress: bool = True,
    baselines: bool = True,
    tune_size: int = 256,
    bm3d: bool = True,
) -> dict:
    """{(method, σ, image): (mean PSNR, sd over the draws)} on ``size``×``size`` centre crops
    (``size`` None: the whole photographs), noise drawn with seed d for draw d, the same for
    every method; ``results["params"]`` holds the tuned parameters (tuned on a centre crop
    of a training image, ``size`` or ``tune_size`` wide). ``foe``: {row label: a trained FoE
    as ``load_foe`` returns} adds rows of MAP denoising (``sc.denoise``) with that prior;
    ``baselines=False`` leaves out the scikit-image and BM3D rows, ``bm3d=False`` BM3D's."""
    methods, params = {}, {}
    if baselines:
        methods = {name: fn for name, (fn, _) in BASELINES.items()}
        train_crop = centre_crop(grey(tune_on), size or tune_size)
        for name, (fn, grid) in BASELINES.items():
            for s in sigmas:
                params[name, s] = tune(fn, grid, s, train_crop)
        denoiser = bm3d_denoiser() if bm3d else None
        if denoiser is not None:
            methods["BM3D"] = denoiser
    for label, trained in (foe or {}).items():
        methods[label] = FoEDenoiser(trained)
    results = {}
    for img_name in tests:
        clean = test_image(img_name, size)
        for s in sigmas:
            noisy = [
                clean + s * np.random.default_rng(d).normal(size=clean.shape) for d in range(draws)
            ]
            results["noisy", s, img_name] = _stats([sc.psnr(y, clean) for y in noisy])
            for name, fn in methods.items():
                p = params.get((name, s))
                t = time.perf_counter()
                scores = [sc.psnr(fn(y, s, p), clean) for y in noisy]
                results[name, s, img_name] = _stats(scores)
                if progress:
                    mean = results[name, s, img_name][0]
                    where = f"{img_name:10s} σ={s * 256:4.1f}/256 {name:24s}"
                    took = (time.perf_counter() - t) / draws
                    print(f"{where} {mean:.2f} dB ({took:.1f} s each)", file=sys.stderr)
    results["params"] = params
    return results


def bicubic(small: np.ndarray, factor: int = 2) -> np.ndarray:
    """Cubic-spline upscaling of block means (pixel centres aligned: ``grid_mode``)."""
    return ndimage.zoom(small, factor, order=3, mode="nearest", grid_mode=True)


def superres_table(
    size: int | None = 256,
    tests=TEST,
    foe: dict | None = None,
    steps: int = 200,
    baselines: bool = True,
    tune_size: int = 256,
) -> dict:
    """002 Table 2's rows: PSNR of recovering each ``size``×``size`` test crop (``size`` None:
    the whole photograph, an even number of rows and columns) from its 2×2 block means by
    bicubic upscaling, by the paper's initial solution (bilinear + low-pass,
    ``imaging.upscale``; then with each block's mean restored: ``sc.super_resolve``'s
    starting point) and, with ``foe`` (as in ``baseline_table``), by ``sc.super_resolve``
    with each FoE (its step schedule tuned on a ``size`` or ``tune_size`` crop of a
    training image)."""
    from symcurv import imaging  # noqa: PLC0415 - the helper beside sc.super_resolve

    res, scales = {}, {}
    for label, trained in (foe or {}).items():
        scales[label] = tune_superres_step(trained, size or tune_size, steps)
        res["step scale", label] = scales[label]
    for name in tests:
        clean = test_image(name, size, even=True)
        small = sc.block_average(clean)
        if baselines:
            res["bicubic", name] = sc.psnr(bicubic(small), clean)
            start = imaging.upscale(small)
            res["bilinear + low-pass", name] = sc.psnr(start, clean)
            res["bilinear + low-pass, means restored", name] = sc.psnr(
                imaging.restore_means(start, small, 2), clean
            )
        for label, trained in (foe or {}).items():
            prog, theta = foe_prior(trained, clean.shape)
            scale = scales[label]
            x = sc.super_resolve(
                prog,
                small,
                steps=steps,
                step=(2e-2 * scale, 5e-4 * scale),
                theta=theta,
                progress=False,
            )
            res[label, name] = sc.psnr(x, clean)
    return res


def foe_pad(trained: dict) -> int:
    """Reflected border of one effective filter width minus one (the learned k × k filter
    after the l × l whitening: k + l − 1): without it the pixels near the edge lie in
    fewer patches, the prior holds them less and their noise stays."""
    return int(round(np.sqrt(trained["F"].shape[1]))) + len(LAPLACIAN_5x5) - 2


class FoEDenoiser:
    """MAP denoising (``sc.denoise``) with a trained FoE's raw-image prior, the image
    reflected by ``foe_pad`` pixels and cropped back; one compiled prior per image shape."""

    def __init__(self, trained: dict) -> None:
        self.trained, self.pad = trained, foe_pad(trained)

    def __call__(self, noisy: np.ndarray, sigma: float, _=None) -> np.ndarray:
        p = self.pad
        padded = np.pad(noisy, p, mode="reflect")
        prog, theta = foe_prior(self.trained, padded.shape)
        x = sc.denoise(prog, padded, sigma, theta=theta, progress=False)
        return x[p:-p, p:-p]


def load_foe(path) -> dict:
    """A model saved by examples/foe_train.py: the learned filters (on whitened data, as
    trained: normalised inside the energy), their weights and the data scale s."""
    z = np.load(path)
    return {"F": z["F"], "beta": z["beta"], "scale": float(z["scale"]), "lam": float(z["lam"])}


_PRIORS: dict = {}


def foe_prior(trained: dict, shape: tuple[int, int]):
    """(compiled raw-image prior E(s · L ⋆ x) over ``shape`` images — ``foe.whitened_model``
    with the trained filters' size —, its θ). Compiled once per shape (any θ)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import foe  # noqa: PLC0415 - the model lives beside this script

    M, K = trained["F"].shape
    k, (H, W) = int(round(np.sqrt(K))), shape
    key = (M, k, H, W)
    if key not in _PRIORS:
        _PRIORS[key] = sc.compile(
            foe.whitened_model(image=(H, W), filters=M, size=k, name=f"foe_raw_{H}x{W}"),
            programs=("loss", "input_grad"),
            build_dir=f"build/foe_whitened_{H}x{W}_m{M}_k{k}",
            parallel=True,  # one image is one case: the convolutions' rows go to threads
            progress=False,
        )
    prog = _PRIORS[key]
    params = {"L": LAPLACIAN_5x5.reshape(1, -1), "s": np.array([trained["scale"]])}
    params |= {"F": trained["F"], "beta": trained["beta"]}
    return prog, prog.flatten(params)


SR_STEP_SCALES = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)


def tune_superres_step(trained: dict, size: int, steps: int, tune_on: str = "rocket") -> float:
    """The multiplier of 002's step schedule (2·10⁻², 5·10⁻⁴) with the best PSNR on a crop of
    a TRAINING image: the raw step x ← x − α∇E depends on the energy's scale, which the
    paper's units fix and ours (whitened data scaled to unit variance) do not."""
    clean = centre_crop(grey(tune_on), size)
    small = sc.block_average(clean)
    prog, theta = foe_prior(trained, clean.shape)
    scores = []
    for k in SR_STEP_SCALES:
        with np.errstate(all="ignore"):
            x = sc.super_resolve(
                prog, small, steps=steps, step=(2e-2 * k, 5e-4 * k), theta=theta, progress=False
            )
        scores.append(sc.psnr(x, clean) if np.all(np.isfinite(x)) else -np.inf)
    return SR_STEP_SCALES[int(np.argmax(scores))]


def superres_markdown(res: dict, tests=TEST) -> str:
    methods = list(dict.fromkeys(k[0] for k in res if k[0] != "step scale"))
    out = ["\nsuper-resolution ×2 from 2×2 block means (PSNR in dB)\n"]
    out.append("| method | " + " | ".join(tests) + " |")
    out.append("| --- |" + " --- |" * len(tests))
    out += [f"| {m} | " + " | ".join(f"{res[m, t]:.2f}" for t in tests) + " |" for m in methods]
    steps = [f"{k[1]}: {v:g}" for k, v in res.items() if k[0] == "step scale"]
    if steps:
        out.append("\nstep-schedule multiplier tuned on a training image: " + ", ".join(steps))
    return "\n".join(out)


def _stats(scores) -> tuple[float, float]:
    scores = np.asarray(scores)
    return float(scores.mean()), float(scores.std(ddof=1)) if len(scores) > 1 else 0.0


def markdown(results: dict, sigmas=SIGMAS, tests=TEST) -> str:
    """One table per σ: rows are methods, columns test images, cells mean ± sd dB."""
    methods = list(dict.fromkeys(k[0] for k in results if k != "params"))
    out = []
    for s in sigmas:
        out.append(f"\nσ = {s * 256:g}/256 (PSNR in dB, mean ± sd over noise draws)\n")
        out.append("| method | " + " | ".join(tests) + " |")
        out.append("| --- |" + " --- |" * len(tests))
        for m in methods:
            cells = [f"{results[m, s, t][0]:.2f} ± {results[m, s, t][1]:.2f}" for t in tests]
            out.append(f"| {m} | " + " | ".join(cells) + " |")
    tuned = ", ".join(f"{m} σ={s * 256:g}: {p:g}" for (m, s), p in results["params"].items())
    out.append(f"\nparameters tuned on a training image: {tuned}")
    return "\n".join(out)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="64×64 crops, 2 draws")
    ap.add_argument("--size", type=int, default=None, help="centre crops of this size")
    ap.add_argument("--whole", action="store_true", help="the whole test photographs")
    ap.add_argument("--draws", type=int, default=None, help="noise draws per image and σ")
    ap.add_argument(
        "--theta",
        action="append",
        default=[],
        metavar="NAME=FILE",
        help="a row NAME from a model saved by examples/foe_train.py (.npz); repeatable",
    )
    ap.add_argument("--no-baselines", action="store_true", help="only the FoE rows")
    ap.add_argument("--no-bm3d", action="store_true", help="no BM3D row even if installed")
    ap.add_argument(
        "--sigmas", type=float, nargs="+", default=None, help="noise levels × 256 (default 5 15 25)"
    )
    ap.add_argument("--images", nargs="+", default=list(TEST), help="test photographs to run")
    ap.add_argument(
        "--only", choices=("denoise", "superres"), default=None, help="one of the two tables"
    )
    ap.add_argument("--save", default=None, help="pickle the tables' results to this file")
    ap.add_argument(
        "--combine", nargs="+", default=None, metavar="FILE", help="print saved results merged"
    )
    return ap


def main(argv=None) -> None:
    args = parser().parse_args(argv)
    if args.combine:
        parts = [pickle.loads(Path(f).read_bytes()) for f in args.combine]
        den, sr = {"params": {}}, {}
        for d, r in parts:
            den["params"] |= d.pop("params", {})
            den |= d
            sr |= r
        keys = [k for k in den if k != "params"]
        if keys:
            tests = list(dict.fromkeys(k[2] for k in keys))
            print(markdown(den, sigmas=sorted({k[1] for k in keys}), tests=tests))
        if sr:
            tests = list(dict.fromkeys(k[1] for k in sr if k[0] != "step scale"))
            print(superres_markdown(sr, tests=tests))
        return
    size = None if args.whole else args.size or (64 if args.quick else 256)
    draws = args.draws or (2 if args.quick else 3)
    trained = {}
    for spec in args.theta:
        label, _, path = spec.rpartition("=")
        trained[label] = load_foe(path)
    base = not args.no_baselines
    den, sr = {}, {}
    if args.only != "superres":
        sigmas = tuple(x / 256 for x in args.sigmas) if args.sigmas else SIGMAS
        den = baseline_table(
            size, draws, sigmas, args.images, foe=trained, baselines=base, bm3d=not args.no_bm3d
        )
        print(markdown(den, sigmas=sigmas, tests=args.images))
    if args.only != "denoise":
        sr = superres_table(size, args.images, foe=trained, baselines=base)
        print(superres_markdown(sr, tests=args.images))
    if args.save:
        Path(args.save).parent.mkdir(parents=True, exist_ok=True)
        Path(args.save).write_bytes(pickle.dumps((den, sr)))


if __name__ == "__main__":
    main()
