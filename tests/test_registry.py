"""Every primitive in ``symcurv.ops.REGISTRY``, checked numerically (DESIGN.md §2, §4).

For each op and each operand layout it allows (shapes, batched or shared), a tiny graph
``y = op(a_0, ..., a_k)`` is built and evaluated with the reference interpreter. The
Jacobian of each operand is taken by central differences of that forward value, and

* ``vjp`` (with all operands needed, and with each one alone) must give ȳᵀ J_i,
* ``jvp`` (with every tangent, and with each tangent alone) must give Σ_i J_i ẋ_i,
* both must build nodes with the operand's / output's shape and batchedness,
* a composite op's ``decompose`` must compute the same value as its ``impl``.

Adding an op to the registry without a row in ``CASES`` fails ``test_every_op_has_cases``.
"""

from __future__ import annotations

import dataclasses
import zlib

import numpy as np
import pytest

from symcurv.ir.graph import Graph
from symcurv.ops import REGISTRY
from symcurv.ops import elementwise as ew
from symcurv.ops.registry import emit
from symcurv.runtime.reference import evaluate
from symcurv.symbolic import local

B = 3
LEAVES = {"input", "target", "param", "const", "direction", "input_direction", "noise", "cached"}
# ops of data only (never differentiated: piecewise constant), checked by their own test
DATA_OPS = {"one_hot"}


@dataclasses.dataclass(frozen=True)
class Operand:
    shape: tuple[int, ...]
    batched: bool
    kind: str = "normal"  # how to draw values: see ``draw``


def b(*shape, kind="normal"):  # a per-case (batched) operand
    return Operand(tuple(shape), True, kind)


def u(*shape, kind="normal"):  # a shared (unbatched) operand
    return Operand(tuple(shape), False, kind)


def draw(rng: np.random.Generator, op: Operand) -> np.ndarray:
    size = ((B,) if op.batched else ()) + op.shape
    if op.kind == "positive":
        return np.asarray(rng.uniform(0.5, 2.0, size=size))
    if op.kind == "unit":
        return np.asarray(rng.uniform(0.05, 0.95, size=size))
    if op.kind == "away":  # |v| >= 0.3: away from kinks and poles
        return np.asarray(rng.choice([-1.0, 1.0], size=size) * rng.uniform(0.3, 1.5, size=size))
    if op.kind == "wide":
        return np.asarray(rng.uniform(-6.0, 6.0, size=size))
    return np.asarray(rng.normal(size=size))


# ---- which operand layouts each op gets ---------------------------------------------------
UNARY_LAYOUTS = [[b(4)], [u(2, 3)], [b()]]
BINARY_LAYOUTS = [[b(4), b(4)], [b(4), u(4)], [u(4), b()], [u(), b(2, 3)], [u(2, 3), u(2, 3)]]

# every built-in elementwise function: (operand kinds, arity)
ELEMENTWISE_KINDS = {
    "add": ("normal", "normal"),
    "sub": ("normal", "normal"),
    "mul": ("normal", "normal"),
    "div": ("normal", "away"),
    "pow": ("positive", "normal"),
    "neg": ("normal",),
    "identity": ("normal",),
    "tanh": ("normal",),
    "logistic": ("wide",),
    "exp": ("normal",),
    "log": ("positive",),
    "softplus": ("wide",),
    "square": ("normal",),
    "relu": ("away",),
}


def _with_kinds(layout: list[Operand], kinds: tuple[str, ...]) -> list[Operand]:
    return [dataclasses.replace(o, kind=k) for o, k in zip(layout, kinds)]


def _elementwise_cases():
    cases = []
    for fn, kinds in ELEMENTWISE_KINDS.items():
        layouts = UNARY_LAYOUTS if len(kinds) == 1 else BINARY_LAYOUTS
        expr = str(local.FUNCTIONS[fn].expr)
        for layout in layouts:
            cases.append((fn, _with_kinds(layout, kinds), {"fn": fn, "expr": expr}))
    gate = local.parse("gate", "x*tanh(y)")  # a user function of two operands
    for layout in ([b(4), u(4)], [u(), b(4)]):
        cases.append(("gate", layout, {"fn": "gate", "expr": str(gate.expr)}))
    return cases


