"""Shards: consecutive runs of the training cases, held by Dask workers.

A dataset of N cases is cut into shards of consecutive cases; shard k holds cases
``first_k ... first_k + n_k − 1`` (its *global* case numbers; the client keeps the
``first_k`` and passes them with each call). A shard is either a slice of
in-memory arrays (scattered to a worker once) or one ``.npz`` file that a worker loads
itself, so the data never has to pass through, or fit in, the client.

This module runs on the workers too: it imports numpy and dask's ``sizeof`` only.
"""

from __future__ import annotations

import dataclasses
import os
import zipfile
from collections.abc import Mapping

import numpy as np
from dask.sizeof import sizeof

from symcurv import errors


class ShardError(errors.BatchError):
    """A shard file that is missing, unreadable or inconsistent with the others."""


@dataclasses.dataclass
class Shard:
    """A run of consecutive cases: ``arrays`` by input name, cases as rows. ``source`` names
    it in errors (a file path, or "data[a:b]")."""

    arrays: dict[str, np.ndarray]
    source: str

    @property
    def n_cases(self) -> int:
        return len(next(iter(self.arrays.values())))

    def batch(self, rows: np.ndarray | None) -> dict[str, np.ndarray]:
        """The batch of local ``rows`` (all of them if None)."""
        if rows is None:
            return self.arrays
        return {k: v[rows] for k, v in self.arrays.items()}


@sizeof.register(Shard)
def _sizeof_shard(shard: Shard) -> int:
    # Dask places a task where the bytes of its inputs are: a shard's bytes are its arrays
    return sum(int(a.nbytes) for a in shard.arrays.values())


def check_data(data: Mapping[str, np.ndarray], names) -> int:
    """N, the common number of rows of ``data`` (a dict of arrays with keys ``names``)."""
    if not isinstance(data, Mapping) or not data:
        raise errors.BatchError(
            f"data must be a non-empty dict of arrays or a list of .npz files, got "
            f"{type(data).__name__}",
            fix=f"pass {{{', '.join(repr(n) for n in names)}}} with cases as rows",
        )
    rows = {k: np.shape(v)[0] if np.ndim(v) else None for k, v in data.items()}
    if len(set(rows.values())) != 1 or None in rows.values():
        raise errors.BatchError(
            f"the data's arrays have different numbers of rows: {rows}",
            fix="give every key the same cases as rows",
        )
    n = next(iter(rows.values()))
    if n == 0:
        raise errors.BatchError("the data has no cases", fix="pass at least one case")
    return int(n)


def bounds(n_cases: int, n_shards: int) -> list[tuple[int, int]]:
    """``n_shards`` runs ``(first, stop)`` of consecutive cases, sizes differing by ≤ 1."""
    edges = np.linspace(0, n_cases, min(n_shards, n_cases) + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def slice_shard(data: Mapping[str, np.ndarray], first: int, stop: int) -> Shard:
    """Cases first ... stop − 1 of in-memory ``data`` (views, no copy on the client)."""
    arrays = {k: np.asarray(v)[first:stop] for k, v in data.items()}
    return Shard(arrays, f"data[{first}:{stop}]")


def load_shard(path: str, names: tuple[str, ...]) -> Shard:
    """Shard file ``path`` (an ``.npz`` with one array per input name, cases as rows),
    loaded on the worker; a missing, corrupt or inconsistent file is a :class:`ShardError`
    naming it."""
    fix = "rewrite the shard with np.savez(path, **{name: rows, ...}), one key per input"
    try:
        with np.load(os.fspath(path), allow_pickle=False) as z:
            arrays = {k: np.asarray(z[k]) for k in z.files}
    except FileNotFoundError:
        raise ShardError(
            f"shard file {path} does not exist (on worker pid {os.getpid()})",
            where=str(path),
            fix="every worker must see the shard files: a shared file system, or copy them",
        ) from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise ShardError(
            f"shard file {path} is corrupt or not an .npz file ({type(e).__name__}: {e})",
            where=str(path),
            fix=fix,
        ) from None
    missing = sorted(set(names) - set(arrays))
    if missing:
        raise ShardError(
            f"shard file {path} has no array(s) {missing} (it has {sorted(arrays)})",
            where=str(path),
            fix=fix,
        )
    arrays = {k: arrays[k] for k in names}
    try:
        check_data(arrays, names)
    except errors.BatchError as e:
        raise ShardError(f"shard file {path}: {e.problem}", where=str(path), fix=e.fix) from None
    return Shard(arrays, str(path))


def shard_size(shard: Shard) -> int:
    """The number of cases of a shard (a task: only this integer comes back)."""
    return shard.n_cases
