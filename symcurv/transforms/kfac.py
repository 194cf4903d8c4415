"""K-FAC factor statistics (Martens & Grosse 2015; George 2017 §6.3) as new nodes in the IR.

For a dense layer a_b = W h_b (+ b) the Gauss-Newton block of (W, b) is

    mean_b (ā_b ā_bᵀ) ⊗ (J_bᵀ H_L,b J_b),    ā_b = [h_b; 1],  J_b = ∂(loss input)/∂a_b,

approximated as A ⊗ G with A = mean_b ā_b ā_bᵀ and G = mean_b of a pre-activation factor
(DESIGN.md §3). Both are GEMMs over the batch (``outer_bsum``: Σ_b u_b v_bᵀ = Uᵀ V):

    A  = [[Σ_b h hᵀ, Σ_b h], [Σ_b hᵀ, B]] / B    (the graph gives Σ h hᵀ and Σ h; the
                                                  runtime assembles ā's last row/column)
    G  = Σ_b s_b s_bᵀ,  s_b the channel at a_b of one per-case sweep (curvprop.Sweep):

    "curvature_prop"  the CP Gauss-Newton sweep: s_b = J_bᵀ F_b ε_b, F Fᵀ = c_L H_L
                      (c_L = 1/B for the batch mean, so Σ_b is the mean), ε the noise
                      leaves; the same program with ε = e_k, summed over k, is the exact
                      G (KFLR: one back-sweep per loss-input coordinate)
    "empirical"       s_b = J_bᵀ √c_L ∂ℓ(y_b, t'_b)/∂y_b: the per-case gradient at a_b,
                      t' an extra leaf ``target_<t>`` the runtime binds to the batch's
                      targets, or to targets drawn from the model's predictive
                      distribution at the output ``kfac_y`` ("fisher_mc")

Dense layers are found by ancestor analysis (:func:`dense_layers`), never by op names: a
node whose operands are a parameter matrix W and a per-case vector h and whose numpy
semantics (the op's ``impl``) are W h, optionally followed by a node adding a parameter
vector b (semantics a + b). W (and b) must be used exactly once in the graph: a tied or
shared parameter (W and W.T) has no Kronecker block of this form and, like every parameter
outside a dense layer, gets the CP estimate of its Gauss-Newton diagonal
(``kfac_diag:<param>``, the same sweep's quadratic form, unbiased; exact for "exact" and
the empirical Fisher's diagonal for "empirical").
"""

from __future__ import annotations

import dataclasses
from functools import cache

import numpy as np

from symcurv import errors
from symcurv.ir import outputs
from symcurv.ir.graph import Graph, Node
from symcurv.ops import REGISTRY
from symcurv.ops import elementwise as ew
from symcurv.ops.registry import emit
from symcurv.transforms import gauss_newton, leafform
from symcurv.transforms.curvprop import FORM, CurvatureSweep, Sweep
from symcurv.transforms.grad import vjp

KINDS = ("curvature_prop", "empirical")  # the two compiled sweeps (module docstring)


@dataclasses.dataclass(frozen=True)
class DenseLayer:
    """a = W h (+ b): parameter names, and the node ids of h (``input``), W h
    (``product``) and a (``preactivation``: the bias add, or W h without bias)."""

    weight: str
    bias: str | None
    input: str
    product: str
    preactivation: str
    n_in: int
    n_out: int

    @property
    def A_size(self) -> int:
        return self.n_in + (1 if self.bias else 0)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


@cache
def _semantics_probe(op: str, attrs: tuple, pattern: str) -> bool:
    """Does the op compute ``pattern`` ("W h", "a + b" or "b + a") on a per-case operand? Answered
    by the op's own numpy ``impl`` on random numbers (a property of the PrimitiveDef, not
    of its name)."""
    rng = np.random.default_rng(1)
    node = Node("probe", op, ("u", "v"), (3,), True, attrs, "probe", "")
    if pattern == "W h":  # W (3 × 2) shared, h per case (2 cases)
        W, h = rng.normal(size=(3, 2)), rng.normal(size=(2, 2))
        args, want = [W, h], h @ W.T
        shapes = [((3, 2), False), ((2,), True)]
    else:  # a per case, b shared, in the node's operand order
        a, b = rng.normal(size=(2, 3)), rng.normal(size=3)
        args, want = [a, b], a + b
        shapes = [((3,), True), ((3,), False)]
        if pattern == "b + a":
            args, shapes = args[::-1], shapes[::-1]
    operands = [Node(f"p{i}", "probe", (), s, bt) for i, (s, bt) in enumerate(shapes)]
    try:
        got = REGISTRY[op].impl(node, args, operands)
    except Exception:  # noqa: BLE001 - any op that cannot take these operands is not it
        return False
    return np.shape(got) == want.shape and bool(np.allclose(got, want, rtol=1e-12, atol=0))


