"""Shared pieces of the optimizer tests.

- ``LeastSquares``: a numpy stand-in for a compiled Program (per-case loss
  f_b = ½(x_bᵀθ − t_b)², so G = H = XᵀX/B exactly) with the same methods and the same
  NonFiniteError behaviour. Its curvature products can be scaled by ``curvature_scale`` c
  (or replaced by a matrix), which puts ρ where a test needs it, and its loss can
  overflow past a "cliff" (max|θ| > ``cliff``), as a real exp would: the rules of HF are
  tested on it without compiling.
- ``linear_autoencoder``: the 8-4-2-4-8 deep linear autoencoder, compiled ONCE per session
  (Numba compile time dominates) with loss, grad, gnvp and sum_sq_grad, and data with a
  known covariance spectrum.
"""

from __future__ import annotations

import types

import numpy as np
import pytest

from symcurv import errors


class LeastSquaresState:
    def __init__(self, prog: LeastSquares, theta, batch) -> None:
        self.prog, self.theta, self.batch = prog, np.array(theta), batch

    def _product(self, v, kind: str) -> np.ndarray:
        self.prog.calls[kind] += 1
        c = self.prog.curvature_scale
        if np.ndim(c) == 2:  # an explicit curvature matrix, whatever the batch
            out = c @ v
        else:
            X = self.batch["x"]
            out = c * (X.T @ (X @ v)) / len(X)
        if not np.isfinite(out).all():
            raise errors.NonFiniteError(f"program '{kind}' produced a non-finite '{kind}'")
        return out

    def gnvp(self, v, damping: float = 0.0) -> np.ndarray:
        return self._product(v, "gnvp") + damping * v

    def hvp(self, v) -> np.ndarray:
        return self._product(v, "hvp")


class LeastSquares:
    """Linear regression f_b(θ) = ½(x_bᵀθ − t_b)², batches {"x": (B, n), "t": (B, 1)}."""

    dtype = np.dtype(np.float64)
    name = "least_squares"

    def __init__(
        self,
        n: int,
        curvature_scale: float = 1.0,
        cliff: float = np.inf,
        programs=("loss", "grad", "gnvp", "hvp", "sum_sq_grad"),
    ) -> None:
        self.n_params = n
        self.curvature_scale, self.cliff = curvature_scale, cliff
        self.programs = tuple(programs)
        self.calls = {"gnvp": 0, "hvp": 0}

    def init(self, seed=0) -> np.ndarray:
        return np.zeros(self.n_params)

    def _residual(self, theta, batch) -> np.ndarray:
        theta = np.asarray(theta)
        if not np.isfinite(theta).all():
            raise errors.NonFiniteError("theta is not finite")
        if np.abs(theta).max(initial=0.0) > self.cliff:
            raise errors.NonFiniteError("program 'loss' produced a non-finite 'objective'")
        with np.errstate(all="ignore"):
            return batch["x"] @ theta - batch["t"][:, 0]

    def grad_and_sum_sq_grad(self, theta, batch):
        """Like the compiled program: a non-finite result is a NonFiniteError."""
        r = self._residual(theta, batch)
        with np.errstate(all="ignore"):
            per_case = r[:, None] * batch["x"]  # ∇f_b = r_b x_b: fine for a numpy stand-in
            g = batch["x"].T @ r / len(r)
            out = float(0.5 * np.mean(r * r)), g, (per_case**2).sum(0)
        if not (np.isfinite(out[0]) and np.isfinite(out[1]).all() and np.isfinite(out[2]).all()):
            raise errors.NonFiniteError("program 'grad' produced a non-finite 'objective'")
        return out

    def loss(self, theta, batch) -> float:
        return self.grad_and_sum_sq_grad(theta, batch)[0]

    def grad(self, theta, batch):
        return self.grad_and_sum_sq_grad(theta, batch)[:2]

    def sum_sq_grad(self, theta, batch):
        return self.grad_and_sum_sq_grad(theta, batch)[2]

    def linearize(self, theta, batch) -> LeastSquaresState:
        self._residual(theta, batch)
        return LeastSquaresState(self, theta, batch)

    # closed forms the tests compare against
    def curvature(self, batch) -> np.ndarray:
        X = batch["x"]
        return X.T @ X / len(X)

    def minimiser(self, batch, l2: float = 0.0) -> np.ndarray:
        X, t = batch["x"], batch["t"][:, 0]
        return np.linalg.solve(self.curvature(batch) + l2 * np.eye(X.shape[1]), X.T @ t / len(X))


def least_squares_data(n: int, cases: int = 200, condition: float = 1e3, seed: int = 0):
    """Inputs with singular values spread over ``condition`` (so CG needs many iterations)
    and noisy linear targets."""
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    scales = np.logspace(0, -0.5 * np.log10(condition), n)
    X = rng.normal(size=(cases, n)) @ (Q * scales) @ Q.T
    t = X @ rng.normal(size=n) + 0.1 * rng.normal(size=cases)
    return {"x": X, "t": t[:, None]}


@pytest.fixture
def ls():
    """``ls.Program(n, ...)`` and ``ls.data(n, ...)``: the numpy least-squares stand-in."""
    return types.SimpleNamespace(Program=LeastSquares, data=least_squares_data)


# -- the compiled deep linear autoencoder -----------------------------------------------------
AE_SIZES = (8, 4, 2, 4, 8)
AE_CODE = 2  # the bottleneck: the optimum keeps the top AE_CODE principal directions


def linear_autoencoder():
    import symcurv as sc

    m = sc.Model("linear_ae")
    x = m.input("x", AE_SIZES[0])
    h = x
    for i, (n_in, n_out) in enumerate(zip(AE_SIZES, AE_SIZES[1:])):
        W = m.param(f"W{i}", (n_out, n_in), init=sc.init.normal(0.3))
        h = W @ h  # identity activations, no biases
    m.minimize(sc.losses.squared_error(h, x))
    return m


def autoencoder_data(cases: int, seed: int) -> np.ndarray:
    """Cases x = Q diag(√σ) z, z ~ N(0, I): second moment ≈ Q diag(σ) Qᵀ, a clear gap
    between the kept (σ₁, σ₂) and the discarded directions."""
    sigma = np.array([9.0, 5.0, 1.0, 0.7, 0.5, 0.3, 0.2, 0.1])
    Q, _ = np.linalg.qr(np.random.default_rng(1234).normal(size=(8, 8)))  # one distribution
    return np.random.default_rng(seed).normal(size=(cases, 8)) * np.sqrt(sigma) @ Q.T


@pytest.fixture(scope="session")
def autoencoder(tmp_path_factory):
    """``.prog``, the compiled linear autoencoder; ``.train`` and ``.test``, two data sets
    of one distribution; ``.code``, the bottleneck width."""
    import symcurv as sc

    prog = sc.compile(
        linear_autoencoder(),
        programs=("loss", "grad", "gnvp", "hvp", "sum_sq_grad"),
        build_dir=tmp_path_factory.mktemp("optim") / "linear_ae",
        progress=False,
    )
    return types.SimpleNamespace(
        prog=prog,
        train={"x": autoencoder_data(400, 0)},
        test={"x": autoencoder_data(200, 1)},
        code=AE_CODE,
    )
