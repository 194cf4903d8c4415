"""Case expansion: the runtime side of the exact score-matching diagonal.

``sc.score_matching(m, diag="exact")`` builds its graph over EXPANDED cases (b, i),
i = 0 … D−1 (transforms/score_matching.py): case (b, i) reads the data row x_b and the
basis vector e_i, and its per-case loss J'_bi has mean_i J'_bi = J_b. The user passes the
batch of B real cases as for any model; this module turns it into the B·D expanded
cases the kernels run on:

    x (B, D) → repeat every row D times (B·D, D)       (conditioning inputs likewise)
    e        → the rows e_0 … e_{D−1}, tiled B times    (model_leaves.py binds it)

The kernels' batch mean over the B·D rows is then mean_b J_b, so ``loss``, ``grad``,
``hvp`` and everything built on a mean over the batch (State, the optimizers, DataParallel
on its shards) are unchanged. A program whose result is PER CASE — or a sum of squares
of per-case results — would answer for the expanded cases, not the user's: those are
refused with a NotApplicableError (:func:`refuse`).

Memory grows with D: every activation has B·D rows. A checked ``Program.run`` call
therefore runs the expanded cases in chunks of at most :func:`chunk_rows` rows (about
``BUDGET`` bytes of kernel scratch) and combines the chunks' batch means, weighted by their
rows (:func:`run_in_chunks`) — any split of the expanded rows works, even inside one case
of a large image, because every result is a mean over rows. A State keeps the whole
expanded batch (its cached values are per row, reused by every product): fine for the PoE,
not for 64 × 64 images, so a State whose B·D rows would need more than ``STATE_BUDGET``
bytes of kernel scratch is refused before anything is expanded (:func:`check_state`).

The hook: ``Program.__init__`` wraps its ``checks`` (every batch a Program or a State
checks comes back expanded), ``Program.run`` calls :func:`refuse` and, for a checked
call, :func:`run_in_chunks`, and ``State.__init__`` calls :func:`check_state`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from symcurv import errors

BUDGET = 256 << 20  # bytes of kernel scratch per chunk of expanded cases
STATE_BUDGET = 2 << 30  # bytes of kernel scratch a State may hold for all its expanded rows
STATE_PROGRAMS = ("loss", "grad", "hvp")  # what a State of this model runs (batch means)
KIND = "case_basis"  # the manifest kind of the expanded cases' basis leaf (model_leaves.py)

# programs whose results are per case (or Σ_b of a nonlinear function of one case's)
PER_CASE = {
    "sum_sq_grad": "Σ_b ∇J_b ⊙ ∇J_b",
    "per_case_grad": "the per-case gradients ∇J_b",
    "per_case_grad_norm": "the per-case gradient norms ‖∇J_b‖",
    "input_grad": "∂J_b/∂x_b",
    "input_hvp": "∇²_x J_b v",
    "input_diag_S": "diag ∇²_x J_b",
    "input_diag_TU": "diag ∇²_x J_b",
    "input_bl": "diag ∇²_x J_b",
    "kfac_cp": "K-FAC factors (per-case statistics)",
    "kfac_empirical": "K-FAC factors (per-case statistics)",
}


def factor(manifest: Mapping) -> int:
    """D: the expanded cases per real case (1 for a model without case expansion)."""
    for d in manifest.get("model_leaves", []):
        if d["kind"] == KIND:
            return int(d["size"])
    return 1


def expand(arrays: Sequence[np.ndarray], D: int) -> list[np.ndarray]:
    """Every (B, ·) array with each row repeated D times: (B·D, ·), row b·D + i = row b."""
    return [np.repeat(a, D, axis=0) for a in arrays]


def basis_rows(B_expanded: int, D: int, dtype, first: int = 0) -> np.ndarray:
    """(B_expanded, D): row r is e_{(first + r) mod D} (first = 0: row b·D + i is e_i)."""
    out = np.zeros((B_expanded, D), dtype=dtype)
    out[np.arange(B_expanded), (first + np.arange(B_expanded)) % D] = 1.0
    return out


class ExpandedChecks:
    """A Program's ``checks`` whose ``batch`` returns the expanded cases; every other check
    is the wrapped one's."""

    def __init__(self, checks, D: int) -> None:
        self._checks, self.D = checks, D

    def batch(self, leaves: Sequence[str], batch: Mapping, copy: bool = False) -> list:
        return expand(self._checks.batch(leaves, batch, copy), self.D)

    def __getattr__(self, name: str):
        return getattr(self._checks, name)


def wrap(checks, manifest: Mapping):
    """``checks`` itself, or expanding when the model's graph runs over expanded cases."""
    D = factor(manifest)
    return ExpandedChecks(checks, D) if D > 1 else checks


