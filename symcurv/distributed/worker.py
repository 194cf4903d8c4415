"""What runs on a Dask worker: one program call on one shard, or on one shard's State.

Every task receives the Program pickled as a reference to its build directory
(``Program.__reduce__``): the worker loads and verifies that directory with ``sc.load``
once per process and thread, and imports no sympy. A task returns only its shard's result
(a float, a θ-sized vector or the shard's per-case rows); a State stays on its worker.
"""

from __future__ import annotations

import numpy as np

from symcurv.distributed.shards import Shard

#: methods that draw CP noise: run on a State so that its case numbers index the noise
NOISY = ("cp_diag", "input_diag_hessian", "input_hvp")


def case_numbers(shard: Shard, first: int, rows: np.ndarray | None) -> np.ndarray:
    """The number of each selected case in the batch of the whole call."""
    return first + np.arange(shard.n_cases) if rows is None else rows


def linearize(prog, shard: Shard, first: int, select, rows, theta):
    """A State at (θ, the selected cases of ``shard``); its CP noise is drawn for the
    cases' numbers in the whole batch."""
    st = prog.linearize(theta, shard.batch(select))
    st.case_numbers = case_numbers(shard, first, rows)
    return st


def run(prog, shard: Shard, first: int, select, rows, method: str, theta, args, kwargs):
    """``prog.<method>(θ, shard's cases, *args, **kwargs)`` (on a State for CP methods)."""
    if method in NOISY:
        st = linearize(prog, shard, first, select, rows, theta)
        return getattr(st, method)(*args, **kwargs)
    return getattr(prog, method)(theta, shard.batch(select), *args, **kwargs)


def state_call(state, method: str, args, kwargs):
    """``state.<method>(*args, **kwargs)`` on the worker that holds the State."""
    out = getattr(state, method)
    return out(*args, **kwargs) if callable(out) else out
