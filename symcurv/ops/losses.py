"""Per-case losses L(y, t) -> scalar. Each is an ordinary node (so it can be differentiated
again) whose first operand y is the network output: that operand defines the Gauss-Newton
split G = Jᵀ H_L J (DESIGN.md §3), and the curvature transforms of later issues read
``H_L`` from here.

    separable_loss          L = Σ_k ℓ(y_k, t_k)      ȳ = L̄ ⊙ ℓ_y(y, t)
        squared_error           ℓ = (y − t)² / 2
        sigmoid_cross_entropy   ℓ = softplus(y) − t y   (written overflow-free)
        custom                  ℓ = any sympy expression in y and t
    softmax_cross_entropy   L = Σ_k t_k (logsumexp(y) − y_k)
                                                     ȳ = L̄ ⊙ (softmax(y) Σ_k t_k − t)
    one_hot                 t_k = [c = k]: the target row of a class label c (a per-case
                            scalar); inlined, so the fused maps read c and no B×K array
                            is ever written
"""

from __future__ import annotations

import numpy as np
import sympy

from symcurv import errors
from symcurv.ir.graph import Graph, Node
from symcurv.ops import curvature as curv
from symcurv.ops import elementwise as ew
from symcurv.ops import reduce as red
from symcurv.ops.registry import PrimitiveDef, emit, register
from symcurv.symbolic import local

_y, _t = local.real_symbols("yt")
SEPARABLE = {
    "squared_error": (_y - _t) ** 2 / 2,
    "sigmoid_cross_entropy": sympy.Max(_y, 0) - _t * _y + sympy.log(1 + sympy.exp(-sympy.Abs(_y))),
}
for _name, _expr in SEPARABLE.items():
    local.define(f"loss_{_name}", _expr, (_y, _t), origin="symcurv built-in")


def _infer(inputs: list[Node], attrs):
    y, t = inputs
    if len(y.shape) != 1 or y.shape != t.shape:
        raise errors.ShapeError(
            f"loss '{attrs.get('kind')}' needs an output vector and a target of the same "
            f"length, got {y.describe()} and {t.describe()}",
            fix="make the last layer's width equal the target's width",
        )
    return (), y.batched or t.batched


def _fn(node: Node) -> local.ElementwiseFn:
    return local.FUNCTIONS[node.attr("fn")]


def _sep_impl(node, args, arg_nodes):
    y, t = args
    return ew._numpy_fn(node.attr("fn"))(y, t).sum(axis=-1)


def _sep_vjp(g: Graph, n: Node, cot: str, needs: list[bool]) -> list:
    out = []
    for i, x in enumerate(n.inputs):
        if not needs[i]:
            out.append(None)
            continue
        d = ew.apply(g, _fn(n).partial(i), list(n.inputs), origin=n.origin, scalar_ok=True)
        out.append(ew.unbroadcast(g, ew.mul(g, cot, d, n.origin), g[x], n.origin))
    return out


def _sum(g: Graph, x: str | None, origin: str) -> str | None:
    return None if x is None else emit(g, "sum", [x], name="sum", origin=origin)


def _sep_jvp(g: Graph, n: Node, tangents: list) -> str | None:
    total = None
    for i, t in enumerate(tangents):
        if t is not None:
            d = ew.apply(g, _fn(n).partial(i), list(n.inputs), origin=n.origin, scalar_ok=True)
            total = ew.add(g, total, _sum(g, ew.mul(g, d, t, n.origin), n.origin), n.origin)
    return total


def _sep_decompose(g: Graph, n: Node) -> str:
    terms = ew.apply(g, _fn(n), list(n.inputs), name=n.attr("kind"), origin=n.origin)
    return emit(g, "sum", [terms], name=n.name, origin=n.origin)


def _sep_curvature(g: Graph, n: Node, cot: str) -> list:
    """M = L̄ ∇²ℓ per element (a Diag on y; couplings to t only matter if t depends on θ)."""
    y = g[n.inputs[0]]
    cb = ew.broadcast_to(g, cot, y.shape, n.batched, n.origin)
    return ew.curvature_terms(g, _fn(n), list(n.inputs), cb, n.origin)


def _sep_sq_vjp(g: Graph, n: Node, d: str, needs: list[bool]) -> list:
    y = g[n.inputs[0]]
    db = ew.broadcast_to(g, d, y.shape, n.batched, n.origin)
    out = []
    for i, x in enumerate(n.inputs):
        if not needs[i]:
            out.append(None)
            continue
        di = ew.apply(g, _fn(n).partial(i), list(n.inputs), origin=n.origin, scalar_ok=True)
        sq = ew.call(g, "square", ew.broadcast_to(g, di, y.shape, n.batched, n.origin))
        out.append(ew.unbroadcast(g, ew.mul(g, db, sq, n.origin), g[x], n.origin))
    return out


