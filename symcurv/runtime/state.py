"""``State``: one (θ, batch) linearisation point, reused by many curvature products.

Hessian-free optimisation calls ``gnvp`` hundreds of times on one minibatch (Martens 2010,
§4). Each product program is split (passes/split.py) into a static part — the forward pass
and every backward quantity that does not depend on v — and a dynamic part. A State runs
each static part once, on first use, and keeps its values; every product afterwards runs
only the dynamic part. Inputs are checked once, at ``prog.linearize``.

On the cuda backend θ, the batch and the cached values live on the device, and CP noise is
drawn there (runtime/noise.py): a product moves only v in and its result out.

A State reaches its Program only through the public seam (docs/architecture.md):
``prog.run``, ``prog.checks``, ``prog.device``, ``prog.built``, ``prog.spec`` and
``prog.raise_non_finite``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from symcurv import errors
from symcurv.runtime import case_expansion, model_leaves, per_case
from symcurv.runtime import noise as noise_module
from symcurv.runtime.validate import all_finite

NOISES = ("rademacher", "gaussian")
CP_ESTIMATORS = ("S", "TU", "HI", "GN")


class LossValue(float):
    """A float that can also be called: ``State.loss`` is read as ``st.loss()`` (the form
    of every other State and Program quantity) and, for older code, as ``st.loss``."""

    def __call__(self) -> float:
        """The loss as a plain float."""
        return float(self)

    def __repr__(self) -> str:
        return float.__repr__(self)


class State:
    """Returned by ``prog.linearize(theta, batch)``; see the module docstring."""

    def __init__(
        self, prog, theta, batch: Mapping[str, np.ndarray], seed=None, case_numbers=None
    ) -> None:
        self.prog = prog
        self.theta = prog.checks.theta(theta).copy()
        case_expansion.check_state(prog, batch)  # the exact SM diagonal's B·D rows
        names = list(prog.inputs)
        # copies: a State answers for the batch it was given, even when the caller refills
        # the same buffer afterwards (the usual data-loader pattern)
        arrays = prog.checks.batch(names, batch, copy=True)
        self.batch = dict(zip(names, arrays))
        self.batch_size = arrays[0].shape[0] if arrays else 1
        self._cache: dict[str, dict[str, np.ndarray]] = {}
        self._resident: tuple | None = None  # (θ, batch) in the backend's memory
        self._grad: tuple[float, np.ndarray] | None = None
        self._loss: float | None = None
        # the number of each case in the batch whose CP noise it draws (None: 0 .. B − 1);
        # a shard of a larger batch passes its cases' numbers (sc.distributed), and then
        # draws exactly those rows of the larger batch's noise (noise.draw_rows), the
        # model's own noise included
        self.case_numbers: np.ndarray | None = case_numbers
        # a model's own noise (CP score matching) is drawn once: fixed for this State
        key = model_leaves.seed_key(prog, seed)
        self._model_leaves = model_leaves.values(prog, self.batch_size, key, rows=case_numbers)

    def __repr__(self) -> str:
        return (
            f"<symcurv State of '{self.prog.name}': {self.batch_size} cases, "
            f"cached programs {sorted(self._cache) or 'none yet'}>"
        )

    # -- cached quantities ----------------------------------------------------------------
    @property
    def loss(self) -> LossValue:
        """``st.loss()``: the mean loss at (θ, batch), computed once. Called like every
        other State quantity (and like ``Program.loss``); the older property spelling
        ``st.loss`` gives the same number (a float that is also callable)."""
        if self._loss is None:
            if self._grad is not None or "loss" not in self.prog.programs:
                self._loss = self.grad()[0]
            else:
                self._loss = float(self._run("loss")["objective"][0])
        return LossValue(self._loss)

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
            p = self.prog
            to = lambda a: p.device.to_backend(a, p.dtype)  # noqa: E731
            self._resident = (to(self.theta), {k: to(a) for k, a in self.batch.items()})
        return self._resident

    def _statics(self, prog: str) -> dict[str, np.ndarray]:
        if prog not in self._cache:
            p = self.prog
            theta, batch = self._on_backend()
            if not p.built(prog):
                p.run(prog, theta, batch, check=False)  # raises the right error
            static = p.spec(prog).get("static")
            kept = p.run(static, theta, batch, check=False, keep=True) if static else {}
            self._cache[prog] = kept
        return self._cache[prog]

    def _run(self, prog: str, v=None, extras=None) -> dict[str, np.ndarray]:
        """Run ``prog``'s dynamic part on the cached static values; ``extras``: CP noise or
        input directions by leaf name."""
        args = dict(self._statics(prog))
        args.update(extras or {})
        args.update(self._model_leaves)
        theta, batch = self._on_backend()
        v = None if v is None else self.prog.checks.direction(v)
        out = self.prog.run(prog, theta, batch, check=False, v=v, extras=args)
        for k, o in out.items():
            if not all_finite(o):
                host = {n: self.prog.device.to_host(a) for n, a in (extras or {}).items()}
                self.prog.raise_non_finite(prog, k, self.theta, self.batch, v, host)
        return out

    def _input(self, wrt: str | None) -> str:
        return per_case.input_name(self.prog.inputs, wrt, self.prog.name)

    # -- products ---------------------------------------------------------------------------
    def hvp(self, v: np.ndarray) -> np.ndarray:
        """H v at this point (no forward recomputation after the first product)."""
        return self._run("hvp", v)["hvp"]

    def gnvp(self, v: np.ndarray, damping: float = 0.0) -> np.ndarray:
        """G v + damping·v at this point (no forward recomputation after the first)."""
        damping = self.prog.checks.damping(damping)
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
        seed_key = self._check_draws(noise, samples, seed)
        p = self.prog
        if estimator == "HI":
            total = np.zeros(p.n_params, dtype=p.dtype)
            for d in range(samples):
                w = noise_module.draw_cpu(p.n_params, p.dtype, seed_key, d, 0, noise)
                total += self.hvp(w) * w
            return total / samples
        prog = f"cp_{estimator}"
        return self._mean_of_draws(prog, prog, samples, seed_key, noise)

    def _check_draws(self, noise: str, samples, seed) -> tuple[int, int]:
        """Validate a CP call's noise kind, sample count and seed; the seed's key."""
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
            return noise_module.key(seed)  # None: a fresh seed per call
        except (TypeError, ValueError):
            raise errors.ModelError(
                f"seed = {seed!r} ({type(seed).__name__})",
                where=f"model '{self.prog.name}'",
                fix="pass a non-negative integer (taken mod 2**64), a list of non-negative "
                "integers, or None for a fresh seed",
            ) from None

    def _mean_of_draws(self, prog: str, result: str, samples: int, seed_key, noise: str):
        """The mean over ``samples`` draws of a CP program's ``result``: draw d fills noise
        leaf s with stream s of (seed, d), on the device where the program runs."""
        p = self.prog
        self._statics(prog)
        B = self.batch_size
        leaves = [
            (name, (B, size) if batched else (size,))
            for name, batched, size in p.extra_leaves(p.spec(prog), "noise")
        ]
        total = None
        for d in range(samples):
            z = {
                name: self._noise(shape, seed_key, d, s, noise)
                for s, (name, shape) in enumerate(leaves)
            }
            r = self._run(prog, extras=z)[result]
            total = r if total is None else total + r
        return total / samples

    def _noise(self, shape, seed_key, draw: int, stream: int, kind: str):
        """One noise leaf of one draw: drawn on the backend, or, for a batched leaf when
        ``case_numbers`` is set, rows ``case_numbers`` of the whole batch's noise (drawn on
        the host and copied: the case-number seam serves sc.distributed's CPU workers)."""
        p = self.prog
        if self.case_numbers is None or len(shape) == 1:
            return p.device.noise(shape, p.dtype, seed_key, draw, stream, kind)
        rows = noise_module.draw_rows(
            self.case_numbers, shape[1], p.dtype, seed_key, draw, stream, kind
        )
        return p.device.to_backend(rows, p.dtype)

    def becker_lecun_diag(self) -> np.ndarray:
        """Becker & LeCun's deterministic (biased) diagonal at this point."""
        return self._run("becker_lecun")["bl"]

    # -- derivatives with respect to the data (per case, f_b not divided by B) ---------------
    def input_grad(self, wrt: str | None = None) -> np.ndarray:
        """∂f_b/∂x_b for every case: ``(B, D)``, x the input ``wrt``."""
        x = self._input(wrt)
        return self._run("input_grad")[per_case.input_key("input_grad", x)]

    def input_hvp(self, V: np.ndarray, wrt: str | None = None) -> np.ndarray:
        """(∇²_x f_b) V_b for every case: ``(B, D)``; ``V`` is ``(B, D)``, one direction per
        case (no forward recomputation after the first product)."""
        x = self._input(wrt)
        V = self.prog.checks.input_direction(V, x, self.batch_size)
        return self._input_products(x, V)

    def input_diag_hessian(
        self,
        wrt: str | None = None,
        method: str = "exact",
        samples: int = 1,
        seed=None,
        noise: str = "rademacher",
    ) -> np.ndarray:
        """diag(∇²_x f_b) for every case: ``(B, D)``.

        ``method``: "exact" — one input-HVP along each coordinate e_i (D products on the
        cached forward pass; no per-case D×D matrix is formed); "becker_lecun" — the
        deterministic diagonal recursion (biased unless one nonlinear layer separates x from
        a linear sum); "S" / "TU" — Curvature Propagation with noise at every node, the
        mean of ``samples`` draws, unbiased for each case (``seed`` as for ``cp_diag``).
        """
        x = self._input(wrt)
        key = lambda r: per_case.input_key(r, x)  # noqa: E731
        if method == "exact":
            B, D = self.batch_size, self.prog.inputs[x]["size"]
            d = np.empty((B, D), dtype=self.prog.dtype)
            e = np.zeros((B, D), dtype=self.prog.dtype)
            for i in range(D):
                e[:, i] = 1.0
                d[:, i] = self._input_products(x, e)[:, i]
                e[:, i] = 0.0
            return d
        if method == "becker_lecun":
            return self._run("input_bl")[key("input_bl")]
        if method in ("S", "TU"):
            seed_key = self._check_draws(noise, samples, seed)
            prog = f"input_diag_{method}"
            return self._mean_of_draws(prog, key(prog), samples, seed_key, noise)
        raise errors.ModelError(
            f"unknown input_diag_hessian method {method!r}",
            where=f"model '{self.prog.name}'",
            fix="choose one of exact, becker_lecun, S, TU",
        )

    def _input_products(self, x: str, V) -> np.ndarray:
        """Run input_hvp with direction V on input x and zero on every other input."""
        p = self.prog
        spec = p.spec("input_hvp") if p.built("input_hvp") else None
        dirs = {}
        for name, _b, size in self.prog.extra_leaves(spec or {}, "direction"):
            dirs[name] = V if name == f"V_{x}" else np.zeros((self.batch_size, size), p.dtype)
        dirs = {k: p.device.to_backend(a, p.dtype) for k, a in dirs.items()}
        out = self._run("input_hvp", extras=dirs)[per_case.input_key("input_hvp", x)]
        return np.array(p.device.to_host(out))

    def per_case_grad(self) -> np.ndarray:
        """(B, n_params): ∇f_b per case at this point, NOT divided by B (see
        :meth:`Program.per_case_grad`)."""
        out = self._run("per_case_grad")
        p = self.prog
        return per_case.rows(out, p.params, p.n_params, self.batch_size, p.dtype)

    def per_case_grad_norm(self) -> np.ndarray:
        """(B,): ‖∇f_b‖ per case without forming the per-case gradients (see
        :meth:`Program.per_case_grad_norm`)."""
        return per_case.norms(self._run("per_case_grad_norm"))
