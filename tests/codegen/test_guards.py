"""codegen/guards.py: non-finite batch data found through the first product that reads it.

The CPU driver checks the product X Wᵀ instead of scanning X up front; whatever the entry,
the error must be the one the up-front scan raised (naming the leaf and the entry)."""

from pathlib import Path

import numpy as np
import pytest

import symcurv as sc
from symcurv import errors
from symcurv.runtime import compile_parallel


def _two_layers(name: str, width: int, tmp_path_factory):
    """softmax(V tanh(W x)) with x ``width`` wide, 4 hidden units, 3 classes: loss, grad and
    input_grad built."""
    m = sc.Model(name)
    x = m.input("x", width)
    t = m.target("t", 3)
    W = m.param("W", (4, width), init=sc.init.normal(0.5))
    V = m.param("V", (3, 4), init=sc.init.normal(0.5))
    m.minimize(sc.losses.softmax_cross_entropy(V @ sc.tanh(W @ x), t))
    build = tmp_path_factory.mktemp(name)
    return sc.compile(m, programs=("loss", "grad", "input_grad"), build_dir=build, progress=False)


@pytest.fixture(scope="module")
def prog(tmp_path_factory):
    return _two_layers("guarded", 6, tmp_path_factory)


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


# -- the output bound: a per-case output proven finite through its product's operands ----
@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    """input_grad of a 64-wide input through 4 hidden units: dx = G W, G (B, 4), W (4, 64)."""
    return _two_layers("wide", 64, tmp_path_factory)


def _wide_batch(B=5, scale=1.0):
    rng = np.random.default_rng(1)
    return {"x": scale * rng.standard_normal((B, 64)), "t": np.eye(3)[rng.integers(0, 3, B)]}


def test_only_a_per_case_output_wider_than_its_operands_is_bounded(prog, wide):
    assert wide.spec("input_grad")["bounded"] == ["input_grad:x"]
    assert wide.spec("grad")["bounded"] == []  # the flat gradient is scanned as before
    assert prog.spec("input_grad")["bounded"] == []  # 6 wide through 4: no cheaper
    text = (Path(wide.build_dir) / "kernels" / "input_grad.py").read_text()
    assert "bounded &= product_bounded(" in text and "return nonfinite, bounded" in text


def test_a_bounded_output_that_overflows_is_still_refused(wide):
    """W's entries near float64's max with tiny x: every value up to G is finite (G of
    order 10), and dx = G W overflows. ‖W‖ overflows too, so the bound fails and the
    output is scanned: the error names the product, as it did before the bound existed."""
    values = wide.unflatten(wide.init(0))
    values["W"][:] = 1.7e308
    values["V"][:] = [[10.0], [-10.0], [0.0]]  # rows unequal, or Vᵀ(p − t) is zero
    theta = wide.flatten(values)
    batch = _wide_batch(scale=1e-310)
    assert np.isfinite(wide.loss(theta, batch))
    with pytest.raises(errors.NonFiniteError, match="produced a non-finite 'input_grad:x'") as e:
        wide.input_grad(theta, batch)
    assert "node 'WTg_1'" in str(e.value) and "first go non-finite at this node" in str(e.value)


def test_a_bounded_output_equals_the_scanned_one(wide):
    """The bound changes which check runs, never the numbers: input_grad against central
    differences of the loss in x."""
    theta, batch = wide.init(2), _wide_batch(B=3)
    got = wide.input_grad(theta, batch)

    def loss_of_case(b, x_b):  # f_b: the loss of a batch of case b alone
        return wide.loss(theta, {"x": x_b[None, :], "t": batch["t"][b : b + 1]})

    fd = np.zeros_like(batch["x"])
    for b, j in np.ndindex(*fd.shape):
        step = np.zeros(64)
        step[j] = 1e-6
        x_b = batch["x"][b]
        fd[b, j] = (loss_of_case(b, x_b + step) - loss_of_case(b, x_b - step)) / 2e-6
    np.testing.assert_allclose(got, fd, rtol=1e-5, atol=1e-8)


def test_the_compile_workers_dry_run_records_the_bound(wide):
    """The parallel build finds a driver's compiled calls by running it with recorders:
    the bound's line must run there too (a recorder's None once broke ``bounded &=``, and
    every build with a bounded output compiled serially)."""
    found = compile_parallel.kernel_signatures(wide, ["input_grad"])  # raises on failure
    assert any(k.endswith(":product_bounded") for k in found), sorted(found)


# a strided W is compiled into gemm's strided path, which Numba notes is slower (expected)
@pytest.mark.filterwarnings("ignore::numba.core.errors.NumbaPerformanceWarning")
def test_a_bounded_driver_takes_theta_with_any_strides(wide):
    """``run(check=False)`` takes θ as given: a strided θ reaches the bound's norms (which
    once refused it with a Numba typing error) and gives the same input gradient."""
    theta, batch = wide.init(3), _wide_batch()
    spaced = np.zeros(2 * wide.n_params)
    spaced[::2] = theta
    got = wide.run("input_grad", spaced[::2], batch, check=False)["input_grad:x"]
    np.testing.assert_allclose(got, wide.input_grad(theta, batch), rtol=1e-13, atol=1e-13)
