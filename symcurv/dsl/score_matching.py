"""``sc.score_matching(energy_model, reg, diag, wrt)``: the model of the score-matching
objective of an energy, a new ``sc.Model`` that compiles and trains like any other.

Its per-case loss is J_b = Σ_i ½(∂E/∂x_i)² − ∂²E/∂x_i² + λ(∂²E/∂x_i²)² (Kingma & LeCun
2010, eq. 7; λ = 0 is Hyvärinen's score matching), built from the energy's input
derivatives by ``transforms.score_matching``. The parameters and inputs are the energy
model's, in the same order (a θ of one is a θ of the other). With ``diag="S"`` or ``"TU"``
the model has noise leaves: its programs take ``seed=``; with ``diag="exact"`` its cases
are the expanded cases (b, i) of runtime/case_expansion.py (see docs/score_matching.md).
"""

from __future__ import annotations

import math
import numbers

from symcurv import errors
from symcurv.dsl.model import Model, user_origin
from symcurv.transforms import score_matching as sm


def score_matching(
    energy_model: Model, reg: float = 0.0, diag: str = "exact", wrt: str | None = None
) -> Model:
    """The score-matching model of ``energy_model`` (declared with ``m.energy``).

    ``reg``: λ ≥ 0 of the curvature penalty λ Σ_i d_i²; ``diag``: how d_i = ∂²E/∂x_i² is
    computed — "exact" (no approximation: the graph runs over B·D expanded cases (b, i),
    each the second directional derivative of E along e_i; the batch stays (B, D), the
    runtime expands it; per-case programs are refused), "becker_lecun" (deterministic;
    exact for one nonlinear layer between x and a weighted sum, biased otherwise), "S" or
    "TU" (Curvature Propagation, unbiased; a noisy model whose programs take ``seed=``);
    ``wrt``: the ``m.input`` the density is over (optional when there is one; the other
    inputs are conditioning data)."""
    origin = user_origin()
    if not isinstance(energy_model, Model) or not energy_model.is_energy:
        what = (
            f"model '{energy_model.name}' minimizes a loss"
            if isinstance(energy_model, Model)
            else f"{type(energy_model).__name__} {energy_model!r:.60}"
        )
        raise errors.ModelError(
            f"score_matching needs an energy model; got {what}",
            where=origin,
            fix="declare the per-case energy with m.energy(E) (no m.minimize)",
        )
    if (
        isinstance(reg, bool)
        or not isinstance(reg, numbers.Real)
        or not math.isfinite(reg)
        or reg < 0
    ):
        raise errors.ModelError(
            f"reg = {reg!r}", where=origin, fix="pass a finite λ ≥ 0 (0: no regularization)"
        )
    if diag not in sm.DIAGS:
        raise errors.ModelError(
            f"unknown diag {diag!r}", where=origin, fix=f"choose one of {', '.join(sm.DIAGS)}"
        )
    x = _input(energy_model, wrt, origin)
    fwd = energy_model.forward_graph()
    graph, J = sm.objective(fwd, energy_model.inputs[x]["id"], float(reg), diag)
    graph.outputs = {}
    graph.name = f"{energy_model.name}_sm"
    out = Model(f"{energy_model.name}_sm")
    out.graph = graph
    out.params = dict(energy_model.params)
    out.inputs = dict(energy_model.inputs)
    out.origin = origin
    out.loss = out.wrap(J)
    out.score_matching = {"energy": energy_model.name, "reg": float(reg), "diag": diag, "wrt": x}
    return out


def _input(m: Model, wrt: str | None, origin: str) -> str:
    data = [n for n, rec in m.inputs.items() if rec["role"] == "input"]
    if wrt is None and len(data) == 1:
        return data[0]
    if wrt in data:
        return wrt
    raise errors.ModelError(
        f"wrt = {wrt!r}: the energy model '{m.name}' has inputs {data}",
        where=origin,
        fix="name the input whose density the energy models: wrt='x'",
    )
