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
from symcurv.runtime import (
    backends,
    case_expansion,
    graphs,
    initializers,
    model_leaves,
    per_case,
    trace,
    validate,
)
from symcurv.runtime.drivers import Drivers
from symcurv.runtime.state import State
from symcurv.runtime.validate import Checks, all_finite


def extra_leaves(spec: dict, role: str) -> list[tuple[str, bool, int]]:
    """``(name, batched, size)`` of a built program's extra arguments with ``role``
    ("noise", "direction" or "cached"; see codegen/schedule.py), in argument order."""
    out = []
    for name, batched, size, r in spec.get("extras", []):
        if r == role:
            out.append((name, bool(batched), int(size)))
    return out


def _batch_size(batch: Mapping[str, np.ndarray]) -> int:
    """B of a batch that ``run`` has already checked."""
    return len(next(iter(batch.values()))) if batch else 1


def _has_cached(extras: Mapping | None) -> bool:
    """Does ``extras`` hold a State's cached static values (leaves "cache...")?"""
    return bool(extras) and any(k.startswith("cache") for k in extras)


def _driver_flags(spec: dict, returned) -> tuple[bool, bool]:
    """(did a batch guard fire, did every output bound hold) from what a CPU driver
    returns: the first flag if it guards a leaf, the second if it bounds an output, in
    that order (codegen/guards.py); a driver with neither returns None."""
    flags = list(returned) if isinstance(returned, tuple) else [returned]
    guard = flags.pop(0) if spec.get("guarded") else False
    return bool(guard), bool(flags.pop(0)) if spec.get("bounded") else False


