"""runtime/validate: the per-call checks stay complete on their fast path. An array that is
already of the build's dtype, shape and layout is passed through without a copy, yet a NaN
or ±inf anywhere in it (first, last, middle entry; float32 and float64) is still refused
with the key, the entry, the DSL line and the node named; the compiled finiteness scan
agrees with numpy's on every position. The output bound of a product (codegen/guards.py)
proves finite only products that are, and fails on non-finite or overflowing operands."""

import numpy as np
import pytest

from symcurv import errors
from symcurv.runtime.validate import Checks, all_finite, product_bounded

PARAMS = {"W": {"offset": 0, "size": 6}, "b": {"offset": 6, "size": 2}}
INPUTS = {
    "x": {"size": 3, "role": "input", "origin": "model.py:4: x = m.input('x', 3)"},
    "t": {"size": 2, "role": "target", "origin": "model.py:5: t = m.target('t', 2)"},
}


def checks(dtype) -> Checks:
    return Checks("toy", np.dtype(dtype), 8, PARAMS, INPUTS)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n", [1, 7, 64, 1000])
def test_all_finite_agrees_with_numpy_at_every_position(dtype, n):
    a = np.random.default_rng(n).standard_normal(n).astype(dtype)
    assert all_finite(a)
    for pos in sorted({0, n // 2, n - 1}):
        for bad in (np.nan, np.inf, -np.inf):
            b = a.copy()
            b[pos] = bad
            assert not all_finite(b)
            assert not all_finite(b.reshape(1, -1))  # any shape: scanned flat
    assert all_finite(np.arange(5))  # integers are finite
    assert all_finite(np.zeros((0, 3), dtype=dtype))  # nothing to refuse


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_ready_arrays_pass_through_uncopied(dtype):
    c = checks(dtype)
    x = np.ones((4, 3), dtype=dtype)
    t = np.zeros((4, 2), dtype=dtype)
    got = c.batch(["x", "t"], {"x": x, "t": t})
    assert got[0] is x and got[1] is t
    theta = np.zeros(8, dtype=dtype)
    assert c.theta(theta) is theta
    assert c.direction(theta) is theta
    # a State asks for arrays no later write by the caller can reach
    assert c.batch(["x"], {"x": x, "t": t}, copy=True)[0] is not x


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_batch_refused_on_the_fast_path(dtype, bad):
    c = checks(dtype)
    for r, col in [(0, 0), (2, 1), (4, 2)]:
        x = np.ones((5, 3), dtype=dtype)
        x[r, col] = bad
        with pytest.raises(errors.NonFiniteError) as e:
            c.batch(["x", "t"], {"x": x, "t": np.zeros((5, 2), dtype=dtype)})
        msg = str(e.value)
        assert f"batch['x'][{r}, {col}]" in msg and "model.py:4" in msg and "'x'" in msg


def test_non_finite_batch_refused_after_conversion():
    """Not ready (integers, Fortran order, float32 into a float64 build): converted, then
    the same scan."""
    c = checks(np.float64)
    x = np.asfortranarray(np.ones((3, 3), dtype=np.float32))
    x[1, 2] = np.inf
    with pytest.raises(errors.NonFiniteError, match=r"batch\['x'\]\[1, 2\]"):
        c.batch(["x"], {"x": x})
    ok = c.batch(["x"], {"x": np.ones((2, 3), dtype=np.int32)})[0]
    assert ok.dtype == np.float64 and ok.flags.c_contiguous


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_non_finite_theta_and_v_refused_on_the_fast_path(dtype):
    c = checks(dtype)
    theta = np.zeros(8, dtype=dtype)
    theta[7] = np.nan
    with pytest.raises(errors.NonFiniteError, match=r"theta\[7\].*parameter 'b'"):
        c.theta(theta)
    v = np.zeros(8, dtype=dtype)
    v[0] = -np.inf
    with pytest.raises(errors.NonFiniteError, match=r"v\[0\] is not finite"):
        c.direction(v)


def test_wrong_width_still_named_on_the_fast_path():
    c = checks(np.float64)
    with pytest.raises(errors.BatchError, match=r"batch\['x'\] has shape \(4, 2\)"):
        c.batch(["x"], {"x": np.ones((4, 2))})
    with pytest.raises(errors.BatchError, match="no key 't'"):
        c.batch(["x", "t"], {"x": np.ones((4, 3))})


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_product_bound_holds_only_where_the_product_is_finite(dtype):
    """True claims every entry of a·b finite; here every product up to the bound's edge is
    computed and checked, and the operands that make it overflow, or carry NaN/inf, fail."""
    rng = np.random.default_rng(3)
    half_max = float(np.finfo(dtype).max) / 2
    for k in (1, 3, 20, 257):
        a, b = rng.standard_normal((7, k)), rng.standard_normal((k, 5))
        assert product_bounded(a.astype(dtype).ravel(), b.astype(dtype).ravel())
        # scaled to just under the bound: proven, and the product indeed stays finite
        s = 0.999 * half_max / (np.linalg.norm(a) * np.linalg.norm(b))
        big_a, big_b = (a * np.sqrt(s)).astype(dtype), (b * np.sqrt(s)).astype(dtype)
        assert product_bounded(big_a.ravel(), big_b.ravel()) and np.isfinite(big_a @ big_b).all()
        # all terms of one sign at max/k each: the product overflows, the bound fails
        ones_a, ones_b = np.full((2, k), half_max / k, dtype), np.full((k, 2), 4, dtype)
        with np.errstate(over="ignore"):
            assert not np.isfinite(ones_a @ ones_b).all()
        assert not product_bounded(ones_a.ravel(), ones_b.ravel())
    for bad in (np.nan, np.inf, -np.inf):
        a = np.ones((3, 4), dtype)
        a[1, 2] = bad
        assert not product_bounded(a.ravel(), np.zeros(8, dtype))  # inf·0 is NaN
        assert not product_bounded(np.ones(6, dtype), a[:, ::2].ravel()[::-1])
