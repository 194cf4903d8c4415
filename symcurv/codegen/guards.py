"""Non-finite values found through products: the batch data through the first product
that reads it, a per-case output through the operands of the product that writes it.

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

The output check is the same idea the other way round. Every call scans its outputs for
NaN/inf (``Program.run``); cp_net's input gradient is B × 256, written by one product
G W of a B × 20 G and a 20 × 256 W, and its scan was 25 µs of a 724 µs call at B = 1000.
Where a per-case output is written whole by one product out = a·b (no later kernel
touches it) and its operands hold fewer numbers per case than it does, the driver checks
the operands instead (``product_bounded``, runtime/validate.py): by Cauchy-Schwarz every
entry satisfies |out_ij| ≤ ‖a_i‖ ‖b_j‖ ≤ ‖a‖_F ‖b‖_F, and the computed sum of K terms is
within a factor (1 + u)^K ≤ 2 of that (K < 2^22, u the unit roundoff), so finite
operands with ‖a‖_F ‖b‖_F < max/2 make every entry finite. The sums of squares are taken
in float64 and carry NaN and ±inf through (a non-finite or overflowing norm fails the
test). Where the test fails (non-finite operands, or values large enough that the product
might overflow) the output is scanned as before: the driver returns whether every bound
held, and ``Program.run`` skips the scan of the ``bounded`` outputs only then.
"""

from __future__ import annotations

from symcurv.codegen.lower import Lowered
from symcurv.codegen.schedule import Plan
from symcurv.ops import REGISTRY
from symcurv.ops import lowering as lw

FLAG = "nonfinite"  # the driver's variable: did a guarded product hold NaN or ±inf?
CHECK = "all_finite_flat"  # runtime/validate.py: the compiled scan the guard calls
BOUND_FLAG = "bounded"  # the driver's variable: did every bounded output's operands pass?
BOUND = "product_bounded"  # runtime/validate.py: ‖a‖_F ‖b‖_F < max/2 with a, b finite
MAX_TERMS = 1 << 22  # (1 + u)^K ≤ 2 for float32's u = 2^-24 up to K = 2^22 terms


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


def bounded_outputs(low: Lowered, plan: Plan) -> dict[str, tuple[str, str, str]]:
    """``{GEMM kernel: (output key, storage of a, storage of b)}``: each per-case output
    that one product out = a·b writes whole, where a and b hold fewer numbers per case
    than the output (a shared operand counts once, so in the limit of large B)."""
    g, st = low.graph, plan.storage
    written = {w: k for k in low.kernels for w in k.writes}
    bounded: dict[str, tuple[str, str, str]] = {}
    for key, nid in low.output_of.items():
        k, node = written.get(nid), g[nid]
        if key not in plan.out_plain or not node.batched or k is None:
            continue
        how = k.how
        if not isinstance(how, lw.Gemm) or k.pair is not None or k.paired:
            continue
        operands = [g[low.views.get(m.nid, m.nid)] for m in (how.a, how.b)]
        terms = how.a.rows if how.a.transpose else how.a.cols
        per_case = sum(n.size for n in operands if n.batched)
        if (
            all(n.id in st for n in operands)
            and isinstance(terms, int)
            and terms < MAX_TERMS
            and 2 * per_case < node.size
        ):
            bounded[k.name] = (key, *(st[n.id] for n in operands))
    return bounded


def bounded_keys(low: Lowered, plan: Plan) -> list[str]:
    """The outputs a program's driver bounds (manifest: ``bounded``)."""
    return sorted(key for key, _a, _b in bounded_outputs(low, plan).values())


def bound_line(key: str, a: str, b: str) -> str:
    """The driver's test that output ``key`` = a·b is finite (see the module docstring)."""
    flat = f"{a}.reshape(-1), {b}.reshape(-1)"  # numpy's reshape: any strides (θ as given)
    return f"{BOUND_FLAG} &= {BOUND}({flat})  # {key} finite: ‖{a}‖ ‖{b}‖ < max/2?"


def returns_doc(guarded: dict[str, list[str]], bounded: dict[str, tuple[str, str, str]]) -> str:
    """What a driver returns, for its docstring ("" when it returns nothing)."""
    leaves = sorted({x for names in guarded.values() for x in names})
    said = []
    if leaves:
        said.append(f"whether a product that reads {', '.join(leaves)} whole held NaN/inf")
    if bounded:
        keys = ", ".join(key for key, _a, _b in bounded.values())
        said.append(f"whether the operand bounds proved {keys} finite")
    return f" Returns {', then '.join(said)} (codegen/guards.py)." if said else ""
