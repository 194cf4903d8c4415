"""``m.energy(e)``: a model of a density instead of a loss.

An energy model declares a per-case scalar E(x; θ), an unnormalised negative log density
of its input x: p(x; θ) = exp(−E(x; θ)) / Z(θ). It compiles like any model — ``loss`` is
the mean energy over the batch, ``input_grad`` is ∂E/∂x (the negative score) — and
``sc.score_matching`` turns it into a model that can be trained without Z (Hyvärinen
2005; Kingma & LeCun 2010).

The rules checked here: an energy is a per-case scalar of the parameters AND of an input
(∂E/∂x = 0 leaves nothing to match), a model has either a loss or an energy, and an
energy has no targets (it models the inputs themselves).
"""

from __future__ import annotations

from symcurv import errors


def declare(model, e) -> None:
    """Set ``e`` as the per-case energy of ``model`` (checked; see the module docstring)."""
    from symcurv.dsl.model import user_origin

    origin = user_origin()
    if model.loss is not None:
        what = "energy() called twice" if model.is_energy else "the model already has a loss"
        raise errors.ModelError(
            f"{what} (model '{model.name}')",
            where=origin,
            fix="a model has ONE objective: call either m.minimize(loss) or m.energy(E) once",
        )
    targets = [n for n, rec in model.inputs.items() if rec["role"] == "target"]
    if targets:
        raise errors.ModelError(
            f"an energy models its inputs, but model '{model.name}' has target(s) {targets}",
            where=origin,
            fix="declare the data of an energy with m.input (conditioning data included), "
            "or use m.minimize(loss) for a model with targets",
        )
    e = model.lift(e)
    if e.shape != ():
        raise errors.ModelError(
            f"the per-case energy must be a scalar, got {e.node.describe()}",
            where=origin,
            fix="reduce it, e.g. sc.sum(...) or sc.dot(alpha, g(W @ x))",
        )
    up = model.graph.ancestors(e.id)
    data = {r["id"] for r in model.inputs.values() if r.get("role") == "input"} & up
    if not data:
        raise errors.ModelError(
            f"the energy {e.node.describe()} does not depend on any m.input: its score "
            "∂E/∂x is zero",
            where=origin,
            fix="compute the energy from the data, e.g. m.energy(sc.sum(sc.square(W @ x)))",
        )
    model.minimize(e)  # the parameter check and the bookkeeping of any objective
    model.is_energy = True


def refuse_target(model, name: str) -> None:
    """A target declared on an energy model (called by ``Model.target``)."""
    from symcurv.dsl.model import user_origin

    raise errors.ModelError(
        f"target '{name}' declared on the energy model '{model.name}'",
        where=user_origin(),
        fix="an energy models its inputs: declare the data with m.input",
    )


def refuse_minimize(model) -> None:
    """``minimize`` on a model that already has an energy."""
    from symcurv.dsl.model import user_origin

    raise errors.ModelError(
        f"model '{model.name}' already has an energy, so it cannot also minimize a loss",
        where=user_origin(),
        fix="a model has ONE objective; to train the energy without its normaliser, use "
        "sc.score_matching(m) and compile that",
    )