register(
    PrimitiveDef(
        "separable_loss",
        "loss",
        "composite",
        _infer,
        _sep_impl,
        vjp=_sep_vjp,
        jvp=_sep_jvp,
        decompose=_sep_decompose,
        curvature=_sep_curvature,
        sq_vjp=_sep_sq_vjp,
        doc="L = Σ_k ℓ(y_k, t_k)",
    )
)


def separable(g: Graph, kind: str, fn: local.ElementwiseFn, y: str, t: str, origin: str) -> str:
    return emit(
        g, "separable_loss", [y, t], {"kind": kind, "fn": fn.name}, name=kind, origin=origin
    )


# ---- softmax cross-entropy ---------------------------------------------------------------
def _smce_impl(node, args, arg_nodes):
    y, t = args
    lse = red._lse_impl(node, [y], arg_nodes[:1])
    return lse * t.sum(axis=-1) - (t * y).sum(axis=-1)


def _total(g: Graph, t: str, origin: str) -> str:
    """Σ_k t_k: exactly 1 for the one-hot row of a class label (so no kernel sums, or
    stores, the row), a feature sum otherwise."""
    if g[t].op == "one_hot":
        return emit(g, "const", [], {"value": 1.0}, name="one", origin=origin)
    return emit(g, "sum", [t], name="sum_t", origin=origin)


def _dy(g: Graph, n: Node) -> str:
    """∂L/∂y = softmax(y) Σ_k t_k − t."""
    y, t = n.inputs
    st = _total(g, t, n.origin)
    s = red.softmax(g, y, n.origin)
    return ew.call(g, "sub", ew.mul(g, s, st, n.origin), t, origin=n.origin)


def _dt(g: Graph, n: Node) -> str:
    """∂L/∂t = logsumexp(y) − y."""
    y, _ = n.inputs
    lse = emit(g, "logsumexp", [y], name="lse", origin=n.origin)
    return ew.call(g, "sub", lse, y, origin=n.origin)


def _smce_vjp(g, n, cot, needs):
    parts = (_dy, _dt)
    return [
        ew.unbroadcast(g, ew.mul(g, cot, parts[i](g, n), n.origin), g[x], n.origin)
        if needs[i]
        else None
        for i, x in enumerate(n.inputs)
    ]


def _smce_jvp(g, n, tangents):
    total = None
    for part, t in zip((_dy, _dt), tangents):
        if t is not None:
            total = ew.add(
                g, total, _sum(g, ew.mul(g, part(g, n), t, n.origin), n.origin), n.origin
            )
    return total


def _smce_decompose(g: Graph, n: Node) -> str:
    y, t = n.inputs
    lse = emit(g, "logsumexp", [y], name="lse", origin=n.origin)
    st = _total(g, t, n.origin)
    ty = emit(g, "sum", [ew.call(g, "mul", t, y, origin=n.origin)], name="sum_ty", origin=n.origin)
    return ew.call(g, "sub", ew.mul(g, lse, st, n.origin), ty, name=n.name, origin=n.origin)


def _smce_curvature(g: Graph, n: Node, cot: str) -> list:
    """∇²_y L = (Σ_k t_k)(diag(p) − p pᵀ), factored exactly; ∂²L/∂y∂t = p 1ᵀ − I
    couples y and t (skipped unless the target depends on θ)."""
    y, t = n.inputs
    p = red.softmax(g, y, n.origin)
    st = _total(g, t, n.origin)
    factor, diag = red.softmax_factor(g, p, n.origin)
    c = ew.mul(g, cot, st, n.origin)

    def apply_c(gg: Graph, z: str) -> str:
        sz = emit(gg, "sum", [z], name="sum", origin=n.origin)
        pz = ew.call(gg, "sub", ew.mul(gg, p, sz, n.origin), z, origin=n.origin)
        return ew.mul(gg, cot, pz, n.origin)

    return [curv.Factored(0, c, g[y].shape, factor, diag), curv.Coupling(0, 1, g[t].shape, apply_c)]


def _smce_sq_vjp(g: Graph, n: Node, d: str, needs: list[bool]) -> list:
    out = []
    for i, (part, x) in enumerate(zip((_dy, _dt), n.inputs)):
        sq = ew.call(g, "square", part(g, n), origin=n.origin)
        out.append(
            ew.unbroadcast(g, ew.mul(g, d, sq, n.origin), g[x], n.origin) if needs[i] else None
        )
    return out


register(
    PrimitiveDef(
        "softmax_cross_entropy",
        "loss",
        "composite",
        _infer,
        _smce_impl,
        vjp=_smce_vjp,
        jvp=_smce_jvp,
        decompose=_smce_decompose,
        curvature=_smce_curvature,
        sq_vjp=_smce_sq_vjp,
        doc="L = Σ_k t_k (logsumexp(y) − y_k)",
    )
)


