"""The checks of every call's inputs: θ, directions, the batch, class labels, damping.

Every compiled program is called with user data; a wrong key, width, dtype or a non-finite
value is a ``BatchError``/``NonFiniteError`` naming the DSL line of the leaf, the node and
the fix, before any kernel runs (a Numba typing error or a NaN handed back silently would
name neither). ``Program`` and ``State`` both check through one ``Checks`` object
(``prog.checks``), built from the manifest.

The checks run on every call, so they are cheap where the data is already right: an array of
the build's dtype, shape and layout is taken as it is (no conversion, no copy), and the
finiteness scan is one compiled pass (``all_finite``) instead of numpy's ``isfinite`` (a
temporary boolean array, then a reduction: at B = 1 the checks were 3/4 of a grad call).
Only when a scan fails does the error path look for the offending entry and name it. A
leaf that a GEMM of the CPU driver reads whole is not scanned here: the driver checks that
product, which is non-finite wherever the leaf is, and the caller scans the leaf only
when it is (``codegen/guards.py``; the same error, cheaper where the layer narrows).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from numba import njit

from symcurv import errors


@njit(cache=True, nogil=True)
def _all_finite_flat(x) -> bool:
    """True if no entry of the 1-D array ``x`` is NaN or ±inf: an integer OR over the
    whole array, with no branch in the loop, which LLVM turns into packed compares (0.1 ns
    per entry; numpy's isfinite(x).all() writes a boolean temporary first and is 1.5-3x
    slower; an early exit per block, tried, kept LLVM from vectorising). A bad entry is
    the rare error path: the caller then finds and names it."""
    bad = 0
    for i in range(x.size):
        bad |= not np.isfinite(x[i])
    return bad == 0


all_finite_flat = _all_finite_flat  # what a generated driver's batch guard calls


# fastmath={"reassoc"}: one partial sum per vector lane, so the loop vectorises; NaN and
# ±inf still propagate (no nnan/ninf), which the test below relies on
@njit(cache=True, nogil=True, fastmath={"reassoc"})
def _sum_squares(x) -> float:
    """Σ x_i² in float64 over a 1-D array; NaN if an entry is NaN, inf if one is ±inf or
    the sum overflows."""
    acc = 0.0
    for i in range(x.size):
        v = np.float64(x[i])
        acc += v * v
    return acc


@njit(cache=True, nogil=True)
def product_bounded(a, b) -> bool:
    """Is every entry of a product out = a·b certainly finite, given its operands' entries
    as 1-D arrays ``a`` and ``b`` (any strides; however the product reads them, one
    rounding per term)? True when a and b are finite and ‖a‖_F ‖b‖_F < max/2
    (codegen/guards.py: a driver's output bound); False says only "not proven", and the
    caller then scans the product."""
    half_max = np.finfo(a.dtype).max / 2
    return np.sqrt(_sum_squares(a)) * np.sqrt(_sum_squares(b)) < half_max


def all_finite(a: np.ndarray) -> bool:
    """Are all entries of the numeric array ``a`` finite? (one compiled pass, no temporary)"""
    if a.dtype.kind != "f":  # integers and booleans are always finite
        return True
    # θ, v and a flat output (most calls) as they are: a reshape costs a third of the scan
    return _all_finite_flat(a if a.ndim == 1 else a.reshape(-1))


def shape_hint(name: str, a: np.ndarray, info: dict) -> str:
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
            f"np.eye({n})[labels] (shape (B, {n})), or declare m.target('{name}', {n}, "
            "labels=True) to pass the labels"
        )
    if n == 1:
        return f"{hint}; a vector of B cases of width 1 needs {name}[:, None]"
    if a.shape[0] == n:
        return f"{hint}; a single case needs {name}[None, :]"
    return hint


class Checks:
    """The input checks of one built model: ``theta``, ``vector``, ``direction``,
    ``batch`` (class labels included) and ``damping``; each returns the checked value as
    the kernels take it (contiguous, the build's dtype) or raises naming the fix."""

    def __init__(
        self, model: str, dtype: np.dtype, n_params: int, params: dict, inputs: dict
    ) -> None:
        self.model = model
        self.dtype = np.dtype(dtype)
        self.n_params = n_params
        self.params = params
        self.inputs = inputs

    @property
    def where(self) -> str:
        return f"model '{self.model}'"

    # -- flat vectors -------------------------------------------------------------------------
    def vector(self, v, what: str) -> np.ndarray:
        """A flat vector of n_params real numbers (θ, v, a gradient), not yet converted."""
        v = np.asarray(v)
        if v.ndim != 1 or v.shape[0] != self.n_params:
            raise errors.BatchError(
                f"{what} has shape {v.shape}",
                where=self.where,
                fix=f"pass a flat vector of length n_params = "
                f"{self.n_params} (prog.flatten turns a dict into one)",
            )
        if not np.issubdtype(v.dtype, np.number) or np.iscomplexobj(v):
            raise errors.BatchError(
                f"{what} has dtype {v.dtype}",
                where=self.where,
                fix=f"pass real numbers ({self.dtype})",
            )
        return v

    def _ready(self, a, shape: tuple[int, ...]) -> bool:
        """Is ``a`` already what the kernels take: an ndarray of the build's dtype, of
        ``shape``, C-contiguous? (then it is passed as it is)"""
        return (
            type(a) is np.ndarray
            and a.dtype == self.dtype
            and a.shape == shape
            and a.flags.c_contiguous
        )

    def theta(self, theta) -> np.ndarray:
        """θ, finite; a non-finite entry names its parameter."""
        if not self._ready(theta, (self.n_params,)):
            theta = np.ascontiguousarray(self.vector(theta, "theta"), dtype=self.dtype)
        if not all_finite(theta):
            bad = int(np.flatnonzero(~np.isfinite(theta))[0])
            name = next(
                n for n, p in self.params.items() if p["offset"] <= bad < p["offset"] + p["size"]
            )
            raise errors.NonFiniteError(
                f"theta[{bad}] = {theta[bad]} (in parameter '{name}') is not finite",
                where=self.where,
                node=f"'{name}'",
                fix="restart from finite parameters (a diverged optimizer step?)",
            )
        return theta

    def direction(self, v) -> np.ndarray:
        """The direction v of a curvature product (H v, G v), finite."""
        if not self._ready(v, (self.n_params,)):
            v = np.ascontiguousarray(self.vector(v, "v"), dtype=self.dtype)
        if not all_finite(v):
            raise errors.NonFiniteError(
                f"v[{int(np.flatnonzero(~np.isfinite(v))[0])}] is not finite",
                where=self.where,
                fix="pass a finite direction v",
            )
        return v

    def damping(self, damping) -> float:
        """A finite λ ≥ 0."""
        try:
            if isinstance(damping, (str, bytes)):
                raise TypeError
            d = float(damping)
        except (TypeError, ValueError):
            d = float("nan")
        if not np.isfinite(d) or d < 0:
            raise errors.BatchError(
                f"damping = {damping!r}", where=self.where, fix="pass a finite damping λ ≥ 0"
            )
        return d

    # -- the batch ------------------------------------------------------------------------------
    def batch(
        self,
        leaves: Sequence[str],
        batch: Mapping[str, np.ndarray],
        copy: bool = False,
        guarded: Sequence[str] = (),
    ) -> list[np.ndarray]:
        """The batch's arrays for ``leaves``, checked, contiguous and of the build's dtype
        (class labels as a (B, 1) column). ``np.ascontiguousarray`` returns the caller's
        own buffer when it already fits, so ``copy=True`` (a State) asks for arrays no
        later write by the caller can reach. A ``guarded`` leaf that is already what the
        kernels take is not scanned for non-finite entries here: the program's driver
        checks the product that reads it (``codegen/guards.py``) and the caller scans the
        leaf only when that check fails."""
        if type(batch) is not dict and not isinstance(batch, Mapping):  # dict: no ABC check
            raise errors.BatchError(
                f"a batch must be a dict of arrays, got {type(batch).__name__}",
                where=self.where,
                fix=f"pass {{{', '.join(repr(k) for k in self.inputs)}}}",
            )
        if not batch.keys() <= self.inputs.keys():
            unknown = sorted(set(batch) - set(self.inputs))
            raise errors.BatchError(
                f"the batch has unknown key(s) {unknown}",
                where=self.where,
                fix=f"the model's inputs and targets are {list(self.inputs)}",
            )
        arrays, B = [], None
        for name in leaves:
            a = self._array(name, batch, copy, name in guarded)
            if B is None:
                B = a.shape[0]
            elif a.shape[0] != B:
                raise errors.BatchError(
                    f"batch['{name}'] has {a.shape[0]} rows, but another key has {B}",
                    where=self.inputs[name].get("origin"),
                    node=f"'{name}'",
                    fix="give every key the same rows",
                )
            arrays.append(a)
        if B == 0:
            raise errors.BatchError(
                "the batch is empty", where=self.where, fix="pass at least one case"
            )
        return arrays

    def _array(self, name: str, batch: Mapping, copy: bool, guarded: bool = False) -> np.ndarray:
        """One key of the batch, checked: present, real, (B, width), finite (unless
        ``guarded`` and ready as it is: see ``batch``)."""
        info = self.inputs[name]
        a = batch.get(name)
        # the common case first: already (B, width) of the build's dtype, contiguous
        if (
            not copy
            and type(a) is np.ndarray
            and a.ndim == 2
            and not info.get("labels")
            and self._ready(a, (a.shape[0], info["size"]))
        ):
            if guarded or all_finite(a):
                return a
        where, node = info.get("origin", self.where), f"'{name}'"
        if name not in batch:
            raise errors.BatchError(
                f"the batch has no key '{name}' ({info['role']} of width {info['size']})",
                where=where,
                node=node,
                fix=f"add batch['{name}'] as an array of shape (B, {info['size']})",
            )
        a = np.asarray(batch[name])
        width = info["size"]
        if info.get("labels"):  # one class label per case: a (B, 1) column
            a, width = self.labels(name, a), 1
        if (
            a.dtype == object
            or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool)
            or np.iscomplexobj(a)
        ):
            raise errors.BatchError(
                f"batch['{name}'] has dtype {a.dtype}",
                where=where,
                node=node,
                fix=f"pass real numbers (converted to {self.dtype})",
            )
        if a.ndim != 2 or a.shape[1] != width:
            raise errors.BatchError(
                f"batch['{name}'] has shape {a.shape}, expected (B, {info['size']})",
                where=where,
                node=node,
                fix=shape_hint(name, a, info),
            )
        a = np.array(a, dtype=self.dtype, order="C", copy=True if copy else None)
        if not all_finite(a):
            r, c = np.argwhere(~np.isfinite(a))[0]
            raise errors.NonFiniteError(
                f"batch['{name}'][{r}, {c}] = {a[r, c]} is not finite",
                where=where,
                node=node,
                fix="clean the data (drop or impute NaN/inf rows) before calling",
            )
        return a

    def labels(self, name: str, a: np.ndarray) -> np.ndarray:
        """Class labels (B,) of a ``labels=True`` target, checked, as a (B, 1) column (a
        view): the kernels read the label c and form its one-hot row [c = k] in registers
        (ops/losses.py one_hot), so no B × K array is written per call. They take the
        build's float dtype, like every kernel argument (one argument type for both
        backends and the reference interpreter): integers below 2**24 are exact in
        float32 and below 2**53 in float64, far beyond any class count."""
        info = self.inputs[name]
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
        return a[:, None]

    def input_direction(self, V, x: str, B: int) -> np.ndarray:
        """A per-case direction V of input ``x`` (``(B, width)``, finite)."""
        info = self.inputs[x]
        V = np.asarray(V)
        want = (B, info["size"])
        if V.shape != want or not np.issubdtype(V.dtype, np.number) or np.iscomplexobj(V):
            raise errors.BatchError(
                f"the direction V has shape {V.shape} and dtype {V.dtype}",
                where=info.get("origin", self.where),
                node=f"'{x}'",
                fix=f"pass real numbers of shape {want}: one direction per case, like batch['{x}']",
            )
        V = np.ascontiguousarray(V, dtype=self.dtype)
        if not all_finite(V):
            r, c = np.argwhere(~np.isfinite(V))[0]
            raise errors.NonFiniteError(
                f"V[{r}, {c}] = {V[r, c]} is not finite",
                where=info.get("origin", self.where),
                node=f"'{x}'",
                fix="pass a finite direction",
            )
        return V


# the name a user passes in programs= for each built program (cp_diag builds every estimator)
PUBLIC_PROGRAM = {
    "cp_S": "cp_diag",
    "cp_TU": "cp_diag",
    "cp_GN": "cp_diag",
    "becker_lecun": "becker_lecun_diag",
    "input_diag_S": "input_diag_hessian",
    "input_diag_TU": "input_diag_hessian",
    "input_bl": "input_diag_hessian",
    "kfac_cp": "kfac",
    "kfac_empirical": "kfac",
}


def not_built(manifest: dict, prog: str, build_dir) -> None:
    """Raise the error for a program a build lacks: skipped (with the reason the build
    recorded) or not asked for (with the ``programs=`` name that builds it)."""
    reason = manifest.get("skipped", {}).get(prog)
    if reason:
        kind = manifest.get("skipped_errors", {}).get(prog, "LossError")
        cls = getattr(errors, kind, errors.NotApplicableError)
        raise cls(f"program '{prog}' does not exist for this model: {reason}")
    public = PUBLIC_PROGRAM.get(prog, prog)
    built = [k for k in manifest["programs"] if not k.endswith((".static", ".whole"))]
    raise errors.BuildError(
        f"program '{prog}' was not built (this build has {built})",
        where=build_dir,
        fix=f"rebuild with programs including '{public}'"
        + (f" (or just '{prog}')" if public != prog else ""),
    )
