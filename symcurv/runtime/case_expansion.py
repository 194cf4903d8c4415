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

The hook: ``Program.__init__`` wraps its ``checks`` (every batch a Program or a State
checks comes back expanded) and ``Program.run`` calls :func:`refuse`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from symcurv import errors

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


def basis_rows(B_expanded: int, D: int, dtype) -> np.ndarray:
    """(B·D, D): row b·D + i is e_i."""
    return np.tile(np.eye(D, dtype=dtype), (B_expanded // D, 1))


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
    if program in PER_CASE and isinstance(prog.checks, ExpandedChecks):
        raise errors.NotApplicableError(
            f"program '{program}' ({PER_CASE[program]}) is not available for the exact "
            f"score-matching model '{prog.name}': its kernels run over D = "
            f"{prog.checks.D} expanded cases per case, so per-case results would be "
            "those of the expanded cases",
            where=f"model '{prog.name}'",
            fix="use loss/grad/hvp (batch means) of this model; for per-case results "
            "build the model with diag='becker_lecun', 'S' or 'TU'",
        )
