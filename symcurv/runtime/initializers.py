"""Sampling parameter initialisers from their manifest specs (numpy only)."""

from __future__ import annotations

import numpy as np


def sample(spec: dict, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    kind = spec["kind"]
    if kind == "normal":
        return rng.normal(0.0, spec["std"], size=shape)
    if kind == "constant":
        return np.full(shape, spec["value"], dtype=np.float64)
    if kind == "glorot":
        fan_out, fan_in = shape if len(shape) == 2 else (shape[0], shape[0])
        a = np.sqrt(6.0 / (fan_in + fan_out))
        return rng.uniform(-a, a, size=shape)
    if kind == "sparse":
        # Martens (2010) §5: every unit (row) gets exactly k non-zero incoming weights
        rows = shape[0] if len(shape) == 2 else 1
        cols = shape[-1]
        out = np.zeros((rows, cols))
        k = min(spec["k"], cols)
        for r in range(rows):
            idx = rng.choice(cols, size=k, replace=False)
            out[r, idx] = rng.normal(0.0, spec["std"], size=k)
        return out.reshape(shape)
    raise ValueError(f"unknown initialiser kind {kind!r}")


def describe(spec: dict) -> str:
    """The initialiser as the DSL call that makes it: ``normal(0.1)``, ``zeros()``,
    ``constant(0.5)``, ``sparse(15, 1.0)``, ``glorot()`` (``symcurv info``)."""
    kind = spec["kind"]
    if kind == "normal":
        return f"normal({spec['std']:g})"
    if kind == "constant":
        return "zeros()" if spec["value"] == 0 else f"constant({spec['value']:g})"
    if kind == "sparse":
        return f"sparse({spec['k']}, {spec['std']:g})"
    return f"{kind}()"
