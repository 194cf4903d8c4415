"""The training loop every optimizer shares: ``fit``, its data source and its checkpoints.

An optimizer is any object with this small interface (HessianFree, SGD and Adam have it)::

    opt.prog                        # the Program it drives
    opt.default_batch_size          # minibatch size when fit() is given none
    opt.config() -> dict            # its options, JSON-able (recorded in checkpoints)
    opt.init(theta) -> state        # a dict of floats, ints and numpy arrays
    opt.step(theta, data, state) -> (theta, state, info)

``data`` is a :class:`Sampler` (minibatches and the whole dataset); ``info`` is a dict of
numbers that becomes one row of the history. ``step`` returns new arrays and never keeps
hidden state outside ``state``: a checkpoint of (θ, state, sampler) then resumes a run
exactly where it stopped, giving bit-for-bit the same trajectory.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import math
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping
from typing import IO, Any, Protocol

import numpy as np

from symcurv import errors
from symcurv.progress import bar as progress_bar

CHECKPOINT_FORMAT = 1


OptimizerError = errors.OptimizerError  # re-exported by symcurv.optim


def require(ok: bool, option: str, value: Any, want: str) -> None:
    """Raise an :class:`OptimizerError` for ``option = value`` unless ``ok``."""
    if not ok:
        raise OptimizerError(f"{option} = {value!r}", fix=f"pass {option} {want}")


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


class Optimizer(Protocol):
    prog: Any
    default_batch_size: int

    def config(self) -> dict[str, Any]:
        """The options (JSON-able), as checkpoints record them."""
        ...

    def init(self, theta: np.ndarray) -> dict[str, Any]:
        """The optimizer's state at θ before the first step (arrays and numbers)."""
        ...

    def step(
        self, theta: np.ndarray, data: Sampler, state: dict[str, Any]
    ) -> tuple[np.ndarray, dict[str, Any], dict[str, Any]]:
        """One iteration on minibatches drawn from ``data``: ``(theta, state, info)``,
        ``info`` the history row's fields (objective, ...)."""
        ...


class Sampler:
    """The data an optimizer draws from: random minibatches (cases without replacement
    within an epoch, reshuffled each epoch) and the whole dataset. Its RNG state and epoch
    order are part of a checkpoint."""

    def __init__(self, data: Mapping[str, np.ndarray], batch_size: int, seed: int | None = 0):
        if not isinstance(data, Mapping) or not data:
            raise errors.BatchError(
                f"data must be a non-empty dict of arrays, got {type(data).__name__}",
                fix="pass {'x': X, ...} with cases as rows, as for the programs",
            )
        self.data = {k: np.asarray(v) for k, v in data.items()}
        rows = {k: (v.shape[0] if v.ndim else None) for k, v in self.data.items()}
        if len(set(rows.values())) != 1 or None in rows.values():
            raise errors.BatchError(
                f"the data's arrays have different numbers of rows: {rows}",
                fix="give every key the same cases as rows",
            )
        self.n_cases = next(iter(rows.values()))
        if self.n_cases == 0:
            raise errors.BatchError("the data has no cases", fix="pass at least one case")
        require(
            isinstance(batch_size, (int, np.integer)) and batch_size >= 1,
            "batch_size",
            batch_size,
            "as a positive integer",
        )
        self.batch_size = min(int(batch_size), self.n_cases)
        self.rng = np.random.default_rng(seed)
        self._order = self.rng.permutation(self.n_cases)
        self._pos = 0

    def minibatch(self, size: int | None = None) -> dict[str, np.ndarray]:
        """The next ``size`` cases (``batch_size`` if None) of the current epoch's order."""
        size = self.batch_size if size is None else min(int(size), self.n_cases)
        if size == self.n_cases:
            return self.data
        if self._pos + size > self.n_cases:  # a new epoch; the short remainder is skipped
            self._order = self.rng.permutation(self.n_cases)
            self._pos = 0
        idx = self._order[self._pos : self._pos + size]
        self._pos += size
        return {k: v[idx] for k, v in self.data.items()}

    def full(self) -> dict[str, np.ndarray]:
        """Every case (the paper's gradient batch, §4.3)."""
        return self.data

    def state(self) -> tuple[dict[str, Any], np.ndarray]:
        """``(meta, order)``: the generator state and position, and the epoch's case
        order, for a checkpoint (``restore`` takes them back)."""
        return {"rng": self.rng.bit_generator.state, "pos": self._pos}, self._order

    def restore(self, meta: dict[str, Any], order: np.ndarray) -> None:
        """Continue the sequence saved by ``state`` (a resumed run draws the same cases)."""
        self.rng.bit_generator.state = meta["rng"]
        self._pos = int(meta["pos"])
        self._order = np.asarray(order)


