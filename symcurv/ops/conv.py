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
Lowering: a ``Gather`` kernel (ops/lowering.py): a loop nest over a span of one output
row, written here once and printed by both emitters (the CPU spans whole rows, so the
innermost loop runs over contiguous columns and vectorises; CUDA one element per thread).
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


# ---- the kernels: a loop nest per span of one output row ---------------------------------------
def _lower(g: Graph, n: Node) -> lw.Gather:
    """Rows of the output: y by (filter, response row), x̄ by image row, F̄ by (filter,
    filter row); the columns of a row are the contiguous innermost index."""
    geo, out = Geometry.of(n), n.attr("out")
    rows, cols = {"y": (geo.M * geo.h, geo.w), "x": (geo.H, geo.W), "F": (geo.M * geo.kh, geo.kw)}[
        out
    ]
    body = {"y": _body_y, "x": _body_x, "F": _body_F}[out]
    return lw.Gather(tuple(n.inputs), rows, cols, lambda io: body(geo, io))


def _bound(expr: str, other: int, pick) -> str:
    """``pick(expr, other)`` (max or min) as source, folded when ``expr`` is a literal."""
    return str(pick(int(expr), other)) if expr.isdigit() else f"{pick.__name__}({expr}, {other})"


def _body_y(geo: Geometry, io) -> list[str]:
    """y[m, i, j] = Σ_u Σ_v F[m, u, v] x[i+u, j+v]: row r = (m, i), columns j. The
    constant-trip tap loop over v is unrolled by the compiler, so the loop over the
    contiguous j vectorises; one pass over the row per filter row u."""
    K, hw, kw, W = geo.kh * geo.kw, geo.h * geo.w, geo.kw, geo.W
    cols = f"range({io.c0}, {io.c1})"
    return [
        f"mm = r // {geo.h}  # filter",
        f"ii = r - mm * {geo.h}  # response row",
        f"y0 = mm * {hw} + ii * {geo.w}  # the row's first element",
        f"yrow = {io.out_span('y0', geo.w)}",
        f"for jj in {cols}:",
        "    yrow[jj] = 0.0",
        f"for uu in range({geo.kh}):  # filter row uu meets image row ii + uu",
        f"    f0 = mm * {K} + uu * {kw}",
        f"    x0 = (ii + uu) * {W}",
        f"    frow = {io.span(0, 'f0', kw)}",
        f"    xrow = {io.span(1, 'x0', W)}",
        f"    for jj in {cols}:",
        "        acc = 0.0",
        f"        for vv in range({kw}):  # constant trips: unrolled, the jj loop vectorises",
        "            acc += frow[vv] * xrow[jj + vv]",
        "        yrow[jj] += acc",
    ]


def _body_x(geo: Geometry, io) -> list[str]:
    """x̄[p, q] = Σ_m Σ_{u,v: 0≤p−u<h, 0≤q−v<w} F[m, u, v] ȳ[m, p−u, q−v]: row r = p,
    columns q. Away from the left and right edges every tap v exists (a constant trip
    count, unrolled, the q loop vectorised); the edges take the bounded tap loops."""
    K, hw, kw, w = geo.kh * geo.kw, geo.h * geo.w, geo.kw, geo.w
    right = max(kw - 1, w)  # the first column of the right edge
    term = "xrow[qq] += frow[vv] * yrow[qq - vv]"
    return [
        "pp = r  # image row",
        f"x0 = pp * {geo.W}",
        f"xrow = {io.out_span('x0', geo.W)}",
        f"for qq in range({io.c0}, {io.c1}):",
        "    xrow[qq] = 0.0",
        f"for mm in range({geo.M}):",
        f"    for uu in range(max(0, pp - {geo.h - 1}), min({geo.kh}, pp + 1)):  # ȳ row pp − uu",
        f"        f0 = mm * {K} + uu * {kw}",
        f"        y0 = mm * {hw} + (pp - uu) * {w}",
        f"        frow = {io.span(0, 'f0', kw)}",
        f"        yrow = {io.span(1, 'y0', w)}",
        f"        for qq in range({_bound(io.c0, kw - 1, max)}, {_bound(io.c1, w, min)}):"
        "  # every tap",
        "            acc = 0.0",
        f"            for vv in range({kw}):  # constant trips: unrolled, qq vectorises",
        "                acc += frow[vv] * yrow[qq - vv]",
        "            xrow[qq] += acc",
        f"        for qq in range({io.c0}, {_bound(io.c1, kw - 1, min)}):  # left edge",
        f"            for vv in range(max(0, qq - {w - 1}), qq + 1):",
        f"                {term}",
        f"        for qq in range({_bound(io.c0, right, max)}, {io.c1}):  # right edge",
        f"            for vv in range(qq - {w - 1}, {kw}):",
        f"                {term}",
    ]


def _body_F(geo: Geometry, io) -> list[str]:
    """F̄[m, u, v] = Σ_{i,j} ȳ[m, i, j] x[i+u, j+v]: row r = (m, u), columns v."""
    K, hw, w, W = geo.kh * geo.kw, geo.h * geo.w, geo.w, geo.W
    return [
        f"mm = r // {geo.kh}  # filter",
        f"uu = r - mm * {geo.kh}  # filter row",
        f"for vv in range({io.c0}, {io.c1}):  # filter column",
        "    acc = 0.0",
        f"    for ii in range({geo.h}):",
        f"        y0 = mm * {hw} + ii * {w}",
        f"        x0 = (ii + uu) * {W} + vv",
        f"        yrow = {io.span(0, 'y0', w)}",
        f"        xrow = {io.span(1, 'x0', w)}",
        f"        for jj in range({w}):",
        "            acc += yrow[jj] * xrow[jj]",
        f"    {io.out(f'mm * {K} + uu * {geo.kw} + vv')} = acc",
    ]


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
