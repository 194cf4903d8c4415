"""``DistributedState``: a linearisation point whose cached forward pass stays on the workers.

``dp.linearize(θ, cases)`` makes one :class:`~symcurv.runtime.state.State` per shard, on
the worker holding that shard; each State caches its forward pass (and every v-independent
backward quantity) there, the first time a product needs it. A product then sends v to
every shard's worker and brings back one θ-sized vector per shard, combined like
``DataParallel``'s results: Hessian-free's hundreds of G v products per iteration move
2 · n_params numbers per shard each, never an activation.
"""

from __future__ import annotations

import numpy as np
from dask.sizeof import sizeof

from symcurv.distributed import worker
from symcurv.distributed.cases import combine
from symcurv.runtime.state import LossValue, State


@sizeof.register(State)
def _sizeof_state(st: State) -> int:
    # its batch and cached values: Dask then keeps every product on the State's worker
    cached = sum(getattr(a, "nbytes", 0) for c in st._cache.values() for a in c.values())
    return sum(int(a.nbytes) for a in st.batch.values()) + cached


class DistributedState:
    """Returned by ``dp.linearize(theta, cases)``; the methods of ``State`` over every case."""

    def __init__(self, dp, theta, cases=None, seed=None) -> None:
        self.dp, self.seed = dp, seed
        self.theta = dp.prog.checks.theta(theta).copy()
        self.targets, self.batch_size = dp._targets(cases)
        self._states = self._linearize()
        self._grad: tuple[float, np.ndarray] | None = None

    def __repr__(self) -> str:
        return (
            f"<symcurv DistributedState of '{self.dp.name}': {self.batch_size} cases on "
            f"{len(self.targets)} shards>"
        )

    def _linearize(self) -> list:
        dp = self.dp
        (theta,) = dp._share(self.theta)
        return [
            dp.client.submit(
                worker.linearize,
                dp.prog,
                dp._shard(t),
                t.first,
                t.select,
                t.rows,
                theta,
                self.seed,
                pure=False,
                **dp._placement(t),
            )
            for t in self.targets
        ]

    def _relinearize(self) -> None:
        """Rebuild the States that died with a worker (their shards are back by now)."""
        fresh = None
        for k, f in enumerate(self._states):
            if f.status in ("cancelled", "lost", "error"):
                fresh = fresh or self._linearize()
                self._states[k] = fresh[k]

    def _map(self, method: str, args=(), kwargs=None, per_target=None, kind="mean"):
        """``State.<method>`` on every shard's State, combined like ``dp``'s results."""
        dp = self.dp

        def submit():
            shared = tuple(dp._share(*args))
            return [
                dp.client.submit(
                    worker.state_call,
                    st,
                    method,
                    shared + (per_target(t) if per_target else ()),
                    kwargs or {},
                    pure=False,
                    **dp._placement(t),
                )
                for st, t in zip(self._states, self.targets)
            ]

        results = dp._gather(submit, restore=self._relinearize)
        return combine(kind, self.targets, results, self.batch_size)

    # -- the State's quantities ---------------------------------------------------------------
    @property
    def loss(self) -> LossValue:
        """``st.loss()`` (or ``st.loss``): the mean loss over the cases."""
        return LossValue(self.grad()[0])

    def grad(self) -> tuple[float, np.ndarray]:
        """``(loss, ∇θ loss)``, computed on the first call."""
        if self._grad is None:
            self._grad = self._map("grad", kind=("mean", "mean"))
        return self._grad[0], self._grad[1].copy()

    def hvp(self, v) -> np.ndarray:
        """H v at this point, on the workers' cached forward passes."""
        return self._map("hvp", (self.dp._vector(v),))

    def gnvp(self, v, damping: float = 0.0) -> np.ndarray:
        """G v + damping·v at this point (the damping added once, on the client)."""
        damping = self.dp.prog.checks.damping(damping)
        v = self.dp._vector(v)
        gv = self._map("gnvp", (v,))
        return gv + damping * v if damping else gv

    def cp_diag(self, estimator="S", noise="rademacher", samples=1, seed=None) -> np.ndarray:
        """CP estimate of diag(H): the one-process draw for the same seed."""
        return self._map("cp_diag", (estimator, noise, samples, self.dp._seed(seed)))

    def becker_lecun_diag(self) -> np.ndarray:
        """Becker & LeCun's diagonal at this point."""
        return self._map("becker_lecun_diag")

    def per_case_grad(self) -> np.ndarray:
        """(B, n_params): ∇f_b per case."""
        return self._map("per_case_grad", kind="rows")

    def per_case_grad_norm(self) -> np.ndarray:
        """(B,): ‖∇f_b‖ per case."""
        return self._map("per_case_grad_norm", kind="rows")

    def input_grad(self, wrt: str | None = None) -> np.ndarray:
        """(B, D): ∂f_b/∂x_b per case."""
        return self._map("input_grad", (wrt,), kind="rows")

    def input_hvp(self, V, wrt: str | None = None) -> np.ndarray:
        """(B, D): (∇²_x f_b) V_b per case."""
        V = np.asarray(V)
        return self._map("input_hvp", per_target=lambda t: (V[t.positions], wrt), kind="rows")

    def input_diag_hessian(
        self, wrt=None, method="exact", samples=1, seed=None, noise="rademacher"
    ) -> np.ndarray:
        """(B, D): diag(∇²_x f_b) per case (CP methods: the one-process draw)."""
        args = (wrt, method, samples, self.dp._seed(seed), noise)
        return self._map("input_diag_hessian", args, kind="rows")
