"""The 2-D "valid" convolution (a correlation, as in deep-learning libraries) and its transposes.

Per case, an image x of H × W pixels (stored flat, row-major), M filters F of kh × kw
(a parameter of shape (M, kh·kw), each row one filter, row-major) and the responses
y of M × (H−kh+1) × (W−kw+1), a per-case (M, h·w) matrix (one row per filter, each row
a response map stored row-major), so that per-filter weights apply as a matrix-vector
product (Fields of Experts: Σ_p Σ_m α_m g(y_mp) = sc.sum(g(Y).T @ α)):

    y[m, i, j] = Σ_{u<kh, v<kw} F[m, u, v] · x[i+u, j+v]        (correlation: F is not flipped)

All three are linear in each other, so the op is ONE primitive, ``conv2d``, that computes
the gradient of the trilinear form

    T(F, x, y) = Σ_{m,i,j,u,v} F[m, u, v] · x[i+u, j+v] · y[m, i, j]

with respect to one of its three arguments from the other two (attribute ``out``):

    out = "y":  y = ∂T/∂y (F, x)        the forward correlation above
    out = "x":  x̄ = ∂T/∂x (F, ȳ)        x̄[p, q] = Σ_{m,u,v} F[m,u,v] ȳ[m, p−u, q−v]  (full
                                         convolution, out-of-range ȳ read as 0)
    out = "F":  F̄ = ∂T/∂F (ȳ, x)        F̄[m, u, v] = Σ_{i,j} ȳ[m,i,j] x[i+u, j+v]  (per case; a
                                         shared F sums it over the batch)

Every rule follows from T (like ``ad.defbilinear`` in JAX): the pullback of operand a of
``conv2d(out=z)`` is ``conv2d(out=a)`` of the other operand and the cotangent; the
pushforward is the sum of ``conv2d(out=z)`` with one operand replaced by its tangent; the
squared pullback (J∘J)ᵀ d is ``conv2d(out=a)`` of the other operand squared and d (every
entry of J is one entry of the other operand); the local curvature couples the two
operands with C z = ∂/∂a T(a, z, ȳ). The derived graph is closed under differentiation:
score matching (∂/∂θ of ∂²E/∂x²) only ever builds more ``conv2d`` nodes.

Cost: out "y", "x" and "F" each take M·kh·kw·(H−kh+1)·(W−kw+1) multiply-adds per case.
Lowering: a ``Gather`` kernel (ops/lowering.py): each output element is one short loop,
written here once and printed by both emitters.
"""

from __future__ import annotations

import numpy as np

from symcurv import errors
from symcurv.ir.graph import Graph, Node
from symcurv.ops import curvature as curv
from symcurv.ops import elementwise as ew
from symcurv.ops import lowering as lw
from symcurv.ops.registry import PrimitiveDef, emit, register

# The two operands of each output role, in operand order.
OPERANDS = {"y": ("F", "x"), "x": ("F", "y"), "F": ("y", "x")}


class Geometry:
    """Sizes of one convolution: M filters of kh × kw over an H × W image."""

    def __init__(self, M: int, H: int, W: int, kh: int, kw: int) -> None:
        self.M, self.H, self.W, self.kh, self.kw = M, H, W, kh, kw
        self.h, self.w = H - kh + 1, W - kw + 1  # the response map of one filter

    @classmethod
    def of(cls, node_or_attrs) -> Geometry:
        geom = node_or_attrs.attr("geom") if isinstance(node_or_attrs, Node) else None
        return cls(*(geom or node_or_attrs["geom"]))

    def shape(self, role: str) -> tuple[int, ...]:
        """The per-case shape of each role's node: F (M, kh·kw), x (H·W,), y (M, h·w)."""
        return {
            "F": (self.M, self.kh * self.kw),
            "x": (self.H * self.W,),
            "y": (self.M, self.h * self.w),
        }[role]

    def describe(self) -> str:
        return f"{self.M} filters of {self.kh}x{self.kw} over a {self.H}x{self.W} image"


def conv2d(g: Graph, out: str, operands: dict[str, str], geom: tuple, origin: str) -> str:
    """Emit ``conv2d(out=...)`` reading ``operands`` (role -> node id)."""
    a, b = OPERANDS[out]
    return emit(
        g,
        "conv2d",
        [operands[a], operands[b]],
        {"out": out, "geom": tuple(geom)},
        name={"y": "conv", "x": "convT_x", "F": "convT_F"}[out],
        origin=origin,
    )


