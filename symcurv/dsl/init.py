"""Parameter initialisers. Each is a small JSON-able spec stored in the build manifest;
``symcurv.runtime.initializers`` samples them (numpy only, so loading needs no sympy)."""

from __future__ import annotations

import dataclasses
import math

from symcurv import errors


@dataclasses.dataclass(frozen=True)
class Initializer:
    kind: str
    std: float = 0.0
    value: float = 0.0
    k: int = 0

    def spec(self) -> dict:
        """The initialiser as a JSON-able dict (the build manifest stores it)."""
        return dataclasses.asdict(self)


def _number(what: str, value, *, positive: bool = False, integer: bool = False) -> float:
    """``value`` as a finite number (≥ 0, or ≥ 1 for an integer count), else a ModelError
    at the user's line: numpy would refuse it only later, inside ``prog.init``."""
    from symcurv.dsl.model import user_origin

    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok:
        try:  # numpy scalars
            ok = float(value) == value and not isinstance(value, (str, bytes))
        except (TypeError, ValueError):
            ok = False
    ok = ok and math.isfinite(float(value))
    if ok and integer:
        ok = float(value) == int(value) and int(value) >= 1
    elif ok and positive:
        ok = float(value) >= 0
    if not ok:
        need = "an integer ≥ 1" if integer else "a finite number ≥ 0" if positive else "finite"
        raise errors.ModelError(
            f"initialiser {what} = {value!r}", where=user_origin(), fix=f"pass {need}"
        )
    return float(value)


def normal(std: float = 0.01) -> Initializer:
    """W_ij ~ N(0, std²)."""
    return Initializer("normal", std=_number("normal(std)", std, positive=True))


def zeros() -> Initializer:
    """Every entry 0 (biases)."""
    return Initializer("constant", value=0.0)


def constant(c: float) -> Initializer:
    """Every entry ``c``."""
    return Initializer("constant", value=_number("constant(c)", c))


def sparse(k: int = 15, std: float = 1.0) -> Initializer:
    """Martens (2010) §5: each unit gets exactly k non-zero incoming weights ~ N(0, std²)."""
    k = int(_number("sparse(k)", k, integer=True))
    return Initializer("sparse", std=_number("sparse(std)", std, positive=True), k=k)


def glorot() -> Initializer:
    """Glorot-uniform: U(−a, a), a = sqrt(6 / (n_in + n_out))."""
    return Initializer("glorot")
