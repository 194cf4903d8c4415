"""The two datasets of the deep-autoencoder experiments (Hinton & Salakhutdinov 2006; Martens
2010, Table 1), built from what is available here without a download.

- ``curves``: CURVES, 28×28 images of a smooth curve through three random points, generated
  on the fly (H&S used 20000 training and 10000 test images; ``curves_split``).
- ``faces``: a stand-in for FACES, the 100 LFW faces bundled with scikit-image (25×25, like
  H&S's Olivetti patches, but 100 images instead of 165600).
- ``save_grid``: a PNG grid of examples (matplotlib, Agg).

    python examples/datasets.py                 # writes build/datasets/curves_examples.png, ...
    python examples/datasets.py --update-docs   # writes docs/img/ (the figures the docs show)
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

ROOT = Path(__file__).resolve().parents[1]

# -- CURVES ------------------------------------------------------------------------------------

# Geometry of the knots, in pixel units on a size×size canvas whose pixel centres are at
# 0, 1, ..., size-1 (H&S, SOM: every coordinate in [2, 25] on the 28×28 canvas, each knot's x at
# least 2 to the right of the previous one). For other sizes the margin stays 2 pixels.
MARGIN = 2.0
MIN_DX = 2.0
# Inking (Nair & Hinton 2005): ink deposited at closely spaced points along the curve, spread to
# the 4 nearest pixels bilinearly, blurred by a Gaussian kernel of fixed width, clipped at 1.
INK_PER_PIXEL = 3.0  # ink per pixel of arc length: peak ≈ 3 / (√(2π)·0.9) ≈ 1.3 before clipping
PEN_SIGMA = 0.8  # std of the Gaussian pen, in pixels
N_SPLINE_SAMPLES = 64  # samples in x per spline segment: chords of at most ~1.2 px
CANDIDATE_BLOCK = 4096  # knots drawn at a time (curves leaving the canvas are dropped)
RENDER_CHUNK = 1024  # images rendered at a time


def _natural_spline(xk: np.ndarray, yk: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Sample, row by row, the natural cubic spline y(x) through three knots.

    Parameters
    ----------
    xk, yk : (n, 3) arrays
        Knots, with ``xk[:, 0] < xk[:, 1] < xk[:, 2]``.
    k : int
        Samples per segment, evenly spaced in x.

    Returns
    -------
    (px, py), each (n, 2k − 1): the points of the curve from the first knot to the last.

    Notes
    -----
    With knot spacings h₀ = x₁ − x₀, h₁ = x₂ − x₁ and the natural end conditions
    M₀ = M₂ = 0 on the second derivatives, continuity of S' at x₁ gives the one unknown

        M₁ = 3 ((y₂ − y₁)/h₁ − (y₁ − y₀)/h₀) / (h₀ + h₁),

    and on segment i (between x_i and x_{i+1}, width h_i, with a = x_{i+1} − x, b = x − x_i)

        S(x) = M_i a³/(6 h_i) + M_{i+1} b³/(6 h_i) + (y_i/h_i − M_i h_i/6) a
             + (y_{i+1}/h_i − M_{i+1} h_i/6) b.

    Each segment is sampled on its own grid, so every coefficient is a plain (n, 1) column.
    """
    h = np.diff(xk, axis=1)  # (n, 2)
    slopes = np.diff(yk, axis=1) / h
    m1 = 3.0 * (slopes[:, 1:] - slopes[:, :1]) / (h[:, :1] + h[:, 1:])  # (n, 1)
    u = np.linspace(0.0, 1.0, k)
    xs, ys = [], []
    for i, (mi, mj) in enumerate(((0.0, m1), (m1, 0.0))):
        hi = h[:, i : i + 1]
        b = hi * u  # x − x_i
        a = hi - b  # x_{i+1} − x
        y = (
            mi * a**3 / (6 * hi)
            + mj * b**3 / (6 * hi)
            + (yk[:, i : i + 1] / hi - mi * hi / 6) * a
            + (yk[:, i + 1 : i + 2] / hi - mj * hi / 6) * b
        )
        sl = slice(None) if i == 0 else slice(1, None)  # the middle knot once
        xs.append((xk[:, i : i + 1] + b)[:, sl])
        ys.append(y[:, sl])
    return np.concatenate(xs, axis=1), np.concatenate(ys, axis=1)