def _separable_cases():
    local.parse("loss_logcosh", "log(cosh(y - t))", args=("y", "t"))
    cases = []
    for kind in ("squared_error", "sigmoid_cross_entropy", "logcosh"):
        for layout in (
            [b(4, kind="wide"), b(4, kind="unit")],
            [b(4), u(4, kind="unit")],
            [u(4), b(4, kind="unit")],
        ):
            cases.append((kind, layout, {"kind": kind, "fn": f"loss_{kind}"}))
    return cases


VEC_SCALAR = [("b", [b(4)], {}), ("u", [u(4)], {})]
CASES: dict[str, list[tuple[str, list[Operand], dict]]] = {
    "elementwise": _elementwise_cases(),
    "broadcast": [("b", [b()], {"shape": (4,)}), ("u", [u()], {"shape": (2, 3)})],
    "batch_broadcast": [("sum", [u(4)], {"mean": False}), ("mean", [u(2, 3)], {"mean": True})],
    "matvec": [
        ("Wu_hb", [u(3, 4), b(4)], {}),
        ("Wb_hb", [b(3, 4), b(4)], {}),
        ("Wb_hu", [b(3, 4), u(4)], {}),
        ("Wu_hu", [u(3, 4), u(4)], {}),
    ],
    "transpose": [("u", [u(3, 4)], {}), ("b", [b(3, 4)], {})],
    "outer": [
        ("bb", [b(3), b(4)], {}),
        ("bu", [b(3), u(4)], {}),
        ("ub", [u(3), b(4)], {}),
        ("uu", [u(3), u(4)], {}),
    ],
    "outer_bsum": [("bb", [b(3), b(4)], {})],
    # 2 filters of 2x3 over a 4x5 image: F (2, 6), x (20,), responses (2, 3·3)
    "conv2d": [
        ("y_Fu_xb", [u(2, 6), b(20)], {"out": "y", "geom": (2, 4, 5, 2, 3)}),
        ("y_Fb_xb", [b(2, 6), b(20)], {"out": "y", "geom": (2, 4, 5, 2, 3)}),
        ("y_Fu_xu", [u(2, 6), u(20)], {"out": "y", "geom": (2, 4, 5, 2, 3)}),
        ("x_Fu_yb", [u(2, 6), b(2, 9)], {"out": "x", "geom": (2, 4, 5, 2, 3)}),
        ("F_yb_xb", [b(2, 9), b(20)], {"out": "F", "geom": (2, 4, 5, 2, 3)}),
        ("x_Fb_yb", [b(2, 6), b(2, 9)], {"out": "x", "geom": (2, 4, 5, 2, 3)}),
        ("F_yb_xu", [b(2, 9), u(20)], {"out": "F", "geom": (2, 4, 5, 2, 3)}),
    ],
    "sum": [*VEC_SCALAR, ("bmat", [b(2, 3)], {}), ("umat", [u(2, 3)], {}), ("bscalar", [b()], {})],
    "logsumexp": VEC_SCALAR,
    "softmax": VEC_SCALAR,
    "batch_sum": [("vec", [b(4)], {}), ("mat", [b(2, 3)], {}), ("scalar", [b()], {})],
    "batch_mean": [("vec", [b(4)], {}), ("mat", [b(2, 3)], {}), ("scalar", [b()], {})],
    "separable_loss": _separable_cases(),
    "softmax_cross_entropy": [
        ("bb", [b(4), b(4, kind="unit")], {"kind": "softmax_cross_entropy"}),
        ("ub", [u(4), b(4, kind="unit")], {"kind": "softmax_cross_entropy"}),
        ("bu", [b(4), u(4, kind="unit")], {"kind": "softmax_cross_entropy"}),
    ],
}
PARAMS = [
    pytest.param(op, layout, attrs, id=f"{op}-{label}-{i}")
    for op, rows in CASES.items()
    for i, (label, layout, attrs) in enumerate(rows)
]


