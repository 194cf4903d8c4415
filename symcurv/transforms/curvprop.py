"""Curvature Propagation (Martens, Sutskever, Swersky 2012): unbiased estimates of diag(H)
as new nodes in the same IR, for any graph.

Per case b, noise z_i is injected at every node with local curvature M_i = F_i F_iᵀ
(ops' ``curvature`` rules, ops/curvature.py) and swept back like a gradient:

    S   S_{x_i} = F_i z_i + J_iᵀ S_{y_i}        diag ≈ Σ_b Re(S_b)² − Im(S_b)²
        (F complex where M_i is indefinite; S is carried as two real sweeps, re and im)
    TU  T_{x_i} = P_i z_i + J_iᵀ T_{y_i},  U_{x_i} = Q_i z_i + J_iᵀ U_{y_i}   (M_i = P_i Q_iᵀ)
                                                 diag ≈ Σ_b T_b ⊙ U_b
    GN  as S, noise only at the loss nodes (Chapelle-Erhan): estimates diag(G)

The Jᵀ products are the ops' own ``vjp`` rules. Three things make it cheap and general:

* Where a per-case value meets a parameter (W in W @ h), the per-case S_W,b = s_b h_bᵀ is
  never formed: it is kept as the pair (s, h), and Σ_b S_W,b² = (s²)ᵀ (h²) is one GEMM.
  A parameter used more than once per case (tied weights: W and W.T, found by walking the
  graph) has S_W,b = Σ_k a_k b_kᵀ; its square is summed BEFORE squaring by expanding
  Σ_b (Σ_k a_k b_kᵀ)² = Σ_{k,l} (a_k ⊙ a_l)ᵀ(b_k ⊙ b_l): k² GEMMs, no B × |W| array at all.
* A bilinear coupling whose two operands depend on disjoint sets of parameters has a zero
  diagonal contribution (J_uᵀ C J_v + J_vᵀ Cᵀ J_u with J_u, J_v in disjoint columns) and is
  skipped; this is decided from the graph's ancestor sets, never by op type.
* Nodes that depend on θ only (W.T, a weight-decay term) form one extra "case" with
  unbatched noise; nodes above a batch reduction must be linear in it (a mean of losses).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from symcurv import errors
from symcurv.ir import outputs
from symcurv.ir.graph import Graph, Node
from symcurv.ops import REGISTRY
from symcurv.ops import curvature as curv
from symcurv.ops import elementwise as ew
from symcurv.ops.registry import emit
from symcurv.transforms import leafform
from symcurv.transforms.grad import cotangents, relevant_nodes

# every estimator: the channels its sweep carries and the bilinear form Q(x, y) = Σ sign ·
# x_a ⊙ y_b taken at the leaves (leafform.quadratic_form)
CHANNELS = {"S": ("re", "im"), "GN": ("re",), "TU": ("T", "U")}
FORM: dict[str, leafform.Form] = {
    "S": (("re", "re", 1.0), ("im", "im", -1.0)),
    "GN": (("re", "re", 1.0),),
    "TU": (("T", "U", 1.0),),
}
ESTIMATORS = tuple(FORM)
Channels = dict[str, "str | None"]


class _Noise:
    """Creates the noise leaves z0, z1, ... (drawn by the runtime on every call)."""

    def __init__(self, g: Graph) -> None:
        self.g, self.count = g, 0

    def __call__(self, shape: Sequence[int], batched: bool, origin: str) -> str:
        k = self.count
        self.count += 1
        attrs = {"shape": list(shape), "batched": bool(batched), "index": k}
        return self.g.add_node("noise", [], tuple(shape), batched, attrs, f"z{k}", origin).id


def _add(g: Graph, acc: dict, key: str, ch: Channels, origin: str) -> None:
    cur = acc.setdefault(key, {})
    for c, v in ch.items():
        if v is not None:
            cur[c] = ew.add(g, cur.get(c), v, origin)


def case_pullback(g: Graph, node: Node, i: int, cot: str) -> str:
    """J_iᵀ cot for ONE case when operand i is shared by all cases: the ordinary pullback
    to a per-case copy of the operand (the rule cannot tell, so it keeps the batch axis),
    unless the op registers its own ``case_vjp`` (one whose operand must stay shared)."""
    rule = REGISTRY[node.op].case_vjp
    if rule is not None:
        return rule(g, node, i, cot)
    x = node.inputs[i]
    proxy = emit(g, "batch_broadcast", [x], {"mean": False}, name="per_case", origin=node.origin)
    ins = list(node.inputs)
    ins[i] = proxy
    clone = g.add_node(node.op, ins, node.shape, True, dict(node.attrs), "case", node.origin)
    needs = [k == i for k in range(len(ins))]
    return REGISTRY[node.op].vjp(g, clone, cot, needs)[i]


class Sweep:
    """Carries per-case channels from the root back to the leaves ``wrt`` through every
    op's pullback, in a copy of the forward graph: the propagation half of CP. What is
    injected where is a subclass's choice (``_injects``/``_inject``: noise for the CP
    estimators, nothing for a seeded sweep such as gradsq's); what is done with the
    channels at the leaves is leafform's (quadratic forms; K-FAC's outer products)."""

    def __init__(
        self, forward: Graph, objective: str = "objective", wrt: Sequence[str] | None = None
    ) -> None:
        """``wrt``: the leaves the Hessian is taken over (default: every parameter, the
        root the batch-mean objective); for the data, the inputs with ``objective`` the
        per-case loss — every channel then stays per case."""
        self.g = g = forward.copy()
        self.root = g.outputs[objective]
        self.params = [g[w] for w in wrt] if wrt is not None else g.leaves("param")
        pids = [p.id for p in self.params]
        self.cot = cotangents(g, self.root, pids)
        self.live = relevant_nodes(g, self.root, pids)
        self.anc: dict[str, frozenset] = {}
        for nid in g.topo():
            n = g[nid]
            own = frozenset([nid]) if nid in pids else frozenset()
            self.anc[nid] = own.union(*(self.anc[i] for i in n.inputs))
        self.noise = _Noise(g)
        self.acc: dict[str, dict] = {}  # node -> channels (per case if batched, else shared)
        self.case: dict[str, list[leafform.CaseTerm]] = {}  # unbatched node -> per-case terms

    # -- what is injected (subclasses) --------------------------------------------------------
    def _injects(self, node: Node) -> bool:
        return False

    def _inject(self, node: Node, term: curv.Term) -> dict[int, Channels]:
        raise NotImplementedError

    def _keep(self, node: Node, term: curv.Term) -> bool:
        """Skip rule: a term matters only if its operands depend on θ, and a coupling's
        diagonal contribution vanishes when their parameter sets are disjoint."""
        xi = node.inputs[term.i]
        if xi not in self.live:
            return False
        if isinstance(term, curv.Coupling):
            xj = node.inputs[term.j]
            return xj in self.live and bool(self.anc[xi] & self.anc[xj])
        return True

    def _deliver(self, node: Node, i: int, ch: Channels) -> None:
        """Add a contribution to operand i: per case if the operand is shared by cases."""
        x = node.inputs[i]
        if not any(v is not None for v in ch.values()):
            return
        if node.batched and not self.g[x].batched:
            per_case = {c: v for c, v in ch.items() if v is not None}
            self.case.setdefault(x, []).append(leafform.as_term(self.g, per_case))
        else:
            _add(self.g, self.acc, x, ch, node.origin)

    # -- the sweep -------------------------------------------------------------------------
    def run(self) -> None:
        g = self.g
        for nid in reversed(g.topo()):
            if nid not in self.live or not g[nid].inputs:
                continue
            node = g[nid]
            prim = REGISTRY[node.op]
            live_in = [x in self.live for x in node.inputs]
            s = self.acc.get(nid)
            if s:  # J_iᵀ S_y, channel by channel
                if not node.batched and any(g[x].batched for x in node.inputs):
                    raise errors.ModelError(
                        f"cp_diag: curvature reaches the batch reduction {node.describe()} "
                        "from above; CP's per-case estimate needs the objective to be linear "
                        "in the batch reduction",
                        where=node.origin,
                        node=node.describe(),
                        fix="write the objective as a mean (or sum) of per-case losses plus "
                        "terms of θ alone",
                    )
                for c, v in s.items():
                    for i, x in enumerate(node.inputs):
                        if not live_in[i]:
                            continue
                        if node.batched and not g[x].batched:
                            r = case_pullback(g, node, i, v)
                            self.case.setdefault(x, []).append(leafform.as_term(g, {c: r}))
                        else:
                            r = prim.vjp(g, node, v, [k == i for k in range(len(live_in))])[i]
                            _add(g, self.acc, x, {c: r}, node.origin)
            for t in self.case.get(nid, []):  # per-case terms through θ-only nodes
                self._pull_case(node, t)
            if not self._injects(node):
                continue
            if prim.curvature is None:
                raise errors.ModelError(
                    f"op '{node.op}' has no local-curvature rule, so cp_diag cannot "
                    "propagate curvature through it",
                    where=node.origin,
                    node=node.describe(),
                    fix="register a curvature rule beside the op (ops/curvature.py)",
                )
            for term in prim.curvature(g, node, self.cot[nid]):
                if self._keep(node, term):
                    for i, ch in self._inject(node, term).items():
                        if live_in[i]:
                            self._deliver(node, i, ch)

    def _pull_case(self, node: Node, t: leafform.CaseTerm) -> None:
        g = self.g
        for i, x in enumerate(node.inputs):
            if x not in self.live:
                continue
            factored = REGISTRY[node.op].factored_vjp
            if factored is not None and t.kind == "outer":  # stays rank one: (u vᵀ)ᵀ = v uᵀ
                parts = {c: factored(p) for c, p in t.parts.items()}
                self.case.setdefault(x, []).append(leafform.CaseTerm("outer", parts))
                continue
            # any other θ-only node: per-case values materialised (B × |node| memory)
            out = {}
            for c, v in leafform.materialise(g, t, node.origin).items():
                out[c] = case_pullback(g, node, i, v)
            self.case.setdefault(x, []).append(leafform.as_term(g, out))


class CurvatureSweep(Sweep):
    """The sweep of one CP estimator: noise injected at every curved node (S, TU) or at
    the losses only (GN), reduced at the leaves by the estimator's quadratic form."""

    def __init__(
        self,
        forward: Graph,
        estimator: str,
        objective: str = "objective",
        wrt: Sequence[str] | None = None,
    ) -> None:
        if estimator not in FORM:
            raise errors.ModelError(
                f"unknown CP estimator {estimator!r}", fix=f"choose one of {ESTIMATORS}"
            )
        self.est = estimator
        if estimator == "GN":
            from symcurv.transforms import gauss_newton

            for loss in gauss_newton.check_split(forward, forward.outputs[objective]):
                gauss_newton.check_convex(loss)
        super().__init__(forward, objective, wrt)

    def _injects(self, node: Node) -> bool:
        if self.est == "GN":
            return REGISTRY[node.op].family == "loss"
        return True

    def _inject(self, node: Node, term: curv.Term) -> dict[int, Channels]:
        """F z (S, GN) or (P z, Q z) (TU) for one term: {operand index: channels}."""
        g, o, est = self.g, node.origin, self.est
        nb = node.batched or any(g[x].batched for x in node.inputs)
        if isinstance(term, curv.Diag):
            z = self.noise(g[node.inputs[term.i]].shape, nb, o)
            if est == "TU":
                return {term.i: {"T": ew.mul(g, term.m, z, o), "U": z}}
            re = ew.mul(g, ew.call(g, "sqrt_pos", term.m, origin=o), z, o)
            im = ew.mul(g, ew.call(g, "sqrt_neg", term.m, origin=o), z, o)
            return {term.i: {"re": re, "im": None if est == "GN" else im}}
        if isinstance(term, curv.Factored):
            az = term.factor(g, self.noise(term.noise_shape, nb, o))
            if est == "TU":
                return {term.i: {"T": ew.mul(g, term.c, az, o), "U": az}}
            re = ew.mul(g, ew.call(g, "sqrt_pos", term.c, origin=o), az, o)
            im = ew.mul(g, ew.call(g, "sqrt_neg", term.c, origin=o), az, o)
            return {term.i: {"re": re, "im": None if est == "GN" else im}}
        # coupling [[0, C], [Cᵀ, 0]]
        z1 = self.noise(term.noise_shape, nb, o)
        z2 = self.noise(term.noise_shape, nb, o)
        if est == "TU":  # P = [[C, 0], [0, I]], Q = [[0, C], [I, 0]]
            return {
                term.i: {"T": term.apply(g, z1), "U": term.apply(g, z2)},
                term.j: {"T": z2, "U": z1},
            }
        # F = (1/√2) [[C, iC], [I, −iI]]
        w1, w2 = (leafform.scale(g, z, 1 / math.sqrt(2.0), o) for z in (z1, z2))
        return {
            term.i: {"re": term.apply(g, w1), "im": term.apply(g, w2)},
            term.j: {"re": w1, "im": ew.call(g, "neg", w2, origin=o)},
        }

    def estimate(self) -> dict[str, str | None]:
        """Run the sweep; ``{leaf id: one draw of the estimate}`` (None: exactly zero)."""
        self.run()
        return leafform.quadratic_form(self, FORM[self.est])


def cp_graph(forward: Graph, estimator: str = "S", objective: str = "objective") -> Graph:
    """Copy of ``forward`` with outputs ``cp_<estimator>:<param>``: one draw of the
    estimate of diag(H) (diag(G) for GN) restricted to each parameter, given the noise
    leaves ``z0, z1, ...``."""
    sweep = CurvatureSweep(forward, estimator, objective)
    est = sweep.estimate()
    g = sweep.g
    g.outputs = {}
    for p in sweep.params:
        d = est[p.id]
        if d is None:  # exactly zero (e.g. a weight only ever multiplied by data)
            d = ew.broadcast_to(g, ew.const(g, 0.0, p.origin), p.shape, False, p.origin)
        g.set_output(outputs.theta(f"cp_{estimator}", p.name), d)
    return g
