"""Local curvature of one node, as factors Curvature Propagation can inject noise through.

For node i with output cotangent ḡ (the gradient w.r.t. its output), the local curvature
is the Hessian of ḡᵀ f_i w.r.t. the node's inputs (CP paper §2, DESIGN.md §3):

    M_i = Σ_q ḡ_q ∇²_{x_i} y_{i,q}

Each op's ``curvature`` rule (registered beside its vjp) returns M_i as a list of terms
whose sum is M_i. Every term says how to multiply a noise vector z by a factor F with
F Fᵀ = (its block of) M_i, so that the transforms never look inside an op:

    Diag(i, m)               M[i, i] = diag(m)          F = diag(√m)   (complex where m < 0)
    Coupling(i, j, C)        M[i, j] = C, M[j, i] = Cᵀ  F = (1/√2) [[C, iC], [I, −iI]]
                             (noise in input j's space; ``apply(z) = C z``)
    Factored(i, c, A)        M[i, i] = c · A Aᵀ         F = √c · A     (c a per-case scalar)

The coupling factor is exact: F Fᵀ (transpose, not conjugate) = [[0, C], [Cᵀ, 0]]. Terms
carry ``diag`` (the diagonal of their block) for Becker-LeCun's deterministic sweep.
Linear ops (sums, broadcasts, transposes) have no curvature: rule ``linear``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import sympy

from symcurv.ir.graph import Graph
from symcurv.symbolic import local

Apply = Callable[[Graph, str], str]

_z = local.real_symbols("z")[0]
# √max(±m, 0): the real and imaginary parts of the principal square root of a real m.
# Written piecewise so that the derivative is 0 where the root is 0 (score matching
# differentiates CP's S estimate again; sqrt(Max(m, 0))' is Heaviside(m)/(2·√0) = NaN
# there): one branch is evaluated, so nothing divides by zero.
_sqrt_pos = sympy.Piecewise((sympy.sqrt(_z), _z > 0), (0, True))
local.define("sqrt_pos", _sqrt_pos, (_z,), origin="symcurv CP factor")
local.define("sqrt_neg", _sqrt_pos.xreplace({_z: -_z}), (_z,), origin="symcurv CP factor")


@dataclasses.dataclass
class Diag:
    """M[i, i] = diag(m); ``m`` has input i's shape and is per case when the node is."""

    i: int
    m: str


@dataclasses.dataclass
class Coupling:
    """M[i, j] = C (and M[j, i] = Cᵀ): the off-diagonal block of a bilinear coupling.
    ``apply(g, z)`` builds C z for z shaped like ``noise_shape`` (input j's space)."""

    i: int
    j: int
    noise_shape: tuple[int, ...]
    apply: Apply


@dataclasses.dataclass
class Factored:
    """M[i, i] = c · A Aᵀ with A real: ``factor(g, z)`` builds A z for z shaped like
    ``noise_shape``; ``diag(g)`` builds diag(A Aᵀ); ``c`` is a (per-case) scalar node that
    may be negative (then √c is imaginary)."""

    i: int
    c: str
    noise_shape: tuple[int, ...]
    factor: Apply
    diag: Callable[[Graph], str]


Term = Diag | Coupling | Factored


def linear(g: Graph, node, cot: str) -> list[Term]:
    """The curvature rule of a linear op: M_i = 0."""
    return []