def test_every_op_has_cases():
    assert set(REGISTRY) - set(CASES) == LEAVES | DATA_OPS, "an op without numerical checks"
    assert set(CASES) <= set(REGISTRY)
    assert set(ew.BUILTINS) == set(ELEMENTWISE_KINDS), "a built-in function without checks"
    assert all(rows for rows in CASES.values())


def test_one_hot_reads_the_label_index():
    """one_hot(c)_k = [c = k]: numpy's one-hot rows from the reference impl and from the
    scalar formula the kernels inline (evaluated at every feature index j); no derivative
    flows through a label (the data is never differentiated)."""
    import sympy

    g = Graph("one_hot")
    c = emit(g, "target", [], {"shape": ()}, name="c")
    y = emit(g, "one_hot", [c], {"classes": 4}, name="y")
    labels = np.array([2.0, 0.0, 3.0, 3.0, 1.0])
    np.testing.assert_array_equal(run(g, {"c": labels}, {"y": y})["y"], np.eye(4)[[2, 0, 3, 3, 1]])
    c_sym = sympy.Symbol("c", real=True)
    formula = REGISTRY["one_hot"].scalar(g[y], [c_sym])
    for lab in range(4):
        row = [float(formula.subs({c_sym: lab, ew.INDEX_SYMBOL: j})) for j in range(4)]
        assert row == list(np.eye(4)[lab])
    assert REGISTRY["one_hot"].vjp(g, g[y], y, [True]) == [None]
    assert REGISTRY["one_hot"].jvp(g, g[y], [c]) is None
    assert REGISTRY["one_hot"].inline and REGISTRY["one_hot"].family != "loss"


# ---- helpers ----------------------------------------------------------------------------
def leaf(g: Graph, name: str, shape: tuple[int, ...], batched: bool) -> str:
    return emit(g, "input" if batched else "param", [], {"shape": shape}, name=name)


def build(op: str, layout: list[Operand], attrs: dict):
    """``y = op(a0, ..., ak)`` plus an ``anchor`` input that fixes the batch size."""
    g = Graph(f"check_{op}")
    leaf(g, "anchor", (1,), True)
    ins = [leaf(g, f"a{i}", o.shape, o.batched) for i, o in enumerate(layout)]
    y = emit(g, op, ins, attrs, name="y")
    g.outputs = {"y": y}
    return g, g[y], ins


def run(g: Graph, values: dict, outputs: dict[str, str]) -> dict[str, np.ndarray]:
    g.outputs = dict(outputs)
    return evaluate(g, values)


def fd_jacobian(g: Graph, y: str, values: dict, name: str, eps: float = 1e-6) -> np.ndarray:
    """d vec(y) / d vec(values[name]) by central differences (rows: outputs)."""
    x = values[name]
    cols = []
    for idx in np.ndindex(x.shape):
        plus, minus = x.copy(), x.copy()
        plus[idx] += eps
        minus[idx] -= eps
        yp = run(g, {**values, name: plus}, {"y": y})["y"]
        ym = run(g, {**values, name: minus}, {"y": y})["y"]
        cols.append((yp - ym).ravel() / (2 * eps))
    return np.stack(cols, axis=1)


def close(got, want, what: str, tol: float = 1e-6) -> None:
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    err = np.max(np.abs(got - want), initial=0.0)
    scale = max(np.max(np.abs(want), initial=0.0), 1e-3)
    assert err <= tol * scale, f"{what}: max error {err:.3g} (scale {scale:.3g})\n{got}\n{want}"