@dataclasses.dataclass
class FitResult:
    """``theta`` after the last iteration; ``history`` one dict per iteration (the
    optimizer's info, plus ``iteration``, ``time`` — cumulative seconds in optimizer steps —,
    ``step_time`` and ``test_objective`` when eval data was given); ``state`` the
    optimizer's state, enough to continue."""

    theta: np.ndarray
    history: list[dict[str, Any]]
    state: dict[str, Any]

    def column(self, key: str) -> np.ndarray:
        """One history field as a float array (NaN where an iteration lacks it)."""
        return np.array([float(row.get(key, math.nan)) for row in self.history])

    def save_history(self, path: str | os.PathLike) -> str:
        """Write the history as JSON (a list of rows; NaN/inf as null) or CSV, by suffix."""
        path = os.fspath(path)
        suffix = os.path.splitext(path)[1].lower()
        require(suffix in (".json", ".csv"), "path", path, "ending in .json or .csv")
        if suffix == ".json":
            rows = [{k: _finite_or_none(v) for k, v in row.items()} for row in self.history]
            text = json.dumps(rows, indent=1, default=_json_default, allow_nan=False)
            write_atomically(path, lambda f: f.write(text), mode="w")
            return path
        columns = list(dict.fromkeys(k for row in self.history for k in row))

        def write_csv(f) -> None:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(self.history)

        write_atomically(path, write_csv, mode="w")
        return path


def fit(
    prog,
    opt: Optimizer,
    data: Mapping[str, np.ndarray],
    iterations: int = 100,
    theta: np.ndarray | None = None,
    *,
    batch_size: int | None = None,
    seed: int | None = 0,
    progress: bool = True,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 1,
    resume: bool = False,
    callback: Callable[[int, np.ndarray, dict], bool | None] | None = None,
    eval_data: Mapping[str, np.ndarray] | None = None,
    eval_every: int = 1,
) -> FitResult:
    """Run ``iterations`` steps of ``opt`` on ``data`` from ``theta`` (``prog.init(seed)``
    if None).

    ``batch_size``: the minibatch size the optimizer draws (SGD's batch, Hessian-free's
    curvature batch); ``opt.default_batch_size`` if None. ``seed`` seeds the sampler (and
    the initial θ). ``checkpoint``: a file written atomically every ``checkpoint_every``
    iterations and at the end, holding θ, the optimizer state, the sampler's RNG and the
    history; with ``resume=True`` an existing checkpoint is continued (``theta`` is then
    ignored) up to ``iterations`` in total, exactly as if the run had never stopped.
    ``callback(iteration, theta, row)`` runs after each iteration; returning False stops.
    ``eval_data``: the mean loss on it is recorded as ``test_objective`` every
    ``eval_every`` iterations. A progress bar goes to stderr unless ``progress=False``.
    A model with noise leaves (CP score matching) draws new noise every iteration, under
    the seed ``[seed, iteration]`` (fresh entropy for the base when ``seed`` is None); its
    ``test_objective`` uses the seed ``[seed, 0]``.
    """
    for name in ("init", "step", "config"):
        require(callable(getattr(opt, name, None)), "opt", opt, f"an optimizer with .{name}()")
    opt_prog = getattr(opt, "prog", prog)
    require(
        opt_prog.n_params == prog.n_params,
        "opt",
        opt,
        f"built on a program with {prog.n_params} parameters (this one's)",
    )
    require(
        isinstance(iterations, (int, np.integer)) and iterations >= 0,
        "iterations",
        iterations,
        "as an integer ≥ 0",
    )
    for option, value in (("checkpoint_every", checkpoint_every), ("eval_every", eval_every)):
        require(isinstance(value, (int, np.integer)) and value >= 1, option, value, "≥ 1")
    sampler = Sampler(data, opt.default_batch_size if batch_size is None else batch_size, seed)
    history: list[dict[str, Any]] = []
    if checkpoint is not None and resume and os.path.exists(checkpoint):
        theta, state, history = load_checkpoint(checkpoint, prog, opt, sampler)
    else:
        theta = prog.init(seed) if theta is None else _check_theta(prog, theta)
        state = opt.init(theta)
    start = len(history)
    elapsed = float(history[-1]["time"]) if history else 0.0
    bar = ProgressBar(iterations, type(opt).__name__, enabled=progress, done=start)
    noise_seed = _noise_seed(prog, seed)
    try:
        for it in range(start + 1, iterations + 1):
            t0 = time.perf_counter()
            with _seeded(opt, noise_seed, it):
                theta, state, info = opt.step(theta, sampler, state)
            step_time = time.perf_counter() - t0
            elapsed += step_time
            row = {"iteration": it, **info, "step_time": step_time, "time": elapsed}
            if eval_data is not None and (it % eval_every == 0 or it == iterations):
                kw = {} if noise_seed is None else {"seed": [noise_seed, 0]}
                row["test_objective"] = float(prog.loss(theta, eval_data, **kw))
            history.append(row)
            last = it == iterations
            stop = callback is not None and callback(it, theta, row) is False
            if checkpoint is not None and (it % checkpoint_every == 0 or last or stop):
                save_checkpoint(checkpoint, prog, opt, theta, state, sampler, history)
            bar.update(it, row)
            if stop:
                break
    finally:
        bar.close()
    return FitResult(theta=theta, history=history, state=state)


