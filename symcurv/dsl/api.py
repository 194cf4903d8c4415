"""The functions users call on model values: ``sc.tanh(a)``, ``sc.elementwise(...)``,
``sc.sum``, ``sc.dot``, ``sc.softmax``, ``sc.logsumexp``, ``sc.conv2d``."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import sympy

from symcurv import errors
from symcurv.dsl.model import Value, user_origin
from symcurv.ops import conv
from symcurv.ops import reduce as red
from symcurv.ops.registry import emit
from symcurv.symbolic import local


def _model_of(args: Sequence, what: str):
    for a in args:
        if isinstance(a, Value):
            return a.model
    raise errors.ModelError(
        f"{what} needs at least one model value, got {args!r}",
        where=user_origin(),
        fix="apply it to a node of a model",
    )


class ElementwiseOp:
    """A named elementwise function; calling it on values adds a node."""

    def __init__(self, fn: local.ElementwiseFn) -> None:
        self.fn = fn
        self.__name__ = fn.name
        self.__doc__ = f"{fn.name}({', '.join(s.name for s in fn.symbols)}) = {fn.expr}"

    def __call__(self, *args) -> Value:
        if len(args) != self.fn.arity:
            raise errors.ExpressionError(
                f"'{self.fn.name}' takes {self.fn.arity} operand(s) "
                f"({', '.join(s.name for s in self.fn.symbols)}), got {len(args)}",
                where=user_origin(),
                node=f"'{self.fn.name}'",
                fix="pass one model value per symbol",
            )
        return _model_of(args, self.fn.name).apply_fn(self.fn.name, args)

    def __repr__(self) -> str:
        return f"<symcurv elementwise op {self.__doc__}>"


def elementwise(
    name: str, expr: str | Callable | sympy.Expr, args: Sequence[str] | None = None
) -> ElementwiseOp:
    """A new elementwise op from a sympy string (``"log(1 + exp(z))"``), a sympy
    expression, or a lambda of sympy symbols; sympy derives every derivative."""
    if not str(name).isidentifier():
        raise errors.ExpressionError(
            f"elementwise op name {name!r} is not an identifier",
            where=user_origin(),
            fix="use letters, digits and _",
        )
    return ElementwiseOp(local.parse(name, expr, args, origin=user_origin()))


tanh = ElementwiseOp(local.FUNCTIONS["tanh"])
logistic = ElementwiseOp(local.FUNCTIONS["logistic"])
exp = ElementwiseOp(local.FUNCTIONS["exp"])
log = ElementwiseOp(local.FUNCTIONS["log"])
softplus = ElementwiseOp(local.FUNCTIONS["softplus"])
square = ElementwiseOp(local.FUNCTIONS["square"])
relu = ElementwiseOp(local.FUNCTIONS["relu"])


def _unary(op: str, v: Value, name: str) -> Value:
    m = _model_of([v], op)
    v = m.lift(v)
    return m.wrap(emit(m.graph, op, [v.id], name=name, origin=user_origin()))


def sum(v: Value) -> Value:  # noqa: A001 - the DSL's spelling
    """Σ_j v_j."""
    return _unary("sum", v, "sum")


def dot(u: Value, v: Value) -> Value:
    """Σ_j u_j v_j."""
    us, vs = getattr(u, "shape", ()), getattr(v, "shape", ())
    if us and vs and us != vs:
        raise errors.ShapeError(
            f"sc.dot(u, v) needs vectors of the same length, got {u.node.describe()} and "
            f"{v.node.describe()}",
            where=user_origin(),
            node="'dot'",
            fix="check the layer widths: both operands must have the same shape",
        )
    return sum(u * v)


def softmax(v: Value) -> Value:
    """softmax(v)_k = e^{v_k} / Σ_j e^{v_j} of a per-case vector (computed stably)."""
    m = _model_of([v], "softmax")
    return m.wrap(red.softmax(m.graph, m.lift(v).id, user_origin()))


def logsumexp(v: Value) -> Value:
    """log Σ_j e^{v_j} of a per-case vector: a per-case scalar (computed stably)."""
    return _unary("logsumexp", v, "lse")


def conv2d(F: Value, x: Value, image: tuple[int, int]) -> Value:
    """Valid 2-D correlation of one case's image with M filters (symcurv/ops/conv.py):
    y[m, i, j] = Σ_{u,v} F[m, u, v] · x[i+u, j+v] (F is not flipped, as in deep-learning
    libraries). ``x`` is the image of ``image = (H, W)`` pixels stored flat (row-major);
    ``F`` a parameter of shape (M, k·k), one k × k filter per row (row-major); the result
    is the per-case (M, (H−k+1)·(W−k+1)) response matrix: row m is filter m's response
    map, row-major (so ``g(Y).T @ alpha`` weights each filter's responses by alpha_m)."""
    origin = user_origin()
    m = _model_of([F, x], "conv2d")
    F, x = m.lift(F), m.lift(x)
    try:
        H, W = (int(s) for s in image)
    except (TypeError, ValueError):
        raise errors.ShapeError(
            f"conv2d: image={image!r} is not a pair (H, W)",
            where=origin,
            node="'conv2d'",
            fix="pass image=(height, width) of the flat image x",
        ) from None
    if len(F.shape) != 2 or round(F.shape[1] ** 0.5) ** 2 != F.shape[1]:
        raise errors.ShapeError(
            f"conv2d: the filters {F.node.describe()} are not (M, k·k) for square k × k filters",
            where=origin,
            node="'conv2d'",
            fix="declare the filters as m.param(name, (M, k * k)), one filter per row",
        )
    k = round(F.shape[1] ** 0.5)
    geom = (F.shape[0], H, W, k, k)
    return m.wrap(conv.conv2d(m.graph, "y", {"F": F.id, "x": x.id}, geom, origin))


def normalize_rows(W: Value) -> Value:
    """W with every row scaled to unit Euclidean length, W_kj / ‖W_k‖ (Kingma & LeCun's
    product of Student-t experts keeps its filters so). Composed of existing ops — the
    row norms √((W ⊙ W) 1), spread across the columns by an outer product with 1 — so
    every derivative comes from their rules. A zero row has no direction: its values
    are non-finite (reported at this line)."""
    from symcurv.ops import elementwise as ew

    m = _model_of([W], "normalize_rows")
    W = m.lift(W)
    origin = user_origin()
    if len(W.shape) != 2:
        raise errors.ShapeError(
            f"sc.normalize_rows needs a matrix, got {W.node.describe()}",
            where=origin,
            node="'normalize_rows'",
            fix="pass a 2-D parameter (n_out, n_in), e.g. a layer's W",
        )
    g = m.graph
    ones = ew.broadcast_to(g, ew.const(g, 1.0, origin), (W.shape[1],), False, origin)
    sq_norms = emit(g, "matvec", [(W * W).id, ones], name="row_sq_norm", origin=origin)
    inv = m.wrap(sq_norms) ** -0.5
    spread = emit(g, "outer", [inv.id, ones], name="inv_norm", origin=origin)
    return W * m.wrap(spread)