# ---- the checks --------------------------------------------------------------------------
@pytest.mark.parametrize("op, layout, attrs", PARAMS)
def test_vjp_and_jvp_match_central_differences(op, layout, attrs):
    prim = REGISTRY[op]
    g, node, ins = build(op, layout, attrs)
    rng = np.random.default_rng(zlib.crc32(repr((op, layout, attrs)).encode()))
    values = {"anchor": np.zeros((B, 1))}
    values.update({f"a{i}": draw(rng, o) for i, o in enumerate(layout)})
    y = run(g, values, {"y": node.id})["y"]
    assert y.shape == ((B,) if node.batched else ()) + node.shape, (y.shape, node)
    jac = [fd_jacobian(g, node.id, values, f"a{i}") for i in range(len(ins))]

    # pullback: x̄_i = J_iᵀ ȳ
    cot = leaf(g, "ybar", node.shape, node.batched)
    values["ybar"] = np.asarray(rng.normal(size=y.shape))
    k = len(ins)
    for needs in [[True] * k] + ([[j == i for j in range(k)] for i in range(k)] if k > 1 else []):
        outs = prim.vjp(g, node, cot, list(needs))
        assert len(outs) == k
        for i, x in enumerate(ins):
            if not needs[i]:
                continue
            assert outs[i] is not None, f"vjp of {op} gave no cotangent for operand {i}"
            assert (g[outs[i]].shape, g[outs[i]].batched) == (g[x].shape, g[x].batched), (
                f"vjp of {op}: operand {i} is {g[x].describe()}, cotangent {g[outs[i]].describe()}"
            )
            got = run(g, values, {"c": outs[i]})["c"]
            close(
                got,
                (values["ybar"].ravel() @ jac[i]).reshape(values[f"a{i}"].shape),
                f"vjp of {op} w.r.t. operand {i} (needs={needs})",
            )

    # pushforward: ẏ = Σ_i J_i ẋ_i
    tan = []
    for i, x in enumerate(ins):
        tan.append(leaf(g, f"t{i}", g[x].shape, g[x].batched))
        values[f"t{i}"] = np.asarray(rng.normal(size=values[f"a{i}"].shape))
    for which in [list(range(k))] + ([[i] for i in range(k)] if k > 1 else []):
        out = prim.jvp(g, node, [tan[i] if i in which else None for i in range(k)])
        assert out is not None, f"jvp of {op} gave no tangent"
        assert (g[out].shape, g[out].batched) == (node.shape, node.batched), (
            f"jvp of {op}: output {node.describe()}, tangent {g[out].describe()}"
        )
        want = sum(jac[i] @ values[f"t{i}"].ravel() for i in which).reshape(y.shape)
        close(run(g, values, {"d": out})["d"], want, f"jvp of {op} along operands {which}")


COMPOSITE = [p for p in PARAMS if REGISTRY[p.values[0]].decompose is not None]


def test_composites_are_covered():
    names = {op for op, prim in REGISTRY.items() if prim.decompose is not None}
    assert names == {p.values[0] for p in COMPOSITE}
    assert all(REGISTRY[n].kernel == "composite" for n in names)


@pytest.mark.parametrize("op, layout, attrs", COMPOSITE)
def test_decomposition_equals_impl(op, layout, attrs):
    g, node, _ = build(op, layout, attrs)
    rng = np.random.default_rng(7)
    values = {"anchor": np.zeros((B, 1))}
    values.update({f"a{i}": draw(rng, o) for i, o in enumerate(layout)})
    d = REGISTRY[op].decompose(g, node)
    assert (g[d].shape, g[d].batched) == (node.shape, node.batched)
    assert all(g[n].op != op for n in g.ancestors(d) | {d}), "decomposition uses the op itself"
    got = run(g, values, {"y": node.id, "d": d})
    close(got["d"], got["y"], f"decomposition of {op}", tol=1e-12)


