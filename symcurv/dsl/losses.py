"""``sc.losses``: per-case losses whose first argument is the network output."""

from __future__ import annotations

from symcurv import errors
from symcurv.dsl.model import Value, user_origin
from symcurv.ops import losses as L
from symcurv.ops.registry import emit
from symcurv.symbolic import local


def _pair(y: Value, t: Value, kind: str):
    if not isinstance(y, Value):
        raise errors.ModelError(
            f"{kind}: the output {y!r} is not a model value",
            where=user_origin(),
            fix="pass the network output node",
        )
    m = y.model
    return m, m.lift(y), m.lift(t)


def squared_error(y: Value, t: Value) -> Value:
    """½ ‖y − t‖²."""
    m, y, t = _pair(y, t, "squared_error")
    fn = local.FUNCTIONS["loss_squared_error"]
    return m.wrap(L.separable(m.graph, "squared_error", fn, y.id, t.id, user_origin()))


def sigmoid_cross_entropy(logits: Value, t: Value) -> Value:
    """Σ_k softplus(y_k) − t_k y_k  (= −Σ t log σ(y) + (1 − t) log(1 − σ(y)))."""
    m, y, t = _pair(logits, t, "sigmoid_cross_entropy")
    fn = local.FUNCTIONS["loss_sigmoid_cross_entropy"]
    return m.wrap(L.separable(m.graph, "sigmoid_cross_entropy", fn, y.id, t.id, user_origin()))


def softmax_cross_entropy(logits: Value, t: Value) -> Value:
    """Σ_k t_k (logsumexp(y) − y_k)."""
    m, y, t = _pair(logits, t, "softmax_cross_entropy")
    return m.wrap(
        emit(
            m.graph,
            "softmax_cross_entropy",
            [y.id, t.id],
            {"kind": "softmax_cross_entropy"},
            name="softmax_cross_entropy",
            origin=user_origin(),
        )
    )


def custom(name: str, expr: str, y: Value, t: Value) -> Value:
    """Σ_k ℓ(y_k, t_k) with ℓ a sympy expression in the symbols ``y`` and ``t``."""
    origin = user_origin()
    m, y, t = _pair(y, t, name)
    fn = local.parse(f"loss_{name}", expr, args=("y", "t"), origin=origin)
    if fn.symbols[0] not in fn.expr.free_symbols:
        local.FUNCTIONS.pop(fn.name, None)  # so that the corrected loss may take the name
        raise errors.ExpressionError(
            f"custom loss '{name}' = {fn.expr} does not depend on y (the network output): "
            "its gradient and curvature would be zero",
            where=origin,
            node=f"'{name}'",
            fix="write the loss in the symbols y (output) and t (target), e.g. 'log(cosh(y - t))'",
        )
    return m.wrap(L.separable(m.graph, name, fn, y.id, t.id, origin))
