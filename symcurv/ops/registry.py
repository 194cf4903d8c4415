"""``PrimitiveDef``: everything symcurv knows about one op, in one place.

Like JAX's primitives with their rules registered beside them: a primitive carries its
shape rule, its numpy implementation (the reference interpreter's spec), its ``vjp`` and
``jvp`` as functions that BUILD IR nodes (so derived graphs stay in the IR and can be
differentiated again), and how it lowers to a kernel. Passes and emitters only ever look
things up here; adding an op never touches them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from symcurv import errors
from symcurv.ir.graph import Graph, Node

# kernel kinds the lowering understands (codegen/lower.py)
KERNEL_KINDS = ("leaf", "map", "gemm", "reduce", "gather", "composite")


@dataclasses.dataclass
class PrimitiveDef:
    """One primitive op.

    infer(inputs, attrs) -> (shape, batched)        shape rule; raise errors.ShapeError
    impl(node, args, arg_nodes) -> ndarray          numpy semantics (batch axis first)
    vjp(graph, node, cot, needs) -> [cot_i | None]  pullback x̄_i = J_iᵀ ȳ as IR nodes, for
                                                    the operands with needs[i] true
    jvp(graph, node, tangents) -> tangent or None   pushforward: ẏ = Σ_i J_i ẋ_i, as IR nodes
    scalar(node, operand_symbols) -> sympy expr     for ``kernel == "map"``: per-element formula
    decompose(graph, node) -> node id               for ``kernel == "composite"``: the same
                                                    value built from simpler primitives
    simplify(graph, node) -> node id or None        algebraic peephole rule (passes/simplify)
    curvature(graph, node, cot) -> [term]          the local curvature M_i = Σ_q ḡ_q ∇² y_q as
                                                    factor terms (ops/curvature.py) for CP
    sq_vjp(graph, node, d, needs) -> [d_i | None]   diag(J_iᵀ diag(d) J_i) = (J_i ∘ J_i)ᵀ d: the
                                                    pullback of a diagonal (Becker-LeCun)
    case_vjp(graph, node, i, cot) -> cot_i          the pullback for ONE case to operand i when
                                                    the node is per case and operand i is
                                                    shared by all cases (per-case gradients,
                                                    CP through θ-only values); None: the
                                                    ``vjp`` of a copy of the node whose operand
                                                    i is a per-case copy, right for every op
                                                    that accepts a per-case operand where a
                                                    shared one stood
    loss_weight(graph, node, lossy) -> ±1.0 or None when the node is affine in the operands
                                                    flagged ``lossy`` (those carrying losses):
                                                    the sign of the weight it gives them;
                                                    None when it is not (Gauss-Newton needs
                                                    an objective linear in its losses with
                                                    non-negative weights)
    lower(graph, node) -> Lowering                  how a non-map op becomes a kernel
                                                    (ops/lowering.py): which GEMM with which
                                                    operands and transposes, which reduction
    inline                                          a ``map`` op so cheap that every fused map
                                                    reading it recomputes its formula from its
                                                    operands instead of reading a stored value
                                                    (the one-hot row of a class label: the B×K
                                                    array is never written)
    view                                            the op may be read in place by the GEMMs
                                                    consuming it (a transpose: a BLAS flag)
    rank_one                                        the value is the outer product u vᵀ of
                                                    its two operands (per case when batched):
                                                    CP's leaf reduction keeps such per-case
                                                    terms as the pair (u, v), never B × m × n
    factored_vjp((u, v)) -> (u', v')                the pullback to the op's one operand of a
                                                    per-case rank-one cotangent u_b v_bᵀ, kept
                                                    factored (a transpose: (v, u))
    batch_impl                                      ``impl`` makes a batch from unbatched
                                                    operands and is called with ``batch=B``
    binding                                         a leaf's argument of a compiled program:
                                                    "theta" (a view of θ), "v" (of the flat
                                                    direction), "batch", or an extra bound by
                                                    name: "noise", "direction", "cached"
    """

    name: str
    family: str
    kernel: str
    infer: Callable[[Sequence[Node], dict], tuple[tuple[int, ...], bool]]
    impl: Callable[[Node, list, list], Any]
    vjp: Callable[[Graph, Node, str, list], list] | None = None
    jvp: Callable[[Graph, Node, list], str | None] | None = None
    scalar: Callable[[Node, list], Any] | None = None
    decompose: Callable[[Graph, Node], str] | None = None
    simplify: Callable[[Graph, Node], str | None] | None = None
    curvature: Callable[[Graph, Node, str], list] | None = None
    sq_vjp: Callable[[Graph, Node, str, list], list] | None = None
    case_vjp: Callable[[Graph, Node, int, str], str] | None = None
    loss_weight: Callable[[Graph, Node, list], float | None] | None = None
    lower: Callable[[Graph, Node], Any] | None = None
    factored_vjp: Callable[[tuple[str, str]], tuple[str, str]] | None = None
    inline: bool = False
    view: bool = False
    rank_one: bool = False
    batch_impl: bool = False
    binding: str = ""
    doc: str = ""

    def __post_init__(self) -> None:
        assert self.kernel in KERNEL_KINDS, self.kernel


REGISTRY: dict[str, PrimitiveDef] = {}


def is_constant(node: Node) -> bool:
    """A literal: no operands, and a scalar formula (inlined into every map reading it)."""
    return not node.inputs and REGISTRY[node.op].scalar is not None


def is_inlined(node: Node) -> bool:
    """Recomputed inside every fused map that reads it, never a kernel of its own unless a
    non-map kernel reads it: literals, and ops registered with ``inline=True``."""
    return is_constant(node) or REGISTRY[node.op].inline


def lowering(graph: Graph, node: Node):
    """The op's own description of its kernel (ops/lowering.py)."""
    rule = REGISTRY[node.op].lower
    if rule is None:
        raise NotImplementedError(f"cannot lower {node.op}: it registers no lower rule")
    return rule(graph, node)


def register(prim: PrimitiveDef) -> PrimitiveDef:
    if prim.name in REGISTRY:
        raise ValueError(f"primitive {prim.name} registered twice")
    REGISTRY[prim.name] = prim
    return prim


def emit(
    graph: Graph,
    op: str,
    inputs: Sequence[str],
    attrs: dict | None = None,
    *,
    name: str = "",
    origin: str = "",
) -> str:
    """Add ``op(inputs)`` to ``graph`` after running its shape rule; return the node id.

    Derived nodes inherit ``origin`` (the DSL line) from the primal node they come from,
    so generated comments and error messages always point at user code.
    """
    prim = REGISTRY[op]
    attrs = dict(attrs or {})
    nodes = [graph[i] for i in inputs]
    try:
        shape, batched = prim.infer(nodes, attrs)
    except errors.ShapeError as e:
        if e.where is None and origin:
            raise errors.ShapeError(
                e.problem, where=origin, node=e.node or f"'{name or op}'", fix=e.fix
            ) from None
        raise
    return graph.add_node(op, inputs, shape, batched, attrs, name=name or op, origin=origin).id


def describe_operands(nodes: Sequence[Node]) -> str:
    return ", ".join(n.describe() for n in nodes)
