"""Elementwise maps ``y = f(x_1, ..., x_k)`` with f a sympy expression, and broadcasts.

One primitive, ``elementwise``, covers tanh, logistic, +, *, user functions...: the node's
``fn`` attribute names an :class:`~symcurv.symbolic.local.ElementwiseFn`. Its rules:

    pullback    x̄_i = unbroadcast(ȳ ⊙ ∂f/∂x_i(x))
    pushforward ẏ   = Σ_i ∂f/∂x_i(x) ⊙ ẋ_i

where ``∂f/∂x_i`` is itself an elementwise function sympy derived. Operands must share one
shape or be scalars (shape ``()``), which broadcast.
"""

from __future__ import annotations

import functools

import numpy as np
import sympy

from symcurv import errors
from symcurv.ir.graph import Graph, Node
from symcurv.ops import curvature as curv
from symcurv.ops.registry import PrimitiveDef, emit, register
from symcurv.symbolic import local, printer

# ---- built-in functions (DESIGN.md §1) -------------------------------------------------
_x, _y = local.real_symbols("xy")
_z = local.real_symbols("z")[0]
BUILTINS = {
    "add": (_x + _y, (_x, _y)),
    "sub": (_x - _y, (_x, _y)),
    "mul": (_x * _y, (_x, _y)),
    "div": (_x / _y, (_x, _y)),
    "pow": (_x**_y, (_x, _y)),
    "neg": (-_z, (_z,)),
    "identity": (_z, (_z,)),
    "tanh": (sympy.tanh(_z), (_z,)),
    "logistic": (1 / (1 + sympy.exp(-_z)), (_z,)),
    "exp": (sympy.exp(_z), (_z,)),
    "log": (sympy.log(_z), (_z,)),
    # log(1 + e^z) written so that neither e^z nor log overflows for large |z|
    "softplus": (sympy.Max(_z, 0) + sympy.log(1 + sympy.exp(-sympy.Abs(_z))), (_z,)),
    "square": (_z**2, (_z,)),
    "relu": (sympy.Max(_z, 0), (_z,)),
}
for _name, (_expr, _syms) in BUILTINS.items():
    local.define(_name, _expr, _syms, origin="symcurv built-in")


def power_fn(c: float) -> local.ElementwiseFn:
    """``z**c`` for a number ``c`` (the DSL's ``v ** 2``) as a one-argument function: sympy
    differentiates it to ``c*z**(c - 1)``, exact at z = 0, where the two-argument pow's
    ∂/∂x is ``y*x**y/x`` = 0/0 (found by the random-model tests: ``relu(a) ** 2`` had a
    NaN gradient wherever relu(a) = 0)."""
    exponent = sympy.Integer(int(c)) if float(c).is_integer() else sympy.Float(c)
    name = "pow_" + repr(float(c)).replace("-", "m").replace("+", "").replace(".", "_")
    return local.parse(name, _z**exponent, args=("z",))


def fn_of(node: Node) -> local.ElementwiseFn:
    return local.lookup(node.attr("fn"))


# ---- shape rule and numpy semantics ------------------------------------------------------
def _infer(inputs: list[Node], attrs: dict) -> tuple[tuple[int, ...], bool]:
    shapes = {n.shape for n in inputs if n.shape != ()}
    if len(shapes) > 1:
        raise errors.ShapeError(
            f"elementwise '{attrs['fn']}' got operands of different shapes: "
            + ", ".join(n.describe() for n in inputs),
            fix="elementwise operands must have the same shape (or be scalars); check the "
            "layer widths",
        )
    return (shapes.pop() if shapes else ()), any(n.batched for n in inputs)


def align(arr: np.ndarray, node: Node, out_rank: int) -> np.ndarray:
    """Give a batched value of lower rank trailing unit axes so numpy broadcasting lines
    its batch axis up with the output's (a per-case scalar against a per-case vector)."""
    if node.batched and len(node.shape) < out_rank:
        return arr.reshape(arr.shape + (1,) * (out_rank - len(node.shape)))
    return arr


@functools.cache
def _numpy_fn(name: str):
    fn = local.lookup(name)
    return printer.numpy_function(fn.symbols, fn.expr)


def _impl(node: Node, args: list, arg_nodes: list[Node]) -> np.ndarray:
    r = len(node.shape)
    out = _numpy_fn(node.attr("fn"))(*[align(a, n, r) for a, n in zip(args, arg_nodes)])
    return np.asarray(out, dtype=np.float64)


