"""examples/datasets.py: the CURVES generator, the LFW FACES stand-in and the PNG grid."""

from __future__ import annotations

import sys
from pathlib import Path

import example_modules
import numpy as np
import pytest
from scipy import ndimage
from scipy.interpolate import CubicSpline

ROOT = Path(__file__).resolve().parents[2]


ds = example_modules.load("datasets")


@pytest.fixture(scope="module")
def sample():
    return ds.curves(500, seed=7)


def _rows(a: np.ndarray) -> set[bytes]:
    return {r.tobytes() for r in a}


# -- CURVES ------------------------------------------------------------------------------------


def test_curves_shape_dtype_range(sample):
    assert sample.shape == (500, 784) and sample.dtype == np.float64
    assert sample.min() == 0.0 and sample.max() == 1.0  # background, and saturated ink cores
    small = ds.curves(3, seed=1, size=16)
    assert small.shape == (3, 256) and 0.0 <= small.min() and small.max() <= 1.0
    assert ds.curves(0).shape == (0, 784)


def test_curves_deterministic_per_seed_and_prefix_stable(sample):
    assert np.array_equal(ds.curves(500, seed=7), sample)
    # image i depends on the seed only, not on how many are drawn
    assert np.array_equal(ds.curves(20, seed=7), sample[:20])


def test_curves_differ_across_seeds(sample):
    other = ds.curves(500, seed=8)
    assert not _rows(sample) & _rows(other)
    assert len(_rows(sample)) == 500  # and no repeats within a set


def test_each_curve_is_one_connected_stroke_of_sensible_size(sample):
    for img in sample.reshape(-1, 28, 28):
        ink = img > 0.1
        _, n_parts = ndimage.label(ink, structure=np.ones((3, 3)))
        assert n_parts == 1
        # shortest curve: x spans ≥ 4 px, with a ~4 px wide soft stroke; longest: a steep V
        assert 20 <= ink.sum() <= 300
        assert (img >= 0.999).sum() >= 3  # a saturated core, not a faint smear


def test_natural_spline_matches_scipy():
    rng = np.random.default_rng(0)
    xk, yk = ds._random_knots(rng, 20, 28)
    assert (np.diff(xk, axis=1) >= ds.MIN_DX).all()
    assert xk.min() >= 2 and xk.max() <= 25 and yk.min() >= 2 and yk.max() <= 25
    px, py = ds._natural_spline(xk, yk, 9)
    for i in range(20):
        ref = CubicSpline(xk[i], yk[i], bc_type="natural")
        np.testing.assert_allclose(py[i], ref(px[i]), atol=1e-10)
        np.testing.assert_allclose(px[i, [0, 8, 16]], xk[i], atol=1e-12)  # knots sampled


def test_curve_passes_through_its_three_points():
    # the first candidate block of seed 3 holds the knots of curves(n, seed=3), in order,
    # less those whose spline leaves the canvas
    xk, yk = ds._random_knots(np.random.default_rng(3), ds.CANDIDATE_BLOCK, 28)
    _, py = ds._natural_spline(xk, yk, ds.N_SPLINE_SAMPLES)
    keep = ((py >= 0) & (py <= 27)).all(axis=1)
    assert 0.8 < keep.mean() < 1.0  # some draws do overshoot, and are redrawn
    xk, yk = xk[keep][:50], yk[keep][:50]
    images = ds.curves(50, seed=3).reshape(50, 28, 28)
    for img, xs, ys in zip(images, xk, yk):
        at_knots = ndimage.map_coordinates(img, [ys, xs], order=1)
        # the middle knot is inside the stroke; at the two ends the pen's blur only has ink
        # on one side, so about half the ≈1.3 peak
        assert at_knots[1] > 0.9 and (at_knots[[0, 2]] > 0.45).all()
    assert (images > 0.1).mean() < 0.25  # ink on the curve, not everywhere


def test_curves_split_sizes_and_disjoint():
    train, test = ds.curves_split(seed=0)
    assert train.shape == (20000, 784) and test.shape == (10000, 784)
    assert not _rows(train) & _rows(test)
    # the documented streams: SeedSequence(seed).spawn(2), so another seed gives other sets
    train_seq, test_seq = np.random.SeedSequence(0).spawn(2)
    assert np.array_equal(train[:5], ds.curves(5, seed=train_seq))
    assert np.array_equal(test[:5], ds.curves(5, seed=test_seq))
    other_train_seq, _ = np.random.SeedSequence(1).spawn(2)
    assert not _rows(train[:5]) & _rows(ds.curves(5, seed=other_train_seq))


# -- FACES -------------------------------------------------------------------------------------


def test_faces_shapes_range_and_split():
    pytest.importorskip("skimage")
    from skimage.data import lfw_subset

    train, test = ds.faces(seed=0)
    assert train.shape == (80, 625) and test.shape == (20, 625)
    assert train.dtype == test.dtype == np.float64
    assert 0.0 <= min(train.min(), test.min()) and max(train.max(), test.max()) <= 1.0
    assert not _rows(train) & _rows(test)
    # exactly the 100 faces (the first half of the subset), none of the non-faces
    faces_ref = np.asarray(lfw_subset(), dtype=np.float64).reshape(200, 625)
    assert _rows(train) | _rows(test) == _rows(faces_ref[:100])
    again, _ = ds.faces(seed=0)
    other, _ = ds.faces(seed=1)
    assert np.array_equal(again, train) and not np.array_equal(other, train)
    assert ds.faces(test_fraction=0.5)[1].shape == (50, 625)


def test_faces_without_scikit_image_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "skimage.data", None)  # makes the import fail
    with pytest.raises(ImportError, match="pip install 'scikit-image"):
        ds.faces()


# -- pictures ----------------------------------------------------------------------------------


def test_save_grid_writes_the_mosaic(tmp_path, sample):
    import matplotlib.image as mpimg

    path = tmp_path / "sub" / "grid.png"
    ds.save_grid(sample, path, 28, n=10)  # 10 images: 4 columns, 3 rows, 1 px separators
    png = mpimg.imread(path)
    assert png.shape[:2] == ((3 * 29 + 1) * 6, (4 * 29 + 1) * 6)
    # the first image, read back at the centres of its 6×6 blocks, is the first curve
    centres = 6 * np.arange(1, 29) + 3
    first = png[np.ix_(centres, centres)][:, :, 0]
    # (to the colormap's 256 levels)
    np.testing.assert_allclose(first, sample[0].reshape(28, 28), atol=2 / 255)
