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
    Gather(operands, r, c) the output (per case r × c, row-major) computed by a short loop
                          nest the op writes (a convolution), for a span of one row's
                          columns: a whole row per CPU iteration, one element per CUDA thread

``kind`` is the kernel kind the lowering and the emitters dispatch on, ``template`` the name
printed in the generated comment.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

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
    """An output of ``rows × cols`` per case (row-major), computed by a loop nest the op writes.

    ``body(io)`` returns Python source lines (plain loops, integer arithmetic, ``min``/``max``,
    1-D slices; valid in ``@njit`` and ``@cuda.jit`` code alike) that compute the columns
    ``io.c0 <= c < io.c1`` of output row ``r`` of case ``i``. ``io.c0``/``io.c1`` are source
    expressions the emitter chooses: the whole row on the CPU (``0``, ``cols``: one
    iteration per (case, row) pair, so the op's innermost loop runs over contiguous
    columns and vectorises), one element on CUDA (``c``, ``c + 1``: one thread each). The
    body reaches its buffers only through ``io``:

        io.read(k, index)        operand k's element at a flat per-case index
        io.span(k, start, n)     operand k's n elements from ``start``, a 1-D view
        io.out(index)            the output element at a flat per-case index (assignable)
        io.out_span(start, n)    the output's n elements from ``start``, a 1-D view

    (``buf[i, …]`` for a per-case buffer, ``buf[…]`` for a shared one). Local names must
    not collide with ``i``, ``r``, ``c``, ``ir``, ``irc``, ``B`` or buffer names (``s0``,
    ``p_W``, ``in_x``, ``out_*``, ``v_W``). The output is per case when any operand is."""

    operands: tuple[str, ...]
    rows: int
    cols: int
    body: Callable[[Any], list[str]]
    kind = "gather"
    template = "gather"

    @property
    def size(self) -> int:
        """Output elements per case."""
        return self.rows * self.cols


Lowering = Gemm | PerCaseMatvec | Outer | Transpose | Fill | Reduce | Gather