# ---- builders: used by the DSL and by every transform ------------------------------------
def const(g: Graph, value: float, origin: str = "") -> str:
    return emit(g, "const", [], {"value": float(value)}, name="c", origin=origin)


def const_value(g: Graph, nid: str) -> float | None:
    n = g[nid]
    return n.attr("value") if n.op == "const" else None


def apply(
    g: Graph,
    fn: local.ElementwiseFn,
    inputs: list[str],
    *,
    name: str = "",
    origin: str = "",
    scalar_ok: bool = False,
) -> str:
    """``fn(inputs)`` as a node, folding what needs no node: a constant function
    becomes a const (left a scalar with ``scalar_ok``, for operands of another elementwise
    node, which broadcasts it), ``f(x) = x_i`` returns the operand itself."""
    if len(inputs) != fn.arity:
        raise errors.ExpressionError(
            f"elementwise op '{fn.name}' takes {fn.arity} operand(s) "
            f"{[s.name for s in fn.symbols]}, got {len(inputs)}",
            where=origin,
            node=f"'{fn.name}'",
            fix="pass one node per symbol of the expression",
        )
    try:
        shape, batched = _infer([g[i] for i in inputs], {"fn": fn.name})
    except errors.ShapeError as e:  # the DSL line, as emit() adds it for every other op
        raise errors.ShapeError(
            e.problem, where=e.where or origin or None, node=f"'{name or fn.name}'", fix=e.fix
        ) from None
    c = fn.constant_value()
    if c is not None:
        k = const(g, c, origin)
        return k if scalar_ok else broadcast_to(g, k, shape, batched, origin)
    j = fn.passthrough()
    if j is not None:
        return broadcast_to(g, inputs[j], shape, batched, origin)
    return emit(
        g,
        "elementwise",
        inputs,
        {"fn": fn.name, "expr": str(fn.expr)},
        name=name or fn.name,
        origin=origin,
    )


def call(g: Graph, fn_name: str, *inputs: str, name: str = "", origin: str = "") -> str:
    return apply(g, local.FUNCTIONS[fn_name], list(inputs), name=name, origin=origin)


def add(g: Graph, a: str | None, b: str | None, origin: str = "") -> str | None:
    """a + b where ``None`` means zero (cotangent and tangent accumulation)."""
    if a is None:
        return b
    if b is None:
        return a
    return call(g, "add", a, b, name="acc", origin=origin)


def mul(g: Graph, a: str, b: str, origin: str = "", name: str = "") -> str | None:
    """a ⊙ b, skipping multiplications by the constants 1 and 0."""
    shape, batched = _infer([g[a], g[b]], {"fn": "mul"})
    for x, y in ((a, b), (b, a)):
        v = const_value(g, x)
        if v == 1.0:
            return broadcast_to(g, y, shape, batched, origin)
        if v == 0.0:
            return None
    return call(g, "mul", a, b, origin=origin, name=name)


def broadcast_to(g: Graph, nid: str, shape: tuple, batched: bool, origin: str = "") -> str:
    """Broadcast a scalar to ``shape`` and/or an unbatched value across the batch."""
    n = g[nid]
    if n.shape != tuple(shape):
        nid = emit(g, "broadcast", [nid], {"shape": tuple(shape)}, name="bcast", origin=origin)
    if batched and not n.batched:
        nid = emit(g, "batch_broadcast", [nid], {"mean": False}, name="bbcast", origin=origin)
    return nid


def unbroadcast(g: Graph, nid: str | None, like: Node, origin: str = "") -> str | None:
    """The adjoint of broadcasting: sum a cotangent down to ``like``'s shape and batchedness.
    Features first (a per-case sum), then over the batch (where a per-case value meets a
    parameter, DESIGN.md §2)."""
    if nid is None:
        return None
    n = g[nid]
    if n.shape != like.shape:
        assert like.shape == (), (n.shape, like.shape)
        nid = emit(g, "sum", [nid], name="sum", origin=origin)
    if n.batched and not like.batched:
        nid = emit(g, "batch_sum", [nid], name="bsum", origin=origin)
    return nid


# ---- rules ---------------------------------------------------------------------------
def _vjp(g: Graph, node: Node, cot: str, needs: list[bool]) -> list[str | None]:
    fn, out = fn_of(node), []
    for i, x in enumerate(node.inputs):
        if not needs[i]:
            out.append(None)
            continue
        d = apply(g, fn.partial(i), list(node.inputs), origin=node.origin, scalar_ok=True)
        out.append(unbroadcast(g, mul(g, cot, d, node.origin), g[x], node.origin))
    return out


