"""``State``: one (θ, batch) linearisation point, reused by many curvature products.

Hessian-free optimisation calls ``gnvp`` hundreds of times on one minibatch (Martens 2010,
§4). Each product program is split (passes/split.py) into a static part — the forward pass
and every backward quantity that does not depend on v — and a dynamic part. A State runs
each static part once, on first use, and keeps its values; every product afterwards runs
only the dynamic part. Inputs are checked once, at ``prog.linearize``.

On the cuda backend θ, the batch and the cached values live on the device, and CP noise is
drawn there (runtime/noise.py): a product moves only v in and its result out.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from symcurv import errors
from symcurv.runtime import noise as noise_module

NOISES = ("rademacher", "gaussian")
CP_ESTIMATORS = ("S", "TU", "HI", "GN")


class State:
    """Returned by ``prog.linearize(theta, batch)``; see the module docstring."""

    def __init__(self, prog, theta, batch: Mapping[str, np.ndarray]) -> None:
        self.prog = prog
        self.theta = prog._check_theta(theta).copy()
        names = list(prog.inputs)
        # copies: a State answers for the batch it was given, even when the caller refills
        # the same buffer afterwards (the usual data-loader pattern)
        arrays = prog._check_batch({"leaves": names}, batch, copy=True)
        self.batch = dict(zip(names, arrays))
        self.batch_size = arrays[0].shape[0] if arrays else 1
        self._cache: dict[str, dict[str, np.ndarray]] = {}
        self._resident: tuple | None = None  # (θ, batch) in the backend's memory
        self._grad: tuple[float, np.ndarray] | None = None
        self._loss: float | None = None

    def __repr__(self) -> str:
        return (
            f"<symcurv State of '{self.prog.name}': {self.batch_size} cases, "
            f"cached programs {sorted(self._cache) or 'none yet'}>"
        )

    # -- cached quantities ----------------------------------------------------------------
    @property
    def loss(self) -> float:
        """The mean loss at (θ, batch)."""
        if self._loss is None:
            if self._grad is not None or "loss" not in self.prog.programs:
                self._loss = self.grad()[0]
            else:
                self._loss = float(self._run("loss")["objective"][0])
        return self._loss

    def grad(self) -> tuple[float, np.ndarray]:
        """``(loss, ∇θ loss)``, computed on the first call."""
        if self._grad is None:
            out = self._run("grad")
            self._grad = (float(out["objective"][0]), out["grad"])
            self._loss = self._grad[0]
        return self._grad[0], self._grad[1].copy()

    def _on_backend(self) -> tuple:
        """(θ, batch) where the programs run: copied to the device once (cuda)."""
        if self._resident is None:
            to = self.prog._to_backend
            self._resident = (to(self.theta), {k: to(a) for k, a in self.batch.items()})
        return self._resident

    def _statics(self, prog: str) -> dict[str, np.ndarray]:
        if prog not in self._cache:
            p = self.prog
            theta, batch = self._on_backend()
            if prog not in p._modules:
                p._run(prog, theta, batch, check=False)  # raises the right error
            static = p.manifest["programs"][prog].get("static")
            kept = p._run(static, theta, batch, check=False, keep=True) if static else {}
            self._cache[prog] = kept
        return self._cache[prog]

    def _run(self, prog: str, v=None, noise=None) -> dict[str, np.ndarray]:
        extras = dict(self._statics(prog))
        extras.update(noise or {})
        theta, batch = self._on_backend()
        out = self.prog._run(prog, theta, batch, check=False, v=self._v(v), extras=extras)
        for k, o in out.items():
            if not np.isfinite(o).all():
                self.prog._non_finite(prog, k, self.theta, self.batch, v, noise)
        return out

    def _v(self, v):
        if v is None:
            return None
        v = np.ascontiguousarray(self.prog._check_vector(v, "v"), dtype=self.prog.dtype)
        if not np.isfinite(v).all():
            raise errors.NonFiniteError(
                f"v[{int(np.flatnonzero(~np.isfinite(v))[0])}] is not finite",
                where=f"model '{self.prog.name}'",
                fix="pass a finite direction v",
            )
        return v

    # -- products ---------------------------------------------------------------------------
    def hvp(self, v: np.ndarray) -> np.ndarray:
        """H v at this point (no forward recomputation after the first product)."""
        return self._run("hvp", v)["hvp"]

    def gnvp(self, v: np.ndarray, damping: float = 0.0) -> np.ndarray:
        """G v + damping·v at this point (no forward recomputation after the first)."""
        damping = self.prog._check_damping(damping)
        gv = self._run("gnvp", v)["gnvp"]
        if damping:
            gv += damping * np.asarray(v, dtype=self.prog.dtype)
        return gv

    def cp_diag(
        self,
        estimator: str = "S",
        noise: str = "rademacher",
        samples: int = 1,
        seed: int | None = None,
    ) -> np.ndarray:
        """Curvature Propagation estimate of diag(H), the mean of ``samples`` draws.

        S, TU: one draw injects independent noise at every curved node of every case
        (a rank-B estimate per draw); GN: noise at the losses only, estimating diag(G)
        (Chapelle-Erhan); HI: Hutchinson, (H w) ⊙ w with w ~ noise in θ-space through
        ``hvp`` (rank one per draw: the simple estimator CP is compared against).

        The noise is counter-based (runtime/noise.py): draw d of noise leaf s is a pure
        function of (seed, d, s), so the same seed gives the same estimate on cpu and cuda;
        ``seed``: an integer, a list of integers (hashed), or None for a fresh seed from the
        operating system on every call.
        """
        if estimator not in CP_ESTIMATORS:
            raise errors.ModelError(
                f"unknown cp_diag estimator {estimator!r}",
                where=f"model '{self.prog.name}'",
                fix=f"choose one of {', '.join(CP_ESTIMATORS)}",
            )
        if noise not in NOISES:
            raise errors.ModelError(
                f"unknown noise {noise!r}",
                where=f"model '{self.prog.name}'",
                fix=f"choose one of {', '.join(NOISES)} (Rademacher has lower variance)",
            )
        if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or samples < 1:
            raise errors.ModelError(
                f"samples = {samples!r}",
                where=f"model '{self.prog.name}'",
                fix="pass a positive integer number of noise draws per case",
            )
        try:
            seed_key = noise_module.key(seed)  # None: a fresh seed per call
        except (TypeError, ValueError):
            raise errors.ModelError(
                f"seed = {seed!r} ({type(seed).__name__})",
                where=f"model '{self.prog.name}'",
                fix="pass a non-negative integer (taken mod 2**64), a list of non-negative "
                "integers, or None for a fresh seed",
            ) from None
        p = self.prog
        if estimator == "HI":
            total = np.zeros(p.n_params, dtype=p.dtype)
            for d in range(samples):
                w = noise_module.draw_cpu(p.n_params, p.dtype, seed_key, d, 0, noise)
                total += self.hvp(w) * w
            return total / samples
        prog = f"cp_{estimator}"
        self._statics(prog)
        spec = p.manifest["programs"][prog]
        B = self.batch_size
        leaves = [
            (name, (B, size) if batched else (size,))
            for name, batched, size in spec.get("extras", [])
            if not name.startswith("cache")
        ]
        total = np.zeros(p.n_params, dtype=p.dtype)
        for d in range(samples):
            # draw d, stream s: leaf s's noise, on the device where the program runs
            z = {
                name: p._noise(shape, seed_key, d, s, noise)
                for s, (name, shape) in enumerate(leaves)
            }
            total += self._run(prog, noise=z)[prog]
        return total / samples

    def becker_lecun_diag(self) -> np.ndarray:
        """Becker & LeCun's deterministic (biased) diagonal at this point."""
        return self._run("becker_lecun")["bl"]
