"""codegen/guards.py: non-finite batch data found through the first product that reads it.

The CPU driver checks the product X Wᵀ instead of scanning X up front; whatever the entry,
the error must be the one the up-front scan raised (naming the leaf and the entry)."""

from pathlib import Path

import numpy as np
import pytest

import symcurv as sc
from symcurv import errors


@pytest.fixture(scope="module")
def prog(tmp_path_factory):
    m = sc.Model("guarded")
    x = m.input("x", 6)
    t = m.target("t", 3)
    W = m.param("W", (4, 6), init=sc.init.normal(0.5))
    V = m.param("V", (3, 4), init=sc.init.normal(0.5))
    m.minimize(sc.losses.softmax_cross_entropy(V @ sc.tanh(W @ x), t))
    build = tmp_path_factory.mktemp("guarded")
    return sc.compile(m, programs=("loss", "grad", "input_grad"), build_dir=build, progress=False)


def _batch(B=5):
    rng = np.random.default_rng(0)
    return {"x": rng.standard_normal((B, 6)), "t": np.eye(3)[rng.integers(0, 3, B)]}


def test_the_leaf_a_gemm_reads_is_guarded_and_the_target_is_not(prog):
    for name in ("loss", "grad", "input_grad"):
        assert prog.spec(name)["guarded"] == ["x"], name
    text = (Path(prog.build_dir) / "kernels" / "loss.py").read_text()
    assert "nonfinite |= not all_finite_flat(" in text and "return nonfinite" in text


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("program", ["loss", "grad", "input_grad"])
def test_a_non_finite_entry_is_refused_naming_the_leaf(prog, program, bad):
    batch = _batch()
    batch["x"][3, 4] = bad
    with pytest.raises(errors.NonFiniteError, match=r"batch\['x'\]\[3, 4\] = .* is not finite"):
        getattr(prog, program)(prog.init(0), batch)


def test_an_infinite_entry_under_a_zero_column_of_W_is_still_refused(prog):
    """inf · 0 is NaN in IEEE arithmetic and the BLAS computes every term: an input that
    no weight reads still makes its product non-finite."""
    values = prog.unflatten(prog.init(0))
    values["W"][:, 2] = 0.0
    theta = prog.flatten(values)
    batch = _batch()
    batch["x"][1, 2] = np.inf
    with pytest.raises(errors.NonFiniteError, match=r"batch\['x'\]\[1, 2\] = inf"):
        prog.loss(theta, batch)


def test_the_target_is_still_scanned_up_front(prog):
    batch = _batch()
    batch["t"][2, 1] = np.nan
    with pytest.raises(errors.NonFiniteError, match=r"batch\['t'\]\[2, 1\] = nan"):
        prog.loss(prog.init(0), batch)


def test_an_overflowing_product_of_finite_data_is_not_blamed_on_the_data(prog):
    """x Wᵀ overflows to inf with finite x (six terms of 1e308): the guard fires, the scan
    of x finds nothing, and the loss (tanh saturates at ±1, so it stays finite) is
    returned as it was before the guard existed."""
    values = prog.unflatten(prog.init(0))
    values["W"][:] = 1.0
    theta = prog.flatten(values)
    batch = _batch()
    batch["x"][:] = 1e308
    with np.errstate(over="ignore"):
        assert np.isinf(batch["x"] @ values["W"].T).all()  # the product does overflow
    assert np.isfinite(prog.loss(theta, batch))
