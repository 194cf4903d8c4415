"""Parameter initialisers. Each is a small JSON-able spec stored in the build manifest;
``symcurv.runtime.initializers`` samples them (numpy only, so loading needs no sympy)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Initializer:
    kind: str
    std: float = 0.0
    value: float = 0.0
    k: int = 0

    def spec(self) -> dict:
        """The initialiser as a JSON-able dict (the build manifest stores it)."""
        return dataclasses.asdict(self)


def normal(std: float = 0.01) -> Initializer:
    """W_ij ~ N(0, std²)."""
    return Initializer("normal", std=float(std))


def zeros() -> Initializer:
    """Every entry 0 (biases)."""
    return Initializer("constant", value=0.0)


def constant(c: float) -> Initializer:
    """Every entry ``c``."""
    return Initializer("constant", value=float(c))


def sparse(k: int = 15, std: float = 1.0) -> Initializer:
    """Martens (2010) §5: each unit gets exactly k non-zero incoming weights ~ N(0, std²)."""
    return Initializer("sparse", std=float(std), k=int(k))


def glorot() -> Initializer:
    """Glorot-uniform: U(−a, a), a = sqrt(6 / (n_in + n_out))."""
    return Initializer("glorot")