# ---- second order: curvature, squared pullback, derivatives of the pullback ------------
SECOND = [p for p in PARAMS if REGISTRY[p.values[0]].vjp is not None]


def _per_case(g: Graph, nid: str, val, Bn: int, batched: bool) -> np.ndarray:
    """A value as ``(Bn, *shape)``: shared values broadcast to every case."""
    val = np.asarray(val, dtype=np.float64)
    if not batched:
        return val[None]
    return val if g[nid].batched else np.broadcast_to(val, (Bn, *g[nid].shape))


def _dense(g, build_fn, noise_shape, batched, values, Bn):
    """Columns F e_k of a term's linear map, per case: ``(Bn, |out|, |noise|)``."""
    z = leaf(g, f"z{len(g)}", tuple(noise_shape), batched)
    out = build_fn(g, z)
    cols = []
    for k in range(int(np.prod(noise_shape, dtype=int))):
        e = np.zeros(int(np.prod(noise_shape, dtype=int)))
        e[k] = 1.0
        e = e.reshape(noise_shape)
        zval = np.broadcast_to(e, (B, *noise_shape)) if batched else e
        got = run(g, {**values, g[z].name: zval}, {"c": out})["c"]
        cols.append(_per_case(g, out, got, Bn, batched).reshape(Bn, -1))
    return np.stack(cols, axis=2)


def _curvature_action(g, node, terms, values, w, Bn):
    """(M w)_i per case from the op's curvature terms, M = Σ_q ȳ_q ∇² y_q (ops/curvature.py)."""
    from symcurv.ops import curvature as curv

    nb = node.batched or any(g[x].batched for x in node.inputs)  # as curvprop._inject
    out = {i: np.zeros((Bn, g[x].size)) for i, x in enumerate(node.inputs)}
    wf = {i: _per_case(g, x, w[i], Bn, nb).reshape(Bn, -1) for i, x in enumerate(node.inputs)}
    for t in terms:
        if isinstance(t, curv.Diag):
            m = _per_case(g, t.m, run(g, values, {"m": t.m})["m"], Bn, nb).reshape(Bn, -1)
            out[t.i] += m * wf[t.i]
        elif isinstance(t, curv.Coupling):
            C = _dense(g, t.apply, t.noise_shape, nb, values, Bn)  # (Bn, |i|, |j|)
            out[t.i] += np.einsum("bij,bj->bi", C, wf[t.j])
            out[t.j] += np.einsum("bij,bi->bj", C, wf[t.i])
        else:  # Factored: c · A Aᵀ, and its diag(A Aᵀ) for Becker-LeCun
            A = _dense(g, t.factor, t.noise_shape, nb, values, Bn)
            c = _per_case(g, t.c, run(g, values, {"c": t.c})["c"], Bn, nb).reshape(Bn, -1)
            out[t.i] += c * np.einsum("bik,bjk,bj->bi", A, A, wf[t.i])
            dg = _per_case(g, (d := t.diag(g)), run(g, values, {"d": d})["d"], Bn, nb)
            close(dg.reshape(Bn, -1), np.einsum("bik,bik->bi", A, A), f"{node.op}: diag(A Aᵀ)")
    # a shared operand of a per-case node collects every case's contribution
    return {
        i: (o.sum(0) if nb and not g[x].batched else (o if nb else o[0])).reshape(np.shape(w[i]))
        for i, (x, o) in enumerate(zip(node.inputs, out.values()))
    }