# -- models with noise leaves (CP score matching) ----------------------------------------------
def _noise_seed(prog, seed) -> int | None:
    """The base of the per-iteration noise seeds of a model with noise leaves (None for a
    noise-free one): ``seed``, or fresh entropy when it is None."""
    from symcurv.runtime import model_leaves

    if getattr(prog, "manifest", None) is None or not model_leaves.noisy(prog):
        return None
    return int(np.random.SeedSequence(seed).entropy % 2**63) if seed is None else int(seed)


class _SeededProgram:
    """``prog`` whose ``loss``/``grad``/``grad_and_sum_sq_grad``/``linearize`` draw the
    model's noise under one seed: every call an optimizer makes in one step sees the same
    draw (a fixed objective, as Hessian-free's reduction ratio needs), and the next step
    a new one."""

    def __init__(self, prog, seed) -> None:
        self._prog, self._seed = prog, seed

    def __getattr__(self, name: str):
        return getattr(self._prog, name)

    def loss(self, theta, batch):
        return self._prog.loss(theta, batch, seed=self._seed)

    def grad(self, theta, batch):
        return self._prog.grad(theta, batch, seed=self._seed)

    def linearize(self, theta, batch):
        return self._prog.linearize(theta, batch, seed=self._seed)

    def grad_and_sum_sq_grad(self, theta, batch):
        return self._prog.grad_and_sum_sq_grad(theta, batch, seed=self._seed)


@contextlib.contextmanager
def _seeded(opt, base: int | None, iteration: int):
    """Within the block ``opt.prog`` draws the noise of seed ``[base, iteration]`` (a new
    draw every iteration, reproducible from fit's ``seed``, resumed runs included)."""
    if base is None:
        yield
        return
    prog = opt.prog
    opt.prog = _SeededProgram(prog, [base, iteration])
    try:
        yield
    finally:
        opt.prog = prog


# -- checkpoints -----------------------------------------------------------------------------
def save_checkpoint(path, prog, opt, theta, state, sampler: Sampler, history) -> None:
    """θ, optimizer state, sampler and history in one .npz-format file, replaced atomically
    (a crash mid-write leaves the previous checkpoint intact)."""
    arrays = {"theta": np.asarray(theta)}
    scalars = {}
    for k, v in state.items():
        if isinstance(v, np.ndarray):
            arrays[f"state/{k}"] = v
        else:
            scalars[k] = v
    sampler_meta, order = sampler.state()
    arrays["sampler/order"] = order
    meta = {
        "format": CHECKPOINT_FORMAT,
        "model": getattr(prog, "name", None),
        "n_params": int(prog.n_params),
        "optimizer": type(opt).__name__,
        "config": opt.config(),
        "state": scalars,
        "sampler": {**sampler_meta, "n_cases": sampler.n_cases},
        "history": history,
    }
    # json keeps NaN/inf (ρ = −inf) and Python floats round-trip exactly: resuming is exact
    arrays["meta"] = np.array(json.dumps(meta, default=_json_default))
    write_atomically(path, lambda f: np.savez(f, **arrays))


