"""Typed program outputs: what each named result of a derived graph is.

A derived graph names its results (``Graph.outputs``: key -> node); this module says what
kind of array each one is, once, for every later stage — the buffer plan, the emitters'
output views, the build manifest, the reference interpreter's shaping and ``Program``:

    scalar     one number per call (the batch-mean objective)         stored as (1,)
    theta      one parameter's block of a flat θ-shaped vector        out[offset:offset+size]
               (∇θ, H v, a CP estimate, ...): every block of one result fills one vector
    per_case   one row per case (B, size): derivatives with respect to an input,
               named by the input (``block``) when the program covers several
    array      any other unbatched value (e.g. a static part's cached frontier)

A key is only an identifier: no stage takes a key apart to learn what it holds.
"""

from __future__ import annotations

import dataclasses

SCALAR = "scalar"
THETA = "theta"
PER_CASE = "per_case"
ARRAY = "array"
KINDS = (SCALAR, THETA, PER_CASE, ARRAY)


@dataclasses.dataclass(frozen=True)
class Output:
    """One result of a program: ``result`` is the name ``Program`` returns it under,
    ``kind`` one of :data:`KINDS`, ``block`` the parameter (theta) or input (per_case)."""

    result: str
    kind: str
    block: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown output kind {self.kind!r}")
        if self.kind == THETA and not self.block:
            raise ValueError("a theta output names its parameter block")

    @property
    def key(self) -> str:
        """The identifier of this result in ``Graph.outputs`` and the built program."""
        return f"{self.result}:{self.block}" if self.block else self.result

    def to_json(self) -> list[str]:
        return [self.result, self.kind, self.block]

    @classmethod
    def from_json(cls, data) -> Output:
        return cls(*data)


def scalar(result: str) -> Output:
    return Output(result, SCALAR)


def theta(result: str, param: str) -> Output:
    return Output(result, THETA, param)


def per_case(result: str, input_name: str = "") -> Output:
    return Output(result, PER_CASE, input_name)


def default(key: str, batched: bool, size: int) -> Output:
    """The type of an output set without one (forward graphs, static parts): per case
    when batched, a scalar when it is one number, else a plain array."""
    if batched:
        return Output(key, PER_CASE)
    return Output(key, SCALAR if size == 1 else ARRAY)
