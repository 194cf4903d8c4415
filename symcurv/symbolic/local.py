"""Scalar elementwise functions and their local derivatives, derived by sympy.

An :class:`ElementwiseFn` is a sympy expression of one or more real symbols. Its partial
derivatives are new ``ElementwiseFn`` objects (``tanh_d0``, ``mul_d1``, ``student_t_d0_d0``)
registered in the same table, so derivative nodes are ordinary elementwise nodes and a
derived graph can be differentiated again. Nothing here is hand-written per function.

Conventions where sympy's answer is a distribution or sign-dependent:
``DiracDelta(...) -> 0`` (e.g. relu'' = 0, as DESIGN.md §1 fixes) and ``sign(x)**2 -> 1``
(true almost everywhere; it keeps the stable softplus's second derivative right at 0).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable, Sequence

import sympy
from sympy.core.function import Application, AppliedUndef

from symcurv import errors


@dataclasses.dataclass(frozen=True, eq=False)
class ElementwiseFn:
    """``f(s_1, ..., s_k)``: a scalar function applied elementwise to k operands."""

    name: str
    symbols: tuple[sympy.Symbol, ...]
    expr: sympy.Expr
    origin: str = ""

    @property
    def arity(self) -> int:
        return len(self.symbols)

    def partial(self, i: int) -> ElementwiseFn:
        """∂f/∂s_i, as a registered function named ``{name}_d{i}``."""
        return _partial(self, i)

    def __call__(self, *args: sympy.Expr) -> sympy.Expr:
        """The expression with the operands substituted (for fusion and oracles)."""
        return self.expr.xreplace(dict(zip(self.symbols, args)))

    def constant_value(self) -> float | None:
        return float(self.expr) if self.expr.is_number else None

    def passthrough(self) -> int | None:
        """If f(s) == s_i, the index i (the derivative of ``x + y`` w.r.t. x is 1, of
        ``x * y`` w.r.t. x is y: those nodes need not exist)."""
        for i, s in enumerate(self.symbols):
            if self.expr == s:
                return i
        return None


FUNCTIONS: dict[str, ElementwiseFn] = {}

# functions a user expression may call (sympy names); anything else is an error
ALLOWED_FUNCTIONS = (
    "exp",
    "log",
    "sqrt",
    "tanh",
    "sinh",
    "cosh",
    "sin",
    "cos",
    "tan",
    "atan",
    "asinh",
    "erf",
    "Abs",
    "Max",
    "Min",
    "sign",
    "Heaviside",
    "Piecewise",
)


# the conditions of a Piecewise
_LOGIC = ("And", "Or", "Not")


def _clean(expr: sympy.Expr) -> sympy.Expr:
    expr = expr.replace(lambda a: isinstance(a, sympy.DiracDelta), lambda a: sympy.S.Zero)
    expr = expr.replace(
        lambda a: isinstance(a, sympy.Pow) and isinstance(a.base, sympy.sign) and a.exp.is_even,
        lambda a: sympy.S.One,
    )
    return expr


def define(
    name: str, expr: sympy.Expr, symbols: Sequence[sympy.Symbol], *, origin: str = ""
) -> ElementwiseFn:
    """Register (or fetch, if identical) the function ``name``."""
    symbols = tuple(symbols)
    fn = ElementwiseFn(name, symbols, sympy.sympify(expr), origin)
    old = FUNCTIONS.get(name)
    if old is not None:
        if old.symbols == symbols and _same_function(old.expr, fn.expr, symbols):
            return old
        raise errors.ExpressionError(
            f"an elementwise function named '{name}' already exists with expression "
            f"{old.expr} (defined at {old.origin or 'symcurv'}); the new one is {fn.expr}",
            where=origin,
            fix="give the new function a different name",
        )
    _check(fn)
    FUNCTIONS[name] = fn
    return fn


def _same_function(a: sympy.Expr, b: sympy.Expr, symbols: tuple[sympy.Symbol, ...]) -> bool:
    """a == b as functions: sympy.simplify proves it, or (when it cannot, e.g. the built-in
    overflow-free softplus max(z, 0) + log(1 + e^−|z|) against the textbook log(1 + e^z))
    they agree to 1e-12 at (at least 8 of) 24 points spread over [−30, 30]^k."""
    if sympy.simplify(a - b) == 0:
        return True
    import math
    import random

    rng = random.Random(0)
    fa, fb = (sympy.lambdify(symbols, e, modules="math") for e in (a, b))
    compared = 0
    for _ in range(24):
        pt = [rng.uniform(-30, 30) for _ in symbols]
        try:
            va, vb = float(fa(*pt)), float(fb(*pt))
        except (ValueError, ZeroDivisionError, OverflowError, TypeError):
            continue  # outside one function's domain: say nothing from this point
        if not (math.isfinite(va) and math.isfinite(vb)):
            continue
        if abs(va - vb) > 1e-12 * max(1.0, abs(va), abs(vb)):
            return False
        compared += 1
    return compared >= 8


def _check(fn: ElementwiseFn) -> None:
    extra = fn.expr.free_symbols - set(fn.symbols)
    if extra:
        raise errors.ExpressionError(
            f"expression '{fn.expr}' of elementwise op '{fn.name}' uses unknown symbol(s) "
            f"{sorted(map(str, extra))}; its operands are {[str(s) for s in fn.symbols]}",
            where=fn.origin,
            node=f"'{fn.name}'",
            fix="use only the operand symbols, or list every symbol in args=(...)",
        )
    bad = sorted({type(a).__name__ for a in fn.expr.atoms(AppliedUndef)})
    # any other sympy function (DiracDelta, gamma, floor ...) is refused here, where the
    # op is defined, not at code generation (the printer knows only the allowed ones)
    bad += sorted(
        {
            type(a).__name__
            for a in fn.expr.atoms(Application)
            if not isinstance(a, AppliedUndef)
            and type(a).__name__ not in (*ALLOWED_FUNCTIONS, *_LOGIC)
        }
    )
    if bad:
        raise errors.ExpressionError(
            f"expression '{fn.expr}' of elementwise op '{fn.name}' calls unknown function(s) {bad}",
            where=fn.origin,
            node=f"'{fn.name}'",
            fix=f"use sympy functions: {', '.join(ALLOWED_FUNCTIONS)}",
        )


@functools.cache
def _partial_cached(fn_name: str, i: int) -> ElementwiseFn:
    fn = FUNCTIONS[fn_name]
    d = _clean(sympy.diff(fn.expr, fn.symbols[i]))
    if d.has(sympy.Derivative) or d.has(sympy.Subs):
        raise errors.ExpressionError(
            f"sympy cannot differentiate '{fn.expr}' with respect to {fn.symbols[i]} (got {d})",
            where=fn.origin,
            node=f"'{fn.name}'",
            fix="write the function with differentiable sympy functions "
            "(e.g. Max/Abs/Heaviside instead of floor or round)",
        )
    name = f"{fn.name}_d{i}"
    existing = FUNCTIONS.get(name)
    if existing is not None:
        return existing
    out = ElementwiseFn(name, fn.symbols, d, fn.origin)
    FUNCTIONS[name] = out
    return out


def lookup(name: str) -> ElementwiseFn:
    """The function ``name``, re-deriving a partial derivative (``tanh_d0``, ``gate_d1_d0``)
    that this process has not needed yet (a graph loaded from a build directory)."""
    fn = FUNCTIONS.get(name)
    if fn is not None:
        return fn
    base, sep, idx = name.rpartition("_d")
    if sep and idx.isdigit() and base:
        return lookup(base).partial(int(idx))
    raise KeyError(f"elementwise function '{name}' is not defined in this process")


def _partial(fn: ElementwiseFn, i: int) -> ElementwiseFn:
    if FUNCTIONS.get(fn.name) is not fn:
        raise KeyError(f"elementwise function {fn.name} is not registered")
    return _partial_cached(fn.name, i)


def real_symbols(names: Sequence[str]) -> tuple[sympy.Symbol, ...]:
    return tuple(sympy.Symbol(n, real=True) for n in names)


def parse(
    name: str,
    expr: str | Callable | sympy.Expr,
    args: Sequence[str] | None = None,
    *,
    origin: str = "",
) -> ElementwiseFn:
    """Build an ElementwiseFn from a sympy string, a sympy expression or a lambda.

    A lambda's parameters give the operand order; for a string or expression the free
    symbols are taken in alphabetical order unless ``args`` names them.
    """
    if callable(expr) and not isinstance(expr, sympy.Basic):
        params = list(inspect.signature(expr).parameters)
        syms = real_symbols(params)
        try:
            body = sympy.sympify(expr(*syms))
        except (TypeError, AttributeError, sympy.SympifyError) as e:
            raise errors.ExpressionError(
                f"calling the lambda of elementwise op '{name}' on sympy symbols failed: {e}",
                where=origin,
                node=f"'{name}'",
                fix="use sympy functions (sympy.exp, sympy.log, ...) inside the lambda, "
                "not numpy or math",
            ) from None
        return define(name, body, syms, origin=origin)
    if isinstance(expr, str):
        namespace = {f: getattr(sympy, f) for f in ALLOWED_FUNCTIONS}
        namespace.update({"pi": sympy.pi, "E": sympy.E})
        try:
            parsed = sympy.parse_expr(expr, local_dict=namespace)
        except (SyntaxError, TypeError, sympy.SympifyError, TokenErrorType) as e:
            raise errors.ExpressionError(
                f"cannot parse expression '{expr}' of elementwise op '{name}': {e}",
                where=origin,
                node=f"'{name}'",
                fix="write a sympy expression such as 'log(1 + exp(z))'",
            ) from None
    else:
        parsed = sympy.sympify(expr)
    free = sorted(parsed.free_symbols, key=lambda s: s.name)
    names = list(args) if args is not None else [s.name for s in free]
    syms = real_symbols(names)
    parsed = parsed.xreplace({s: sympy.Symbol(s.name, real=True) for s in parsed.free_symbols})
    if not syms:
        raise errors.ExpressionError(
            f"expression '{expr}' of elementwise op '{name}' has no operand symbol",
            where=origin,
            node=f"'{name}'",
            fix="use at least one symbol, e.g. 'z'",
        )
    return define(name, parsed, syms, origin=origin)


try:  # tokenize errors surface from parse_expr on unbalanced input
    from tokenize import TokenError as TokenErrorType
except ImportError:  # pragma: no cover
    TokenErrorType = SyntaxError