def load_checkpoint(path, prog, opt, sampler: Sampler):
    """``(theta, state, history)`` from a checkpoint; restores ``sampler`` in place."""
    try:
        with np.load(os.fspath(path), allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            arrays = {k: z[k] for k in z.files if k != "meta"}
    except (OSError, ValueError, KeyError) as e:
        raise OptimizerError(
            f"cannot read checkpoint {os.fspath(path)!r}: {e}",
            fix="delete it, or pass resume=False to start afresh",
        ) from e
    mismatch = {
        "format": (meta.get("format"), CHECKPOINT_FORMAT),
        "n_params": (meta.get("n_params"), prog.n_params),
        "optimizer": (meta.get("optimizer"), type(opt).__name__),
        "number of data cases": (meta.get("sampler", {}).get("n_cases"), sampler.n_cases),
    }
    bad = {k: v for k, v in mismatch.items() if v[0] != v[1]}
    if bad:
        raise OptimizerError(
            f"checkpoint {os.fspath(path)!r} does not fit this run: "
            + "; ".join(f"{k} {a!r} there, {b!r} here" for k, (a, b) in bad.items()),
            fix="resume with the same model, optimizer and data, or pass resume=False",
        )
    if meta["config"] != json.loads(json.dumps(opt.config(), default=_json_default)):
        warnings.warn(
            f"resuming {os.fspath(path)!r} with different optimizer options "
            f"(was {meta['config']}): the trajectory will differ from an uninterrupted run",
            stacklevel=3,
        )
    state = dict(meta["state"])
    state.update({k[len("state/") :]: v for k, v in arrays.items() if k.startswith("state/")})
    sampler.restore(meta["sampler"], arrays["sampler/order"])
    theta = np.asarray(arrays["theta"], dtype=prog.dtype)
    return theta, state, list(meta["history"])


# -- helpers ---------------------------------------------------------------------------------
def _check_theta(prog, theta) -> np.ndarray:
    theta = np.array(theta, dtype=prog.dtype)  # a copy: fit never writes into the caller's
    if theta.shape != (prog.n_params,):
        raise errors.BatchError(
            f"theta has shape {theta.shape}",
            fix=f"pass a flat vector of length n_params = {prog.n_params}",
        )
    if not np.isfinite(theta).all():
        raise errors.NonFiniteError(
            "the initial theta is not finite", fix="start from finite parameters"
        )
    return theta


def _json_default(v):
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, np.ndarray):
        return v.tolist()
    raise TypeError(f"{type(v).__name__} is not JSON-able")


def _finite_or_none(v):
    if is_number(v) and not math.isfinite(float(v)):
        return None
    return v


def write_atomically(path, write: Callable[[IO], Any], mode: str = "wb") -> None:
    """``write(f)`` into a temporary file beside ``path``, synced, then renamed over ``path``
    in one step: a crash at any point leaves either the old file or the new one, whole."""
    path = os.fspath(path)
    fd, tmp = tempfile.mkstemp(
        dir=os.path.dirname(os.path.abspath(path)), prefix=os.path.basename(path), suffix=".tmp"
    )
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"newline": ""})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class ProgressBar:
    """``fit``'s progress: a tqdm bar on stderr (``tqdm.auto``: a widget in notebooks),
    ``HessianFree: 30%|███       | 12/40 [00:12<00:28, objective=0.123, damping=3]``,
    redrawn at most ten times a second; nothing at all with ``enabled=False``."""

    FIELDS = ("objective", "test_objective", "damping", "rho", "cg_iterations")

    def __init__(self, total: int, label: str, enabled: bool = True, done: int = 0) -> None:
        self.bar = progress_bar(total=total, initial=done, desc=label, enabled=enabled)

    def update(self, n: int, row: Mapping[str, Any]) -> None:
        if self.bar.disable:
            return
        fields = {
            k: f"{row[k]:.3g}" if is_number(row[k]) else str(row[k])
            for k in self.FIELDS
            if k in row
        }
        self.bar.set_postfix(fields, refresh=False)
        self.bar.update(n - self.bar.n)

    def close(self) -> None:
        self.bar.close()
