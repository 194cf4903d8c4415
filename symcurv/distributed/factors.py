"""K-FAC's factors over bound data: the shards' factors combined into the batch's.

Every factor is a mean over the batch's cases — A = mean_b ā_b ā_bᵀ, G = mean_b of the
pre-activation channels' outer products, h̄ = mean_b h_b, and the Gauss-Newton diagonal of
the mean loss — so with n_k of the B cases on shard k

    factor of the batch = (Σ_k n_k · factor of shard k) / B

(the bias entry of A, 1 on every shard, stays exactly 1); ``max_sq_grad``, a maximum over
cases, is the maximum over shards. Each shard draws the rows of the batch's noise for its
cases' numbers (``runtime/kfac.py``'s ``rows``), so the result is the one-process factors
of the same batch and seed.
"""

from __future__ import annotations

import numpy as np

from symcurv.runtime.kfac import KFACFactors, LayerFactors


def combine(targets, results: list[KFACFactors], B: int) -> KFACFactors:
    """The batch's factors from its targets' (shards') factors (module docstring)."""
    counts = [t.n for t in targets]

    def mean(parts) -> np.ndarray:
        return sum(n * np.asarray(a, dtype=np.float64) for n, a in zip(counts, parts)) / B

    first = results[0]
    layers = {}
    for name, L in first.layers.items():
        shards = [r.layers[name] for r in results]
        tops = [f.max_sq_grad for f in shards]
        layers[name] = LayerFactors(
            name,
            L.bias,
            mean([f.A for f in shards]),
            mean([f.G for f in shards]),
            None if L.h_mean is None else mean([f.h_mean for f in shards]),
            None if None in tops else max(tops),
        )
    diagonal = {p: mean([r.diagonal[p] for r in results]) for p in first.diagonal}
    return KFACFactors(first.curvature, layers, diagonal, B)
