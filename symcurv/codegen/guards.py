"""Non-finite batch data found through the first product that reads it.

Every call refuses non-finite data, naming the leaf (runtime/validate.py). Scanning a wide
input such as cp_net's 256-wide x costs a pass over all of it from memory on every call
(28-31 µs at B = 1000, 5 % of a loss call), and the kernels then read it again. When a
GEMM reads the whole leaf as an operand (X Wᵀ, Gᵀ X), its product can be checked
instead, which is 256/20 times smaller there: in IEEE arithmetic a NaN or ±inf entry
x[b, k] makes every product entry it enters non-finite (NaN·w = NaN, ±inf·0 = NaN,
±inf·w = ±inf, and a sum with a NaN or an infinite term is NaN or infinite), and the BLAS
computes every term (OpenBLAS does not skip zero multipliers). So the driver checks that
product right after its GEMM, before its buffer is reused, and returns whether it found
a non-finite entry; ``Program.run`` then scans the guarded leaves as before and raises
the same error naming the leaf. A product that is non-finite with finite data (an
overflow) passes that scan and goes on to the output check like any other value.

A leaf no GEMM reads whole (a target read by the loss map, a conv input read by a
gather) is scanned up front as before; class labels always are (a label is an index).

The one assumption is the product kernel's: OpenBLAS (numpy's and scipy's wheels) and
symcurv's own kernels (runtime/gemm_narrow.py, gemm_tiles.py: no ``nnan``/``ninf``
fast-math, IEEE fused multiply-adds) multiply every term (tests/codegen/test_guards.py
and tests/runtime/test_gemm.py check an infinite entry under an all-zero column of W).
A BLAS that skipped zero multipliers (netlib's reference dgemm tests B(l, j) ≠ 0) would let
an entry that every weight multiplies by an exact zero pass the guard; that entry then
does not reach the loss either, and in a gradient program its NaN reaches dW = Gᵀ X,
which the output check refuses, naming that node.
"""

from __future__ import annotations

from symcurv.codegen.lower import Lowered
from symcurv.ops import REGISTRY
from symcurv.ops import lowering as lw

FLAG = "nonfinite"  # the driver's variable: did a guarded product hold NaN or ±inf?
CHECK = "all_finite_flat"  # runtime/validate.py: the compiled scan the guard calls


def guarded_leaves(low: Lowered) -> dict[str, list[str]]:
    """``{kernel name: [leaf names]}``: each float batch leaf with the first GEMM kernel
    that reads it whole as an operand (a transpose view resolves to the node it views)."""
    g = low.graph
    leaves = {
        n.id: n.name
        for n in g.nodes()
        if REGISTRY[n.op].binding == "batch" and not n.attr("labels")
    }
    guards: dict[str, list[str]] = {}
    done: set[str] = set()
    for k in low.kernels:
        if not isinstance(k.how, lw.Gemm):
            continue
        for m in (k.how.a, k.how.b):
            nid = low.views.get(m.nid, m.nid)
            if nid in leaves and nid not in done:
                done.add(nid)
                guards.setdefault(k.name, []).append(leaves[nid])
    return guards


def guarded_names(low: Lowered) -> list[str]:
    """The leaves a program's driver checks through a product (manifest: ``guarded``)."""
    return sorted({x for leaves in guarded_leaves(low).values() for x in leaves})


def guard_line(product: str) -> str:
    """The driver's check of a guarded product (its storage, C-contiguous)."""
    return f"{FLAG} |= not {CHECK}({product}.reshape(-1))  # a non-finite batch entry?"