@pytest.mark.parametrize("op, layout, attrs", SECOND)
def test_second_order_rules_match_central_differences_of_the_pullback(op, layout, attrs):
    """With ȳ fixed, d/dε x̄_i(x + ε w) = (M w)_i, M = Σ_q ȳ_q ∇² y_q. Three ways to get it
    must agree with central differences: the op's ``curvature`` terms (CP, Becker-LeCun),
    ``jvp`` of the ``vjp`` nodes (the R-operator: hvp) and ``vjp`` of them (differentiating
    again: score matching). And ``sq_vjp`` = (J ∘ J)ᵀ d (Becker-LeCun)."""
    from symcurv.transforms import grad, jvp

    prim = REGISTRY[op]
    g, node, ins = build(op, layout, attrs)
    rng = np.random.default_rng(zlib.crc32(repr(("second", op, layout, attrs)).encode()))
    values = {"anchor": np.zeros((B, 1))}
    values.update({f"a{i}": draw(rng, o) for i, o in enumerate(layout)})
    y = run(g, values, {"y": node.id})["y"]
    cot = leaf(g, "ybar", node.shape, node.batched)
    values["ybar"] = np.asarray(rng.normal(size=y.shape))
    bars = prim.vjp(g, node, cot, [True] * len(ins))
    w = [np.asarray(rng.normal(size=values[f"a{i}"].shape)) * 0.5 for i in range(len(ins))]
    eps = 1e-5
    live = [i for i, c in enumerate(bars) if c is not None]

    def bar_values(sign):
        v = dict(values)
        v.update({f"a{i}": values[f"a{i}"] + sign * eps * w[i] for i in range(len(ins))})
        return run(g, v, {f"x{i}": bars[i] for i in live})

    up, down = bar_values(1.0), bar_values(-1.0)
    fd = {i: (up[f"x{i}"] - down[f"x{i}"]) / (2 * eps) for i in live}

    # jvp of the pullback nodes along w
    tangents = {}
    for i, x in enumerate(ins):
        tangents[x] = leaf(g, f"w{i}", g[x].shape, g[x].batched)
        values[f"w{i}"] = w[i]
    rop = jvp.jvp(g, tangents, [bars[i] for i in live])
    for i in live:
        got = 0.0 if rop[bars[i]] is None else run(g, values, {"r": rop[bars[i]]})["r"]
        close(np.broadcast_to(got, fd[i].shape), fd[i], f"jvp of vjp of {op}, operand {i}", 1e-5)

    # vjp of the pullback nodes: ∂/∂a (Σ_i w_iᵀ x̄_i) = M w
    s = None
    for i in live:
        prod = ew.mul(g, bars[i], tangents[ins[i]])
        if prod is None:
            continue
        if g[prod].shape != ():
            prod = emit(g, "sum", [prod])
        if g[prod].batched:
            prod = emit(g, "batch_sum", [prod])
        s = ew.add(g, s, prod)
    if s is not None:
        again = grad.vjp(g, s, ins)
        for i, x in enumerate(ins):
            want = fd.get(i)
            if want is None:
                continue
            got = 0.0 if again[x] is None else run(g, values, {"r": again[x]})["r"]
            close(np.broadcast_to(got, want.shape), want, f"vjp of vjp of {op}, operand {i}", 1e-5)

    # the curvature rule (every op with a vjp has one; CP refuses an op without it)
    if prim.curvature is not None:
        Bn = B if node.batched or any(o.batched for o in layout) else 1
        act = _curvature_action(g, node, prim.curvature(g, node, cot), values, w, Bn)
        for i in live:
            close(act[i], fd[i], f"curvature rule of {op}, operand {i}", 1e-5)

    # the squared pullback: (J ∘ J)ᵀ d
    if prim.sq_vjp is not None:
        jac = [fd_jacobian(g, node.id, values, f"a{i}") for i in range(len(ins))]
        d = np.abs(np.asarray(rng.normal(size=y.shape)))
        dl = leaf(g, "dsq", node.shape, node.batched)
        values["dsq"] = d
        sq = prim.sq_vjp(g, node, dl, [True] * len(ins))
        for i, c in enumerate(sq):
            if c is None:
                continue
            want = ((jac[i] ** 2).T @ d.ravel()).reshape(values[f"a{i}"].shape)
            close(run(g, values, {"q": c})["q"], want, f"sq_vjp of {op}, operand {i}", 1e-5)
