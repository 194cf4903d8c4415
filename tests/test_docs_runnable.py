"""Every Python block of README.md and docs/*.md marked runnable — a fenced block whose
info string is ``python runnable`` — runs as written. The blocks of one file run in order
in one namespace (a later block may use an earlier one's names), in a temporary working
directory (their ``build/...`` directories land there). Unmarked blocks are fragments
(``W1``, ``X`` defined elsewhere) and are not run; mark a block only if it is quick."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```python runnable\n(.*?)^```", re.S | re.M)
FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARKED = {p: FENCE.findall(p.read_text()) for p in FILES}


def runnable_blocks(text: str) -> list[str]:
    return FENCE.findall(text)


def test_the_marker_finds_blocks_and_only_marked_ones():
    text = (
        "```python runnable\na = 1\n```\n\n```python\nb = W\n```\n```python runnable\nc = a\n```\n"
    )
    assert runnable_blocks(text) == ["a = 1\n", "c = a\n"]
    # the README quickstart and its curvature block, and the docs' examples, are marked
    assert len(MARKED[ROOT / "README.md"]) == 2
    for name in ("dsl.md", "curvature.md"):
        assert MARKED[ROOT / "docs" / name], name


def _check_readme(scope: dict) -> None:
    g = scope["prog"].unflatten(scope["g"])
    assert g["W0"].shape == (20, 256) and abs(g["W0"]).sum() > 0
    assert 0 < scope["loss"] < 10
    n = scope["prog"].n_params
    assert scope["hv"].shape == scope["gv"].shape == scope["d"].shape == (n,)
    assert scope["v"].shape == (n,)


CHECKS = {"README.md": _check_readme}


@pytest.mark.parametrize(
    "path", [p for p in FILES if MARKED[p]], ids=lambda p: str(p.relative_to(ROOT))
)
def test_runnable_blocks_run(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    scope: dict = {"__name__": f"runnable_{path.stem}"}
    for i, code in enumerate(MARKED[path]):
        try:
            exec(compile(code, f"{path.name}[runnable block {i + 1}]", "exec"), scope)
        except Exception as e:  # name the block in the failure
            raise AssertionError(f"{path.name}, runnable block {i + 1} failed: {e!r}") from e
    if path.name in CHECKS:
        CHECKS[path.name](scope)
