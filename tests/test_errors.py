"""Bad input gets a SymcurvError subclass whose message names the DSL line (this file),
the node, and the fix (DESIGN.md §4). Each test checks the type AND the message."""

import inspect

import numpy as np
import pytest
import sympy

import symcurv as sc
from symcurv import errors


def _here(offset: int) -> str:
    """'test_errors.py:<line>' for the line ``offset`` lines below the caller's."""
    frame = inspect.currentframe().f_back
    return f"test_errors.py:{frame.f_lineno + offset}"


def test_shape_mismatch_in_matvec_names_line_node_and_fix():
    m = sc.Model("bad_shapes")
    x = m.input("x", 3)
    W = m.param("W", (2, 4))
    line = _here(2)
    with pytest.raises(errors.ShapeError) as e:
        W @ x
    msg = str(e.value)
    assert line in msg, msg
    assert "'W'" in msg and "length 4" in msg and "(3,)" in msg
    assert "fix: make the parameter's shape (n_out, 3)" in msg


def test_unknown_function_in_elementwise_string():
    line = _here(2)
    with pytest.raises(errors.ExpressionError) as e:
        sc.elementwise("swishy", "x * foo(x)")
    msg = str(e.value)
    assert line in msg and "'swishy'" in msg and "['foo']" in msg
    assert "fix: use sympy functions" in msg and "tanh" in msg


@pytest.mark.parametrize(
    "name, expr",
    [("dirac", "DiracDelta(z) + z"), ("gam", "gamma(z)"), ("flo", lambda z: sympy.floor(z) + z)],
)
def test_sympy_function_outside_the_allowed_list_is_refused_at_definition(name, expr):
    """Issue 16: DiracDelta was accepted and failed at compile time inside the printer."""
    line = _here(2)
    with pytest.raises(errors.ExpressionError) as e:
        sc.elementwise(name, expr)
    msg = str(e.value)
    assert line in msg and f"'{name}'" in msg and "unknown function" in msg
    assert "fix: use sympy functions" in msg


def test_unknown_symbol_in_custom_loss():
    m = sc.Model("bad_loss")
    x = m.input("x", 3)
    line = _here(2)
    with pytest.raises(errors.ExpressionError) as e:
        sc.losses.custom("wrong", "log(1 + exp(y)) + q", x, x)
    msg = str(e.value)
    assert line in msg and "loss_wrong" in msg and "['q']" in msg and "args=" in msg


def test_custom_op_called_with_wrong_arity():
    gate = sc.elementwise("gate2", "x*tanh(y)")
    m = sc.Model("arity")
    x = m.input("x", 3)
    line = _here(2)
    with pytest.raises(errors.ExpressionError) as e:
        gate(x)
    msg = str(e.value)
    assert line in msg and "'gate2' takes 2 operand(s) (x, y), got 1" in msg
    assert "fix: pass one model value per symbol" in msg


def test_non_scalar_loss_and_missing_loss():
    m = sc.Model("vector_loss")
    x = m.input("x", 3)
    line = _here(2)
    with pytest.raises(errors.ModelError) as e:
        m.minimize(x)
    assert line in str(e.value) and "must be a scalar" in str(e.value)
    assert "sc.sum" in str(e.value)

    with pytest.raises(errors.ModelError, match="has no loss") as e:
        sc.compile(sc.Model("empty"), progress=False)
    assert "m.minimize" in str(e.value)


def test_loss_width_mismatch():
    m = sc.Model("widths")
    x = m.input("x", 3)
    t = m.target("t", 2)
    line = _here(2)
    with pytest.raises(errors.ShapeError) as e:
        sc.losses.squared_error(x, t)
    msg = str(e.value)
    assert line in msg and "squared_error" in msg and "same length" in msg and "fix:" in msg


# -- errors of compiled programs (shared mlp build: input x width 6, target t width 3) ---------


def _batch(prog, B=4, seed=0):
    rng = np.random.default_rng(seed)
    return {"x": rng.normal(size=(B, 6)), "t": np.eye(3)[rng.integers(0, 3, B)]}


def test_batch_missing_key(compiled):
    _, prog = compiled("mlp")
    batch = _batch(prog)
    del batch["t"]
    with pytest.raises(errors.BatchError) as e:
        prog.loss(prog.init(0), batch)
    msg = str(e.value)
    assert "no key 't'" in msg and "models.py:" in msg  # the DSL line of m.target("t", ...)
    assert "fix: add batch['t'] as an array of shape (B, 3)" in msg


def test_batch_with_wrong_width(compiled):
    _, prog = compiled("mlp")
    batch = _batch(prog)
    batch["x"] = batch["x"][:, :5]
    with pytest.raises(errors.BatchError) as e:
        prog.grad(prog.init(0), batch)
    msg = str(e.value)
    assert "batch['x'] has shape (4, 5), expected (B, 6)" in msg and "node 'x'" in msg
    assert "models.py:" in msg and "fix: cases are ROWS" in msg


