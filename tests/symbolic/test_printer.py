"""The scalar printer: printed Python evaluates to what sympy evaluates, operator
precedence included, and cse shares work between a function and its derivatives."""

import math
import re

import numba
import numpy as np
import pytest
import sympy

from symcurv.runtime import vecmath
from symcurv.symbolic import printer

x, y, z = sympy.symbols("x y z", real=True)

EXPRESSIONS = [
    x / (y + 1) * (z + 1),  # once printed as x/(t0+1)*(t0+1) with wrong grouping
    (x + y) ** 2 - (x - y) ** 3 + x**-1 + (y * z) ** 4,
    sympy.sqrt(x**2 + 1) + (x**2 + 1) ** sympy.Rational(3, 2) + (y**2 + 2) ** sympy.Rational(1, 3),
    sympy.exp(-x) / (1 + sympy.exp(-x)) ** 2,
    sympy.log(1 + sympy.exp(-abs(x))) + sympy.Max(0, x) - sympy.Min(y, z),
    sympy.Heaviside(x) * y + sympy.sign(y) * z - sympy.Abs(z),
    sympy.tanh(x * y) * (1 - sympy.tanh(x * y) ** 2) + sympy.atan(z) + sympy.erf(x),
    sympy.Piecewise((x**2, x > 0), (-y, True)) + sympy.asinh(z) + sympy.cosh(y),
    -(x - y) / -(z - 2) + 2 ** (x - y),
    # exps of integer multiples share one exp (printer.share_exps); negative powers divide
    sympy.exp(3 * x) + sympy.exp(-x) - sympy.exp(-2 * x - 2 * y) / (1 + sympy.exp(-x - y)) ** 3,
]


def _compile(lines: list[str]):
    scope = {"math": math, "vm": vecmath}
    exec("\n".join(lines), scope)
    return scope["f"]


@pytest.mark.parametrize("target", ["cpu", "cuda"])
@pytest.mark.parametrize("expr", EXPRESSIONS, ids=range(len(EXPRESSIONS)))
def test_printed_code_evaluates_like_sympy(expr, target):
    # as symbolic.local does: the derivative of a step is 0 almost everywhere
    d = sympy.diff(expr, x).replace(sympy.DiracDelta, lambda *a: sympy.S.Zero)
    lines = printer.scalar_function("f", [x, y, z], [expr, d], target=target)
    if target == "cuda":  # device code has no vecmath: plain math functions only, and no
        # two-argument max/min, which Numba >= 0.66 cannot compile for CUDA (numba#10753)
        assert not re.search(r"vm\.|\bmax\(|\bmin\(", "\n".join(lines))
    f = _compile(lines)
    rng = np.random.default_rng(0)
    for point in rng.uniform(-2, 2, size=(20, 3)):
        point = point + np.array([0.0, 0.0, 5.0 if "z - 2" in str(expr) else 0.0])
        subs = dict(zip((x, y, z), map(float, point)))
        got = f(*map(float, point))
        for g, e in zip(got, (expr, d)):
            want = float(e.subs(subs).evalf())
            assert g == pytest.approx(want, rel=1e-12, abs=1e-12), (str(e), subs)


def test_cse_shares_the_exp_of_logistic_and_its_derivative():
    s = 1 / (1 + sympy.exp(-(x + y)))
    src = "\n".join(printer.scalar_function("f", [x, y], [s, sympy.diff(s, x)]))
    assert src.count("exp(") == 1 and "vm.exp(" in src, src


def test_logistic_second_derivative_needs_one_exp():
    """exp(-u) and exp(-2u) in σ'' : the second is printed as the square of the first."""
    s = 1 / (1 + sympy.exp(-(x + y)))
    src = "\n".join(printer.scalar_function("f", [x, y], [s, sympy.diff(s, x, 2)]))
    assert src.count("exp(") == 1 and "**" not in src, src


def test_output_is_deterministic_and_uses_temporaries_t0_t1():
    e = [sympy.tanh(x + y), 1 - sympy.tanh(x + y) ** 2]
    a = printer.scalar_function("f", [x, y], e, doc="d")
    b = printer.scalar_function("f", [x, y], e, doc="d")
    assert a == b and any(ln.strip().startswith("t0 = ") for ln in a)
    assert a[1] == '    """d"""'