def _random_knots(rng: np.random.Generator, n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Three knots per image, uniform over the allowed set.

    x: the sorted x₀ < x₁ < x₂ in [a, b] (a = MARGIN, b = size − 1 − MARGIN) with gaps of at
    least MIN_DX are x_i = a + u_(i) + i·MIN_DX, u_(0) ≤ u_(1) ≤ u_(2) the order statistics of
    three uniforms on [0, b − a − 2·MIN_DX]: a bijection from the sorted triples, so uniform over
    the constrained set (what rejection sampling would give). y: independent uniforms on [a, b].
    """
    lo, hi = MARGIN, size - 1 - MARGIN
    free = hi - lo - 2 * MIN_DX
    if free <= 0:
        raise ValueError(f"size={size} is too small for three knots {MIN_DX} px apart")
    # one (n, 6) draw, image by image, so that the stream of candidates does not depend on n
    u = rng.random((n, 6))
    xk = lo + free * np.sort(u[:, :3], axis=1) + MIN_DX * np.arange(3)
    yk = lo + (hi - lo) * u[:, 3:]
    return xk, yk


def _curve_points(rng: np.random.Generator, n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Sampled splines (px, py), (n, 2k − 1), of n curves that stay on the canvas.

    Candidates come in fixed blocks and are kept in order, so curve i depends only on the seed.
    """
    k = 2 * N_SPLINE_SAMPLES - 1
    xs, ys, have = [np.empty((0, k))], [np.empty((0, k))], 0
    while have < n:
        xk, yk = _random_knots(rng, CANDIDATE_BLOCK, size)
        px, py = _natural_spline(xk, yk, N_SPLINE_SAMPLES)
        # the spline may overshoot between the knots, most when two knots are close in x and
        # far apart in y: keep only curves wholly on the canvas
        ok = ((py >= 0) & (py <= size - 1)).all(axis=1)
        xs.append(px[ok])
        ys.append(py[ok])
        have += int(ok.sum())
    return np.concatenate(xs)[:n], np.concatenate(ys)[:n]


def _splat(qx: np.ndarray, qy: np.ndarray, ink: np.ndarray, size: int) -> np.ndarray:
    """Deposit ink (n, m) at the points (qx, qy), (n, m), on n size×size canvases, bilinearly:
    a point at (x, y) = (c + f_c, r + f_r) gives (1−f_r)(1−f_c), (1−f_r) f_c, f_r (1−f_c) and
    f_r f_c of its ink to pixels (r, c), (r, c+1), (r+1, c) and (r+1, c+1).

    The points must lie in [0, size − 1]²; a canvas one pixel wider spares the bounds checks
    for the zero-weight neighbours of points on the last row or column.
    """
    n, m = qx.shape
    s1 = size + 1
    c0, r0 = np.floor(qx), np.floor(qy)
    fc, fr = qx - c0, qy - r0
    idx = (np.arange(n)[:, None] * s1 + r0.astype(np.intp)) * s1 + c0.astype(np.intp)
    out = np.zeros(n * s1 * s1)
    for off, w in (
        (0, (1 - fr) * (1 - fc)),
        (1, (1 - fr) * fc),
        (s1, fr * (1 - fc)),
        (s1 + 1, fr * fc),
    ):
        out += np.bincount((idx + off).ravel(), weights=(w * ink).ravel(), minlength=out.size)
    return out.reshape(n, s1, s1)[:, :size, :size]


def curves(n: int, seed: int | np.random.SeedSequence = 0, size: int = 28) -> np.ndarray:
    """CURVES: n images of a smooth curve through three random points, as in H&S (2006).

    Parameters
    ----------
    n : int
        Number of images.
    seed : int or numpy.random.SeedSequence
        The images are a deterministic function of (n, seed, size); image i does not depend
        on n (the same seed gives a prefix of a larger draw).
    size : int
        Canvas side, in pixels (28 in the paper).

    Returns
    -------
    (n, size*size) float64 array in [0, 1], each row a row-major size×size image, ink = 1.

    Notes
    -----
    **The original.** Hinton & Salakhutdinov (2006), supporting online material: three points
    with increasing x define a cubic spline, which is "inked" to produce a 28×28 image, with
    the inking of Nair & Hinton (2005, "Inferring motor programs from images of handwritten
    digits"): ink is produced at 60 evenly spaced points along the trajectory, each point's ink
    goes to its 4 closest pixels by bilinear interpolation, the image is convolved with a
    kernel of fixed width at a fixed ink intensity, and intensities above 1 are clipped. The
    SOM's constraints on the points, as recalled (its text was not at hand to check): every
    coordinate in [2, 25], each x at least 2 greater than the previous one. H&S trained on
    20000 images and tested on 10000 (Martens 2010, Table 1: 20000 training cases, minibatch
    5000, encoder 784-400-200-100-50-25-6). Sources consulted here: a third-party summary of
    the SOM (increasing x, cubic spline, "inked", 28×28) and Hinton's slide on the inking
    (cs.toronto.edu/~hinton/spring_files/slide0044.htm); the SOM's data-generating Matlab code
    was not available.

    **This generator**, per image:

    1. x₀ < x₁ < x₂ uniform over the allowed set (gaps ≥ 2, in [2, size − 3]) and
       y₀, y₁, y₂ uniform on [2, size − 3] (continuous coordinates, pixel centres at integers).
    2. The natural cubic spline y(x) through them (``_natural_spline``: S'' = 0 at the end
       knots), sampled at 64 values of x per segment. Where two knots are close in x and far
       apart in y it overshoots; a curve that leaves the canvas is redrawn (about 8% of
       draws, ``_curve_points``), so every image holds its whole curve.
    3. Ink at the midpoint of each of the 126 chords between consecutive samples, 3 units
       per pixel of chord length (the midpoint rule for the pen's line integral along the
       curve), deposited bilinearly on the 4 nearest pixels. Chords are at most ~1.2 px long;
       for a Gaussian pen of std σ, points d apart leave a ripple of about
       2·exp(−2π²σ²/d²) < 10⁻³ of the stroke's intensity along it: a continuous stroke.
    4. A Gaussian blur of std 0.8 px (the pen), then clip to [0, 1]. Across a straight stroke
       the peak is ≈ 3/(√(2π)·0.9) ≈ 1.3 (0.9: the pen widened by the bilinear spread), so
       strokes have a saturated core about 1.4 px wide and soft edges (above 0.1 over about
       4 px), like MNIST strokes.

    **Where it may differ.** The SOM gives no ink intensity, kernel width or kernel shape, nor
    which cubic spline (end conditions, or whether it is y(x) or parametric), nor what
    happens to a curve that overshoots the canvas: the pen (Gaussian, std 0.8 px, 3 units of
    ink per pixel of length) was chosen by eye to look like the paper's Fig. 2 curves, the
    spline is the natural one in y(x), which the increasing-x constraint suggests, and
    off-canvas curves are rejected. The original put a fixed ink amount at each of 60 points,
    so a long curve is fainter than a short one; here ink is proportional to arc length
    (uniform stroke intensity), at points ≤ 1.2 px apart instead of 60 evenly spaced ones.
    Reconstruction errors are therefore comparable with the paper's in scale, not digit for
    digit.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    px, py = _curve_points(np.random.default_rng(seed), n, size)
    out = np.empty((n, size * size))
    # images are independent: render in chunks, so temporaries stay small (page faults on
    # ~100 MB temporaries cost more than the arithmetic)
    for lo in range(0, n, RENDER_CHUNK):
        x, y = px[lo : lo + RENDER_CHUNK], py[lo : lo + RENDER_CHUNK]
        # ink at chord midpoints in proportion to chord length (the midpoint rule for the
        # line integral of the pen along the curve): a steep stretch covers many pixels
        chord = np.hypot(np.diff(x, axis=1), np.diff(y, axis=1))
        mx, my = 0.5 * (x[:, 1:] + x[:, :-1]), 0.5 * (y[:, 1:] + y[:, :-1])
        canvas = _splat(mx, my, INK_PER_PIXEL * chord, size)
        canvas = gaussian_filter(
            canvas, sigma=(0, PEN_SIGMA, PEN_SIGMA), mode="constant", truncate=3
        )
        np.clip(canvas.reshape(len(x), -1), 0.0, 1.0, out=out[lo : lo + RENDER_CHUNK])
    return out


def curves_split(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) = (20000, 10000) CURVES images, the sizes of H&S and Martens (2010).

    The two sets come from independent streams: ``SeedSequence(seed).spawn(2)``.
    """
    train_seq, test_seq = np.random.SeedSequence(seed).spawn(2)
    return curves(20000, seed=train_seq), curves(10000, seed=test_seq)


# -- FACES -------------------------------------------------------------------------------------


def faces(seed: int = 0, test_fraction: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """A small stand-in for FACES: the 100 LFW faces that ship with scikit-image.

    Parameters
    ----------
    seed : int
        Seeds the permutation that splits the faces into train and test.
    test_fraction : float
        Share of the 100 faces held out (0.2: 80 train, 20 test).

    Returns
    -------
    (train, test): float64 arrays of shape (80, 625) and (20, 625), in [0, 1], each row a
    row-major 25×25 image.

    Notes
    -----
    ``skimage.data.lfw_subset()`` loads ``skimage/data/lfw_subset.npy``, which is inside the
    scikit-image wheel (no download, no pooch): 200 images of 25×25, the first 100 faces
    randomly picked from Labeled Faces in the Wild (Huang et al.) and the last 100 non-faces
    cut from the same photos' backgrounds. Only the faces are used. Its docstring says uint8,
    but the stored array is float64 already in [0, 1] (grey levels / 255, then resized); it is kept
    as it is — no per-image or per-pixel normalisation — and a uint8 array, should a release
    return one, is divided by 255.

    **How it differs from FACES.** H&S's FACES (Martens 2010, Table 1: 103500 training cases,
    encoder 625-2000-1000-500-30) were 165600 25×25 patches made from the 400 Olivetti faces by
    rotation, scaling and cropping, 30 people for training and 10 different people for test;
    intensities were shifted to zero mean and scaled to unit average variance, modelled by
    Gaussian visible units (a linear output layer, squared error). Here there are 100 faces,
    under a thousandth of the data, so a 625-2000-1000-500-30 autoencoder (7.5 million
    weights, encoder and decoder) overfits at once; test people are not kept disjoint from
    train people, and the intensities are in [0, 1] rather than standardised (standardise
    them, with train statistics, to match the paper's Gaussian units). Reconstruction errors
    are therefore not comparable with the paper's FACES numbers; the set exercises the same
    architecture.
    """
    try:
        from skimage.data import lfw_subset
    except ImportError as err:  # scikit-image is in the dev extra, not a core dependency
        raise ImportError(
            "faces() needs scikit-image, whose wheel bundles the LFW subset: "
            "pip install 'scikit-image>=0.22' (or pip install -e '.[dev]')"
        ) from err
    images = np.asarray(lfw_subset())
    if images.shape != (200, 25, 25):
        raise ValueError(f"unexpected lfw_subset shape {images.shape}, wanted (200, 25, 25)")
    if np.issubdtype(images.dtype, np.integer):
        images = images / 255.0
    face = images[:100].reshape(100, 625).astype(np.float64)
    order = np.random.default_rng(seed).permutation(100)
    n_test = int(round(test_fraction * 100))
    return face[order[n_test:]], face[order[:n_test]]


# -- pictures ----------------------------------------------------------------------------------


def save_grid(images: np.ndarray, path: str | Path, size: int | tuple[int, int], n: int = 64):
    """Write the first n images as a PNG grid (white ink on black, grey levels 0-1).

    Parameters
    ----------
    images : (N, h*w) array
        One flattened image per row, values in [0, 1].
    path : str or Path
        Output file (parent directories are created).
    size : int or (h, w)
        Image side(s).
    n : int
        How many images to show, in a √n-wide grid.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h, w = (size, size) if isinstance(size, int) else size
    images = np.asarray(images)[:n]
    k = len(images)
    cols = int(np.ceil(np.sqrt(k)))
    rows = int(np.ceil(k / cols))
    # one mosaic with 1-pixel grey separators, drawn as a single image: crisp at any dpi
    mosaic = np.full((rows * (h + 1) + 1, cols * (w + 1) + 1), 0.35)
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        mosaic[1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + c * (w + 1) : 1 + c * (w + 1) + w] = (
            img.reshape(h, w)
        )
    scale = 6  # screen pixels per image pixel
    fig = plt.figure(figsize=(mosaic.shape[1] * scale / 100, mosaic.shape[0] * scale / 100))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(mosaic, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_axis_off()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--update-docs",
        action="store_true",
        help="write the example grids to docs/img/ (tracked) instead of build/datasets/",
    )
    args = ap.parse_args(argv)
    img = ROOT / "docs" / "img" if args.update_docs else ROOT / "build" / "datasets"
    save_grid(curves(64, seed=0), img / "curves_examples.png", 28)
    print(f"wrote {img / 'curves_examples.png'}")
    try:
        train, _ = faces()
    except ImportError as err:
        print(f"faces skipped: {err}", file=sys.stderr)
        return 0
    save_grid(train, img / "faces_examples.png", 25)
    print(f"wrote {img / 'faces_examples.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
