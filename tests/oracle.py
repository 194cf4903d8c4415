"""An independent symbolic oracle for tiny models (DESIGN.md §4, oracle 1).

The per-case loss of a forward graph is expanded into ONE sympy expression of scalar
symbols (``x_0, t_1, W_0_2, b_1, ...``) by walking the graph in topological order and
implementing every op's meaning here, with sympy. Nothing is borrowed from the ops'
``impl``/``vjp``/``jvp`` code, which is what the oracle checks; the only things read from
symcurv are the graph itself and the scalar functions an elementwise node or a separable
loss names (their sympy definitions are the user's input, not a derivative rule).

Derivatives come from ``sympy.diff`` of the whole expression: exact gradients, Hessians
and directional derivatives, evaluated in float64 for every case (row) of a batch and
averaged, like the objective (the batch mean of the per-case loss).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping

import numpy as np
import sympy

from symcurv.ir.graph import Graph, Node
from symcurv.symbolic import local

LEAF_OPS = ("input", "target", "param")


# ---- the per-case expression ------------------------------------------------------------
def _obj(shape: tuple[int, ...], fill: Callable[[tuple[int, ...]], sympy.Expr]) -> np.ndarray:
    out = np.empty(shape, dtype=object)
    for idx in itertools.product(*(range(s) for s in shape)):
        out[idx] = fill(idx)
    return out


def _map(f: Callable[..., sympy.Expr], *arrays: np.ndarray) -> np.ndarray:
    """Apply a scalar sympy function elementwise, broadcasting scalars (shape ``()``)."""
    arrays = np.broadcast_arrays(*[np.asarray(a, dtype=object) for a in arrays])
    shape = arrays[0].shape
    return _obj(shape, lambda idx: f(*(a[idx] for a in arrays)))


def _total(a: np.ndarray) -> sympy.Expr:
    return sympy.Add(*np.asarray(a, dtype=object).ravel().tolist())


def _leaf_symbols(node: Node) -> np.ndarray:
    return _obj(
        node.shape, lambda idx: sympy.Symbol("_".join([node.name, *map(str, idx)]), real=True)
    )


def _elementwise(node: Node, args: list[np.ndarray]) -> np.ndarray:
    """Parse the node's ``expr`` string; the operand order is the function's symbols."""
    fn = local.FUNCTIONS[node.attr("fn")]
    syms = {s.name: sympy.Symbol(s.name, real=True) for s in fn.symbols}
    expr = sympy.parse_expr(node.attr("expr"), local_dict=dict(syms))
    order = [syms[s.name] for s in fn.symbols]
    return _map(lambda *v: expr.xreplace(dict(zip(order, v))), *args)


def _separable(node: Node, args: list[np.ndarray]) -> sympy.Expr:
    fn = local.FUNCTIONS[node.attr("fn")]
    y, t = args
    return _total(_map(lambda a, b: fn.expr.xreplace(dict(zip(fn.symbols, (a, b)))), y, t))


def _logsumexp(v: np.ndarray) -> sympy.Expr:
    return sympy.log(sympy.Add(*[sympy.exp(a) for a in v.ravel()]))


def _softmax(v: np.ndarray) -> np.ndarray:
    e = [sympy.exp(a) for a in v]
    z = sympy.Add(*e)
    return np.array([a / z for a in e], dtype=object)


def _softmax_ce(node: Node, args: list[np.ndarray]) -> sympy.Expr:
    y, t = args
    lse = _logsumexp(y)
    return sympy.Add(*[t[k] * (lse - y[k]) for k in range(len(y))])


def _batch_broadcast(node: Node, args: list[np.ndarray]) -> np.ndarray:
    if node.attr("mean"):
        raise NotImplementedError("batch_broadcast(mean=True) depends on B: not per case")
    return args[0]


# op -> its meaning for one case, with values as object arrays of sympy expressions
SEMANTICS: dict[str, Callable[[Node, list[np.ndarray]], object]] = {
    "const": lambda n, a: np.array(sympy.Float(n.attr("value")), dtype=object),
    "elementwise": _elementwise,
    "broadcast": lambda n, a: np.full(n.shape, a[0][()], dtype=object),
    "batch_broadcast": _batch_broadcast,
    "matvec": lambda n, a: np.array(
        [_total(a[0][i] * a[1]) for i in range(a[0].shape[0])], dtype=object
    ),
    "transpose": lambda n, a: a[0].T,
    "outer": lambda n, a: _obj(n.shape, lambda ij: a[0][ij[0]] * a[1][ij[1]]),
    "sum": lambda n, a: _total(a[0]),
    "logsumexp": lambda n, a: _logsumexp(a[0]),
    "softmax": lambda n, a: _softmax(a[0]),
    "separable_loss": _separable,
    "softmax_cross_entropy": _softmax_ce,
}


def per_case_values(graph: Graph, root: str) -> tuple[dict[str, np.ndarray], dict]:
    """Every node up to ``root`` as an object array of per-case sympy expressions (by node
    id), and ``{leaf name: object array of its scalar symbols}``."""
    need = graph.ancestors(root) | {root}
    vals: dict[str, np.ndarray] = {}
    symbols: dict[str, np.ndarray] = {}
    for n in graph.nodes():
        if n.op in LEAF_OPS:  # every leaf gets symbols, used or not
            symbols[n.name] = vals[n.id] = _leaf_symbols(n)
            continue
        if n.id not in need:
            continue
        if n.op not in SEMANTICS:
            raise NotImplementedError(f"the oracle has no per-case meaning for op '{n.op}'")
        out = np.asarray(SEMANTICS[n.op](n, [vals[i] for i in n.inputs]), dtype=object)
        assert out.shape == n.shape, (n.op, out.shape, n.shape)
        vals[n.id] = out
    return vals, symbols


def per_case_expr(graph: Graph, output: str = "per_case") -> tuple[sympy.Expr, dict]:
    """The per-case loss of ``graph`` as one sympy expression, and ``{leaf name: object
    array of its scalar symbols}`` (per-case shapes, e.g. ``W -> [[W_0_0, ...], ...]``)."""
    root = graph.outputs[output]
    vals, symbols = per_case_values(graph, root)
    return sympy.sympify(vals[root][()]), symbols


# ---- derivatives -------------------------------------------------------------------------
# Differentiating the expanded expression term by term is exact but slow (the per-case loss
# of a 3-2-2 network has a few hundred operations, its Hessian ~100 second derivatives of
# ever larger expressions). So the expression is first cut into a straight-line program,
# one line s_k = f(args) per distinct subexpression, and the chain rule is applied over that
# program with sympy's partial derivatives of each line: reverse mode for gradients,
# forward over reverse for Hessians. Every number is still exact symbolic differentiation
# of the one expression (``tests/transforms/test_grad.py`` checks the two ways agree).
Program = list[tuple[sympy.Symbol, sympy.Expr]]


def linearize(expr: sympy.Expr, names) -> tuple[list, sympy.Expr]:
    """``expr`` as a program of one-operation lines and the symbol (or atom) of its value.
    Nodes with non-expression arguments (Piecewise conditions) stay whole, on one line."""
    program: list = []
    memo: dict[sympy.Basic, sympy.Basic] = {}

    def visit(e: sympy.Basic) -> sympy.Basic:
        if e.is_Atom:
            return e
        if e not in memo:
            if all(isinstance(a, sympy.Expr) for a in e.args):
                e_line = e.func(*[visit(a) for a in e.args])
            else:
                e_line = e
            s = next(names)
            program.append((s, clean(e_line)))
            memo[e] = s
        return memo[e]

    return program, visit(expr)


def clean(e: sympy.Expr) -> sympy.Expr:
    """relu'' and friends: the distributional parts are 0 almost everywhere (DESIGN.md §1)."""
    return e.replace(lambda a: isinstance(a, sympy.DiracDelta), lambda a: sympy.S.Zero)


def _partials(e: sympy.Expr) -> dict[sympy.Symbol, sympy.Expr]:
    out = {}
    for s in e.free_symbols:
        d = clean(sympy.diff(e, s))
        if d != 0:
            out[s] = d
    return out


def reverse(
    program: Program, partials: dict, out: sympy.Expr, wrt: list[sympy.Symbol], names
) -> tuple[Program, list[sympy.Expr]]:
    """Adjoints ā_k = Σ_{uses j} ā_j ∂e_j/∂s_k as new program lines; returns those lines
    and d out / d w for every ``w`` in ``wrt``."""
    contrib: dict[sympy.Symbol, list] = {}
    for s, d in _partials(out).items():
        contrib.setdefault(s, []).append(d)
    lines: Program = []
    for sym, _ in reversed(program):
        terms = contrib.pop(sym, None)
        if not terms:
            continue
        a = next(names)
        lines.append((a, sympy.Add(*terms)))
        for s, d in partials[sym].items():
            contrib.setdefault(s, []).append(a * d)
    return lines, [sympy.Add(*contrib.get(w, [])) for w in wrt]


def forward(
    program: Program, partials: dict, outs: list[dict], wrt: sympy.Symbol, names
) -> tuple[Program, list[sympy.Expr]]:
    """Tangents ṡ_k = Σ_j ∂e_k/∂s_j ṡ_j with ẇ = 1, as new program lines; returns them and
    the tangents of the outputs (given by their partials)."""
    tan: dict[sympy.Symbol, sympy.Expr] = {wrt: sympy.S.One}
    lines: Program = []
    for sym, _ in program:
        terms = [d * tan[s] for s, d in partials[sym].items() if s in tan]
        if terms:
            t = next(names)
            lines.append((t, sympy.Add(*terms)))
            tan[sym] = t
    return lines, [sympy.Add(*[d * tan[s] for s, d in o.items() if s in tan]) for o in outs]


class _Oracle:
    """The expression of one graph with its leaves, and lazily built derivative functions."""

    def __init__(self, graph: Graph) -> None:
        self.expr, self.symbols = per_case_expr(graph)
        leaves = [n for n in graph.nodes() if n.op in LEAF_OPS]
        self.leaves = leaves
        self.params = [n for n in leaves if n.op == "param"]
        self.args = [s for n in leaves for s in self.symbols[n.name].ravel()]
        self.param_syms = [s for n in self.params for s in self.symbols[n.name].ravel()]
        self.program, self.root = linearize(self.expr, sympy.numbered_symbols("line__", real=True))
        self._grad: tuple[Program, list] | None = None
        self._fns: dict[str, Callable] = {}

    def _lambdify(self, program: Program, exprs: list[sympy.Expr]) -> Callable:
        return sympy.lambdify(self.args, exprs, modules="numpy", cse=lambda e: (program, e))

    def _gradient(self) -> tuple[Program, list]:
        """The program extended by its adjoints, and d loss / d every leaf symbol."""
        if self._grad is None:
            self.partials = {s: _partials(e) for s, e in self.program}
            lines, grads = reverse(
                self.program,
                self.partials,
                self.root,
                self.args,
                sympy.numbered_symbols("adj__", real=True),
            )
            self.partials.update({s: _partials(e) for s, e in lines})
            self._grad = (self.program + lines, grads)
        return self._grad

    def gradient_fn(self) -> Callable:
        """(loss, d loss / d s for every leaf symbol s) per case."""
        if "grad" not in self._fns:
            program, grads = self._gradient()
            self._fns["grad"] = self._lambdify(program, [self.root, *grads])
        return self._fns["grad"]

    def hessian_fn(self) -> Callable:
        """Every entry of the parameter Hessian per case, row by row (n*n outputs)."""
        if "hess" not in self._fns:
            program, grads = self._gradient()
            pos = {s: i for i, s in enumerate(self.args)}
            outs = [_partials(grads[pos[p]]) for p in self.param_syms]
            names = sympy.numbered_symbols("tan__", real=True)
            full, cols = list(program), []
            for q in self.param_syms:
                lines, col = forward(program, self.partials, outs, q, names)
                full += lines
                cols.append(col)
            entries = [cols[j][i] for i in range(len(cols)) for j in range(len(cols))]
            self._fns["hess"] = self._lambdify(full, entries)
        return self._fns["hess"]

    def leaf_hessian_fn(self, name: str) -> Callable:
        """Every entry of the per-case Hessian over leaf ``name``'s symbols, row by row
        (an input: ∇²_x f_b, NOT averaged over cases)."""
        key = f"hess:{name}"
        if key not in self._fns:
            program, grads = self._gradient()
            pos = {s: i for i, s in enumerate(self.args)}
            syms = list(self.symbols[name].ravel())
            outs = [_partials(grads[pos[s]]) for s in syms]
            names = sympy.numbered_symbols(f"itan_{name}__", real=True)
            full, cols = list(program), []
            for q in syms:
                lines, col = forward(program, self.partials, outs, q, names)
                full += lines
                cols.append(col)
            entries = [cols[j][i] for i in range(len(cols)) for j in range(len(cols))]
            self._fns[key] = self._lambdify(full, entries)
        return self._fns[key]

    def call(self, fn: Callable, leaves: Mapping[str, np.ndarray]) -> tuple[int, list]:
        """Evaluate ``fn`` for every case: data symbols get columns, params scalars."""
        B = next(np.shape(leaves[n.name])[0] for n in self.leaves if n.op != "param")
        vals = []
        for n in self.leaves:
            v = np.asarray(leaves[n.name], dtype=np.float64)
            if n.op == "param":
                assert v.shape == n.shape, (n.name, v.shape, n.shape)
                vals += list(v.ravel())
            else:
                assert v.shape == (B, *n.shape), (n.name, v.shape, n.shape)
                vals += list(v.reshape(B, -1).T)
        with np.errstate(all="raise"):
            out = fn(*vals)
        return B, [np.broadcast_to(np.asarray(o, dtype=np.float64), (B,)) for o in out]


_CACHE: dict[tuple[int, str], tuple[Graph, _Oracle]] = {}


def _oracle(graph: Graph) -> _Oracle:
    key = (id(graph), graph.digest())
    hit = _CACHE.get(key)
    if hit is None or hit[0] is not graph:
        hit = _CACHE[key] = (graph, _Oracle(graph))
    return hit[1]


def oracle_per_case(
    graph: Graph, leaves: Mapping[str, np.ndarray]
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Per-case losses ``(B,)`` and per-case gradients w.r.t. EVERY leaf, each of shape
    ``(B, *leaf shape)`` (inputs and targets included: data-derivatives for jvp tests)."""
    o = _oracle(graph)
    B, out = o.call(o.gradient_fn(), leaves)
    loss, flat = out[0], np.stack(out[1:], axis=1) if len(out) > 1 else np.zeros((B, 0))
    grads, k = {}, 0
    for n in o.leaves:
        grads[n.name] = flat[:, k : k + n.size].reshape((B, *n.shape))
        k += n.size
    return loss, grads