@pytest.mark.parametrize("expr", EXPRESSIONS, ids=range(len(EXPRESSIONS)))
def test_numpy_function_evaluates_arrays_like_sympy(expr):
    """The reference interpreter's evaluator takes arrays for every allowed function.
    Found by tests/fuzz: with lambdify's plain "numpy" module, ``erf`` became ``math.erf``
    and any custom op using it raised a TypeError on the interpreter's arrays."""
    rng = np.random.default_rng(3)
    pts = rng.uniform(-2, 2, size=(3, 5))
    got = printer.numpy_function([x, y, z], expr)(*pts)
    want = [float(expr.subs({x: a, y: b, z: c})) for a, b, c in pts.T]
    assert np.allclose(got, want, rtol=1e-12, atol=1e-12)


def test_a_model_with_erf_runs_in_the_reference_interpreter():
    """The shrunk model of the fuzz failure (tests/fuzz, issue 20)."""
    import symcurv as sc
    from symcurv.runtime.reference import evaluate

    act = sc.elementwise("erf_regression", "erf(z)")
    m = sc.Model("fuzz")
    x0 = m.input("x0", 1)
    W0 = m.param("W0", (1, 1))
    m.minimize(sc.sum(act(W0 @ x0)))
    out = evaluate(m.forward_graph(), {"x0": np.array([[0.5], [-1.0]]), "W0": np.eye(1)})
    assert np.isclose(out["objective"], (math.erf(0.5) + math.erf(-1.0)) / 2, rtol=1e-14)


# forms that overflow although their value is finite (issue 16): log cosh and its
# derivatives (sinh/cosh quotients), any power of the quotient, inside larger expressions;
# log(1 + exp(u)) and exp(k·u)/(1 + exp(u))^n
OVERFLOWING = [
    sympy.log(sympy.cosh(x - y)),
    sympy.diff(sympy.log(sympy.cosh(x - y)), x, 3),
    sympy.sinh(x) ** 3 / sympy.cosh(x) ** 3 * sympy.exp(-(y**2)),
    y * sympy.cosh(2 * x) / sympy.sinh(2 * x) + sympy.log(sympy.cosh(x)) ** 2,
    # the textbook softplus and its derivatives (exp(u)/(1 + exp(u)) = inf/inf past 709)
    sympy.log(1 + sympy.exp(x - y)),
    sympy.diff(sympy.log(1 + sympy.exp(x - y)), x, 3),
    # the logistic's derivative as sympy writes it
    sympy.diff(1 / (1 + sympy.exp(-x)), x, 2) * y,
]


@pytest.mark.parametrize("target", ["cpu", "cuda"])
@pytest.mark.parametrize("expr", OVERFLOWING, ids=range(len(OVERFLOWING)))
def test_overflowing_forms_print_overflow_free(expr, target):
    """Printed code equals sympy's exact value at ordinary AND at overflowing arguments
    (|x| ≈ 800: cosh(800) = inf in float64, so the naive forms give inf/inf = NaN)."""
    # compiled as the kernels are: IEEE inf instead of Python's OverflowError and
    # ZeroDivisionError (exp(800) = inf and 1/inf = 0 are part of the overflow-free forms)
    f = numba.njit(error_model="numpy")(
        _compile(printer.scalar_function("f", [x, y, z], [expr], target=target))
    )
    for px, py in [(0.3, -0.7), (-1.5, 0.2), (800.0, 0.5), (-812.25, 1.0), (400.0, -405.0)]:
        want = float(expr.subs({x: px, y: py}).evalf(30))
        got = f(px, py, 0.0)
        assert math.isfinite(got) and got == pytest.approx(want, rel=1e-12, abs=1e-12), (px, py)


def test_stable_rewrite_is_general_not_per_function():
    assert printer.stable(sympy.sinh(z) / sympy.cosh(z)) == sympy.tanh(z)
    assert printer.stable(sympy.cosh(z) ** 2 / sympy.sinh(z) ** 3) == 1 / (
        sympy.sinh(z) * sympy.tanh(z) ** 2
    )
    # no quotient, nothing to rewrite
    e = 2 * sympy.sinh(z) * sympy.cosh(z) + sympy.log(z**2 + 1)
    assert printer.stable(e) == e
