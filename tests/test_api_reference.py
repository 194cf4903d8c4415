"""docs/api.md, generated from the docstrings by docs/make_api.py: every public name
(``symcurv.__all__`` and its modules, ``sc.optim``, Program, State) has a docstring and a
heading there, and the committed file is what the script writes now."""

from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path

import pytest

import symcurv as sc

ROOT = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location(
        "_symcurv_make_api", ROOT / "docs" / "make_api.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


api = _load()
ENTRIES = api.public_entries()
TEXT = (ROOT / "docs" / "api.md").read_text()


def test_the_entries_cover_the_public_api():
    names = {q for q, _ in ENTRIES}
    for n in sc.__all__:
        if n in api.MODULES or n == "__version__":
            continue
        assert f"sc.{n}" in names, n
    for n in sc.optim.__all__:
        assert f"sc.optim.{n}" in names, n
    from symcurv.runtime.program import Program
    from symcurv.runtime.state import State

    for cls in (Program, State):
        for m, v in vars(cls).items():
            if not m.startswith("_") and (inspect.isfunction(v) or isinstance(v, property)):
                assert f"{cls.__name__}.{m}" in names, m
    for required in (
        "Program.per_case_grad",
        "Program.per_case_grad_norm",
        "State.loss",
        "State.per_case_grad",
        "sc.losses.softmax_cross_entropy",
        "sc.init.sparse",
        "sc.errors.BatchError",
        "sc.testing.check_grad",
    ):
        assert required in names


@pytest.mark.parametrize("qual, obj", ENTRIES, ids=[q for q, _ in ENTRIES])
def test_every_public_name_is_documented_and_in_the_reference(qual, obj):
    assert api._doc(obj).strip(), f"{qual} has no docstring"
    assert f"`{qual}`\n" in TEXT, f"{qual} is not in docs/api.md"


def test_the_reference_is_up_to_date():
    assert api.render() == TEXT, "docs/api.md is stale: run python docs/make_api.py"


def test_a_missing_docstring_is_caught(monkeypatch):
    """The check can fail: an undocumented method of Program shows up empty."""
    from symcurv.runtime.program import Program

    def undocumented(self):
        pass

    monkeypatch.setattr(Program, "undocumented", undocumented, raising=False)
    entries = dict(api.public_entries())
    assert "Program.undocumented" in entries and not api._doc(entries["Program.undocumented"])