def test_single_case_without_batch_axis_gets_a_hint(compiled):
    _, prog = compiled("mlp")
    batch = _batch(prog)
    batch["x"] = batch["x"][0]
    with pytest.raises(errors.BatchError, match=r"x\[None, :\]"):
        prog.loss(prog.init(0), batch)


@pytest.mark.parametrize("labels", [[0, 2, 1, 1], [0.0, 2.0, 1.0, 1.0]])
def test_integer_class_labels_get_the_one_hot_hint(compiled, labels):
    """Issue 16: labels of shape (B,) for softmax cross-entropy got "a single case needs
    x[None, :]"; targets are one-hot rows."""
    _, prog = compiled("mlp")
    batch = _batch(prog)
    batch["t"] = np.array(labels)
    with pytest.raises(errors.BatchError) as e:
        prog.loss(prog.init(0), batch)
    msg = str(e.value)
    assert "one-hot rows of width 3" in msg and "np.eye(3)[labels]" in msg
    assert "None, :" not in msg and "node 't'" in msg


def test_unknown_key_and_ragged_rows(compiled):
    _, prog = compiled("mlp")
    batch = dict(_batch(prog), y=np.zeros((4, 3)))
    with pytest.raises(errors.BatchError, match=r"unknown key\(s\) \['y'\]"):
        prog.loss(prog.init(0), batch)
    batch = _batch(prog)
    batch["t"] = batch["t"][:3]
    with pytest.raises(errors.BatchError, match="same rows"):
        prog.loss(prog.init(0), batch)


def test_nan_in_data_is_refused_not_propagated(compiled):
    _, prog = compiled("mlp")
    batch = _batch(prog)
    batch["x"][2, 1] = np.nan
    with pytest.raises(errors.NonFiniteError) as e:
        prog.grad(prog.init(0), batch)
    msg = str(e.value)
    assert "batch['x'][2, 1] = nan" in msg and "node 'x'" in msg and "models.py:" in msg
    assert "fix: clean the data" in msg


def test_non_finite_parameters_are_refused(compiled):
    _, prog = compiled("mlp")
    theta = prog.init(0)
    off = prog.params["b1"]["offset"]
    theta[off] = np.inf
    with pytest.raises(errors.NonFiniteError) as e:
        prog.loss(theta, _batch(prog))
    assert "parameter 'b1'" in str(e.value) and "fix:" in str(e.value)


def test_theta_of_wrong_length(compiled):
    _, prog = compiled("mlp")
    with pytest.raises(errors.BatchError) as e:
        prog.loss(np.zeros(prog.n_params + 1), _batch(prog))
    assert f"n_params = {prog.n_params}" in str(e.value) and "prog.flatten" in str(e.value)


def test_non_finite_result_names_the_first_bad_node(tmp_path):
    m = sc.Model("log_of_negative")
    x = m.input("x", 2)
    W = m.param("W", (2, 2), init=sc.init.constant(1.0))
    line = _here(1)
    m.minimize(sc.sum(sc.log(W @ x)))
    prog = sc.compile(m, programs=("loss",), build_dir=tmp_path / "b", progress=False)
    theta = prog.init(0)
    assert np.isfinite(prog.loss(theta, {"x": np.ones((3, 2))}))
    with pytest.raises(errors.NonFiniteError) as e:
        prog.loss(theta, {"x": -np.ones((3, 2))})
    msg = str(e.value)
    assert "non-finite 'objective'" in msg and "log" in msg and line in msg
    assert "fix: check the data range" in msg


def test_division_by_zero_is_a_non_finite_error_not_a_numba_exception(tmp_path):
    m = sc.Model("divide_by_zero")
    x = m.input("x", 2)
    w = m.param("w", 2, init=sc.init.constant(1.0))
    line = _here(1)
    m.minimize(sc.sum(w / x))
    prog = sc.compile(m, programs=("loss",), build_dir=tmp_path / "b", progress=False)
    with pytest.raises(errors.NonFiniteError) as e:
        prog.loss(prog.init(0), {"x": np.array([[1.0, 2.0], [0.0, 1.0]])})
    assert line in str(e.value) and "div" in str(e.value)


def test_non_finite_result_names_a_node_even_where_the_reference_stays_finite(tmp_path):
    """exp(100) overflows float32 but not the float64 reference interpreter: the error
    still names a node and the DSL line (it named neither)."""
    m = sc.Model("overflow32")
    x = m.input("x", 2)
    W = m.param("W", (2, 2), init=sc.init.constant(1.0))
    line = _here(1)
    m.minimize(sc.sum(sc.exp(W @ x)))
    prog = sc.compile(
        m, programs=("loss",), dtype="float32", build_dir=tmp_path / "b", progress=False
    )
    assert np.isfinite(prog.loss(prog.init(0), {"x": np.ones((2, 2))}))
    with pytest.raises(errors.NonFiniteError) as e:
        prog.loss(prog.init(0), {"x": np.full((2, 2), 50.0)})
    assert e.value.node and line in e.value.where and "non-finite 'objective'" in str(e.value)


