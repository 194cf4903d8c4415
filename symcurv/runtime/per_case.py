"""Per-case results of a built program, read from its typed outputs (ir/outputs.py): the
per-case gradient rows, their norms, and which input a data derivative is taken
with respect to. ``Program`` and ``State`` both answer through these."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from symcurv import errors
from symcurv.ir import outputs


def input_name(inputs: Mapping[str, dict], wrt: str | None, model: str) -> str:
    """The input ``wrt`` a data derivative is taken with respect to (optional with one
    input; never a target): a ModelError naming the choices otherwise."""
    data = [n for n, d in inputs.items() if d["role"] == "input"]
    if wrt is None and len(data) == 1:
        return data[0]
    if wrt in data:
        return wrt
    what = "a target" if wrt in inputs else "not an input"
    raise errors.ModelError(
        f"wrt = {wrt!r} is {what}" if wrt is not None else "wrt is needed",
        where=f"model '{model}'",
        fix=f"name one of the model's inputs: {data}"
        if data
        else "the model has no m.input to differentiate with respect to",
    )


def input_key(result: str, x: str) -> str:
    """The output key of a per-case result with respect to input ``x``."""
    return outputs.per_case(result, x).key


def rows(out: Mapping[str, np.ndarray], params: Mapping[str, dict], n_params: int, B: int, dtype):
    """(B, n_params): row b is ∇f_b flat like θ, from the outputs ``pcg:<param>`` (each
    one parameter's rows; absent when no per-case path reaches it: its rows are 0)."""
    rows = np.zeros((B, n_params), dtype=dtype)
    for name, p in params.items():
        part = out.get(outputs.per_case("pcg", name).key)
        if part is not None:
            rows[:, p["offset"] : p["offset"] + p["size"]] = np.asarray(part).reshape(B, -1)
    return rows


def norms(out: Mapping[str, np.ndarray]) -> np.ndarray:
    """(B,) from the output ``pcgn`` = ‖∇f_b‖² (rounding may leave it just below 0)."""
    return np.sqrt(np.maximum(np.asarray(out["pcgn"]).reshape(-1), 0.0))