class Program:
    """Compiled programs loaded from a build directory (see ``symcurv.runtime.build``)."""

    extra_leaves = staticmethod(extra_leaves)

    def __init__(self, build_dir: str, manifest: dict, modules: dict[str, ModuleType]) -> None:
        self.build_dir = build_dir
        self.manifest = manifest
        self._modules = modules
        self._drivers = Drivers(modules, manifest["backend"])  # Python or compiled drivers
        self.dtype = np.dtype(manifest["dtype"])
        self.backend = manifest["backend"]
        self.device = backends.get(self.backend)  # where the kernels run (runtime/backends.py)
        self.name = manifest["model"]
        self.params = {p["name"]: p for p in manifest["params"]}
        self.n_params = int(manifest["n_params"])
        self.inputs = {d["name"]: d for d in manifest["inputs"]}
        self.programs = tuple(
            k for k in manifest["programs"] if not k.endswith((".static", ".whole"))
        )
        self._buffers: dict[tuple[str, int], list | dict] = {}  # scratch, reused outputs
        # the input checks of every call (runtime/validate.py), shared with State
        self.checks = Checks(self.name, self.dtype, self.n_params, self.params, self.inputs)
        self.checks = case_expansion.wrap(self.checks, manifest)  # exact SM: B·D cases

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
        theta = self.checks.vector(theta, "theta")
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
        return float(self.run("loss", theta, batch, seed=seed)["objective"][0])

    def grad(
        self, theta: np.ndarray, batch: Mapping[str, np.ndarray], seed=None
    ) -> tuple[float, np.ndarray]:
        """``(loss, ∇θ loss)`` with the gradient flat like θ (``seed`` as for ``loss``:
        both come from the same noise draw)."""
        out = self.run("grad", theta, batch, seed=seed)
        return float(out["objective"][0]), out["grad"]

    def hvp(self, theta: np.ndarray, batch: Mapping[str, np.ndarray], v: np.ndarray, seed=None):
        """H v, exact (Pearlmutter's R-operator), H = ∇²θ of the mean loss; flat like θ
        (``seed`` as for ``loss``)."""
        return self.run("hvp", theta, batch, v=v, seed=seed)["hvp"]

    def gnvp(
        self,
        theta: np.ndarray,
        batch: Mapping[str, np.ndarray],
        v: np.ndarray,
        damping: float = 0.0,
    ) -> np.ndarray:
        """G v + damping·v (Schraudolph), G = Jᵀ H_L J the Gauss-Newton matrix of the mean
        loss, J the Jacobian of the loss's input w.r.t. θ; flat like θ."""
        damping = self.checks.damping(damping)
        gv = self.run("gnvp", theta, batch, v=v)["gnvp"]
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
        See :meth:`State.cp_diag`. ``seed`` draws the estimator's noise; a model with noise
        leaves of its own takes its seed in ``linearize(θ, batch, seed)`` instead."""
        return self.linearize(theta, batch).cp_diag(estimator, noise, samples, seed)

    def becker_lecun_diag(self, theta, batch, seed=None) -> np.ndarray:
        """Becker & LeCun's deterministic diagonal approximation (biased); flat like θ
        (``seed`` as for ``loss``)."""
        return self.run("becker_lecun", theta, batch, seed=seed)["bl"]

    def sum_sq_grad(self, theta, batch, seed=None) -> np.ndarray:
        """Σ_b ∇f_b ⊙ ∇f_b, f_b the per-case loss of case b (not divided by B), without a
        per-case gradient array; flat like θ. Hessian-free's preconditioner."""
        return self.grad_and_sum_sq_grad(theta, batch, seed)[2]

    def grad_and_sum_sq_grad(
        self, theta: np.ndarray, batch: Mapping[str, np.ndarray], seed=None
    ) -> tuple[float, np.ndarray, np.ndarray]:
        """``(loss, ∇θ loss, Σ_b ∇f_b ⊙ ∇f_b)`` from one pass (program ``sum_sq_grad``;
        ``seed`` as for ``loss``)."""
        out = self.run("sum_sq_grad", theta, batch, seed=seed)
        return float(out["objective"][0]), out["grad"], out["sqg"]

    # -- derivatives with respect to the data (per case; see State for the methods) -------
    def input_grad(self, theta, batch, wrt: str | None = None, seed=None) -> np.ndarray:
        """∂f_b/∂x_b for every case, ``(B, D)``: f_b the per-case loss passed to
        ``m.minimize`` (not divided by B), x the input ``wrt`` (optional with one input)."""
        x = per_case.input_name(self.inputs, wrt, self.name)
        out = self.run("input_grad", theta, batch, seed=seed)
        return out[per_case.input_key("input_grad", x)]

    def input_hvp(self, theta, batch, V, wrt: str | None = None, seed=None) -> np.ndarray:
        """(∇²_x f_b) V_b for every case, ``(B, D)``; ``V`` has one direction per case."""
        return self.linearize(theta, batch, seed).input_hvp(V, wrt)

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

    def per_case_grad(self, theta, batch, seed=None) -> np.ndarray:
        """The per-case gradients ∇f_b, f_b the per-case loss of case b (NOT divided by
        B), as a (B, n_params) array: row b is flat like θ (program ``per_case_grad``).
        ``per_case_grad(θ, batch).mean(0)`` is ``grad(θ, batch)[1]``."""
        out = self.run("per_case_grad", theta, batch, seed=seed)
        return per_case.rows(out, self.params, self.n_params, _batch_size(batch), self.dtype)

    def per_case_grad_norm(self, theta, batch, seed=None) -> np.ndarray:
        """‖∇f_b‖ per case, shape (B,), computed WITHOUT forming the per-case gradients
        (program ``per_case_grad_norm``: for W used once per case ‖s_b‖·‖h_b‖; tied
        weights by the pair expansion of ``sum_sq_grad``). Per-example clipping in
        differentially private SGD needs exactly this."""
        return per_case.norms(self.run("per_case_grad_norm", theta, batch, seed=seed))

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

    def _outputs(self, prog: str, spec: dict, B: int, keep: bool, reuse: bool) -> dict:
        """The output arrays of one call: fresh, or kept per (program, B) when ``reuse``.
        Kept arrays stay correct because every kernel overwrites what it writes (entries
        no kernel writes keep their first zeros). A per-case output (B, n) is written whole
        by its kernel or its copy (codegen/schedule.py: ``out_plain``), so it is not zeroed
        first (cp_net's input gradient at B = 1000: 23 µs of np.zeros per call)."""
        zeros = self._output_array if keep else lambda shape: np.zeros(shape, dtype=self.dtype)
        whole = zeros if keep else lambda shape: np.empty(shape, dtype=self.dtype)
        key = ("outputs:" + prog, B)
        if reuse and key in self._buffers:
            return self._buffers[key]
        outs = {p: zeros((self.n_params,)) for p in spec["out_flat"]}
        for k, batched, size in spec["out_plain"]:
            outs[k] = whole((B, size)) if batched else zeros((size,))
        if reuse and not keep:
            if len(self._buffers) > 16:  # a few batch sizes at a time
                self._buffers.pop(next(iter(self._buffers)))
            self._buffers[key] = outs
        return outs

    def built(self, program: str) -> bool:
        """Was ``program`` (or a static part, ``"<name>.static"``) built?"""
        return program in self._modules

    def spec(self, program: str) -> dict:
        """The manifest's record of a built program: its leaves, extras (role "noise",
        "direction", "cached"), outputs and static part (``spec["static"]``)."""
        return self.manifest["programs"][program]

    def run(
        self,
        program: str,
        theta,
        batch,
        *,
        v=None,
        extras: Mapping[str, np.ndarray] | None = None,
        keep: bool = False,
        check: bool = True,
        seed=None,
        reuse: bool = False,
    ) -> dict[str, np.ndarray]:
        """Run one built program; its outputs by key (``"objective"``, ``"grad"``,
        ``"pcg:<param>"``, ...). The seam ``State`` and the tools build on.

        ``check=True`` checks θ, the batch and v first (``self.checks``) and every output
        after (a non-finite one raises, naming its node and DSL line); ``check=False``
        takes them as given (already checked; backend memory). ``extras``: CP noise, input
        directions and a State's cached static values by leaf name; a split program runs
        its static part first unless ``extras`` holds the cached values, or, where it was
        built (``spec["whole"]``, codegen/parts.py), its whole graph as one driver. ``keep=True``
        leaves the outputs in the backend's memory (device arrays on cuda), unchecked.
        ``reuse=True`` writes the outputs into arrays kept per (program, B) like the scratch
        buffers, overwritten by the next such call: for values consumed at once (a split
        program's static part inside one call, whose ~20 fresh (B, n) arrays per call
        cost as much as its kernels at B = 1000)."""
        case_expansion.refuse(self, program)  # per-case results of an expanded model
        if program not in self._modules:
            validate.not_built(self.manifest, program, self.build_dir)
        if check and not keep and case_expansion.expanded(self):  # B·D rows, in chunks
            return case_expansion.run_in_chunks(
                self, program, theta, batch, v=v, extras=extras, seed=seed
            )
        spec, part = self.spec(program), program
        if spec.get("whole") and not _has_cached(extras):
            part = spec["whole"]  # the static and dynamic parts in one driver (codegen/parts.py)
            spec = self.spec(part)
        leaves, wants_v = spec["leaves"], spec.get("vectors")
        guarded = spec.get("guarded", ()) if check and not keep else ()
        if check:  # else as given: a State or a chunked call checked them once already
            theta = self.checks.theta(theta)
            arrays = self.checks.batch(leaves, batch, guarded=guarded)
            vectors = [self.checks.direction(v)] if wants_v else []
        else:
            arrays, vectors = [batch[n] for n in leaves], [self._argument(v)] if wants_v else []
        extras = {k: self._argument(a) for k, a in extras.items()} if extras else {}
        if spec.get("static") and not _has_cached(extras):
            checked = dict(zip(leaves, arrays))  # its outputs are the kernels' own arrays
            extras.update(self.run(spec["static"], theta, checked, check=False, reuse=True))
        B = arrays[0].shape[0] if arrays else 1
        extras = model_leaves.bind(self, spec, extras, B, seed)  # a model's own noise/basis
        outs = self._outputs(part, spec, B, keep, reuse)
        flags = self._drivers.run(
            part,
            theta,
            *vectors,
            *arrays,
            *[extras[e[0]] for e in spec.get("extras", [])],
            *outs.values(),
            *self._scratch(part, spec, B),
        )
        nonfinite, proven = _driver_flags(spec, flags)
        bounded = spec.get("bounded", ())
        if nonfinite and guarded:  # a product of the data held NaN/inf: is it the data?
            self.checks.batch(guarded, batch)  # raises naming the leaf (codegen/guards.py)
        if check and not keep:
            for k, o in outs.items():
                if not (proven and k in bounded) and not all_finite(o):
                    noise = {n: a for n, a in extras.items() if not n.startswith("cache")}
                    checked = dict(zip(leaves, arrays))
                    self.raise_non_finite(program, k, theta, checked, v, noise)
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

    def raise_non_finite(self, prog: str, key: str, theta, batch, v=None, noise=None) -> None:
        """Raise the NonFiniteError of output ``key`` of ``prog``, naming the first node
        whose stored value went non-finite and its DSL line: the call (θ, batch, v, CP
        noise: host arrays) is re-run under runtime/trace.py, which watches each
        kernel's buffers (no reference interpreter, no sympy)."""
        try:
            hit, part = trace.locate(self, self._modules, prog, theta, batch, v, noise)
        except Exception:  # diagnosis is best effort; the error below is raised anyway
            hit, part = None, prog
        if hit is not None:
            node, where = trace.describe(self.build_dir, part, hit)
        else:
            node, where = f"'{key}' of program '{prog}'", f"model '{self.name}'"
        raise errors.NonFiniteError(
            f"program '{prog}' produced a non-finite '{key}'; "
            + (
                f"its values first go non-finite at this node (in {self.dtype})"
                if hit is not None
                else "re-run, every stored value stayed finite (a result that changes "
                "between runs?)"
            ),
            where=where,
            node=node,
            fix="check the data range and the parameters (overflow in exp, log of a "
            "non-positive value, division by zero); a smaller step or a stabler "
            "expression usually fixes it",
        )

    # -- pickling: a reference to the build, never the imported kernel modules -------------------
    def __reduce__(self):
        """A Program pickles as (build directory, backend, dtype, manifest hash); unpickling
        loads that directory with ``sc.load`` (every file's sha256 checked, no sympy) and
        refuses a build whose manifest is not this one (``runtime/build.py: from_build``)."""
        from symcurv.runtime import build  # build imports this module

        ref = (self.build_dir, self.backend, self.dtype.name, self.manifest["manifest_sha256"])
        return build.from_build, ref

    # -- K-FAC (runtime/kfac.py; programs kfac_cp and kfac_empirical) ---------------------
    @property
    def kfac_layers(self) -> dict:
        """``{weight: KFACLayer}``: the dense layers a = W h (+ b) that K-FAC gives a
        Kronecker block (weight, bias, input and pre-activation names, sizes, DSL line)."""
        from symcurv.runtime import kfac

        return kfac.layers(self)

    def kfac_factors(self, theta, batch, curvature: str = "curvature_prop", seed=None):
        """The K-FAC factors of a batch: ``.layers[W].A`` = mean_b ā āᵀ (ā = [h; 1], bias
        last), ``.layers[W].G`` over the pre-activation for ``curvature`` "exact" (KFLR),
        "curvature_prop" (unbiased, one sweep), "fisher_mc" (sampled targets) or
        "empirical" (true targets); ``.diagonal``: the Gauss-Newton diagonal estimate of
        every parameter outside a dense layer (tied weights, ...). See docs/kfac.md."""
        from symcurv.runtime import kfac

        return kfac.factors(self, theta, batch, curvature, seed)
