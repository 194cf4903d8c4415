"""What runs on a Dask worker: one program call on one shard, or on one shard's State.

Every task receives the Program pickled as a reference to its build directory
(``Program.__reduce__``): the worker loads and verifies that directory with ``sc.load``
once per process and thread, and imports no sympy. A task returns only its shard's result
(a float, a θ-sized vector, the shard's per-case rows or its K-FAC factors); a State stays
on its worker. Every noise a task draws — CP noise, K-FAC's, a noisy model's own — is the
rows of the whole batch's noise for the shard's case numbers.
"""

from __future__ import annotations

import numpy as np

from symcurv.distributed.shards import Shard
from symcurv.runtime import kfac, model_leaves
from symcurv.runtime.state import State

#: methods that draw CP noise: run on a State so that its case numbers index the noise
NOISY = ("cp_diag", "input_diag_hessian", "input_hvp")

#: a noisy model's methods taking ``seed=``: the program each runs and its result
SEEDED = {
    "loss": ("loss", lambda out: float(out["objective"][0])),
    "grad": ("grad", lambda out: (float(out["objective"][0]), out["grad"])),
    "grad_and_sum_sq_grad": (
        "sum_sq_grad",
        lambda out: (float(out["objective"][0]), out["grad"], out["sqg"]),
    ),
}


def case_numbers(shard: Shard, first: int, rows: np.ndarray | None) -> np.ndarray:
    """The number of each selected case in the batch of the whole call."""
    return first + np.arange(shard.n_cases) if rows is None else rows


def linearize(prog, shard: Shard, first: int, select, rows, theta, seed=None):
    """A State at (θ, the selected cases of ``shard``); its CP noise (and a noisy model's
    own noise, drawn under ``seed``) is drawn for the cases' numbers in the whole batch."""
    numbers = case_numbers(shard, first, rows)
    return State(prog, theta, shard.batch(select), seed, case_numbers=numbers)


def run(
    prog, shard: Shard, first: int, select, rows, method: str, theta, args, kwargs, model_seed=None
):
    """``prog.<method>(θ, shard's cases, *args, **kwargs)`` (on a State for CP methods;
    K-FAC's factors and a noisy model's ``seed=`` calls with their noise drawn for the
    cases' numbers; ``model_seed``: a noisy model's seed for the CP methods' State)."""
    if method == "kfac_factors":
        numbers = case_numbers(shard, first, rows)
        return kfac.factors(prog, theta, shard.batch(select), *args, **kwargs, rows=numbers)
    if method in SEEDED and "seed" in kwargs:
        return seeded(
            prog,
            shard.batch(select),
            case_numbers(shard, first, rows),
            method,
            theta,
            kwargs["seed"],
        )
    if method in NOISY:
        st = linearize(prog, shard, first, select, rows, theta, model_seed)
        return getattr(st, method)(*args, **kwargs)
    return getattr(prog, method)(theta, shard.batch(select), *args, **kwargs)


def seeded(prog, batch, numbers: np.ndarray, method: str, theta, seed):
    """A noisy model's ``prog.<method>(θ, batch, seed=seed)`` with the model's noise drawn
    as rows ``numbers`` of the whole batch's noise (runtime/model_leaves.py)."""
    program, result = SEEDED[method]
    key = model_leaves.seed_key(prog, seed)
    extras = model_leaves.values(prog, len(numbers), key, rows=numbers)
    return result(prog.run(program, theta, batch, extras=extras))


def state_call(state, method: str, args, kwargs):
    """``state.<method>(*args, **kwargs)`` on the worker that holds the State."""
    out = getattr(state, method)
    return out(*args, **kwargs) if callable(out) else out
