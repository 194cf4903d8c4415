"""Errors symcurv raises for bad input.

Every message names *where* (the DSL line and the IR node), *what* went wrong and *how to
fix it*, so a user never has to read a Numba typing error or a codegen traceback.
"""

from __future__ import annotations


class SymcurvError(Exception):
    """Base class of every error symcurv raises on purpose."""

    def __init__(
        self,
        problem: str,
        *,
        where: str | None = None,
        node: str | None = None,
        fix: str | None = None,
    ) -> None:
        self.problem, self.where, self.node, self.fix = problem, where, node, fix
        parts = []
        if where:
            parts.append(f"{where}")
        if node:
            parts.append(f"node {node}")
        head = ": ".join(parts)
        msg = f"{head}: {problem}" if head else problem
        if fix:
            msg += f"\n  fix: {fix}"
        super().__init__(msg)


class ShapeError(SymcurvError, ValueError):
    """Operands whose shapes do not fit the op (e.g. ``W @ h`` with mismatched widths)."""


class ExpressionError(SymcurvError, ValueError):
    """A sympy expression with unknown symbols or functions, or one sympy cannot differentiate."""


class ModelError(SymcurvError, ValueError):
    """A model that is not well formed (no objective, duplicate names, non-scalar loss...)."""


class BatchError(SymcurvError, ValueError):
    """A batch with a missing key, an unknown key, the wrong width or a non-numeric dtype."""


class NonFiniteError(SymcurvError, FloatingPointError):
    """NaN or inf in data, in parameters, or in a computed result."""


class BuildError(SymcurvError, RuntimeError):
    """A build directory that is tampered with, partial, or built for another dtype/backend."""


class NotApplicableError(SymcurvError, ValueError):
    """A program that does not exist for this model (derivatives with respect to the data of
    a model without data inputs; a Gauss-Newton product without a loss split)."""


class LossError(NotApplicableError):
    """A loss that cannot serve the requested program (e.g. Gauss-Newton of a non-convex loss)."""


class OptimizerError(SymcurvError, ValueError):
    """An optimizer option, a ``fit`` argument or a checkpoint that does not fit."""


class IRError(SymcurvError, AssertionError):
    """A derived graph that breaks an IR invariant: a bug in symcurv, not in the model."""


class UnusedParameterWarning(UserWarning):
    """A parameter that no path connects to the objective (its derivatives are always 0)."""
