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
from symcurv.ops import curvature as curv
from symcurv.ops import elementwise as ew
from symcurv.ops import lowering as lw
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
        lower=lambda g, n: lw.Reduce("sum_features"),
        loss_weight=lambda g, n, lossy: 1.0,
        curvature=curv.linear,
        sq_vjp=lambda g, n, d, needs: [
            ew.broadcast_to(g, d, g[n.inputs[0]].shape, n.batched, n.origin)
        ],
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


def softmax_factor(g: Graph, p: str, origin: str):
    """A with A Aᵀ = diag(p) − p pᵀ (p a probability vector): A z = √p ⊙ z − p (√p · z).
    (A Aᵀ = diag(p) − 2 p pᵀ + p (Σ p) pᵀ, and Σ p = 1.)"""
    sp = ew.call(g, "sqrt_pos", p, name="sqrt_p", origin=origin)

    def factor(gg: Graph, z: str) -> str:
        spz = ew.mul(gg, sp, z, origin)
        inner = emit(gg, "sum", [spz], name="sum", origin=origin)
        return ew.call(gg, "sub", spz, ew.mul(gg, p, inner, origin), name="Az", origin=origin)

    def diag(gg: Graph) -> str:
        return ew.call(gg, "sub", p, ew.call(gg, "square", p, origin=origin), origin=origin)

    return factor, diag


def _lse_curvature(g, n, cot):
    """∇² logsumexp = diag(p) − p pᵀ: dense per case, factored exactly (no complex part
    unless ḡ < 0)."""
    p = softmax(g, n.inputs[0], n.origin)
    factor, diag = softmax_factor(g, p, n.origin)
    return [curv.Factored(0, cot, g[n.inputs[0]].shape, factor, diag)]


def _lse_sq_vjp(g, n, d, needs):
    p = softmax(g, n.inputs[0], n.origin)
    return [ew.mul(g, d, ew.call(g, "square", p, origin=n.origin), n.origin)]


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
        curvature=_lse_curvature,
        sq_vjp=_lse_sq_vjp,
        lower=lambda g, n: lw.Reduce("logsumexp"),
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


def _softmax_curvature(g, n, cot):
    """M = Σ_q ḡ_q ∇² p_q = diag(a) − p aᵀ − a pᵀ with a = p ⊙ (ḡ − ḡ·p), i.e.
    diag(a) − ½ (p + a)(p + a)ᵀ + ½ (p − a)(p − a)ᵀ: a diagonal and two rank-one terms
    (one scalar noise per case each)."""
    p, o = n.id, n.origin
    s = emit(g, "sum", [ew.mul(g, cot, p, o)], name="gp", origin=o)
    a = ew.mul(g, p, ew.call(g, "sub", cot, s, origin=o), o)
    terms: list = [curv.Diag(0, a)]
    for sign, op in ((-0.5, "add"), (0.5, "sub")):
        w = ew.call(g, op, p, a, name="w", origin=o)
        terms.append(
            curv.Factored(
                0,
                ew.const(g, sign, o),
                (),
                lambda gg, z, w=w: ew.mul(gg, w, z, o),
                lambda gg, w=w: ew.call(gg, "square", w, origin=o),
            )
        )
    return terms


def _softmax_sq_vjp(g, n, d, needs):
    """J = diag(p) − p pᵀ: Σ_k J_kj² d_k = p_j² (Σ_k d_k p_k²) + d_j p_j² (1 − 2 p_j)."""
    p, o = n.id, n.origin
    p2 = ew.call(g, "square", p, origin=o)
    tot = emit(g, "sum", [ew.mul(g, d, p2, o)], name="sum", origin=o)
    one_m_2p = ew.call(g, "sub", ew.const(g, 1.0, o), ew.call(g, "add", p, p, origin=o), origin=o)
    own = ew.mul(g, ew.mul(g, d, p2, o), one_m_2p, o)
    return [ew.call(g, "add", ew.mul(g, p2, tot, o), own, origin=o)]


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
        curvature=_softmax_curvature,
        sq_vjp=_softmax_sq_vjp,
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
            lower=lambda g, n, op=_op: lw.Reduce(op),
            loss_weight=lambda g, n, lossy: 1.0,
            curvature=curv.linear,
            # Becker-LeCun needs (1/B)² for the mean: only reached when something above the
            # batch reduction is curved, which the CP transforms refuse anyway
            sq_vjp=None if _mean else _bb(False),
            doc="y = (1/B) Σ_b x_b" if _mean else "y = Σ_b x_b",
        )
    )