# ---- class labels ---------------------------------------------------------------------------
def _one_hot_infer(inputs: list[Node], attrs):
    (c,) = inputs
    if c.shape != () or not c.batched:
        raise errors.ShapeError(
            f"one_hot needs a per-case class label (a batched scalar), got {c.describe()}",
            fix="declare the labels with m.target(name, n_classes, labels=True)",
        )
    return (int(attrs["classes"]),), True


def _indicator(c: sympy.Expr) -> sympy.Expr:
    """[c = j], j the feature index of the element a fused map computes."""
    return sympy.Piecewise((1, sympy.Eq(c, ew.INDEX_SYMBOL)), (0, True))


def _one_hot_impl(node, args, arg_nodes):
    c = np.asarray(args[0]).reshape(-1)  # (B,), or the runtime's (B, 1) view of it
    return (c[:, None] == np.arange(node.attr("classes"))).astype(np.float64)


register(
    PrimitiveDef(
        "one_hot",
        "target",  # not a loss (family "loss" marks the Gauss-Newton split's losses)
        "map",
        _one_hot_infer,
        _one_hot_impl,
        # piecewise constant in c, and c is data (a target), never differentiated: no
        # derivative flows through it in either direction
        vjp=lambda g, n, cot, needs: [None],
        jvp=lambda g, n, tangents: None,
        sq_vjp=lambda g, n, d, needs: [None],
        scalar=lambda node, syms: _indicator(syms[0]),
        inline=True,
        doc="t_k = [c = k]: the one-hot row of a class label c, recomputed inside every map "
        "that reads it (the kernels read the labels (B,), never a B × K array)",
    )
)


def one_hot(g: Graph, label: str, classes: int, name: str, origin: str) -> str:
    """The one-hot target row of the per-case class label ``label`` (``classes`` wide)."""
    return emit(g, "one_hot", [label], {"classes": int(classes)}, name=name, origin=origin)


def check_label_uses(g: Graph) -> None:
    """A class label's one-hot row is declared for one reader only: softmax cross-entropy's
    target operand (Σ_k t_k = 1 there, and nothing else reads integers as rows). Anything
    else reading it is a ModelError naming the reader, its DSL line and the fix."""
    for n in g.nodes():
        for i, x in enumerate(n.inputs):
            if g[x].op != "one_hot" or n.op == "one_hot":
                continue
            row = g[g[x].inputs[0]]  # the label leaf, by its DSL name
            if n.op == "softmax_cross_entropy" and i == 1:
                continue
            raise errors.ModelError(
                f"the class-label target '{row.name}' is read by {n.describe()}; "
                "labels=True targets can only be the target of softmax_cross_entropy",
                where=n.origin,
                node=n.describe(),
                fix=f"use sc.losses.softmax_cross_entropy(logits, {row.name}), or declare "
                f"m.target('{row.name}', {g[x].shape[0]}) without labels=True and pass "
                "one-hot (or real-valued) rows",
            )


# -- samplers of the predictive distribution p(t | y) (K-FAC's "fisher_mc") -------------------
# For each built-in loss ℓ(y, t) = −log p(t | y) + const, a draw t̃ ~ p(t | y) makes the
# gradient g = ∂ℓ(y, t̃)/∂y satisfy E[g gᵀ] = H_L (the Fisher equals the loss Hessian):
#   squared_error           t̃ = y + n, n ~ N(0, I)          g = −n,      E = I
#   sigmoid_cross_entropy   t̃_k ~ Bernoulli(σ(y_k))          g = σ − t̃,  E = diag(σ(1 − σ))
#   softmax_cross_entropy   t̃ ~ one-hot Categorical(softmax(y))  g = p − t̃,  E = diag p − p pᵀ
#                           (H_L for targets summing to one, as class probabilities do)
# Each takes y (B, n) and a numpy Generator and returns t̃ (B, n).


def _sample_squared_error(y, rng):
    return y + rng.standard_normal(y.shape)


def _sample_sigmoid_cross_entropy(y, rng):
    import numpy as np

    p = 0.5 * (1.0 + np.tanh(0.5 * y))  # σ(y) without overflow
    return (rng.random(y.shape) < p).astype(y.dtype)


def _sample_softmax_cross_entropy(y, rng):
    import numpy as np

    p = np.exp(y - y.max(axis=1, keepdims=True))
    cdf = np.cumsum(p / p.sum(axis=1, keepdims=True), axis=1)
    u = rng.random((y.shape[0], 1))
    k = np.minimum((u > cdf).sum(axis=1), y.shape[1] - 1)  # inverse CDF per case
    out = np.zeros_like(y)
    out[np.arange(y.shape[0]), k] = 1.0
    return out


SAMPLERS = {
    "squared_error": _sample_squared_error,
    "sigmoid_cross_entropy": _sample_sigmoid_cross_entropy,
    "softmax_cross_entropy": _sample_softmax_cross_entropy,
}
