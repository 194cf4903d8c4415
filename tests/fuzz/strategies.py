"""Random per-case models for property-based tests (issue 20).

A drawn model is a ``ModelSpec``: a short list of DSL statements that prints itself as a
model file a person can paste (``spec.source()``), and is BUILT FROM that text
(``spec.model()`` executes it), so what a failure message shows is exactly what was tested.
Hypothesis shrinks the statement list, the widths and the choices of ops towards the
smallest model that still fails.

What the generator covers (docs/dsl.md): 1-3 inputs of widths ≤ 6, an optional target,
vector and matrix parameters, ``W @ h`` with and without bias, a matrix reused as ``W.T``
(tied weights) or as itself, values feeding several children (every statement may read any
earlier value: branches and skips), elementwise products and sums of two branches, a
parameter vector as a gain, every built-in elementwise op, ``+ - * / **`` with numbers,
random custom ops of one and two arguments from a small sympy grammar (several with a
second derivative that changes sign), a per-case scalar broadcast against a vector,
``sc.sum``, ``sc.dot``, ``sc.softmax``, ``sc.logsumexp``, matrices and biases computed
from θ alone (``sc.tanh(W) @ h``), and at the root each built-in loss or a custom convex
loss (of a target or of an input, as in an autoencoder), possibly plus a second weighted
loss or a parameter-only penalty, or a loss-free sum of reductions.

Domains are guarded by construction, not by filtering: ``log`` only of ``1 + square(.)``
or of ``softplus(.)``, divisions only by ``1 + square(.)``, ``exp`` of a tanh or of a halved
value. Values stay well-conditioned through small scales (parameters ~ N(0, 0.8²/fan_in),
data in (0.05, 0.95)); ``leaves`` draws them and ``conditioned`` rejects the rare draw whose
values still grow large (hypothesis ``assume`` in the tests).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import linecache

import numpy as np
from hypothesis import strategies as st

import symcurv as sc
from symcurv.ir.graph import Graph

MAX_WIDTH = 6
MAX_PARAMS = 70  # keeps the dense H / G assembled column by column cheap

# one-argument custom ops: atoms of the grammar (second derivative changing sign: z**3/3 - z,
# sin, tanh-like, log(1 + z**2), z*exp(-z**2/2)); combined below into sums and products
UNARY_ATOMS = (
    "z**3/3 - z",
    "sin(z)",
    "cos(z)",
    "atan(z)",
    "log(1 + z**2)",
    "z*tanh(z)",
    "z*exp(-z**2/2)",
    "sqrt(1 + z**2)",
    "asinh(z)",
    "erf(z)",
)
# two-argument custom ops (operands in alphabetical order of their symbols: w, z)
BINARY_ATOMS = (
    "z*tanh(w)",
    "w*z",
    "sin(w)*z",
    "w*z - z**3/3",
    "log(1 + (w - z)**2)",
    "atan(w*z)",
    "w*exp(-z**2/2)",
)
# feature-separable convex losses ℓ(y, t) whose ℓ'' ≥ 0 sympy can prove
CONVEX_LOSSES = (
    "log(cosh(y - t))",
    "exp(y) - t*y",
    "sqrt(1 + (y - t)**2)",
    "(y - t)**2/2 + (y - t)**4/12",
    "log(1 + exp(y)) - t*y",
)
BUILTIN_UNARY = {  # DSL text of a domain-safe use of every built-in op; {a} is the operand
    "tanh": "sc.tanh({a})",
    "logistic": "sc.logistic({a})",
    "exp": "sc.exp(0.5 * {a})",
    "exp_tanh": "sc.exp(sc.tanh({a}))",
    "log1p_square": "sc.log(1 + sc.square({a}))",
    "log_softplus": "sc.log(sc.softplus({a}))",
    "softplus": "sc.softplus({a})",
    "square": "0.5 * sc.square({a})",
    "relu": "sc.relu({a})",
    "relu_squared": "sc.relu({a}) ** 2",  # exactly 0 for every negative operand
    "neg": "-{a}",
    "scale_shift": "0.5 * {a} - 0.25",
    "rsub": "1.5 - {a}",
    "div_scalar": "{a} / 2",
    "pow2": "{a} ** 2",
    "pow3": "0.25 * {a} ** 3",
    "rpow": "0.5 ** {a}",
    "softmax": "sc.softmax({a})",
}
BUILTIN_BINARY = {  # two values of one width
    "mul": "{a} * {b}",
    "add": "{a} + {b}",
    "sub": "{a} - {b}",
    "div": "{a} / (1 + sc.square({b}))",
    "pow": "(1 + sc.square({a})) ** sc.tanh({b})",
}
LOSSES = ("squared_error", "sigmoid_cross_entropy", "softmax_cross_entropy", "custom")


def op_name(prefix: str, expr: str) -> str:
    """Custom op names are unique per process (docs/dsl.md): derive them from the
    expression, so the same expression in two drawn models is the same op."""
    return f"{prefix}_{hashlib.sha1(expr.encode()).hexdigest()[:8]}"


@dataclasses.dataclass(frozen=True)
class Var:
    name: str
    width: int  # per-case width; 0 for a per-case scalar
    theta: bool  # depends on a parameter


@dataclasses.dataclass
class ModelSpec:
    """A drawn model as DSL statements; ``repr`` is the pasteable source."""

    inputs: list[tuple[str, int]]
    targets: list[tuple[str, int]]
    params: list[tuple[str, tuple[int, ...]]]
    customs: list[tuple[str, str, str, tuple[str, ...]]]  # (python name, op name, expr, args)
    lines: list[tuple[str, str]]  # (variable, DSL expression)
    objective: str
    loss: str | None  # the loss kind at the root; None: no loss node
    loss_weights: list[float]  # the factor of each loss node in the objective, in order
    penalty: bool  # a parameter-only term beside the loss (no Gauss-Newton split)

    @property
    def n_params(self) -> int:
        return sum(int(np.prod(s)) for _, s in self.params)

    @property
    def gauss_newton(self) -> bool:
        """Whether the objective has a Gauss-Newton split: a loss of the network output
        with nothing depending on θ outside it."""
        return self.loss is not None and not self.penalty

    def source(self) -> str:
        out = ["import symcurv as sc", ""]
        for py, name, expr, args in self.customs:
            out.append(f"{py} = sc.elementwise({name!r}, {expr!r}, args={args!r})")
        out += ["", "", "def model():", '    m = sc.Model("fuzz")']
        for name, width in self.inputs:
            out.append(f'    {name} = m.input("{name}", {width})')
        for name, width in self.targets:
            out.append(f'    {name} = m.target("{name}", {width})')
        for name, shape in self.params:
            fan_in = shape[-1] if len(shape) == 2 else 1
            std = round(0.8 / np.sqrt(fan_in), 3)
            shape_src = shape[0] if len(shape) == 1 else shape
            out.append(f'    {name} = m.param("{name}", {shape_src}, init=sc.init.normal({std}))')
        out += [f"    {v} = {e}" for v, e in self.lines]
        out += [f"    m.minimize({self.objective})", "    return m", ""]
        return "\n".join(out)

    def __repr__(self) -> str:
        return "ModelSpec, as DSL source:\n" + self.source()

    def _repr_pretty_(self, p, cycle: bool) -> None:  # hypothesis prints examples with this
        p.text(repr(self))

    def model(self) -> sc.Model:
        """Build the model by running the printed source (registered with linecache, so
        every node's origin names its line)."""
        src = self.source()
        fname = f"<fuzz model {hashlib.sha1(src.encode()).hexdigest()[:10]}>"
        linecache.cache[fname] = (len(src), None, src.splitlines(True), fname)
        namespace: dict = {}
        exec(compile(src, fname, "exec"), namespace)  # noqa: S102 - the test's own source
        return namespace["model"]()

    def forward(self) -> Graph:
        return self.model().forward_graph()


def leaves(forward: Graph, seed: int, B: int = 2) -> dict[str, np.ndarray]:
    """Data in (0.05, 0.95) (valid targets for every loss), parameters N(0, 0.8²/fan_in)
    like the printed initialisers."""
    rng = np.random.default_rng(seed)
    out = {}
    for n in forward.nodes():
        if n.op in ("input", "target"):
            out[n.name] = rng.uniform(0.05, 0.95, size=(B, *n.shape))
        elif n.op == "param":
            fan_in = n.shape[-1] if len(n.shape) == 2 else 1
            out[n.name] = rng.normal(size=n.shape) * 0.8 / np.sqrt(fan_in)
    return out


def conditioned(forward: Graph, values: dict[str, np.ndarray], kink: float = 0.05) -> bool:
    """Every value of the forward pass finite and below 30 in magnitude, and every relu
    operand at least ``kink`` away from 0: the finite differences of the tests move θ by
    at most 2e-3 (the five-point stencil), which must not carry an operand across relu's
    kink, where the derivatives are only defined almost everywhere."""
    from symcurv.runtime.reference import evaluate

    vals = evaluate(forward, values, keep_all=True)
    for v in vals.values():
        if not np.all(np.isfinite(v)) or np.max(np.abs(v), initial=0.0) > 30:
            return False
    for n in forward.nodes():
        if n.op == "elementwise" and n.attr("fn") == "relu":
            if np.min(np.abs(vals[n.inputs[0]]), initial=np.inf) < kink:
                return False
    return True


@st.composite
def custom_expr(draw, atoms: tuple[str, ...]) -> str:
    """An atom, or a sum / product of two atoms with small coefficients (the grammar)."""
    first = draw(st.sampled_from(atoms))
    kind = draw(st.sampled_from(("atom", "sum", "product")))
    if kind == "atom":
        return first
    second = draw(st.sampled_from(atoms))
    c = draw(st.sampled_from((0.5, -0.5, 2.0)))
    return f"{first} + {c}*({second})" if kind == "sum" else f"({first})*({second})"


@st.composite
def model_specs(draw, min_steps: int = 1, max_steps: int = 8) -> ModelSpec:
    """A random model of ``min_steps`` to ``max_steps`` statements (see the module
    docstring)."""
    n_in = draw(st.integers(1, 3))
    width = st.integers(1, MAX_WIDTH)
    inputs = [(f"x{i}", draw(width)) for i in range(n_in)]
    vars_ = [Var(name, w, False) for name, w in inputs]
    params: list[tuple[str, tuple[int, ...]]] = []
    customs: list[tuple[str, str, str, tuple[str, ...]]] = []
    lines: list[tuple[str, str]] = []
    counter = itertools.count()

    def n_params() -> int:
        return sum(int(np.prod(s)) for _, s in params)

    def new_param(shape: tuple[int, ...], prefix: str) -> str:
        name = f"{prefix}{len(params)}"
        params.append((name, shape))
        return name

    def emit(expr: str, w: int, theta: bool) -> Var:
        v = Var(f"h{next(counter)}", w, theta)
        lines.append((v.name, expr))
        vars_.append(v)
        return v

    def custom(atoms: tuple[str, ...], args: tuple[str, ...]) -> str:
        expr = draw(custom_expr(atoms))
        prefix = "act" if len(args) == 1 else "mix"
        name = op_name(prefix, expr)
        py = f"{prefix}{len(customs)}"  # never a parameter's name (W, b, g + a number)
        for c in customs:
            if c[1] == name:
                return c[0]
        customs.append((py, name, expr, args))
        return py

    def recent(candidates: list[Var]) -> Var:
        """Mostly the newest value (shrinking goes there too), so that the statements form
        chains that reach the root; older ones make branches and skips."""
        older = draw(st.integers(0, 3)) == 0  # one time in four
        return candidates[-1 - (draw(st.integers(0, len(candidates) - 1)) if older else 0)]

    def dense(h: Var) -> Var:
        """W @ h (+ b): a new matrix, or an existing one reused as itself or as W.T."""
        reuse = [(p, s[1], True) for p, s in params if len(s) == 2 and s[0] == h.width]
        reuse += [(p, s[0], False) for p, s in params if len(s) == 2 and s[1] == h.width]
        if reuse and draw(st.booleans()):
            p, out_w, transposed = draw(st.sampled_from(reuse))
            W = f"{p}.T" if transposed else p
        else:
            out_w = draw(width)
            W = new_param((out_w, h.width), "W")
        # now and then a matrix computed from θ alone (CP's unbatched "θ-only case")
        form = draw(st.sampled_from(("{W}", "{W}", "{W}", "sc.tanh({W})", "(0.5 * {W} * {W})")))
        expr = f"{form.format(W=W)} @ {h.name}"
        if draw(st.booleans()):
            b = draw(st.sampled_from(("{b}", "{b}", "sc.tanh({b})")))
            expr += f" + {b.format(b=new_param((out_w,), 'b'))}"
        return emit(expr, out_w, True)

    n_steps = draw(st.integers(min_steps, max_steps))
    dense(recent(vars_))  # at least one parameter
    for _ in range(n_steps - 1):
        kind = draw(
            st.sampled_from(
                ("dense", "unary", "custom1", "binary", "custom2", "gain", "scalar", "dense")
            )
        )
        if n_params() + MAX_WIDTH * (MAX_WIDTH + 1) > MAX_PARAMS and kind in ("dense", "gain"):
            kind = "unary"
        a = recent(vars_)
        same = [v for v in vars_ if v.width == a.width]
        if kind == "dense":
            dense(a)
        elif kind == "unary":
            op = draw(st.sampled_from(sorted(BUILTIN_UNARY)))
            emit(BUILTIN_UNARY[op].format(a=a.name), a.width, a.theta)
        elif kind == "custom1":
            emit(f"{custom(UNARY_ATOMS, ('z',))}({a.name})", a.width, a.theta)
        elif kind in ("binary", "custom2"):
            b = recent(same)
            if kind == "binary":
                op = draw(st.sampled_from(sorted(BUILTIN_BINARY)))
                expr = BUILTIN_BINARY[op].format(a=a.name, b=b.name)
            else:
                expr = f"{custom(BINARY_ATOMS, ('w', 'z'))}({a.name}, {b.name})"
            emit(expr, a.width, a.theta or b.theta)
        elif kind == "gain":
            emit(f"{new_param((a.width,), 'g')} * {a.name}", a.width, True)
        else:  # a per-case scalar (sum, dot, logsumexp) broadcast against a vector
            b = recent(same)
            red = draw(st.sampled_from(("sc.sum({a})", "sc.dot({a}, {b})", "sc.logsumexp({a})")))
            s = red.format(a=a.name, b=b.name)
            emit(f"0.5 * {s} * {b.name}", b.width, a.theta or b.theta)

    # the root: a θ-dependent output
    outs = [v for v in vars_ if v.theta]
    y = recent(outs)
    loss = draw(st.sampled_from((*LOSSES, None)))
    targets: list[tuple[str, int]] = []
    weights: list[float] = []
    penalty = False

    def loss_of(kind: str, y: Var) -> str:
        """``kind`` of ``y`` against a new target or an input of y's width."""
        same_in = [name for name, w in inputs if w == y.width]
        if same_in and draw(st.booleans()):  # an input as the target (autoencoder)
            t_name = draw(st.sampled_from(same_in))
        else:
            t_name = "t" if not targets else f"t{len(targets)}"
            targets.append((t_name, y.width))
        if kind == "custom":
            expr = draw(st.sampled_from(CONVEX_LOSSES))
            return f"sc.losses.custom({op_name('loss', expr)!r}, {expr!r}, {y.name}, {t_name})"
        return f"sc.losses.{kind}({y.name}, {t_name})"

    if loss is None:  # no loss node: a sum of reductions
        terms = [f"sc.logsumexp({y.name})"]
        other = [v for v in vars_ if v.width == y.width and v is not y]
        extra = draw(st.sampled_from(("sum", "dot", "none")))
        if extra == "sum":
            terms.append(f"0.5 * sc.sum(sc.tanh({y.name}))")
        elif extra == "dot" and other:
            terms.append(f"0.5 * sc.dot({y.name}, {draw(st.sampled_from(other)).name})")
        objective = " + ".join(terms)
    else:
        objective = loss_of(loss, y)
        weights.append(1.0)
        others = [v for v in outs if v is not y]
        if others and draw(st.integers(0, 3)) == 0:  # a second loss: a weighted sum
            second = loss_of(draw(st.sampled_from(LOSSES)), recent(others))
            objective += f" + 0.5 * {second}"
            weights.append(0.5)
        if draw(st.integers(0, 3)) == 0:  # a weight-decay term beside the loss
            p = draw(st.sampled_from([name for name, _ in params]))
            objective += f" + 0.05 * sc.sum(sc.square({p}))"
            penalty = True
    return ModelSpec(inputs, targets, params, customs, lines, objective, loss, weights, penalty)