def _infer(inputs: list[Node], attrs):
    out = attrs["out"]
    geo = Geometry.of(attrs)
    if min(geo.h, geo.w) < 1:
        raise errors.ShapeError(
            f"conv2d: a {geo.kh}x{geo.kw} filter does not fit a {geo.H}x{geo.W} image",
            fix="use filters no larger than the image",
        )
    for role, node in zip(OPERANDS[out], inputs):
        if node.shape != geo.shape(role):
            what = {"F": "the filters", "x": "the image", "y": "the responses"}[role]
            raise errors.ShapeError(
                f"conv2d ({geo.describe()}): {what} must have shape {geo.shape(role)}, "
                f"got {node.describe()}",
                fix={
                    "F": f"declare the filters as m.param(name, ({geo.M}, {geo.kh * geo.kw})): "
                    "one row per filter, row-major",
                    "x": f"feed images of {geo.H}x{geo.W} = {geo.H * geo.W} pixels, flat, "
                    "or pass image=(H, W) matching the input's width",
                    "y": "pass an (M, (H−kh+1)·(W−kw+1)) response matrix",
                }[role],
            )
    return geo.shape(out), any(n.batched for n in inputs)


# ---- numpy semantics (the reference interpreter) -------------------------------------------
def _per_case(arr, node: Node, shape: tuple[int, ...]) -> np.ndarray:
    """An operand as (cases, *shape): a shared one gets a leading axis of 1 (einsum
    broadcasts it over the cases)."""
    a = np.asarray(arr)
    return a.reshape((a.shape[0] if node.batched else 1, *shape))


def _impl(node, args, arg_nodes):
    geo, out = Geometry.of(node), node.attr("out")
    shapes = {"F": (geo.M, geo.kh, geo.kw), "x": (geo.H, geo.W), "y": (geo.M, geo.h, geo.w)}
    v = {role: _per_case(a, n, shapes[role]) for role, a, n in zip(OPERANDS[out], args, arg_nodes)}
    if out == "y":
        win = np.lib.stride_tricks.sliding_window_view(v["x"], (geo.kh, geo.kw), axis=(1, 2))
        res = np.einsum("bijuv,bmuv->bmij", win, v["F"])
    elif out == "F":
        win = np.lib.stride_tricks.sliding_window_view(v["x"], (geo.kh, geo.kw), axis=(1, 2))
        res = np.einsum("bijuv,bmij->bmuv", win, v["y"])
    else:
        cases = max(v["F"].shape[0], v["y"].shape[0])
        res = np.zeros((cases, geo.H, geo.W))
        for u in range(geo.kh):
            for w in range(geo.kw):
                res[:, u : u + geo.h, w : w + geo.w] += np.einsum(
                    "bm,bmij->bij", v["F"][:, :, u, w], v["y"]
                )
    res = res.reshape((res.shape[0], *node.shape))
    return res if node.batched else res[0]


# ---- derivative rules: all from the trilinear form T ----------------------------------------
def _roles(n: Node) -> dict[str, str]:
    return dict(zip(OPERANDS[n.attr("out")], n.inputs))


def _vjp(g, n, cot, needs):
    """ā = ∂T/∂a (the other operand, ȳ): the adjoint of a map linear in a is T's gradient."""
    roles, out = _roles(n), n.attr("out")
    res = []
    for (role, nid), need in zip(roles.items(), needs):
        if not need:
            res.append(None)
            continue
        other = {r: i for r, i in roles.items() if r != role} | {out: cot}
        bar = conv2d(g, role, other, n.attr("geom"), n.origin)
        res.append(ew.unbroadcast(g, bar, g[nid], n.origin))
    return res


def _jvp(g, n, t):
    """ż = conv(ȧ, b) + conv(a, ḃ): the op is bilinear."""
    roles, out = _roles(n), n.attr("out")
    total = None
    for (role, _), tangent in zip(roles.items(), t):
        if tangent is not None:
            term = conv2d(g, out, roles | {role: tangent}, n.attr("geom"), n.origin)
            total = ew.add(g, total, term, n.origin)
    return None if total is None else ew.broadcast_to(g, total, n.shape, n.batched, n.origin)


def _sq_vjp(g, n, d, needs):
    """(J_a∘J_a)ᵀ d = ∂T/∂a (b², d): each entry of J_a is a single entry of b."""
    roles, out = _roles(n), n.attr("out")
    res = []
    for (role, nid), need in zip(roles.items(), needs):
        if not need:
            res.append(None)
            continue
        (other, b), *_ = [(r, i) for r, i in roles.items() if r != role]
        b2 = ew.call(g, "square", b, origin=n.origin)
        sq = conv2d(g, role, {other: b2, out: d}, n.attr("geom"), n.origin)
        res.append(ew.unbroadcast(g, sq, g[nid], n.origin))
    return res