def _jvp(g: Graph, node: Node, tangents: list[str | None]) -> str | None:
    fn, total = fn_of(node), None
    for i, t in enumerate(tangents):
        if t is None:
            continue
        d = apply(g, fn.partial(i), list(node.inputs), origin=node.origin, scalar_ok=True)
        total = add(g, total, mul(g, d, t, node.origin), node.origin)
    if total is None:
        return None
    return broadcast_to(g, total, node.shape, node.batched, node.origin)


def sum_features_to(g: Graph, nid: str | None, shape: tuple, origin: str = "") -> str | None:
    """Sum a per-element value down to a scalar operand's shape, keeping the batch axis
    (a per-case quantity of a broadcast operand)."""
    if nid is None or g[nid].shape == tuple(shape):
        return nid
    assert tuple(shape) == (), (g[nid].shape, shape)
    return emit(g, "sum", [nid], name="sum", origin=origin)


def curvature_terms(
    g: Graph, fn: local.ElementwiseFn, inputs: list[str], cot: str, origin: str
) -> list[curv.Term]:
    """M = ḡ ⊙ ∇²f per element: a ``Diag`` term per non-zero ∂²f/∂x_i² and a ``Coupling``
    per non-zero ∂²f/∂x_i∂x_j (noise in the smaller operand's space: a broadcast scalar)."""
    terms: list[curv.Term] = []
    for i in range(fn.arity):
        for j in range(i, fn.arity):
            d2 = fn.partial(i).partial(j)
            if d2.constant_value() == 0.0:
                continue
            b = mul(g, cot, apply(g, d2, inputs, origin=origin, scalar_ok=True), origin)
            if b is None:
                continue
            if i == j:
                terms.append(curv.Diag(i, sum_features_to(g, b, g[inputs[i]].shape, origin)))
                continue
            if inputs[i] == inputs[j]:  # f(x, x): the block C + Cᵀ = 2 diag(b) sits on x
                two_b = mul(g, const(g, 2.0, origin), b, origin)
                terms.append(curv.Diag(i, sum_features_to(g, two_b, g[inputs[i]].shape, origin)))
                continue
            big, small = (j, i) if g[inputs[i]].shape == () else (i, j)

            def apply_c(gg: Graph, z: str, b: str = b) -> str:
                return call(gg, "mul", b, z, name="Cz", origin=origin)

            terms.append(curv.Coupling(big, small, g[inputs[small]].shape, apply_c))
    return terms


def _sq_vjp(g: Graph, node: Node, d: str, needs: list[bool]) -> list[str | None]:
    fn, out = fn_of(node), []
    for i, x in enumerate(node.inputs):
        if not needs[i]:
            out.append(None)
            continue
        di = apply(g, fn.partial(i), list(node.inputs), origin=node.origin, scalar_ok=True)
        sq = call(g, "square", di, origin=node.origin) if const_value(g, di) is None else di
        if const_value(g, sq) is not None:
            sq = const(g, const_value(g, sq) ** 2, node.origin)
        out.append(unbroadcast(g, mul(g, d, sq, node.origin), g[x], node.origin))
    return out


def _loss_weight(g: Graph, node: Node, lossy: list[bool]) -> float | None:
    """How ``f`` combines the losses in its operands flagged ``lossy``: None unless f is
    affine in them (every ∂²f/∂x_i∂x_j among them vanishes), else the sign of their weights
    ∂f/∂x_i evaluated at the constant operands. A weight that depends on data (a per-case
    weight ``w * loss``) is taken to be non-negative, as the error for GN says it must be."""
    fn, idx = fn_of(node), [i for i, is_lossy in enumerate(lossy) if is_lossy]
    if any(fn.partial(i).partial(j).constant_value() != 0.0 for i in idx for j in idx):
        return None
    values = [const_value(g, x) for x in node.inputs]
    consts = {s: sympy.Float(c) for s, c in zip(fn.symbols, values) if c is not None}
    weights = [sympy.sympify(fn.partial(i).expr).xreplace(consts) for i in idx]
    return -1.0 if any(w.is_number and w < 0 for w in weights) else 1.0


register(
    PrimitiveDef(
        "elementwise",
        "elementwise",
        "map",
        _infer,
        _impl,
        vjp=_vjp,
        jvp=_jvp,
        curvature=lambda g, n, cot: curvature_terms(g, fn_of(n), list(n.inputs), cot, n.origin),
        sq_vjp=_sq_vjp,
        loss_weight=_loss_weight,
        scalar=lambda node, syms: fn_of(node)(*syms),
        doc="y = f(x_1..x_k) elementwise, f a sympy expression",
    )
)


