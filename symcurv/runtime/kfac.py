"""``Program.kfac_layers`` and ``Program.kfac_factors``: the K-FAC factors of a batch.

The compiled programs (transforms/kfac.py) give, per dense layer, Σ_b h hᵀ, Σ_b h and
Σ_b s sᵀ at the pre-activation (s the channel of a per-case sweep), and the Gauss-Newton
diagonal estimate of every other parameter. This module runs them for each curvature kind:

    "curvature_prop"  kfac_cp once, ε Rademacher from the counter-based generator
                      (runtime/noise.py): E[G] = exact G
    "exact"           kfac_cp once per loss-input coordinate k with ε = e_k in every case
                      (cases never mix in Σ_b s_b s_bᵀ, so one run serves all cases):
                      Σ_k s(e_k) s(e_k)ᵀ = Jᵀ F Fᵀ J = Jᵀ H_L J, the KFLR factor
    "empirical"       kfac_empirical with the batch's targets
    "fisher_mc"       kfac_empirical with targets drawn from the model's predictive
                      distribution at the loss inputs (ops/losses.py SAMPLERS), bound to
                      the sweep's own target leaves (the forward pass keeps the batch:
                      an autoencoder's target is its input); the loss inputs come from a
                      first run, so it costs two runs

and assembles A = mean_b ā ā^T, ā = [h; 1] (bias last).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from symcurv import errors
from symcurv.runtime import noise as noise_module

CURVATURES = ("exact", "curvature_prop", "fisher_mc", "empirical")


@dataclasses.dataclass(frozen=True)
class KFACLayer:
    """A dense layer a = W h (+ b): parameter names, the DSL names of h and a, its DSL line."""

    weight: str
    bias: str | None
    input: str
    preactivation: str
    n_in: int
    n_out: int
    origin: str = ""


@dataclasses.dataclass
class LayerFactors:
    """The Kronecker factors of one layer: ``A`` over ā = [h; 1] (bias last; h alone
    without a bias), ``G`` over the pre-activation; ``bias`` the bias parameter or None;
    ``h_mean`` = mean_b h_b; ``max_sq_grad`` = max_b,j (∂ℓ_b/∂a_bj)² (empirical kinds)."""

    weight: str
    bias: str | None
    A: np.ndarray
    G: np.ndarray
    h_mean: np.ndarray | None = None
    max_sq_grad: float | None = None


@dataclasses.dataclass
class KFACFactors:
    """``layers``: {weight: LayerFactors}; ``diagonal``: {param: Gauss-Newton diagonal
    estimate, shaped like the parameter} for every parameter outside a dense layer."""

    curvature: str
    layers: dict[str, LayerFactors]
    diagonal: dict[str, np.ndarray]
    batch_size: int


def layers(prog) -> dict[str, KFACLayer]:
    """``{weight name: KFACLayer}`` from the build manifest, in graph order."""
    out = {}
    for L in prog.manifest.get("kfac", {}).get("layers", []):
        out[L["weight"]] = KFACLayer(
            L["weight"],
            L["bias"],
            L["input"],
            L["preactivation"],
            L["n_in"],
            L["n_out"],
            L.get("origin", ""),
        )
    return out


def factors(
    prog, theta, batch: Mapping[str, np.ndarray], curvature="curvature_prop", seed=None, rows=None
):
    """One batch's K-FAC factors (module docstring). ``rows``: the cases' numbers in a
    larger batch (sc.distributed's shards): the noise drawn is those rows of its noise."""
    if curvature not in CURVATURES:
        raise errors.ModelError(
            f"unknown K-FAC curvature {curvature!r}",
            where=f"model '{prog.name}'",
            fix=f"choose one of {', '.join(CURVATURES)}",
        )
    if curvature == "curvature_prop":
        out = _curvature_prop(prog, theta, batch, seed, rows)
    elif curvature == "exact":
        out = _exact(prog, theta, batch)
    elif curvature == "empirical":
        out = _empirical(prog, theta, batch, {})
    else:
        out = _fisher_mc(prog, theta, batch, seed, rows)
    return _assemble(prog, out, _batch_size(batch), curvature)


def _noise_leaves(prog, name: str) -> list[tuple[str, bool, int]]:
    from symcurv.runtime.program import extra_leaves

    return extra_leaves(prog.manifest["programs"][name], "noise") if name in prog.programs else []


def _seed_key(prog, seed):
    try:
        return noise_module.key(seed)
    except (TypeError, ValueError):
        raise errors.ModelError(
            f"seed = {seed!r} ({type(seed).__name__})",
            where=f"model '{prog.name}'",
            fix="pass a non-negative integer, a list of them, or None for a fresh seed",
        ) from None


def _batch_size(batch) -> int:
    return int(np.shape(next(iter(batch.values())))[0])


def _curvature_prop(prog, theta, batch, seed, rows=None):
    key, B = _seed_key(prog, seed), _batch_size(batch)
    z = {
        name: prog._noise((B, size) if batched else (size,), key, 0, s, "rademacher")
        if rows is None or not batched
        else noise_module.draw_rows(rows, size, prog.dtype, key, 0, s, "rademacher")
        for s, (name, batched, size) in enumerate(_noise_leaves(prog, "kfac_cp"))
    }
    return prog.run("kfac_cp", theta, batch, extras=z)


def _exact(prog, theta, batch):
    """Σ over unit noise vectors e_k (the same k in every case) of the kfac_cp outputs."""
    B = _batch_size(batch)
    leaves = _noise_leaves(prog, "kfac_cp")
    shapes = {name: (B, size) if batched else (size,) for name, batched, size in leaves}
    total: dict[str, np.ndarray] | None = None
    A_parts: dict[str, np.ndarray] = {}
    for name, _batched, size in leaves:
        for k in range(size):
            z = {n: np.zeros(s, dtype=prog.dtype) for n, s in shapes.items()}
            z[name][..., k] = 1.0
            out = prog.run("kfac_cp", theta, batch, extras=z)
            if total is None:
                total = {key: np.array(v) for key, v in out.items()}
                A_parts = {key: np.array(v) for key, v in out.items() if _is_A(key)}
            else:
                for key, v in out.items():
                    total[key] += v
    if total is None:  # no noise leaf: no loss depends on θ (G = 0 everywhere)
        return prog.run("kfac_cp", theta, batch, extras={})
    total.update(A_parts)  # A does not depend on the noise: one run's value
    return total


def _is_A(key: str) -> bool:
    return key.startswith(("kfac_hh:", "kfac_h:"))


def _empirical(prog, theta, batch, drawn: Mapping[str, np.ndarray]):
    """kfac_empirical with each loss's target leaf bound to ``drawn[target]``, or to the
    batch's own targets (one-hot rows for a ``labels=True`` target)."""
    extras = {}
    for target, (_kind, leaf) in prog.manifest.get("kfac", {}).get("targets", {}).items():
        if target in drawn:
            extras[leaf] = drawn[target]
            continue
        info = prog.inputs[target]
        a = np.asarray(batch[target]) if target in batch else None
        if a is not None and info.get("labels"):  # the sweep's leaf holds one-hot rows
            labels = prog.checks.labels(target, a)
            a = (labels == np.arange(int(info["size"]))).astype(prog.dtype)
        extras[leaf] = a
    names = {n for n, _b, _s in _noise_leaves(prog, "kfac_empirical")}
    extras = {k: v for k, v in extras.items() if k in names and v is not None}
    return prog.run("kfac_empirical", theta, batch, extras=extras)


def _fisher_mc(prog, theta, batch, seed, rows=None):
    """Two runs: the loss inputs y, then the sweep on t̃ ~ p(t | y) (ops/losses.py)."""
    from symcurv.ops.losses import SAMPLERS

    first = _empirical(prog, theta, batch, {})
    rng = np.random.default_rng(seed)
    rng = rng if rows is None else noise_module.GeneratorRows(rng, rows)
    drawn = {}
    for target, (kind, _leaf) in prog.manifest.get("kfac", {}).get("targets", {}).items():
        sampler = SAMPLERS.get(kind)
        if sampler is None:
            raise errors.ModelError(
                f"K-FAC fisher_mc samples targets from the model's predictive distribution, "
                f"and loss '{kind}' (target '{target}') has no sampler",
                where=f"model '{prog.name}'",
                fix="use curvature='curvature_prop' or 'exact' (any convex loss), or a "
                "built-in loss (squared_error, sigmoid/softmax_cross_entropy)",
            )
        y = np.asarray(first[f"kfac_y:{target}"], dtype=np.float64)
        drawn[target] = sampler(y, rng).astype(prog.dtype)
    return _empirical(prog, theta, batch, drawn)


def _assemble(prog, out: Mapping[str, np.ndarray], B: int, curvature: str) -> KFACFactors:
    result: dict[str, LayerFactors] = {}
    covered = set()
    for name, L in layers(prog).items():
        hh = np.asarray(out[f"kfac_hh:{name}"], dtype=np.float64).reshape(L.n_in, L.n_in) / B
        hs = np.asarray(out[f"kfac_h:{name}"], dtype=np.float64).reshape(-1, 1) / B
        A = np.block([[hh, hs], [hs.T, np.ones((1, 1))]]) if L.bias else hh
        G = np.asarray(out[f"kfac_G:{name}"], dtype=np.float64).reshape(L.n_out, L.n_out)
        s = out.get(f"kfac_s:{name}")  # √(1/B) ∂ℓ_b/∂a_b per case
        top = None if s is None else float(B * np.max(np.square(s), initial=0.0))
        # Uᵀ U from a GEMM: symmetric up to rounding; made exactly symmetric for eigh
        result[name] = LayerFactors(name, L.bias, (A + A.T) / 2, (G + G.T) / 2, hs.ravel(), top)
        covered |= {name, L.bias}
    diagonal = {}
    flat = out.get("kfac_diag")
    for name, p in prog.params.items():
        if name in covered:
            continue
        d = (
            np.zeros(p["size"])
            if flat is None
            else np.asarray(flat[p["offset"] : p["offset"] + p["size"]], dtype=np.float64)
        )
        diagonal[name] = d.reshape(p["shape"])
    return KFACFactors(curvature, result, diagonal, B)