def _curvature(g, n, cot):
    """M couples the two operands: C z = ∂/∂a T(a, z, ȳ) for z in b's space. The noise lives
    in the smaller operand's space (the filters, for an image larger than M·kh·kw)."""
    pairs, out = list(_roles(n).items()), n.attr("out")
    i, j = (0, 1) if g[pairs[1][1]].size <= g[pairs[0][1]].size else (1, 0)
    ri, rj = pairs[i][0], pairs[j][0]

    def apply_c(gg, z):
        return conv2d(gg, ri, {rj: z, out: cot}, n.attr("geom"), n.origin)

    return [curv.Coupling(i, j, Geometry.of(n).shape(rj), apply_c)]


# ---- the kernel: one short loop per output element -------------------------------------------
def _lower(g: Graph, n: Node) -> lw.Gather:
    geo, out = Geometry.of(n), n.attr("out")
    body = {"y": _body_y, "x": _body_x, "F": _body_F}[out]
    return lw.Gather(tuple(n.inputs), n.size, lambda read: body(geo, read))


def _body_y(geo: Geometry, read) -> tuple[list[str], str]:
    """y[m, i, j] = Σ_{u,v} F[m, u, v] x[i+u, j+v], element e = (m·h + i)·w + j."""
    K, hw = geo.kh * geo.kw, geo.h * geo.w
    return [
        f"mm = e // {hw}  # filter",
        f"ii = (e - mm * {hw}) // {geo.w}  # response row",
        f"jj = e - mm * {hw} - ii * {geo.w}  # response column",
        "acc = 0.0",
        f"for uu in range({geo.kh}):",
        f"    for vv in range({geo.kw}):",
        f"        acc += {read(0, f'mm * {K} + uu * {geo.kw} + vv')} * "
        f"{read(1, f'(ii + uu) * {geo.W} + jj + vv')}",
    ], "acc"


def _body_x(geo: Geometry, read) -> tuple[list[str], str]:
    """x̄[p, q] = Σ_m Σ_{u,v: 0≤p−u<h, 0≤q−v<w} F[m, u, v] ȳ[m, p−u, q−v], e = p·W + q.
    Interior pixels take every tap: constant trip counts there let the compiler unroll
    the tap loops (5x faster than the bounded loop the border needs)."""
    K, hw = geo.kh * geo.kw, geo.h * geo.w
    term = (
        f"acc += {read(0, f'mm * {K} + uu * {geo.kw} + vv')} * "
        f"{read(1, f'mm * {hw} + (pp - uu) * {geo.w} + qq - vv')}"
    )
    return [
        f"pp = e // {geo.W}  # image row",
        f"qq = e - pp * {geo.W}  # image column",
        "acc = 0.0",
        f"if {geo.kh - 1} <= pp < {geo.h} and {geo.kw - 1} <= qq < {geo.w}:  # every tap",
        f"    for mm in range({geo.M}):",
        f"        for uu in range({geo.kh}):",
        f"            for vv in range({geo.kw}):",
        f"                {term}",
        "else:  # near the border: only the taps whose response exists",
        f"    for mm in range({geo.M}):",
        f"        for uu in range(max(0, pp - {geo.h - 1}), min({geo.kh}, pp + 1)):",
        f"            for vv in range(max(0, qq - {geo.w - 1}), min({geo.kw}, qq + 1)):",
        f"                {term}",
    ], "acc"


def _body_F(geo: Geometry, read) -> tuple[list[str], str]:
    """F̄[m, u, v] = Σ_{i,j} ȳ[m, i, j] x[i+u, j+v], e = m·kh·kw + u·kw + v."""
    K, hw = geo.kh * geo.kw, geo.h * geo.w
    return [
        f"mm = e // {K}  # filter",
        f"uu = (e - mm * {K}) // {geo.kw}  # filter row",
        f"vv = e - mm * {K} - uu * {geo.kw}  # filter column",
        "acc = 0.0",
        f"for ii in range({geo.h}):",
        f"    for jj in range({geo.w}):",
        f"        acc += {read(0, f'mm * {hw} + ii * {geo.w} + jj')} * "
        f"{read(1, f'(ii + uu) * {geo.W} + jj + vv')}",
    ], "acc"


register(
    PrimitiveDef(
        "conv2d",
        "contraction",
        "gather",
        _infer,
        _impl,
        vjp=_vjp,
        jvp=_jvp,
        curvature=_curvature,
        sq_vjp=_sq_vjp,
        lower=_lower,
        doc="y[m,i,j] = Σ_{u,v} F[m,u,v] x[i+u,j+v] (valid correlation) and its transposes",
    )
)
