"""``DataParallel``: a Program's methods over data bound on Dask workers.

Every method of :class:`~symcurv.runtime.program.Program` that takes a batch exists here
with the batch replaced by ``cases`` (None = all the bound data): each shard's worker runs
the program on its cases, and the client combines the shards' results. The objective is a
mean over cases, so with n_k of the B cases on shard k

    mean over all cases = Σ_k (n_k / B) · (mean over shard k)

(loss, gradient, H v, G v, CP and Becker-LeCun diagonals); Σ_b ∇f_b ⊙ ∇f_b is a plain sum
over shards, and per-case results are the shards' rows put back in batch order. CP noise
is indexed by each case's number in the call's batch (``State.case_numbers``), so a draw
equals the one-process draw for the same seed. θ and v travel to the workers with each
call; the data and a linearized State's cached forward pass never come back.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from concurrent.futures import CancelledError

import numpy as np
from distributed import KilledWorker

from symcurv import errors
from symcurv.distributed import cluster, factors, shards, worker
from symcurv.distributed.cases import Cases, ShardSampler, Target, case_index, combine, plan
from symcurv.distributed.state import DistributedState
from symcurv.runtime import model_leaves
from symcurv.runtime import noise as noise_module
from symcurv.runtime.kfac import KFACFactors

#: how each method's per-shard results combine: "mean" (weighted by the shard's cases),
#: "sum", or "rows" (per-case results, put back in batch order); a tuple per result
COMBINE = {
    "loss": "mean",
    "grad": ("mean", "mean"),
    "grad_and_sum_sq_grad": ("mean", "mean", "sum"),
    "sum_sq_grad": "sum",
    "hvp": "mean",
    "gnvp": "mean",
    "cp_diag": "mean",
    "becker_lecun_diag": "mean",
    "per_case_grad": "rows",
    "per_case_grad_norm": "rows",
    "input_grad": "rows",
    "input_hvp": "rows",
    "input_diag_hessian": "rows",
    "kfac_factors": factors.combine,
}


#: arrays larger than this travel to the workers by one scatter per call (see _share)
SCATTER_BYTES = 1 << 20


class DataParallel:
    """``DataParallel(prog, data, client=None, n_shards=None)``: ``prog``'s methods on
    ``data`` held by Dask workers (module docstring).

    - ``data``: a dict of arrays (cases as rows), cut into ``n_shards`` runs of
      consecutive cases (default: one per worker) and scattered ONCE; or a list of
      ``.npz`` shard files (one array per input, cases as rows), each loaded by a worker
      itself, so the data never passes through the client.
    - ``client``: a ``dask.distributed.Client``; None starts a LocalCluster of one
      single-threaded process per core with BLAS/Numba threads pinned to one
      (:func:`symcurv.distributed.cluster.local_client`), closed by :meth:`close`.
    - ``retries``: how many times a call whose worker died is re-run after its lost shards
      were restored (in-memory shards are scattered again from the client's arrays; file
      shards are reloaded by Dask from their file).

    Workers receive the Program as a reference to its build directory and load it with
    ``sc.load`` (hashes verified, no sympy), so every worker must see that directory.
    """

    def __init__(self, prog, data, client=None, n_shards: int | None = None, retries: int = 2):
        self.prog = prog
        self.names = tuple(prog.inputs)
        self.retries = int(retries)
        self._own_client = client is None
        self.client = cluster.local_client() if client is None else client
        self.recovered = 0  # shards restored after a worker died (for tests and logs)
        try:
            if isinstance(data, (list, tuple)):
                self._bind_files([os.fspath(p) for p in data], n_shards)
            else:
                self._bind_arrays(data, n_shards)
        except BaseException:
            self.close()
            raise

    # -- the Program's attributes, for fit and the optimizers ----------------------------------
    @property
    def name(self) -> str:
        """The model's name (``prog.name``)."""
        return self.prog.name

    @property
    def n_params(self) -> int:
        """The length of θ (``prog.n_params``)."""
        return self.prog.n_params

    @property
    def dtype(self):
        """The build's dtype (``prog.dtype``)."""
        return self.prog.dtype

    @property
    def programs(self) -> tuple[str, ...]:
        """The programs built (``prog.programs``): what the workers can run."""
        return self.prog.programs

    @property
    def inputs(self) -> dict:
        """The model's inputs and targets (``prog.inputs``): the keys of the data."""
        return self.prog.inputs

    @property
    def params(self) -> dict:
        """The parameter layout (``prog.params``)."""
        return self.prog.params

    @property
    def manifest(self) -> dict:
        """The build manifest (``prog.manifest``)."""
        return self.prog.manifest

    @property
    def kfac_layers(self) -> dict:
        """The dense layers K-FAC gives a Kronecker block (``prog.kfac_layers``)."""
        return self.prog.kfac_layers

    @property
    def n_shards(self) -> int:
        """How many shards hold the data."""
        return len(self._shards)

    def init(self, seed: int | None = 0) -> np.ndarray:
        """``prog.init(seed)``."""
        return self.prog.init(seed)

    def unflatten(self, theta):
        """``prog.unflatten(theta)``."""
        return self.prog.unflatten(theta)

    def flatten(self, values):
        """``prog.flatten(values)``."""
        return self.prog.flatten(values)

    def sampler(self, batch_size: int, seed: int | None = 0) -> ShardSampler:
        """What ``fit(dp, opt)`` draws minibatches from: the case order of
        :class:`~symcurv.optim.Sampler` for the same seed, as :class:`Cases`."""
        return ShardSampler(self.names, self.n_cases, batch_size, seed)

    def __repr__(self) -> str:
        return (
            f"<symcurv DataParallel of '{self.name}': {self.n_cases} cases in "
            f"{self.n_shards} shards on {len(self._workers())} workers>"
        )

    # -- binding the data ----------------------------------------------------------------------
    def _workers(self) -> list[str]:
        return list(self.client.scheduler_info()["workers"])

    def _bind_arrays(self, data: Mapping[str, np.ndarray], n_shards: int | None) -> None:
        n = shards.check_data(data, self.names)
        keys = set(data)
        if keys != set(self.names):
            raise errors.BatchError(
                f"the data has keys {sorted(keys)}, the model's inputs are {list(self.names)}",
                where=f"model '{self.name}'",
                fix=f"pass exactly {list(self.names)}",
            )
        workers = self._workers()
        n_shards = len(workers) if n_shards is None else int(n_shards)
        if n_shards < 1:
            raise errors.BatchError(f"n_shards = {n_shards}", fix="pass n_shards ≥ 1 (or None)")
        self._data = {k: np.asarray(data[k]) for k in self.names}
        runs = shards.bounds(n, n_shards)
        self._files = None
        self._shards = [
            self.client.scatter(
                shards.slice_shard(self._data, a, b),
                workers=[workers[k % len(workers)]],
                hash=False,
            )
            for k, (a, b) in enumerate(runs)
        ]
        self.firsts = np.array([a for a, _ in runs] + [n], dtype=np.int64)
        self.n_cases = n
        self._locate()

    def _bind_files(self, files: list[str], n_shards: int | None) -> None:
        if not files:
            raise errors.BatchError("the list of shard files is empty", fix="pass ≥ 1 file")
        if n_shards is not None and n_shards != len(files):
            raise errors.BatchError(
                f"n_shards = {n_shards} with {len(files)} shard files",
                fix="leave n_shards out: each file is one shard",
            )
        self._files, self._data = files, None
        self._shards = [self._load(k) for k in range(len(files))]
        sizes = self.client.gather([self.client.submit(shards.shard_size, f) for f in self._shards])
        self.firsts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.n_cases = int(self.firsts[-1])
        self._locate()

    def _load(self, k: int):
        return self.client.submit(shards.load_shard, self._files[k], self.names, pure=False)

    def _locate(self) -> None:
        """Where each shard lives now (one scheduler query): its tasks, and its States'
        products, are pinned there, so the data and the cached forward passes never move."""
        where = self.client.who_has(self._shards)
        self._where = [sorted(where.get(f.key, ())) for f in self._shards]

    def _placement(self, t: Target) -> dict:
        """``submit`` options keeping target ``t``'s task on its shard's worker (any other
        worker when that one has gone: a loose restriction)."""
        if not isinstance(t.shard, int) or not self._where[t.shard]:
            return {}
        return {"workers": self._where[t.shard][:1], "allow_other_workers": True}

    def _restore(self) -> None:
        """Bring back every shard whose only copy died with a worker."""
        for k, f in enumerate(self._shards):
            if f.status in ("cancelled", "lost"):
                if self._files is not None:
                    self._shards[k] = self._load(k)
                else:
                    a, b = int(self.firsts[k]), int(self.firsts[k + 1])
                    self._shards[k] = self.client.scatter(
                        shards.slice_shard(self._data, a, b), hash=False
                    )
                self.recovered += 1
        self._locate()

    def close(self) -> None:
        """Release the shards; close the client and cluster if this object started them."""
        for f in getattr(self, "_shards", []):
            f.release()
        self._shards = []
        if self._own_client and self.client is not None:
            cl = self.client.cluster
            self.client.close()
            if cl is not None:
                cl.close()
            self.client = None

    def __enter__(self) -> DataParallel:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- running a method on every shard -------------------------------------------------------
    def _targets(self, cases) -> tuple[list[Target], int]:
        """The tasks' shares of ``cases`` (None, a :class:`Cases`, case numbers, or an
        in-memory batch dict, which is cut into one part per worker and sent along)."""
        if isinstance(cases, Mapping) and not isinstance(cases, Cases):
            B = shards.check_data(cases, self.names)
            runs = shards.bounds(B, len(self._workers()))
            parts = [shards.slice_shard(cases, a, b) for a, b in runs]
            return [Target(p, a, None, slice(a, b), b - a) for p, (a, b) in zip(parts, runs)], B
        index = case_index(cases, self.n_cases)
        B = self.n_cases if index is None else len(index)
        out = []
        for part in plan(index, self.firsts):
            first = int(self.firsts[part.k])
            n = int(self.firsts[part.k + 1]) - first if part.select is None else len(part.select)
            out.append(Target(part.k, first, part.select, part.positions, n))
        return out, B

    def _shard(self, t: Target):
        return self._shards[t.shard] if isinstance(t.shard, int) else t.shard

    def _gather(self, submit: Callable[[], list], restore: Callable[[], None] | None = None):
        """``client.gather(submit())``; when a worker died and took a shard's only copy
        with it, the lost shards are restored (and ``restore()`` run: a State relinearizes)
        and the call is submitted again, up to ``retries`` times."""
        for attempt in range(self.retries + 1):
            futures = submit()
            try:
                return self.client.gather(futures)
            except (CancelledError, KilledWorker) as e:
                for f in futures:
                    f.cancel()
                if attempt == self.retries:
                    raise errors.SymcurvError(
                        f"a distributed call failed {attempt + 1} times: {type(e).__name__}: {e}",
                        where=f"DataParallel of '{self.name}'",
                        fix="check the workers' logs (memory limit? a crashing worker?)",
                    ) from e
                self._restore()
                if restore is not None:
                    restore()
        raise AssertionError("unreachable")

    def _share(self, *values):
        """``values`` as task arguments: a large array (θ or v of a big model) is
        scattered to every worker once, directly, instead of being pickled into each
        shard's task and relayed by the scheduler."""
        return [
            self.client.scatter(a, broadcast=True, direct=True, hash=False)
            if isinstance(a, np.ndarray) and a.nbytes > SCATTER_BYTES
            else a
            for a in values
        ]

    def _map(self, method: str, theta, cases=None, args=(), kwargs=None, per_target=None):
        """Run ``prog.<method>`` on every target of ``cases`` and combine the results.
        ``per_target(t)`` gives a target's own extra arguments (rows of a per-case V)."""
        theta = self.prog.checks.theta(theta)
        targets, B = self._targets(cases)
        kwargs = kwargs or {}
        # a CP method on a noisy model: every shard's State draws the model's noise from
        # ONE fresh seed (one process draws it fresh too), so the rows form one draw
        model_seed = self._model_seed(None).get("seed") if method in worker.NOISY else None

        def submit():
            shared = self._share(theta, *args)
            return [
                self.client.submit(
                    worker.run,
                    self.prog,
                    self._shard(t),
                    t.first,
                    t.select,
                    t.rows,
                    method,
                    shared[0],
                    tuple(shared[1:]) + (per_target(t) if per_target else ()),
                    kwargs,
                    model_seed,
                    pure=False,
                    **self._placement(t),
                )
                for t in targets
            ]

        return combine(COMBINE[method], targets, self._gather(submit), B)

    # -- the Program's methods on the bound data ---------------------------------------------
    def loss(self, theta, cases=None, seed=None) -> float:
        """Mean per-case loss over ``cases`` (None: all the bound data). ``seed``: only for
        a model with noise leaves (CP score matching), the one-process draw for the same
        seed (None: one fresh seed for every shard)."""
        return self._map("loss", theta, cases, kwargs=self._model_seed(seed))

    def grad(self, theta, cases=None, seed=None) -> tuple[float, np.ndarray]:
        """``(loss, ∇θ loss)`` over ``cases`` (``seed`` as for :meth:`loss`)."""
        return self._map("grad", theta, cases, kwargs=self._model_seed(seed))

    def grad_and_sum_sq_grad(self, theta, cases=None, seed=None):
        """``(loss, ∇θ loss, Σ_b ∇f_b ⊙ ∇f_b)`` over ``cases`` (one pass per shard;
        ``seed`` as for :meth:`loss`)."""
        return self._map("grad_and_sum_sq_grad", theta, cases, kwargs=self._model_seed(seed))

    def sum_sq_grad(self, theta, cases=None) -> np.ndarray:
        """Σ_b ∇f_b ⊙ ∇f_b over ``cases`` (a sum, not divided by B)."""
        return self._map("sum_sq_grad", theta, cases)

    def hvp(self, theta, v, cases=None) -> np.ndarray:
        """H v of the mean loss over ``cases``."""
        return self._map("hvp", theta, cases, (self._vector(v),))

    def gnvp(self, theta, v, damping: float = 0.0, cases=None) -> np.ndarray:
        """G v + damping·v over ``cases`` (the damping added once, on the client)."""
        damping = self.prog.checks.damping(damping)
        v = self._vector(v)
        gv = self._map("gnvp", theta, cases, (v,))
        return gv + damping * v if damping else gv

    def cp_diag(
        self, theta, estimator="S", noise="rademacher", samples=1, seed=None, cases=None
    ) -> np.ndarray:
        """The CP estimate of diag(H) over ``cases``: the same draw as one process on the
        same batch with the same ``seed`` (None: one fresh seed for every shard)."""
        args = (estimator, noise, samples, self._seed(seed))
        return self._map("cp_diag", theta, cases, args)

    def becker_lecun_diag(self, theta, cases=None) -> np.ndarray:
        """Becker & LeCun's diagonal approximation over ``cases``."""
        return self._map("becker_lecun_diag", theta, cases)

    def per_case_grad(self, theta, cases=None) -> np.ndarray:
        """(B, n_params): ∇f_b of every case, in the order of ``cases``."""
        return self._map("per_case_grad", theta, cases)

    def per_case_grad_norm(self, theta, cases=None) -> np.ndarray:
        """(B,): ‖∇f_b‖ of every case, in the order of ``cases``."""
        return self._map("per_case_grad_norm", theta, cases)

    def input_grad(self, theta, cases=None, wrt: str | None = None) -> np.ndarray:
        """(B, D): ∂f_b/∂x_b of every case."""
        return self._map("input_grad", theta, cases, (wrt,))

    def input_hvp(self, theta, V, wrt: str | None = None, cases=None) -> np.ndarray:
        """(B, D): (∇²_x f_b) V_b; ``V`` has one row per case of ``cases``."""
        V = np.asarray(V)
        return self._map("input_hvp", theta, cases, per_target=lambda t: (V[t.positions], wrt))

    def input_diag_hessian(
        self, theta, wrt=None, method="exact", samples=1, seed=None, noise="rademacher", cases=None
    ) -> np.ndarray:
        """(B, D): diag(∇²_x f_b) of every case (CP methods: the one-process draw)."""
        args = (wrt, method, samples, self._seed(seed), noise)
        return self._map("input_diag_hessian", theta, cases, args)

    def kfac_factors(self, theta, cases=None, curvature="curvature_prop", seed=None) -> KFACFactors:
        """K-FAC's factors over ``cases`` (``prog.kfac_factors``): each shard's, combined
        weighted by its cases (distributed/factors.py); the noise of "curvature_prop" and
        the sampled targets of "fisher_mc" are the one-process draw for the same ``seed``
        (None: one fresh seed for every shard)."""
        return self._map("kfac_factors", theta, cases, (curvature, self._seed(seed)))

    def linearize(self, theta, cases=None, seed=None):
        """A :class:`DistributedState` at (θ, ``cases``) whose per-shard States, with their
        cached forward passes, stay on the workers (``seed``: a noisy model's noise, drawn
        once for the State's lifetime, the one-process draw)."""
        return DistributedState(self, theta, cases, **self._model_seed(seed))

    # -- argument checks ---------------------------------------------------------------------
    def _vector(self, v) -> np.ndarray:
        v = np.ascontiguousarray(self.prog.checks.vector(v, "v"), dtype=self.dtype)
        if not np.isfinite(v).all():
            raise errors.NonFiniteError(
                f"v[{int(np.flatnonzero(~np.isfinite(v))[0])}] is not finite",
                where=f"model '{self.name}'",
                fix="pass a finite direction v",
            )
        return v

    def _model_seed(self, seed) -> dict:
        """``{"seed": s}`` for a model with noise leaves (s drawn once here when None, so
        that every shard draws the same noise); ``{}`` for a noise-free model, which
        refuses a seed (``Program.loss``'s error)."""
        model_leaves.seed_key(self.prog, seed)  # checks the seed, or refuses one
        return {"seed": self._seed(seed)} if model_leaves.noisy(self.prog) else {}

    @staticmethod
    def _seed(seed):
        """A fresh seed is drawn ONCE on the client, so that every shard draws one noise."""
        if seed is None:
            lo, hi = noise_module.key(None)
            return lo + (hi << 32)
        return seed
