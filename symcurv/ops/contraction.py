"""Contractions: matrix-vector products, transposes and outer products.

    matvec      y = W h                 W̄ = ȳ hᵀ (summed over the batch if W is shared)
                                        h̄ = Wᵀ ȳ
    transpose   y = Wᵀ                  W̄ = ȳᵀ
    outer       y = u vᵀ  (per case)    ū = ȳ v,  v̄ = ȳᵀ u
    outer_bsum  y = Σ_b u_b v_bᵀ        ū_b = ȳ v_b,  v̄_b = ȳᵀ u_b

``outer_bsum`` is where a per-case value meets a parameter: the gradient of W in ``W @ h``
is ONE GEMM over the batch (Ȳᵀ H), never a B × |W| array. Lowering turns every one of these
into a BLAS call with the transposes folded into its operands.
"""

from __future__ import annotations

import numpy as np

from symcurv import errors
from symcurv.ir.graph import Graph, Node
from symcurv.ops import curvature as curv
from symcurv.ops import elementwise as ew
from symcurv.ops import lowering as lw
from symcurv.ops.registry import PrimitiveDef, emit, register


def _mv_infer(inputs: list[Node], attrs):
    W, h = inputs
    if len(W.shape) != 2:
        raise errors.ShapeError(
            f"the left operand of @ must be a matrix, got {W.describe()}",
            fix="use sc.dot(u, v) for the inner product of two vectors",
        )
    if len(h.shape) != 1 or h.shape[0] != W.shape[1]:
        raise errors.ShapeError(
            f"W @ h needs h of length {W.shape[1]} = the number of columns of "
            f"{W.describe()}, got {h.describe()}",
            fix=f"make the parameter's shape (n_out, {h.shape[0] if h.shape else 'n_in'}) or "
            "feed it the vector it was sized for",
        )
    return (W.shape[0],), W.batched or h.batched


def _mv_impl(node, args, arg_nodes):
    W, h = args
    Wn, hn = arg_nodes
    if not Wn.batched:
        return h @ W.T
    return np.einsum("bmn,bn->bm" if hn.batched else "bmn,n->bm", W, h)


def transpose(g: Graph, w: str, origin: str = "") -> str:
    return emit(g, "transpose", [w], name=f"{g[w].name}T", origin=origin)


def matvec(g: Graph, w: str, h: str, origin: str = "", name: str = "") -> str:
    return emit(g, "matvec", [w, h], name=name or f"{g[w].name}_h", origin=origin)


def outer_cotangent(g: Graph, u: str, v: str, like: Node, origin: str) -> str:
    """u vᵀ reduced to ``like``'s batchedness without materialising per-case outers."""
    ub, vb = g[u].batched, g[v].batched
    if like.batched or not (ub or vb):
        return emit(g, "outer", [u, v], name=f"d{like.name}", origin=origin)
    if ub and vb:
        return emit(g, "outer_bsum", [u, v], name=f"d{like.name}", origin=origin)
    if ub:
        u = emit(g, "batch_sum", [u], name="bsum", origin=origin)
    else:
        v = emit(g, "batch_sum", [v], name="bsum", origin=origin)
    return emit(g, "outer", [u, v], name=f"d{like.name}", origin=origin)


def _mv_vjp(g, n, cot, needs):
    W, h = n.inputs
    dW = outer_cotangent(g, cot, h, g[W], n.origin) if needs[0] else None
    dh = None
    if needs[1]:
        dh = ew.unbroadcast(
            g, matvec(g, transpose(g, W, n.origin), cot, n.origin, "WTg"), g[h], n.origin
        )
    return [dW, dh]


def _mv_jvp(g, n, t):
    W, h = n.inputs
    out = None
    if t[0] is not None:
        out = matvec(g, t[0], h, n.origin)
    if t[1] is not None:
        out = ew.add(g, out, matvec(g, W, t[1], n.origin), n.origin)
    return None if out is None else ew.broadcast_to(g, out, n.shape, n.batched, n.origin)


def _mv_curvature(g, n, cot):
    """y = W h is bilinear: M couples W and h with C z = ḡ zᵀ (an outer product), so
    CP's noise lives in h's space (2·|h| numbers per case, never |W|)."""
    W, h = n.inputs

    def apply_c(gg, z):
        return emit(gg, "outer", [cot, z], name="Cz", origin=n.origin)

    return [curv.Coupling(0, 1, g[h].shape, apply_c)]


def _mv_sq_vjp(g, n, d, needs):
    """(J∘J)ᵀ d: d_W = d (h²)ᵀ, d_h = (W²)ᵀ d."""
    W, h = n.inputs
    dW = dh = None
    if needs[0]:
        dW = outer_cotangent(g, d, ew.call(g, "square", h, origin=n.origin), g[W], n.origin)
    if needs[1]:
        W2T = transpose(g, ew.call(g, "square", W, origin=n.origin), n.origin)
        dh = ew.unbroadcast(g, matvec(g, W2T, d, n.origin, "W2Td"), g[h], n.origin)
    return [dW, dh]


def _mv_lower(g: Graph, n: Node) -> lw.Lowering:
    W, h = n.inputs
    r, c = g[W].shape
    if g[W].batched:  # a per-case matrix: one matrix-vector product per case
        return lw.PerCaseMatvec(W, h, r, c)
    if g[h].batched:  # cases are rows: (W h_b)_b = H Wᵀ
        return lw.Gemm(lw.Mat(h, lw.CASES, c), lw.Mat(W, r, c, True), lw.Mat(n.id, lw.CASES, r))
    return lw.Gemm(lw.Mat(W, r, c), lw.Mat(h, c, 1), lw.Mat(n.id, r, 1))


