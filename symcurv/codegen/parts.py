"""The modules a program compiles to (``kernels/<name>[_static|_whole].py``).

A program is one module, except a product program (one with a direction, input-direction
or noise leaf: hvp, gnvp, the CP estimators, ...), which is split (passes/split.py) into
a static part — everything that depends on (θ, batch) only, which a ``State`` computes
once — and a dynamic part run per product. A direct call (``prog.hvp(θ, batch, v)``)
runs both. On the CPU it runs instead the whole graph as one module when that graph pairs
two products (codegen/lower.py: ``pair_products``): an hvp's forward X W0ᵀ and R-forward
X V_W0ᵀ are then one wider GEMM, and the call runs one driver instead of two.
"""

from __future__ import annotations

from symcurv.codegen import lower
from symcurv.ir.graph import Graph
from symcurv.passes import split


def parts(name: str, g: Graph, backend: str) -> dict[str, Graph]:
    """``{module name: graph}`` of program ``name`` (optimised graph ``g``): ``name``
    alone, or ``name.static`` and ``name`` (the dynamic part), plus ``name.whole`` on the
    CPU when the whole graph pairs a product."""
    if not any(split.is_dynamic(n) for n in g.nodes()):
        return {name: g}
    static, dynamic = split.split(g)
    out = {f"{name}.static": static, name: dynamic}
    if backend == "cpu" and any(k.pair is not None for k in lower.lower(g).kernels):
        out[f"{name}.whole"] = g
    return out
