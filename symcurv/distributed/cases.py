"""Which cases a distributed call covers, and where they live.

A :class:`Cases` stands where a Program takes a batch: all the bound data, or a selection
of global case numbers (what ``fit``'s sampler draws). :func:`plan` maps it onto the
shards: for each shard holding some of the cases, the local rows to use and the cases'
positions in the call's batch — the order of the results, and the row numbers of the CP
noise, so that a call equals the one-process call on ``{k: data[k][cases]}``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping

import numpy as np

from symcurv import errors
from symcurv.optim.training import Sampler, require


class Cases(Mapping):
    """A selection of the bound data's cases (``index`` = their global numbers, in batch
    order; None = every case). As a Mapping it has the data's keys, each giving the
    selected case numbers, so ``len(batch[k])`` is the batch size as an optimizer reads
    it; the arrays themselves stay on the workers."""

    def __init__(self, names: tuple[str, ...], n_cases: int, index=None) -> None:
        self.names, self.n_cases = tuple(names), int(n_cases)
        self.index = None if index is None else np.asarray(index, dtype=np.int64)

    @property
    def size(self) -> int:
        """How many cases are selected."""
        return self.n_cases if self.index is None else len(self.index)

    def numbers(self):
        """The selected global case numbers (a range for all of them)."""
        return range(self.n_cases) if self.index is None else self.index

    def __getitem__(self, key: str):
        if key not in self.names:
            raise KeyError(key)
        return self.numbers()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)

    def __repr__(self) -> str:
        what = "all" if self.index is None else f"{len(self.index)} of the"
        return f"<symcurv Cases: {what} {self.n_cases} cases>"


@dataclasses.dataclass
class Part:
    """One shard's share of a call: shard ``k``, its local ``select``ed rows (None = all),
    and ``positions`` of those cases in the call's batch (a slice when contiguous)."""

    k: int
    select: np.ndarray | None
    positions: np.ndarray | slice


def case_index(cases, n_cases: int) -> np.ndarray | None:
    """A call's ``cases`` argument as global case numbers (None: all), checked."""
    if cases is None:
        return None
    if isinstance(cases, Cases):
        return cases.index
    idx = np.asarray(cases)
    if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer) or idx.size == 0:
        raise errors.BatchError(
            f"cases must be a non-empty 1-D array of case numbers, got shape {idx.shape} "
            f"and dtype {idx.dtype}",
            fix=f"pass integers in 0..{n_cases - 1} (or None for every case)",
        )
    if idx.min() < 0 or idx.max() >= n_cases:
        bad = int(idx[(idx < 0) | (idx >= n_cases)][0])
        raise errors.BatchError(
            f"case number {bad} is outside the bound data ({n_cases} cases)",
            fix=f"pass case numbers in 0..{n_cases - 1}",
        )
    return idx.astype(np.int64)


def plan(index: np.ndarray | None, firsts: np.ndarray) -> list[Part]:
    """The shards' shares of the cases ``index`` (None: every case; shard k's first case
    is ``firsts[k]``, and the last entry of ``firsts`` is N)."""
    n_shards = len(firsts) - 1
    if index is None:
        return [Part(k, None, slice(firsts[k], firsts[k + 1])) for k in range(n_shards)]
    owner = np.searchsorted(firsts, index, side="right") - 1
    parts = []
    for k in range(n_shards):
        positions = np.flatnonzero(owner == k)
        if positions.size:
            parts.append(Part(k, index[positions] - firsts[k], positions))
    return parts


class Target:
    """One task's share of a call: the shard (a future on the workers, or an in-memory
    :class:`~symcurv.distributed.shards.Shard` sent with the task), the number of its first
    case, the local rows selected (None = all), the cases' positions in the call's batch
    and their count."""

    def __init__(self, shard, first: int, select, positions, n: int) -> None:
        self.shard, self.first, self.select, self.positions, self.n = (
            shard,
            first,
            select,
            positions,
            n,
        )

    @property
    def rows(self):
        """CP noise row numbers (None: the worker numbers ``first ...`` itself)."""
        return None if isinstance(self.positions, slice) else self.positions


def combine(kind, targets: list[Target], results: list, B: int):
    """The whole batch's result from the targets' results (see COMBINE; a function
    ``kind(targets, results, B)`` combines results of its own type)."""
    if callable(kind):
        return kind(targets, results, B)
    if isinstance(kind, tuple):
        return tuple(combine(k, targets, [r[i] for r in results], B) for i, k in enumerate(kind))
    if kind == "rows":
        first = np.asarray(results[0])
        out = np.empty((B, *first.shape[1:]), dtype=first.dtype)
        for t, r in zip(targets, results):
            out[t.positions] = r
        return out
    total = None
    for t, r in zip(targets, results):
        term = np.asarray(r) if kind == "sum" else (t.n / B) * np.asarray(r)
        total = term if total is None else total + term
    return float(total) if np.ndim(total) == 0 else total


class ShardSampler(Sampler):
    """``fit``'s sampler for bound data: the same case order as :class:`Sampler` for the
    same seed and number of cases (so a run over shards draws the one-process minibatches),
    handing out :class:`Cases` instead of arrays."""

    def __init__(self, names: tuple[str, ...], n_cases: int, batch_size: int, seed=0) -> None:
        require(
            isinstance(batch_size, (int, np.integer)) and batch_size >= 1,
            "batch_size",
            batch_size,
            "as a positive integer",
        )
        self.names, self.n_cases = tuple(names), int(n_cases)
        self.batch_size = min(int(batch_size), self.n_cases)
        self.rng = np.random.default_rng(seed)
        self._order = self.rng.permutation(self.n_cases)
        self._pos = 0

    def minibatch(self, size: int | None = None) -> Cases:
        """The next ``size`` cases of the epoch's order (as Sampler.minibatch)."""
        size = self.batch_size if size is None else min(int(size), self.n_cases)
        if size == self.n_cases:
            return self.full()
        if self._pos + size > self.n_cases:
            self._order = self.rng.permutation(self.n_cases)
            self._pos = 0
        idx = self._order[self._pos : self._pos + size]
        self._pos += size
        return Cases(self.names, self.n_cases, idx)

    def full(self) -> Cases:
        """Every case."""
        return Cases(self.names, self.n_cases)