def refuse(prog, program: str) -> None:
    """A NotApplicableError for a per-case program of a case-expanded model."""
    if program in PER_CASE and expanded(prog):
        raise errors.NotApplicableError(
            f"program '{program}' ({PER_CASE[program]}) is not available for the exact "
            f"score-matching model '{prog.name}': its kernels run over D = "
            f"{prog.checks.D} expanded cases per case, so per-case results would be "
            "those of the expanded cases",
            where=f"model '{prog.name}'",
            fix="use loss/grad/hvp (batch means) of this model (sc.optim.HessianFree: "
            "preconditioner=False); for per-case results build the model with "
            "diag='becker_lecun', 'S' or 'TU'",
        )


def expanded(prog) -> bool:
    """Whether ``prog``'s model runs over expanded cases."""
    return isinstance(prog.checks, ExpandedChecks)


def row_bytes(prog, program: str) -> int:
    """Bytes of kernel scratch one expanded row of ``program`` needs (its per-case slots;
    those of its whole part where a call runs that instead, codegen/parts.py)."""
    spec = prog.spec(program)
    names = [program, *([spec["whole"]] if spec.get("whole") else [])]
    per_row = max(
        sum(size for _n, batched, size in prog.spec(n)["slots"] if batched) for n in names
    )
    return max(per_row, 1) * prog.dtype.itemsize


def chunk_rows(prog, program: str) -> int:
    """Expanded rows per kernel call: ``BUDGET`` over the scratch one row needs."""
    return max(1, BUDGET // row_bytes(prog, program))


def check_state(prog, batch: Mapping) -> None:
    """Refuse a State (``prog.linearize``) of a case-expanded model whose B·D expanded rows
    would need more than ``STATE_BUDGET`` bytes of scratch in its largest program: it keeps
    every row's values for its products, so it cannot run in chunks like a Program call.
    Checked on the user's batch, before it is expanded (a batch that is not an array of
    rows is left to the batch checks)."""
    if not expanded(prog) or not prog.inputs:
        return
    rows = np.shape(batch.get(next(iter(prog.inputs)), ()))
    if len(rows) != 2:
        return
    D = prog.checks.D
    per_case = D * max(row_bytes(prog, p) for p in STATE_PROGRAMS if prog.built(p))
    limit = STATE_BUDGET // per_case
    if rows[0] > limit:
        raise errors.BatchError(
            f"a State of the exact score-matching model '{prog.name}' on {rows[0]} cases "
            f"holds {rows[0]} × D = {rows[0] * D} expanded cases, "
            f"{rows[0] * per_case / 2**30:.1f} GB of kernel scratch (limit "
            f"{STATE_BUDGET / 2**30:.1f} GB: at most {limit} cases)",
            where=f"model '{prog.name}'",
            fix=f"linearize on at most {limit} cases (sc.optim.fit(..., batch_size={limit}) "
            "for Hessian-free's curvature batch; prog.grad/prog.hvp run any batch in "
            "chunks), or raise symcurv.runtime.case_expansion.STATE_BUDGET if the memory "
            "is there",
        )


def run_in_chunks(prog, program: str, theta, batch, *, v=None, extras=None, seed=None) -> dict:
    """``prog.run(program, …)`` checked, over the expanded cases in chunks of rows:
    out = Σ_chunks (rows_c / rows) out_c for every output (batch means: the objective and
    θ-shaped results; per-case programs are refused before). A non-finite result is
    located in the chunk where it arose."""
    spec = prog.spec(program)
    theta = prog.checks.theta(theta)
    leaves = spec["leaves"]
    arrays = prog.checks.batch(leaves, batch)  # checked, then expanded
    if spec.get("vectors"):  # once here: prog.run takes each chunk's arguments as given
        v = prog.checks.direction(v)
    N = len(arrays[0]) if arrays else 1
    rows = chunk_rows(prog, program)
    basis = [d for d in prog.manifest["model_leaves"] if d["kind"] == KIND]
    total: dict[str, np.ndarray] = {}
    for a in range(0, N, rows):
        part = {n: arr[a : a + rows] for n, arr in zip(leaves, arrays)}
        n = len(next(iter(part.values()))) if part else 1
        given = dict(extras or {})
        for d in basis:  # this chunk's rows of e (bound for the whole batch otherwise)
            given.setdefault(d["name"], basis_rows(n, d["size"], prog.dtype, first=a))
        out = prog.run(program, theta, part, v=v, extras=given, check=False, seed=seed)
        for k, o in out.items():
            if not np.isfinite(o).all():
                prog.raise_non_finite(program, k, theta, part, v, given)
            total[k] = total.get(k, 0.0) + (n / N) * np.asarray(o)
    return total