def _computes(n: Node, pattern: str) -> bool:
    return _semantics_probe(n.op, n.attrs, pattern)


def dense_layers(g: Graph) -> dict[str, DenseLayer]:
    """``{weight name: DenseLayer}`` for every dense layer of the forward graph ``g``
    (module docstring), in graph order."""
    params = {p.id: p for p in g.leaves("param")}
    uses = {pid: len(g.children(pid)) for pid in params}
    out: dict[str, DenseLayer] = {}
    for n in g.nodes():
        if len(n.inputs) != 2 or not n.batched or len(n.shape) != 1:
            continue
        wid, hid = n.inputs
        W, h = g[wid], g[hid]
        if wid not in params or uses[wid] != 1 or len(W.shape) != 2:
            continue
        if not h.batched or h.shape != (W.shape[1],) or n.shape != (W.shape[0],):
            continue
        if not _computes(n, "W h"):
            continue
        bias, pre = None, n.id
        kids = g.children(n.id)
        if len(kids) == 1:
            c = g[kids[0]]
            other = [i for i in c.inputs if i != n.id]
            if (
                len(c.inputs) == 2
                and len(other) == 1
                and other[0] in params
                and uses[other[0]] == 1
                and params[other[0]].shape == n.shape
                and c.shape == n.shape
                and _computes(c, "a + b" if c.inputs[0] == n.id else "b + a")
            ):
                bias, pre = params[other[0]].name, c.id
        out[W.name] = DenseLayer(W.name, bias, hid, n.id, pre, W.shape[1], W.shape[0])
    return out


def is_data(n: Node) -> bool:
    """A leaf bound to a batch array (an input or target)."""
    return not n.inputs and REGISTRY[n.op].binding == "batch"


def data_target(g: Graph, t: Node) -> Node | None:
    """The batch leaf a loss's target reads: ``t`` itself, or the leaf under an inlined op
    of it (a class label's one-hot row [c = k], ops/losses.py); None for a target computed
    from the data (then only the true target is used: no fisher_mc for that loss)."""
    if is_data(t):
        return t
    if REGISTRY[t.op].inline and len(t.inputs) == 1 and is_data(g[t.inputs[0]]):
        return g[t.inputs[0]]
    return None


def target_leaf(t: Node) -> str:
    """The name of the extra leaf standing for target ``t`` in the empirical sweep."""
    return f"target_{t.name}"


class EmpiricalSweep(Sweep):
    """The per-case sweep seeded at every loss input y with √c_L ∂L(y, t')/∂y (nothing
    injected): Σ_b s_b s_bᵀ at a pre-activation is mean_b g_b g_bᵀ, g_b = ∂ℓ_b/∂a_b.

    t' is an extra per-case leaf ``target_<t>`` (role "noise": bound by the runtime on
    every call), not the batch's target t itself: the runtime binds the true targets
    ("empirical") or targets drawn from the model ("fisher_mc") without touching the
    forward pass — in an autoencoder t IS the network's input x."""

    def __init__(self, forward: Graph, objective: str = "objective") -> None:
        super().__init__(forward, objective)
        g = self.g
        self.losses = gauss_newton.check_split(g, self.root)
        weights = vjp(g, self.root, [L.id for L in self.losses])
        for L in self.losses:
            y, t = L.inputs
            if weights[L.id] is None or y not in self.live:
                continue
            loss = L.id
            leaf = data_target(g, g[t])
            if leaf is not None:  # else a computed target: the true one only (no fisher_mc)
                attrs = {"shape": list(g[t].shape), "batched": True, "index": self.noise.count}
                self.noise.count += 1
                tp = g.add_node("noise", [], g[t].shape, True, attrs, target_leaf(leaf), L.origin)
                attrs = dict(L.attrs)
                loss = g.add_node(L.op, [y, tp.id], L.shape, L.batched, attrs, L.name, L.origin).id
            root_c = ew.call(g, "sqrt_pos", weights[L.id], origin=L.origin)
            seed = vjp(g, loss, [y], seed=root_c)[y]
            if seed is not None:
                self.acc.setdefault(y, {})
                self.acc[y]["re"] = ew.add(g, self.acc[y].get("re"), seed, L.origin)


