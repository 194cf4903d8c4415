"""sympy -> scalar Python source that Numba (CPU) and Numba-CUDA (device functions) compile.

The same printed function body serves both targets: only ``math`` functions, ``abs``,
``min``/``max`` and conditional expressions, all of which ``numba.njit`` and
``cuda.jit(device=True)`` accept. Two differences, chosen by ``target``: on the CPU ``exp``,
``log`` and ``tanh`` print as ``vm.exp``/``vm.log``/``vm.tanh`` (symcurv.runtime.vecmath),
branch-free versions that LLVM vectorises, because pip-installed Numba calls scalar libm
for ``math.exp``; for CUDA
``max``/``min`` print as conditional expressions (see ``CudaScalarPrinter``).
Before printing, :func:`stable` rewrites forms that overflow although their value is
finite (sinh/cosh ratios, log cosh, log(1 + exp), exp/(1 + exp) ratios) into overflow-free
equivalents, for both targets and the reference interpreter alike; they may rely on IEEE
infinities (exp(800) = inf, 1/inf = 0), which the kernels' ``error_model='numpy'`` keeps.
``sympy.cse`` factors the shared subexpressions of a fused group's outputs, so e.g.
``tanh(a)`` is computed once for the value and its derivative.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import sympy
from sympy.printing.pycode import PythonCodePrinter

from symcurv import errors


class ScalarPrinter(PythonCodePrinter):
    """PythonCodePrinter with float literals and branch-free friendly conditionals."""

    def literal(self, value: float) -> str:
        """A number in the printed source (every literal goes through here)."""
        return repr(float(value))

    def _print_Heaviside(self, expr: sympy.Heaviside) -> str:
        x, one, half, zero = self._print(expr.args[0]), *map(self.literal, (1, 0.5, 0))
        return f"({one} if {x} > 0 else ({half} if {x} == 0 else {zero}))"

    def _print_sign(self, expr: sympy.sign) -> str:
        x, one, minus, zero = self._print(expr.args[0]), *map(self.literal, (1, -1, 0))
        return f"({one} if {x} > 0 else ({minus} if {x} < 0 else {zero}))"

    def _print_Rational(self, expr: sympy.Rational) -> str:
        return self.literal(float(expr))

    def _print_Integer(self, expr: sympy.Integer) -> str:
        return self.literal(float(expr))

    def _print_Float(self, expr: sympy.Float) -> str:
        return self.literal(float(expr))

    def _print_Half(self, expr: sympy.Expr) -> str:
        return self.literal(0.5)

    def _print_Exp1(self, expr: sympy.Expr) -> str:
        return self.literal(np.e)

    def _print_Pi(self, expr: sympy.Expr) -> str:
        return self.literal(np.pi)

    def _print_Pow(self, expr: sympy.Pow, rational: bool = False) -> str:
        base, exp = expr.args
        if exp == sympy.S.Half:
            return f"math.sqrt({self._print(base)})"
        if exp.is_Integer and 1 < int(exp) <= 4:  # x*x is faster and exact in both targets
            b = self.parenthesize(base, 100)
            return "(" + "*".join([b] * int(exp)) + ")"
        if exp.is_Integer and -4 <= int(exp) <= -1:  # a division, not a pow() call
            b = self.parenthesize(base, 100)
            den = "(" + "*".join([b] * -int(exp)) + ")" if exp != -1 else b
            return f"({self.literal(1)}/{den})"
        return super()._print_Pow(expr, rational=rational)


class CpuScalarPrinter(ScalarPrinter):
    """exp, log and tanh through symcurv.runtime.vecmath (``vm`` in the CPU kernels)."""

    def _print_exp(self, expr: sympy.Expr) -> str:
        return f"vm.exp({self._print(expr.args[0])})"

    def _print_log(self, expr: sympy.Expr) -> str:
        return f"vm.log({self._print(expr.args[0])})"

    def _print_tanh(self, expr: sympy.Expr) -> str:
        return f"vm.tanh({self._print(expr.args[0])})"


class CudaScalarPrinter(ScalarPrinter):
    """max/min as conditional expressions: Numba ≥ 0.66 fails to compile the two-argument
    builtins for CUDA ("Signature mismatch: 2 argument types given", numba#10753). The
    conditional keeps Python's rule (the first argument unless another is strictly
    greater/smaller), so both targets agree, NaN included."""

    def _extremum(self, expr: sympy.Expr, op: str) -> str:
        first, *rest = [self._print(a) for a in expr.args]
        for b in rest:
            first = f"({b} if {b} {op} {first} else {first})"
        return first

    def _print_Max(self, expr: sympy.Expr) -> str:
        return self._extremum(expr, ">")

    def _print_Min(self, expr: sympy.Expr) -> str:
        return self._extremum(expr, "<")


class Float32Literals:
    """float32 builds: every literal prints as ``F(...)`` (``F = np.float32`` in the
    generated file) and the batch size B as ``F(B)``. Numba types a bare ``0.5`` as float64
    and an integer B as int64, and either promotes a whole float32 formula to float64."""

    def literal(self, value: float) -> str:
        return f"F({float(value)!r})"

    def _print_Symbol(self, expr: sympy.Symbol) -> str:
        return "F(B)" if expr.name == "B" else super()._print_Symbol(expr)


class CudaFloat32Printer(Float32Literals, CudaScalarPrinter):
    """float32 on the GPU: in float64, math.exp becomes exp instead of expf, which runs at
    1/2 (H100) to 1/64 (consumer GPUs) of the float32 rate."""


class CpuFloat32Printer(Float32Literals, CpuScalarPrinter):
    """float32 on the CPU: the formula stays float32, so vecmath picks its float32 exp, log
    and tanh (16 lanes with AVX-512 instead of 8); ``1.0 - t*t`` would compute the map in
    float64."""


def _tanh_ratios(mul: sympy.Mul) -> sympy.Expr:
    """sinh(u)^p cosh(u)^q with p, q of opposite signs -> tanh(u)^k sinh(u)^(p-k)
    cosh(u)^(q+k), k = ±min(|p|, |q|): sinh(u)/cosh(u) is inf/inf = NaN once |u| > 710,
    tanh(u) never overflows (the derivatives of log cosh, tanh's own quotient forms)."""
    powers: dict[tuple[type, sympy.Expr], sympy.Expr] = {}
    rest = []
    for f in mul.args:
        base, exp = f.as_base_exp()
        if isinstance(base, (sympy.sinh, sympy.cosh)) and exp.is_Integer:
            k = (type(base), base.args[0])
            powers[k] = powers.get(k, sympy.S.Zero) + exp
        else:
            rest.append(f)
    if not any(
        (sympy.cosh, u) in powers and p * powers[(sympy.cosh, u)] < 0
        for (f, u), p in powers.items()
        if f is sympy.sinh
    ):
        return mul
    out = []
    for u in dict.fromkeys(u for _f, u in powers):
        p, q = powers.get((sympy.sinh, u), 0), powers.get((sympy.cosh, u), 0)
        k = sympy.sign(p) * min(abs(p), abs(q)) if p * q < 0 else 0
        out += [sympy.tanh(u) ** k, sympy.sinh(u) ** (p - k), sympy.cosh(u) ** (q + k)]
    return sympy.Mul(*rest, *out)


def _log_cosh(e: sympy.log) -> sympy.Expr:
    """log(cosh(u)) = |u| + log(1 + exp(−2|u|)) − log 2, finite for every finite u (the
    form the built-in softplus is defined in: max(z, 0) + log(1 + exp(−|z|)))."""
    u = e.args[0].args[0]
    return sympy.Abs(u) + sympy.log(1 + sympy.exp(-2 * sympy.Abs(u))) - sympy.Float(math.log(2))


def _one_plus_exp(e: sympy.Expr) -> sympy.Expr | None:
    """u when ``e`` is 1 + exp(u), else None."""
    if isinstance(e, sympy.Add) and len(e.args) == 2 and sympy.S.One in e.args:
        (other,) = [a for a in e.args if a != sympy.S.One]
        if isinstance(other, sympy.exp):
            return other.args[0]
    return None


def _log1p_exp(e: sympy.log) -> sympy.Expr:
    """log(1 + exp(u)) = max(u, 0) + log(1 + exp(−|u|)): the textbook softplus overflows
    to inf once u > 709, this form never does (the built-in softplus is defined so)."""
    u = _one_plus_exp(e.args[0])
    if u.is_nonpositive:  # already bounded: log(1 + exp(−|z|)), the stable form itself
        return e
    return sympy.Max(u, 0) + sympy.log(1 + sympy.exp(-sympy.Abs(u)))


def _logistic_ratios(mul: sympy.Mul) -> sympy.Expr:
    """exp(k·u) (1 + exp(u))^(−n), 1 ≤ k ≤ n integers -> (1 + exp(−u))^(−k) (1 + exp(u))^(k−n):
    the same value with every factor in [0, 1], where the left form is inf/inf = NaN once
    u > 709 (the derivatives of the textbook softplus and of a logistic written as
    exp(u)/(1 + exp(u)))."""
    dens = {}
    for f in mul.args:
        base, exp = f.as_base_exp()
        u = _one_plus_exp(base)
        # with u ≤ 0 (exp(−|z|)/(1 + exp(−|z|))) every factor is bounded already
        if u is not None and exp.is_Integer and exp < 0 and not u.is_nonpositive:
            dens[u] = (f, -int(exp))
    if not dens:
        return mul
    # sympy writes derivatives as (Σ_i exp(k_i·u)/(1 + exp(u))^(n_i)) / (1 + exp(u)):
    # distribute that one sum so that each term's exp meets its denominators
    for f in mul.args:
        if isinstance(f, sympy.Add) and f.has(sympy.exp):
            rest = [g for g in mul.args if g is not f]
            return sympy.Add(*[_logistic_ratios_of(sympy.Mul(term, *rest)) for term in f.args])
    out = list(mul.args)
    for i, f in enumerate(mul.args):
        if not isinstance(f, sympy.exp):
            continue
        for u, (den, n) in dens.items():
            k = sympy.simplify(f.args[0] / u)
            if k.is_Integer and 1 <= int(k) <= n and den in out:
                k = int(k)
                out[i] = (1 + sympy.exp(-u)) ** (-k)
                out[out.index(den)] = (1 + sympy.exp(u)) ** (k - n)
                break
    return sympy.Mul(*out)


def _logistic_ratios_of(e: sympy.Expr) -> sympy.Expr:
    return _logistic_ratios(e) if isinstance(e, sympy.Mul) else e


def stable(expr: sympy.Expr) -> sympy.Expr:
    """``expr`` with its overflow-prone forms rewritten into equal, overflow-free ones
    (general rules over any expression, not per function): see ``_tanh_ratios``,
    ``_log_cosh``, ``_log1p_exp`` and ``_logistic_ratios``. Derivatives are taken before
    this, from the user's own expression."""
    expr = sympy.sympify(expr)
    expr = expr.replace(
        lambda a: isinstance(a, sympy.log) and isinstance(a.args[0], sympy.cosh), _log_cosh
    )
    expr = expr.replace(
        lambda a: isinstance(a, sympy.log) and _one_plus_exp(a.args[0]) is not None, _log1p_exp
    )
    expr = expr.replace(lambda a: isinstance(a, sympy.Mul), _logistic_ratios)
    return expr.replace(lambda a: isinstance(a, sympy.Mul), _tanh_ratios)


_SETTINGS = {"fully_qualified_modules": True, "strict": True}
PRINTERS = {
    "cpu": CpuScalarPrinter(_SETTINGS),
    "cpu/float32": CpuFloat32Printer(_SETTINGS),
    "cuda": CudaScalarPrinter(_SETTINGS),
    "cuda/float32": CudaFloat32Printer(_SETTINGS),
}


def print_expr(expr: sympy.Expr, target: str = "cpu") -> str:
    try:
        return PRINTERS[target].doprint(expr)
    except Exception as e:  # sympy raises several printer error types
        raise errors.ExpressionError(
            f"cannot generate code for '{expr}': {e}",
            fix="use functions from symcurv.symbolic.local.ALLOWED_FUNCTIONS",
        ) from None


def share_exps(
    outputs: Sequence[sympy.Expr], taken: set[str]
) -> tuple[list[tuple[sympy.Symbol, sympy.Expr]], list[sympy.Expr]]:
    """exp(k·u) for several integer k becomes one ``e = exp(u₀)`` and its powers (written
    as products and divisions): the logistic's second derivative holds exp(-a) and
    exp(-2a), and CSE alone cannot see that the second is the square of the first, so every
    element would pay a second exp. Returns the shared exps and the rewritten outputs."""
    groups: dict[sympy.Expr, list[tuple[int, sympy.Expr]]] = {}
    for e in set().union(*(sympy.sympify(o).atoms(sympy.exp) for o in outputs)):
        c, rest = sympy.factor_terms(e.args[0]).as_coeff_Mul()
        if c.is_Integer and c != 0:
            groups.setdefault(rest, []).append((int(c), e))
    names = sympy.numbered_symbols("texp", exclude=[sympy.Symbol(n) for n in taken])
    shared, subs = [], {}
    for rest, members in sorted(groups.items(), key=lambda kv: sympy.default_sort_key(kv[0])):
        if len(members) < 2:
            continue
        base = min((c for c, _ in members), key=lambda c: (abs(c), -c))
        if any(c % base or not 1 <= abs(c // base) <= 4 for c, _ in members):
            continue
        sym = next(names)
        shared.append((sym, sympy.exp(base * rest)))
        subs.update({e: sym ** (c // base) for c, e in members})
    return shared, [sympy.sympify(o).xreplace(subs) for o in outputs]


def scalar_function(
    name: str,
    args: Sequence[sympy.Symbol],
    outputs: Sequence[sympy.Expr],
    doc: str = "",
    target: str = "cpu",
) -> list[str]:
    """Source lines of ``def name(args): ...; return outputs`` with common subexpressions
    factored by ``sympy.cse``. Temporaries are named ``t0, t1, ...`` (deterministic)."""
    temps = sympy.numbered_symbols("t")
    # No "basic" pre-optimisations: they pull out the argument sum (a + b) first and then
    # miss exp(-(a + b)) shared by the logistic and its derivative, a second exp per
    # element in every gradient map.
    shared, outputs = share_exps([stable(o) for o in outputs], {a.name for a in args})
    repl, reduced = sympy.cse(list(outputs), symbols=temps)
    lines = [f"def {name}({', '.join(a.name for a in args)}):"]
    if doc:
        lines.append(f'    """{doc}"""')
    for sym, e in shared:
        lines.append(f"    {sym} = {print_expr(e, target)}")
    for sym, e in repl:
        lines.append(f"    {sym} = {print_expr(e, target)}")
    rets = [print_expr(e, target) for e in reduced]
    lines.append(f"    return {', '.join(rets)}")
    return lines


def numpy_function(args: Sequence[sympy.Symbol], expr: sympy.Expr) -> Callable:
    """A numpy-vectorised evaluator (the reference interpreter's elementwise semantics).
    scipy supplies the special functions numpy lacks (``erf``: plain "numpy" would print
    ``math.erf``, which refuses arrays)."""
    f = sympy.lambdify(list(args), stable(expr), modules=["numpy", "scipy"])

    def call(*xs: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            out = f(*xs)
        return np.broadcast_to(out, np.broadcast_shapes(*[np.shape(x) for x in xs]))

    return call
