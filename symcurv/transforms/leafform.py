"""What a channel sweep leaves at the leaves, reduced: the estimators' quadratic forms.

The Curvature Propagation sweep (curvprop.py) and its relatives carry per-case channels
back to the leaves; what happens there is this module's job, kept apart so that a new
reduction (K-FAC's per-layer outer products) is a new function here, not a change to the
sweep:

    per-case leaf (an input x)   Q(S_b, S_b) per case, elementwise    (no sum over cases)
    shared leaf (a parameter)    Σ_b Q(S_W,b, S_W,b), where S_W,b = Σ_k u_k,b v_k,bᵀ for
                                 a weight used k times per case: Σ_{k,l} (u_k ⊙ u_l)ᵀ(v_k ⊙ v_l),
                                 one GEMM per pair of uses, never a B × |W| array

Q(x, y) = Σ sign · x_a ⊙ y_b is the estimator's bilinear form: Re(S)² − Im(S)² for S,
T ⊙ U for TU, g ⊙ g for the squared per-case gradient.
"""

from __future__ import annotations

from symcurv.ir.graph import Graph, Node
from symcurv.ops import elementwise as ew
from symcurv.ops.registry import REGISTRY, emit

Form = tuple[tuple[str, str, float], ...]
Channels = dict[str, "str | None"]


class CaseTerm:
    """One per-case contribution to an unbatched node: per channel either a batched value
    ("vec") or a rank-one pair (u, v) standing for the per-case outer product u_b v_bᵀ."""

    def __init__(self, kind: str, parts: dict[str, tuple]) -> None:
        self.kind, self.parts = kind, parts


def as_term(g: Graph, ch: Channels) -> CaseTerm:
    parts = {c: v for c, v in ch.items() if v is not None}
    if parts and all(REGISTRY[g[v].op].rank_one and g[v].batched for v in parts.values()):
        return CaseTerm("outer", {c: tuple(g[v].inputs) for c, v in parts.items()})
    return CaseTerm("vec", {c: (v,) for c, v in parts.items()})


def materialise(g: Graph, t: CaseTerm, origin: str) -> dict[str, str]:
    if t.kind == "vec":
        return {c: p[0] for c, p in t.parts.items()}
    return {c: emit(g, "outer", list(p), name="S_case", origin=origin) for c, p in t.parts.items()}


def scale(g: Graph, x: str | None, c: float, origin: str) -> str | None:
    if x is None or c == 1.0:
        return x
    return ew.mul(g, ew.const(g, c, origin), x, origin)


def quadratic_form(sweep, form: Form) -> dict[str, str | None]:
    """``{leaf id: Q(x, x)}`` for every leaf of ``sweep`` (after ``sweep.run()``), Q the
    bilinear form ``form`` = ((a, b, sign), ...): Q(x, y) = Σ sign · x_a ⊙ y_b.

    A per-case leaf (an input) holds its channels per case: Q is taken per case. A shared
    leaf (a parameter) holds per-case terms: Σ_b Q(Σ_k x_k,b, Σ_l x_l,b), plus Q of any
    channel shared by all cases (θ-only nodes)."""
    g = sweep.g
    out = {}
    for p in sweep.params:
        est = _case_form(g, p, sweep.case.get(p.id, []), form)
        shared = sweep.acc.get(p.id)
        if shared:
            for a, b, sign in form:
                if shared.get(a) is not None and shared.get(b) is not None:
                    q = ew.mul(g, shared[a], shared[b], p.origin)
                    est = _signed_add(g, est, q, sign, p.origin)
        out[p.id] = est
    return out


def _case_form(g: Graph, p: Node, terms: list[CaseTerm], form: Form) -> str | None:
    """Σ_b Q(Σ_k x_k,b, Σ_l x_l,b): pairs of terms, each one GEMM (outer pairs) or one
    batch sum (vector pairs); pairs sharing their right factor share the GEMM."""
    o = p.origin
    sym = all(a == b for a, b, _ in form)  # Q(x, y) = Q(y, x): each unordered pair once
    memo: dict[tuple, str] = {}

    def prod(a: str, b: str) -> str:
        key = (a, b) if a <= b else (b, a)
        if key not in memo:
            memo[key] = ew.call(g, "mul", a, b, name="pp", origin=o)
        return memo[key]

    by_right: dict[str, str | None] = {}  # outer pairs grouped by their right factor
    total = None
    for k, tk in enumerate(terms):
        for l_, tl in enumerate(terms):
            if sym and l_ < k:
                continue
            weight = 2.0 if sym and l_ != k else 1.0
            for a, b, sign in form:
                if a not in tk.parts or b not in tl.parts:
                    continue
                s = sign * weight
                if tk.kind == "outer" and tl.kind == "outer":
                    (u1, v1), (u2, v2) = tk.parts[a], tl.parts[b]
                    right = prod(v1, v2)
                    by_right[right] = _signed_add(
                        g, by_right.get(right), scale(g, prod(u1, u2), abs(s), o), s, o
                    )
                else:
                    xa = materialise(g, tk, o)[a]
                    xb = materialise(g, tl, o)[b]
                    q = emit(g, "batch_sum", [prod(xa, xb)], name="bsum", origin=o)
                    total = _signed_add(g, total, scale(g, q, abs(s), o), s, o)
    for right, left in by_right.items():
        if left is not None:
            total = _signed_add(g, total, _sum_of_outers(g, left, right, p, o), 1.0, o)
    if total is not None and g[total].shape != p.shape:
        total = emit(g, "transpose", [total], name="T", origin=o)  # never: shapes match
    return total


def _sum_of_outers(g: Graph, left: str, right: str, p: Node, o: str) -> str:
    """Σ_b l_b r_bᵀ: one GEMM over the batch (Lᵀ R) when both factors are per case; when
    one is shared by every case (W q, q a parameter vector) Σ_b l_b qᵀ = (Σ_b l_b) qᵀ."""
    name = f"diag_{p.name}"
    if g[left].batched and g[right].batched:
        return emit(g, "outer_bsum", [left, right], name=name, origin=o)
    assert g[left].batched or g[right].batched, "a per-case term has a per-case factor"
    if g[left].batched:
        left = emit(g, "batch_sum", [left], name="bsum", origin=o)
    else:
        right = emit(g, "batch_sum", [right], name="bsum", origin=o)
    return emit(g, "outer", [left, right], name=name, origin=o)


def _signed_add(g: Graph, acc: str | None, x: str | None, sign: float, origin: str) -> str:
    if x is None:
        return acc
    if sign < 0:
        return (
            ew.call(g, "neg", x, origin=origin)
            if acc is None
            else ew.call(g, "sub", acc, x, origin=origin)
        )
    return ew.add(g, acc, x, origin)
