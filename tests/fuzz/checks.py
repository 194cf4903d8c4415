"""Numerical helpers of the fuzz properties: flat parameter vectors, dense matrices
assembled from products, central differences and the Gauss-Newton oracle.

Everything here evaluates graphs with the reference interpreter
(``symcurv.runtime.reference``); the oracles use only the FORWARD graph (central
differences of its values) and the user's own scalar definitions of the losses, never a
transform.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import sympy

from symcurv.ir.graph import Graph
from symcurv.runtime.reference import evaluate
from symcurv.symbolic import local


def params(forward: Graph):
    return forward.leaves("param")


def flat(forward: Graph, values: Mapping[str, np.ndarray]) -> np.ndarray:
    """Per-parameter arrays (broadcast to the parameter's shape) as one vector in
    declaration order, each parameter in C order (the layout of a compiled θ)."""
    return np.concatenate(
        [np.broadcast_to(values[p.name], p.shape).ravel() for p in params(forward)]
    )


def unflat(forward: Graph, vec: np.ndarray) -> dict[str, np.ndarray]:
    out, k = {}, 0
    for p in params(forward):
        out[p.name] = vec[k : k + p.size].reshape(p.shape)
        k += p.size
    return out


def with_theta(forward: Graph, vals: Mapping, theta: np.ndarray) -> dict[str, np.ndarray]:
    return {**vals, **unflat(forward, theta)}


def objective(forward: Graph, vals: Mapping, theta: np.ndarray) -> float:
    return float(evaluate(forward, with_theta(forward, vals, theta), ["objective"])["objective"])


def prefixed(g: Graph, forward: Graph, vals: Mapping, prefix: str, theta, v=None) -> np.ndarray:
    """The ``<prefix>:<param>`` outputs of ``g`` as one flat vector (a direction ``v`` bound
    as ``"v:<param>"``)."""
    leaves = with_theta(forward, vals, theta)
    if v is not None:
        leaves.update({f"v:{k}": a for k, a in unflat(forward, v).items()})
    keys = [f"{prefix}:{p.name}" for p in params(forward)]
    got = evaluate(g, leaves, keys)
    return flat(forward, {k.split(":", 1)[1]: got[k] for k in keys})


def dense(g: Graph, forward: Graph, vals: Mapping, prefix: str, theta) -> np.ndarray:
    """The matrix A of a product graph (H for hvp, G for gnvp), column j = A e_j."""
    n = theta.size
    cols = [prefixed(g, forward, vals, prefix, theta, np.eye(n)[j]) for j in range(n)]
    return np.stack(cols, axis=1)


def central_gradient(forward: Graph, vals: Mapping, theta, h: float = 1e-5) -> np.ndarray:
    """∂objective/∂θ_j by central differences of the forward graph."""
    e = np.eye(theta.size)
    up = [objective(forward, vals, theta + h * e[j]) for j in range(theta.size)]
    dn = [objective(forward, vals, theta - h * e[j]) for j in range(theta.size)]
    return (np.array(up) - np.array(dn)) / (2 * h)


def central_diagonal(forward: Graph, vals: Mapping, theta, h: float = 1e-3) -> np.ndarray:
    """∂²objective/∂θ_j² by the five-point stencil on the forward graph: truncation error
    h⁴ f⁽⁶⁾/90 ≈ 1e-14, rounding ≈ 3 ε |f| / h² ≈ 7e-10 |f|."""
    e = np.eye(theta.size)
    out = []
    for j in range(theta.size):
        f = [objective(forward, vals, theta + k * h * e[j]) for k in (-2, -1, 0, 1, 2)]
        out.append((-f[0] + 16 * f[1] - 30 * f[2] + 16 * f[3] - f[4]) / (12 * h * h))
    return np.array(out)


def _loss_hessian(node, y: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Per-case Hessian of a loss node w.r.t. its first operand, (B, m, m): a separable
    loss's ℓ''(y, t) by ``sympy.diff`` of the user's scalar expression; softmax
    cross-entropy (Σ_k t_k)(diag(p) − p pᵀ) written out here."""
    if node.op == "separable_loss":
        fn = local.FUNCTIONS[node.attr("fn")]
        ys, ts = fn.symbols
        # the stable softplus is written with |y|: its DiracDelta terms are 0 almost
        # everywhere (as in tests/oracle.py)
        d2 = sympy.diff(fn.expr, ys, 2).replace(sympy.DiracDelta, lambda *a: sympy.S.Zero)
        d2 = sympy.lambdify([ys, ts], d2, modules=["numpy", "scipy"])
        return np.stack([np.diag(np.broadcast_to(d2(yb, tb), yb.shape)) for yb, tb in zip(y, t)])
    assert node.op == "softmax_cross_entropy", node.op
    p = np.exp(y - y.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    return t.sum(axis=1)[:, None, None] * (
        np.einsum("bk,kl->bkl", p, np.eye(y.shape[1])) - np.einsum("bk,bl->bkl", p, p)
    )


def gauss_newton_oracle(
    forward: Graph, vals: Mapping, theta, weights: list[float], h: float = 1e-6
) -> np.ndarray:
    """G = Σ_L c_L mean_b J_L,bᵀ H_L,b J_L,b for a model whose per-case loss is
    Σ_L c_L L(y_L, t_L), the loss nodes L in the order they were written and ``weights`` their
    c_L: J = ∂y/∂θ by central differences of the forward graph (error ≈ h² y⁽³⁾ + ε|y|/h
    ≈ 1e-10 relative), H_L from ``_loss_hessian``."""
    losses = [n for n in forward.nodes() if n.op in ("separable_loss", "softmax_cross_entropy")]
    assert len(losses) == len(weights), (losses, weights)
    e = np.eye(theta.size)
    base = evaluate(forward, with_theta(forward, vals, theta), keep_all=True)
    moved = [
        (
            evaluate(forward, with_theta(forward, vals, theta + h * e[j]), keep_all=True),
            evaluate(forward, with_theta(forward, vals, theta - h * e[j]), keep_all=True),
        )
        for j in range(theta.size)
    ]
    G = np.zeros((theta.size, theta.size))
    for L, c in zip(losses, weights):
        y_id, t_id = L.inputs
        y = base[y_id]
        t = np.broadcast_to(base[t_id], y.shape)
        cols = [np.broadcast_to((up[y_id] - dn[y_id]) / (2 * h), y.shape) for up, dn in moved]
        J = np.stack(cols, axis=2)  # (B, m, n)
        G += c * np.einsum("bki,bkl,blj->ij", J, _loss_hessian(L, y, t), J) / y.shape[0]
    return G


def noise_shapes(g: Graph, B: int) -> list[tuple[str, tuple[int, ...]]]:
    return [
        (n.name, ((B,) if n.attr("batched") else ()) + n.shape)
        for n in g.nodes()
        if n.op == "noise"
    ]


def exact_expectation(g: Graph, forward: Graph, vals: Mapping, prefix: str, theta) -> np.ndarray:
    """Σ_k estimate(e_k) over every unit noise vector e_k. Each CP estimate is a quadratic
    form zᵀ A z in all the noise of a draw, so this sum is tr A = E[estimate] for any noise
    with E[z zᵀ] = I: the exact expectation, no sampling error."""
    B = next(np.shape(v)[0] for k, v in vals.items() if np.ndim(v) == 2 and k in _data(forward))
    shapes = noise_shapes(g, B)
    sizes = [int(np.prod(s)) for _, s in shapes]
    leaves = with_theta(forward, vals, theta)
    keys = [f"{prefix}:{p.name}" for p in params(forward)]
    total = np.zeros(theta.size)
    for k in range(sum(sizes)):
        unit = np.zeros(sum(sizes))
        unit[k] = 1.0
        off = 0
        for (name, shape), size in zip(shapes, sizes):
            leaves[name] = unit[off : off + size].reshape(shape)
            off += size
        got = evaluate(g, leaves, keys)
        total += flat(forward, {key.split(":", 1)[1]: got[key] for key in keys})
    return total


def _data(forward: Graph) -> set[str]:
    return {n.name for n in forward.nodes() if n.op in ("input", "target")}


def rel_err(a, b) -> float:
    """‖a − b‖∞ / ‖b‖∞ (b = 0: the absolute error)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    scale = np.max(np.abs(b), initial=0.0)
    return float(np.max(np.abs(a - b), initial=0.0) / (scale if scale > 0 else 1.0))