register(
    PrimitiveDef(
        "matvec",
        "contraction",
        "gemm",
        _mv_infer,
        _mv_impl,
        vjp=_mv_vjp,
        jvp=_mv_jvp,
        curvature=_mv_curvature,
        sq_vjp=_mv_sq_vjp,
        lower=_mv_lower,
        doc="y = W h",
    )
)


def _t_infer(inputs, attrs):
    (W,) = inputs
    if len(W.shape) != 2:
        raise errors.ShapeError(
            f".T needs a matrix, got {W.describe()}", fix="transpose only 2-D nodes"
        )
    return (W.shape[1], W.shape[0]), W.batched


def _t_simplify(g: Graph, n: Node) -> str | None:
    x = g[n.inputs[0]]
    if x.op == "transpose":  # (Wᵀ)ᵀ = W
        return x.inputs[0]
    if x.op in ("outer", "outer_bsum"):  # (u vᵀ)ᵀ = v uᵀ: the GEMM writes it directly
        return emit(g, x.op, [x.inputs[1], x.inputs[0]], name=n.name, origin=n.origin)
    return None


register(
    PrimitiveDef(
        "transpose",
        "contraction",
        "gemm",
        _t_infer,
        lambda node, args, arg_nodes: np.swapaxes(args[0], -1, -2),
        vjp=lambda g, n, cot, needs: [transpose(g, cot, n.origin)],
        jvp=lambda g, n, t: None if t[0] is None else transpose(g, t[0], n.origin),
        simplify=_t_simplify,
        curvature=curv.linear,
        sq_vjp=lambda g, n, d, needs: [transpose(g, d, n.origin)],
        lower=lambda g, n: lw.Transpose(n.inputs[0], *n.shape),
        factored_vjp=lambda uv: (uv[1], uv[0]),  # (u vᵀ)ᵀ = v uᵀ
        view=True,
        doc="y = Wᵀ",
    )
)


def _outer_infer(inputs, attrs):
    u, v = inputs
    if len(u.shape) != 1 or len(v.shape) != 1:
        raise errors.ShapeError(f"outer needs two vectors, got {u.describe()}, {v.describe()}")
    return (u.shape[0], v.shape[0]), u.batched or v.batched


def _outer_impl(node, args, arg_nodes):
    u, v = (a if n.batched or not node.batched else a[None] for a, n in zip(args, arg_nodes))
    return u[..., :, None] * v[..., None, :]


def _outer_vjp(g, n, cot, needs):
    u, v = n.inputs
    du = matvec(g, cot, v, n.origin, "gv") if needs[0] else None
    dv = matvec(g, transpose(g, cot, n.origin), u, n.origin, "gTu") if needs[1] else None
    return [ew.unbroadcast(g, du, g[u], n.origin), ew.unbroadcast(g, dv, g[v], n.origin)]


def _outer_curvature(g, n, cot):
    """y = u vᵀ couples u and v with C z = ḡ z (per case; Σ_b for outer_bsum)."""
    u, v = n.inputs
    return [curv.Coupling(0, 1, g[v].shape, lambda gg, z: matvec(gg, cot, z, n.origin, "Cz"))]


def _outer_sq_vjp(g, n, d, needs):
    u, v = n.inputs
    sq = [ew.call(g, "square", x, origin=n.origin) for x in (u, v)]
    du = matvec(g, d, sq[1], n.origin, "dv2") if needs[0] else None
    dv = matvec(g, transpose(g, d, n.origin), sq[0], n.origin, "dTu2") if needs[1] else None
    return [ew.unbroadcast(g, du, g[u], n.origin), ew.unbroadcast(g, dv, g[v], n.origin)]


def _outer_jvp(op):
    def jvp(g, n, t):
        u, v = n.inputs
        out = None
        if t[0] is not None:
            out = emit(g, op, [t[0], v], name="douter", origin=n.origin)
        if t[1] is not None:
            out = ew.add(g, out, emit(g, op, [u, t[1]], name="douter", origin=n.origin), n.origin)
        return None if out is None else ew.broadcast_to(g, out, n.shape, n.batched, n.origin)

    return jvp


register(
    PrimitiveDef(
        "outer",
        "contraction",
        "gemm",
        _outer_infer,
        _outer_impl,
        vjp=_outer_vjp,
        jvp=_outer_jvp("outer"),
        curvature=_outer_curvature,
        sq_vjp=_outer_sq_vjp,
        lower=lambda g, n: lw.Outer(*n.inputs, *n.shape),
        rank_one=True,
        doc="y = u vᵀ per case",
    )
)


def _ob_infer(inputs, attrs):
    u, v = inputs
    if not (u.batched and v.batched):
        raise errors.ShapeError("outer_bsum needs two batched vectors")
    shape, _ = _outer_infer(inputs, attrs)
    return shape, False


register(
    PrimitiveDef(
        "outer_bsum",
        "contraction",
        "gemm",
        _ob_infer,
        lambda node, args, arg_nodes: args[0].T @ args[1],
        vjp=_outer_vjp,
        jvp=_outer_jvp("outer_bsum"),
        curvature=_outer_curvature,
        sq_vjp=_outer_sq_vjp,
        # Σ_b u_b v_bᵀ = Uᵀ V with the cases as the rows of U and V
        lower=lambda g, n: lw.Gemm(
            lw.Mat(n.inputs[0], lw.CASES, n.shape[0], True),
            lw.Mat(n.inputs[1], lw.CASES, n.shape[1]),
            lw.Mat(n.id, *n.shape),
        ),
        doc="y = Σ_b u_b v_bᵀ = Uᵀ V (one GEMM over the batch)",
    )
)
