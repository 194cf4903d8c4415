"""Reductions: over a case's features (sum, logsumexp, softmax) and over the batch.

sum        y = Σ_j x_j                x̄ = broadcast(ȳ)             ẏ = Σ_j ẋ_j
logsumexp  y = log Σ_j e^{x_j}        x̄ = ȳ ⊙ softmax(x)          ẏ = Σ_j softmax(x)_j ẋ_j
softmax    s = e^{x - logsumexp(x)}   x̄ = s ⊙ (ȳ − Σ_j ȳ_j s_j)    ṡ = s ⊙ (ẋ − Σ_j s_j ẋ_j)
batch_sum  y = Σ_b x_b                x̄_b = ȳ                      ẏ = Σ_b ẋ_b
batch_mean y = (1/B) Σ_b x_b          x̄_b = ȳ / B                  ẏ = (1/B) Σ_b ẋ_b
"""

from __future__ import annotations

import numpy as np

from symcurv import errors
from symcurv.ir.graph import Graph, Node
from symcurv.ops import elementwise as ew
from symcurv.ops.registry import PrimitiveDef, emit, register


def _feature_axes(node: Node) -> tuple[int, ...]:
    off = 1 if node.batched else 0
    return tuple(range(off, off + len(node.shape)))


def _to_scalar(inputs, attrs):
    (x,) = inputs
    return (), x.batched


def _vector_only(op):
    def infer(inputs, attrs):
        (x,) = inputs
        if len(x.shape) != 1:
            raise errors.ShapeError(
                f"{op} needs a per-case vector, got {x.describe()}",
                fix=f"apply {op} to a vector node",
            )
        return x.shape, x.batched

    return infer


def _sum_impl(node, args, arg_nodes):
    return args[0].sum(axis=_feature_axes(arg_nodes[0]))


register(
    PrimitiveDef(
        "sum",
        "reduce",
        "reduce",
        _to_scalar,
        _sum_impl,
        vjp=lambda g, n, cot, needs: [
            ew.broadcast_to(g, cot, g[n.inputs[0]].shape, n.batched, n.origin)
        ],
        jvp=lambda g, n, t: (
            None if t[0] is None else emit(g, "sum", t, name="sum", origin=n.origin)
        ),
        template="sum_features",
        doc="y = Σ_j x_j",
    )
)


def _lse_impl(node, args, arg_nodes):
    x = args[0]
    m = x.max(axis=-1, keepdims=True)
    return (m + np.log(np.exp(x - m).sum(axis=-1, keepdims=True)))[..., 0]


def softmax(g: Graph, x: str, origin: str = "") -> str:
    return emit(g, "softmax", [x], name="softmax", origin=origin)


def _lse_vjp(g, n, cot, needs):
    return [ew.mul(g, cot, softmax(g, n.inputs[0], n.origin), n.origin)]


def _lse_jvp(g, n, t):
    if t[0] is None:
        return None
    prod = ew.mul(g, softmax(g, n.inputs[0], n.origin), t[0], n.origin)
    return emit(g, "sum", [prod], name="sum", origin=n.origin)


def _lse_infer(inputs, attrs):
    _vector_only("logsumexp")(inputs, attrs)
    return _to_scalar(inputs, attrs)


register(
    PrimitiveDef(
        "logsumexp",
        "reduce",
        "reduce",
        _lse_infer,
        _lse_impl,
        vjp=_lse_vjp,
        jvp=_lse_jvp,
        template="logsumexp",
        doc="y = log Σ_j exp(x_j), computed with the max shifted out",
    )
)


def _softmax_impl(node, args, arg_nodes):
    x = args[0]
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _softmax_pullback(g: Graph, s: str, v: str, origin: str) -> str:
    """s ⊙ (v − Σ_j s_j v_j): the (symmetric) softmax Jacobian applied to v."""
    inner = emit(g, "sum", [ew.mul(g, s, v, origin)], name="sum", origin=origin)
    return ew.mul(g, s, ew.call(g, "sub", v, inner, origin=origin), origin)


def _softmax_decompose(g: Graph, n: Node) -> str:
    lse = emit(g, "logsumexp", list(n.inputs), name="lse", origin=n.origin)
    shifted = ew.call(g, "sub", n.inputs[0], lse, origin=n.origin)
    return ew.call(g, "exp", shifted, name="softmax", origin=n.origin)


register(
    PrimitiveDef(
        "softmax",
        "reduce",
        "composite",
        _vector_only("softmax"),
        _softmax_impl,
        vjp=lambda g, n, cot, needs: [_softmax_pullback(g, n.id, cot, n.origin)],
        jvp=lambda g, n, t: None if t[0] is None else _softmax_pullback(g, n.id, t[0], n.origin),
        decompose=_softmax_decompose,
        doc="s = exp(x − logsumexp(x))",
    )
)


# ---- over the batch --------------------------------------------------------------------
def _batch_infer(inputs, attrs):
    (x,) = inputs
    if not x.batched:
        raise errors.ShapeError(f"batch reduction of an unbatched value {x.describe()}")
    return x.shape, False


def _bb(mean: bool):
    def vjp(g, n, cot, needs):
        return [emit(g, "batch_broadcast", [cot], {"mean": mean}, name="bbcast", origin=n.origin)]

    return vjp


for _op, _mean in (("batch_sum", False), ("batch_mean", True)):
    register(
        PrimitiveDef(
            _op,
            "reduce",
            "reduce",
            _batch_infer,
            (lambda node, args, arg_nodes, m=_mean: args[0].mean(0) if m else args[0].sum(0)),
            vjp=_bb(_mean),
            jvp=(
                lambda g, n, t, op=_op: (
                    None if t[0] is None else emit(g, op, t, name="bsum", origin=n.origin)
                )
            ),
            template=_op,
            doc="y = (1/B) Σ_b x_b" if _mean else "y = Σ_b x_b",
        )
    )
