"""``Program``: the compiled programs of one model, called with a flat θ and a batch.

Every call checks its inputs (keys, widths, dtypes, finiteness) and its result (a
non-finite loss is an error naming the first node that went non-finite, never a NaN
handed back silently). Scratch buffers are allocated once per batch size and reused.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import ModuleType

import numpy as np

from symcurv import errors
from symcurv.ir import outputs
from symcurv.runtime import backends, graphs, initializers, model_leaves
from symcurv.runtime.state import State


def extra_leaves(spec: dict, role: str) -> list[tuple[str, bool, int]]:
    """``(name, batched, size)`` of a built program's extra arguments with ``role``
    ("noise", "direction" or "cached"; see codegen/schedule.py), in argument order."""
    out = []
    for name, batched, size, r in spec.get("extras", []):
        if r == role:
            out.append((name, bool(batched), int(size)))
    return out


def _batch_size(batch: Mapping[str, np.ndarray]) -> int:
    """B of a batch that ``_run`` has already checked."""
    return len(next(iter(batch.values()))) if batch else 1


def _shape_hint(name: str, a: np.ndarray, info: dict) -> str:
    """What to do about batch[name] of the wrong shape, from what it most likely is."""
    n = info["size"]
    hint = f"cases are ROWS: pass shape (B, {n})"
    if a.ndim != 1:
        return hint
    integral = np.issubdtype(a.dtype, np.integer) or (
        a.size > 0 and np.all(np.isfinite(a)) and np.all(np.asarray(a) == np.round(a))
    )
    if info.get("role") == "target" and n > 1 and integral and a.shape[0] != n:
        return (
            f"targets are one-hot rows of width {n}, not integer class labels: pass "
            f"np.eye({n})[labels] (shape (B, {n}))"
        )
    if n == 1:
        return f"{hint}; a vector of B cases of width 1 needs {name}[:, None]"
    if a.shape[0] == n:
        return f"{hint}; a single case needs {name}[None, :]"
    return hint


class Program:
    """Compiled programs loaded from a build directory (see ``symcurv.runtime.build``)."""

    extra_leaves = staticmethod(extra_leaves)

    def __init__(self, build_dir: str, manifest: dict, modules: dict[str, ModuleType]) -> None:
        self.build_dir = build_dir
        self.manifest = manifest
        self._modules = modules
        self.dtype = np.dtype(manifest["dtype"])
        self.backend = manifest["backend"]
        self.device = backends.get(self.backend)  # where the kernels run (runtime/backends.py)
        self.name = manifest["model"]
        self.params = {p["name"]: p for p in manifest["params"]}
        self.n_params = int(manifest["n_params"])
        self.inputs = {d["name"]: d for d in manifest["inputs"]}
        self.programs = tuple(k for k in manifest["programs"] if not k.endswith(".static"))
        self._buffers: dict[tuple[str, int], list[np.ndarray]] = {}

    def __repr__(self) -> str:
        return (
            f"<symcurv Program '{self.name}' ({self.backend}, {self.dtype}): "
            f"{self.n_params} parameters, programs {', '.join(self.programs)}; "
            f"built in {self.build_dir}>"
        )

    # -- parameters -----------------------------------------------------------------------
    def init(self, seed: int | None = 0) -> np.ndarray:
        """A flat θ drawn from each parameter's initialiser (``seed``: a non-negative
        integer, or None for fresh entropy)."""
        try:
            if isinstance(seed, (bool, float, str, bytes)):
                raise TypeError
            rng = np.random.default_rng(seed)
        except (TypeError, ValueError):
            raise errors.ModelError(
                f"init(seed={seed!r})",
                where=f"model '{self.name}'",
                fix="pass a non-negative integer seed, or None for a fresh one",
            ) from None
        theta = np.empty(self.n_params, dtype=self.dtype)
        for p in self.params.values():
            theta[p["offset"] : p["offset"] + p["size"]] = initializers.sample(
                p["init"], tuple(p["shape"]), rng
            ).ravel()
        return theta

    def unflatten(self, theta: np.ndarray) -> dict[str, np.ndarray]:
        """Named views of a flat vector (θ, a gradient, ...) in each parameter's shape."""
        theta = self._check_vector(theta, "theta")
        return {
            n: theta[p["offset"] : p["offset"] + p["size"]].reshape(p["shape"])
            for n, p in self.params.items()
        }

    def flatten(self, values: Mapping[str, np.ndarray]) -> np.ndarray:
        """The flat vector of a dict of named parameter arrays (every parameter needed)."""
        missing = sorted(set(self.params) - set(values))
        unknown = sorted(set(values) - set(self.params))
        if missing or unknown:
            raise errors.BatchError(
                f"flatten() got missing {missing} / unknown {unknown} parameter names",
                where=f"model '{self.name}'",
                fix=f"pass exactly {list(self.params)}",
            )
        out = np.empty(self.n_params, dtype=self.dtype)
        for n, p in self.params.items():
            v = np.asarray(values[n], dtype=self.dtype)
            if v.shape != tuple(p["shape"]):
                raise errors.BatchError(
                    f"parameter '{n}' has shape {v.shape}",
                    where=f"model '{self.name}'",
                    fix=f"give it shape {tuple(p['shape'])}",
                )
            out[p["offset"] : p["offset"] + p["size"]] = v.ravel()
        return out

    # -- programs -------------------------------------------------------------------------
    def loss(self, theta: np.ndarray, batch: Mapping[str, np.ndarray], seed=None) -> float:
        """Mean per-case loss over the batch. ``seed``: only for a model with noise leaves
        (CP score matching): an integer reproduces the draw, None draws fresh noise."""
        return float(self._run("loss", theta, batch, seed=seed)["objective"][0])

    def grad(
        self, theta: np.ndarray, batch: Mapping[str, np.ndarray], seed=None
    ) -> tuple[float, np.ndarray]:
        """``(loss, ∇θ loss)`` with the gradient flat like θ (``seed`` as for ``loss``:
        both come from the same noise draw)."""
        out = self._run("grad", theta, batch, seed=seed)
        return float(out["objective"][0]), out["grad"]

    def hvp(self, theta: np.ndarray, batch: Mapping[str, np.ndarray], v: np.ndarray) -> np.ndarray:
        """H v, exact (Pearlmutter's R-operator), H = ∇²θ of the mean loss; flat like θ."""
        return self._run("hvp", theta, batch, v=v)["hvp"]

    def gnvp(
        self,
        theta: np.ndarray,
        batch: Mapping[str, np.ndarray],
        v: np.ndarray,
        damping: float = 0.0,
    ) -> np.ndarray:
        """G v + damping·v (Schraudolph), G = Jᵀ H_L J the Gauss-Newton matrix of the mean
        loss, J the Jacobian of the loss's input w.r.t. θ; flat like θ."""
        damping = self._check_damping(damping)
        gv = self._run("gnvp", theta, batch, v=v)["gnvp"]
        if damping:
            gv += damping * np.asarray(v, dtype=self.dtype)
        return gv

    def linearize(self, theta: np.ndarray, batch: Mapping[str, np.ndarray], seed=None):
        """A :class:`~symcurv.runtime.state.State` at (θ, batch): the inputs are checked
        once, and the forward pass (with every v-independent backward quantity) is computed
        once per product program, then reused by every ``hvp``/``gnvp``/``cp_diag`` call.
        ``seed``: a model with noise leaves draws them once, for the State's lifetime."""
        return State(self, theta, batch, seed)

    def cp_diag(
        self,
        theta: np.ndarray,
        batch: Mapping[str, np.ndarray],
        estimator: str = "S",
        noise: str = "rademacher",
        samples: int = 1,
        seed: int | None = None,
    ) -> np.ndarray:
        """An unbiased estimate of diag(H) by Curvature Propagation (estimator S, TU or HI;
        GN estimates diag(G)), averaged over ``samples`` noise draws per case; flat like θ.
        See :meth:`State.cp_diag`."""
        return self.linearize(theta, batch).cp_diag(estimator, noise, samples, seed)

    def becker_lecun_diag(self, theta: np.ndarray, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        """Becker & LeCun's deterministic diagonal approximation (biased); flat like θ."""
        return self._run("becker_lecun", theta, batch)["bl"]

    def sum_sq_grad(self, theta: np.ndarray, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        """Σ_b ∇f_b ⊙ ∇f_b, f_b the per-case loss of case b (not divided by B), without a
        per-case gradient array; flat like θ. Hessian-free's preconditioner."""
        return self.grad_and_sum_sq_grad(theta, batch)[2]

    def grad_and_sum_sq_grad(
        self, theta: np.ndarray, batch: Mapping[str, np.ndarray], seed=None
    ) -> tuple[float, np.ndarray, np.ndarray]:
        """``(loss, ∇θ loss, Σ_b ∇f_b ⊙ ∇f_b)`` from one pass (program ``sum_sq_grad``;
        ``seed`` as for ``loss``)."""
        out = self._run("sum_sq_grad", theta, batch, seed=seed)
        return float(out["objective"][0]), out["grad"], out["sqg"]

    # -- derivatives with respect to the data (per case; see State for the methods) -------
    def input_grad(self, theta, batch, wrt: str | None = None) -> np.ndarray:
        """∂f_b/∂x_b for every case, ``(B, D)``: f_b the per-case loss passed to
        ``m.minimize`` (not divided by B), x the input ``wrt`` (optional with one input)."""
        x = self._input_name(wrt)
        return self._run("input_grad", theta, batch)[self._input_key("input_grad", x)]

    def input_hvp(self, theta, batch, V, wrt: str | None = None) -> np.ndarray:
        """(∇²_x f_b) V_b for every case, ``(B, D)``; ``V`` has one direction per case."""
        return self.linearize(theta, batch).input_hvp(V, wrt)

    def input_diag_hessian(
        self,
        theta,
        batch,
        wrt: str | None = None,
        method: str = "exact",
        samples: int = 1,
        seed=None,
        noise: str = "rademacher",
    ) -> np.ndarray:
        """diag(∇²_x f_b) for every case, ``(B, D)``, by ``method`` "exact",
        "becker_lecun", "S" or "TU" (see :meth:`State.input_diag_hessian`)."""
        return self.linearize(theta, batch).input_diag_hessian(wrt, method, samples, seed, noise)

    def _input_name(self, wrt: str | None) -> str:
        """The input a data-derivative is taken with respect to (checked)."""
        data = [n for n, d in self.inputs.items() if d["role"] == "input"]
        if wrt is None and len(data) == 1:
            return data[0]
        if wrt in data:
            return wrt
        what = "a target" if wrt in self.inputs else "not an input"
        raise errors.ModelError(
            f"wrt = {wrt!r} is {what}" if wrt is not None else "wrt is needed",
            where=f"model '{self.name}'",
            fix=f"name one of the model's inputs: {data}"
            if data
            else "the model has no m.input to differentiate with respect to",
        )

    @staticmethod
    def _input_key(result: str, x: str) -> str:
        return outputs.per_case(result, x).key

    def per_case_grad(self, theta: np.ndarray, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        """The per-case gradients ∇f_b, f_b the per-case loss of case b (NOT divided by
        B), as a (B, n_params) array: row b is flat like θ (program ``per_case_grad``).
        ``per_case_grad(θ, batch).mean(0)`` is ``grad(θ, batch)[1]``."""
        out = self._run("per_case_grad", theta, batch)
        return self._per_case_rows(out, _batch_size(batch))

    def per_case_grad_norm(self, theta: np.ndarray, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        """‖∇f_b‖ per case, shape (B,), computed WITHOUT forming the per-case gradients
        (program ``per_case_grad_norm``: for W used once per case ‖s_b‖·‖h_b‖; tied
        weights by the pair expansion of ``sum_sq_grad``). Per-example clipping in
        differentially private SGD needs exactly this."""
        out = self._run("per_case_grad_norm", theta, batch)
        return self._per_case_norms(out, _batch_size(batch))

    def _per_case_rows(self, out: Mapping[str, np.ndarray], B: int) -> np.ndarray:
        """(B, n_params) from the outputs ``pcg:<param>`` (each one parameter's ∇f_b rows)."""
        rows = np.zeros((B, self.n_params), dtype=self.dtype)
        for name, p in self.params.items():
            part = out.get(outputs.per_case("pcg", name).key)
            if part is not None:  # absent: no per-case path reaches it, its rows are 0
                rows[:, p["offset"] : p["offset"] + p["size"]] = np.asarray(part).reshape(B, -1)
        return rows

    @staticmethod
    def _per_case_norms(out: Mapping[str, np.ndarray], B: int) -> np.ndarray:
        """(B,) from the output ``pcgn`` = ‖∇f_b‖² (rounding may leave it just below 0)."""
        return np.sqrt(np.maximum(np.asarray(out["pcgn"]).reshape(-1), 0.0))

    def hessian(self, theta, batch, *, max_params: int = 2000) -> np.ndarray:
        """The dense Hessian (n_params × n_params), column j = H e_j from ``hvp``. For small
        models: a reference for tests and for checking estimators."""
        return self._dense("hvp", theta, batch, max_params)

    def gauss_newton(self, theta, batch, *, max_params: int = 2000) -> np.ndarray:
        """The dense Gauss-Newton matrix, column j = G e_j from ``gnvp``."""
        return self._dense("gnvp", theta, batch, max_params)

    def diag_hessian(self, theta, batch, *, max_params: int = 2000) -> np.ndarray:
        """The exact diagonal of H (n_params hvp calls, O(n_params) memory)."""
        d = np.empty(self.n_params, dtype=self.dtype)
        for j, col in self._columns("hvp", theta, batch, max_params):
            d[j] = col[j]
        return d

    def draw(self, program: str, path: str) -> str | list[str]:
        """Draw the graph of ``program`` ("forward" or any built program) to
        .dot/.svg/.png/.pdf; ``cp_diag``, ``input_diag_hessian`` and ``all`` draw each of
        their built graphs beside ``path`` (``<stem>_<program><suffix>``) and return the
        list of files."""
        return graphs.draw(self.build_dir, program, path)

    # -- machinery -------------------------------------------------------------------------
    def _check_damping(self, damping) -> float:
        try:
            if isinstance(damping, (str, bytes)):
                raise TypeError
            d = float(damping)
        except (TypeError, ValueError):
            d = float("nan")
        if not np.isfinite(d) or d < 0:
            raise errors.BatchError(
                f"damping = {damping!r}",
                where=f"model '{self.name}'",
                fix="pass a finite damping λ ≥ 0",
            )
        return d

    def _dense(self, prog: str, theta, batch, max_params: int) -> np.ndarray:
        out = np.empty((self.n_params, self.n_params), dtype=self.dtype)
        for j, col in self._columns(prog, theta, batch, max_params):
            out[:, j] = col
        return out

    def _columns(self, prog: str, theta, batch, max_params: int):
        """``(j, A e_j)`` for every j, A = H or G: products on one linearized State, so the
        forward pass runs once, not once per column."""
        n = self.n_params
        if n > max_params:
            raise errors.ModelError(
                f"the exact matrix needs {n} calls of '{prog}' ({n} × {n} = "
                f"{n * n * self.dtype.itemsize / 1e6:.0f} MB if dense)",
                where=f"model '{self.name}'",
                fix=f"use {prog}/cp_diag for large models, or pass max_params={n} "
                "if you really want it",
            )
        st = self.linearize(theta, batch)
        product = st.hvp if prog == "hvp" else st.gnvp
        e = np.zeros(n, dtype=self.dtype)
        for j in range(n):
            e[j] = 1.0
            yield j, product(e)
            e[j] = 0.0

    def _check_vector(self, v, what: str) -> np.ndarray:
        v = np.asarray(v)
        if v.ndim != 1 or v.shape[0] != self.n_params:
            raise errors.BatchError(
                f"{what} has shape {v.shape}",
                where=f"model '{self.name}'",
                fix=f"pass a flat vector of length n_params = "
                f"{self.n_params} (prog.flatten turns a dict into one)",
            )
        if not np.issubdtype(v.dtype, np.number) or np.iscomplexobj(v):
            raise errors.BatchError(
                f"{what} has dtype {v.dtype}",
                where=f"model '{self.name}'",
                fix=f"pass real numbers ({self.dtype})",
            )
        return v

    def _check_theta(self, theta) -> np.ndarray:
        theta = np.ascontiguousarray(self._check_vector(theta, "theta"), dtype=self.dtype)
        if not np.isfinite(theta).all():
            bad = int(np.flatnonzero(~np.isfinite(theta))[0])
            name = next(
                n for n, p in self.params.items() if p["offset"] <= bad < p["offset"] + p["size"]
            )
            raise errors.NonFiniteError(
                f"theta[{bad}] = {theta[bad]} (in parameter '{name}') is not finite",
                where=f"model '{self.name}'",
                node=f"'{name}'",
                fix="restart from finite parameters (a diverged optimizer step?)",
            )
        return theta

    def _check_batch(
        self, spec: dict, batch: Mapping[str, np.ndarray], copy: bool = False
    ) -> list[np.ndarray]:
        """The batch's arrays for ``spec["leaves"]``, checked, contiguous and of the build's
        dtype. ``np.ascontiguousarray`` returns the caller's own buffer when it already
        fits, so ``copy=True`` (a State) asks for arrays no later write by the caller can
        reach."""
        if not isinstance(batch, Mapping):
            raise errors.BatchError(
                f"a batch must be a dict of arrays, got {type(batch).__name__}",
                where=f"model '{self.name}'",
                fix=f"pass {{{', '.join(repr(k) for k in self.inputs)}}}",
            )
        unknown = sorted(set(batch) - set(self.inputs))
        if unknown:
            raise errors.BatchError(
                f"the batch has unknown key(s) {unknown}",
                where=f"model '{self.name}'",
                fix=f"the model's inputs and targets are {list(self.inputs)}",
            )
        arrays, B = [], None
        for name in spec["leaves"]:
            info = self.inputs[name]
            if name not in batch:
                raise errors.BatchError(
                    f"the batch has no key '{name}' ({info['role']} of width {info['size']})",
                    where=info.get("origin", f"model '{self.name}'"),
                    node=f"'{name}'",
                    fix=f"add batch['{name}'] as an array of shape (B, {info['size']})",
                )
            a = np.asarray(batch[name])
            if info.get("labels"):
                a = self._one_hot(name, info, a)
            if (
                a.dtype == object
                or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool)
                or np.iscomplexobj(a)
            ):
                raise errors.BatchError(
                    f"batch['{name}'] has dtype {a.dtype}",
                    where=info.get("origin"),
                    node=f"'{name}'",
                    fix=f"pass real numbers (converted to {self.dtype})",
                )
            if a.ndim != 2 or a.shape[1] != info["size"]:
                raise errors.BatchError(
                    f"batch['{name}'] has shape {a.shape}, expected (B, {info['size']})",
                    where=info.get("origin"),
                    node=f"'{name}'",
                    fix=_shape_hint(name, a, info),
                )
            if B is None:
                B = a.shape[0]
            elif a.shape[0] != B:
                raise errors.BatchError(
                    f"batch['{name}'] has {a.shape[0]} rows, but another key has {B}",
                    where=info.get("origin"),
                    node=f"'{name}'",
                    fix="give every key the same rows",
                )
            a = np.array(a, dtype=self.dtype, order="C", copy=True if copy else None)
            if not np.isfinite(a).all():
                r, c = np.argwhere(~np.isfinite(a))[0]
                raise errors.NonFiniteError(
                    f"batch['{name}'][{r}, {c}] = {a[r, c]} is not finite",
                    where=info.get("origin"),
                    node=f"'{name}'",
                    fix="clean the data (drop or impute NaN/inf rows) before calling",
                )
            arrays.append(a)
        if B == 0:
            raise errors.BatchError(
                "the batch is empty", where=f"model '{self.name}'", fix="pass at least one case"
            )
        return arrays

    def _one_hot(self, name: str, info: dict, a: np.ndarray) -> np.ndarray:
        """Class labels (B,) of a ``labels=True`` target, checked, as one-hot rows
        (B, K) of the program's dtype: what the kernels read (B·K values per call)."""
        K = int(info["size"])
        where, node = info.get("origin"), f"'{name}'"
        if a.ndim == 2 and a.shape[1:] == (K,) and K > 1:
            raise errors.BatchError(
                f"batch['{name}'] has shape {a.shape}, but '{name}' was declared with "
                "labels=True: it takes integer class labels of shape (B,)",
                where=where,
                node=node,
                fix=f"pass batch['{name}'] = labels (B,) in 0..{K - 1} (e.g. "
                "onehot.argmax(axis=1)), or drop labels=True to pass one-hot rows",
            )
        if a.ndim != 1:
            raise errors.BatchError(
                f"batch['{name}'] has shape {a.shape}, expected class labels of shape (B,)",
                where=where,
                node=node,
                fix="pass one integer label per case, a 1-D array (labels.ravel())",
            )
        if a.dtype == bool or not (
            np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)
        ):
            raise errors.BatchError(
                f"batch['{name}'] has dtype {a.dtype}; class labels are integers",
                where=where,
                node=node,
                fix=f"pass integer labels in 0..{K - 1} (e.g. labels.astype(np.int64))",
            )
        if np.issubdtype(a.dtype, np.floating):
            bad = np.flatnonzero(~np.isfinite(a) | (a != np.round(a)))
            if bad.size:
                raise errors.BatchError(
                    f"batch['{name}'][{int(bad[0])}] = {a[bad[0]]} is not an integer class label",
                    where=where,
                    node=node,
                    fix=f"pass integer labels in 0..{K - 1}",
                )
        bad = np.flatnonzero((a < 0) | (a >= K))
        if bad.size:
            raise errors.BatchError(
                f"batch['{name}'][{int(bad[0])}] = {a[bad[0]]} is not a class label of "
                f"'{name}' (declared with {K} classes)",
                where=where,
                node=node,
                fix=f"labels must lie in 0..{K - 1}; declare m.target('{name}', n, "
                "labels=True) with n = the number of classes",
            )
        out = np.zeros((a.shape[0], K), dtype=self.dtype)
        out[np.arange(a.shape[0]), a.astype(np.intp)] = 1.0
        return out

    def _scratch(self, prog: str, spec: dict, B: int) -> list[np.ndarray]:
        key = (prog, B)
        bufs = self._buffers.get(key)
        if bufs is None:
            bufs = [
                np.empty((B, size) if batched else (size,), dtype=self.dtype)
                for _name, batched, size in spec["slots"]
            ]
            if len(self._buffers) > 16:  # a few batch sizes at a time
                self._buffers.pop(next(iter(self._buffers)))
            self._buffers[key] = bufs
        return bufs

    def _run(
        self,
        prog: str,
        theta,
        batch,
        check: bool = True,
        v=None,
        extras: Mapping[str, np.ndarray] | None = None,
        keep: bool = False,
        seed=None,
    ) -> dict[str, np.ndarray]:
        """Run one program; a split program runs its static part first unless ``extras``
        already holds its cached values (``State``). ``extras`` also carries CP noise.
        ``keep=True`` leaves the outputs in the backend's memory (device arrays on cuda:
        a State's cache), unchecked; θ, the batch and the extras may be device arrays."""
        if prog not in self._modules:
            reason = self.manifest.get("skipped", {}).get(prog)
            if reason:
                kind = self.manifest.get("skipped_errors", {}).get(prog, "LossError")
                cls = getattr(errors, kind, errors.NotApplicableError)
                raise cls(f"program '{prog}' does not exist for this model: {reason}")
            # the name the user passes in programs= (cp_diag builds every estimator)
            public = {
                "cp_S": "cp_diag",
                "cp_TU": "cp_diag",
                "cp_GN": "cp_diag",
                "becker_lecun": "becker_lecun_diag",
                "input_diag_S": "input_diag_hessian",
                "input_diag_TU": "input_diag_hessian",
                "input_bl": "input_diag_hessian",
            }.get(prog, prog)
            raise errors.BuildError(
                f"program '{prog}' was not built (this build has {list(self.programs)})",
                where=self.build_dir,
                fix=f"rebuild with programs including '{public}'"
                + (f" (or just '{prog}')" if public != prog else ""),
            )
        spec = self.manifest["programs"][prog]
        theta = self._check_theta(theta) if check else theta
        arrays = self._check_batch(spec, batch) if check else [batch[n] for n in spec["leaves"]]
        vectors = []
        if spec.get("vectors"):
            v = np.ascontiguousarray(self._check_vector(v, "v"), dtype=self.dtype)
            if check and not np.isfinite(v).all():
                raise errors.NonFiniteError(
                    f"v[{int(np.flatnonzero(~np.isfinite(v))[0])}] is not finite",
                    where=f"model '{self.name}'",
                    fix="pass a finite direction v",
                )
            vectors = [v]
        extras = dict(extras or {})
        if spec.get("static") and not any(k.startswith("cache") for k in extras):
            checked = dict(zip(spec["leaves"], arrays))
            extras.update(self._run(spec["static"], theta, checked, check=False))
        B = arrays[0].shape[0] if arrays else 1
        extras = model_leaves.bind(self, spec, extras, B, seed)  # a model's own noise/basis
        zeros = self._output_array if keep else lambda shape: np.zeros(shape, dtype=self.dtype)
        outs = {p: zeros((self.n_params,)) for p in spec["out_flat"]}
        for k, batched, size in spec["out_plain"]:
            outs[k] = zeros((B, size) if batched else (size,))
        self._modules[prog].run(
            theta,
            *vectors,
            *arrays,
            *[self._argument(extras[e[0]]) for e in spec.get("extras", [])],
            *outs.values(),
            *self._scratch(prog, spec, B),
        )
        if check and not keep:
            for k, o in outs.items():
                if not np.isfinite(o).all():
                    noise = {n: a for n, a in extras.items() if not n.startswith("cache")}
                    checked = dict(zip(spec["leaves"], arrays))
                    self._non_finite(prog, k, theta, checked, v, noise)
        return outs

    # -- backend memory: host arrays on cpu, device arrays on cuda ------------------------------
    def _argument(self, a):
        """An array argument as the driver takes it (a device array is passed as it is)."""
        return a if backends.is_device(a) else np.ascontiguousarray(a, dtype=self.dtype)

    def _to_backend(self, a):
        """``a`` in the backend's memory: itself on cpu, a device copy on cuda."""
        return self.device.to_backend(a, self.dtype)

    def _output_array(self, shape: tuple[int, ...]):
        """An output array in the backend's memory (zeros)."""
        return self.device.output_array(shape, self.dtype)

    def _noise(self, shape, seed_key: tuple[int, int], draw: int, stream: int, kind: str):
        """CP noise (runtime/noise.py) drawn where the program runs; the same numbers on
        every backend for the same (seed, draw, stream)."""
        return self.device.noise(shape, self.dtype, seed_key, draw, stream, kind)

    def _non_finite(self, prog: str, key: str, theta, batch, v=None, noise=None) -> None:
        node, where, found = graphs.first_non_finite(self, prog, key, theta, batch, v, noise)
        raise errors.NonFiniteError(
            f"program '{prog}' produced a non-finite '{key}'; "
            + (
                "its values first go non-finite at this node"
                if found
                else f"this output went non-finite in {self.dtype} although the float64 "
                "reference interpreter stays finite there (an overflow of the dtype?)"
            ),
            where=where,
            node=node,
            fix="check the data range and the parameters (overflow in exp, log of a "
            "non-positive value, division by zero); a smaller step or a stabler "
            "expression usually fixes it",
        )
