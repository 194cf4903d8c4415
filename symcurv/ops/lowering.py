"""How a non-elementwise op becomes a kernel: the descriptions ops register beside their rules.

An op's ``lower(graph, node)`` rule returns one of these; ``codegen.lower`` turns it into a
kernel and each emitter prints it with one printer per description, never per op (as
PyTensor's ops register their Numba implementation beside their family). Elementwise ops
need none: their ``scalar`` formula is fused into map kernels.

    Gemm(a, b, out)       out = op(a) · op(b): one BLAS call (CPU) or one tiled GEMM (CUDA)
    PerCaseMatvec(W, h)   y_b = W_b h_b with a per-case matrix W_b: a loop of matrix-vectors
    Outer(u, v)           y = u vᵀ (per case when either is): an element loop
    Transpose(x)          a transpose written out (a view, folded into GEMM flags, otherwise)
    Fill(value)           a constant written into a buffer
    Reduce(name)          one of the emitters' reduction loops (sum_features, logsumexp,
                          batch_sum, batch_mean)
    Gather(operands, n)   out[i, e] of every case i and output element e computed by a short
                          loop the op writes (a convolution): one thread per (i, e) pair

``kind`` is the kernel kind the lowering and the emitters dispatch on, ``template`` the name
printed in the generated comment.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

# GEMM operand rows: the number of cases (a per-case value stored as a (B, size) array)
CASES = "B"


@dataclasses.dataclass(frozen=True)
class Mat:
    """A GEMM operand: node ``nid`` read as a ``rows × cols`` matrix, transposed or not.
    ``rows == CASES``: the stored (B, size) array of a per-case value, cases as rows."""

    nid: str
    rows: int | str
    cols: int
    transpose: bool = False


@dataclasses.dataclass(frozen=True)
class Gemm:
    """out = op(a) · op(b) into a preallocated buffer."""

    a: Mat
    b: Mat
    out: Mat
    kind = "gemm"
    template = "gemm"


@dataclasses.dataclass(frozen=True)
class PerCaseMatvec:
    """y_b = W_b h_b (h shared or per case) for a per-case ``rows × cols`` matrix W_b."""

    W: str
    h: str
    rows: int
    cols: int
    kind = "gemm"
    template = "gemm"


@dataclasses.dataclass(frozen=True)
class Outer:
    """y = u vᵀ, an ``m × n`` matrix, per case when u or v is."""

    u: str
    v: str
    m: int
    n: int
    kind = "gemm"
    template = "gemm"


@dataclasses.dataclass(frozen=True)
class Transpose:
    """y = xᵀ written out, x an ``rows × cols`` matrix (per case or shared)."""

    x: str
    rows: int
    cols: int
    kind = "copy"
    template = "transpose"


@dataclasses.dataclass(frozen=True)
class Fill:
    """A constant written into a buffer (one read by a non-map kernel)."""

    value: float
    kind = "fill"
    template = "fill"


@dataclasses.dataclass(frozen=True)
class Reduce:
    """One of the emitters' reduction loops, by name."""

    name: str
    kind = "reduce"

    @property
    def template(self) -> str:
        return self.name


@dataclasses.dataclass(frozen=True)
class Gather:
    """Each output element is a short loop over the operands, written by the op itself.

    ``body(read)`` returns ``(lines, result)``: Python source lines (plain loops, integer
    arithmetic, ``min``/``max``; valid in ``@njit`` and ``@cuda.jit`` code alike) that
    compute output element ``e`` of case ``i`` into the expression ``result``, reading
    operand k's element at a flat per-case index through ``read(k, index)`` (which the
    emitter turns into ``buf[i, index]`` or, for a shared operand, ``buf[index]``). Local
    names must not collide with ``i``, ``e``, ``ie``, ``B`` or buffer names (``s0``, ``p_W``,
    ``in_x``, ``out_*``, ``v_W``). The output is per case when any operand is."""

    operands: tuple[str, ...]
    size: int
    body: Callable[[Callable[[int, str], str]], tuple[list[str], str]]
    kind = "gather"
    template = "gather"


Lowering = Gemm | PerCaseMatvec | Outer | Transpose | Fill | Reduce | Gather
