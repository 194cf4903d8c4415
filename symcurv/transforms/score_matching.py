"""Score matching (Hyvärinen 2005), regularized (Kingma & LeCun 2010, eq. 7), as IR nodes.

For a per-case energy E(x; θ) (p(x) ∝ exp −E) the per-case objective is

    J_b = Σ_i ½ (∂E/∂x_i)² − d_i + λ d_i²,      d_i = ∂²E/∂x_i²,

built in the SAME graph as the energy from its input derivatives, so that the ordinary
transforms differentiate it again: ∂J/∂θ is ``grad`` of this graph (the IR is closed under
differentiation), and hvp, gnvp, the CUDA backend and the drawings apply unchanged. The
diagonal d comes from one of four constructions (``DIAGS``):

    exact          D expanded cases per case: case (b, i) carries x_b and the basis vector
                   e_i (one runtime-bound ``input_direction`` leaf, attr ``basis`` =
                   "case"); g_i = ∂E/∂x_i and d_i = e_iᵀ ∇²_x E e_i are its first and
                   second directional derivatives (forward over forward). The graph does
                   not grow with D; the runtime repeats every batch row D times
                   (runtime/case_expansion.py)
    becker_lecun   Becker & LeCun's diagonal recursion (transforms/diag.py); ``grad`` of it
                   is Kingma & LeCun's Algorithm 1. Exact when every node between x and E
                   is linear or one-input elementwise and at most one nonlinear layer
                   separates x from a linear sum (PoE, FoE); biased otherwise.
    S, TU          Curvature Propagation (000 §8.2): −Σ d_i from one draw d̂¹, λ Σ d_i² from
                   two INDEPENDENT draws, λ Σ d̂¹_i d̂²_i (E[d̂¹ d̂²] = d², whereas E[(d̂¹)²]
                   = d² + Var d̂). The noise leaves are inputs of the graph, held fixed
                   while differentiating, so J and ∂J/∂θ are unbiased for every case.
"""

from __future__ import annotations

from symcurv import errors
from symcurv.ir.graph import Graph, Node
from symcurv.ops import elementwise as ew
from symcurv.ops.registry import emit
from symcurv.transforms import curvprop, diag
from symcurv.transforms.grad import cotangents
from symcurv.transforms.jvp import jvp

DIAGS = ("exact", "becker_lecun", "S", "TU")
BASIS_ROLE = "basis"  # attr of the exact diagonal's e_i leaf (the runtime binds its rows)
CASE_BASIS = "case"  # its value: the leaf is e_i of the expanded case (b, i)


def objective(forward: Graph, x: str, reg: float, method: str) -> tuple[Graph, str]:
    """A copy of ``forward`` (whose ``per_case`` output is the energy E_b) with the nodes of
    J_b; returns ``(graph, J_b's node id)``. ``x``: the id of the input differentiated.

    For ``exact`` the graph's cases are the expanded cases (b, i) and its per-case output
    is J'_bi = D (½ g_i² − d_i + λ d_i²), whose mean over the D cases of b is J_b (see
    :func:`exact_terms`); the mean over all B·D expanded cases is then mean_b J_b."""
    if method not in DIAGS:
        raise errors.ModelError(
            f"unknown score-matching diagonal {method!r}", fix=f"choose one of {DIAGS}"
        )
    if method == "exact":
        g = forward.copy()
        s, d = exact_terms(g, g.outputs["per_case"], g[x])
        return g, _assemble(g, s, d, d, reg, scale=float(g[x].size))
    if method in curvprop.CHANNELS:
        g, d1, d2 = _cp_diagonals(forward, x, method)
    else:
        g = forward.copy()
        d1 = d2 = diag.becker_lecun(g, g.outputs["per_case"], [x]).get(x)
    s = cotangents(g, g.outputs["per_case"], [x]).get(x)
    return g, _assemble(g, s, d1, d2, reg)


def _assemble(g: Graph, s, d1, d2, reg: float, scale: float = 1.0) -> str:
    """J = scale · (Σ_i ½ s_i² − d1_i + λ d1_i d2_i) per case (s, d1, d2: per-case vectors,
    or per-case scalars for the expanded cases of ``exact``; None: identically 0)."""
    o = g[g.outputs["per_case"]].origin
    terms = []
    if s is not None:  # ½ Σ_i s_i²
        terms.append(ew.mul(g, ew.const(g, 0.5 * scale, o), _total(g, ew.mul(g, s, s, o), o), o))
    if d1 is not None:  # − Σ_i d_i
        terms.append(ew.call(g, "neg", _scaled(g, scale, _total(g, d1, o), o), origin=o))
        if reg:  # λ Σ_i d_i² (two independent draws for CP)
            sq = _total(g, ew.mul(g, d1, d2, o), o)
            terms.append(ew.mul(g, ew.const(g, float(reg) * scale, o), sq, o))
    if not terms:
        raise errors.ModelError(
            "the score-matching objective is identically zero: the energy does not depend "
            "on its input",
            where=o,
            fix="compute the energy from the data",
        )
    J = terms[0]
    for t in terms[1:]:
        J = ew.add(g, J, t, o)
    return J


def _total(g: Graph, v: str, origin: str) -> str:
    """Σ_i v_i per case (a per-case scalar stays as it is)."""
    return emit(g, "sum", [v], name="sum", origin=origin) if g[v].shape != () else v


def _scaled(g: Graph, c: float, v: str, origin: str) -> str:
    """c · v (v itself when c = 1)."""
    return v if c == 1.0 else ew.mul(g, ew.const(g, c, origin), v, origin)


def case_basis_leaf(g: Graph, x: Node) -> str:
    """e_i of the expanded case (b, i): ONE per-case ``input_direction`` leaf ``e_<x>``
    (attr ``basis`` = "case") that the runtime binds to the rows e_0 … e_{D−1} repeated
    B times (runtime/case_expansion.py)."""
    attrs = {"input": x.name, "shape": list(x.shape), BASIS_ROLE: CASE_BASIS}
    return g.add_node(
        "input_direction", [], x.shape, True, attrs, name=f"e_{x.name}", origin=x.origin
    ).id


def exact_terms(g: Graph, root: str, x: Node) -> tuple[str | None, str | None]:
    """(g_i, d_i) of the expanded case (b, i), per-case scalars: the first and second
    directional derivatives of E along the case's basis vector e_i,

        g_i = d/dt E(x + t e_i) = ∂E/∂x_i,      d_i = d²/dt² E(x + t e_i) = ∂²E/∂x_i²,

    by two forward sweeps (forward over forward: a jvp of the jvp, e_i held fixed). No
    reverse sweep: a linear map of x has a zero second tangent, so beyond the primal only
    one tangent per linear layer is computed (for the PoE: u = W̃x and u̇ = W̃e_i, then
    elementwise), and the graph's size does not depend on D."""
    e = case_basis_leaf(g, x)
    first = jvp(g, {x.id: e}, [root])[root]
    if first is None:
        return None, None
    return first, jvp(g, {x.id: e}, [first])[first]


def _cp_diagonals(forward: Graph, x: str, est: str) -> tuple[Graph, str | None, str | None]:
    """Two independent CP draws of diag(∇²_x E_b) in one graph (noise leaves z0, z1, ...
    of the first sweep, z0_1, ... of the second: the graph makes names unique)."""
    first = curvprop.CurvatureSweep(forward, est, "per_case", wrt=[x])
    d1 = first.estimate()[x]
    second = curvprop.CurvatureSweep(first.g, est, "per_case", wrt=[x])
    d2 = second.estimate()[x]
    return second.g, d1, d2
