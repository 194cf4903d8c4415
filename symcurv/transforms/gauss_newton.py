"""Gauss-Newton-vector products (Schraudolph 2002), as new nodes in the same IR.

The objective is a (weighted) sum of losses L(y(θ), t) of ``sc.losses``. Splitting the
Hessian at each loss's first operand y gives

    G v = Σ_losses Jᵀ (c_L H_L) J v,     J = ∂y/∂θ,  H_L = ∂²L/∂y²,  c_L = ∂objective/∂L

(c_L is 1/B for the batch mean). Built from the ops' own rules, with no new derivative code:
    J v       forward mode from the parameters' directions to y      (``jvp``)
    c_L H_L u forward mode, from y alone, of the loss's y-cotangent  (``jvp`` of ``vjp``)
    Jᵀ w      reverse mode from y back to the parameters              (``vjp``)

G is positive semi-definite when every H_L is, so GN needs: the objective is LINEAR in the
losses (sums, differences, constant factors), θ reaches it only through the losses' first
operands, and each loss is convex in y. Built-in losses are; a custom loss's ℓ'' must be
proven ≥ 0 by sympy. Anything else is a ``LossError`` naming the node and the fix.
"""

from __future__ import annotations

import sympy

from symcurv import errors
from symcurv.ir import outputs
from symcurv.ir.graph import Graph, Node
from symcurv.ops import REGISTRY
from symcurv.ops import elementwise as ew
from symcurv.symbolic import local
from symcurv.transforms.grad import vjp
from symcurv.transforms.jvp import jvp
from symcurv.transforms.rop import add_directions

# Losses convex in y by construction: ½(y−t)², softplus(y) − t y, logsumexp(y)·Σt − tᵀy
# (the last two for targets t ≥ 0, as cross-entropy targets are).
CONVEX_BUILTINS = ("squared_error", "sigmoid_cross_entropy", "softmax_cross_entropy")


def loss_nodes(g: Graph, root: str) -> list[Node]:
    """The ``sc.losses`` nodes feeding ``root``, in topological order."""
    up = g.ancestors(root) | {root}
    return [g[n] for n in g.topo() if n in up and REGISTRY[g[n].op].family == "loss"]


def _depends_on_params(g: Graph) -> set[str]:
    out: set[str] = set()
    for p in g.leaves("param"):
        out |= g.descendants(p.id) | {p.id}
    return out


def check_split(g: Graph, root: str) -> list[Node]:
    """Check that the Gauss-Newton split exists for ``root`` (see module docstring);
    return the loss nodes."""
    losses = loss_nodes(g, root)
    if not losses:
        raise errors.LossError(
            "the objective has no loss from sc.losses, so it has no Gauss-Newton split",
            where=g[root].origin,
            node=g[root].describe(),
            fix="minimize sc.losses.squared_error / sigmoid_cross_entropy / "
            "softmax_cross_entropy / custom(...) of the network output, or use hvp",
        )
    theta_dep = _depends_on_params(g)
    above: set[str] = set()  # nodes between the losses and the root
    for L in losses:
        above |= (g.descendants(L.id) & (g.ancestors(root) | {root})) | {L.id}
    for L in losses:
        check_convex(L)
        t = L.inputs[1]
        if t in theta_dep:
            raise errors.LossError(
                f"the target of loss '{L.name}' depends on the parameters",
                where=L.origin,
                node=g[t].describe(),
                fix="Gauss-Newton needs targets that are data; use hvp for this objective",
            )
    for nid in sorted(above - {L.id for L in losses}, key=g.topo().index):
        n = g[nid]
        lossy = [i in above for i in n.inputs]
        for i, is_lossy in zip(n.inputs, lossy):
            if not is_lossy and i in theta_dep:
                raise errors.LossError(
                    f"'{g[i].name}' depends on the parameters and enters the objective "
                    "outside a loss, so the objective has no Gauss-Newton split",
                    where=g[i].origin,
                    node=g[i].describe(),
                    fix="make every parameter-dependent term part of a loss's first "
                    "operand (e.g. add it to the network output), or use hvp",
                )
        # the op's own rule (ops/): is it affine in its lossy operands, with which sign
        rule = REGISTRY[n.op].loss_weight
        sign = rule(g, n, lossy) if rule is not None else None
        # G = Σ c_L Jᵀ H_L J is PSD only for c_L ≥ 0: a loss negated, subtracted or scaled
        # by a negative constant would make the "Gauss-Newton" matrix indefinite
        negated, linear = sign is not None and sign < 0, sign is not None
        if negated:
            raise errors.LossError(
                f"'{n.name}' ({n.attr('expr') or n.op}) gives a loss a negative weight, so "
                "the Gauss-Newton matrix would not be positive semi-definite",
                where=n.origin,
                node=n.describe(),
                fix="only add losses with non-negative weights (data weights must be ≥ 0), "
                "or use hvp",
            )
        if not linear:
            raise errors.LossError(
                f"'{n.name}' ({n.attr('expr') or n.op}) combines losses non-linearly, so "
                "the objective has no Gauss-Newton split",
                where=n.origin,
                node=n.describe(),
                fix="the objective may only add, subtract and scale losses by constants; "
                "put the non-linearity inside a custom loss, or use hvp",
            )
    return losses


def check_convex(L: Node) -> None:
    """H_L ⪰ 0: built-in losses by construction; a custom loss ℓ(y, t) when sympy proves
    ∂²ℓ/∂y² ≥ 0 for all real y and t."""
    kind = L.attr("kind") or L.op
    if kind in CONVEX_BUILTINS:
        return
    fn = local.FUNCTIONS[L.attr("fn")]
    d2 = fn.partial(0).partial(0).expr
    tries = (d2, sympy.simplify(d2), sympy.simplify(d2.rewrite(sympy.exp)))
    if any(e.is_nonnegative for e in tries):
        return
    raise errors.LossError(
        f"cannot prove that custom loss '{kind}' is convex in y: sympy gives "
        f"∂²ℓ/∂y² = {sympy.simplify(d2)}, not provably ≥ 0, so G = Jᵀ H_L J may be indefinite",
        where=L.origin,
        node=L.describe(),
        fix="use a loss convex in y (e.g. squared_error, log(cosh(y - t))), or use hvp "
        "for exact curvature",
    )


def gnvp_graph(forward: Graph, objective: str = "objective") -> Graph:
    """Copy of ``forward`` with outputs ``gnvp:<param>`` = (G v) restricted to each
    parameter."""
    g = forward.copy()
    root = g.outputs[objective]
    losses = check_split(g, root)
    params = g.leaves("param")
    dirs = add_directions(g)
    weights = vjp(g, root, [L.id for L in losses])  # c_L: θ-independent (checked linear)
    total: dict[str, str | None] = {p.id: None for p in params}
    for L in losses:
        y = L.inputs[0]
        Jv = jvp(g, dirs, [y])[y]
        if Jv is None or weights[L.id] is None:  # y does not depend on θ
            continue
        dy = vjp(g, L.id, [y], seed=weights[L.id])[y]  # c_L ∂L/∂y, a function of y and t
        HJv = jvp(g, {y: Jv}, [dy])[dy]  # c_L H_L J v
        if HJv is None:  # the loss is linear in y
            continue
        back = vjp(g, y, [p.id for p in params], seed=HJv)
        for p in params:
            total[p.id] = ew.add(g, total[p.id], back[p.id], L.origin)
    g.outputs = {}
    for p in params:
        t = total[p.id]
        g.set_output(
            outputs.theta("gnvp", p.name), t if t is not None else ew.const(g, 0.0, p.origin)
        )
    return g