def oracle_loss_and_grad(
    graph: Graph, leaves: Mapping[str, np.ndarray]
) -> tuple[float, dict[str, np.ndarray]]:
    """The objective (batch mean of the per-case loss) and its gradient per parameter."""
    loss, grads = oracle_per_case(graph, leaves)
    o = _oracle(graph)
    return float(loss.mean()), {p.name: grads[p.name].mean(axis=0) for p in o.params}


def oracle_hessian(graph: Graph, leaves: Mapping[str, np.ndarray]) -> np.ndarray:
    """The dense Hessian of the objective over the flat parameter vector (parameters in
    declaration order, each flattened in C order). Tiny models only."""
    o = _oracle(graph)
    _, entries = o.call(o.hessian_fn(), leaves)
    n = len(o.param_syms)
    return np.array([e.mean() for e in entries]).reshape(n, n)


def oracle_input_hessian(graph: Graph, leaves: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    """The per-case Hessian of the per-case loss over input ``name``: ``(B, D, D)``."""
    o = _oracle(graph)
    B, entries = o.call(o.leaf_hessian_fn(name), leaves)
    D = int(np.prod(graph.by_name(name).shape))
    return np.stack(entries, axis=1).reshape(B, D, D)


def flat_params(graph: Graph, values: Mapping[str, np.ndarray]) -> np.ndarray:
    """Concatenate per-parameter arrays in the oracle's (declaration, C) order."""
    return np.concatenate(
        [np.asarray(values[p.name], dtype=np.float64).ravel() for p in graph.leaves("param")]
    )


LOSS_OPS = ("separable_loss", "softmax_cross_entropy")


def oracle_gauss_newton(graph: Graph, leaves: Mapping[str, np.ndarray]) -> np.ndarray:
    """The dense Gauss-Newton matrix of the objective, mean_b Σ_L c_L,b J_L,bᵀ H_L,b J_L,b,
    for a model whose per-case loss is a combination Σ_L c_L L(y_L, t_L) + const of loss
    nodes L, LINEAR in their values with factors c_L free of the parameters (they may
    depend on the data; a single loss node at the root is c = 1). J = ∂y/∂θ by
    ``sympy.diff`` of the expanded y, H_L = ∂²L/∂y² by ``sympy.diff`` of the loss's own
    per-case meaning above, c_L = ∂(per-case loss)/∂L with every loss's value replaced by
    a symbol (so a combination that is not linear, or whose factors depend on θ, fails
    here)."""
    root = graph.outputs["per_case"]
    vals, _ = per_case_values(graph, root)
    need = graph.ancestors(root) | {root}
    losses = [n for n in graph.nodes() if n.id in need and n.op in LOSS_OPS]
    assert losses, "the per-case loss has no loss node"
    assert not any(graph.ancestors(L.id) & {K.id for K in losses} for L in losses), (
        "a loss inside another loss"
    )
    # the per-case loss as a function of symbols standing for the losses' values
    ell = {L.id: sympy.Symbol(f"ell__{k}", real=True) for k, L in enumerate(losses)}
    above = set().union(*(graph.descendants(L.id) for L in losses)) & need
    outer_vals = {**vals, **{i: np.array(s, dtype=object) for i, s in ell.items()}}
    for n in graph.nodes():
        if n.id in above:
            args = [outer_vals[i] for i in n.inputs]
            outer_vals[n.id] = np.asarray(SEMANTICS[n.op](n, args), dtype=object)
    outer = sympy.sympify(outer_vals[root][()])
    o = _oracle(graph)
    rest = outer.xreplace({s: sympy.S.Zero for s in ell.values()})
    assert not rest.free_symbols & set(o.param_syms), f"θ outside the losses: {rest}"
    n = len(o.param_syms)
    G = np.zeros((n, n))
    for L in losses:
        c = sympy.diff(outer, ell[L.id])
        bad = c.free_symbols & (set(ell.values()) | set(o.param_syms))
        assert not bad, f"the per-case loss is not linear in the losses / θ-free in c: {c}"
        y = vals[L.inputs[0]].ravel()
        u = np.array([sympy.Symbol(f"u__{k}", real=True) for k in range(len(y))], dtype=object)
        L_u = SEMANTICS[L.op](L, [u, vals[L.inputs[1]]])
        J = [clean(sympy.diff(yk, p)) for yk in y for p in o.param_syms]
        HL = clean(sympy.hessian(L_u, list(u)).xreplace(dict(zip(u, y))))
        # c, J and H_L per case, then the products in float64: G_b = c_b J_bᵀ H_L,b J_b
        fn = sympy.lambdify(o.args, [c, *J, *HL], modules="numpy", cse=True)
        B, out = o.call(fn, leaves)
        m = len(y)
        c_b = out[0]
        J_b = np.stack(out[1 : 1 + m * n], axis=1).reshape(B, m, n)
        H_b = np.stack(out[1 + m * n :], axis=1).reshape(B, m, m)
        G += np.einsum("b,bki,bkl,blj->ij", c_b, J_b, H_b, J_b) / B
    return G