def test_objective_that_no_parameter_reaches_is_refused():
    m = sc.Model("constant_objective")
    x = m.input("x", 2)
    m.param("W", (2, 2))
    line = _here(2)
    with pytest.raises(errors.ModelError) as e:
        m.minimize(1.0)
    assert line in str(e.value) and "does not depend on any parameter" in str(e.value)
    line = _here(2)
    with pytest.raises(errors.ModelError) as e:
        m.minimize(sc.sum(sc.tanh(x)))  # data only
    assert line in str(e.value) and "fix:" in str(e.value)


def test_parameters_that_do_not_reach_the_objective_get_a_warning():
    m = sc.Model("unused_param")
    x = m.input("x", 2)
    W = m.param("W", (2, 2))
    line = _here(1)
    m.param("V", (3, 2))
    m.minimize(sc.sum(sc.tanh(W @ x)))
    with pytest.warns(errors.UnusedParameterWarning) as w:
        m.forward_graph()
    msg = str(w[0].message)
    assert "'V'" in msg and line in msg and "'W'" not in msg


def test_elementwise_operands_of_different_widths_name_the_line():
    """Issue 16: `W @ x + b` with b of another width had no `<file>:<line>` prefix."""
    m = sc.Model("widths")
    x = m.input("x", 3)
    W = m.param("W", (2, 3))
    b = m.param("b", 4)
    lines, errs = [], []
    lines.append(_here(2))
    with pytest.raises(errors.ShapeError) as e:
        W @ x + b
    errs.append((e.value, "add"))
    lines.append(_here(2))
    with pytest.raises(errors.ShapeError) as e:
        b * sc.tanh(W @ x)
    errs.append((e.value, "mul"))
    lines.append(_here(2))
    with pytest.raises(errors.ShapeError) as e:
        sc.dot(W @ x, b)
    errs.append((e.value, "dot"))
    for line, (err, op) in zip(lines, errs):
        msg = str(err)
        assert msg.startswith(line) and f"node '{op}'" in msg and "(4,)" in msg, msg
        assert "fix:" in msg


# ---- found trying symcurv as a new user (issue 16, "keep going") ----------------------------
def test_numpy_functions_on_model_values_name_the_dsl_function():
    m = sc.Model("numpy_on_values")
    x = m.input("x", 3)
    line = _here(2)
    with pytest.raises(errors.ModelError) as e:
        np.tanh(x)
    assert line in str(e.value) and "fix: use sc.tanh(...)" in str(e.value)
    with pytest.raises(errors.ModelError, match="sc.elementwise"):
        np.sin(x)
    # numpy scalars still combine with values, on either side
    for v in (np.float64(2.0) * x, x * np.float32(2.0), np.int64(1) - x, np.negative(x)):
        assert v.shape == (3,)
    with pytest.raises(errors.ModelError, match="indexing"):
        x[0]
    with pytest.raises(errors.ModelError, match="comparison"):
        x > 0  # noqa: B015


@pytest.mark.parametrize(
    "make, fix",
    [
        (lambda: sc.init.normal(-1.0), "≥ 0"),
        (lambda: sc.init.sparse(0), "integer ≥ 1"),
        (lambda: sc.init.constant(float("nan")), "finite"),
    ],
)
def test_bad_initialiser_arguments_are_refused_where_written(make, fix):
    """normal(-1) was accepted and failed inside numpy at prog.init, without a DSL line."""
    with pytest.raises(errors.ModelError) as e:
        make()
    assert "test_errors.py:" in str(e.value) and fix in str(e.value)


def test_compile_of_something_else_than_a_model():
    with pytest.raises(errors.ModelError, match="needs an sc.Model, got str"):
        sc.compile("net")


def test_the_design_softplus_example_returns_the_builtin_op():
    """DESIGN.md and docs/dsl.md define sc.elementwise("softplus", "log(1 + exp(z))"): the
    same function as the built-in (overflow-free) softplus, so it is that op, not an error;
    a different function under the name is still refused."""
    op = sc.elementwise("softplus", "log(1 + exp(z))")
    assert op.fn is sc.softplus.fn
    with pytest.raises(errors.ExpressionError, match="already exists"):
        sc.elementwise("softplus", "log(2 + exp(z))")


def test_custom_loss_that_ignores_the_output_is_refused():
    """A custom loss in t only passed minimize's check (the output node is its operand) and
    gave a zero gradient silently."""
    m = sc.Model("t_only_loss")
    x, t = m.input("x", 3), m.target("t", 2)
    W = m.param("W", (2, 3))
    line = _here(2)
    with pytest.raises(errors.ExpressionError) as e:
        sc.losses.custom("t_only", "t**2", W @ x, t)
    assert line in str(e.value) and "does not depend on y" in str(e.value)
    # the corrected expression may reuse the name
    assert sc.losses.custom("t_only", "(y - t)**2", W @ x, t).shape == ()
