"""Leaves of a MODEL's own graph that the runtime binds on every call.

Most runtime-bound leaves belong to one program (a product's direction, cp_diag's noise).
A score-matching model (dsl/score_matching.py) carries two kinds in its forward graph, so
every program built from it — ``loss`` and ``grad`` included — reads them:

- ``noise``: the Curvature Propagation draws of ``diag="S"``/``"TU"``. Leaf k is stream
  ``STREAM0 + k`` of draw 0 of the counter-based generator (runtime/noise.py) under the
  call's seed, so the CPU and CUDA backends see the same numbers and an integer seed
  reproduces them. The stream offset keeps them apart from cp_diag's own noise (streams
  0, 1, ... of draws 0, 1, ...) under the same seed.
- ``case_basis``: the coordinate vectors of ``diag="exact"``: its graph runs over the
  expanded cases (b, i), row b·D + i of the leaf is e_i (runtime/case_expansion.py).

The build records them in the manifest (``model_leaves``); a call fills those its program
reads and the caller did not pass (a State passes its own, fixed for its lifetime).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from symcurv import errors
from symcurv.runtime import case_expansion
from symcurv.runtime import noise as noise_module

STREAM0 = 1 << 30
NOISE_KIND = "rademacher"


def describe(forward) -> list[dict]:
    """The manifest entries of a forward graph's runtime-bound leaves, in graph order."""
    out = []
    for n in forward.leaves("noise"):
        out.append({"name": n.name, "kind": "noise", "batched": n.batched, "size": n.size})
    for n in forward.leaves("input_direction"):
        if n.attr("basis") is not None:
            out.append({"name": n.name, "kind": case_expansion.KIND, "size": n.size})
    return out


def noisy(prog) -> bool:
    """Whether the programs of ``prog`` draw model noise (take ``seed=``)."""
    return any(d["kind"] == "noise" for d in prog.manifest.get("model_leaves", []))


def seed_key(prog, seed) -> tuple[int, int] | None:
    """The checked Philox key of ``seed`` for ``prog`` (None for a noise-free model, which
    refuses a seed: it would have no effect)."""
    if not noisy(prog):
        if seed is not None:
            raise errors.ModelError(
                f"seed = {seed!r} given, but model '{prog.name}' draws no noise",
                where=f"model '{prog.name}'",
                fix="drop seed= (only models with noise leaves, such as "
                "sc.score_matching(m, diag='S' or 'TU'), take one)",
            )
        return None
    try:
        return noise_module.key(seed)  # None: fresh entropy
    except (TypeError, ValueError):
        raise errors.ModelError(
            f"seed = {seed!r} ({type(seed).__name__})",
            where=f"model '{prog.name}'",
            fix="pass a non-negative integer, a list of non-negative integers, or None for "
            "fresh noise",
        ) from None


def values(prog, B: int, key, names=None, rows=None) -> dict[str, np.ndarray]:
    """The values of the model leaves (those in ``names``; all when None) for B cases,
    in the backend's memory; ``key`` from :func:`seed_key`. ``rows``: the B cases' numbers
    in a larger batch (sc.distributed's shards), whose noise rows they draw."""
    out = {}
    k = 0
    for d in prog.manifest.get("model_leaves", []):
        wanted = names is None or d["name"] in names
        if d["kind"] == "noise":
            if wanted:
                shape = (B, d["size"]) if d["batched"] else (d["size"],)
                if rows is None or not d["batched"]:
                    out[d["name"]] = prog._noise(shape, key, 0, STREAM0 + k, NOISE_KIND)
                else:
                    z = noise_module.draw_rows(
                        rows, d["size"], prog.dtype, key, 0, STREAM0 + k, NOISE_KIND
                    )
                    out[d["name"]] = prog._to_backend(z)
            k += 1
        elif d["kind"] != case_expansion.KIND:  # e.g. "basis": the unrolled exact diagonal
            raise errors.BuildError(
                f"model leaf '{d['name']}' of kind {d['kind']!r} comes from an older symcurv",
                where=prog.build_dir,
                fix="rebuild: sc.compile(model, ..., build_dir=...) into a fresh directory",
            )
        elif wanted:
            out[d["name"]] = _basis(prog, B, d["size"])
    return out


def _basis(prog, B: int, D: int):
    """The expanded cases' rows e_i (B = B_real·D rows), kept per (B, D): the same array
    serves every call."""
    cache = prog.__dict__.setdefault("_basis_rows", {})
    a = cache.get((B, D))
    if a is None:
        a = cache[(B, D)] = prog._to_backend(case_expansion.basis_rows(B, D, prog.dtype))
    return a


def bind(prog, spec: dict, extras: Mapping, B: int, seed) -> dict:
    """``extras`` completed with the model leaves ``spec``'s program reads and the caller
    did not pass (drawn under ``seed``)."""
    if seed is not None:
        seed_key(prog, seed)  # a noise-free model refuses a seed; a bad seed is named
    model = prog.manifest.get("model_leaves")
    if not model:  # most models: nothing to add (every call passes here: keep it cheap)
        return extras
    model = {d["name"] for d in model}
    missing = {e[0] for e in spec.get("extras", [])} & (model - set(extras))
    if not missing:
        return dict(extras)
    key = seed_key(prog, seed) if noisy(prog) else None
    return {**extras, **values(prog, B, key, missing)}