def _sweep(forward: Graph, kind: str, objective: str) -> Sweep:
    if kind == "curvature_prop":
        return CurvatureSweep(forward, "GN", objective)
    if kind == "empirical":
        return EmpiricalSweep(forward, objective)
    raise errors.ModelError(f"unknown K-FAC sweep {kind!r}", fix=f"choose one of {KINDS}")


def kfac_graph(forward: Graph, kind: str = "curvature_prop", objective: str = "objective") -> Graph:
    """Copy of ``forward`` with, per dense layer W, the array outputs ``kfac_hh:W`` =
    Σ_b h hᵀ, ``kfac_h:W`` = Σ_b h and ``kfac_G:W`` = Σ_b s sᵀ; the theta outputs
    ``kfac_diag:<p>`` for every other parameter; for "empirical" also the loss inputs per
    case (``kfac_y:<target input>``), from which fisher_mc draws its targets, and the
    channels s per case (``kfac_s:W``, for ACP's α)."""
    layers = dense_layers(forward)
    sweep = _sweep(forward, kind, objective)
    sweep.run()
    g = sweep.g
    g.outputs = {}
    for name, L in layers.items():
        o = g[L.product].origin
        h = L.input
        g.set_output(
            outputs.Output("kfac_hh", outputs.ARRAY, name),
            emit(g, "outer_bsum", [h, h], name=f"hh_{name}", origin=o),
        )
        g.set_output(
            outputs.Output("kfac_h", outputs.ARRAY, name),
            emit(g, "batch_sum", [h], name=f"hsum_{name}", origin=o),
        )
        s = sweep.acc.get(L.preactivation, {}).get("re")
        if s is None:  # no curvature reaches this layer: G = 0
            G = ew.broadcast_to(g, ew.const(g, 0.0, o), (L.n_out, L.n_out), False, o)
        else:
            G = emit(g, "outer_bsum", [s, s], name=f"G_{name}", origin=o)
            if kind == "empirical":  # √c_L ∂ℓ_b/∂a_b per case: ACP's α = max_b,j (∂ℓ_b/∂a_bj)²
                g.set_output(outputs.per_case("kfac_s", name), s)
        g.set_output(outputs.Output("kfac_G", outputs.ARRAY, name), G)
    covered = {n for L in layers.values() for n in (L.weight, L.bias) if n}
    rest = [p for p in sweep.params if p.name not in covered]
    if rest:
        est = leafform.quadratic_form(sweep, FORM["GN"])
        for p in rest:
            d = est.get(p.id)
            if d is None:
                d = ew.broadcast_to(g, ew.const(g, 0.0, p.origin), p.shape, False, p.origin)
            g.set_output(outputs.theta("kfac_diag", p.name), d)
    if kind == "empirical":
        for L in gauss_newton.loss_nodes(g, sweep.root):
            leaf = data_target(g, g[L.inputs[1]])
            if leaf is not None:
                g.set_output(outputs.per_case("kfac_y", leaf.name), L.inputs[0])
    return g


def manifest(fwd: Graph) -> dict:
    """What a build records for K-FAC (``manifest["kfac"]``): the dense layers given
    Kronecker blocks (by node name and DSL line), and each loss's kind by its target input
    (fisher_mc samples targets of that loss's predictive distribution)."""
    layers = [
        {
            **L.to_json(),
            "input": fwd[L.input].name,
            "product": fwd[L.product].name,
            "preactivation": fwd[L.preactivation].name,
            "origin": fwd[L.product].origin,
        }
        for L in dense_layers(fwd).values()
    ]
    targets = {}
    for L in gauss_newton.loss_nodes(fwd, fwd.outputs["objective"]):
        t = data_target(fwd, fwd[L.inputs[1]])
        if t is not None:  # {target input: [loss kind, the empirical sweep's target leaf]}
            targets[t.name] = [L.attr("kind") or L.op, target_leaf(t)]
    return {"layers": layers, "targets": targets}