# ---- broadcasts ----------------------------------------------------------------------
def _bcast_infer(inputs, attrs):
    (x,) = inputs
    if x.shape != ():
        raise errors.ShapeError(f"broadcast needs a scalar operand, got {x.describe()}")
    return tuple(attrs["shape"]), x.batched


def _bcast_impl(node, args, arg_nodes):
    (x,) = args
    lead = x.shape if arg_nodes[0].batched else ()
    return np.broadcast_to(align(x, arg_nodes[0], len(node.shape)), lead + node.shape).copy()


register(
    PrimitiveDef(
        "broadcast",
        "elementwise",
        "map",
        _bcast_infer,
        _bcast_impl,
        vjp=lambda g, n, cot, needs: [emit(g, "sum", [cot], name="sum", origin=n.origin)],
        jvp=lambda g, n, t: (
            None
            if t[0] is None
            else emit(g, "broadcast", [t[0]], {"shape": n.shape}, name="bcast", origin=n.origin)
        ),
        scalar=lambda node, syms: syms[0],
        curvature=curv.linear,
        sq_vjp=lambda g, n, d, needs: [emit(g, "sum", [d], name="sum", origin=n.origin)],
        doc="y_j = x: a scalar copied to every feature",
    )
)


def _bb_infer(inputs, attrs):
    (x,) = inputs
    if x.batched:
        raise errors.ShapeError(f"batch_broadcast needs an unbatched operand, got {x.describe()}")
    return x.shape, True


B_SYMBOL = sympy.Symbol("B", positive=True)  # the batch size inside fused map kernels
# the feature index k of the element a fused map kernel computes (the loop variable j): what a
# formula such as the one-hot [label = k] of a class label reads (ops/losses.py)
INDEX_SYMBOL = sympy.Symbol("j", integer=True, nonnegative=True)


def _bb_impl(node, args, arg_nodes, batch):
    """y_b = x for every case b (``mean``: x / B)."""
    y = np.broadcast_to(args[0], (batch,) + np.shape(args[0]))
    return y / batch if node.attr("mean") else y.copy()


def _bb_sq_vjp(g: Graph, n: Node, d: str, needs: list[bool]) -> list[str | None]:
    """(J∘J)ᵀ d of y_b = c·x (c = 1, or 1/B with mean): every case's Jacobian is c·I, so
    Σ_b c² d_b — ``batch_sum(d)``, or (1/B) Σ_b d_b / B as ``batch_mean(d ⊙ 1/B)``."""
    if not n.attr("mean"):
        return [emit(g, "batch_sum", [d], name="bsum", origin=n.origin)]
    inv_b = emit(g, "batch_broadcast", [const(g, 1.0)], {"mean": True}, name="inv_B")
    scaled = mul(g, d, inv_b, origin=n.origin)
    return [emit(g, "batch_mean", [scaled], name="bmean", origin=n.origin)]


def _bb_case_vjp(g: Graph, n: Node, i: int, cot: str) -> str:
    """Case b's own pullback of y_b = c·x (c = 1, or 1/B with mean): c·ȳ_b, kept per case.
    The generic one (the ``vjp`` of a copy fed a per-case x) does not apply: the operand of
    a batch_broadcast must be shared, and its ``vjp`` sums over the cases."""
    if not n.attr("mean"):
        return cot
    inv_b = emit(g, "batch_broadcast", [const(g, 1.0)], {"mean": True}, name="inv_B")
    return mul(g, cot, inv_b, origin=n.origin)


register(
    PrimitiveDef(
        "batch_broadcast",
        "elementwise",
        "map",
        _bb_infer,
        _bb_impl,
        vjp=lambda g, n, cot, needs: [
            emit(
                g,
                "batch_mean" if n.attr("mean") else "batch_sum",
                [cot],
                name="bsum",
                origin=n.origin,
            )
        ],
        jvp=lambda g, n, t: (
            None
            if t[0] is None
            else emit(
                g,
                "batch_broadcast",
                [t[0]],
                {"mean": n.attr("mean")},
                name="bbcast",
                origin=n.origin,
            )
        ),
        scalar=lambda node, syms: syms[0] / B_SYMBOL if node.attr("mean") else syms[0],
        curvature=curv.linear,
        sq_vjp=_bb_sq_vjp,
        batch_impl=True,
        case_vjp=_bb_case_vjp,
        doc="y_b = x (or x / B with mean=True): an unbatched value given to every case",
    )
)
